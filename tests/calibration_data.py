"""test_select's calibration data, computed in a process of its own while the other tests run.

``refrestore.gallery.calibrate.collect`` over shared/data/identities is about 90 s of
single-threaded dlib work (HOG detection of 99 photos, four descriptor views of each photo's
main face clean and degraded). conftest starts ``python tests/calibration_data.py IDENTITIES
CACHE OUT`` when test_select is collected, at nice 19 so that it only takes CPU the tests
leave idle; test_select's fixture then waits for it and reads what it wrote.

What is written is collect's own result: its gallery goes into the gallery cache (CACHE) and
the queries into OUT (JSON, and the embeddings as .npy: no pickle). Reading back builds the
gallery from that cache (every photo must come from it) and pairs the queries with its main
faces, so the tests see the same CalibrationData that collect returned.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import numpy as np

QUERIES = "queries.json"
EMBEDDINGS = "embeddings.npy"


def _models():  # type: ignore[no-untyped-def]
    from refrestore.detection import init_detector
    from refrestore.identity import DlibIdentity

    return init_detector("dlib"), DlibIdentity()


def compute(identities: Path, cache_dir: Path, out: Path) -> None:
    import torch

    from refrestore.gallery.calibrate import collect

    torch.set_num_threads(1)
    detector, identity = _models()
    data = collect(identities, detector, identity, cache_dir=cache_dir)
    rows, embeddings = [], []
    for q in data.queries:
        row: dict[str, object] = {"person": q.person, "path": str(q.path)}
        for kind in ("clean", "degraded"):
            face = getattr(q, kind)
            row[kind] = {k: v for k, v in dataclasses.asdict(face).items() if k != "embedding"}
            embeddings.append(face.embedding)
        rows.append(row)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / EMBEDDINGS, np.stack(embeddings).astype(np.float32))
    tmp = out / (QUERIES + ".tmp")
    tmp.write_text(json.dumps(rows))
    tmp.replace(out / QUERIES)  # last: its presence says everything is written


def load(identities: Path, cache_dir: Path, out: Path):  # type: ignore[no-untyped-def]
    """The CalibrationData that ``compute`` wrote, with the gallery read from its cache."""
    from refrestore.gallery import Gallery
    from refrestore.gallery.calibrate import CalibrationData, LabelledQuery
    from refrestore.gallery.select import QueryFace

    detector, identity = _models()
    gallery = Gallery.build([identities], detector, identity, cache_dir=cache_dir)
    assert gallery.stats.indexed == 0 and gallery.stats.from_cache == gallery.stats.files, gallery.stats
    rows = json.loads((out / QUERIES).read_text())
    embeddings = np.load(out / EMBEDDINGS, allow_pickle=False)
    assert embeddings.shape[0] == 2 * len(rows)
    queries = []
    for i, row in enumerate(rows):
        faces = [QueryFace(embedding=embeddings[2 * i + j], **row[kind]) for j, kind in enumerate(("clean", "degraded"))]
        queries.append(LabelledQuery(person=row["person"], path=Path(row["path"]), clean=faces[0], degraded=faces[1]))
    mains = [f.path for f in gallery.faces if f.face_index == 0]
    assert [q.path for q in queries] == mains, "the queries are not those of the cached gallery's main faces"
    return CalibrationData(gallery, queries)


if __name__ == "__main__":
    os.nice(19)  # idle CPU only: the tests running meanwhile come first
    compute(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
