"""Detection adapters of the Accuracy-Checker-style engine (``launchers[].adapter``).

Each adapter turns the raw outputs of one image (batch 1) into a
:class:`~pot_cli.engines.ac.representations.DetectionPrediction` (float64 boxes
``x_min, y_min, x_max, y_max``, int64 labels, float64 scores). Semantics follow Accuracy Checker
2023.3 ``adapters/{ssd,yolo,detection,mask_rcnn}.py``; ``yolo_v8`` is our extension.

Registered types and their parameters (defaults in brackets):

* ``ssd``: the first output, DetectionOutput rows ``[image_id, label, conf, x_min, y_min, x_max,
  y_max]`` (any shape with a multiple of 7 values); rows after the first ``image_id == -1`` are
  dropped, rows of image 0 kept. Boxes stay **normalized**; no score threshold.
* ``yolo_v2``: the first output, RegionYolo ``num * (coords + 1 + classes)`` x ``cells`` x
  ``cells``: ``classes`` [20], ``coords`` [4], ``num`` [5], ``anchors`` [``yolo_v2``; or
  ``tiny_yolo_v2``, or a list / ``"w, h, ..."`` in cells], ``cells`` [13], ``raw_output`` [false],
  ``output_format`` [BHW, or HWB]. Boxes normalized.
* ``yolo_v3``: ``outputs`` (required, one name per scale), ``classes`` [80], ``coords`` [4],
  ``num`` [3], ``anchors`` [``yolo_v3``; ``tiny_yolo_v3``; list, in input pixels],
  ``anchor_masks`` (per output the anchor indices), ``threshold`` [0.001], ``cells``
  [[13, 26, 52]], ``do_reshape`` [false], ``transpose`` (axes), ``raw_output`` [false],
  ``output_format`` [BHW], ``multiple_labels`` [false]. Boxes normalized.
* ``yolox``: ``output_name`` [first output] ``[1, boxes, 5 + classes]``, ``threshold`` [0.001],
  ``num`` [5: the column of the first class score]. Boxes in **input pixels**.
* ``class_agnostic_detection``: ``output_blob`` [the first output shaped ``[n, 5]``] rows
  ``x1, y1, x2, y2, score``; ``scale`` [1.0] a number or ``[sx, sy]``; label 1.
* ``mask_rcnn``: ``detection_out`` + ``raw_masks_out``, or ``boxes_out`` (+ ``classes_out``,
  ``scores_out``, ``num_detections_out``) + ``raw_masks_out``. Masks are pasted in the original
  image and stored as COCO RLE dicts in ``DetectionPrediction.masks``.
* ``yolov8_detection`` (Accuracy Checker 2023.3's): the first output ``[1, 4 + classes, anchors]``
  decoded as ``yolo_v8``; ``conf_threshold`` [0.25], ``multi_label`` [true].
* ``yolo_v8`` (ours): Ultralytics YOLOv8 detection head ``[1, 4 + classes, anchors]`` (or
  ``[1, anchors, 4 + classes]``), rows ``cx, cy, w, h`` in input pixels then per-class sigmoid
  scores, no objectness: ``output_blob`` [first output], ``threshold`` [0.001], ``classes``
  (checks the count and picks the axis), ``class_map`` (model class -> annotation label; classes
  not listed are dropped), ``multi_label`` [false]. Boxes in **input pixels**.

Normalized boxes need ``resize_prediction_boxes``, input-pixel boxes
``resize_prediction_boxes: {rescale: true}``, as in Accuracy Checker.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from pot_cli.engines.ac.base import Adapter, Context, Outputs, read_bool, read_choice, read_number, register_adapter
from pot_cli.engines.ac.postprocessing import frcnn_box_scale, network_input_size
from pot_cli.engines.ac.representations import DetectionPrediction, SampleMeta
from pot_cli.errors import EngineError

YOLO_V2_ANCHORS = {
    "yolo_v2": (1.3221, 1.73145, 3.19275, 4.00944, 5.05587, 8.09892, 9.47112, 4.84053, 11.2364, 10.0071),
    "tiny_yolo_v2": (1.08, 1.19, 3.42, 4.41, 6.63, 11.38, 9.42, 5.11, 16.62, 10.52),
}
YOLO_V3_ANCHORS = {
    "yolo_v3": (10.0, 13.0, 16.0, 30.0, 33.0, 23.0, 30.0, 61.0, 62.0, 45.0, 59.0, 119.0, 116.0, 90.0,
                156.0, 198.0, 373.0, 326.0),
    "tiny_yolo_v3": (10.0, 14.0, 23.0, 27.0, 37.0, 58.0, 81.0, 82.0, 135.0, 169.0, 344.0, 319.0),
}


def _empty(identifier: str) -> DetectionPrediction:
    return DetectionPrediction(identifier, np.zeros(0), np.zeros(0), np.zeros((0, 4)))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    half = xywh[:, 2:4] / 2.0
    return np.concatenate([xywh[:, :2] - half, xywh[:, :2] + half], axis=1)


def _numbers(value: Any) -> list[float] | None:
    """``[1, 2]``, ``"1, 2"`` or ``"(1, 2)"`` -> floats; None when not numbers."""
    if isinstance(value, str):
        parts = [v for v in value.replace(" ", "").replace("(", "").replace(")", "").split(",") if v]
        try:
            return [float(v) for v in parts]
        except ValueError:
            return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [float(value)]
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                 for v in value):
        return [float(v) for v in value]
    return None


def _read_anchors(params: Mapping, presets: Mapping[str, Sequence[float]], default: str, ctx: Context) -> np.ndarray:
    value = params.get("anchors", default)
    if isinstance(value, str) and value.lower() in presets:
        return np.asarray(presets[value.lower()], dtype=np.float64)
    numbers = _numbers(value)
    if not numbers or len(numbers) % 2:
        ctx.add("anchors", f"{value!r} is not a list of anchor widths and heights; expected one of: "
                           f"{', '.join(presets)}, or an even count of numbers like '10, 13, 16, 30'")
        return np.asarray(presets[default], dtype=np.float64)
    return np.asarray(numbers, dtype=np.float64)


# --- SSD ------------------------------------------------------------------------------------------

def detection_output_rows(arr: np.ndarray, what: str) -> np.ndarray:
    """Rows ``[image_id, label, conf, x_min, y_min, x_max, y_max]`` of image 0 from a
    DetectionOutput tensor, cut at the first ``image_id == -1`` (float64 ``(N, 7)``).

    :raises EngineError: when the output's size is not a multiple of 7 (naming ``what``).
    """
    if arr.size % 7:
        raise EngineError(f"{what}: output of shape {list(arr.shape)} is not DetectionOutput rows; expected "
                          "[1, 1, N, 7]")
    rows = np.asarray(arr, dtype=np.float64).reshape(-1, 7)
    end = np.flatnonzero(rows[:, 0] == -1)
    rows = rows[:end[0]] if end.size else rows
    return rows[rows[:, 0] == 0]


@register_adapter("ssd", keys=("type",))
class SSDAdapter(Adapter):
    """DetectionOutput rows of the first output -> normalized boxes (Accuracy Checker 2023.3
    ``adapters/ssd.py`` ``SSDAdapter``).

    :raises EngineError: when the output is not ``[..., 7]`` rows.
    """

    def process(self, outputs: Outputs, meta: SampleMeta) -> DetectionPrediction:
        name = next(iter(outputs), "output0")
        rows = detection_output_rows(outputs.find(None, "adapter"), f"adapter ssd: output '{name}'")
        return DetectionPrediction(meta.identifier, rows[:, 1], rows[:, 2], rows[:, 3:7])


# --- YOLO v2 / v3 ---------------------------------------------------------------------------------

def decode_yolo_grid(grid: np.ndarray, num: int, classes: int, anchors: np.ndarray, cells: int,
                     size_norm: tuple[float, float], raw: str | None, threshold: float = 0.001,
                     multiple_labels: bool = False, what: str = "adapter") -> tuple[np.ndarray, ...]:
    """Decode one YOLO region layer (Accuracy Checker 2023.3 ``adapters/yolo.py`` ``parse_output``).

    :param grid: ``(num * K, H, W)`` (or ``(H, W, num * K)``, recognised by ``H == W`` on the first
        two axes as Accuracy Checker does), ``K = 4 + 1 + classes`` (objectness) or ``4 + classes``.
    :param anchors: at least ``2 * num`` anchor sizes ``w, h`` (in units of ``size_norm``).
    :param cells: the grid size the centres are divided by.
    :param size_norm: ``(width, height)`` the anchor sizes are divided by (``cells`` for YOLO v2,
        the input size in pixels for v3).
    :param raw: None (activations already applied), ``"v2"`` (sigmoid on x, y and objectness,
        softmax on the class scores; Accuracy Checker takes that softmax over *all* class scores of
        the layer at once, reproduced here) or ``"v3"`` (sigmoid on x, y, objectness and classes).
    :param threshold: objectness threshold (strictly above), or with ``multiple_labels`` the
        threshold on objectness x class probability (one box per class above it).
    :return: ``(labels, scores, boxes)``, boxes ``(N, 4)`` normalized to [0, 1] (before clipping),
        in grid order (row, column, anchor), then class order with ``multiple_labels``.
    :raises EngineError: when the channels do not split into ``num`` boxes of ``4 + [1] + classes``.
    """
    if grid.ndim != 3:
        raise EngineError(f"{what}: region output of shape {list(grid.shape)}; expected 3 axes (channels and a grid)")
    if grid.shape[0] == grid.shape[1]:
        grid = np.transpose(grid, (2, 0, 1))
    channels, h, w = grid.shape
    k = channels // num
    objectness = k == classes + 5
    if channels % num or k not in (classes + 4, classes + 5):
        raise EngineError(f"{what}: region output of shape {list(grid.shape)} does not hold {num} boxes of "
                          f"4 coordinates [+ objectness] + {classes} classes; expected {num * (classes + 5)} "
                          "channels (check classes, num, coords)")
    cand = np.asarray(grid, dtype=np.float64).reshape(num, k, h, w).transpose(2, 3, 0, 1).reshape(-1, k)
    tx, ty, tw, th = cand[:, 0], cand[:, 1], cand[:, 2], cand[:, 3]
    obj = cand[:, 4] if objectness else np.ones(len(cand))
    probs = cand[:, 4 + objectness:]
    if raw is not None:
        tx, ty = _sigmoid(tx), _sigmoid(ty)
        if objectness:
            obj = _sigmoid(obj)
        if raw == "v2":
            e = np.exp(probs - probs.max(initial=-np.inf))
            probs = e / e.sum()
        else:
            probs = _sigmoid(probs)
    probs = probs * obj[:, None]
    cell = np.arange(len(cand))
    row, col, anchor = cell // (w * num), (cell // num) % w, cell % num
    if multiple_labels:
        idx, labels = np.nonzero(probs > threshold)
        scores = probs[idx, labels]
    else:
        idx = np.flatnonzero(obj > threshold)
        labels = np.argmax(probs[idx], axis=1) if idx.size else np.zeros(0, dtype=np.int64)
        scores = probs[idx, labels]
    anchors = np.asarray(anchors, dtype=np.float64).reshape(-1, 2)[:num]
    cx = (tx[idx] + col[idx]) / cells
    cy = (ty[idx] + row[idx]) / cells
    bw = np.exp(tw[idx]) * anchors[anchor[idx], 0] / size_norm[0]
    bh = np.exp(th[idx]) * anchors[anchor[idx], 1] / size_norm[1]
    boxes = _xywh_to_xyxy(np.stack([cx, cy, bw, bh], axis=1))
    return labels, scores, boxes


def _read_int(params: Mapping, key: str, default: int, ctx: Context) -> int:
    return int(read_number(params, key, default, ctx, low=1, integer=True))


@register_adapter("yolo_v2", keys=("type", "classes", "coords", "num", "anchors", "cells", "raw_output",
                                   "output_format"))
class YoloV2Adapter(Adapter):
    """YOLO v2 RegionYolo output -> normalized boxes (Accuracy Checker 2023.3 ``YoloV2Adapter``):
    ``x = (col + tx) / cells``, ``w = exp(tw) * anchor_w / cells``; objectness > 0.001; score =
    objectness x class probability of the best class. See :func:`decode_yolo_grid`.

    :raises EngineError: when the first output does not hold ``num * (coords + 1 + classes)``
        channels on a ``cells x cells`` grid.
    """

    def __init__(self, params: Mapping, ctx: Context):
        super().__init__(params, ctx)
        self.classes = _read_int(params, "classes", 20, ctx)
        self.coords = _read_int(params, "coords", 4, ctx)
        self.num = _read_int(params, "num", 5, ctx)
        self.cells = _read_int(params, "cells", 13, ctx)
        self.anchors = _read_anchors(params, YOLO_V2_ANCHORS, "yolo_v2", ctx)
        if self.anchors.size < 2 * self.num:
            ctx.add("anchors", f"{self.anchors.size // 2} anchors for num: {self.num}; expected at least {self.num}")
        self.raw = read_bool(params, "raw_output", False, ctx)
        self.output_format = read_choice(params, "output_format", "BHW", ("BHW", "HWB"), ctx)

    def process(self, outputs: Outputs, meta: SampleMeta) -> DetectionPrediction:
        name = next(iter(outputs), "output0")
        what = f"adapter yolo_v2: output '{name}'"
        arr = outputs.find(None, "adapter")
        box = self.classes + self.coords + 1
        grid = arr[0] if arr.shape[:1] == (1,) else arr
        if grid.ndim != 3:
            if grid.size != self.num * box * self.cells ** 2:
                raise EngineError(f"{what}: shape {list(arr.shape)} does not hold {self.num} x {box} values on a "
                                  f"{self.cells}x{self.cells} grid; expected {self.num * box * self.cells ** 2} "
                                  "values (check classes, coords, num, cells)")
            grid = grid.reshape((self.num * box, self.cells, self.cells) if self.output_format == "BHW"
                                else (self.cells, self.cells, self.num * box))
        labels, scores, boxes = decode_yolo_grid(grid, self.num, self.classes, self.anchors, self.cells,
                                                 (self.cells, self.cells), "v2" if self.raw else None, 0.001,
                                                 False, what)
        return DetectionPrediction(meta.identifier, labels, scores, boxes)


@register_adapter("yolo_v3", keys=("type", "classes", "coords", "num", "anchors", "threshold", "outputs",
                                   "anchor_masks", "do_reshape", "transpose", "cells", "raw_output",
                                   "output_format", "multiple_labels"))
class YoloV3Adapter(Adapter):
    """YOLO v3 region outputs (one per scale) -> normalized boxes (Accuracy Checker 2023.3
    ``YoloV3Adapter``): per output, centres over that grid, sizes ``exp(tw) * anchor / input size``
    with the output's anchors (``anchor_masks``; without masks every output uses the first ``num``
    anchors, as Accuracy Checker does). See :func:`decode_yolo_grid`.

    :raises EngineError: when an output is missing or its shape does not fit.
    """

    def __init__(self, params: Mapping, ctx: Context):
        super().__init__(params, ctx)
        self.classes = _read_int(params, "classes", 80, ctx)
        self.coords = _read_int(params, "coords", 4, ctx)
        self.num = _read_int(params, "num", 3, ctx)
        self.anchors = _read_anchors(params, YOLO_V3_ANCHORS, "yolo_v3", ctx)
        self.threshold = read_number(params, "threshold", 0.001, ctx, low=0)
        outs = params.get("outputs")
        if isinstance(outs, str):
            outs = [outs]
        if not isinstance(outs, (list, tuple)) or not outs or not all(isinstance(o, str) for o in outs):
            ctx.add("outputs", f"{outs!r}: expected the list of region output names (one per scale)")
            outs = []
        self.outputs = list(outs)
        self.masks = None
        if params.get("anchor_masks") is not None:
            masks = params["anchor_masks"]
            ok = isinstance(masks, (list, tuple)) and all(
                isinstance(m, (list, tuple)) and all(isinstance(i, int) and 0 <= 2 * i + 1 < self.anchors.size
                                                     for i in m) for m in masks)
            if not ok:
                ctx.add("anchor_masks", f"{masks!r}: expected per output a list of anchor indices below "
                                        f"{self.anchors.size // 2}")
            elif self.outputs and len(masks) != len(self.outputs):
                ctx.add("anchor_masks", f"{len(masks)} masks for {len(self.outputs)} outputs; expected one per output")
            else:
                self.masks = [self.anchors.reshape(-1, 2)[list(m)].reshape(-1) for m in masks]
        if self.masks is None and self.anchors.size < 2 * self.num:
            ctx.add("anchors", f"{self.anchors.size // 2} anchors for num: {self.num}; expected at least {self.num}")
        self.do_reshape = read_bool(params, "do_reshape", False, ctx)
        cells = params.get("cells", [13, 26, 52])
        if not isinstance(cells, (list, tuple)) or not all(isinstance(c, int) and c > 0 for c in cells):
            ctx.add("cells", f"{cells!r}: expected a list of grid sizes, one per output")
            cells = [13, 26, 52]
        if self.do_reshape and self.outputs and len(cells) != len(self.outputs):
            ctx.add("cells", f"{len(cells)} grid sizes for {len(self.outputs)} outputs; expected one per output")
        self.cells = list(cells)
        transpose = params.get("transpose")
        if transpose is not None and not (isinstance(transpose, (list, tuple)) and
                                          sorted(transpose) == list(range(len(transpose)))):
            ctx.add("transpose", f"{transpose!r}: expected a permutation of the axes, e.g. [2, 0, 1]")
            transpose = None
        self.transpose = transpose
        self.raw = read_bool(params, "raw_output", False, ctx)
        self.output_format = read_choice(params, "output_format", "BHW", ("BHW", "HWB"), ctx)
        self.multiple_labels = read_bool(params, "multiple_labels", False, ctx)

    def process(self, outputs: Outputs, meta: SampleMeta) -> DetectionPrediction:
        in_h, in_w = network_input_size(meta, "adapter yolo_v3")
        parts = []
        for layer, name in enumerate(self.outputs):
            what = f"adapter yolo_v3: output '{name}'"
            arr = outputs.find(name, "adapter.outputs")
            grid = arr[0] if arr.shape[:1] == (1,) else arr
            anchors = self.masks[layer] if self.masks is not None else self.anchors
            num = anchors.size // 2 if self.masks is not None else self.num
            if self.transpose is not None:
                if len(self.transpose) != grid.ndim:
                    raise EngineError(f"{what}: shape {list(arr.shape)} has {grid.ndim} axes per image; expected "
                                      f"{len(self.transpose)} for transpose: {list(self.transpose)}")
                grid = np.transpose(grid, self.transpose)
            if self.do_reshape or grid.ndim != 3:
                if layer >= len(self.cells):
                    raise EngineError(f"{what}: no grid size for output {layer}; expected {len(self.outputs)} "
                                      "values in cells")
                cells = self.cells[layer]
                if grid.size % (cells * cells):
                    raise EngineError(f"{what}: shape {list(arr.shape)} does not fit a {cells}x{cells} grid; expected "
                                      "a multiple of cells^2 values (check cells)")
                grid = grid.reshape((-1, cells, cells) if self.output_format == "BHW" else (cells, cells, -1))
            else:
                cells = grid.shape[1] if self.output_format == "BHW" else grid.shape[0]
            parts.append(decode_yolo_grid(grid, num, self.classes, anchors, cells, (in_w, in_h),
                                          "v3" if self.raw else None, self.threshold, self.multiple_labels, what))
        if not parts:
            return _empty(meta.identifier)
        labels, scores, boxes = (np.concatenate(p) for p in zip(*parts))
        return DetectionPrediction(meta.identifier, labels, scores, boxes)


# --- YOLOX ----------------------------------------------------------------------------------------

@register_adapter("yolox", keys=("type", "threshold", "num", "output_name"))
class YoloxAdapter(Adapter):
    """YOLOX head ``[1, boxes, 5 + classes]`` -> boxes in input pixels (Accuracy Checker 2023.3
    ``YoloxAdapter``; Ge et al. 2021, "YOLOX"): anchor points of strides 8, 16, 32 over the input
    (``H // s`` rows of ``W // s``), ``xy = (t_xy + cell) * s``, ``wh = exp(t_wh) * s``; boxes with
    objectness > ``threshold``, class scores times objectness, one box per class score above
    ``threshold`` (read at column ``j + num``).

    Deviation: Accuracy Checker builds the grid with height and width swapped, which only matters
    for non-square inputs; here rows follow the height as in the YOLOX reference code.

    :raises EngineError: when the output is not ``[1, boxes, 5 + classes]`` with one box per
        anchor point of the input size.
    """

    def __init__(self, params: Mapping, ctx: Context):
        super().__init__(params, ctx)
        self.threshold = read_number(params, "threshold", 0.001, ctx, low=0)
        self.num = _read_int(params, "num", 5, ctx)
        self.output_name = params.get("output_name")

    def process(self, outputs: Outputs, meta: SampleMeta) -> DetectionPrediction:
        arr = outputs.find(self.output_name, "adapter.output_name")
        name = self.output_name or next(iter(outputs), "output0")
        pred = np.asarray(arr[0] if arr.ndim == 3 else arr, dtype=np.float64)
        h, w = network_input_size(meta, "adapter yolox")
        grids, strides = [], []
        for s in (8, 16, 32):
            gy, gx = np.mgrid[0:h // s, 0:w // s]
            grids.append(np.stack([gx.reshape(-1), gy.reshape(-1)], axis=1))
            strides.append(np.full(gx.size, float(s)))
        grid, stride = np.concatenate(grids), np.concatenate(strides)[:, None]
        if pred.ndim != 2 or pred.shape[0] != len(grid) or pred.shape[1] < 6:
            raise EngineError(f"adapter yolox: output '{name}' has shape {list(arr.shape)}; expected [1, {len(grid)}, "
                              f"5 + classes] for a {w}x{h} input")
        xy = (pred[:, :2] + grid) * stride
        wh = np.exp(pred[:, 2:4]) * stride
        keep = pred[:, 4] > self.threshold
        boxes = _xywh_to_xyxy(np.concatenate([xy, wh], axis=1)[keep])
        scored = pred[keep].copy()
        scored[:, 5:] *= scored[:, 4:5]
        idx, cls = np.nonzero(scored[:, 5:] > self.threshold)
        if np.any(cls + self.num >= scored.shape[1]):
            raise EngineError(f"adapter yolox: output '{name}' has {scored.shape[1]} columns; num: {self.num} points "
                              "past the class scores; expected num: 5")
        return DetectionPrediction(meta.identifier, cls, scored[idx, cls + self.num], boxes[idx])


# --- class-agnostic boxes -------------------------------------------------------------------------

@register_adapter("class_agnostic_detection", keys=("type", "output_blob", "scale"))
class ClassAgnosticDetectionAdapter(Adapter):
    """Rows ``x1, y1, x2, y2, score`` -> boxes times ``scale`` with score > 0, label 1 (Accuracy
    Checker 2023.3 ``adapters/detection.py`` ``ClassAgnosticDetectionAdapter``).

    :raises EngineError: when no output (or the named one) is shaped ``[n, 5]`` / ``[1, n, 5]``.
    """

    def __init__(self, params: Mapping, ctx: Context):
        super().__init__(params, ctx)
        self.output_blob = params.get("output_blob")
        scale = _numbers(params.get("scale", 1.0))
        if scale is None or len(scale) not in (1, 2):
            ctx.add("scale", f"{params.get('scale')!r} is not a scale; expected a number or [scale_x, scale_y]")
            scale = [1.0]
        self.scale = np.asarray(scale * 2 if len(scale) == 2 else scale, dtype=np.float64)

    def process(self, outputs: Outputs, meta: SampleMeta) -> DetectionPrediction:
        if self.output_blob:
            arr, name = outputs.find(self.output_blob, "adapter.output_blob"), self.output_blob
        else:
            found = [(a, n[0] if n else f"output{k}") for k, (a, n) in enumerate(zip(outputs.arrays, outputs.names))
                     if a.ndim in (2, 3) and a.shape[-1] == 5]
            if not found:
                raise EngineError("adapter class_agnostic_detection: no output is shaped [n, 5]; expected rows of "
                                  "x1, y1, x2, y2, score (or name it in output_blob)")
            arr, name = found[0]
        if arr.ndim not in (2, 3) or arr.shape[-1] != 5 or (arr.ndim == 3 and arr.shape[0] != 1):
            raise EngineError(f"adapter class_agnostic_detection: output '{name}' has shape {list(arr.shape)}; "
                              "expected [n, 5] rows of x1, y1, x2, y2, score")
        rows = np.asarray(arr, dtype=np.float64).reshape(-1, 5)
        rows = rows[rows[:, 4] > 0]
        return DetectionPrediction(meta.identifier, np.ones(len(rows)), rows[:, 4], rows[:, :4] * self.scale)


# --- Mask R-CNN -----------------------------------------------------------------------------------

def paste_mask(box: np.ndarray, mask: np.ndarray, height: int, width: int) -> dict:
    """One instance mask as a COCO RLE dict of the ``height x width`` image.

    Accuracy Checker 2023.3 ``MaskRCNNAdapter.segm_postprocess`` (full-image mask, encoded): the
    ``M x M`` mask gets a 1-pixel zero border, the box is enlarged by ``(M + 2) / M`` about its
    centre and truncated to integers, the bordered mask is resized (OpenCV LINEAR) onto it,
    thresholded at > 0.5 and pasted where it falls inside the image.

    :param box: ``x_min, y_min, x_max, y_max`` in image pixels.
    :param mask: float ``(M, M)`` probabilities for the box's class.
    :return: ``{"size": [height, width], "counts": str}`` (pycocotools RLE).
    """
    import pycocotools.mask as coco_mask

    padded = np.pad(np.asarray(mask, dtype=np.float32), 1)
    scale = padded.shape[0] / (padded.shape[0] - 2.0)
    box = np.asarray(box, dtype=np.float64)
    centre, half = (box[:2] + box[2:]) * 0.5, (box[2:] - box[:2]) * 0.5 * scale
    ext = np.concatenate([centre - half, centre + half]).astype(int)
    bw, bh = np.maximum(ext[2:] - ext[:2] + 1, 1)
    limit = np.array([width, height])
    x0, y0 = np.clip(ext[:2], 0, limit)
    x1, y1 = np.clip(ext[2:] + 1, 0, limit)
    resized = (cv2.resize(padded, (int(bw), int(bh))) > 0.5).astype(np.uint8)
    full = np.zeros((height, width), dtype=np.uint8)
    if x1 > x0 and y1 > y0:
        full[y0:y1, x0:x1] = resized[y0 - ext[1]:y1 - ext[1], x0 - ext[0]:x1 - ext[0]]
    rle = coco_mask.encode(np.asfortranarray(full[:, :, None]))[0]
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


@register_adapter("mask_rcnn", keys=("type", "classes_out", "scores_out", "boxes_out", "raw_masks_out",
                                     "num_detections_out", "detection_out"))
class MaskRCNNAdapter(Adapter):
    """Mask R-CNN outputs -> boxes + per-box RLE masks in the original image (Accuracy Checker
    2023.3 ``adapters/mask_rcnn.py``), three layouts:

    * ``detection_out`` rows as for ``ssd`` with ``raw_masks_out`` ``[N, classes, M, M]`` (mask of
      class ``label - 1``): boxes stay as given (normalized to the model input; configs add
      ``faster_rcnn_postprocessing_resize``), masks are pasted at the boxes mapped by
      :func:`~pot_cli.engines.ac.postprocessing.frcnn_box_scale`;
    * ``num_detections_out`` (TF Object Detection API): ``boxes_out`` ``[1, N, 4]`` normalized
      ``y_min, x_min, y_max, x_max``, ``classes_out``, ``scores_out``, masks ``[1, N, M, M]``; the
      first ``num_detections`` rows, boxes in original pixels;
    * otherwise (PyTorch-style): ``boxes_out`` ``[N, 4]`` in input pixels (or ``[N, 5]`` with the
      score last when ``scores_out`` is absent), ``classes_out`` (default all 1), masks
      ``[N, classes, M, M]`` (or one mask per box); rows with class > 0 (with ``scores_out``) or a
      positive coordinate sum are kept, boxes divided by the last resize's scale (or input size /
      image size) into original pixels.

    :raises EngineError: when an output is missing or does not have the expected shape.
    """

    def __init__(self, params: Mapping, ctx: Context):
        super().__init__(params, ctx)
        names = ("classes_out", "scores_out", "boxes_out", "raw_masks_out", "num_detections_out", "detection_out")
        self.names = {k: params.get(k) for k in names}
        for k, v in self.names.items():
            if v is not None and not isinstance(v, str):
                ctx.add(k, f"{v!r} is not an output name; expected a string")
        box_outputs = [self.names[k] for k in ("classes_out", "scores_out", "boxes_out")]
        if self.names["detection_out"] and all(box_outputs):
            ctx.add(None, "both detection_out and classes_out/scores_out/boxes_out are given; expected one of them")
        if self.names["num_detections_out"] and not all(box_outputs):
            ctx.add("num_detections_out", "needs classes_out, scores_out and boxes_out as well")
        if not self.names["raw_masks_out"] and (self.names["detection_out"] or self.names["num_detections_out"]):
            ctx.add("raw_masks_out", "missing; expected the name of the raw masks output")
        self.where = ctx.where

    def _out(self, key: str, outputs: Outputs) -> np.ndarray:
        return outputs.find(self.names[key], f"adapter.{key}")

    def process(self, outputs: Outputs, meta: SampleMeta) -> DetectionPrediction:
        height, width = int(meta.image_size[0]), int(meta.image_size[1])
        if self.names["detection_out"]:
            return self._detection_out(outputs, meta, height, width)
        if self.names["num_detections_out"]:
            return self._tf_api(outputs, meta, height, width)
        return self._pytorch(outputs, meta, height, width)

    def _masks_of(self, outputs: Outputs, count: int, ndim: int) -> np.ndarray:
        masks = self._out("raw_masks_out", outputs)
        if masks.ndim == ndim + 1 and masks.shape[0] == 1:
            masks = masks[0]
        if masks.ndim != ndim or masks.shape[0] < count:
            want = "[N, classes, M, M]" if ndim == 4 else "[N, M, M]"
            raise EngineError(f"adapter mask_rcnn: output '{self.names['raw_masks_out']}' has shape "
                              f"{list(masks.shape)} for {count} boxes; expected {want}")
        return masks

    def _detection_out(self, outputs, meta, height, width):
        raw = self._out("detection_out", outputs)
        rows = np.asarray(raw, dtype=np.float64)
        if rows.size % 7:
            raise EngineError(f"adapter mask_rcnn: output '{self.names['detection_out']}' has shape "
                              f"{list(raw.shape)}; expected DetectionOutput rows [N, 7]")
        rows = rows.reshape(-1, 7)
        end = np.flatnonzero(rows[:, 0] == -1)
        n = end[0] if end.size else len(rows)
        masks = self._masks_of(outputs, n, 4)[:n]
        rows = rows[:n]
        own = rows[:, 0] == 0
        rows, masks = rows[own], masks[own]
        cx, cy = frcnn_box_scale(meta, f"{self.where} (mask_rcnn)")
        labels = rows[:, 1].astype(np.int64)
        if np.any((labels < 0) | (labels > masks.shape[1])):  # label 0 takes the last mask, as in AC
            raise EngineError(f"adapter mask_rcnn: a label of output '{self.names['detection_out']}' has no mask in "
                              f"'{self.names['raw_masks_out']}' ({masks.shape[1]} classes); expected labels 1.."
                              f"{masks.shape[1]}")
        scaled = rows[:, 3:7] * np.array([cx, cy, cx, cy])
        rles = [paste_mask(b, m[c - 1], height, width) for b, m, c in zip(scaled, masks, labels)]
        return DetectionPrediction(meta.identifier, rows[:, 1], rows[:, 2], rows[:, 3:7], masks=rles)

    def _tf_api(self, outputs, meta, height, width):
        n = int(np.asarray(self._out("num_detections_out", outputs)).reshape(-1)[0])
        boxes = np.asarray(self._out("boxes_out", outputs), dtype=np.float64).reshape(-1, 4)[:n]
        classes = np.asarray(self._out("classes_out", outputs)).reshape(-1)[:n].astype(np.uint32)
        scores = np.asarray(self._out("scores_out", outputs), dtype=np.float64).reshape(-1)[:n]
        masks = self._masks_of(outputs, n, 3)[:n]
        xyxy = boxes[:, [1, 0, 3, 2]] * np.array([width, height, width, height], dtype=np.float64)
        rles = [paste_mask(b, m, height, width) for b, m in zip(xyxy, masks)]
        return DetectionPrediction(meta.identifier, classes, scores, xyxy, masks=rles)

    def _pytorch(self, outputs, meta, height, width):
        if self.names["boxes_out"]:
            boxes = self._out("boxes_out", outputs)
        else:
            found = [a for a in outputs.arrays if a.ndim == 2 and a.shape[1] == 5]
            if not found:
                raise EngineError("adapter mask_rcnn: no output is shaped [N, 5]; expected boxes_out, or "
                                  "detection_out with raw_masks_out")
            boxes = found[0]
        boxes = np.asarray(boxes, dtype=np.float64)
        scores = None if not self.names["scores_out"] else \
            np.asarray(self._out("scores_out", outputs), dtype=np.float64).reshape(-1)
        if scores is None and boxes.ndim == 2 and boxes.shape[1] == 5:
            scores, boxes = boxes[:, 4], boxes[:, :4]
        if boxes.ndim != 2 or boxes.shape[1] != 4 or scores is None or len(scores) != len(boxes):
            raise EngineError(f"adapter mask_rcnn: boxes of shape {list(boxes.shape)} with "
                              f"{'no' if scores is None else len(scores)} scores; expected boxes_out [N, 4] with "
                              "scores_out [N], or [N, 5] rows ending with the score")
        classes = np.ones(len(boxes), dtype=np.int64) if not self.names["classes_out"] else \
            np.asarray(self._out("classes_out", outputs)).reshape(-1).astype(np.int64)
        keep = classes > 0 if self.names["scores_out"] else boxes.sum(axis=1) > 0
        boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
        op = next((o for o in reversed(meta.geometric_operations) if o.get("type") in ("resize", "auto_resize")),
                  None)
        if op is not None:
            sx, sy = op["scale_x"], op["scale_y"]
        else:
            in_h, in_w = network_input_size(meta, "adapter mask_rcnn")
            sx, sy = in_w / width, in_h / height
        boxes = boxes / np.array([sx, sy, sx, sy])
        rles = None
        if self.names["raw_masks_out"]:
            raw = np.asarray(self._out("raw_masks_out", outputs))
            raw = raw[keep] if raw.shape[0] == len(keep) else raw
            if raw.ndim == 4 and raw.shape[1] != 1:
                per_box = [m[c] if self.names["scores_out"] else m for m, c in zip(raw, classes)]
            else:
                per_box = list(raw[:, 0] if raw.ndim == 4 else raw)
            rles = [paste_mask(b, m, height, width) for b, m in zip(boxes, per_box)]
        return DetectionPrediction(meta.identifier, classes, scores, boxes, masks=rles)


# --- YOLOv8 (ours) --------------------------------------------------------------------------------

@register_adapter("yolo_v8", keys=("type", "output_blob", "threshold", "classes", "class_map", "multi_label"))
class YoloV8Adapter(Adapter):
    """Ultralytics YOLOv8 detection head -> boxes in input pixels (our extension; the Ultralytics
    ``ops.non_max_suppression`` input convention; Accuracy Checker 2023.3 has a similar
    ``yolov8_detection`` adapter with threshold 0.25 and multi-label on).

    The output is ``[1, 4 + C, A]`` or ``[1, A, 4 + C]`` (the axis of size ``4 + classes`` when
    ``classes`` is given, else the smaller one): per anchor ``cx, cy, w, h`` in input pixels then
    ``C`` class scores in [0, 1] (no objectness). With ``class_map`` only the listed model classes
    are kept and renamed to their annotation labels (several model classes mapped to one label
    share it through the maximum of their scores). Without ``multi_label`` an anchor gives one box,
    its best (kept) class, when that score is > ``threshold``; with it one box per label above the
    threshold. Boxes come in anchor order (then label order).

    :raises EngineError: when the output is not ``[1, 4 + classes, anchors]`` or its transpose.
    """

    def __init__(self, params: Mapping, ctx: Context):
        super().__init__(params, ctx)
        self.output_blob = params.get("output_blob")
        self.threshold = read_number(params, "threshold", 0.001, ctx, low=0)
        self.classes = int(read_number(params, "classes", 0, ctx, low=1, integer=True)) if "classes" in params \
            else None
        self.multi_label = read_bool(params, "multi_label", False, ctx)
        self.class_map: dict[int, int] | None = None
        if params.get("class_map") is not None:
            cmap = params["class_map"]
            parsed = {}
            if isinstance(cmap, Mapping):
                for k, v in cmap.items():
                    try:
                        key = int(k)
                    except (TypeError, ValueError):
                        key = None
                    if key is None or key < 0 or not isinstance(v, int) or isinstance(v, bool):
                        parsed = None
                        break
                    parsed[key] = v
            if not isinstance(cmap, Mapping) or not parsed:
                ctx.add("class_map", f"{cmap!r} is not a mapping of model class ids to annotation labels; "
                                     "expected e.g. {1: 0, 12: 0}")
            else:
                if self.classes is not None and max(parsed) >= self.classes:
                    ctx.add("class_map", f"model class {max(parsed)} is not below classes: {self.classes}")
                self.class_map = parsed

    def _scores(self, arr: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(boxes_xywh (A, 4), scores (A, C))`` of the output."""
        item = arr[0] if arr.ndim == 3 and arr.shape[0] == 1 else arr
        if item.ndim != 2:
            raise EngineError(f"adapter yolo_v8: output '{name}' has shape {list(arr.shape)}; expected "
                              "[1, 4 + classes, anchors]")
        if self.classes is not None:
            want = 4 + self.classes
            if item.shape[0] != want and item.shape[1] != want:
                raise EngineError(f"adapter yolo_v8: output '{name}' has shape {list(arr.shape)}; expected "
                                  f"[1, {want}, anchors] for classes: {self.classes}")
            channels_first = item.shape[0] == want
        else:
            channels_first = item.shape[0] <= item.shape[1]
        rows = np.asarray(item.T if channels_first else item, dtype=np.float64)
        if rows.shape[1] < 5:
            raise EngineError(f"adapter yolo_v8: output '{name}' has shape {list(arr.shape)}; expected "
                              "[1, 4 + classes, anchors] with at least one class")
        return rows[:, :4], rows[:, 4:]

    def process(self, outputs: Outputs, meta: SampleMeta) -> DetectionPrediction:
        arr = outputs.find(self.output_blob, "adapter.output_blob")
        name = self.output_blob or next(iter(outputs), "output0")
        xywh, scores = self._scores(arr, name)
        label_ids = np.arange(scores.shape[1])
        if self.class_map is not None:
            if max(self.class_map) >= scores.shape[1]:
                raise EngineError(f"adapter yolo_v8: class_map names model class {max(self.class_map)} but output "
                                  f"'{name}' has {scores.shape[1]} classes; expected classes below that")
            label_ids = np.array(sorted(set(self.class_map.values())), dtype=np.int64)
            merged = np.full((len(scores), len(label_ids)), -np.inf)
            for src, dst in self.class_map.items():
                col = int(np.searchsorted(label_ids, dst))
                merged[:, col] = np.maximum(merged[:, col], scores[:, src])
            scores = merged
        if self.multi_label:
            idx, col = np.nonzero(scores > self.threshold)
        else:
            col = np.argmax(scores, axis=1) if scores.size else np.zeros(0, dtype=np.int64)
            idx = np.flatnonzero(scores[np.arange(len(scores)), col] > self.threshold)
            col = col[idx]
        return DetectionPrediction(meta.identifier, label_ids[col], scores[idx, col], _xywh_to_xyxy(xywh[idx]))


@register_adapter("yolov8_detection", keys=("type", "conf_threshold", "multi_label"))
class YoloV8DetectionAdapter(YoloV8Adapter):
    """Accuracy Checker 2023.3's ``yolov8_detection`` (``adapters/yolo.py``
    ``YoloV8DetectionAdapter``): the first output ``[1, 4 + classes, anchors]`` decoded as
    :class:`YoloV8Adapter` with ``conf_threshold`` [0.25] and ``multi_label`` [true]; boxes in input
    pixels.

    :raises EngineError: when the output is not ``[1, 4 + classes, anchors]`` or its transpose.
    """

    def __init__(self, params: Mapping, ctx: Context):
        Adapter.__init__(self, params, ctx)
        self.output_blob = None
        self.threshold = read_number(params, "conf_threshold", 0.25, ctx, low=0)
        self.classes = None
        self.multi_label = read_bool(params, "multi_label", True, ctx)
        self.class_map = None
