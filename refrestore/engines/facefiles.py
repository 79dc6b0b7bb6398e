"""The face files of a restored photo: ``--save-faces`` crops and ``--compare`` sheets.

Below both the photo worker (``engines/photo.py``, which writes them before the output) and the
public ``batch`` names (which re-export :func:`side_by_side`).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np

from ..fileio import record_folder
from ..imageio import LoadedImage, save_image
from ..pipeline import PhotoResult


def side_by_side(panels: list[np.ndarray], height: int = 512, labels: list[str] | None = None) -> np.ndarray:
    """Panels next to each other at one height; each ``labels`` entry is written on its panel."""
    out = []
    for i, p in enumerate(panels):
        if p.shape[0] != height:
            p = cv2.resize(p, (int(p.shape[1] * height / p.shape[0]), height), interpolation=cv2.INTER_AREA)
        if labels is not None and i < len(labels) and labels[i]:
            p = p.copy()
            scale = height / 512.0
            bar = int(round(34 * scale))
            # Darken a strip rather than cover it, so the face under the label still shows.
            p[:bar] = (p[:bar].astype(np.float32) * 0.35).astype(np.uint8)
            cv2.putText(p, labels[i], (int(8 * scale), int(24 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 0.7 * scale,
                        (255, 255, 255), max(1, int(round(2 * scale))), cv2.LINE_AA)
        out.append(p)
        out.append(np.full((height, 8, 3), 255, np.uint8))
    return np.concatenate(out[:-1], axis=1)


def confidence_image(confidence: np.ndarray) -> np.ndarray:
    """The detail stage's 0..1 confidence map as a picture: dark where nothing was trusted,
    yellow-white where the references were (OpenCV's inferno map)."""
    grey = np.clip(confidence * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(grey, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)


def _reference_panels(o: object) -> tuple[list[np.ndarray], list[str]]:
    """The references shown beside a face: those that gave its detail, each with its share;
    else the first reference; else a grey "no reference" panel."""
    refs = getattr(o, "references", [])
    detail = getattr(o, "detail", None)
    if not refs:
        return [np.full((512, 512, 3), 128, np.uint8)], ["no reference"]
    if detail is None or not detail.added:
        return [refs[0].image], ["reference"]
    shown = [(r, share) for r, share in zip(refs, detail.shares) if share >= 0.05]
    return [r.image for r, _ in shown], [f"reference: {share:.0%} of detail" for _, share in shown]


def _save_face_files(result: PhotoResult, output: Path, like: LoadedImage, save_faces: bool,
                     compare: bool) -> dict[int, str]:
    """Face crops (``--save-faces``) and comparison sheets (``--compare``); returns the
    confidence maps written, by face index."""
    # Face crops carry the photo's colour profile but not its alpha, EXIF or greyness.
    plain = dataclasses.replace(like, alpha=None, exif=None, grayscale=False, meta=None)
    maps: dict[int, str] = {}
    for o in result.faces:
        restored = o.restored if o.restored is not None else o.aligned
        if save_faces:
            folder = output.with_name(output.stem + "_faces")
            if not folder.is_dir():
                folder.mkdir(parents=True)
                record_folder(folder)  # refrestore's: a rerun may write into it again
            ref = o.references[0].image if o.references else None
            for tag, img in (("input", o.aligned), ("restored", restored), ("reference", ref)):
                if img is not None:
                    save_image(folder / f"face{o.index:02d}_{tag}.png", img, plain)
            if o.detail is not None and o.detail.added:
                path = folder / f"face{o.index:02d}_confidence.png"
                save_image(path, confidence_image(o.detail.confidence), plain)
                maps[o.index] = str(path)
        if compare:
            if o.error:
                done = "not restored (failed)"
            elif getattr(o, "left_as_is", False):
                done = "left as it was"
            else:
                done = f"restored: {o.restorer}"
            refs, ref_labels = _reference_panels(o)
            sheet = side_by_side([o.aligned, restored, *refs], labels=["input", done, *ref_labels])
            save_image(output.with_name(f"{output.stem}_compare_face{o.index:02d}.jpg"), sheet, plain)
    return maps
