"""Detection postprocessing of the Accuracy-Checker-style engine (``postprocessing:`` entries).

Semantics follow Accuracy Checker 2023.3 ``postprocessor/*.py``; every step returns new records
and leaves its inputs unchanged. Boxes are float64 ``(N, 4)`` ``x_min, y_min, x_max, y_max``.

Registered types and their parameters (defaults in brackets):

* ``resize_prediction_boxes`` (predictions): normalized boxes times the original image width and
  height (``SampleMeta.image_size``). ``rescale`` [false]: boxes are in input pixels; divide by the
  size the last resize produced first. ``unpadding`` [false], ``uncrop`` [false]: undo a padding /
  a central square crop (Accuracy Checker's arithmetic, quirks included: see the class).
* ``faster_rcnn_postprocessing_resize`` (predictions): undo ``resize`` or ``resize`` + right-bottom
  ``padding`` recorded in ``SampleMeta.geometric_operations``; ``rescale`` [false] divides by the
  model input size first. ``dst_width``/``dst_height``/``size`` are accepted and unused, as in
  Accuracy Checker.
* ``clip_boxes`` (``apply_to`` required): clamp to ``[0, dst_width] x [0, dst_height]`` (``size``
  for both; default the original image size), or to ``[0, 1]`` with ``boxes_normalized``.
* ``filter`` (``apply_to`` required): ``remove_filtered`` [false: mark the boxes ``difficult``; true:
  drop them, re-indexing the remaining ``difficult`` flags as Accuracy Checker does, see
  :func:`ac_remove`]; the criteria, applied in config order: ``labels`` (list), ``min_confidence``, ``top_k``,
  ``height_range``, ``width_range``, ``aspect_ratio`` (height / width), ``area_ratio``
  (sqrt(box area / image area), annotations only), ``area_range`` (no effect on boxes, as in
  Accuracy Checker), ``is_empty`` (width or height <= 0, whatever the value), ``invalid_boxes``
  (a non-finite coordinate), ``min_visibility`` (no effect: no converter here records
  visibilities). A range is ``min`` or ``[min, max]`` / ``"min, max"``, kept when
  ``min <= v < max`` (``min <= v`` when ``max`` is absent or 0).
* ``nms`` / ``class_aware_nms`` (predictions): greedy NMS over all boxes of an image / per label:
  ``overlap`` [0.5], ``include_boundaries`` [true: +1 px], ``keep_top_k`` [all], ``use_min_area``
  [false: IoU; true: intersection over the smaller box]. Dropped boxes go through
  :func:`ac_remove` (as every Accuracy Checker removal).
* ``diou_nms`` (predictions): as ``nms`` with IoU minus (centre distance / enclosing diagonal) ^ 0.6:
  ``overlap``, ``include_boundaries``, ``keep_top_k`` (which crashes Accuracy Checker 2023.3; an
  integer here).
* ``cast_to_int`` (annotations and predictions): round box coordinates; ``round_policy``
  nearest [default, half to even], nearest_to_zero, lower, greater.
* ``shift_labels`` (predictions): add ``offset`` (required) to the labels.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np

from pot_cli.engines.ac.base import Context, Postprocessor, read_bool, read_choice, read_number, \
    register_postprocessing
from pot_cli.engines.ac.representations import DatasetMeta, DetectionAnnotation, DetectionPrediction, SampleMeta
from pot_cli.errors import ConfigError, EngineError

_DETECTION = (DetectionAnnotation, DetectionPrediction)


def ac_remove(record, removed: np.ndarray):
    """``record`` without the boxes where the bool mask ``removed`` is True, with the ``difficult``
    flags re-indexed the way Accuracy Checker 2023.3 does (``Detection.remove`` +
    ``utils.remove_difficult``), quirks included so that the metrics see the same flags: a flag is
    kept only when some removed box comes after it, shifted down by the number of removed boxes at
    or before it (a removed flagged box passes its flag to the next one, or with index -1 to the
    last box, as the metrics' mask indexing reads it); removing nothing clears every flag."""
    removed = np.asarray(removed, dtype=bool)
    out = record.select(~removed)
    gone = np.flatnonzero(removed)
    flagged = np.flatnonzero(record.difficult)
    before = np.searchsorted(gone, flagged, side="right")
    difficult = np.zeros(len(out), dtype=bool)
    moved = flagged[before < gone.size] - before[before < gone.size]
    difficult[moved[(moved >= -len(out)) & (moved < len(out))]] = True  # -1: the last box, as the metrics index
    return dataclasses.replace(out, difficult=difficult)


def _with_boxes(record, boxes: np.ndarray):
    """A copy of ``record`` with new ``boxes`` (float64 ``(N, 4)``)."""
    return dataclasses.replace(record, boxes=boxes)


def _require_apply_to(params: Mapping, ctx: Context) -> None:
    if "apply_to" not in params:
        ctx.add("apply_to", "missing; expected one of: all, annotation, prediction "
                            "(Accuracy Checker requires it for this step)")


def _size_keys(params: Mapping, ctx: Context) -> tuple[int | None, int | None]:
    """``(dst_height, dst_width)`` from ``size`` or ``dst_*`` (None when absent)."""
    values = {k: int(read_number(params, k, 1, ctx, low=1, integer=True)) for k in ("size", "dst_width", "dst_height")
              if k in params}
    size = values.get("size")
    return size or values.get("dst_height"), size or values.get("dst_width")


def _last_resize(meta: SampleMeta) -> dict | None:
    for op in reversed(meta.geometric_operations):
        if op.get("type") in ("resize", "auto_resize"):
            return op
    return None


def network_input_size(meta: SampleMeta, what: str) -> tuple[int, int]:
    """``(height, width)`` of the image fed to the model for this sample (after preprocessing).

    :raises EngineError: when it is unknown (a model without a static image input).
    """
    size = meta.input_size or meta.extra.get("model_input_size")
    if size is None:
        raise EngineError(f"{what}: the model input size of sample {meta.identifier} is unknown; expected a model "
                          "with a static image input")
    return int(size[0]), int(size[1])


def frcnn_box_scale(meta: SampleMeta, where: str, rescale: bool = False) -> tuple[float, float]:
    """``(coeff_x, coeff_y)`` that map boxes normalized to the (padded) model input back to
    original-image pixels, from the geometric operations of the sample (Accuracy Checker 2023.3
    ``FRCNNPostprocessingBboxResize.get_coeff_x_y_from_metadata``).

    One ``resize``: the original width/height. ``resize`` then right-bottom ``padding``:
    ``pref_width / scale_x`` and ``pref_height / scale_y``. With ``rescale`` both are divided by
    the model input width/height (boxes in input pixels).

    :param where: the config key path, for messages.
    :raises ConfigError: when the preprocessing is anything else (naming ``where``).
    """
    ops = meta.geometric_operations
    kinds = [op.get("type") for op in ops]
    resize = ("resize", "auto_resize")
    if len(ops) == 1 and kinds[0] in resize:
        coeff_x, coeff_y = float(ops[0]["original_width"]), float(ops[0]["original_height"])
    elif len(ops) == 2 and kinds[0] in resize and kinds[1] == "padding" and list(ops[1]["pad"][:2]) == [0, 0]:
        coeff_x = ops[1]["pref_width"] / ops[0]["scale_x"]
        coeff_y = ops[1]["pref_height"] / ops[0]["scale_y"]
    else:
        raise ConfigError(f"{where}: cannot undo the preprocessing geometry {kinds or '(none)'}; expected one "
                          "resize, or a resize followed by a padding with pad_type: right_bottom")
    if rescale:
        h, w = network_input_size(meta, where)
        coeff_x, coeff_y = coeff_x / w, coeff_y / h
    return coeff_x, coeff_y


@register_postprocessing("resize_prediction_boxes", keys=("type", "rescale", "unpadding", "uncrop"))
class ResizePredictionBoxes(Postprocessor):
    """Normalized (or, with ``rescale``, input-pixel) prediction boxes to original-image pixels.

    Accuracy Checker 2023.3 ``postprocessor/resize_prediction_boxes.py``: ``x * W``, ``y * H`` with
    ``W, H`` the original image size (``SampleMeta.image_size``). ``rescale`` uses
    ``W / w_in, H / h_in`` with ``(h_in, w_in)`` the output size of the last resize (factor 1
    without a resize). ``uncrop`` (when a crop was recorded) scales by ``min(W, H)`` and adds
    ``((W - m) / 2, (H - m) / 2)``. ``unpadding`` (when a padding was recorded, with ``pad`` =
    ``[top, left, bottom, right]`` and padded size ``pw x ph``) scales by
    ``pw / (pw - left - right) * W`` and ``ph / (ph - top - bottom) * H`` and *adds*
    ``left / (pw - left - right) * W`` and ``top / (ph - top - bottom) * W`` (sic: Accuracy
    Checker adds the offset and takes the width for both; reproduced for equal numbers).
    """

    applies_to = (DetectionPrediction,)

    def __init__(self, params: Mapping, ctx: Context):
        super().__init__(params, ctx)
        self.rescale = read_bool(params, "rescale", False, ctx)
        self.unpadding = read_bool(params, "unpadding", False, ctx)
        self.uncrop = read_bool(params, "uncrop", False, ctx)

    def process_prediction(self, prediction, meta: SampleMeta, dataset_meta: DatasetMeta):
        img_h, img_w = float(meta.image_size[0]), float(meta.image_size[1])
        sx, sy = img_w, img_h
        if self.rescale:
            op = _last_resize(meta)
            in_h, in_w = (op["dst_height"], op["dst_width"]) if op else (img_h, img_w)
            sx, sy = img_w / in_w, img_h / in_h
        dx = dy = 0.0
        ops = meta.geometric_operations
        if self.uncrop and any(op.get("type") == "crop" for op in ops):
            m = min(sx, sy)
            dx, dy = (sx - m) / 2, (sy - m) / 2
            sx = sy = m
        if self.unpadding:
            pads = [op for op in ops if op.get("type") == "padding"]
            if pads:
                top, left, bottom, right = pads[0]["pad"]
                pw, ph = pads[0]["pref_width"], pads[0]["pref_height"]
                sx, sy = pw / (pw - right - left) * img_w, ph / (ph - top - bottom) * img_h
                dx, dy = left / (pw - right - left) * img_w, top / (ph - top - bottom) * img_w
        boxes = prediction.boxes * np.array([sx, sy, sx, sy]) + np.array([dx, dy, dx, dy])
        return _with_boxes(prediction, boxes)


@register_postprocessing("faster_rcnn_postprocessing_resize", keys=("type", "dst_width", "dst_height", "size",
                                                                    "rescale"))
class FasterRCNNPostprocessingResize(Postprocessor):
    """Boxes normalized to the (padded) model input to original-image pixels, by
    :func:`frcnn_box_scale` (Accuracy Checker 2023.3 ``postprocessor/faster_rcnn_postprocessing_resize.py``).

    :raises ConfigError: from :meth:`process_prediction` when the preprocessing was not a resize
        or a resize + right-bottom padding.
    """

    applies_to = (DetectionPrediction,)

    def __init__(self, params: Mapping, ctx: Context):
        super().__init__(params, ctx)
        _size_keys(params, ctx)  # validated; unused, as in Accuracy Checker
        self.rescale = read_bool(params, "rescale", False, ctx)
        self.where = ctx.where

    def process_prediction(self, prediction, meta: SampleMeta, dataset_meta: DatasetMeta):
        cx, cy = frcnn_box_scale(meta, self.where, self.rescale)
        return _with_boxes(prediction, prediction.boxes * np.array([cx, cy, cx, cy]))


@register_postprocessing("clip_boxes", keys=("type", "apply_to", "dst_width", "dst_height", "size",
                                             "boxes_normalized"))
class ClipBoxes(Postprocessor):
    """Clamp box coordinates to ``[0, width] x [0, height]`` (Accuracy Checker 2023.3
    ``postprocessor/clip_boxes.py``): ``size`` or ``dst_width``/``dst_height`` (each may be given
    alone), else the original image size; ``[0, 1]`` when ``boxes_normalized``."""

    applies_to = _DETECTION

    def __init__(self, params: Mapping, ctx: Context):
        super().__init__(params, ctx)
        _require_apply_to(params, ctx)
        self.dst_height, self.dst_width = _size_keys(params, ctx)
        self.normalized = read_bool(params, "boxes_normalized", False, ctx)

    def _clip(self, record, meta: SampleMeta):
        if self.normalized:
            w = h = 1.0
        else:
            h = self.dst_height or meta.image_size[0]
            w = self.dst_width or meta.image_size[1]
        return _with_boxes(record, np.clip(record.boxes, 0.0, np.array([w, h, w, h], dtype=np.float64)))

    def process_annotation(self, annotation, meta, dataset_meta):
        return self._clip(annotation, meta)

    def process_prediction(self, prediction, meta, dataset_meta):
        return self._clip(prediction, meta)


# --- filter ---------------------------------------------------------------------------------------

_VISIBILITY = ("heavy occluded", "partially occluded", "visible")


def _read_range(params: Mapping, key: str, ctx: Context) -> tuple[float, float | None]:
    """A filter range: ``min``, ``[min, max]`` or ``"min, max"`` -> ``(min, max or None)``."""
    value = params[key]
    if isinstance(value, str):
        parts = [v for v in value.replace(" ", "").replace("(", "").replace(")", "").split(",") if v]
        try:
            value = [float(v) for v in parts]
        except ValueError:
            value = None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    ok = isinstance(value, (list, tuple)) and 1 <= len(value) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    if not ok:
        ctx.add(key, f"{params[key]!r} is not a range; expected a minimum, [min, max] or 'min, max'")
        return -math.inf, None
    return float(value[0]), (float(value[1]) if len(value) >= 2 and value[1] else None)


def _outside(values: np.ndarray, interval: tuple[float, float | None]) -> np.ndarray:
    """True where ``values`` is not in ``[min, max)`` (``[min, inf)`` without max); NaN is outside."""
    low, high = interval
    with np.errstate(invalid="ignore"):
        inside = values >= low if high is None else (values >= low) & (values < high)
    return ~inside


def _filter_mask(name: str, arg: Any, record, meta: SampleMeta) -> np.ndarray:
    """Bool ``(N,)``: the boxes of ``record`` the criterion ``name`` filters out."""
    n = len(record)
    none = np.zeros(n, dtype=bool)
    is_annotation = isinstance(record, DetectionAnnotation)
    x0, y0, x1, y1 = record.boxes.T
    if name == "labels":
        return np.isin(record.labels, arg)
    if name == "min_confidence":
        return none if is_annotation else record.scores < arg
    if name == "top_k":
        if is_annotation or n <= arg:
            return none
        best = np.argsort(record.scores, kind="stable")[::-1][:int(arg)]
        out = np.ones(n, dtype=bool)
        out[best] = False
        return out
    if name == "height_range":
        return _outside(y1 - y0, arg)
    if name == "width_range":
        return _outside(x1 - x0, arg)
    if name == "aspect_ratio":
        return _outside((y1 - y0) / np.maximum(x1 - x0, np.finfo(float).eps), arg)
    if name == "area_ratio":
        if not is_annotation:
            return none
        area = float(meta.image_size[0]) * float(meta.image_size[1])
        with np.errstate(invalid="ignore"):
            ratio = np.sqrt((x1 - x0) * (y1 - y0) / max(area, np.finfo(np.float64).eps))
        return _outside(ratio, arg)
    if name == "is_empty":
        return (x1 - x0 <= 0) | (y1 - y0 <= 0)
    if name == "invalid_boxes":
        return ~np.isfinite(record.boxes).all(axis=1)
    return none  # area_range, min_visibility: nothing to filter on boxes


_FILTERS = ("labels", "min_confidence", "top_k", "height_range", "width_range", "area_range", "is_empty",
            "min_visibility", "aspect_ratio", "area_ratio", "invalid_boxes")


@register_postprocessing("filter", keys=("type", "apply_to", "remove_filtered") + _FILTERS)
class Filter(Postprocessor):
    """Filter boxes by the criteria listed in the module docstring, in config order (Accuracy
    Checker 2023.3 ``postprocessor/filter.py``). Without ``remove_filtered`` the boxes are marked
    ``difficult`` (ignored by the detection metrics) and every criterion sees all boxes; with it
    they are dropped by :func:`ac_remove`, criterion after criterion (each sees what the previous
    ones left, and each removal re-indexes the ``difficult`` flags the Accuracy Checker way). ``top_k`` keeps the
    ``k`` best scores (ties: the later box first, a stable order where Accuracy Checker's is
    NumPy's default sort)."""

    applies_to = _DETECTION

    def __init__(self, params: Mapping, ctx: Context):
        super().__init__(params, ctx)
        _require_apply_to(params, ctx)
        self.remove = read_bool(params, "remove_filtered", False, ctx)
        self.criteria: list[tuple[str, Any]] = []
        for key in params:
            if key not in _FILTERS:
                continue
            value = params[key]
            if key == "labels":
                labels = [value] if isinstance(value, int) and not isinstance(value, bool) else value
                if not isinstance(labels, (list, tuple)) or not all(
                        isinstance(v, int) and not isinstance(v, bool) for v in labels):
                    ctx.add(key, f"{value!r} is not a list of class ids; expected e.g. [0, 2]")
                    continue
                value = np.asarray(labels, dtype=np.int64)
            elif key in ("min_confidence", "top_k"):
                value = read_number(params, key, 0, ctx, low=0, integer=key == "top_k")
            elif key in ("height_range", "width_range", "aspect_ratio", "area_ratio", "area_range"):
                value = _read_range(params, key, ctx)
            elif key == "min_visibility" and value not in _VISIBILITY:
                ctx.add(key, f"{value!r} is not a visibility level; expected one of: {', '.join(_VISIBILITY)}")
                continue
            self.criteria.append((key, value))

    def _apply(self, record, meta: SampleMeta):
        for name, arg in self.criteria:
            mask = _filter_mask(name, arg, record, meta)
            if self.remove:
                record = ac_remove(record, mask)
            else:
                record = dataclasses.replace(record, difficult=record.difficult | mask)
        return record

    def process_annotation(self, annotation, meta, dataset_meta):
        return self._apply(annotation, meta)

    def process_prediction(self, prediction, meta, dataset_meta):
        return self._apply(prediction, meta)


# --- non-maximum suppression ----------------------------------------------------------------------

def greedy_nms(boxes: np.ndarray, scores: np.ndarray, overlap: float, include_boundaries: bool = True,
               keep_top_k: int | None = None, use_min_area: bool = False, diou: bool = False) -> np.ndarray:
    """Indices (ascending) of the boxes greedy NMS keeps.

    Boxes are taken by decreasing score (ties: the later box first, a stable order), only the
    first ``keep_top_k`` when given; each taken box suppresses the remaining ones whose overlap is
    above ``overlap`` (a NaN overlap suppresses, a zero denominator gives overlap 0). Overlap is
    IoU with ``+1`` on widths/heights when ``include_boundaries``, intersection over the smaller
    area with ``use_min_area``, and with ``diou`` IoU minus ``(d^2 / c^2) ^ 0.6`` (``d`` the
    centre distance, ``c`` the enclosing box diagonal, no ``+1``). Accuracy Checker 2023.3
    ``postprocessor/nms.py`` ``NMS.nms`` / ``DIoUNMS.diou_nms`` semantics.

    :param boxes: float ``(N, 4)`` ``x_min, y_min, x_max, y_max``.
    :param scores: float ``(N,)``.
    :return: int64 ``(K,)``.
    """
    b = 1.0 if include_boundaries else 0.0
    x0, y0, x1, y1 = (np.asarray(boxes, dtype=np.float64).reshape(-1, 4)).T
    order = np.argsort(np.asarray(scores), kind="stable")[::-1]
    if keep_top_k:
        order = order[:keep_top_k]
    x0, y0, x1, y1 = x0[order], y0[order], x1[order], y1[order]
    areas = (x1 - x0 + b) * (y1 - y0 + b)
    alive = np.ones(order.size, dtype=bool)
    kept = []
    for k in range(order.size):
        if not alive[k]:
            continue
        kept.append(order[k])
        rest = np.flatnonzero(alive[k + 1:]) + k + 1
        if rest.size == 0:
            break
        iw = np.maximum(0.0, np.minimum(x1[k], x1[rest]) - np.maximum(x0[k], x0[rest]) + b)
        ih = np.maximum(0.0, np.minimum(y1[k], y1[rest]) - np.maximum(y0[k], y0[rest]) + b)
        inter = iw * ih
        base = np.minimum(areas[k], areas[rest]) if use_min_area else areas[k] + areas[rest] - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            value = np.where(base != 0, inter / np.where(base != 0, base, 1.0), 0.0)
            if diou:
                diag = (np.maximum(x1[k], x1[rest]) - np.minimum(x0[k], x0[rest])) ** 2 + \
                       (np.maximum(y1[k], y1[rest]) - np.minimum(y0[k], y0[rest])) ** 2 + 1e-16
                dist = ((x0[rest] + x1[rest]) - (x0[k] + x1[k])) ** 2 / 4 + \
                       ((y0[rest] + y1[rest]) - (y0[k] + y1[k])) ** 2 / 4
                value = value - (dist / diag) ** 0.6
            alive[rest[~(value <= overlap)]] = False
    return np.sort(np.asarray(kept, dtype=np.int64))


class _NMSBase(Postprocessor):
    applies_to = (DetectionPrediction,)
    diou = False

    def __init__(self, params: Mapping, ctx: Context):
        super().__init__(params, ctx)
        self.overlap = read_number(params, "overlap", 0.5, ctx, low=0, high=1)
        self.include_boundaries = read_bool(params, "include_boundaries", True, ctx)
        self.keep_top_k = int(read_number(params, "keep_top_k", 0, ctx, low=0, integer=True)) or None
        self.use_min_area = read_bool(params, "use_min_area", False, ctx)

    def _keep(self, boxes, scores):
        return greedy_nms(boxes, scores, self.overlap, self.include_boundaries, self.keep_top_k,
                          self.use_min_area, self.diou)

    def _drop_all_but(self, prediction, keep: np.ndarray):
        removed = np.ones(len(prediction), dtype=bool)
        removed[keep] = False
        return ac_remove(prediction, removed)

    def process_prediction(self, prediction, meta, dataset_meta):
        return self._drop_all_but(prediction, self._keep(prediction.boxes, prediction.scores))


@register_postprocessing("nms", keys=("type", "overlap", "include_boundaries", "keep_top_k", "use_min_area"))
class NMS(_NMSBase):
    """Greedy NMS over all boxes of an image regardless of label (:func:`greedy_nms`; Accuracy
    Checker 2023.3 ``NMS``); the kept boxes stay in their original order."""


@register_postprocessing("class_aware_nms", keys=("type", "overlap", "include_boundaries", "keep_top_k",
                                                  "use_min_area"))
class ClassAwareNMS(_NMSBase):
    """:func:`greedy_nms` per label (``keep_top_k`` per label), Accuracy Checker 2023.3
    ``ClassAwareNMS``; the kept boxes stay in their original order."""

    def process_prediction(self, prediction, meta, dataset_meta):
        keep = [idx[self._keep(prediction.boxes[idx], prediction.scores[idx])]
                for idx in (np.flatnonzero(prediction.labels == label) for label in np.unique(prediction.labels))]
        return self._drop_all_but(prediction, np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64))


@register_postprocessing("diou_nms", keys=("type", "overlap", "include_boundaries", "keep_top_k"))
class DIoUNMS(_NMSBase):
    """Greedy Distance-IoU NMS over all boxes of an image (:func:`greedy_nms` with ``diou``;
    Accuracy Checker 2023.3 ``DIoUNMS``; Zheng et al. 2020, "Distance-IoU Loss")."""

    diou = True


# --- rounding and labels --------------------------------------------------------------------------

_ROUND = {"nearest": np.rint, "nearest_to_zero": np.trunc, "lower": np.floor, "greater": np.ceil}


@register_postprocessing("cast_to_int", keys=("type", "round_policy"))
class CastToInt(Postprocessor):
    """Round box coordinates of annotations and predictions (Accuracy Checker 2023.3
    ``postprocessor/cast_to_int.py``); the boxes stay float64 holding integral values."""

    applies_to = _DETECTION

    def __init__(self, params: Mapping, ctx: Context):
        super().__init__(params, ctx)
        self.round = _ROUND[read_choice(params, "round_policy", "nearest", tuple(_ROUND), ctx)]

    def process_annotation(self, annotation, meta, dataset_meta):
        return _with_boxes(annotation, self.round(annotation.boxes))

    def process_prediction(self, prediction, meta, dataset_meta):
        return _with_boxes(prediction, self.round(prediction.boxes))


@register_postprocessing("shift_labels", keys=("type", "offset"))
class ShiftLabels(Postprocessor):
    """Add ``offset`` (an integer, required) to predicted labels (Accuracy Checker 2023.3
    ``postprocessor/shift.py`` ``ShiftLabels``)."""

    applies_to = (DetectionPrediction,)

    def __init__(self, params: Mapping, ctx: Context):
        super().__init__(params, ctx)
        if "offset" not in params:
            ctx.add("offset", "missing; expected an integer label offset")
        self.offset = int(read_number(params, "offset", 0, ctx, integer=True))

    def process_prediction(self, prediction, meta, dataset_meta):
        return dataclasses.replace(prediction, labels=prediction.labels + self.offset)
