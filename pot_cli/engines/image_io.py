"""Image reading and conversion to a model input, for the simplified-engine data source.

As in the original POT, the IR carries its own preprocessing (channel reversal, mean, scale), so
an image is only decoded, converted to the model's channel count, resized to the model's
``H x W`` and laid out per the input layout: **BGR order, values 0..255, no normalization**.

Decoding uses OpenCV on the file's bytes (``cv2.imdecode(np.fromfile(path, np.uint8), ...)``)
so Unicode paths work on every platform.

Memory: one image is decoded at a time. A JPEG of more than :data:`MAX_DECODE_PIXELS` pixels
that is at least 4x larger than the model input is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's
DCT scaling, ``cv2.IMREAD_REDUCED_*``), never below twice the model's ``H x W``, so a folder of
camera photos costs no more memory than small images. Other formats are decoded at full size.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from pot_cli.errors import DatasetError

#: File extensions (lower case, with the dot) read as images.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp",
        ".pbm", ".pgm", ".ppm", ".pnm", ".pxm", ".pfm", ".sr", ".ras", ".hdr", ".pic",
        ".exr", ".jp2", ".j2k", ".gif", ".avif",
    }
)

#: Shown in messages that say what the data source may hold.
IMAGE_EXTENSIONS_TEXT = ".jpg .png .bmp .tif .webp ..."

#: Channel counts an image can be converted to: gray, BGR, BGRA.
SUPPORTED_CHANNELS = (1, 3, 4)

_HEADER_BYTES = 32

#: JPEGs with more pixels than this may be decoded at a reduced scale (see the module docstring).
MAX_DECODE_PIXELS = 2048 * 2048

try:  # errors only: a corrupt file is reported once by pot, not also by OpenCV's own warnings
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
except AttributeError:  # an OpenCV build without the logging module
    pass


def looks_like_image(header: bytes) -> bool:
    """Tell from the first bytes of a file whether it holds an image format OpenCV can read.

    A cheap check by signature (JPEG, PNG, BMP, TIFF, WebP, PNM/PFM, Sun raster, Radiance HDR,
    OpenEXR, JPEG 2000, GIF, AVIF); it does not prove the file decodes.

    :param header: the first bytes of the file (32 are enough).
    :return: True when the signature is a known image format.
    """
    h = header
    return (
        h.startswith(b"\xff\xd8\xff")  # JPEG
        or h.startswith(b"\x89PNG\r\n\x1a\n")
        or h.startswith(b"BM")
        or h[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # TIFF, BigTIFF
        or (h.startswith(b"RIFF") and h[8:12] == b"WEBP")
        or (len(h) >= 3 and h[0:1] == b"P" and h[1:2] in b"1234567fF" and h[2:3].isspace())
        or h.startswith(b"\x59\xa6\x6a\x95")  # Sun raster
        or h.startswith((b"#?RADIANCE", b"#?RGBE"))
        or h.startswith(b"\x76\x2f\x31\x01")  # OpenEXR
        or h.startswith(b"\x00\x00\x00\x0cjP  \r\n\x87\n")  # JPEG 2000 (JP2 box)
        or h.startswith(b"\xff\x4f\xff\x51")  # JPEG 2000 codestream
        or h.startswith((b"GIF87a", b"GIF89a"))
        or (h[4:8] == b"ftyp" and h[8:12] in (b"avif", b"avis"))
    )


def sniff_image(path: Path) -> bool:
    """Return True when ``path`` starts with a known image signature (see :func:`looks_like_image`).

    :param path: the file to check; only its first 32 bytes are read.
    :raises OSError: when the file cannot be opened or read.
    """
    with open(path, "rb") as f:
        return looks_like_image(f.read(_HEADER_BYTES))


def jpeg_size(data: np.ndarray) -> tuple[int, int] | None:
    """``(height, width)`` from a JPEG's frame header, without decoding, or None when ``data``
    is not a JPEG or has no frame header (EXIF orientation is not applied).

    :param data: the file's bytes, uint8.
    """
    b = data
    n = len(b)
    if n < 4 or b[0] != 0xFF or b[1] != 0xD8:
        return None
    i = 2
    while i + 4 <= n:
        if b[i] != 0xFF:
            return None
        marker = int(b[i + 1])
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = (int(b[i + 2]) << 8) | int(b[i + 3])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > n:
                return None
            return (int(b[i + 5]) << 8) | int(b[i + 6]), (int(b[i + 7]) << 8) | int(b[i + 8])
        if marker in (0xD9, 0xDA) or length < 2:  # end of image / start of scan before a frame
            return None
        i += 2 + length
    return None


def _reduced_scale(data: np.ndarray, target: tuple[int, int] | None) -> int:
    """1, 2, 4 or 8: how much a JPEG may be scaled down while decoding (see the module docstring)."""
    if target is None or not all(target):
        return 1
    size = jpeg_size(data)
    if size is None or size[0] * size[1] <= MAX_DECODE_PIXELS:
        return 1
    short, need = min(size), 2 * max(target)  # orientation-agnostic
    scale = 1
    for f in (2, 4, 8):
        if short // f < need:
            break
        scale = f
        if (size[0] // f) * (size[1] // f) <= MAX_DECODE_PIXELS:
            break
    return scale


_REDUCED_FLAGS = {
    (2, False): cv2.IMREAD_REDUCED_COLOR_2, (4, False): cv2.IMREAD_REDUCED_COLOR_4,
    (8, False): cv2.IMREAD_REDUCED_COLOR_8, (2, True): cv2.IMREAD_REDUCED_GRAYSCALE_2,
    (4, True): cv2.IMREAD_REDUCED_GRAYSCALE_4, (8, True): cv2.IMREAD_REDUCED_GRAYSCALE_8,
}


def read_image(path: Path, *, keep_alpha: bool = False, target: tuple[int, int] | None = None,
               gray: bool = False) -> np.ndarray:
    """Decode one image file as OpenCV does, without any conversion of values.

    EXIF orientation is applied (as ``cv2.imread`` does and as the original POT read images),
    except with ``keep_alpha``, where OpenCV decodes unchanged.

    :param path: the image file; any Unicode path works.
    :param keep_alpha: keep a fourth (alpha) channel when the file has one.
    :param target: the model input's ``(H, W)`` the image will be resized to, when known: a
        large JPEG is then decoded at a reduced scale (never below ``2 x target``; see the module
        docstring).
    :param gray: the image will be converted to one channel (used with a reduced decode only).
    :return: ``(H, W)`` for gray or ``(H, W, C)`` with C in 3 (BGR) or 4 (BGRA, only with
        ``keep_alpha``); dtype as stored: uint8, uint16 (16-bit PNG/TIFF) or float32 (HDR, EXR,
        PFM, float TIFF).
    :raises DatasetError: when the file cannot be read or does not decode.
    """
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise DatasetError(f"{path}: cannot read the file ({e.strerror or e})") from e
    flags = cv2.IMREAD_UNCHANGED if keep_alpha else (cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH)
    scale = 1 if keep_alpha else _reduced_scale(data, target)
    if scale > 1:
        flags = _REDUCED_FLAGS[(scale, gray)]
    image = None
    if data.size:
        try:
            image = cv2.imdecode(data, flags)
        except cv2.error as e:
            raise DatasetError(f"{path}: corrupt or unsupported image ({e.err})") from e
    if image is None or image.size == 0:
        raise DatasetError(f"{path}: corrupt or unsupported image; OpenCV cannot decode it")
    return image


@dataclasses.dataclass(frozen=True)
class ImageInput:
    """How images become one model input.

    :param layout: axis letters of the input, a permutation of ``NCHW`` (rank 4) or ``CHW``
        (rank 3), for example ``"NHWC"``.
    :param channels: C, one of 1 (gray), 3 (BGR), 4 (BGRA).
    :param height: H in pixels, or None to keep each image's own height.
    :param width: W in pixels, or None to keep each image's own width.
    :param dtype: numpy dtype of the input: a float type (values 0..255) or uint8.
    """

    layout: str
    channels: int
    height: int | None
    width: int | None
    dtype: np.dtype


def create_image_input(what: str, dims: Sequence[int | None], layout: Sequence[str] | None,
                       dtype: np.dtype | None) -> ImageInput:
    """Describe how images fill a model input of rank 3 or 4.

    :param what: the input, for messages, for example ``"input 'x' [?,3,?,?]"``.
    :param dims: the input's dims (None for a dynamic one).
    :param layout: axis names from the ``layout`` argument or the IR; None to infer them from
        ``dims`` (see :func:`infer_image_layout`).
    :param dtype: the input's numpy dtype; None (dynamic) means float32.
    :return: the image input; a dynamic C is taken as 3 (BGR), a dynamic H or W keeps each
        image's own size.
    :raises DatasetError: when the layout cannot be told or is not an image layout, or C is
        not 1, 3 or 4.
    """
    names = tuple(layout) if layout is not None else None
    if names is None:
        inferred = infer_image_layout(list(dims))
        if inferred is None:
            raise DatasetError(f"{what}: cannot tell its layout from the shape or the IR; "
                               "give it with --layout or engine.layout, for example NCHW or NHWC")
        names = tuple(inferred)
    if set(names) != (set("NCHW") if len(dims) == 4 else set("CHW")):
        raise DatasetError(f"layout {layout_text(names)} of {what} is not an image layout; "
                           "expected NCHW, NHWC, CHW or HWC")
    c = dims[names.index("C")] or 3
    if c not in SUPPORTED_CHANNELS:
        raise DatasetError(f"{what} ({layout_text(names)}) has {c} channels; images give "
                           "1 (gray), 3 (BGR) or 4 (BGRA); use .npy files")
    return ImageInput("".join(names), c, dims[names.index("H")], dims[names.index("W")],
                      np.dtype(dtype) if dtype is not None else np.dtype(np.float32))


def convert_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """Convert a decoded image to gray, BGR or BGRA.

    Gray -> BGR repeats the gray value; BGRA -> BGR drops alpha; BGR -> gray uses OpenCV's
    ``0.299 R + 0.587 G + 0.114 B``; gray -> BGRA and BGR -> BGRA add an opaque alpha.
    A two-channel image (gray + alpha) is taken as gray.

    :param image: ``(H, W)`` or ``(H, W, n)`` with n in 1..4; uint8, uint16 or float32.
    :param channels: wanted channel count, 1, 3 or 4.
    :return: ``(H, W, channels)`` in the input's dtype.
    """
    if image.ndim == 3 and image.shape[2] <= 2:
        image = image[:, :, 0]
    n = 1 if image.ndim == 2 else image.shape[2]
    if n != channels:
        code = {
            (1, 3): cv2.COLOR_GRAY2BGR, (1, 4): cv2.COLOR_GRAY2BGRA,
            (3, 1): cv2.COLOR_BGR2GRAY, (3, 4): cv2.COLOR_BGR2BGRA,
            (4, 1): cv2.COLOR_BGRA2GRAY, (4, 3): cv2.COLOR_BGRA2BGR,
        }[(n, channels)]
        image = cv2.cvtColor(image, code)
    return image.reshape(image.shape[0], image.shape[1], channels)


def prepare_image(image: np.ndarray, spec: ImageInput) -> np.ndarray:
    """Turn a decoded image into one model input sample (batch 1), as the original POT did.

    Steps: channels converted (:func:`convert_channels`); resized to ``spec.height x
    spec.width`` with ``cv2.INTER_LINEAR`` (in the stored dtype, so 8-bit values are rounded as
    ``cv2.resize`` does); 16-bit values scaled to 0..255 (``value / 257``); float images kept as
    they are; cast to ``spec.dtype``; axes laid out per ``spec.layout``. BGR order, no mean or
    scale: the IR carries its preprocessing.

    :param image: ``(H0, W0)`` or ``(H0, W0, n)`` from :func:`read_image`.
    :param spec: the model input.
    :return: the sample, for example ``(1, 3, H, W)`` for ``NCHW`` or ``(1, H, W, 3)`` for
        ``NHWC``, dtype ``spec.dtype``.
    """
    if image.dtype not in (np.uint8, np.uint16, np.float32):
        image = image.astype(np.float32)
    image = convert_channels(image, spec.channels)
    h0, w0 = image.shape[:2]
    h = spec.height or h0
    w = spec.width or w0
    if (h, w) != (h0, w0):
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
        image = image.reshape(h, w, spec.channels)
    if spec.dtype == np.uint8:
        if image.dtype == np.uint16:
            image = np.rint(image / 257.0)
        if image.dtype != np.uint8:
            image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    elif image.dtype == np.uint16:
        image = (image.astype(np.float32) / np.float32(257.0)).astype(spec.dtype)
    else:
        image = image.astype(spec.dtype)
    # (H, W, C) + a trailing batch axis -> the input's axis order
    src = "HWC"
    if "N" in spec.layout:
        image, src = image[..., None], "HWCN"
    return np.ascontiguousarray(image.transpose([src.index(a) for a in spec.layout]))


def parse_layout(text: str) -> tuple[str, ...] | None:
    """Parse a layout string into axis names.

    Accepts ``"NCHW"``, ``"nhwc"``, ``"[N,C,H,W]"`` (OpenVINO's form), ``"?CHW"``. An empty
    layout, ``"[...]"`` or one with ``...`` is unknown.

    :param text: the layout.
    :return: upper-case axis names (``?`` for an unnamed axis), or None when unknown.
    :raises ValueError: when the text is not a layout.
    """
    t = text.strip()
    if t.startswith("[") and t.endswith("]"):
        names = [n.strip().upper() for n in t[1:-1].split(",")] if t[1:-1].strip() else []
    else:
        names = list(t.upper())
    if not names or "..." in names or "." in names:
        return None
    for n in names:
        if not n or not (n == "?" or n.replace("_", "").isalnum()):
            raise ValueError(f"invalid layout {text!r}")
    named = [n for n in names if n != "?"]
    if len(set(named)) != len(named):
        raise ValueError(f"invalid layout {text!r}: an axis is repeated")
    return tuple(names)


def layout_text(names: tuple[str, ...] | None) -> str:
    """Return a layout as ``"NCHW"`` when all axis names are single letters, else ``"[a,b]"``.

    :param names: axis names from :func:`parse_layout`, or None (unknown) -> ``""``.
    """
    if not names:
        return ""
    if all(len(n) == 1 for n in names):
        return "".join(names)
    return "[" + ",".join(names) + "]"


def infer_image_layout(dims: list[int | None]) -> str | None:
    """Infer an image layout from a static-rank shape, as the original POT did.

    Rank 4: ``NCHW`` when dim 1 is 1, 3 or 4 (OpenVINO's default wins when the last dim is one
    of them too); ``NHWC`` when only the last dim is. Rank 3: ``CHW`` / ``HWC`` likewise with
    dims 0 and 2.

    :param dims: the input's dims, None for a dynamic one.
    :return: the layout, or None when it cannot be told.
    """
    if len(dims) == 4:
        first, last, order = dims[1], dims[3], ("NCHW", "NHWC")
    elif len(dims) == 3:
        first, last, order = dims[0], dims[2], ("CHW", "HWC")
    else:
        return None
    if first in SUPPORTED_CHANNELS:
        return order[0]
    if last in SUPPORTED_CHANNELS:
        return order[1]
    return None


def is_image_path(path: str | os.PathLike) -> bool:
    """Return True when the file name has an image extension (see :data:`IMAGE_EXTENSIONS`)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS
