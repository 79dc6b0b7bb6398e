"""How an output is encoded: the Pillow image and save parameters that keep what the source
was (grey, alpha, ICC, EXIF, DPI, XMP and text, a JPEG's own tables) where the format allows."""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
from PIL import Image

from refrestore.imagemeta import metadata_params

from .colour import _flatten_on_white, _icc_space, _luma
from .formats import _ALPHA_FORMATS, _META_FORMATS
from .loaded import LoadedImage

log = logging.getLogger(__name__)


# The IJG standard luminance table (any order: only its sum is used).
_STD_LUMA_SUM = 3688
# A source whose tables are at least this fine keeps them; a coarser one (a photo shared at
# quality 60-85) is written at quality 95, 4:4:4: its tables would put the 8x8 blocks back into
# the faces just restored (three real faces moved under 2 grey levels because of it), and the
# rest of the photo moves by about half a grey level at most at 95 (0.24-0.52 measured).
KEEP_TABLES_FROM_QUALITY = 90.0


def table_quality(luma: tuple[int, ...]) -> float:
    """The IJG quality (1-100) whose scaled standard table has the sum of ``luma``."""
    scale = 100.0 * sum(luma) / _STD_LUMA_SUM
    return (200.0 - scale) / 2.0 if scale <= 100.0 else 5000.0 / max(scale, 1e-6)


def _same_picture(shape: tuple[int, ...], source: tuple[int, ...]) -> bool:
    """True when an array of ``shape`` is the source's picture at a whole-number scale."""
    h, w, sh, sw = shape[0], shape[1], source[0], source[1]
    return sh > 0 and sw > 0 and h % sh == 0 and w % sw == 0 and h // sh == w // sw


def _prepare(rgb: np.ndarray, like: LoadedImage, fmt: str) -> tuple[Image.Image, dict[str, Any]]:
    h, w = rgb.shape[:2]
    alpha = like.alpha
    if alpha is not None and alpha.shape != (h, w):
        alpha = np.asarray(Image.fromarray(alpha, mode="L").resize((w, h), Image.Resampling.LANCZOS))
    if alpha is not None and fmt not in _ALPHA_FORMATS:
        log.warning("%s cannot hold transparency: flattening onto white", fmt)
        rgb = _flatten_on_white(rgb, alpha)
        alpha = None
    if like.grayscale:
        im = Image.fromarray(_luma(rgb), mode="L")
        out_space = "GRAY"
    else:
        im = Image.fromarray(np.ascontiguousarray(rgb), mode="RGB")
        out_space = "RGB"
    if alpha is not None:
        im.putalpha(Image.fromarray(np.ascontiguousarray(alpha), mode="L"))
    params: dict[str, Any] = {}
    if fmt in _META_FORMATS:
        if like.icc_profile and _icc_space(like.icc_profile) == out_space:
            params["icc_profile"] = like.icc_profile
        elif like.icc_profile:
            log.info("not carrying a %s ICC profile into a %s output", _icc_space(like.icc_profile), out_space)
        if like.exif:
            params["exif"] = like.exif
    params.update(metadata_params(like.meta, fmt))
    if like.dpi:
        sx = w / like.size[0] if like.size[0] else 1.0
        sy = h / like.size[1] if like.size[1] else 1.0
        params["dpi"] = (like.dpi[0] * sx, like.dpi[1] * sy)  # same print size after upscaling
    if (fmt == "JPEG" and like.jpeg is not None and _same_picture(rgb.shape, like.rgb.shape)
            and table_quality(like.jpeg.qtables[0]) >= KEEP_TABLES_FROM_QUALITY):
        # The source's own tables and sampling (no quality: Pillow would rescale the tables).
        # Only for the photo itself (or its upscale): face crops and sheets get quality 95.
        params.update(qtables=[list(t) for t in like.jpeg.qtables], subsampling=like.jpeg.subsampling)
    elif fmt == "JPEG":
        params.update(quality=95, subsampling=0)
    elif fmt == "WEBP":
        params.update(quality=95, method=4)
    elif fmt == "AVIF":
        params.update(quality=90, subsampling="4:4:4")
    elif fmt == "PNG":
        # level 4: 2.7x faster than Pillow's default 6 on a 12 MP photo, files 5% larger
        params.update(compress_level=4)
    elif fmt == "TIFF":
        # Uncompressed: Pillow's own TIFF writer keeps the EXIF sub-IFDs (capture date,
        # camera settings); the libtiff path that LZW needs rejects them.
        params.update(compression=None)
    return im, params
