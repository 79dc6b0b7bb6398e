"""The HTML report: one self-contained page to look at a run, images in a folder beside it.

It reads the same document as the JSON report (``report.build_document``): per photo a
before/after slider of the whole photo, per face the input, the restored face and the
references that guided it (person, RefSel scores), the restorer, warnings and errors, and a
summary at the top. Thumbnails are small JPEGs loaded lazily, so an album of 500 photos
stays quick to open; nothing is fetched from the network (the page's CSP forbids it).
"""
from __future__ import annotations

import hashlib
import html
import logging
import os
import shutil
from collections import defaultdict
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from .document import printable_name
from .json import current_umask, write_text_atomic
from .outcome import faces_line

log = logging.getLogger(__name__)

PHOTO_SIDE = 1280  # the slider's images: enough for a screen, small for 500 photos
FACE_SIDE = 256  # face thumbnails (shown at 128 CSS px: sharp on a HiDPI screen)
FACE_MARGIN = 0.3  # the face crop reaches this share of the box beyond each side
STATUS_LABEL = {"ok": "done", "skipped": "skipped", "no_faces": "no faces", "error": "failed"}


@dataclass(frozen=True)
class _Assets:
    folder: Path | None  # REPORT_files/ beside the page; None: a page written to a stream has no images
    rel: str  # its name as the page refers to it

    def file(self, name: str) -> Path | None:
        return self.folder / name if self.folder is not None else None


def files_folder(page: Path) -> Path:
    """Where the page's images go: ``report.html`` -> ``report_files/``."""
    return page.with_name(page.stem + "_files")


def _e(value: Any) -> str:
    return html.escape(printable_name("" if value is None else str(value)), quote=True)


def _resource(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _open_rgb(path: str | os.PathLike[str] | None, draft: int | None = None) -> Any:
    """The image upright and RGB (PIL), or None when it cannot be read."""
    if not path:
        return None
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            if draft is not None and im.format == "JPEG":
                im.draft("RGB", (draft, draft))  # decode a reduced JPEG: fast thumbnails
            im.seek(0)
            im = ImageOps.exif_transpose(im)
            return im.convert("RGB")
    except Exception as exc:  # noqa: BLE001 - a missing picture is shown as missing, not fatal
        log.info("report: cannot read %s: %s", path, exc)
        return None


def _save_jpeg(image: Any, path: Path | None, side: int) -> bool:
    if image is None or path is None:
        return False
    im = image.copy()
    im.thumbnail((side, side))
    tmp = path.with_name(f".{path.name}.tmp")
    im.save(tmp, format="JPEG", quality=85)
    os.chmod(tmp, 0o666 & ~current_umask())
    os.replace(tmp, path)
    return True


def _face_crop(image: Any, box: list[float] | None, scale: float) -> Any:
    """A square crop around ``box`` (input pixel coordinates, times ``scale`` for the output)."""
    if image is None:
        return None
    if not box:
        return image
    x1, y1, x2, y2 = (float(v) * scale for v in box)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half = max(x2 - x1, y2 - y1) * (0.5 + FACE_MARGIN)
    left, top = max(0, int(cx - half)), max(0, int(cy - half))
    right, bottom = min(image.width, int(cx + half)), min(image.height, int(cy + half))
    if right <= left or bottom <= top:
        return None
    return image.crop((left, top, right, bottom))


def _img(assets: _Assets, name: str | None, alt: str, cls: str = "") -> str:
    if name is None:
        return f'<div class="noref">{_e(alt)}: not available</div>'
    klass = f' class="{cls}"' if cls else ""
    return f'<img{klass} src="{_e(assets.rel)}/{_e(name)}" alt="{_e(alt)}" loading="lazy" decoding="async">'


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def _person(ref: dict[str, Any]) -> str:
    person = ref.get("person")
    if person:
        return str(person)
    path = ref.get("path")
    return Path(path).parent.name if path else "?"


class _Writer:
    def __init__(self, page: Path, document: dict[str, Any]) -> None:
        self.document = document
        folder = files_folder(page)
        self.assets = _Assets(folder, folder.name)
        self.ref_names: dict[tuple[str, int], str | None] = {}
        self.restores = document.get("command") != "match"  # `match` only chooses references

    def reference_thumb(self, ref: dict[str, Any]) -> str | None:
        """The reference photo as a thumbnail (one file per reference, however often used)."""
        path, index = str(ref.get("path") or ""), int(ref.get("face_index") or 0)
        key = (path, index)
        if key not in self.ref_names:
            name = f"ref_{hashlib.sha1(path.encode()).hexdigest()[:12]}_{index}.jpg"
            ok = _save_jpeg(_open_rgb(path, FACE_SIDE * 2), self.assets.file(name), FACE_SIDE)
            self.ref_names[key] = name if ok else None
        return self.ref_names[key]

    def photo(self, n: int, image: dict[str, Any]) -> str:
        status = image.get("status") or "error"
        src, out = image.get("input"), image.get("output")
        tag = f"p{n:05d}"
        before = _open_rgb(src, PHOTO_SIDE * 2)
        after = _open_rgb(out, PHOTO_SIDE * 2) if out else None
        names: dict[str, str | None] = {}
        for key, im in (("before", before), ("after", after)):
            name = f"{tag}_{key}.jpg"
            names[key] = name if _save_jpeg(im, self.assets.file(name), PHOTO_SIDE) else None
        parts = [f'<section class="photo" id="photo-{n + 1}" tabindex="-1" data-status="{_e(status)}">',
                 f'<h2>{n + 1}. {_e(Path(str(src)).name)} <span class="status {_e(status)}">'
                 f'{_e(STATUS_LABEL.get(status, status))}</span></h2>',
                 f'<p class="meta">{_e(src)} &rarr; {_e(out or "no output")}</p>']
        earlier = image.get("earlier")
        if isinstance(earlier, dict):
            parts.append(f'<p class="earlier">as reported by the earlier run that made this output '
                         f'({_e(earlier.get("finished"))}); this run skipped it</p>')
        line = faces_line(image.get("faces") or [], self.restores)
        if line:
            parts.append(f'<p class="outcome">{_e(line)}</p>')
        if image.get("error"):
            parts.append(f'<p class="error">error: {_e(image["error"])}</p>')
        for w in image.get("warnings") or []:
            parts.append(f'<p class="warn">warning: {_e(w)}</p>')
        if names["before"] and names["after"]:
            parts.append(
                '<div class="pair"><div class="compare" data-split="50">'
                + _img(self.assets, names["after"], "after", "after")
                + _img(self.assets, names["before"], "before", "before")
                + '<span class="tag l">before</span><span class="tag r">after</span><span class="handle"></span></div>'
                '<input class="split" type="range" min="0" max="100" value="50" aria-label="before/after split"></div>'
            )
        elif names["before"] or names["after"]:
            only = "before" if names["before"] else "after"
            parts.append(f'<div class="single">{_img(self.assets, names[only], only)}</div>')
        faces = image.get("faces") or []
        if faces:
            scale = (after.width / before.width) if (before is not None and after is not None and before.width) else 1.0
            parts.append('<div class="faces">')
            for face in faces:
                parts.append(self.face(tag, face, before, after, scale))
            parts.append("</div>")
        parts.append("</section>")
        return "\n".join(parts)

    def face(self, tag: str, face: dict[str, Any], before: Any, after: Any, scale: float) -> str:
        k = int(face.get("index") or 0)
        box = face.get("box")
        crop_in, crop_out = f"{tag}_f{k:02d}_in.jpg", f"{tag}_f{k:02d}_out.jpg"
        has_in = _save_jpeg(_face_crop(before, box, 1.0), self.assets.file(crop_in), FACE_SIDE)
        has_out = _save_jpeg(_face_crop(after, box, scale), self.assets.file(crop_out), FACE_SIDE)
        figures = [f'<figure>{_img(self.assets, crop_in if has_in else None, "input face")}<figcaption>input</figcaption></figure>']
        if after is not None or face.get("restorer"):  # `match` restores nothing
            caption = "left as it was" if face.get("left_as_is") else f'restored ({_e(face.get("restorer") or "-")})'
            figures.append(f'<figure>{_img(self.assets, crop_out if has_out else None, "restored face")}'
                           f'<figcaption>{caption}</figcaption></figure>')
        ref = face.get("reference")
        refs = [ref, *(ref.get("alternatives") or [])] if ref else []
        detail = face.get("detail") if isinstance(face.get("detail"), dict) else None
        shares = {(str(d.get("path")), d.get("face_index")): d.get("share")
                  for d in (detail.get("references") or [])} if detail and detail.get("added") else {}
        if not refs:
            figures.append('<figure><div class="noref">no reference</div><figcaption>no match</figcaption></figure>')
        for r in refs:
            share = shares.get((str(r.get("path")), r.get("face_index")))
            gave = f"; gave {share:.0%} of the detail" if isinstance(share, (int, float)) else ""
            figures.append(f'<figure>{_img(self.assets, self.reference_thumb(r), "reference")}'
                           f'<figcaption>{_e(_person(r))}: {_e(Path(str(r.get("path"))).name)}#{_e(r.get("face_index"))}'
                           f' score {_fmt(r.get("score"))}{_e(gave)}</figcaption></figure>')
        if detail and detail.get("confidence_map"):
            name = f"{tag}_f{k:02d}_conf.jpg"
            ok = _save_jpeg(_open_rgb(detail["confidence_map"]), self.assets.folder / name, FACE_SIDE)
            figures.append(f'<figure>{_img(self.assets, name if ok else None, "confidence map")}'
                           '<figcaption>where the references were trusted</figcaption></figure>')
        facts = [("face", f"{k}" + (f" at {', '.join(f'{v:.0f}' for v in box)}" if box else "")),
                 ("detector", f"{face.get('detector') or '-'} ({_fmt(face.get('detector_score'))})"),
                 ("restorer", face.get("restorer") or ("none: it needed nothing" if face.get("left_as_is") else "-")),
                 ("restored", "yes" if face.get("restored") else "no")]
        if isinstance(face.get("strength"), (int, float)) and face.get("restored"):
            facts.append(("strength", _fmt(face["strength"])))
        if detail:
            facts.append(("reference detail", f"added (RMS {detail.get('change', 0):.1f} grey levels)"
                          if detail.get("added") else "none needed"))
        degradation = face.get("degradation")
        if isinstance(degradation, dict) and "severity" in degradation:
            facts.append(("degradation", f"{_fmt(degradation['severity'])} ({degradation.get('cause') or '-'})"))
        if ref:
            facts.append(("person", _person(ref)))
            if face.get("reason"):
                facts.append(("why", face["reason"]))
            facts.append(("RefSel", " ".join(f"{n} {_fmt(ref.get(n))}" for n in ("identity", "pose", "expression", "quality"))
                          + f" total {_fmt(ref.get('score'))}"))
            if ref.get("forced"):
                facts.append(("forced", "--ref"))
        else:
            facts.append(("person", "no match: restored without a reference" if self.restores else "no match"))
            if face.get("reason"):
                facts.append(("why", face["reason"]))
        rows = "".join(f"<dt>{_e(a)}</dt><dd>{_e(b)}</dd>" for a, b in facts)
        err = f'<p class="error">error: {_e(face["error"])}</p>' if face.get("error") else ""
        return f'<div class="face" data-face="{k}"><div class="row">{"".join(figures)}</div><dl>{rows}</dl>{err}</div>'


def summary_html(document: dict[str, Any]) -> str:
    restores = document.get("command") != "match"
    images = document.get("images") or []
    counts: dict[str, int] = defaultdict(int)
    reasons: dict[str, list[str]] = defaultdict(list)
    for im in images:
        counts[im.get("status") or "error"] += 1
        if im.get("status") == "error":
            reasons[str(im.get("error") or "unknown error").split(":")[0]].append(Path(str(im.get("input"))).name)
    head = "".join(f"<th>{_e(STATUS_LABEL[s])}</th>" for s in ("ok", "skipped", "no_faces", "error"))
    cells = "".join(f"<td>{counts[s]}</td>" for s in ("ok", "skipped", "no_faces", "error"))
    out = [f'<table class="summary" id="summary"><tr>{head}</tr><tr>{cells}</tr></table>']
    faces = [f for im in images for f in (im.get("faces") or [])]
    matched = sum(1 for f in faces if f.get("reference"))
    done = "restored with references" if restores else "with references"
    out.append(f"<p>{len(images)} photos, {len(faces)} faces, {matched} {done}, "
               f"{len(faces) - matched} without (no match).</p>")
    if counts["skipped"]:
        earlier = sum(1 for im in images if im.get("status") == "skipped" and isinstance(im.get("earlier"), dict))
        said = f" (their faces as the run that made them reported: {earlier})" if earlier else ""
        out.append(f'<p class="warn">{counts["skipped"]} skipped: the output exists{said}; --overwrite redoes them.</p>')
    licences = [lic for lic in document.get("licences") or [] if isinstance(lic, dict) and lic.get("commercial") is False]
    if licences:
        names = ", ".join(f"{lic.get('role')} {lic.get('name')} ({lic.get('license')})" for lic in licences)
        out.append(f'<p class="licence">Non-commercial weights were used: {_e(names)}.</p>')
    if reasons:
        items = "".join(f"<li>{len(v)} failed: {_e(r)} ({_e(', '.join(v[:5]))}{' ...' if len(v) > 5 else ''})</li>"
                        for r, v in sorted(reasons.items(), key=lambda kv: -len(kv[1])))
        out.append(f'<ul class="failures">{items}</ul>')
    if document.get("interrupted"):
        out.append('<p class="error">The run was interrupted: rerun to finish.</p>')
    return "\n".join(out)


def write_html_report(path: Path, document: dict[str, Any], title: str = "refrestore report",
                      source_mode: int | None = None) -> Path:
    """Write ``path`` and its images folder (``<stem>_files/``, replaced); return the page's path.

    A page written to a stream or device (``/dev/fd/N``, a pipe) has no folder beside it: its
    images are left out. ``source_mode``: the page and its images are no more readable by
    others than this (the inputs' strictest permission bits)."""
    from ..fileio import final_target, is_stream_path, record_folder

    path = Path(path) if is_stream_path(path) else final_target(Path(path))  # a link: beside its target
    writer = _Writer(path, document)
    images = document.get("images") or []
    if is_stream_path(path):
        writer.assets = _Assets(None, writer.assets.rel)
        photos = [writer.photo(n, im) for n, im in enumerate(images)]
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        folder = writer.assets.folder
        assert folder is not None
        # Build the images in a fresh folder and swap it in, so an old report's files never mix in.
        staging = folder.with_name(f".{folder.name}.tmp")
        if staging.exists():
            shutil.rmtree(staging)
        mode = 0o777 & ~current_umask()
        staging.mkdir(parents=True, mode=mode if source_mode is None else mode & ((source_mode & 0o077) | 0o700))
        writer.assets = _Assets(staging, folder.name)
        photos = [writer.photo(n, im) for n, im in enumerate(images)]
        record_folder(folder, os.stat(staging))  # refrestore's: a rerun may replace it (the rename keeps the inode)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    index = "".join(f'<li><a href="#photo-{n + 1}">{_e(Path(str(im.get("input"))).name)}</a> '
                    f'<span class="status {_e(im.get("status"))}">{_e(STATUS_LABEL.get(im.get("status") or "", im.get("status")))}</span></li>'
                    for n, im in enumerate(images))
    meta = ", ".join(f"{k} {document[k]}" for k in ("restorer", "detector", "device") if document.get(k))
    gallery = document.get("gallery")
    if isinstance(gallery, dict):  # match's report: counts, not fix's sentence
        gallery = f"gallery: {gallery.get('faces')} faces in {gallery.get('photos')} photos"
    if gallery:
        meta += f"; {gallery}"
    drag = " Drag a photo (or use its slider) to compare before and after." if writer.restores else ""
    page = Template(_resource("template.html")).substitute(
        title=_e(title), meta=_e(meta), summary=summary_html(document), index=index, drag=drag,
        photos="\n".join(photos), style=_resource("report.css"), script=_resource("report.js"),
    )
    write_text_atomic(path, page, source_mode)
    return path
