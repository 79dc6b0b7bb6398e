"""ParseNet paste-back masks: facexlib's architecture, a checkpoint this test writes
(random weights, published key layout), loaded tensors-only through a test manifest."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from refrestore.api import build_pipeline
from refrestore.parsing import PARSENET_FILE, init_parser
from conftest import store_for
from refrestore.weights import WeightStore

torch.set_num_threads(2)


def _store(tmp_path):
    from facexlib.parsing.parsenet import ParseNet

    torch.manual_seed(0)
    torch.save(ParseNet(in_size=512, out_size=512, parsing_ch=19).state_dict(), tmp_path / PARSENET_FILE)
    return store_for(tmp_path, PARSENET_FILE, "parser", "parsenet")


def test_parser_is_used_when_present_and_only_touches_faces(tmp_path, whole_photos):
    store = _store(tmp_path)
    assert init_parser(WeightStore(tmp_path / "empty")) is None
    parser = init_parser(store)
    assert parser is not None
    photo = np.asarray(Image.open(next(p for p in whole_photos if p.name == "codeformer_06.png")).convert("RGB"))
    built = build_pipeline(model="resample", detector="dlib", device="cpu", store=store)
    assert built.pipeline.parser is not None
    result = built.pipeline.run(photo)
    masks = parser.masks([f.aligned for f in result.faces])
    assert [m.shape for m in masks] == [(512, 512)] * 2
    assert all(0.0 <= m.min() and m.max() <= 1.0 for m in masks)
    assert result.image.shape == photo.shape
    # Far from both faces nothing changes.
    assert np.array_equal(result.image[-40:, :40], photo[-40:, :40])
