"""Write ``adapter_expected.json``: Accuracy Checker's own detection adapters, postprocessing and
geometric preprocessing run on small seeded inputs, for ``tests/ac/test_adapters.py``,
``test_postprocessing.py`` and ``test_geometry.py``.

Runs ONLY in the reference environment (openvino-dev 2023.3.0, which ships Accuracy Checker)::

    /work/ac-ref/venv/bin/python tests/data/ac_reference/make_adapter_reference.py

The project never imports Accuracy Checker: this script stores the inputs and AC's results, and
the tests feed the same inputs to ``pot_cli.engines.ac``. Inputs are rounded to 4 decimals so
that the JSON holds them exactly.
"""
from __future__ import annotations

import base64
import json
import sys
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")

from openvino.tools.accuracy_checker.adapters import Adapter  # noqa: E402
from openvino.tools.accuracy_checker.data_readers import DataRepresentation  # noqa: E402
from openvino.tools.accuracy_checker.postprocessor import Postprocessor  # noqa: E402
from openvino.tools.accuracy_checker.preprocessor import Preprocessor  # noqa: E402
from openvino.tools.accuracy_checker.representation import (  # noqa: E402
    ContainerPrediction, DetectionAnnotation, DetectionPrediction)

OUT = Path(__file__).with_name("adapter_expected.json")
COMMAND = "/work/ac-ref/venv/bin/python tests/data/ac_reference/make_adapter_reference.py"


def rnd(seed: int) -> np.random.RandomState:
    return np.random.RandomState(seed)


def arr(a: np.ndarray) -> dict:
    a = np.asarray(a)
    return {"shape": list(a.shape), "dtype": str(a.dtype), "data": a.reshape(-1).tolist()}


def packed(a: np.ndarray) -> dict:
    """An image as base64 of its bytes; integral 0..255 values are stored as uint8 (``stored``)
    whatever ``dtype`` Accuracy Checker gave (its OpenCV resize returns float32)."""
    a = np.ascontiguousarray(a)
    integral = bool(np.all(a == np.round(a)) and a.min() >= 0 and a.max() <= 255)
    raw = a.astype(np.uint8) if integral else a.astype(a.dtype.newbyteorder("<"))
    return {"shape": list(a.shape), "dtype": str(a.dtype), "stored": str(raw.dtype),
            "base64": base64.b64encode(raw.tobytes()).decode("ascii")}


def r4(a: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(a, dtype=np.float64), 4)


# --- geometry: AC preprocessing on a seeded image ---------------------------------------------------

GEOMETRY = {
    "resize": ((30, 40), [{"type": "resize", "size": 32}], None),
    "resize_greater": ((30, 40), [{"type": "resize", "size": 24, "aspect_ratio_scale": "greater"}], None),
    "fit_to_window": ((30, 45), [{"type": "resize", "dst_width": 32, "dst_height": 29,
                                  "aspect_ratio_scale": "fit_to_window"}], None),
    "fit_pad_rb": ((30, 45), [{"type": "resize", "dst_width": 32, "dst_height": 32,
                               "aspect_ratio_scale": "fit_to_window"},
                              {"type": "padding", "dst_width": 32, "dst_height": 32, "pad_type": "right_bottom"}],
                   None),
    "frcnn_pad_stride": ((30, 45), [{"type": "resize", "dst_width": 40, "dst_height": 24,
                                     "aspect_ratio_scale": "frcnn_keep_aspect_ratio"},
                                    {"type": "padding", "stride": 16, "pad_type": "right_bottom"}], None),
    "frcnn_fallback": ((20, 90), [{"type": "resize", "dst_width": 40, "dst_height": 24,
                                   "aspect_ratio_scale": "frcnn_keep_aspect_ratio"}], None),
    "pad_center": ((21, 30), [{"type": "padding", "size": 33, "pad_value": "10, 20, 30"}], None),
    "pad_center_lte": ((21, 30), [{"type": "padding", "size": 34, "left_top_extend": True,
                                   "pad_value": "7, 7, 7"}], None),
    "pad_left_top_numpy": ((21, 30), [{"type": "padding", "dst_width": 36, "dst_height": 25, "pad_type": "left_top",
                                       "use_numpy": True, "pad_value": "1, 2, 3"}], None),
    "pad_numpy_edge": ((21, 30), [{"type": "padding", "size": 32, "use_numpy": True,
                                   "numpy_pad_mode": "edge"}], None),
    "pad_enable_resize": ((21, 30), [{"type": "padding", "dst_width": 24, "dst_height": 24,
                                      "enable_resize": True}], None),
    "pad_taller": ((40, 20), [{"type": "padding", "size": 32, "pad_value": "5, 6, 7"}], None),
    "resize_crop": ((30, 45), [{"type": "resize", "size": 36, "aspect_ratio_scale": "greater"},
                               {"type": "crop", "size": 32}], None),
    "central_fraction": ((30, 45), [{"type": "crop", "central_fraction": 0.875}], None),
    "auto_resize": ((30, 45), [{"type": "auto_resize"}], (32, 48)),
}


def image_of(name: str) -> np.ndarray:
    (h, w), _, _ = GEOMETRY[name]
    return rnd(1000 + sorted(GEOMETRY).index(name)).randint(0, 256, size=(h, w, 3)).astype(np.uint8)


def run_geometry(name: str):
    _, steps, model_hw = GEOMETRY[name]
    image = DataRepresentation(image_of(name), identifier=name)
    for k, cfg in enumerate(steps):
        pre = Preprocessor.provide(cfg["type"], cfg, f"p{k}")
        if model_hw is not None:
            pre.input_shapes = {"data": (1, 3, *model_hw)}
        image = pre.process(image)
    ops = [{"type": op.type, **{k: (list(v) if isinstance(v, tuple) else v) for k, v in op.parameters.items()}}
           for op in image.metadata.get("geometric_operations", [])]
    data = np.asarray(image.data)
    seed = 1000 + sorted(GEOMETRY).index(name)
    return image.metadata, data, {"steps": steps, "model_input_size": model_hw, "seed": seed,
                                  "image_shape": list(image_of(name).shape), "output": packed(data), "ops": ops,
                                  "image_info": image.metadata.get("image_info")}


GEOMETRY_RESULTS = {}


def geometry_meta(name: str) -> dict:
    """AC's image metadata after the geometry ``name`` (plus ``input_shape`` of the final image)."""
    meta, data, record = run_geometry(name)
    GEOMETRY_RESULTS[name] = record
    meta = dict(meta)
    meta["input_shape"] = {"data": (1, 3, data.shape[0], data.shape[1])}
    return meta


# --- detection records --------------------------------------------------------------------------------

def random_boxes(seed: int, n: int, w: float, h: float, labels: int = 4, special: bool = False):
    g = rnd(seed)
    x0, y0 = g.rand(n) * w * 0.8, g.rand(n) * h * 0.8
    bw, bh = g.rand(n) * w * 0.5 - w * 0.05, g.rand(n) * h * 0.5 - h * 0.05
    boxes = r4(np.stack([x0, y0, x0 + bw, y0 + bh], axis=1))
    scores = r4(g.rand(n))
    lab = g.randint(0, labels, size=n)
    if special:  # duplicates for NMS ties, a box outside the image, a NaN box
        boxes[1] = boxes[0]
        scores[1] = scores[0]
        boxes[2] = [-5.0, -3.0, w + 4.0, h + 2.0]
        boxes[3, 2] = np.nan
    return lab, scores, boxes


def ac_prediction(rec: dict) -> DetectionPrediction:
    b = np.asarray(rec["boxes"], dtype=np.float64).reshape(-1, 4)
    p = DetectionPrediction("img", np.asarray(rec["labels"]), np.asarray(rec["scores"], dtype=np.float64),
                            b[:, 0], b[:, 1], b[:, 2], b[:, 3])
    if rec.get("difficult"):
        p.metadata["difficult_boxes"] = list(rec["difficult"])
    return p


def ac_annotation(rec: dict, image_size) -> DetectionAnnotation:
    b = np.asarray(rec["boxes"], dtype=np.float64).reshape(-1, 4)
    a = DetectionAnnotation("img", np.asarray(rec["labels"]), b[:, 0], b[:, 1], b[:, 2], b[:, 3])
    a.metadata["difficult_boxes"] = list(rec.get("difficult", []))
    a.set_image_size([tuple(image_size)])
    return a


def as_record(rep) -> dict:
    boxes = np.stack([rep.x_mins, rep.y_mins, rep.x_maxs, rep.y_maxs], axis=1).astype(np.float64) \
        if len(rep.x_mins) else np.zeros((0, 4))
    out = {"labels": np.asarray(rep.labels).astype(np.int64).tolist(),
           "boxes": [[None if np.isnan(v) else float(v) for v in row] for row in boxes],
           "difficult": sorted({int(i) for i in rep.metadata.get("difficult_boxes", [])})}
    if isinstance(rep, DetectionPrediction):
        out["scores"] = np.asarray(rep.scores, dtype=np.float64).tolist()
    return out


def record_in(labels, boxes, scores=None, difficult=()) -> dict:
    out = {"labels": np.asarray(labels).astype(np.int64).tolist(),
           "boxes": [[None if np.isnan(v) else float(v) for v in row] for row in np.asarray(boxes)],
           "difficult": list(difficult)}
    if scores is not None:
        out["scores"] = np.asarray(scores, dtype=np.float64).tolist()
    return out


def unnull(rec: dict) -> dict:
    rec = dict(rec)
    rec["boxes"] = [[np.nan if v is None else v for v in row] for row in rec["boxes"]]
    return rec


# --- adapters -------------------------------------------------------------------------------------------

def run_adapter(config: dict, outputs: dict, meta: dict, output_blob=None):
    adapter = Adapter.provide(config["type"], config, output_blob=output_blob)
    raw = {k: np.array(v, copy=True) for k, v in outputs.items()}
    result = adapter.process([raw], ["img"], [meta])[0]
    masks = None
    if isinstance(result, ContainerPrediction):
        masks = result["segmentation_prediction"].mask
        result = result["detection_prediction"]
    rec = as_record(result)
    if masks is not None:
        rec["masks"] = [{"size": list(m["size"]), "counts": m["counts"]} for m in masks]
    return rec


def adapter_cases() -> list:
    cases = []

    def add(name, config, outputs, meta_geometry=None, input_hw=None, image_size=(40, 50, 3), output_blob=None,
            ours=None):
        meta = geometry_meta(meta_geometry) if meta_geometry else {}
        meta["image_size"] = tuple(image_of(meta_geometry).shape) if meta_geometry else tuple(image_size)
        if input_hw is not None:
            meta["input_shape"] = {"data": (1, 3, *input_hw)}
        expected = run_adapter(config, outputs, meta, output_blob)
        cases.append({"name": name, "config": ours or config, "ac_config": config,
                      "outputs": {k: arr(v) for k, v in outputs.items()},
                      "geometry": meta_geometry, "input_size": list(input_hw) if input_hw else None,
                      "image_size": list(meta["image_size"]), "expected": expected})

    g = rnd(1)
    rows = r4(np.concatenate([np.zeros((6, 1)), g.randint(1, 5, (6, 1)), g.rand(6, 1), g.rand(6, 2) * 0.5,
                              g.rand(6, 2) * 0.5 + 0.5], axis=1))
    tail = np.array([[-1, 0, 0, 0, 0, 0, 0], [0, 3, 0.9, 0.1, 0.1, 0.2, 0.2]], dtype=np.float64)
    add("ssd", {"type": "ssd"}, {"detection_out": np.concatenate([rows, tail])[None, None]})

    # YOLO v2: classes 3, num 2, cells 4 (box = 8 channels)
    grid = r4(rnd(2).randn(1, 16, 4, 4))
    grid[0, 4] = r4(rnd(3).rand(4, 4))  # objectness of anchor 0 in [0, 1]
    grid[0, 12] = r4(rnd(4).rand(4, 4) * 0.002)  # anchor 1 mostly under 0.001
    add("yolo_v2", {"type": "yolo_v2", "classes": 3, "num": 2, "cells": 4, "anchors": "1.0, 2.0, 3.0, 1.5"},
        {"region": grid})
    flat = r4(rnd(5).randn(1, 4 * 4 * 16))
    add("yolo_v2_raw_hwb", {"type": "yolo_v2", "classes": 3, "num": 2, "cells": 4, "anchors": "tiny_yolo_v2",
                            "raw_output": True, "output_format": "HWB"}, {"region": flat})
    add("yolo_v2_default_anchors", {"type": "yolo_v2", "classes": 2, "coords": 4, "num": 5, "cells": 3},
        {"region": r4(rnd(6).rand(1, 5 * 7 * 9))})

    # YOLO v3: two scales (2x2 and 4x4) of a 64x64 input, 3 classes
    o1, o2 = r4(rnd(7).randn(1, 24, 2, 2)), r4(rnd(8).randn(1, 24, 4, 4))
    add("yolo_v3_raw_masks", {"type": "yolo_v3", "classes": 3, "num": 3, "raw_output": True, "threshold": 0.4,
                              "outputs": ["out_a", "out_b"], "anchor_masks": [[3, 4, 5], [0, 1, 2]],
                              "anchors": "10,13,16,30,33,23,30,61,62,45,59,119"},
        {"out_a": o1, "out_b": o2}, input_hw=(64, 64))
    o3 = r4(rnd(9).rand(1, 4, 4, 16))  # HWB: 4 x 4 cells, 2 anchors x (4 + 1 + 3)
    add("yolo_v3_multilabel_hwb", {"type": "yolo_v3", "classes": 3, "num": 2, "threshold": 0.3,
                                   "outputs": ["out"], "output_format": "HWB", "multiple_labels": True},
        {"out": o3}, input_hw=(48, 64))
    add("yolo_v3_reshape_no_objectness", {"type": "yolo_v3", "classes": 3, "num": 3, "threshold": 0.5,
                                          "outputs": ["flat"], "cells": [3], "do_reshape": True,
                                          "anchors": "tiny_yolo_v3"},
        {"flat": r4(rnd(10).rand(1, 3 * 7 * 9))}, input_hw=(32, 32))

    # YOLOX: 64x64 input -> 8x8 + 4x4 + 2x2 = 84 anchor points, 3 classes
    yx = r4(rnd(12).randn(1, 84, 8))
    yx[0, :, 4:] = r4(rnd(13).rand(84, 4))
    add("yolox", {"type": "yolox", "threshold": 0.2}, {"output": yx}, input_hw=(64, 64))

    # class-agnostic: [1, 10, 5] with some non-positive scores
    ca = r4(np.concatenate([rnd(14).rand(1, 10, 4) * 30, rnd(15).rand(1, 10, 1) - 0.3], axis=2))
    add("class_agnostic_list_scale", {"type": "class_agnostic_detection", "scale": [2.0, 3.0]},
        {"other": r4(rnd(16).rand(1, 7)), "boxes": ca})
    add("class_agnostic_scalar_scale", {"type": "class_agnostic_detection", "output_blob": "boxes", "scale": 0.5},
        {"boxes": ca[0]})

    # YOLOv8 head against AC's own yolov8_detection (our yolo_v8 with the same threshold)
    v8 = np.concatenate([rnd(17).rand(1, 2, 30) * 64, rnd(18).rand(1, 2, 30) * 20 + 2, rnd(19).rand(1, 5, 30)], axis=1)
    v8 = r4(v8)
    add("yolo_v8_best_class", {"type": "yolov8_detection", "conf_threshold": 0.6, "multi_label": False},
        {"output0": v8}, output_blob="output0", ours={"type": "yolo_v8", "threshold": 0.6})
    add("yolo_v8_multi_label", {"type": "yolov8_detection", "conf_threshold": 0.7, "multi_label": True},
        {"output0": v8}, output_blob="output0", ours={"type": "yolo_v8", "threshold": 0.7, "multi_label": True})

    # Mask R-CNN, DetectionOutput rows normalized to the padded input + raw masks [N, classes, 14, 14]
    mrows = r4(np.concatenate([np.zeros((4, 1)), np.array([[1], [3], [2], [1]]), rnd(20).rand(4, 1),
                               rnd(21).rand(4, 2) * 0.5, rnd(22).rand(4, 2) * 0.5 + 0.4], axis=1))
    mrows = np.concatenate([mrows, [[-1, 0, 0, 0, 0, 0, 0]]])
    masks = r4(rnd(23).rand(5, 3, 14, 14))
    add("mask_rcnn_detection_out", {"type": "mask_rcnn", "detection_out": "det", "raw_masks_out": "masks"},
        {"det": mrows, "masks": masks}, meta_geometry="fit_pad_rb")
    # PyTorch-style: boxes [N, 4] in input pixels, scores, labels (0 = no detection), masks [N, classes, 14, 14]
    pboxes = r4(np.concatenate([rnd(24).rand(5, 2) * 20, rnd(25).rand(5, 2) * 12 + 20], axis=1))
    add("mask_rcnn_pytorch", {"type": "mask_rcnn", "boxes_out": "boxes", "scores_out": "scores",
                              "classes_out": "labels", "raw_masks_out": "masks"},
        {"boxes": pboxes, "scores": r4(rnd(26).rand(5)), "labels": np.array([1, 2, 1, 3, 0], dtype=np.int64),
         "masks": r4(rnd(27).rand(5, 4, 14, 14))}, meta_geometry="resize")
    # boxes [N, 5] with the score last, no classes: rows with a positive coordinate sum, one mask per box
    qboxes = r4(np.concatenate([rnd(28).rand(4, 2) * 20, rnd(29).rand(4, 2) * 12 + 20, rnd(35).rand(4, 1)], axis=1))
    qboxes[2, :4] = 0.0
    add("mask_rcnn_pytorch_rows", {"type": "mask_rcnn", "boxes_out": "boxes", "raw_masks_out": "masks"},
        {"boxes": qboxes, "masks": r4(rnd(36).rand(4, 1, 14, 14))}, meta_geometry="resize_greater")
    return cases


# --- postprocessing -------------------------------------------------------------------------------------

def run_post(config: dict, annotation: dict | None, prediction: dict, meta: dict):
    post = Postprocessor.provide(config["type"], config, "post")
    anns = [ac_annotation(unnull(annotation), meta["image_size"])] if annotation is not None else [None]
    preds = [ac_prediction(unnull(prediction))]
    anns, preds = post.process(anns, preds, meta)
    return (as_record(anns[0]) if annotation is not None else None), as_record(preds[0])


def post_cases() -> list:
    cases = []

    def add(name, config, annotation, prediction, geometry=None, image_size=(60, 80, 3)):
        meta = geometry_meta(geometry) if geometry else {}
        meta["image_size"] = tuple(image_of(geometry).shape) if geometry else tuple(image_size)
        ann, pred = run_post(config, annotation, prediction, meta)
        cases.append({"name": name, "config": config, "geometry": geometry, "image_size": list(meta["image_size"]),
                      "annotation": annotation, "prediction": prediction,
                      "expected": {"annotation": ann, "prediction": pred}})

    lab, sc, bx = random_boxes(30, 40, 80, 60, special=True)
    pred = record_in(lab, bx, sc, difficult=[5])
    alab, _, abx = random_boxes(31, 12, 80, 60, special=False)
    abx[4, 2] = abx[4, 0] - 1.0  # an empty annotation box
    ann = record_in(alab, abx, difficult=[1])

    nan_free = record_in(lab[np.arange(40) != 3], bx[np.arange(40) != 3], sc[np.arange(40) != 3])
    add("nms_default", {"type": "nms"}, None, nan_free)
    add("nms_no_boundaries_topk", {"type": "nms", "overlap": 0.3, "include_boundaries": False, "keep_top_k": 15},
        None, nan_free)
    add("nms_min_area", {"type": "nms", "overlap": 0.4, "use_min_area": True}, None, nan_free)
    add("nms_with_nan", {"type": "nms", "overlap": 0.45}, None, pred)
    add("class_aware_nms", {"type": "class_aware_nms", "overlap": 0.3}, None, nan_free)
    add("diou_nms", {"type": "diou_nms", "overlap": 0.3}, None, nan_free)
    # (AC 2023.3 crashes on diou_nms keep_top_k: it reads it as a float slice bound)
    add("diou_nms_no_boundaries", {"type": "diou_nms", "overlap": 0.5, "include_boundaries": False}, None, nan_free)

    add("filter_mark", {"type": "filter", "apply_to": "all", "height_range": "5, 20", "min_confidence": 0.3,
                        "is_empty": True}, ann, pred)
    add("filter_remove_in_order", {"type": "filter", "apply_to": "all", "remove_filtered": True, "labels": [1],
                                   "width_range": [4, 0], "aspect_ratio": "0.5, 2.0", "invalid_boxes": True}, ann, pred)
    add("filter_area_ratio_annotation", {"type": "filter", "apply_to": "annotation", "area_ratio": "0.1, 0.4",
                                         "remove_filtered": True}, ann, pred)
    add("filter_top_k_prediction", {"type": "filter", "apply_to": "prediction", "top_k": 12, "area_range": "0, 10",
                                    "min_visibility": "visible"}, ann, nan_free)
    add("filter_height_min_only", {"type": "filter", "apply_to": "prediction", "height_range": 12}, ann, pred)

    add("clip_boxes_image", {"type": "clip_boxes", "apply_to": "all"}, ann, pred)
    add("clip_boxes_dst", {"type": "clip_boxes", "apply_to": "prediction", "dst_width": 50, "size": 30}, ann, pred)
    add("clip_boxes_height_only", {"type": "clip_boxes", "apply_to": "annotation", "dst_height": 20}, ann, pred)
    norm = record_in(lab, r4(rnd(32).rand(40, 4) * 1.4 - 0.2), sc)
    add("clip_boxes_normalized", {"type": "clip_boxes", "apply_to": "prediction", "boxes_normalized": True},
        None, norm)

    for policy in ("nearest", "nearest_to_zero", "lower", "greater"):
        add(f"cast_to_int_{policy}", {"type": "cast_to_int", "round_policy": policy}, ann,
            record_in(lab, r4(bx * 1.37 - 7.5), sc))
    add("shift_labels", {"type": "shift_labels", "offset": -1}, ann, nan_free)

    unit = record_in(lab[:10], r4(rnd(33).rand(10, 4)), sc[:10])
    pix = record_in(lab[:10], r4(rnd(34).rand(10, 4) * 30), sc[:10])
    add("resize_prediction_boxes", {"type": "resize_prediction_boxes"}, ann, unit, geometry="resize")
    add("resize_prediction_boxes_rescale", {"type": "resize_prediction_boxes", "rescale": True}, ann, pix,
        geometry="resize_greater")
    add("resize_prediction_boxes_rescale_no_resize", {"type": "resize_prediction_boxes", "rescale": True}, ann, pix,
        geometry="pad_center")
    add("resize_prediction_boxes_uncrop", {"type": "resize_prediction_boxes", "uncrop": True}, ann, unit,
        geometry="resize_crop")
    add("resize_prediction_boxes_unpadding", {"type": "resize_prediction_boxes", "unpadding": True}, ann, unit,
        geometry="pad_center")
    add("resize_prediction_boxes_rescale_unpadding", {"type": "resize_prediction_boxes", "rescale": True,
                                                      "unpadding": True}, ann, pix, geometry="fit_pad_rb")
    add("frcnn_resize", {"type": "faster_rcnn_postprocessing_resize"}, ann, unit, geometry="resize")
    add("frcnn_resize_padding", {"type": "faster_rcnn_postprocessing_resize"}, ann, unit, geometry="fit_pad_rb")
    add("frcnn_rescale", {"type": "faster_rcnn_postprocessing_resize", "rescale": True}, ann, pix,
        geometry="frcnn_pad_stride")
    return cases


def main() -> None:
    if "openvino.tools.accuracy_checker" not in sys.modules:
        raise SystemExit("run with the Accuracy Checker environment")
    from importlib.metadata import version

    from openvino.tools.accuracy_checker import __version__ as ac_version
    adapters = adapter_cases()
    post = post_cases()
    for name in GEOMETRY:
        geometry_meta(name)
    doc = {"command": COMMAND, "openvino_dev": version("openvino-dev"), "accuracy_checker": ac_version,
           "numpy": np.__version__,
           "note": "inputs rounded to 4 decimals; images from numpy.random.RandomState(seed).randint(0, 256, "
                   "size=image_shape).astype(uint8)",
           "geometry": GEOMETRY_RESULTS, "adapters": adapters, "postprocessing": post}
    OUT.write_text(json.dumps(doc, separators=(",", ":")))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes): {len(adapters)} adapter, {len(post)} postprocessing, "
          f"{len(GEOMETRY_RESULTS)} geometry cases")


if __name__ == "__main__":
    main()
