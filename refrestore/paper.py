"""What of a scan is the picture, and what is paper or a scanner's lid.

A small print scanned on an A4 page is mostly neutral paper: judged as a whole, the page
outvotes the print's colours, and its faces are small against the page. Both the grey test
(``imageio``) and face detection (``detection.content``) look only where the content is.
Pure numpy and OpenCV; nothing above this module is imported.
"""
from __future__ import annotations

import numpy as np

# Neutral pixels this bright (paper) or this dark (a scanner lid) are not content; neutral
# means a chroma max(R,G,B) - min(R,G,B) under NEUTRAL_MAX_CHROMA.
PAPER_MIN_LEVEL = 235
LID_MAX_LEVEL = 24
NEUTRAL_MAX_CHROMA = 24
PROBE_SIDE = 512  # the content box is found on a copy this size
MAX_CONTENT_SHARE = 0.6  # content covering more of the page than this: the page is the photo
MIN_CONTENT_PROBE_PIXELS = 64
MARGIN = 0.03  # of the page's longer side, around the content box


def content_mask(rgb: np.ndarray) -> np.ndarray:
    """True where an HxWx3 uint8 image is neither neutral paper nor a dark lid."""
    hi, lo = rgb.max(axis=2), rgb.min(axis=2)
    chroma = hi.astype(np.int16) - lo
    return ~(((lo >= PAPER_MIN_LEVEL) | (hi <= LID_MAX_LEVEL)) & (chroma < NEUTRAL_MAX_CHROMA))


def content_box(rgb: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the content of a mostly-paper scan, with a margin; None when the
    picture fills the page (or there is no content): then the whole image is the photo."""
    import cv2  # here: the grey test imports this module, and needs only numpy

    h, w = rgb.shape[:2]
    scale = min(1.0, PROBE_SIDE / max(h, w))
    probe = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA) \
        if scale < 1.0 else rgb
    mask = content_mask(probe).astype(np.uint8)
    # Dust and specks on the paper are not content: an opening removes anything under 3 px.
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    if int(mask.sum()) < MIN_CONTENT_PROBE_PIXELS:
        return None
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    if (y1 - y0) * (x1 - x0) > MAX_CONTENT_SHARE * mask.shape[0] * mask.shape[1]:
        return None
    pad = MARGIN * max(h, w)
    return (max(0, int(x0 / scale - pad)), max(0, int(y0 / scale - pad)),
            min(w, int(np.ceil(x1 / scale + pad))), min(h, int(np.ceil(y1 / scale + pad))))
