"""Build the detection metric cases and their reference values from Accuracy Checker 2023.3.

Runs ONLY in the reference environment (openvino-dev 2023.3.0 + pycocotools), never in the project's:

    /work/ac-ref/venv/bin/python tests/data/ac_reference/make_detection_reference.py

Writes, next to this script:

* ``detection_cases.json``: the cases (label map, background label, images with ground-truth boxes,
  labels, difficult and iscrowd flags, COCO RLE masks, and predicted boxes, labels, scores, difficult
  flags, masks), built by a seeded generator plus hand-written edge cases, and a few cases scored
  against an original COCO instances JSON (stored in the case).
* ``detection_expected.json``: per case and metric config, Accuracy Checker's dataset value
  (the mean of the reported vector, as its presenter and POT show it), the reported vector, and the
  per-image ``update`` vectors (NaN as null), or the error Accuracy Checker raised.

The cases are plain data; Accuracy Checker's metric classes are only called, never copied.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import tempfile
import types
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils

HERE = Path(__file__).resolve().parent
COMMAND = "/work/ac-ref/venv/bin/python tests/data/ac_reference/make_detection_reference.py"

VOC_MAP = {0: "background", 1: "cat", 2: "dog", 3: "bird"}
COCO_MAP = {0: "person", 1: "car", 2: "bike"}

CONFIGS = {
    "map_default": {"type": "map"},
    "map_11point": {"type": "map", "integral": "11point"},
    "map_no_boundaries": {"type": "map", "include_boundaries": False},
    "map_11point_no_boundaries": {"type": "map", "integral": "11point", "include_boundaries": False},
    "map_keep_difficult": {"type": "map", "ignore_difficult": False},
    "map_multi_ignored": {"type": "map", "allow_multiple_matches_per_ignored": True},
    "map_multi_ignored_no_boundaries": {"type": "map", "allow_multiple_matches_per_ignored": True,
                                        "include_boundaries": False, "integral": "11point"},
    "map_distinct_conf": {"type": "map", "distinct_conf": True},
    "map_filtered_tp": {"type": "map", "use_filtered_tp": True},
    "map_ioa": {"type": "map", "overlap_method": "ioa"},
    "map_overlap_0.7": {"type": "map", "overlap_threshold": 0.7, "include_boundaries": False},
    "map_overlap_0": {"type": "map", "overlap_threshold": 0.0, "include_boundaries": False},
    "coco_default": {"type": "coco_precision"},
    "coco_100_0.5": {"type": "coco_precision", "max_detections": 100, "threshold": "0.5"},
    "coco_0.75": {"type": "coco_precision", "threshold": 0.75},
    "coco_range_list_5": {"type": "coco_precision", "threshold": [0.5, 0.55, 0.6], "max_detections": 5},
    "coco_orig_default": {"type": "coco_orig_precision"},
    "coco_orig_no_boundaries": {"type": "coco_orig_precision", "include_boundaries": False},
    "coco_orig_0.5": {"type": "coco_orig_precision", "threshold": "0.5"},
    "coco_orig_segm": {"type": "coco_orig_segm_precision"},
    "coco_segm_default": {"type": "coco_segm_precision"},
}
SEGM_TYPES = {"coco_orig_segm_precision", "coco_segm_precision"}


# --- case construction ----------------------------------------------------------------------------

def ellipse_rle(box, h, w):
    """COCO RLE (counts as str) of the ellipse inscribed in ``box``, rasterised on an h x w image."""
    x0, y0, x1, y1 = box
    yy, xx = np.mgrid[0:h, 0:w]
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    rx, ry = (x1 - x0) / 2.0, (y1 - y0) / 2.0
    if rx <= 0 or ry <= 0:
        mask = np.zeros((h, w), np.uint8)
    else:
        mask = ((((xx + 0.5 - cx) / rx) ** 2 + ((yy + 0.5 - cy) / ry) ** 2) <= 1.0).astype(np.uint8)
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"size": [int(h), int(w)], "counts": rle["counts"].decode("utf-8")}


def image(identifier, size, gt_boxes=(), gt_labels=(), pred_boxes=(), pred_labels=(), scores=(),
          difficult=None, iscrowd=None, pred_difficult=None):
    h, w = size
    gt_boxes = [[float(v) for v in b] for b in gt_boxes]
    pred_boxes = [[float(v) for v in b] for b in pred_boxes]
    return {
        "identifier": identifier,
        "size": [int(h), int(w)],
        "gt": {
            "boxes": gt_boxes,
            "labels": [int(v) for v in gt_labels],
            "difficult": [bool(v) for v in (difficult or [False] * len(gt_boxes))],
            "iscrowd": [int(v) for v in (iscrowd or [0] * len(gt_boxes))],
            "masks": [ellipse_rle(b, h, w) for b in gt_boxes],
        },
        "pred": {
            "boxes": pred_boxes,
            "labels": [int(v) for v in pred_labels],
            "scores": [float(v) for v in scores],
            "difficult": [bool(v) for v in (pred_difficult or [False] * len(pred_boxes))],
            "masks": [ellipse_rle(b, h, w) for b in pred_boxes],
        },
    }


def coco_name(k):
    return f"COCO_val2014_{k:012d}.jpg"


def random_case(case_id, seed, *, label_map, background, n_images, integer=False, score_decimals=None,
                p_difficult=0.15, p_crowd=0.08, p_detect=0.75, max_gt=6, max_fp=3, p_pred_difficult=0.0,
                jitter=0.15, name_style="coco"):
    rng = np.random.default_rng(seed)
    classes = [k for k in label_map if k != background]
    images = []
    for i in range(n_images):
        h, w = (int(v) for v in rng.integers(60, 160, size=2))
        n_gt = int(rng.integers(0, max_gt + 1))
        gts, gl, diff, crowd = [], [], [], []
        for _ in range(n_gt):
            bw, bh = rng.uniform(6, w / 2), rng.uniform(6, h / 2)
            x0, y0 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            box = [x0, y0, x0 + bw, y0 + bh]
            if integer:
                box = [float(round(v)) for v in box]
            gts.append(box)
            gl.append(int(rng.choice(classes)))
            diff.append(bool(rng.random() < p_difficult))
            crowd.append(int(rng.random() < p_crowd))
        pbs, pls, sc, pdiff = [], [], [], []
        for box, label in zip(gts, gl):
            for _ in range(1 + int(rng.random() < 0.2)):  # sometimes a duplicate detection
                if rng.random() > p_detect:
                    continue
                bw, bh = box[2] - box[0], box[3] - box[1]
                noise = rng.normal(0, jitter, size=4) * np.array([bw, bh, bw, bh])
                pb = [box[0] + noise[0], box[1] + noise[1], box[2] + noise[2], box[3] + noise[3]]
                if integer:
                    pb = [float(round(v)) for v in pb]
                pbs.append(pb)
                pls.append(label if rng.random() < 0.9 else int(rng.choice(classes)))
                sc.append(rng.uniform(0.05, 1.0))
                pdiff.append(bool(rng.random() < p_pred_difficult))
        for _ in range(int(rng.integers(0, max_fp + 1))):
            bw, bh = rng.uniform(5, w / 3), rng.uniform(5, h / 3)
            x0, y0 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            pb = [x0, y0, x0 + bw, y0 + bh]
            if integer:
                pb = [float(round(v)) for v in pb]
            pbs.append(pb)
            pls.append(int(rng.choice(classes)))
            sc.append(rng.uniform(0.01, 0.6))
            pdiff.append(bool(rng.random() < p_pred_difficult))
        if score_decimals is not None:
            sc = [round(s, score_decimals) for s in sc]
        identifier = coco_name(seed * 1000 + i) if name_style == "coco" else f"img_{seed}_{i}.png"
        images.append(image(identifier, (h, w), gts, gl, pbs, pls, sc, diff, crowd, pdiff))
    return {"id": case_id, "description": f"seeded generator, seed {seed}", "label_map": label_map,
            "background_label": background, "images": images}


def edge_cases():
    cases = []

    def case(case_id, description, images, label_map=VOC_MAP, background=0):
        cases.append({"id": case_id, "description": description, "label_map": label_map,
                      "background_label": background, "images": images})

    case("no_detections", "ground truth in every image, no detection at all", [
        image(coco_name(1), (100, 100), [[10, 10, 40, 40], [50, 50, 90, 80]], [1, 2]),
        image(coco_name(2), (80, 120), [[0, 0, 30, 30]], [3]),
    ])
    case("image_without_gt", "one image has no ground truth but detections (false positives)", [
        image(coco_name(11), (100, 100), [[10, 10, 40, 40]], [1], [[11, 11, 40, 41]], [1], [0.9]),
        image(coco_name(12), (100, 100), [], [], [[5, 5, 30, 30], [40, 40, 60, 70]], [1, 2], [0.8, 0.3]),
        image(coco_name(13), (100, 100), [[20, 20, 60, 60]], [2], [[22, 20, 60, 58]], [2], [0.7]),
    ])
    case("class_never_predicted", "class 'bird' has ground truth but is never detected", [
        image(coco_name(21), (120, 120), [[10, 10, 50, 50], [60, 60, 100, 110]], [1, 3],
              [[12, 10, 50, 52]], [1], [0.95]),
        image(coco_name(22), (120, 120), [[30, 30, 70, 90]], [3], [[0, 0, 20, 20]], [2], [0.4]),
    ])
    case("class_predicted_not_in_gt", "'dog' is detected but absent from the ground truth", [
        image(coco_name(31), (100, 100), [[10, 10, 40, 40]], [1], [[10, 10, 40, 40], [50, 50, 80, 80]],
              [1, 2], [0.9, 0.95]),
        image(coco_name(32), (100, 100), [[60, 10, 90, 40]], [1], [[61, 10, 90, 41], [5, 5, 25, 25]],
              [1, 2], [0.6, 0.2]),
    ])
    case("crowd_boxes", "crowd ground truth with several detections inside", [
        image(coco_name(41), (150, 150), [[0, 0, 100, 100], [110, 110, 140, 140]], [1, 1],
              [[5, 5, 40, 40], [50, 50, 95, 95], [0, 0, 100, 100], [112, 110, 140, 141]], [1, 1, 1, 1],
              [0.9, 0.8, 0.7, 0.6], iscrowd=[1, 0]),
        image(coco_name(42), (150, 150), [[20, 20, 80, 80], [10, 10, 90, 90]], [2, 2],
              [[20, 20, 80, 80], [10, 10, 90, 90], [15, 15, 85, 85]], [2, 2, 2], [0.5, 0.9, 0.7],
              iscrowd=[0, 1]),
    ])
    case("difficult_boxes", "difficult ground truth hit once and twice; difficult-only class", [
        image(coco_name(51), (120, 120), [[10, 10, 50, 50], [60, 60, 100, 100]], [1, 1],
              [[10, 10, 50, 50], [61, 61, 100, 100], [60, 60, 99, 99], [62, 60, 100, 101]], [1, 1, 1, 1],
              [0.9, 0.8, 0.7, 0.3], difficult=[False, True]),
        image(coco_name(52), (120, 120), [[20, 20, 70, 70]], [2], [[20, 20, 70, 70], [22, 22, 70, 70]],
              [2, 2], [0.6, 0.5], difficult=[True]),
        image(coco_name(53), (120, 120), [[30, 30, 60, 60], [0, 0, 20, 20]], [3, 1],
              [[30, 30, 60, 60]], [3], [0.4], difficult=[True, False]),
    ])
    case("ties", "identical scores within and across images", [
        image(coco_name(61), (100, 100), [[10, 10, 40, 40], [50, 50, 90, 90]], [1, 1],
              [[10, 10, 40, 40], [0, 60, 20, 80], [50, 50, 90, 90], [52, 50, 90, 88], [70, 0, 95, 20]],
              [1, 1, 1, 1, 1], [0.5, 0.5, 0.5, 0.5, 0.5]),
        image(coco_name(62), (100, 100), [[30, 30, 70, 70]], [1],
              [[0, 0, 10, 10], [30, 30, 70, 70], [31, 30, 70, 71]], [1, 1, 1], [0.5, 0.5, 0.8]),
        image(coco_name(63), (100, 100), [[0, 0, 50, 50], [50, 0, 100, 50]], [2, 2],
              [[0, 0, 50, 50], [60, 60, 90, 90], [50, 0, 100, 50], [0, 50, 50, 100]], [2, 2, 2, 2],
              [0.7, 0.7, 0.7, 0.7]),
    ])
    case("iou_at_thresholds", "pairs at IoU exactly 0.5 / 0.55 / 0.75 (no +1) and touching boxes", [
        image(coco_name(71), (120, 120), [[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10]],
              [1, 1, 1, 1],
              [[0, 0, 10, 5], [20, 0, 40, 10], [40, 0, 50, 4.9], [70, 0, 80, 10]], [1, 1, 1, 1],
              [0.9, 0.8, 0.7, 0.6]),
        image(coco_name(72), (120, 120), [[0, 0, 100, 100], [0, 0, 20, 20]], [2, 3],
              [[0, 0, 100, 55], [0, 0, 100, 75], [0, 0, 20, 15], [0, 0, 20, 11]], [2, 2, 3, 3],
              [0.9, 0.8, 0.7, 0.6]),
        image(coco_name(73), (120, 120), [[10, 10, 19, 19], [30, 30, 39, 39]], [1, 1],
              [[10, 10, 19, 14], [30, 30, 39, 34.5]], [1, 1], [0.5, 0.4]),
    ])
    case("many_boxes", "more detections than max_detections (20 and 100)", [
        random_image_many(81, 150, 30), random_image_many(82, 25, 10), random_image_many(83, 105, 5),
    ], label_map=COCO_MAP, background=None)
    case("degenerate_boxes", "zero-area and inverted boxes in ground truth and detections", [
        image(coco_name(91), (100, 100), [[10, 10, 10, 30], [40, 40, 60, 60], [70, 70, 70, 70]], [1, 1, 2],
              [[10, 10, 10, 30], [40, 40, 60, 60], [70, 70, 70, 70], [50, 50, 45, 45]], [1, 1, 2, 1],
              [0.9, 0.8, 0.7, 0.6]),
        image(coco_name(92), (100, 100), [[20, 20, 20, 20]], [2], [[20, 20, 20, 20], [19, 19, 21, 21]],
              [2, 2], [0.5, 0.4]),
    ])
    case("duplicate_gt", "identical ground-truth boxes (equal best overlaps)", [
        image(coco_name(101), (100, 100), [[10, 10, 50, 50], [10, 10, 50, 50], [60, 60, 90, 90]], [1, 1, 1],
              [[11, 10, 50, 51], [10, 11, 51, 50], [12, 12, 50, 50], [60, 60, 90, 90]], [1, 1, 1, 1],
              [0.9, 0.8, 0.7, 0.6]),
        image(coco_name(102), (100, 100), [[10, 10, 50, 50], [10, 10, 50, 50]], [2, 2],
              [[10, 10, 50, 50], [10, 10, 50, 50], [10, 10, 50, 50]], [2, 2, 2], [0.5, 0.6, 0.4],
              difficult=[False, True]),
    ])
    case("perfect", "every detection equals its ground truth", [
        image(coco_name(111), (100, 100), [[10, 10, 40, 40], [50, 50, 90, 80]], [1, 2],
              [[10, 10, 40, 40], [50, 50, 90, 80]], [1, 2], [0.9, 0.8]),
        image(coco_name(112), (100, 100), [[5, 5, 95, 95]], [3], [[5, 5, 95, 95]], [3], [0.99]),
    ])
    case("predictions_only", "no ground truth anywhere, only detections", [
        image(coco_name(121), (100, 100), [], [], [[10, 10, 40, 40], [50, 50, 90, 80]], [1, 2], [0.9, 0.8]),
        image(coco_name(122), (100, 100), [], [], [[5, 5, 95, 95]], [1], [0.3]),
    ])
    case("all_empty", "no ground truth and no detection", [
        image(coco_name(131), (100, 100)), image(coco_name(132), (50, 60)),
    ])
    case("background_and_unknown_labels", "detections labelled background (0) and 7 (not in the label map)", [
        image(coco_name(141), (100, 100), [[10, 10, 40, 40], [50, 50, 90, 90]], [1, 2],
              [[10, 10, 40, 40], [50, 50, 90, 90], [50, 50, 90, 90], [10, 10, 40, 41]], [0, 2, 7, 1],
              [0.99, 0.9, 0.95, 0.5]),
        image(coco_name(142), (100, 100), [[0, 0, 30, 30]], [1], [[0, 0, 30, 30]], [7], [0.9]),
    ])
    case("difficult_predictions", "detections marked difficult (as 'filter' marks them)", [
        image(coco_name(151), (100, 100), [[10, 10, 40, 40], [50, 50, 90, 90]], [1, 1],
              [[10, 10, 40, 40], [50, 50, 90, 90], [52, 50, 90, 90], [0, 60, 20, 90]], [1, 1, 1, 1],
              [0.9, 0.8, 0.7, 0.6], pred_difficult=[True, False, False, True]),
        image(coco_name(152), (100, 100), [[10, 10, 40, 40]], [2], [[10, 10, 40, 40], [11, 10, 40, 40]],
              [2, 2], [0.4, 0.6], difficult=[True], pred_difficult=[False, True]),
        image(coco_name(153), (100, 100), [], [], [[10, 10, 40, 40]], [3], [0.9], pred_difficult=[True]),
    ])
    case("ioa_inside_ignored", "small detections inside a large difficult box", [
        image(coco_name(161), (200, 200), [[0, 0, 150, 150], [160, 160, 190, 190]], [1, 1],
              [[10, 10, 40, 40], [50, 50, 90, 90], [100, 100, 140, 140], [160, 160, 190, 190]], [1, 1, 1, 1],
              [0.9, 0.8, 0.7, 0.6], difficult=[True, False]),
        image(coco_name(162), (200, 200), [[0, 0, 100, 100], [20, 20, 60, 60]], [2, 2],
              [[20, 20, 60, 60], [25, 25, 55, 55], [0, 0, 100, 100]], [2, 2, 2], [0.9, 0.8, 0.7],
              difficult=[True, False]),
    ])
    case("single_image_no_background", "one image, label map without background", [
        image("img_7.png", (90, 90), [[5, 5, 45, 45], [50, 10, 80, 70], [10, 50, 40, 85]], [0, 1, 2],
              [[6, 5, 45, 44], [48, 10, 80, 72], [10, 52, 40, 85], [60, 60, 85, 85]], [0, 1, 1, 2],
              [0.8, 0.75, 0.6, 0.55]),
    ], label_map=COCO_MAP, background=None)
    return cases


def random_image_many(seed, n_pred, n_gt):
    rng = np.random.default_rng(seed)
    h = w = 200
    gts, gl = [], []
    for _ in range(n_gt):
        x0, y0 = rng.uniform(0, 170, size=2)
        gts.append([x0, y0, x0 + rng.uniform(8, 30), y0 + rng.uniform(8, 30)])
        gl.append(int(rng.integers(0, 3)))
    pbs, pls, sc = [], [], []
    for k in range(n_pred):
        if gts and rng.random() < 0.6:
            j = int(rng.integers(0, len(gts)))
            g = gts[j]
            noise = rng.normal(0, 2.0, size=4)
            pbs.append([g[0] + noise[0], g[1] + noise[1], g[2] + noise[2], g[3] + noise[3]])
            pls.append(gl[j] if k % 7 else 0)
        else:
            x0, y0 = rng.uniform(0, 170, size=2)
            pbs.append([x0, y0, x0 + rng.uniform(8, 30), y0 + rng.uniform(8, 30)])
            pls.append(int(rng.integers(0, 3)))
        sc.append(round(float(rng.uniform(0, 1)), 3))
    return image(coco_name(seed), (h, w), gts, gl, pbs, pls, sc)


def all_cases():
    cases = edge_cases()
    specs = [
        ("random_voc_a", 1, dict(label_map=VOC_MAP, background=0, n_images=12)),
        ("random_voc_int", 2, dict(label_map=VOC_MAP, background=0, n_images=15, integer=True)),
        ("random_voc_ties", 3, dict(label_map=VOC_MAP, background=0, n_images=12, score_decimals=1)),
        ("random_coco_a", 4, dict(label_map=COCO_MAP, background=None, n_images=10)),
        ("random_coco_int_ties", 5, dict(label_map=COCO_MAP, background=None, n_images=14, integer=True,
                                         score_decimals=1)),
        ("random_dense", 6, dict(label_map=VOC_MAP, background=0, n_images=6, max_gt=14, max_fp=8,
                                 p_detect=0.9)),
        ("random_hard", 7, dict(label_map=VOC_MAP, background=0, n_images=10, jitter=0.35,
                                p_difficult=0.3, p_crowd=0.2)),
        ("random_pred_difficult", 8, dict(label_map=VOC_MAP, background=0, n_images=10,
                                          p_pred_difficult=0.25, integer=True)),
        ("random_png_names", 9, dict(label_map=COCO_MAP, background=None, n_images=8, name_style="png")),
        ("random_sparse", 10, dict(label_map=VOC_MAP, background=0, n_images=16, max_gt=2, max_fp=1,
                                   p_detect=0.5)),
        ("random_many_dups", 11, dict(label_map=COCO_MAP, background=None, n_images=6, max_gt=10,
                                      p_detect=1.0, jitter=0.05, score_decimals=2)),
        ("random_voc_b", 12, dict(label_map=VOC_MAP, background=0, n_images=20, integer=True,
                                  p_difficult=0.25)),
    ]
    for case_id, seed, kwargs in specs:
        cases.append(random_case(case_id, seed, **kwargs))
    return cases


def original_coco_cases():
    """Cases scored against an original COCO instances JSON (stored in the case)."""
    out = []
    base = random_case("orig_source", 21, label_map=COCO_MAP, background=None, n_images=8)
    cat_ids = {0: 1, 1: 3, 2: 8}  # COCO-style sparse category ids

    def coco_json(images, cats):
        data = {"info": {}, "licenses": [], "images": [], "annotations": [], "categories": cats}
        for n, img in enumerate(images):
            data["images"].append({"id": 500 + n, "file_name": img["identifier"], "height": img["size"][0],
                                   "width": img["size"][1]})
            for box, label, crowd in zip(img["gt"]["boxes"], img["gt"]["labels"], img["gt"]["iscrowd"]):
                data["annotations"].append({
                    "id": len(data["annotations"]) + 1, "image_id": 500 + n, "category_id": cat_ids[label],
                    "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                    "area": (box[2] - box[0]) * (box[3] - box[1]), "iscrowd": crowd})
        # an image the predictions never cover (counts as misses), as the full val set would
        data["images"].append({"id": 999, "file_name": "COCO_val2014_000000999999.jpg", "height": 50,
                               "width": 50})
        data["annotations"].append({"id": len(data["annotations"]) + 1, "image_id": 999, "category_id": 1,
                                    "bbox": [1.0, 1.0, 20.0, 20.0], "area": 400.0, "iscrowd": 0})
        return data

    cats = [{"id": cat_ids[k], "name": v} for k, v in COCO_MAP.items()]
    out.append(dict(base, id="orig_plain", description="original JSON, no background",
                    original_coco=coco_json(base["images"], cats), has_background=False,
                    use_full_label_map=False))
    shifted = json.loads(json.dumps(base))
    for img in shifted["images"]:
        img["gt"]["labels"] = [v + 1 for v in img["gt"]["labels"]]
        img["pred"]["labels"] = [v + 1 for v in img["pred"]["labels"]]
    data_bg = coco_json(base["images"], cats)
    out.append(dict(shifted, id="orig_background", description="original JSON, has_background",
                    label_map={0: "background", 1: "person", 2: "car", 3: "bike"}, background_label=0,
                    original_coco=data_bg, has_background=True, use_full_label_map=False))
    full = json.loads(json.dumps(base))
    full_map = {k: f"class{k + 1}" for k in range(90)}
    full_cats = [{"id": k + 1, "name": f"class{k + 1}"} for k in range(90)]
    for img in full["images"]:
        img["gt"]["labels"] = [cat_ids[v] - 1 for v in img["gt"]["labels"]]
        img["pred"]["labels"] = [cat_ids[v] - 1 for v in img["pred"]["labels"]]
    data_full = coco_json(base["images"], full_cats)
    out.append(dict(full, id="orig_full_label_map", description="original JSON, use_full_label_map",
                    label_map=full_map, background_label=None, original_coco=data_full, has_background=False,
                    use_full_label_map=True))
    return out


# --- running Accuracy Checker ---------------------------------------------------------------------

def to_ac(case, segm):
    from openvino.tools.accuracy_checker.representation import (
        CoCoInstanceSegmentationAnnotation, CoCoInstanceSegmentationPrediction, DetectionAnnotation,
        DetectionPrediction)

    annotations, predictions = [], []
    for img in case["images"]:
        h, w = img["size"]
        gt, pr = img["gt"], img["pred"]
        gb = np.asarray(gt["boxes"], dtype=float).reshape(-1, 4)
        pb = np.asarray(pr["boxes"], dtype=float).reshape(-1, 4)
        gdiff = [i for i, d in enumerate(gt["difficult"]) if d]
        pdiff = [i for i, d in enumerate(pr["difficult"]) if d]
        if segm:
            gmasks = [{"size": m["size"], "counts": m["counts"].encode("utf-8")} for m in gt["masks"]]
            pmasks = [dict(m) for m in pr["masks"]]
            ann = CoCoInstanceSegmentationAnnotation(img["identifier"], gmasks, np.asarray(gt["labels"], int))
            pred = CoCoInstanceSegmentationPrediction(img["identifier"], pmasks, np.asarray(pr["labels"], int),
                                                      np.asarray(pr["scores"], float))
        else:
            ann = DetectionAnnotation(img["identifier"], gt["labels"], gb[:, 0], gb[:, 1], gb[:, 2], gb[:, 3])
            pred = DetectionPrediction(img["identifier"], pr["labels"], pr["scores"], pb[:, 0], pb[:, 1],
                                       pb[:, 2], pb[:, 3])
        ann.metadata["difficult_boxes"] = gdiff
        ann.metadata["iscrowd"] = list(gt["iscrowd"])
        ann.metadata["image_size"] = [(h, w, 3)]
        pred.metadata["difficult_boxes"] = pdiff
        pred.metadata["image_size"] = [(h, w, 3)]
        annotations.append(ann)
        predictions.append(pred)
    return annotations, predictions


def clean(value):
    if value is None:
        return None
    if isinstance(value, (list, tuple, np.ndarray)):
        return [clean(v) for v in value]
    value = float(value)
    return None if math.isnan(value) else value


def run_metric(case, config, dataset_config=None):
    from openvino.tools.accuracy_checker.metrics import Metric

    label_map = {int(k): v for k, v in case["label_map"].items()}
    metadata = {"label_map": dict(label_map)}
    if case["background_label"] is not None:
        metadata["background_label"] = case["background_label"]
    dataset = types.SimpleNamespace(metadata=metadata, config=dataset_config or {})
    segm = config["type"] in SEGM_TYPES
    annotations, predictions = to_ac(case, segm)
    result = {"value": None, "vector": None, "per_image": None, "error": None}
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            metric = Metric.provide(config["type"], dict(config), dataset, config["type"])
            per_image = [metric.update(a, p) for a, p in zip(annotations, predictions)]
            vector = metric.evaluate(annotations, predictions)
    except Exception as err:  # noqa: BLE001 - recorded in the fixture
        result["error"] = f"{type(err).__name__}: {err}"
        return result
    if all(v is not None for v in per_image):
        result["per_image"] = [clean(v) for v in per_image]
    if np.ndim(vector):
        result["vector"] = clean(vector)
        result["value"] = clean(float(np.mean(vector))) if len(vector) else None
    else:
        result["vector"] = None
        result["value"] = clean(vector)
    return result


def tie_orders(case):
    """For each label whose scores (all images, image order) repeat: NumPy's default ``argsort`` of the
    negated scores here, the order Accuracy Checker's ``map`` takes tied detections in. A platform whose
    sort orders them differently gives different (equally valid) ``map`` values on such cases."""
    labels = sorted({v for img in case["images"] for v in img["pred"]["labels"]})
    out = []
    for label in labels:
        scores = [s for img in case["images"] for s, v in zip(img["pred"]["scores"], img["pred"]["labels"])
                  if v == label]
        if len(set(scores)) < len(scores):
            out.append({"label": label, "scores": scores,
                        "argsort": np.argsort(-np.asarray(scores, dtype=float)).tolist()})
    return out


def main():
    from importlib.metadata import version

    import numpy
    from openvino.tools.accuracy_checker import __version__ as ac_version  # only in the reference venv

    cases = all_cases()
    originals = original_coco_cases()
    expected = {
        "command": COMMAND,
        "reference": f"openvino-dev {version('openvino-dev')} (Accuracy Checker {ac_version}), "
                     f"numpy {numpy.__version__}, pycocotools {version('pycocotools')}",
        "note": "value = mean of the vector Accuracy Checker's evaluate returns (null: NaN, or an empty "
                "vector); per_image = update() per image, NaN as null; error = what Accuracy Checker raised",
        "configs": CONFIGS,
        "results": {},
        "tie_orders": {case["id"]: tie_orders(case) for case in cases},
        "original_coco": {},
    }
    for case in cases:
        expected["results"][case["id"]] = {name: run_metric(case, cfg) for name, cfg in CONFIGS.items()}
    for case in originals:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "instances.json"
            path.write_text(json.dumps(case["original_coco"]))
            conversion = {"converter": "mscoco_detection", "annotation_file": str(path),
                          "has_background": case["has_background"],
                          "use_full_label_map": case["use_full_label_map"]}
            results = {}
            for name in ("coco_orig_default", "coco_orig_no_boundaries", "coco_orig_0.5"):
                results[name] = run_metric(case, CONFIGS[name], {"annotation_conversion": conversion})
            expected["original_coco"][case["id"]] = results
    (HERE / "detection_cases.json").write_text(json.dumps(
        {"command": COMMAND, "cases": cases, "original_coco_cases": originals}, indent=1) + "\n")
    (HERE / "detection_expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"{len(cases)} cases, {len(originals)} original-JSON cases, {len(CONFIGS)} configs")


if __name__ == "__main__":
    main()
