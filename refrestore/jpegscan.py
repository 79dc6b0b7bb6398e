"""Telling a complete JPEG from a cut one, which Pillow decodes without a word.

Pillow silences libjpeg's "premature end of data" warning, so a file cut short (with an
end-of-image marker appended, as some tools do) decodes "fine": a baseline file's missing
blocks come back flat grey (all coefficients zero: level 128), a progressive file's missing
scans leave it blurred or colourless. Both are found here from what is cheap to check: the
progressive scan script, and a flat 128 band at the bottom of a sequential file.
"""
from __future__ import annotations

import re
import struct

import numpy as np

# A JPEG header cannot describe more pixels than this many per byte of file: baseline needs
# at least 2 bits per 8x8 block (DC and end-of-block codes), progressive 1 bit per luma block
# in its first scan (about 512 px per byte); 4096 leaves an 8x margin.
MAX_PIXELS_PER_BYTE = 4096

_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # a marker after entropy-coded data
_SOF_PROGRESSIVE = {0xC2, 0xC6, 0xCA, 0xCE}
_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def implausibly_small(file_size: int, width: int, height: int) -> bool:
    """True when ``file_size`` bytes cannot hold a JPEG of ``width`` x ``height``."""
    return width * height > file_size * MAX_PIXELS_PER_BYTE


def progressive_scans_missing(data: bytes) -> bool | None:
    """For a progressive JPEG, True when some coefficient of some component never gets its
    final (Al=0) scan: the file ends early. None for sequential files or unparsable ones."""
    pos, components, progressive = 2, [], False
    done: dict[int, np.ndarray] = {}
    try:
        while pos + 4 <= len(data):
            if data[pos] != 0xFF:
                return None
            marker = data[pos + 1]
            if marker == 0xFF:  # fill byte
                pos += 1
                continue
            if marker == 0xD9:  # EOI
                break
            length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
            seg = data[pos + 4:pos + 2 + length]
            if marker in _SOF:
                progressive = marker in _SOF_PROGRESSIVE
                if not progressive:
                    return None
                components = [seg[6 + 3 * i] for i in range(seg[5])]
                done = {c: np.zeros(64, bool) for c in components}
            pos += 2 + length
            if marker == 0xDA:  # SOS: Ns, (id, tables) x Ns, Ss, Se, Ah/Al; then entropy data
                ns = seg[0]
                ids = [seg[1 + 2 * i] for i in range(ns)]
                ss, se, al = seg[1 + 2 * ns], seg[2 + 2 * ns], seg[3 + 2 * ns] & 0x0F
                if al == 0:
                    for c in ids:
                        if c in done:
                            done[c][ss:se + 1] = True
                m = _MARKER.search(data, pos)
                if m is None:
                    break
                pos = m.start()
    except (IndexError, struct.error):
        return None
    if not progressive or not done:
        return None
    return not all(d.all() for d in done.values())


def grey_rows_at_bottom(rgb: np.ndarray) -> int:
    """How many rows at the bottom are exactly level 128 everywhere: blocks a sequential
    decoder filled in for data that was not there."""
    flat = np.all(rgb.reshape(rgb.shape[0], -1) == 128, axis=1)
    if flat.all():
        return 0  # a mid-grey picture: nothing is missing
    not_flat = np.flatnonzero(~flat)
    return int(rgb.shape[0] - 1 - not_flat[-1])
