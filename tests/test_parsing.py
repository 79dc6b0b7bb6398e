"""ParseNet paste-back masks: facexlib's architecture, checkpoints this test writes (the
published key layout), loaded tensors-only through a test manifest. The masks the pipeline
pasted with are read off its output: a parser that calls everything background leaves the
photo untouched, one that calls everything face pastes the whole crop, corners included."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import store_for
from refrestore.align import FFHQ_SIZE, alignment_matrix, invert_affine
from refrestore.api import build_pipeline
from refrestore.parsing import FACE_LABELS, PARSENET_FILE, init_parser
from refrestore.pasteback import PasteJob, face_mask, paste_faces
from refrestore.weights import WeightStore

torch.set_num_threads(1)


def _store(folder: Path, label: int | None = None):
    """A ParseNet checkpoint: random weights, or weights that give ``label`` at every pixel."""
    from facexlib.parsing.parsenet import ParseNet

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = ParseNet(in_size=512, out_size=512, parsing_ch=19)
    if label is not None:
        with torch.no_grad():
            net.out_mask_conv.conv2d.weight.zero_()
            net.out_mask_conv.conv2d.bias.copy_(torch.nn.functional.one_hot(torch.tensor(label), 19).float() * 10)
    torch.save(net.state_dict(), folder / PARSENET_FILE)
    return store_for(folder, PARSENET_FILE, "parser", "parsenet")


@pytest.fixture(scope="module")
def photo(whole_photos) -> np.ndarray:
    return np.asarray(Image.open(next(p for p in whole_photos if p.name == "codeformer_06.png")).convert("RGB"))


def _run(photo: np.ndarray, store: WeightStore):
    """The pipeline's result, and the masks its parser gave (the real parser's own output,
    recorded as the pipeline asked for them: no extra forward of the network)."""
    built = build_pipeline(model="resample", detector="dlib", device="cpu", store=store)
    pipe = built.pipeline
    given: list[np.ndarray] = []
    if pipe.parser is not None:
        parse = pipe.parser.masks

        def recorded(faces: list[np.ndarray]) -> list[np.ndarray]:
            out = parse(faces)
            given.extend(out)
            return out

        pipe.parser.masks = recorded
    return pipe, pipe.run(photo), given


def _crop_corners(result, shape) -> np.ndarray:
    """Photo pixels inside some face's 512 crop (away from its edge) but outside the default
    ellipse mask, and outside every face's ellipse: only a parser's mask reaches them."""
    h, w = shape[:2]
    ys, xs = np.mgrid[0:h, 0:w]
    pts = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)], axis=1)
    ellipse = face_mask(FFHQ_SIZE) > 0
    in_crop = np.zeros(h * w, bool)
    in_ellipse = np.zeros(h * w, bool)
    for o in result.faces:
        a = pts @ alignment_matrix(o.face).T
        ax, ay = np.round(a[:, 0]).astype(int), np.round(a[:, 1]).astype(int)
        inside = (ax >= 30) & (ax < FFHQ_SIZE - 30) & (ay >= 30) & (ay < FFHQ_SIZE - 30)
        in_crop |= inside
        near = (ax >= 0) & (ax < FFHQ_SIZE) & (ay >= 0) & (ay < FFHQ_SIZE)
        in_ellipse[near] |= ellipse[ay[near], ax[near]]
    return (in_crop & ~in_ellipse).reshape(h, w)


def test_parser_is_used_when_present_and_only_touches_faces(tmp_path, photo):
    assert init_parser(WeightStore(tmp_path / "empty")) is None

    # A parser that finds no face anywhere: the pipeline pastes nothing at all.
    assert FACE_LABELS[0] == 0 and FACE_LABELS[1] == 1
    none_pipe, none, _ = _run(photo, _store(tmp_path / "background", label=0))
    assert none_pipe.parser is not None and not none.warnings
    assert len(none.faces) == 2 and not any(o.left_as_is for o in none.faces)
    assert np.array_equal(none.image, photo)
    # (the default ellipse would have pasted both faces: restored, not left as they were)

    # A parser that calls the whole crop face: its corners, which the ellipse never reaches,
    # are restored, and the output is exactly the paste-back with that parser's masks.
    skin_pipe, skin, used = _run(photo, _store(tmp_path / "skin", label=1))
    assert skin_pipe.parser is not None and not skin.warnings
    corners = _crop_corners(skin, photo.shape)  # outside every face's ellipse, by construction
    assert corners.sum() > 5000, corners.sum()
    changed = np.abs(skin.image.astype(int) - photo.astype(int)).max(axis=2) > 0
    assert changed[corners].mean() > 0.5, changed[corners].mean()
    restored = [o for o in skin.faces if o.restored is not None and not o.left_as_is]
    assert len(used) == len(restored) == 2, (len(used), len(restored))
    for mask in used:
        assert mask.shape == (512, 512) and mask.dtype == np.float32 and mask.max() <= 1.0 and mask[256, 256] > 0.99
    jobs = [PasteJob(restored=o.restored, original=o.aligned, affine=alignment_matrix(o.face), mask=m, detail=o.keep_detail)
            for o, m in zip(restored, used)]
    assert np.array_equal(skin.image, paste_faces(photo, jobs))
    # Far from both faces (outside both 512 crops grown by a fifth) nothing changes.
    h, w = photo.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w]
    pts = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)], axis=1)
    far = np.ones(h * w, bool)
    for o in skin.faces:
        a = pts @ alignment_matrix(o.face).T
        far &= (a[:, 0] < -100) | (a[:, 0] > FFHQ_SIZE + 100) | (a[:, 1] < -100) | (a[:, 1] > FFHQ_SIZE + 100)
    far = far.reshape(h, w)
    assert far.mean() > 0.1, far.mean()
    assert np.array_equal(skin.image[far], photo[far])
    assert invert_affine(alignment_matrix(skin.faces[0].face)).shape == (2, 3)
