"""No false match on real old photos: the faces of data/real_lq/whole against a gallery of
data/identities plus every held-out person of data/faces (nobody in real_lq is in either).

Usage: python benchmarks/check_real_lq.py [--identity dlib|fused] [--detector dlib]

The identities gallery is indexed as a user's would be (folders = people); the held-out people
are added from their aligned crops (one clean embedding each, labelled by folder). Every face
the detector finds in real_lq/whole is described as selection describes it and decided with the
shipped person-level rule; the script prints each face's best person, score, threshold, second
person and the decision, and the count of false matches.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--identity", default="dlib")
    p.add_argument("--detector", default="dlib")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    import tempfile

    from refrestore.detection import init_detector
    from refrestore.gallery import Gallery
    from refrestore.gallery.faceset import read_aligned, read_faceset
    from refrestore.gallery.index import aligned_crop_of, find_faces, load_rgb
    from refrestore.gallery.people import decide
    from refrestore.gallery.select import describe_query, rule_for
    from refrestore.identity import init_identity_model

    whole, ids, faces = SHARED / "data" / "real_lq" / "whole", SHARED / "data" / "identities", SHARED / "data" / "faces"
    if not all(d.is_dir() for d in (whole, ids, faces)):
        print(f"shared data not found under {SHARED}", file=sys.stderr)
        return 2
    detector = init_detector(args.detector)
    identity = init_identity_model(args.identity)
    rule = rule_for(identity.name)
    if rule is None:
        print(f"no person-level rule for {identity.name}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        g = Gallery.build([ids], detector, identity, cache_dir=Path(tmp))
    held = read_faceset(faces, held_out=True)
    if hasattr(identity, "combine"):
        # the fused model's two halves, cached by benchmarks/eval_identity.py (same files, same versions)
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from eval_identity import embed_side

        cache = ROOT / "runs" / "identity-eval"
        held_emb = identity.combine(embed_side(identity.dlib, held, 3, cache, "held_out")["gallery"],
                                    embed_side(identity.own, held, 3, cache, "held_out")["gallery"])
    else:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from eval_identity import embed_side

        held_emb = embed_side(identity, held, 3, ROOT / "runs" / "identity-eval", "held_out")["gallery"]
    emb = np.concatenate([g.embeddings, held_emb])
    persons = g.persons + [f"faces/{f.person}" for f in held]
    print(f"gallery: {len(g.faces)} faces of {len(set(g.persons))} identities people + {len(held)} faces of "
          f"{len({f.person for f in held})} held-out people; identity {identity.name}")
    analyzer = g.analyzer()
    false = total = 0
    for path in sorted(whole.iterdir()):
        try:
            image = load_rgb(path)
        except Exception as exc:  # noqa: BLE001 - one bad photo never stops the check
            print(f"{path.name}: unreadable ({exc})")
            continue
        for k, (face, already) in enumerate(find_faces(image, detector)):
            crop, affine = aligned_crop_of(image, face, already)
            q = describe_query(crop, face, identity, analyzer, affine)
            d = decide(emb @ q.embedding, persons, q.detail, rule)
            total += 1
            false += d.matched
            print(f"{path.name} face {k} ({face.width:.0f}px, detail {q.detail:.2f}): best {d.best_person} "
                  f"{d.best_score:.3f} thr {d.threshold:.3f}, second {d.second_person} {d.second_score:.3f} "
                  f"gap needed {d.required_gap:.3f} -> {'MATCH' if d.matched else 'no match'}")
    print(f"real_lq/whole: {total} faces, {false} false matches, {total - false}/{total} no match")
    return 0 if false == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
