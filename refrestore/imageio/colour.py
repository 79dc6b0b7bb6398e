"""Colour and bit depth: every Pillow mode to 8-bit RGB (or grey) plus alpha, the near-grey
test, and the pixel conversions the writer needs (flattening on white, luma), all in bands of
rows so a 50 MP photo is never copied whole more often than needed."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageCms

from refrestore.paper import content_mask

from .loaded import ImageReadError

# Near-grey test, on a copy at most GREY_PROBE_SIDE px wide, with per-pixel chroma
# max(R,G,B) - min(R,G,B). Measured on ../shared/data/real_lq: true greyscale scans have
# mean 0-0.05; a grey print with a faint scanner cast (gray_faces John Lennon) mean 5.7,
# p99 13; a grey photo with a real colour strip at its edge (Zac Efron) mean 7.9, p99 44;
# hand-tinted/sepia and colour photos have mean >= 20. The p99 bound keeps any genuinely
# coloured region from being thrown away.
GREY_PROBE_SIDE = 256
GREY_MAX_MEAN_CHROMA = 8.0
GREY_MAX_P99_CHROMA = 24.0
# Paper and a scanner's lid are not content (``paper.content_mask``).
# Content this many probe pixels or more is judged alone, however much paper is around it: a
# 620x391 print on an A4 scan at 300 dpi is 2% of the page (about 900 probe pixels).
MIN_CONTENT_PIXELS = 64


def _is_16bit_source(im: Image.Image) -> bool:
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        return True
    for tile in im.tile:
        args = tile.args
        rawmode = args[0] if isinstance(args, tuple) and args else args
        if isinstance(rawmode, str) and ";16" in rawmode:
            return True  # 16-bit RGB(A) that Pillow decodes straight to 8 bits
    return False


def _deep_to_8bit(im: Image.Image) -> np.ndarray:
    """HxW uint8 from a 16/32-bit integer or float greyscale image, scaled by its range."""
    arr = np.asarray(im)
    if im.mode.startswith("I;16"):
        return (arr.astype(np.uint16, copy=False) >> 8).astype(np.uint8)
    if im.mode == "F":
        arr32 = arr.astype(np.float32, copy=False)
        finite_max = float(np.nanmax(arr32)) if arr32.size else 0.0
        scale = 255.0 if finite_max <= 1.0 + 1e-6 else (1.0 if finite_max <= 255.0 else 255.0 / 65535.0)
        out = np.nan_to_num(arr32 * np.float32(scale), nan=0.0)
        return np.clip(out, 0, 255).astype(np.uint8)
    top = int(arr.max()) if arr.size else 0
    if top <= 255:
        return np.clip(arr, 0, 255).astype(np.uint8)
    if top <= 65535:
        return (np.clip(arr, 0, 65535) >> 8).astype(np.uint8)
    return (np.clip(arr, 0, None) // (top // 255 + 1)).astype(np.uint8)


def _icc_space(icc: bytes | None) -> str | None:
    """Colour space of an ICC profile ('RGB', 'GRAY', 'CMYK', ...) from its header."""
    if not icc or len(icc) < 20:
        return None
    return icc[16:20].decode("ascii", "replace").strip()


def _cmyk_to_rgb(im: Image.Image, icc: bytes | None, warn: list[str]) -> Image.Image:
    if icc and _icc_space(icc) == "CMYK":
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            dst = ImageCms.createProfile("sRGB")
            out = ImageCms.profileToProfile(im, src, dst, outputMode="RGB")
            if out is not None:
                warn.append("CMYK converted to sRGB with its ICC profile")
                return out
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass
    warn.append("CMYK converted to RGB")
    return im.convert("RGB")


def _near_grey(im: Image.Image) -> bool:
    """True when (almost) every pixel of an RGB image is neutral, on a small copy."""
    probe = im
    w, h = im.size
    factor = max(1, max(w, h) // GREY_PROBE_SIDE)
    if factor > 1:
        probe = im.reduce(factor)  # box average: cheap, and it averages out JPEG chroma noise
    arr = np.asarray(probe.convert("RGB"), dtype=np.uint8)
    chroma = arr.max(axis=2).astype(np.int16) - arr.min(axis=2)
    # Judge where the content is: a small colour print scanned on a white A4 page (or on a
    # black scanner lid) is mostly neutral paper, which would outvote the photo's colours.
    content = content_mask(arr)
    if int(content.sum()) >= MIN_CONTENT_PIXELS:
        chroma = chroma[content]
    return bool(chroma.mean() <= GREY_MAX_MEAN_CHROMA and np.percentile(chroma, 99) <= GREY_MAX_P99_CHROMA)


def _to_array(im: Image.Image) -> np.ndarray:
    """A writable HxWxC uint8 copy of ``im``, made in bands of rows.

    ``np.array(im)`` goes through ``tobytes()``, a third full-size copy; bands keep the peak
    at Pillow's image plus the result (about 350 MB for a 50 MP photo instead of 500).
    """
    w, h = im.size
    channels = len(im.getbands())
    out = np.empty((h, w, channels) if channels > 1 else (h, w), dtype=np.uint8)
    step = max(1, (8 << 20) // max(1, w * channels))
    for y in range(0, h, step):
        out[y:y + step] = np.asarray(im.crop((0, y, w, min(h, y + step))))
    return out


def _to_rgb_array(im: Image.Image) -> np.ndarray:
    """HxWx3 uint8 from an RGB or L image (grey is spread to three channels by numpy,
    which skips Pillow's 4-byte-per-pixel RGB copy)."""
    if im.mode == "RGB":
        return _to_array(im)
    grey = _to_array(im)
    out = np.empty(grey.shape + (3,), dtype=np.uint8)
    out[...] = grey[..., None]
    return out


def _to_rgb(
    im: Image.Image, mode: str, icc: bytes | None, warn: list[str]
) -> tuple[Image.Image, Image.Image | None, bool]:
    """(RGB image, or L for grey sources; alpha as L or None; source is greyscale)."""
    alpha: Image.Image | None = None
    if mode == "P" or mode == "PA":
        im = im.convert("RGBA")  # palette transparency becomes real alpha
        mode = "RGBA"
        warn.append("palette image written in full colour")
    elif mode in ("L", "RGB") and "transparency" in im.info:
        im = im.convert("LA" if mode == "L" else "RGBA")
        mode = im.mode
    if mode in ("RGBA", "RGBa", "LA", "La"):
        if mode in ("RGBa", "La"):  # premultiplied: undo it before splitting
            im = im.convert("RGBA" if mode == "RGBa" else "LA")
            mode = im.mode
        alpha = im.getchannel("A")
        if mode == "LA":
            return im.getchannel("L"), alpha, True
        return im.convert("RGB"), alpha, False
    if mode == "L":
        return im, None, True
    if mode == "1":
        return im.convert("L"), None, True
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_deep_to_8bit(im), mode="L"), None, True
    if mode == "RGB":
        return im, None, False
    if mode == "CMYK":
        return _cmyk_to_rgb(im, icc, warn), None, False
    if mode == "RGBX":
        return im.convert("RGB"), None, False
    try:
        out = im.convert("RGB")
    except ValueError as err:
        raise ImageReadError(f"unsupported colour mode {mode}") from err
    warn.append(f"{mode} converted to RGB")
    return out, None, False


def _flatten_on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Alpha-composite over white in integer maths, a band of rows at a time (no big temporaries)."""
    out = np.empty_like(rgb)
    step = max(1, (1 << 22) // max(1, rgb.shape[1]))
    for y in range(0, rgb.shape[0], step):
        c = rgb[y:y + step].astype(np.uint16)
        a = alpha[y:y + step, :, None].astype(np.uint16)
        out[y:y + step] = ((c * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)
    return out


def _luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma (Pillow's RGB->L weights) in bands of rows, without an RGB image copy."""
    out = np.empty(rgb.shape[:2], dtype=np.uint8)
    step = max(1, (1 << 22) // max(1, rgb.shape[1]))
    for y in range(0, rgb.shape[0], step):
        band = rgb[y:y + step]
        # 0.299, 0.587, 0.114 in 1/65536, as Pillow does it
        acc = band[..., 0] * np.uint32(19595)
        acc += band[..., 1] * np.uint32(38470)
        acc += band[..., 2] * np.uint32(7471)
        acc += np.uint32(32768)
        out[y:y + step] = acc >> 16
    return out
