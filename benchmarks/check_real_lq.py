"""No false match on real old photos: the faces of data/real_lq/whole against a gallery of
data/identities plus every held-out person of data/faces (one of them, young Leonardo DiCaprio,
is in two of the photos: see KNOWN).

Usage: python benchmarks/check_real_lq.py [--identity auto|mobilefacenet-lr|mobilefacenet|dlib|fused]
                                          [--detector dlib]

The identities gallery is indexed as a user's would be (folders = people); the held-out people
are added from their aligned crops (their gallery rows as benchmarks/eval_people.py or
eval_identity.py embed them, labelled by folder). The faces the detector finds in each photo of
real_lq/whole are described as selection describes them and decided together with the shipped
rule (refrestore.gallery.decide.decide_photo); the script prints each face's best person, score,
threshold, second person and the decision, and the count of false matches. The weight store is a
temporary one with the shared MobileFaceNet file added (as ``download-weights --from-file`` does).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
# Faces of real_lq/whole that ARE people of the gallery (checked by eye against their photos):
# young Leonardo DiCaprio, whom shared/data/faces holds as celeb17_leonardo_dicaprio. A match to
# him there is right; a match anywhere else is a false match.
KNOWN = {("codeformer_05.jpg", 0): "faces/celeb17_leonardo_dicaprio",
         ("codeformer_06.png", 1): "faces/celeb17_leonardo_dicaprio"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--identity", default="auto")
    p.add_argument("--detector", default="dlib")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    import tempfile

    from refrestore.net.split import is_held_out

    from refrestore.detection import init_detector
    from refrestore.gallery import Gallery
    from refrestore.gallery.decide import FaceQuery, decide_photo
    from refrestore.gallery.faceset import read_faceset
    from refrestore.gallery.index import aligned_crop_of, find_faces, load_rgb
    from refrestore.gallery.rules import rule_for
    from refrestore.gallery.select import describe_query
    from refrestore.identity import gallery_levels, init_identity_model
    from refrestore.weights import WeightStore
    from refrestore.userweights import add_user_file

    whole, ids, faces = SHARED / "data" / "real_lq" / "whole", SHARED / "data" / "identities", SHARED / "data" / "faces"
    if not all(d.is_dir() for d in (whole, ids, faces)):
        print(f"shared data not found under {SHARED}", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT / "benchmarks"))
    cache = ROOT / "runs" / "identity-eval"
    with tempfile.TemporaryDirectory() as weights, tempfile.TemporaryDirectory() as tmp:
        store = WeightStore(Path(weights))
        mfn = SHARED / "weights" / "mobilefacenet" / "mobilefacenet.pt"
        if mfn.is_file():
            add_user_file(store, None, mfn)
        detector = init_detector(args.detector, store)
        identity = init_identity_model(args.identity, store=store)
        rule = rule_for(identity.name)
        if rule is None:
            print(f"no person-level rule for {identity.name}", file=sys.stderr)
            return 2
        g = Gallery.build([ids], detector, identity, cache_dir=Path(tmp))
    if identity.name.startswith("mobilefacenet"):
        from eval_people import embed_all, make_gallery

        everyone = read_faceset(faces)
        rows = embed_all(everyone, identity, cache)["gallery"]
        keep = [i for i, f in enumerate(everyone) if is_held_out(f.person)]
        held = make_gallery(rows[keep], [f"faces/{everyone[i].person}" for i in keep], identity,
                            gallery_levels(identity))
    else:
        from eval_identity import embed_side
        from eval_people import make_gallery

        held_faces = read_faceset(faces, held_out=True)
        if hasattr(identity, "combine"):
            # the fused model's two halves, cached by benchmarks/eval_identity.py (same files, same versions)
            held_emb = identity.combine(embed_side(identity.dlib, held_faces, 3, cache, "held_out")["gallery"],
                                        embed_side(identity.own, held_faces, 3, cache, "held_out")["gallery"])
        else:
            held_emb = embed_side(identity, held_faces, 3, cache, "held_out")["gallery"]
        held = make_gallery(held_emb, [f"faces/{f.person}" for f in held_faces], identity, ())
    gallery = Gallery(g.faces + held.faces, [], g.identity_name, g.identity_version, levels=g.levels)
    print(f"gallery: {len(g.faces)} faces of {len(set(g.persons))} identities people + {len(held.faces)} faces of "
          f"{len(set(held.persons))} held-out people; identity {identity.name}")
    analyzer = g.analyzer()
    false = total = right = 0
    for path in sorted(whole.iterdir()):
        try:
            image = load_rgb(path)
        except Exception as exc:  # noqa: BLE001 - one bad photo never stops the check
            print(f"{path.name}: unreadable ({exc})")
            continue
        found = find_faces(image, detector)
        queries = []
        for face, already in found:
            crop, affine = aligned_crop_of(image, face, already)
            queries.append(describe_query(crop, face, identity, analyzer, affine))
        decisions = decide_photo(gallery, [FaceQuery(q.embedding, q.detail, q.face_width) for q in queries], rule)
        for k, ((face, _), q, d) in enumerate(zip(found, queries, decisions)):
            total += 1
            known = KNOWN.get((path.name, k))
            false += d.matched and d.person != known
            right += d.matched and d.person == known
            second = f"{d.second_score:.3f}" if d.second_score is not None else "-"
            print(f"{path.name} face {k} ({face.width:.0f}px, detail {q.detail:.2f}): best {d.best_person} "
                  f"{d.best_score:.3f} thr {d.threshold:.3f}, second {d.second_person} {second} "
                  f"gap needed {d.required_gap:.3f} -> {'MATCH' if d.matched else 'no match'} ({d.reason})")
    print(f"real_lq/whole: {total} faces, {false} false matches, {right} right matches "
          f"(of {len(KNOWN)} faces of gallery people), {total - false - right}/{total} no match")
    return 0 if false == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
