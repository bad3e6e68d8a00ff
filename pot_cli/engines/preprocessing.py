"""Readers and preprocessing steps of the Accuracy-Checker-style engine, and config problems.

Readers (``reader``): ``opencv_imread`` (``reading_flag`` color, gray, unchanged: OpenCV's
``IMREAD_*`` flags, BGR order), ``numpy_reader`` (``.npy``/``.npz``, ``keys``) and
``numpy_txt_reader`` (``numpy.loadtxt``).

Preprocessing steps (``preprocessing``, applied in order to an ``H x W x C`` image, as
Accuracy Checker does with OpenCV):

* ``resize``: ``size`` or ``dst_width``/``dst_height``; ``aspect_ratio_scale``: ``greater``
  (the shorter side becomes the size), ``fit_to_window``, ``width``, ``height``;
  ``interpolation`` NEAREST, LINEAR (default), CUBIC, AREA, LANCZOS4.
* ``crop``: central crop to ``size`` or ``dst_width``/``dst_height``, or ``central_fraction``.
* ``bgr_to_rgb``, ``rgb_to_bgr`` (reverse the channel order), ``bgr_to_gray``.
* ``normalization``: ``(x - mean) / std`` per channel; ``mean``/``std`` a number, a list or a
  ``"a, b, c"`` string. The result is float32.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import cv2
import numpy as np

from pot_cli.config.loader import did_you_mean
from pot_cli.errors import ConfigError, DatasetError

READERS = ("opencv_imread", "numpy_reader", "numpy_txt_reader")
PREPROCESSING = ("resize", "crop", "bgr_to_rgb", "rgb_to_bgr", "bgr_to_gray", "normalization")
_READ_FLAGS = {"color": cv2.IMREAD_COLOR, "gray": cv2.IMREAD_GRAYSCALE, "grayscale": cv2.IMREAD_GRAYSCALE,
               "unchanged": cv2.IMREAD_UNCHANGED}
_INTERPOLATION = {"NEAREST": cv2.INTER_NEAREST, "LINEAR": cv2.INTER_LINEAR, "BILINEAR": cv2.INTER_LINEAR,
                  "CUBIC": cv2.INTER_CUBIC, "BICUBIC": cv2.INTER_CUBIC, "AREA": cv2.INTER_AREA,
                  "LANCZOS4": cv2.INTER_LANCZOS4}
_ASPECT = ("greater", "fit_to_window", "width", "height")
#: keys of each step that are read
_STEP_KEYS = {
    "resize": ("type", "size", "dst_width", "dst_height", "aspect_ratio_scale", "interpolation", "use_pillow"),
    "crop": ("type", "size", "dst_width", "dst_height", "central_fraction", "use_pillow"),
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


@dataclass(frozen=True)
class Step:
    """One preprocessing step on an ``H x W x C`` image; ``params`` are already validated."""

    type: str
    params: Mapping[str, Any]

    def apply(self, image: np.ndarray, path: Path) -> np.ndarray:
        """Apply the step. :param image: ``(H, W, C)`` uint8 or float32. :return: ``(H', W', C')``."""
        p = self.params
        h, w, c = image.shape
        if self.type == "resize":
            dw, dh = p["dst_width"], p["dst_height"]
            dw, dh = _aspect_size(p.get("aspect_ratio_scale"), dw, dh, w, h)
            if (dw, dh) != (w, h):
                image = cv2.resize(image, (dw, dh), interpolation=_INTERPOLATION[p["interpolation"]])
            return image.reshape(dh, dw, c)
        if self.type == "crop":
            if "central_fraction" in p:
                dh, dw = int(round(h * p["central_fraction"])), int(round(w * p["central_fraction"]))
            else:
                dw, dh = p["dst_width"], p["dst_height"]
            if dh > h or dw > w:
                raise DatasetError(f"{path}: crop to {dw}x{dh} does not fit the {w}x{h} image; "
                                   "expected a resize step before the crop")
            top, left = (h - dh) // 2, (w - dw) // 2
            return image[top:top + dh, left:left + dw]
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


def _aspect_size(mode: str | None, dw: int, dh: int, w: int, h: int) -> tuple[int, int]:
    """Target ``(width, height)`` of a resize under Accuracy Checker's ``aspect_ratio_scale``."""
    if mode == "greater":  # the shorter side becomes the target size
        return (dw, int(dh * h / w)) if h > w else (int(dw * w / h), dh)
    if mode == "fit_to_window":
        scale = min(dh / h, dw / w)
        return int(scale * w + 0.5), int(scale * h + 0.5)
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
    out = {}
    if "size" in step:
        if not positive_int(step["size"]):
            problems.add(f"{where}.size", f"{step['size']!r} is not a positive integer")
        out["dst_width"] = out["dst_height"] = step["size"]
    for key in ("dst_width", "dst_height"):
        if key in step:
            if not positive_int(step[key]):
                problems.add(f"{where}.{key}", f"{step[key]!r} is not a positive integer")
            out[key] = step[key]
    return out


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
    if step.get("use_pillow"):
        problems.add(f"{where}.use_pillow", "true is not supported; expected false (OpenCV)")
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
    if kind == "resize":
        aspect = step.get("aspect_ratio_scale")
        if aspect is not None and aspect not in _ASPECT:
            problems.add(f"{where}.aspect_ratio_scale", f"{aspect!r} is not supported"
                         f"{did_you_mean(aspect, _ASPECT)}; expected one of: {', '.join(_ASPECT)}")
        interp = str(step.get("interpolation", "LINEAR")).upper()
        if interp not in _INTERPOLATION:
            problems.add(f"{where}.interpolation", f"{step.get('interpolation')!r} is not supported; expected "
                                                   f"one of: {', '.join(_INTERPOLATION)}")
        params.update(aspect_ratio_scale=aspect, interpolation=interp)
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
    allowed = ("type", "reading_flag") if kind == "opencv_imread" else ("type", "keys") if kind == "numpy_reader" \
        else ("type",)
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
    return Reader(kind, "gray" if flag == "grayscale" else flag, keys)
