"""Generate the semantic-segmentation reference fixtures from the reference Accuracy Checker.

Run ONLY with the reference venv (openvino-dev 2023.3.0, numpy 1.26, Pillow), from the project root:

    /work/ac-ref/venv/bin/python tests/data/ac_reference/make_segmentation_reference.py

It writes, next to this file:

* ``segmentation_cases.json``: the inputs, made here with seeded NumPy generators: metric cases
  (label map, ``use_argmax``, ``ignore_label``, per-image ground-truth and prediction masks),
  adapter cases (raw outputs and the model input shape), ``resize_segmentation_mask`` and
  ``encode_segmentation_mask`` cases, and mask files written by Pillow (base64) for the loaders.
* ``segmentation_expected.json``: what Accuracy Checker computes on them: for each metric the
  dataset value (``np.mean`` of the result vector, POT's reduction) and each image's ``update``
  value and its ``np.nanmean`` (POT's per-sample value); adapter predictions; resized and encoded
  masks; the arrays each mask loader gives.

The project's tests read both files and never import Accuracy Checker.
"""
from __future__ import annotations

import base64
import io
import json
import math
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from openvino.tools.accuracy_checker.adapters.segmentation import SegmentationAdapter, SegmentationOneClassAdapter
from openvino.tools.accuracy_checker.metrics.semantic_segmentation import (SegmentationAccuracy, SegmentationIOU,
                                                                          SegmentationMeanAccuracy)
from openvino.tools.accuracy_checker.postprocessor.encode_segmentation_mask import EncodeSegMask
from openvino.tools.accuracy_checker.postprocessor.resize_segmentation_mask import ResizeSegmentationMask
from openvino.tools.accuracy_checker.representation import SegmentationAnnotation, SegmentationPrediction
from openvino.tools.accuracy_checker.representation.segmentation_representation import GTMaskLoader

HERE = Path(__file__).resolve().parent
COMMAND = "/work/ac-ref/venv/bin/python tests/data/ac_reference/make_segmentation_reference.py"
METRICS = {"mean_iou": SegmentationIOU, "mean_accuracy": SegmentationMeanAccuracy,
           "segmentation_accuracy": SegmentationAccuracy}


def nums(value):
    """JSON-safe nested lists (NaN -> None)."""
    arr = np.asarray(value)
    if arr.dtype.kind == "f":
        return [None if math.isnan(v) else float(v) for v in arr.ravel()] if arr.ndim == 1 else \
            [nums(row) for row in arr] if arr.ndim > 1 else (None if math.isnan(float(arr)) else float(arr))
    return arr.tolist()


# --- metric cases ---------------------------------------------------------------------------------

def labels(n):
    return {str(i): f"class{i}" for i in range(n)}


def scores(rng, c, h, w, spread=4.0):
    """Class scores rounded to 3 decimals (short in JSON); every user casts them to float32."""
    return np.round(rng.normal(0.0, spread, (c, h, w)), 3)


def metric_cases():
    cases = []

    def add(name, label_map, images, use_argmax, ignore_label=None):
        cases.append({"name": name, "label_map": label_map, "use_argmax": use_argmax, "ignore_label": ignore_label,
                      "images": [{"gt": np.asarray(g).tolist(), "pred": np.asarray(p).tolist()} for g, p in images]})

    rng = np.random.default_rng(20231)
    add("random_3cls_scores", labels(3),
        [(rng.integers(0, 3, (8, 9)), scores(rng, 3, 8, 9)) for _ in range(3)], True)
    rng = np.random.default_rng(20232)
    add("random_5cls_ids", labels(5),
        [(rng.integers(0, 5, (7, 6)), rng.integers(0, 5, (7, 6))) for _ in range(4)], False)
    rng = np.random.default_rng(20233)
    add("class_absent_everywhere", labels(4),
        [(rng.integers(0, 3, (6, 6)), rng.integers(0, 3, (6, 6))) for _ in range(3)], False)
    rng = np.random.default_rng(20234)
    add("class_only_predicted", labels(4),
        [(rng.integers(0, 3, (6, 7)), rng.integers(0, 4, (6, 7))) for _ in range(3)], False)
    rng = np.random.default_rng(20235)
    add("ignore_label_camvid_like", labels(12),
        [(rng.integers(0, 12, (10, 10)), rng.integers(0, 12, (10, 10))) for _ in range(3)], False, 11)
    rng = np.random.default_rng(20236)
    add("ignore_label_first_class", labels(5),
        [(rng.integers(0, 5, (8, 8)), rng.integers(0, 5, (8, 8))) for _ in range(3)], False, 0)
    rng = np.random.default_rng(20237)
    add("ignore_label_middle_scores", labels(4),
        [(rng.integers(0, 4, (7, 7)), scores(rng, 4, 7, 7)) for _ in range(3)], True, 2)
    rng = np.random.default_rng(20238)
    imgs = []
    for _ in range(3):
        gt = rng.integers(0, 21, (12, 12))
        gt[0, :] = gt[-1, :] = gt[:, 0] = gt[:, -1] = 255
        imgs.append((gt, rng.integers(0, 21, (12, 12))))
    add("voc_like_255_border", labels(21), imgs, False)
    rng = np.random.default_rng(20239)
    imgs = []
    for _ in range(2):
        pred = rng.integers(-1, 6, (6, 6))
        imgs.append((rng.integers(0, 4, (6, 6)), pred))
    add("pred_ids_out_of_range", labels(4), imgs, False)
    rng = np.random.default_rng(20240)
    add("single_image_scores", labels(6), [(rng.integers(0, 6, (9, 11)), scores(rng, 6, 9, 11))], True)
    rng = np.random.default_rng(20241)
    add("single_image_ids", labels(3), [(rng.integers(0, 3, (5, 5)), rng.integers(0, 3, (5, 5)))], False)
    rng = np.random.default_rng(20242)
    imgs = [(np.full((5, 5), 255), rng.integers(0, 3, (5, 5))),
            (rng.integers(0, 3, (5, 5)), rng.integers(0, 3, (5, 5)))]
    add("image_all_ignored_pixels", labels(3), imgs, False)
    rng = np.random.default_rng(20243)
    imgs = []
    for _ in range(2):
        s = rng.integers(0, 3, (3, 6, 6)).astype(np.float64)  # many ties: argmax takes the first
        imgs.append((rng.integers(0, 3, (6, 6)), s))
    add("argmax_ties", labels(3), imgs, True)
    rng = np.random.default_rng(20244)
    gts = [rng.integers(0, 4, (6, 8)) for _ in range(3)]
    add("perfect", labels(4), [(g, g) for g in gts], False)
    add("all_wrong", labels(4), [(g, (g + 1) % 4) for g in gts], False)
    rng = np.random.default_rng(20245)
    add("voc_21_scores", labels(21), [(rng.integers(0, 21, (12, 12)), scores(rng, 21, 12, 12)) for _ in range(2)],
        True)
    rng = np.random.default_rng(20246)
    imgs = []
    for _ in range(3):
        gt = rng.integers(0, 20, (10, 12))
        gt[rng.random((10, 12)) < 0.1] = 255
        imgs.append((gt, rng.integers(0, 20, (10, 12))))
    add("cityscapes_like_ignore_19", labels(20), imgs, False, 19)
    rng = np.random.default_rng(20247)
    odd_map = {"0": "a", "1": "b", "2": "c", "-1": "plate"}
    add("label_map_with_negative_key_ignore_3", odd_map,
        [(rng.integers(0, 4, (6, 6)), rng.integers(0, 4, (6, 6))) for _ in range(3)], False, 3)
    rng = np.random.default_rng(20248)
    add("label_map_with_negative_key_ignore_1", odd_map,
        [(rng.integers(0, 4, (6, 6)), rng.integers(0, 4, (6, 6))) for _ in range(3)], False, 1)
    rng = np.random.default_rng(20249)
    imgs = []
    for _ in range(4):
        gt = np.zeros((12, 16), np.int64)
        y, x = rng.integers(0, 8), rng.integers(0, 10)
        gt[y:y + 3, x:x + 6] = 1
        pred = np.zeros_like(gt)
        pred[y:y + 3, x + 1:x + 7] = 1
        imgs.append((gt, pred))
    imgs.append((np.zeros((12, 16), np.int64), np.zeros((12, 16), np.int64)))  # text-free image
    add("binary_text_like", {"0": "background", "1": "text"}, imgs, False)
    rng = np.random.default_rng(20250)
    add("ignore_last_class_scores", labels(5),
        [(rng.integers(0, 5, (8, 6)), scores(rng, 5, 8, 6)) for _ in range(3)], True, 4)
    rng = np.random.default_rng(20251)
    add("negative_logits", labels(3),
        [(rng.integers(0, 3, (7, 5)), scores(rng, 3, 7, 5) - 20.0) for _ in range(2)], True)
    rng = np.random.default_rng(20252)
    imgs = [(rng.integers(0, 2, (4, 4)), rng.integers(0, 2, (4, 4))) for _ in range(2)]
    imgs.append((np.full((4, 4), 255), np.full((4, 4), 3)))
    add("ignore_label_with_uncounted_image", labels(3), imgs, False, 2)
    return cases


class _Dataset:
    def __init__(self, label_map):
        self.labels = label_map
        self.metadata = {"label_map": label_map}


def run_metric(kind, case):
    label_map = {int(k): v for k, v in case["label_map"].items()}
    config = {"type": kind, "use_argmax": case["use_argmax"]}
    if case["ignore_label"] is not None:
        config["ignore_label"] = case["ignore_label"]
    metric = METRICS[kind](config, _Dataset(label_map), name=kind, state={})
    per_image = []
    anns, preds = [], []
    for k, image in enumerate(case["images"]):
        ann = SegmentationAnnotation(f"img{k}", None)
        ann.mask = np.asarray(image["gt"], dtype=np.uint8 if np.min(image["gt"]) >= 0 else np.int64)
        mask = np.asarray(image["pred"])
        pred = SegmentationPrediction(f"img{k}", mask.astype(np.float32) if case["use_argmax"] else mask)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = metric.update(ann, pred)
            mean = float(np.nanmean(value)) if np.size(value) else math.nan
        per_image.append({"update": nums(np.asarray(value, dtype=np.float64)), "nanmean": nums(mean)})
        anns.append(ann)
        preds.append(pred)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = metric.evaluate(anns, preds)
        value = float(np.mean(result)) if np.size(result) else math.nan
    return {"value": nums(value), "result": nums(np.asarray(result, dtype=np.float64)), "per_image": per_image}


# --- adapter cases --------------------------------------------------------------------------------

def adapter_cases():
    rng = np.random.default_rng(777)
    out = []

    def add(name, adapter, params, raw, input_shape):
        raw = np.asarray(raw)
        out.append({"name": name, "adapter": adapter, "params": params, "raw": raw.tolist(),
                    "dtype": "float32" if raw.dtype.kind == "f" else str(raw.dtype), "input_shape": list(input_shape)})

    add("nchw_scores", "segmentation", {}, scores(rng, 4, 5, 6)[None], (1, 3, 5, 6))
    add("nchw_argmax", "segmentation", {"make_argmax": True}, scores(rng, 4, 5, 6)[None], (1, 3, 5, 6))
    add("nhwc_scores", "segmentation", {}, scores(rng, 4, 5, 6).transpose(1, 2, 0)[None], (1, 5, 6, 3))
    add("nhwc_argmax", "segmentation", {"make_argmax": True}, scores(rng, 4, 5, 6).transpose(1, 2, 0)[None],
        (1, 5, 6, 3))
    add("flat_hw_c_argmax", "segmentation", {"make_argmax": True}, scores(rng, 3, 20, 1)[:, :, 0].T[None],
        (1, 3, 4, 5))
    add("flat_hw_c_scores", "segmentation", {}, scores(rng, 3, 20, 1)[:, :, 0].T[None], (1, 3, 4, 5))
    add("ids_output", "segmentation", {}, rng.integers(0, 5, (1, 4, 6)).astype(np.int32), (1, 3, 4, 6))
    add("no_batch_axis_scores", "segmentation", {}, scores(rng, 3, 4, 4), (1, 3, 4, 4))
    prob = np.round(rng.random((1, 1, 6, 7)), 3)
    prob[0, 0, 0, :3] = 0.5  # on the threshold
    add("one_class_default", "segmentation_one_class", {}, prob, (1, 3, 6, 7))
    add("one_class_threshold", "segmentation_one_class", {"threshold": 0.3}, prob, (1, 3, 6, 7))
    add("one_channel_scores", "segmentation", {}, prob, (1, 3, 6, 7))
    return out


def run_adapter(case):
    raw = np.asarray(case["raw"], dtype=case["dtype"])
    cls = SegmentationAdapter if case["adapter"] == "segmentation" else SegmentationOneClassAdapter
    adapter = cls(dict(type=case["adapter"], **case["params"]), output_blob="out")
    pred = adapter.process([{"out": raw}], ["img"], [{"input_shape": {"x": case["input_shape"]}}])[0]
    return {"mask": np.asarray(pred.mask).tolist(), "dtype": str(np.asarray(pred.mask).dtype)}


# --- postprocessing cases -------------------------------------------------------------------------

def resize_cases():
    rng = np.random.default_rng(4242)
    out = []

    def add(name, target, mask, image_size, params):
        mask = np.asarray(mask)
        out.append({"name": name, "target": target, "mask": mask.tolist(),
                    "dtype": "float32" if mask.dtype.kind == "f" else str(mask.dtype), "image_size": list(image_size),
                    "params": params})

    add("ids_up_to_image", "prediction", rng.integers(0, 21, (7, 9)), (17, 23, 3), {})
    add("ids_down_to_image", "prediction", rng.integers(0, 21, (19, 13)), (7, 6, 3), {})
    add("ids_dst_size", "prediction", rng.integers(0, 5, (8, 8)), (30, 30, 3), {"dst_width": 11, "dst_height": 5})
    add("ids_size", "prediction", rng.integers(0, 5, (8, 6)), (30, 30, 3), {"size": 13})
    add("scores_up", "prediction", scores(rng, 4, 6, 5), (13, 11, 3), {})
    add("scores_down", "prediction", scores(rng, 3, 16, 15), (7, 9, 3), {})
    flat = scores(rng, 2, 5, 5)
    flat[1] = 0.25  # a constant channel (scale 1)
    add("scores_constant_channel", "prediction", flat, (9, 10, 3), {})
    add("annotation_ids_with_255", "annotation", np.where(rng.random((9, 8)) < 0.2, 255,
                                                          rng.integers(0, 12, (9, 8))), (4, 21, 3), {})
    add("annotation_colour", "annotation", rng.integers(0, 256, (6, 7, 3)).astype(np.uint8), (11, 5, 3), {})
    add("prediction_large_ids", "prediction", rng.integers(0, 300, (5, 5)), (8, 8, 3), {})
    add("prediction_negative_ids", "prediction", rng.integers(-1, 19, (6, 6)), (10, 4, 3), {})
    add("probability_map", "prediction", np.round(rng.random((1, 8, 8)), 3), (20, 12, 3), {})
    add("same_size", "prediction", scores(rng, 2, 6, 6), (6, 6, 3), {})
    return out


def run_resize(case):
    params = dict(type="resize_segmentation_mask", apply_to=case["target"], **case["params"])
    post = ResizeSegmentationMask(params, "resize", meta={})
    mask = np.asarray(case["mask"], dtype=case["dtype"])
    meta = {"image_size": [tuple(case["image_size"])]}
    ann = SegmentationAnnotation("img", None)
    ann.metadata = meta
    pred = SegmentationPrediction("img", None)
    if case["target"] == "annotation":
        ann.mask = mask
        pred.mask = np.zeros((1, 1), np.int64)
    else:
        ann.mask = np.zeros((1, 1), np.uint8)
        pred.mask = mask
    post.process([ann], [pred], {"image_size": tuple(case["image_size"])})
    result = ann.mask if case["target"] == "annotation" else pred.mask
    return {"mask": np.asarray(result).tolist(), "dtype": str(np.asarray(result).dtype)}


VOC_COLORS = [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128), (0, 128, 128),
              (128, 128, 128), (64, 0, 0), (192, 0, 0), (64, 128, 0), (192, 128, 0), (64, 0, 128), (192, 0, 128),
              (64, 128, 128), (192, 128, 128), (0, 64, 0), (128, 64, 0), (0, 192, 0), (128, 192, 0), (0, 64, 128)]
CITY_FULL_PRED_TO_GT = {0: 7, 1: 8, 2: 11, 3: 12, 4: 13, 5: 17, 6: 19, 7: 20, 8: 21, 9: 22, 10: 23, 11: 24, 12: 25,
                        13: 26, 14: 27, 15: 28, 16: 31, 17: 32, 18: 33}


def encode_cases():
    rng = np.random.default_rng(9090)
    palette = np.asarray(VOC_COLORS + [(224, 224, 192), (10, 20, 30)], np.uint8)
    colour = palette[rng.integers(0, len(palette), (7, 8))]
    return [
        {"name": "voc_colours", "target": "annotation", "mask": colour.tolist(), "dtype": "uint8",
         "segmentation_colors": [list(c) for c in VOC_COLORS]},
        {"name": "repeated_colours", "target": "annotation",
         "mask": np.asarray([[(0, 0, 0), (5, 5, 5)], [(5, 5, 5), (1, 1, 1)]], np.uint8).tolist(), "dtype": "uint8",
         "segmentation_colors": [[0, 0, 0], [5, 5, 5], [0, 0, 0], [5, 5, 5], [9, 9, 9]]},
        {"name": "prediction_ids_full_map", "target": "prediction",
         "mask": rng.integers(0, 21, (6, 6)).tolist(), "dtype": "int64",
         "prediction_to_gt_labels": {str(k): v for k, v in CITY_FULL_PRED_TO_GT.items()}},
        {"name": "prediction_scores_full_map", "target": "prediction",
         "mask": scores(rng, 19, 4, 5).tolist(), "dtype": "float32",
         "prediction_to_gt_labels": {str(k): v for k, v in CITY_FULL_PRED_TO_GT.items()}},
    ]


def run_encode(case):
    meta = {}
    if "segmentation_colors" in case:
        meta["segmentation_colors"] = [tuple(c) for c in case["segmentation_colors"]]
    if "prediction_to_gt_labels" in case:
        meta["prediction_to_gt_labels"] = {int(k): v for k, v in case["prediction_to_gt_labels"].items()}
    post = EncodeSegMask({"type": "encode_segmentation_mask", "apply_to": case["target"]}, "encode", meta=meta)
    mask = np.asarray(case["mask"], dtype=case["dtype"])
    ann, pred = SegmentationAnnotation("img", None), SegmentationPrediction("img", None)
    ann.metadata = {"image_size": [(1, 1, 3)]}
    if case["target"] == "annotation":
        ann.mask, pred.mask = mask, np.zeros((1, 1), np.int64)
    else:
        ann.mask, pred.mask = np.zeros((1, 1, 3), np.uint8), mask
    post.process([ann], [pred], {"image_size": (1, 1, 3)})
    result = ann.mask if case["target"] == "annotation" else pred.mask
    return {"mask": np.asarray(result).tolist(), "dtype": str(np.asarray(result).dtype)}


# --- mask loader cases (files written by Pillow) -----------------------------------------------------

def mask_files():
    rng = np.random.default_rng(5150)
    files = []

    def add(name, image, **save):
        buf = io.BytesIO()
        image.save(buf, format="PNG", **save)
        files.append({"name": name, "png_base64": base64.b64encode(buf.getvalue()).decode("ascii")})

    ids = rng.integers(0, 21, (9, 13)).astype(np.uint8)
    ids[0, :] = 255
    pal = Image.fromarray(ids, mode="P")
    flat = [v for c in VOC_COLORS for v in c] + [0, 0, 0] * (255 - len(VOC_COLORS)) + [224, 224, 192]
    pal.putpalette(flat)
    add("palette_8bit_voc", pal)
    add("palette_8bit_optimized", pal, optimize=True)
    trans = Image.fromarray(rng.integers(0, 4, (5, 6)).astype(np.uint8), mode="P")
    trans.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0, 0, 0] * 252)
    trans.info["transparency"] = 0
    add("palette_transparency", trans, transparency=0)
    small = Image.fromarray(rng.integers(0, 3, (7, 11)).astype(np.uint8), mode="P")
    small.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0])
    add("palette_4bit", small, bits=4)
    add("palette_2bit", small, bits=2)
    add("grey_L", Image.fromarray(rng.integers(0, 20, (6, 9)).astype(np.uint8), mode="L"))
    add("bilevel_1", Image.fromarray(rng.integers(0, 2, (5, 17)).astype(bool)))
    add("rgb", Image.fromarray(rng.integers(0, 256, (4, 5, 3)).astype(np.uint8), mode="RGB"))
    add("grey_16bit", Image.fromarray(rng.integers(0, 1000, (4, 6)).astype(np.uint16)))
    return files


LOADERS = {"pillow": GTMaskLoader.PILLOW, "scipy": GTMaskLoader.SCIPY,
           "pillow_convert_to_rgb": GTMaskLoader.PILLOW_CONVERT_TO_RGB, "opencv": GTMaskLoader.OPENCV,
           "opencv_gray": GTMaskLoader.OPENCV_GRAY, "opencv_unchanged": GTMaskLoader.OPENCV_UNCHANGED}


def run_loaders(files):
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for entry in files:
            path = Path(tmp) / f"{entry['name']}.png"
            path.write_bytes(base64.b64decode(entry["png_base64"]))
            for loader, enum in LOADERS.items():
                ann = SegmentationAnnotation(entry["name"], path.name, mask_loader=enum)
                ann.metadata = {"data_source": Path(tmp)}
                mask = ann.mask
                out[f"{entry['name']}/{loader}"] = {"mask": np.asarray(mask).tolist(), "shape": list(mask.shape)}
    return out


def main():
    cases = {
        "command": COMMAND,
        "note": "inputs of the semantic segmentation reference; generated (seeded) by make_segmentation_reference.py",
        "metrics": metric_cases(),
        "adapters": adapter_cases(),
        "resize": resize_cases(),
        "encode": encode_cases(),
        "mask_files": mask_files(),
    }
    expected = {
        "command": COMMAND,
        "versions": {"python": sys.version.split()[0], "numpy": np.__version__,
                     "pillow": Image.__version__, "openvino-dev": "2023.3.0"},
        "metrics": {c["name"]: {kind: run_metric(kind, c) for kind in METRICS} for c in cases["metrics"]},
        "adapters": {c["name"]: run_adapter(c) for c in cases["adapters"]},
        "resize": {c["name"]: run_resize(c) for c in cases["resize"]},
        "encode": {c["name"]: run_encode(c) for c in cases["encode"]},
        "mask_files": run_loaders(cases["mask_files"]),
    }
    (HERE / "segmentation_cases.json").write_text(json.dumps(cases, separators=(",", ":")) + "\n")
    (HERE / "segmentation_expected.json").write_text(json.dumps(expected, separators=(",", ":")) + "\n")
    print(f"{len(cases['metrics'])} metric cases, {len(cases['adapters'])} adapter cases, "
          f"{len(cases['resize'])} resize cases, {len(cases['encode'])} encode cases, "
          f"{len(cases['mask_files'])} mask files")


if __name__ == "__main__":
    main()
