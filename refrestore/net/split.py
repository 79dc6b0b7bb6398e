"""The one held-out split of people, shared by every training run, calibration and figure.

Rule (reproducible anywhere): a person folder is held out when the first byte of
``sha256(folder name, UTF-8)`` modulo 8 is below 3 (3/8 of the people; on
``shared/data/faces`` that is 106 of 283 people, 1,506 photos). Held-out people are never
used to train the restoration network or the identity embedder, nor to calibrate
thresholds; every reported figure on ``faces`` is on them. ``refbench`` person 00089 stays
held out of restoration training as before.
"""
from __future__ import annotations

import hashlib
from typing import Iterable

HELD_OUT_BYTE_MOD = 8
HELD_OUT_BELOW = 3
# refbench's held-out person (kept from the earlier runs, so their figures stay comparable).
REFBENCH_HELD_OUT = ("00089",)


def is_held_out(person: str) -> bool:
    if person in REFBENCH_HELD_OUT:
        return True
    return hashlib.sha256(person.encode("utf-8")).digest()[0] % HELD_OUT_BYTE_MOD < HELD_OUT_BELOW


def split_people(people: Iterable[str]) -> tuple[list[str], list[str]]:
    """(training people, held-out people), each sorted."""
    train, held = [], []
    for p in sorted(people):
        (held if is_held_out(p) else train).append(p)
    return train, held
