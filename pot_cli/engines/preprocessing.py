"""Readers and preprocessing steps of the Accuracy-Checker-style engine, and config problems.

Readers (``reader``): ``opencv_imread`` (``reading_flag`` color, gray, unchanged: OpenCV's
``IMREAD_*`` flags, BGR order), ``pillow_imread`` (Pillow's decoder; ``to_rgb``, default true:
RGB order, as Accuracy Checker), ``numpy_reader`` (``.npy``/``.npz``, ``keys``) and
``numpy_txt_reader`` (``numpy.loadtxt``). ``resize`` and ``crop`` take ``use_pillow: true``
(Pillow's resampling, default BILINEAR, on 8-bit images; Pillow's crop with rounded offsets), as
Accuracy Checker's Pillow backends.

Preprocessing steps (``preprocessing``, applied in order to an ``H x W x C`` image, as
Accuracy Checker 2023.3 ``preprocessor/*.py`` does with OpenCV):

* ``resize``: ``size`` (wins over ``dst_width``/``dst_height``, as in Accuracy Checker) or
  ``dst_width``/``dst_height``; ``aspect_ratio_scale``: ``greater`` (the shorter side becomes the
  size), ``fit_to_window``, ``width``, ``height``, ``frcnn_keep_aspect_ratio`` (new sizes truncated
  with ``int()``); ``interpolation`` NEAREST, LINEAR (default), CUBIC, AREA, LANCZOS4. The result
  is float32 (OpenCV resizes in the input type, then Accuracy Checker casts).
* ``auto_resize``: resize (OpenCV LINEAR) to the model's input size, which the engine puts in
  ``meta.extra["model_input_size"]`` as ``(H, W)``; the result is float32 as in Accuracy Checker.
* ``crop``: central crop to ``size`` or ``dst_width``/``dst_height``, or ``central_fraction``
  (new size ``int(H * f)``).
* ``padding``: pad to ``size`` or ``dst_width``/``dst_height`` (default: the preferred size left by
  the last resize, else the image size), rounded up to a multiple of ``stride`` (1);
  ``pad_type`` center (default), left_top, right_bottom; ``left_top_extend`` (center: the odd
  pixel goes left/top); ``pad_value`` a number, ``[b, g, r]`` or ``"b, g, r"`` (default 0);
  ``use_numpy`` with ``numpy_pad_mode`` (constant, edge, maximum, minimum, mean, median,
  symmetric, wrap); ``enable_resize`` (resize the padded image to the requested size).
* ``bgr_to_rgb``, ``rgb_to_bgr`` (reverse the channel order), ``bgr_to_gray``.
* ``normalization``: ``(x - mean) / std`` per channel; ``mean``/``std`` a number, a list or a
  ``"a, b, c"`` string. The result is float32.

Geometric steps record what they did in ``SampleMeta.geometric_operations`` (see
:meth:`Step.apply`) so that adapters and postprocessing can map boxes back to the original image.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import cv2
import numpy as np

from pot_cli.config.loader import did_you_mean
from pot_cli.errors import ConfigError, DatasetError

READERS = ("opencv_imread", "pillow_imread", "numpy_reader", "numpy_txt_reader")
#: readers that give images (``H x W x C`` uint8), which the preprocessing steps take
IMAGE_READERS = ("opencv_imread", "pillow_imread")
#: keys of each reader entry
READER_KEYS = {"opencv_imread": ("type", "reading_flag"), "pillow_imread": ("type", "to_rgb"),
               "numpy_reader": ("type", "keys"), "numpy_txt_reader": ("type",)}
PREPROCESSING = ("resize", "auto_resize", "crop", "padding", "bgr_to_rgb", "rgb_to_bgr", "bgr_to_gray",
                 "normalization")
_READ_FLAGS = {"color": cv2.IMREAD_COLOR, "gray": cv2.IMREAD_GRAYSCALE, "grayscale": cv2.IMREAD_GRAYSCALE,
               "unchanged": cv2.IMREAD_UNCHANGED}
_INTERPOLATION = {"NEAREST": cv2.INTER_NEAREST, "LINEAR": cv2.INTER_LINEAR, "BILINEAR": cv2.INTER_LINEAR,
                  "CUBIC": cv2.INTER_CUBIC, "BICUBIC": cv2.INTER_CUBIC, "AREA": cv2.INTER_AREA,
                  "LANCZOS4": cv2.INTER_LANCZOS4}
_ASPECT = ("greater", "fit_to_window", "width", "height", "frcnn_keep_aspect_ratio")
_PAD_TYPES = ("center", "left_top", "right_bottom")
_NUMPY_PAD_MODES = ("constant", "edge", "maximum", "minimum", "mean", "median", "symmetric", "wrap")
#: keys of each step that are read
_STEP_KEYS = {
    "resize": ("type", "size", "dst_width", "dst_height", "aspect_ratio_scale", "interpolation", "use_pillow"),
    "auto_resize": ("type",),
    "crop": ("type", "size", "dst_width", "dst_height", "central_fraction", "use_pillow"),
    "padding": ("type", "size", "dst_width", "dst_height", "stride", "pad_type", "pad_value", "use_numpy",
                "numpy_pad_mode", "enable_resize", "left_top_extend"),
    "normalization": ("type", "mean", "std", "images_only"),
    "bgr_to_rgb": ("type",), "rgb_to_bgr": ("type",), "bgr_to_gray": ("type",),
}


class Problems:
    """Collects config problems as ``<source>: <key.path>: <message>`` lines (all reported at once)."""

    def __init__(self, source: str):
        self.source = source
        self.lines: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.lines.append(f"{self.source}: {where}: {message}")

    def keys(self, section: Mapping, allowed: tuple[str, ...], where: str) -> None:
        for key in section:
            if key not in allowed:
                self.add(f"{where}.{key}", f"unknown key{did_you_mean(key, allowed)}; expected one of: "
                                           f"{', '.join(allowed)}")

    def raise_if_any(self) -> None:
        if self.lines:
            lines = sorted(set(self.lines))
            raise ConfigError("\n".join(lines), problems=lines)


@dataclass(frozen=True)
class Reader:
    """How a sample file is read: ``type`` from :data:`READERS`; ``flag`` (opencv) color, gray or
    unchanged; ``keys`` (numpy_reader) the ``.npz`` keys to feed, in input order."""

    type: str = "opencv_imread"
    flag: str = "color"
    keys: tuple[str, ...] = ()
    to_rgb: bool = True


@dataclass(frozen=True)
class Step:
    """One preprocessing step on an ``H x W x C`` image; ``params`` are already validated."""

    type: str
    params: Mapping[str, Any]

    def apply(self, image: np.ndarray, path: Path, meta: Any = None) -> np.ndarray:
        """Apply the step.

        :param image: ``(H, W, C)`` uint8 or float32.
        :param path: the sample file, for messages.
        :param meta: the sample's :class:`~pot_cli.engines.ac.representations.SampleMeta`, or None.
            A geometric step appends one dict to ``meta.geometric_operations`` (values in pixels of
            the images before/after the step):

            * ``resize`` / ``auto_resize``: ``type``, ``original_width``/``original_height`` (the
              input of the step), ``dst_width``/``dst_height`` (its output), ``scale_x`` =
              ``dst_width / original_width``, ``scale_y``, ``preferable_width``/``preferable_height``
              (the larger of the requested and the actual size: Accuracy Checker's default target of
              a following ``padding``);
            * ``crop``: ``type``, ``top``, ``left`` (offset of the kept window in the input),
              ``original_width``/``original_height``, ``dst_width``/``dst_height``;
            * ``padding``: ``type``, ``pad`` = ``[top, left, bottom, right]``,
              ``pref_width``/``pref_height`` (the padded size; the requested size when
              ``enable_resize`` resized it), ``width``/``height`` (the image size the padding was
              computed for: Accuracy Checker caps the height at the target height),
              ``original_width``/``original_height``, ``resized`` (bool), ``dst_width``/``dst_height``
              (the output size).

            Accuracy Checker 2023.3 records the same numbers as ``GeometricOperationMetadata``
            (``auto_resize`` is recorded there as a ``resize``; here it keeps its own name and the
            consumers treat both alike).
        :return: ``(H', W', C')``.
        :raises DatasetError: when the step does not fit the image (naming the file), or
            ``auto_resize`` runs without ``meta.extra["model_input_size"]``.
        """
        p = self.params
        h, w, c = image.shape
        ops = meta.geometric_operations if meta is not None else None
        if self.type == "resize":
            rw, rh = p["dst_width"], p["dst_height"]
            dw, dh = _aspect_size(p.get("aspect_ratio_scale"), rw, rh, w, h)
            if p.get("use_pillow"):
                image = _pillow(image, path, "resize").resize((dw, dh), _pillow_filter(p["interpolation"]))
                image = np.asarray(image)
            else:
                if (dw, dh) != (w, h):
                    image = cv2.resize(image, (dw, dh), interpolation=_INTERPOLATION[p["interpolation"]])
                image = image.astype(np.float32, copy=False)  # as Accuracy Checker's OpenCV resizer
            _record(ops, "resize", original_width=w, original_height=h, dst_width=dw, dst_height=dh,
                    scale_x=dw / w, scale_y=dh / h, preferable_width=max(dw, rw), preferable_height=max(dh, rh))
            return image.reshape(dh, dw, c)
        if self.type == "auto_resize":
            size = None if meta is None else meta.extra.get("model_input_size")
            if size is None:
                raise DatasetError(f"{path}: preprocessing auto_resize needs the model input size; expected the "
                                   "engine to give it (a model with a static image input)")
            dh, dw = (int(v) for v in size)
            image = cv2.resize(image, (dw, dh)).astype(np.float32).reshape(dh, dw, c)
            _record(ops, "auto_resize", original_width=w, original_height=h, dst_width=dw, dst_height=dh,
                    scale_x=dw / w, scale_y=dh / h, preferable_width=dw, preferable_height=dh)
            return image
        if self.type == "crop":
            if "central_fraction" in p:
                dh, dw = int(h * p["central_fraction"]), int(w * p["central_fraction"])
            else:
                dw, dh = p["dst_width"], p["dst_height"]
            if p.get("use_pillow"):  # Pillow's crop: rounded offsets, zero fill outside the image
                top, left = int(round((h - dh) / 2.0)), int(round((w - dw) / 2.0))
                out = np.asarray(_pillow(image, path, "crop").crop((left, top, left + dw, top + dh)))
                _record(ops, "crop", top=top, left=left, original_width=w, original_height=h, dst_width=dw,
                        dst_height=dh)
                return out.reshape(dh, dw, c)
            if dh > h or dw > w:
                raise DatasetError(f"{path}: crop to {dw}x{dh} does not fit the {w}x{h} image; "
                                   "expected a resize step before the crop")
            top, left = (h - dh) // 2, (w - dw) // 2
            _record(ops, "crop", top=top, left=left, original_width=w, original_height=h, dst_width=dw,
                    dst_height=dh)
            return image[top:top + dh, left:left + dw]
        if self.type == "padding":
            return _pad(image, p, ops)
        if self.type in ("bgr_to_rgb", "rgb_to_bgr", "bgr_to_gray"):
            if c != 3:
                raise DatasetError(f"{path}: {self.type} needs a 3-channel image, got {c} channel(s); "
                                   "expected reader reading_flag: color")
            if self.type == "bgr_to_gray":
                return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_BGR2GRAY).reshape(h, w, 1)
            return image[:, :, ::-1]
        # normalization
        mean, std = p["mean"], p["std"]
        for values, what in ((mean, "mean"), (std, "std")):
            if values.size not in (1, c):
                raise DatasetError(f"{path}: normalization {what} has {values.size} values for a "
                                   f"{c}-channel image; expected 1 or {c}")
        return ((image.astype(np.float32) - mean) / std).astype(np.float32)


#: Pillow's resampling filters by Accuracy Checker's interpolation names (``use_pillow: true``)
_PILLOW_FILTERS = {"NEAREST": "NEAREST", "NONE": "NEAREST", "BILINEAR": "BILINEAR", "LINEAR": "BILINEAR",
                   "BICUBIC": "BICUBIC", "CUBIC": "BICUBIC", "BOX": "BOX", "LANCZOS": "LANCZOS",
                   "ANTIALIAS": "LANCZOS", "HAMMING": "HAMMING"}


def _pillow_filter(name: str):
    from PIL import Image

    return getattr(Image.Resampling, _PILLOW_FILTERS[name])


def _pillow(image: np.ndarray, path: Path, step: str):
    """``image`` as a Pillow image (8-bit, 1 or 3 channels), as Accuracy Checker's Pillow steps take it.

    :raises DatasetError: for a float image (an OpenCV resize or a normalization came first).
    """
    from PIL import Image

    if image.dtype != np.uint8:
        raise DatasetError(f"{path}: {step} with use_pillow needs an 8-bit image, got {image.dtype}; expected the "
                           "Pillow steps before any OpenCV resize or normalization")
    return Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)


def read_pillow(path: Path, to_rgb: bool = True) -> np.ndarray:
    """Decode ``path`` with Pillow, as Accuracy Checker's ``pillow_imread``.

    :param to_rgb: convert to 3-channel RGB (the reader's default), else keep the file's mode.
    :return: ``(H, W, C)`` uint8, RGB order when ``to_rgb``.
    :raises DatasetError: the file cannot be read or decoded.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            image = np.asarray(img.convert("RGB") if to_rgb else img)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise DatasetError(f"{path}: cannot read the image with Pillow ({e})") from e
    return image[:, :, None] if image.ndim == 2 else image


def _record(ops: list | None, kind: str, **numbers) -> None:
    if ops is not None:
        ops.append({"type": kind, **numbers})


def _preferable_size(ops: list | None) -> tuple[int | None, int | None]:
    """``(width, height)`` a ``padding`` without a size pads to: the last resize's preferred size."""
    for op in reversed(ops or ()):
        if op.get("type") in ("resize", "auto_resize"):
            return op.get("preferable_width"), op.get("preferable_height")
    return None, None


def padding_amounts(pad_type: str, pref_width: int, pref_height: int, width: int, height: int,
                    left_top_extend: bool = False) -> list[int]:
    """``[top, left, bottom, right]`` pixels that pad a ``width x height`` image to
    ``pref_width x pref_height`` (Accuracy Checker 2023.3 ``center_padding``/``left_top_padding``/
    ``right_bottom_padding``: ``center`` puts the odd pixel right/bottom unless ``left_top_extend``)."""
    dy, dx = pref_height - height, pref_width - width
    if pad_type == "right_bottom":
        return [0, 0, dy, dx]
    if pad_type == "left_top":
        return [dy, dx, 0, 0]
    top, left = (dy + 1) // 2 if left_top_extend else dy // 2, (dx + 1) // 2 if left_top_extend else dx // 2
    return [top, left, dy - top, dx - left]


def _pad(image: np.ndarray, p: Mapping[str, Any], ops: list | None) -> np.ndarray:
    """The ``padding`` step (Accuracy Checker 2023.3 ``preprocessor/geometric_transformations.py``
    ``Padding``): the target height is not raised to the image height (a taller image is not cut,
    the padding is computed for the capped height), the target width is."""
    h, w, c = image.shape
    pw_default, ph_default = _preferable_size(ops)
    pref_h = p.get("dst_height") or ph_default or h
    pref_w = p.get("dst_width") or pw_default or w
    height = min(h, pref_h)
    requested_w = pref_w
    stride = p["stride"]
    pref_h = -(-pref_h // stride) * stride
    pref_w = -(-max(pref_w, w) // stride) * stride
    pad = padding_amounts(p["pad_type"], pref_w, pref_h, w, height, p["left_top_extend"])
    top, left, bottom, right = pad
    value = p["pad_value"]
    if p["use_numpy"]:
        widths = ((top, bottom), (left, right), (0, 0))
        if p["numpy_pad_mode"] == "constant":
            # NumPy reads the three values per axis: rows get the first, columns the second
            image = np.pad(image, widths, mode="constant",
                           constant_values=((value[0],) * 2, (value[1],) * 2, (value[2],) * 2))
        else:
            image = np.pad(image, widths, mode=p["numpy_pad_mode"])
    else:
        image = cv2.copyMakeBorder(np.ascontiguousarray(image), top, bottom, left, right, cv2.BORDER_CONSTANT,
                                   value=tuple(float(v) for v in value))
        image = image.reshape(h + top + bottom, w + left + right, c)
    resized = False
    if p["enable_resize"] and image.shape[:2] != (pref_h, requested_w):
        image = cv2.resize(image, (requested_w, pref_h)).reshape(pref_h, requested_w, c)
        resized, pref_w = True, requested_w
    _record(ops, "padding", pad=pad, pref_width=pref_w, pref_height=pref_h, width=w, height=height,
            original_width=w, original_height=h, resized=resized, dst_width=image.shape[1],
            dst_height=image.shape[0])
    return image


def _aspect_size(mode: str | None, dw: int, dh: int, w: int, h: int) -> tuple[int, int]:
    """Target ``(width, height)`` of a resize under Accuracy Checker's ``aspect_ratio_scale``
    (2023.3 ``preprocessor/resize.py``: new sizes truncated with ``int()``)."""
    if mode == "greater":  # the shorter side becomes the target size
        return (dw, int(dh * h / w)) if h > w else (int(dw * w / h), dh)
    if mode == "fit_to_window":
        scale = min(dh / h, dw / w)
        return int(scale * w), int(scale * h)
    if mode == "frcnn_keep_aspect_ratio":  # shorter side to min(dst) unless the longer passes max(dst)
        small, large = min(dw, dh), max(dw, dh)
        nw, nh = _aspect_size("greater", small, small, w, h)
        return (nw, nh) if max(nw, nh) <= large else _aspect_size("fit_to_window", large, large, w, h)
    if mode == "width":
        return int(dw * w / h), dh
    if mode == "height":
        return dw, int(dh * h / w)
    return dw, dh


def positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _numbers(value: Any) -> np.ndarray | None:
    """``0.5``, ``[1, 2, 3]`` or ``"1, 2, 3"`` -> float32 array; None when not numbers."""
    if isinstance(value, str):
        try:
            value = [float(v) for v in value.replace(",", " ").split()]
        except ValueError:
            return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or \
            not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return None
    return np.asarray(value, dtype=np.float32)


def _parse_size(step: Mapping, where: str, problems: Problems) -> dict:
    """``dst_width``/``dst_height`` of a step: ``size`` for both when given (it wins over the
    ``dst_*`` keys, as Accuracy Checker's ``get_size_from_config``), else the two ``dst_*`` keys."""
    out = {}
    for key in ("size", "dst_width", "dst_height"):
        if key in step and not positive_int(step[key]):
            problems.add(f"{where}.{key}", f"{step[key]!r} is not a positive integer")
    if "size" in step:
        out["dst_width"] = out["dst_height"] = step["size"]
    else:
        out.update({key: step[key] for key in ("dst_width", "dst_height") if key in step})
    return out


def _pad_value(step: Mapping, where: str, problems: Problems) -> tuple[float, ...]:
    """``pad_value`` as a tuple: a number fills every channel; a list or an ``"a, b, c"`` string gives
    one value per channel (OpenCV fills missing channels with 0, as in Accuracy Checker)."""
    value = step.get("pad_value", 0)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value),) * 3
    values = _numbers(value)
    if values is None or values.size > 4:
        problems.add(f"{where}.pad_value", f"{value!r} is not a number or a list of up to 4 numbers; "
                                           "expected e.g. 0, [114, 114, 114] or '114, 114, 114'")
        return (0.0,) * 3
    if step.get("use_numpy") is True and values.size < 3:
        problems.add(f"{where}.pad_value", f"{value!r} has {values.size} value(s); expected 3 with use_numpy")
        return (0.0,) * 3
    return tuple(float(v) for v in values)


def _flag(step: Mapping, key: str, where: str, problems: Problems) -> bool:
    value = step.get(key, False)
    if not isinstance(value, bool):
        problems.add(f"{where}.{key}", f"{value!r} is not a boolean; expected true or false")
        return False
    return value


def parse_step(step: Any, where: str, problems: Problems) -> Step | None:
    if isinstance(step, str):
        step = {"type": step}
    if not isinstance(step, Mapping) or "type" not in step:
        problems.add(where, "expected a mapping with 'type'")
        return None
    kind = step["type"]
    if kind not in PREPROCESSING:
        problems.add(f"{where}.type", f"{kind!r} is not supported{did_you_mean(kind, PREPROCESSING)}; "
                                      f"expected one of: {', '.join(PREPROCESSING)}")
        return None
    problems.keys(step, _STEP_KEYS[kind], where)
    params: dict[str, Any] = {}
    if kind in ("resize", "crop"):
        params = _parse_size(step, where, problems)
        if kind == "crop" and "central_fraction" in step:
            f = step["central_fraction"]
            if not isinstance(f, (int, float)) or isinstance(f, bool) or not 0 < f <= 1:
                problems.add(f"{where}.central_fraction", f"{f!r} is not in (0, 1]")
            params = {"central_fraction": float(f) if isinstance(f, (int, float)) else 1.0}
        elif "dst_width" not in params or "dst_height" not in params:
            problems.add(where, f"{kind} needs 'size' or both 'dst_width' and 'dst_height'")
        if kind == "crop":
            params["use_pillow"] = _flag(step, "use_pillow", where, problems)
    if kind == "resize":
        aspect = step.get("aspect_ratio_scale")
        if aspect is not None and aspect not in _ASPECT:
            problems.add(f"{where}.aspect_ratio_scale", f"{aspect!r} is not supported"
                         f"{did_you_mean(aspect, _ASPECT)}; expected one of: {', '.join(_ASPECT)}")
        pillow = _flag(step, "use_pillow", where, problems)
        table = _PILLOW_FILTERS if pillow else _INTERPOLATION
        interp = str(step.get("interpolation", "BILINEAR" if pillow else "LINEAR")).upper()
        if interp not in table:
            problems.add(f"{where}.interpolation", f"{step.get('interpolation')!r} is not supported"
                                                   f"{' with use_pillow' if pillow else ''}; expected one of: "
                                                   f"{', '.join(table)}")
            interp = "BILINEAR" if pillow else "LINEAR"
        params.update(aspect_ratio_scale=aspect, interpolation=interp, use_pillow=pillow)
    if kind == "padding":
        params = _parse_size(step, where, problems)
        stride = step.get("stride", 1)
        if not positive_int(stride):
            problems.add(f"{where}.stride", f"{stride!r} is not a positive integer")
            stride = 1
        pad_type = step.get("pad_type", "center")
        if pad_type not in _PAD_TYPES:
            hint = did_you_mean(str(pad_type), _PAD_TYPES)
            problems.add(f"{where}.pad_type", f"{pad_type!r} is not supported{hint}; expected one of: "
                                              f"{', '.join(_PAD_TYPES)}")
            pad_type = "center"
        mode = step.get("numpy_pad_mode", "constant")
        if mode not in _NUMPY_PAD_MODES:
            problems.add(f"{where}.numpy_pad_mode", f"{mode!r} is not supported; expected one of: "
                                                    f"{', '.join(_NUMPY_PAD_MODES)}")
            mode = "constant"
        params.update(stride=stride, pad_type=pad_type, numpy_pad_mode=mode,
                      pad_value=_pad_value(step, where, problems),
                      **{key: _flag(step, key, where, problems)
                         for key in ("use_numpy", "enable_resize", "left_top_extend")})
        if "size" not in step and len(params.keys() & {"dst_width", "dst_height"}) == 1:
            problems.add(where, "padding needs 'size', both 'dst_width' and 'dst_height', or neither")
    if kind == "normalization":
        if "mean" not in step and "std" not in step:
            problems.add(where, "normalization needs 'mean' and/or 'std'")
        for key, default in (("mean", 0.0), ("std", 1.0)):
            values = _numbers(step.get(key, default))
            if values is None:
                problems.add(f"{where}.{key}", f"{step[key]!r} is not a number or a list of numbers; "
                                               "expected e.g. 127.5 or [123.675, 116.28, 103.53]")
                values = np.asarray([default], dtype=np.float32)
            if key == "std" and np.any(values == 0):
                problems.add(f"{where}.std", "a value is 0; expected non-zero values")
            params[key] = values
    return Step(kind, params)


def parse_reader(value: Any, where: str, problems: Problems) -> Reader:
    """The ``reader`` of a dataset: a name, or a mapping with ``type`` and its options (default
    ``opencv_imread`` in color, as Accuracy Checker)."""
    if value is None:
        return Reader()
    at = where
    if isinstance(value, Mapping):
        at = f"{where}.type"
    else:
        value = {"type": value}
    if value.get("type") not in READERS:
        kind = value.get("type")
        problems.add(at, f"{kind!r} is not supported{did_you_mean(kind, READERS)}; expected one of: "
                         f"{', '.join(READERS)}")
        return Reader()
    kind = value["type"]
    allowed = READER_KEYS[kind]
    for key in value:
        if key not in allowed:
            problems.add(f"{where}.{key}", f"unknown key for reader '{kind}'; expected one of: {', '.join(allowed)}")
    flag = str(value.get("reading_flag", "color"))
    if flag not in _READ_FLAGS:
        problems.add(f"{where}.reading_flag", f"{flag!r} is not supported{did_you_mean(flag, _READ_FLAGS)}; "
                                              "expected one of: color, gray, unchanged")
        flag = "color"
    keys = value.get("keys", ())
    keys = (keys,) if isinstance(keys, str) else tuple(keys)
    to_rgb = _flag(value, "to_rgb", where, problems) if "to_rgb" in value else True
    return Reader(kind, "gray" if flag == "grayscale" else flag, keys, to_rgb)
