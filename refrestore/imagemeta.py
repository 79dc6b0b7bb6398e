"""What a photo carries besides its pixels, its colour profile and EXIF: XMP, IPTC, comments and
PNG text (titles, captions, keywords, credits). Read with the photo (``imageio.read_image``)
and written into its outputs where the output's format has a place for each:

| carried | JPEG | PNG | WebP | TIFF |
|---|---|---|---|---|
| XMP | APP1 | iTXt ``XML:com.adobe.xmp`` | XMP chunk | tag 700 |
| IPTC | APP13 (Photoshop 8BIM 0x0404) | - | - | tag 33723 |
| comment | COM | tEXt ``Comment`` | - | - |
| PNG text | - | tEXt/iTXt | - | - |

Also here: the EXIF tags that describe a TIFF's layout rather than the photo (sample format,
bits per sample, photometric interpretation...). A TIFF's EXIF block is its whole first IFD;
carried into an output they relabelled 8-bit RGB as float or CMYK, and neither Pillow nor
OpenCV could open the file.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from PIL import Image

_XMP_KEY = "XML:com.adobe.xmp"
_IPTC_RESOURCE = 0x0404  # Photoshop image resource holding IPTC-IIM records
_MAX_BYTES = 1 << 20  # metadata beyond this is not carried (a preview hidden in XMP, say)

# Tags of a TIFF's first IFD that describe how its pixels are stored, not the photo: the
# output's writer sets its own. (Resolution stays: it describes the print.) XMP, IPTC,
# Photoshop resources and the ICC profile go by their own routes.
LAYOUT_TAGS = frozenset({
    254, 255, 256, 257, 258, 259, 262, 263, 266, 273, 277, 278, 279, 280, 281, 284, 290, 291,
    292, 293, 301, 317, 318, 319, 320, 321, 322, 323, 324, 325, 332, 333, 334, 336, 338, 339, 340,
    341, 347, 513, 514, 529, 530, 531, 532, 700, 33723, 34377, 34675, 37724,
})


@dataclass(frozen=True)
class Metadata:
    xmp: bytes | None = None
    iptc: bytes | None = None  # IPTC-IIM records
    comment: bytes | None = None
    text: tuple[tuple[str, str], ...] = ()  # PNG text chunks other than XMP

    def __bool__(self) -> bool:
        return bool(self.xmp or self.iptc or self.comment or self.text)


def _small(data: Any) -> bytes | None:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return bytes(data) if isinstance(data, (bytes, bytearray)) and 0 < len(data) <= _MAX_BYTES else None


def read_metadata(im: Image.Image) -> Metadata:
    """The XMP, IPTC, comment and PNG text of an opened (and loaded) image; never raises."""
    try:
        info, fmt = im.info, im.format
        iptc = None
        if fmt in ("JPEG", "MPO") and isinstance(info.get("photoshop"), dict):
            iptc = _small(info["photoshop"].get(_IPTC_RESOURCE))
        elif fmt == "TIFF":
            iptc = _small(getattr(im, "tag_v2", {}).get(33723))
        text: tuple[tuple[str, str], ...] = ()
        if fmt == "PNG":
            text = tuple((str(k), str(v)) for k, v in getattr(im, "text", {}).items()
                         if k != _XMP_KEY and len(str(v)) <= _MAX_BYTES)
        comment = _small(info.get("comment")) if fmt in ("JPEG", "MPO", "GIF", "WEBP") else None
        return Metadata(xmp=_small(info.get("xmp")), iptc=iptc, comment=comment, text=text)
    except Exception:  # noqa: BLE001 - metadata must never cost the photo
        return Metadata()


def _app13(iptc: bytes) -> bytes:
    """A JPEG APP13 segment holding ``iptc`` as Photoshop resource 0x0404."""
    body = b"8BIM" + struct.pack(">HH", _IPTC_RESOURCE, 0) + struct.pack(">I", len(iptc)) + iptc
    body += b"\x00" * (len(iptc) % 2)  # resources are padded to an even size
    payload = b"Photoshop 3.0\x00" + body
    return b"\xff\xed" + struct.pack(">H", len(payload) + 2) + payload


def metadata_params(meta: Metadata | None, fmt: str) -> dict[str, Any]:
    """Pillow save parameters that write ``meta`` into a ``fmt`` file (empty where it has no place)."""
    if not meta:
        return {}
    params: dict[str, Any] = {}
    if fmt == "JPEG":
        if meta.xmp:
            params["xmp"] = meta.xmp
        if meta.comment:
            params["comment"] = meta.comment
        if meta.iptc and len(meta.iptc) < 65000:
            params["extra"] = _app13(meta.iptc)
    elif fmt == "PNG":
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        keys = {k for k, _ in meta.text}
        for key, value in meta.text:
            _add_png_text(info, key, value)
        if meta.comment and "Comment" not in keys:
            _add_png_text(info, "Comment", meta.comment.decode("utf-8", "replace"))
        if meta.xmp:
            info.add_itxt(_XMP_KEY, meta.xmp.decode("utf-8", "replace"))
        if info.chunks:
            params["pnginfo"] = info
    elif fmt == "WEBP" and meta.xmp:
        params["xmp"] = meta.xmp
    elif fmt == "TIFF" and (meta.xmp or meta.iptc):
        from PIL.TiffImagePlugin import ImageFileDirectory_v2

        ifd = ImageFileDirectory_v2()
        if meta.xmp:
            ifd[700] = meta.xmp
            ifd.tagtype[700] = 1  # BYTE
        if meta.iptc:
            ifd[33723] = meta.iptc
            ifd.tagtype[33723] = 7  # UNDEFINED
        params["tiffinfo"] = ifd
    return params


def _add_png_text(info: Any, key: str, value: str) -> None:
    try:
        value.encode("latin-1")
        info.add_text(key, value)
    except UnicodeEncodeError:
        info.add_itxt(key, value)


METADATA_PARAMS = frozenset({"xmp", "comment", "extra", "pnginfo", "tiffinfo"})
