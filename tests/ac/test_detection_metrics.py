"""Detection metrics (``map``, ``coco_precision``, ``coco_orig_precision``, ``coco_orig_segm_precision``)
against reference values from Accuracy Checker 2023.3.

The reference values come from ``tests/data/ac_reference/make_detection_reference.py`` run in the
reference environment (the command is in the fixture's ``command`` field); these tests never import
Accuracy Checker.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from pot_cli.engines.ac.base import METRICS, Context, nanmean
from pot_cli.engines.ac.detection_metrics import (COCO_IOU_RANGE, CocoOrigPrecision, CocoOrigSegmPrecision,
                                                  CocoPrecision, DetectionMAP, coco_image_id, coco_vector,
                                                  pair_overlap, parse_iou_thresholds)
from pot_cli.engines.ac.representations import DatasetMeta, DetectionAnnotation, DetectionPrediction
from pot_cli.errors import DatasetError, EngineError

DATA = Path(__file__).resolve().parents[1] / "data" / "ac_reference"
CASES = json.loads((DATA / "detection_cases.json").read_text())
EXPECTED = json.loads((DATA / "detection_expected.json").read_text())
CASE_BY_ID = {c["id"]: c for c in CASES["cases"]}
ORIGINAL_BY_ID = {c["id"]: c for c in CASES["original_coco_cases"]}
TOL = 1e-6


class Problems:
    def __init__(self):
        self.items: list[tuple[str, str]] = []

    def add(self, where, message):
        self.items.append((where, message))


def meta_of(case) -> DatasetMeta:
    return DatasetMeta({int(k): v for k, v in case["label_map"].items()}, case["background_label"])


def ctx_for(meta: DatasetMeta) -> Context:
    return Context(Problems(), "models[0].datasets[0].metrics[0]", dataset_meta=meta)


def rle(m):
    return {"size": m["size"], "counts": m["counts"].encode("utf-8")}


def records(case):
    annotations, predictions = [], []
    for img in case["images"]:
        gt, pr = img["gt"], img["pred"]
        annotations.append(DetectionAnnotation(img["identifier"], gt["labels"], gt["boxes"], gt["difficult"],
                                               [bool(c) for c in gt["iscrowd"]], [rle(m) for m in gt["masks"]],
                                               tuple(img["size"])))
        predictions.append(DetectionPrediction(img["identifier"], pr["labels"], pr["scores"], pr["boxes"],
                                               pr["difficult"], [rle(m) for m in pr["masks"]]))
    return annotations, predictions


def build(params, meta):
    ctx = ctx_for(meta)
    metric = METRICS[params["type"]].cls(dict(params), ctx)
    assert ctx.problems.items == []
    return metric


def value(v):
    return math.nan if v is None else v


def close(ours, ref):
    if math.isnan(ref):
        return math.isnan(ours)
    return abs(ours - ref) <= TOL


def platform_sorts_like_reference(case_id) -> bool:
    """True when this NumPy orders tied scores as the reference run did (``map`` follows that order)."""
    return all(np.argsort(-np.asarray(t["scores"], dtype=float)).tolist() == t["argsort"]
               for t in EXPECTED["tie_orders"][case_id])


def configs_of(*types):
    return [name for name, cfg in EXPECTED["configs"].items() if cfg["type"] in types]


def params_for(types):
    return [pytest.param(name, case_id, id=f"{name}-{case_id}")
            for name in configs_of(*types) for case_id in CASE_BY_ID]


def check_against_reference(metric, name, case_id, per_image_fn):
    ref = EXPECTED["results"][case_id][name]
    assert ref["error"] is None, f"Accuracy Checker failed here: {ref['error']}"
    annotations, predictions = records(CASE_BY_ID[case_id])
    ours = metric(predictions, annotations)
    assert close(ours, value(ref["value"])), (ours, ref["value"])
    if ref["per_image"] is None:
        return
    for annotation, prediction, vector in zip(annotations, predictions, ref["per_image"]):
        ref_vector = np.array([value(v) for v in vector], dtype=float)
        our_vector = per_image_fn(prediction, annotation)
        assert our_vector.shape == ref_vector.shape
        np.testing.assert_allclose(our_vector, ref_vector, atol=TOL, rtol=0, equal_nan=True)
        # the nanmean AccuracyAware would take, before our no-information rule
        assert close(nanmean(our_vector), nanmean(ref_vector))


# --- against Accuracy Checker ---------------------------------------------------------------------

def test_fixture_shape():
    assert "make_detection_reference.py" in EXPECTED["command"]
    assert len(CASES["cases"]) >= 24
    for name in EXPECTED["configs"]:
        assert sum(EXPECTED["results"][c][name]["error"] is None for c in CASE_BY_ID) >= 20


@pytest.mark.parametrize("name,case_id", params_for(("map",)))
def test_map_matches_accuracy_checker(name, case_id):
    metric = build(EXPECTED["configs"][name], meta_of(CASE_BY_ID[case_id]))
    try:
        check_against_reference(metric.evaluate, name, case_id, metric.per_image_vector)
    except AssertionError:
        if platform_sorts_like_reference(case_id):
            raise
        pytest.skip("this NumPy orders tied scores differently from the reference run (map follows the sort)")


@pytest.mark.parametrize("name,case_id", params_for(("coco_precision",)))
def test_coco_precision_matches_accuracy_checker(name, case_id):
    metric = build(EXPECTED["configs"][name], meta_of(CASE_BY_ID[case_id]))
    check_against_reference(metric.evaluate, name, case_id, metric.per_image_vector)


@pytest.mark.parametrize("name,case_id", params_for(("coco_orig_precision", "coco_orig_segm_precision")))
def test_coco_orig_matches_accuracy_checker(name, case_id):
    metric = build(EXPECTED["configs"][name], meta_of(CASE_BY_ID[case_id]))
    check_against_reference(metric.evaluate, name, case_id, None)


@pytest.mark.parametrize("case_id", list(CASE_BY_ID))
def test_segm_proxy_matches_accuracy_checker_coco_segm_precision(case_id):
    """coco_orig_segm_precision's per-sample proxy is Accuracy Checker's coco_segm_precision (mask IoU)."""
    meta = meta_of(CASE_BY_ID[case_id])
    metric = build({"type": "coco_orig_segm_precision"}, meta)
    classes = np.array([k for k in meta.label_map if k != meta.background_label])

    def dataset_value(predictions, annotations):
        return nanmean(coco_vector(predictions, annotations, classes, 20, COCO_IOU_RANGE, use_masks=True))

    check_against_reference(dataset_value, "coco_segm_default", case_id, metric.per_image_vector)


@pytest.mark.parametrize("case_id", list(ORIGINAL_BY_ID))
@pytest.mark.parametrize("name", ["coco_orig_default", "coco_orig_no_boundaries", "coco_orig_0.5"])
def test_coco_orig_with_original_json(tmp_path, name, case_id):
    case = ORIGINAL_BY_ID[case_id]
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(case["original_coco"]))
    metric = build(EXPECTED["configs"][name], meta_of(case))
    metric.use_original_annotation(path, case["has_background"], case["use_full_label_map"])
    annotations, predictions = records(case)
    ref = EXPECTED["original_coco"][case_id][name]
    assert ref["error"] is None
    assert close(metric.evaluate(predictions, annotations), ref["value"])


def test_coco_orig_original_json_errors(tmp_path):
    case = ORIGINAL_BY_ID["orig_plain"]
    annotations, predictions = records(case)
    metric = build({"type": "coco_orig_precision"}, meta_of(case))
    metric.use_original_annotation(tmp_path / "missing.json")
    with pytest.raises(DatasetError, match="missing.json"):
        metric.evaluate(predictions, annotations)
    data = json.loads(json.dumps(case["original_coco"]))
    data["images"] = data["images"][1:]
    (tmp_path / "short.json").write_text(json.dumps(data))
    metric.use_original_annotation(tmp_path / "short.json")
    with pytest.raises(DatasetError, match="is not in the COCO file"):
        metric.evaluate(predictions, annotations)


def test_empty_label_map_uses_seen_labels():
    """With an empty label map the classes are the labels seen (background excluded); the values equal
    Accuracy Checker's with the full label map when every label lies in the map."""
    checked = 0
    for case_id, case in CASE_BY_ID.items():
        annotations, predictions = records(case)
        known = set(int(k) for k in case["label_map"])
        seen = {int(v) for a in annotations for v in a.labels} | {int(v) for p in predictions for v in p.labels}
        if not seen <= known:
            continue
        meta = DatasetMeta({}, case["background_label"])
        names = ["coco_default", "coco_orig_default"]
        if platform_sorts_like_reference(case_id):
            names.append("map_default")
        for name in names:
            ours = build(EXPECTED["configs"][name], meta).evaluate(predictions, annotations)
            assert close(ours, value(EXPECTED["results"][case_id][name]["value"])), (case_id, name)
        checked += 1
    assert checked >= 20


# --- per-sample values ----------------------------------------------------------------------------

VOC = DatasetMeta({0: "background", 1: "cat", 2: "dog"}, 0)


def ann(labels=(), boxes=(), difficult=None, crowd=None, masks=None):
    return DetectionAnnotation("COCO_val2014_000000000001.jpg", list(labels), list(boxes), difficult, crowd,
                               masks, (100, 100))


def pred(labels=(), scores=(), boxes=(), masks=None):
    return DetectionPrediction("COCO_val2014_000000000001.jpg", list(labels), list(scores), list(boxes),
                               None, masks)


@pytest.mark.parametrize("metric_type", ["map", "coco_precision", "coco_orig_precision"])
def test_no_detection_with_ground_truth_scores_zero(metric_type):
    metric = build({"type": metric_type}, VOC)
    a = ann([1, 2], [[0, 0, 10, 10], [20, 20, 40, 40]])
    assert metric.per_sample(pred(), a) == 0.0


@pytest.mark.parametrize("metric_type", ["map", "coco_precision", "coco_orig_precision"])
def test_nothing_to_find_nothing_found_scores_one(metric_type):
    metric = build({"type": metric_type}, VOC)
    assert metric.per_sample(pred(), ann()) == 1.0
    # a box of a class outside the label map is not counted either
    assert metric.per_sample(pred(), ann([5], [[0, 0, 10, 10]])) == 1.0


def test_no_detection_rule_counts_only_boxes_the_metric_uses():
    difficult_only = ann([1], [[0, 0, 10, 10]], difficult=[True])
    crowd_only = ann([1], [[0, 0, 10, 10]], crowd=[True])
    assert build({"type": "map"}, VOC).per_sample(pred(), difficult_only) == 1.0
    assert build({"type": "map", "ignore_difficult": False}, VOC).per_sample(pred(), difficult_only) == 0.0
    # map ignores iscrowd: a crowd box is an object to find
    assert build({"type": "map"}, VOC).per_sample(pred(), crowd_only) == 0.0
    assert build({"type": "coco_precision"}, VOC).per_sample(pred(), crowd_only) == 1.0
    assert build({"type": "coco_precision"}, VOC).per_sample(pred(), difficult_only) == 1.0


def test_per_sample_is_nanmean_of_the_vector_otherwise():
    a = ann([1, 2], [[0, 0, 10, 10], [20, 20, 40, 40]])
    p = pred([1], [0.9], [[0, 0, 10, 10]])
    m = build({"type": "map"}, VOC)
    # map: the missed dog is NaN (no detection of it), so the image scores 1.0, as in Accuracy Checker
    np.testing.assert_array_equal(m.per_image_vector(p, a), [1.0, np.nan])
    assert m.per_sample(p, a) == 1.0
    c = build({"type": "coco_precision"}, VOC)
    # precision is tp / (tp + fp + spacing(1)) there, hence not exactly 1
    np.testing.assert_allclose(c.per_image_vector(p, a), [1.0, 0.0], atol=1e-15)
    assert c.per_sample(p, a) == pytest.approx(0.5, abs=1e-15)
    # a false positive on an image without ground truth: map scores 0, coco_precision has nothing to score
    fp = pred([1], [0.9], [[50, 50, 60, 60]])
    assert m.per_sample(fp, ann()) == 0.0
    assert c.per_sample(fp, ann()) == 1.0


def test_coco_orig_per_sample_is_coco_precision_at_defaults():
    case = CASE_BY_ID["random_voc_a"]
    annotations, predictions = records(case)
    orig = build({"type": "coco_orig_precision", "threshold": "0.5", "include_boundaries": False}, meta_of(case))
    proxy = build({"type": "coco_precision"}, meta_of(case))
    for a, p in zip(annotations, predictions):
        assert orig.per_sample(p, a) == proxy.per_sample(p, a)


def test_segm_per_sample_uses_mask_iou():
    from pycocotools import mask as mask_utils

    square = np.zeros((100, 100), np.uint8)
    square[0:10, 0:10] = 1
    other = np.zeros((100, 100), np.uint8)
    other[50:60, 50:60] = 1
    m_square = mask_utils.encode(np.asfortranarray(square))
    m_other = mask_utils.encode(np.asfortranarray(other))
    a = ann([1], [[0, 0, 10, 10]], masks=[m_square])
    # the box matches exactly, the mask does not overlap: the segm proxy scores 0, the box proxy 1
    p = pred([1], [0.9], [[0, 0, 10, 10]], masks=[m_other])
    assert build({"type": "coco_orig_segm_precision"}, VOC).per_sample(p, a) == 0.0
    assert build({"type": "coco_orig_precision"}, VOC).per_sample(p, a) == pytest.approx(1.0, abs=1e-15)
    p_good = pred([1], [0.9], [[0, 0, 10, 10]], masks=[m_square])
    assert build({"type": "coco_orig_segm_precision"}, VOC).per_sample(p_good, a) == pytest.approx(1.0, abs=1e-15)


# --- dataset-level semantics (Accuracy Checker's, §2.7 of the coverage note) ----------------------

def test_map_dataset_value_is_not_mean_of_per_image_values():
    a1, a2 = ann([1], [[0, 0, 10, 10]]), ann([1], [[0, 0, 10, 10]])
    p1 = pred([1, 1], [0.9, 0.95], [[0, 0, 10, 10], [50, 50, 60, 60]])
    p2 = pred([1], [0.5], [[0, 0, 10, 10]])
    m = build({"type": "map"}, VOC)
    per_image = [m.per_sample(p1, a1), m.per_sample(p2, a2)]
    assert per_image == [0.5, 1.0]
    assert m.evaluate([p1, p2], [a1, a2]) == pytest.approx(2 / 3)


def test_map_class_never_predicted_is_dropped_and_fp_only_class_is_zero():
    a = ann([1, 2], [[0, 0, 10, 10], [20, 20, 40, 40]])
    m = build({"type": "map"}, VOC)
    np.testing.assert_array_equal(m.evaluate_vector([pred([1], [0.9], [[0, 0, 10, 10]])], [a]), [1.0, np.nan])
    assert m.evaluate([pred([1], [0.9], [[0, 0, 10, 10]])], [a]) == 1.0
    b = ann([1], [[0, 0, 10, 10]])
    p = pred([1, 2], [0.9, 0.9], [[0, 0, 10, 10], [50, 50, 60, 60]])
    np.testing.assert_array_equal(m.evaluate_vector([p], [b]), [1.0, 0.0])
    assert m.evaluate([pred()], [a]) == 0.0  # Accuracy Checker's "No detections" fallback


def test_include_boundaries_overlap_of_disjoint_boxes():
    det, gt = np.array([[0, 0, 9, 9.0]]), np.array([[9, 9, 18, 18.0]])
    assert pair_overlap(det, gt, 1.0)[0] == pytest.approx(1 / 199)
    assert pair_overlap(det, gt, 0.0)[0] == 0.0
    assert pair_overlap(np.array([[0, 0, 10, 5.0]]), np.array([[0, 0, 10, 10.0]]), 0.0, "ioa")[0] == 1.0


def test_coco_orig_is_quiet(capsys):
    case = CASE_BY_ID["random_coco_a"]
    annotations, predictions = records(case)
    build({"type": "coco_orig_precision"}, meta_of(case)).evaluate(predictions, annotations)
    build({"type": "coco_orig_segm_precision"}, meta_of(case)).evaluate(predictions, annotations)
    assert capsys.readouterr().out == ""


def test_coco_image_id():
    assert coco_image_id("val2017/COCO_val2014_000000000042.jpg") == "000000000042"
    assert coco_image_id("img_7.png") == "7.png"


def test_a_large_dataset_evaluates():  # timing: benchmarks/ac_metrics.py
    rng = np.random.default_rng(0)
    annotations, predictions = [], []
    for i in range(2000):
        xy = rng.uniform(0, 400, (20, 2))
        boxes = np.c_[xy, xy + rng.uniform(10, 100, (20, 2))]
        labels = rng.integers(1, 21, 20)
        annotations.append(DetectionAnnotation(f"{i}.jpg", labels, boxes, rng.random(20) < 0.1))
        predictions.append(DetectionPrediction(f"{i}.jpg", labels, rng.random(20),
                                               boxes + rng.normal(0, 5, boxes.shape)))
    meta = DatasetMeta({k: str(k) for k in range(21)}, 0)
    for params in ({"type": "map"}, {"type": "coco_precision"}):
        metric = build(params, meta)
        result = metric.evaluate(predictions, annotations)
        assert 0.0 < result < 1.0


# --- runtime errors -------------------------------------------------------------------------------

def test_runtime_errors_name_the_problem():
    m = build({"type": "map"}, VOC)
    a = ann([1], [[0, 0, 10, 10]])
    with pytest.raises(EngineError, match="1 predictions for 2 annotations"):
        m.evaluate([pred()], [a, a])
    with pytest.raises(EngineError, match="expected a detection prediction"):
        m.evaluate([object()], [a])
    with pytest.raises(DatasetError, match="expected a detection annotation"):
        m.per_sample(pred(), object())
    segm = build({"type": "coco_orig_segm_precision"}, VOC)
    mask = {"size": [100, 100], "counts": b"PPYo1"}
    with pytest.raises(EngineError, match="the prediction has no masks for 1 boxes"):
        segm.evaluate([pred([1], [0.9], [[0, 0, 10, 10]])], [ann([1], [[0, 0, 10, 10]], masks=[mask])])
    with pytest.raises(DatasetError, match="the annotation has no masks"):
        segm.per_sample(pred([1], [0.9], [[0, 0, 10, 10]], masks=[mask]), a)
    with pytest.raises(EngineError, match="a prediction mask is NoneType"):
        segm.per_sample(pred([1], [0.9], [[0, 0, 10, 10]], masks=[None]), ann([1], [[0, 0, 10, 10]], masks=[mask]))
    small = {"size": [50, 50], "counts": b"PPYo1"}
    with pytest.raises(EngineError, match="100x100 \\(annotation\\), 50x50 \\(prediction\\)"):
        segm.evaluate([pred([1], [0.9], [[0, 0, 10, 10]], masks=[small])], [ann([1], [[0, 0, 10, 10]], masks=[mask])])


# --- config validation ----------------------------------------------------------------------------

@pytest.mark.parametrize("metric_type,key,bad", [
    ("map", "overlap_threshold", 1.5),
    ("map", "overlap_threshold", "half"),
    ("map", "ignore_difficult", "yes"),
    ("map", "include_boundaries", 1),
    ("map", "distinct_conf", None),
    ("map", "allow_multiple_matches_per_ignored", "maybe"),
    ("map", "overlap_method", "giou"),
    ("map", "use_filtered_tp", 2),
    ("map", "integral", "trapezoid"),
    ("map", "label_map", "other_map"),
    ("map", "threshold", "abc"),
    ("map", "presenter", "print_table"),
    ("map", "abs_threshold", -1),
    ("map", "rel_threshold", "x"),
    ("map", "name", 5),
    ("coco_precision", "max_detections", -1),
    ("coco_precision", "max_detections", 2.5),
    ("coco_precision", "threshold", "0.5,0.75"),
    ("coco_precision", "threshold", "0.5:0.1:0.9"),
    ("coco_precision", "threshold", 1.5),
    ("coco_precision", "threshold", []),
    ("coco_precision", "threshold", ["0.5"]),
    ("coco_precision", "threshold", True),
    ("coco_orig_precision", "threshold", "high"),
    ("coco_orig_precision", "include_boundaries", "no"),
    ("coco_orig_segm_precision", "threshold", {"a": 1}),
])
def test_bad_values_are_reported_with_their_key(metric_type, key, bad):
    ctx = ctx_for(VOC)
    metric = METRICS[metric_type].cls({"type": metric_type, key: bad}, ctx)
    assert len(ctx.problems.items) == 1
    where, message = ctx.problems.items[0]
    assert where == f"models[0].datasets[0].metrics[0].{key}"
    assert "expected" in message or "is not" in message
    # a usable default is kept
    assert metric.per_sample(pred(), ann()) == 1.0


@pytest.mark.parametrize("params", [
    {"type": "map", "overlap_threshold": 0.5, "ignore_difficult": "True", "include_boundaries": False,
     "distinct_conf": False, "allow_multiple_matches_per_ignored": True, "overlap_method": "ioa",
     "use_filtered_tp": False, "label_map": "label_map", "integral": "11point", "name": "mAP",
     "reference": 0.7, "abs_threshold": 0.01, "rel_threshold": 0.1, "threshold": 0.005,
     "presenter": "print_vector"},
    {"type": "coco_precision", "max_detections": 100, "threshold": ".50:.05:.95", "name": "AP"},
    {"type": "coco_precision", "threshold": "0.75"},
    {"type": "coco_precision", "threshold": ".5:.05:.95"},
    {"type": "coco_precision", "threshold": [0.5, 0.75]},
    {"type": "coco_orig_precision", "threshold": 0.5, "include_boundaries": False, "reference": 0.3},
    {"type": "coco_orig_segm_precision", "threshold": "0.5:0.05:0.95"},
])
def test_good_configs_have_no_problems(params):
    ctx = ctx_for(VOC)
    METRICS[params["type"]].cls(params, ctx)
    assert ctx.problems.items == []
    assert set(params) <= set(METRICS[params["type"]].keys)


def test_registered_keys():
    common = {"type", "name", "reference", "abs_threshold", "rel_threshold", "threshold", "presenter"}
    assert set(METRICS["map"].keys) == common | {
        "overlap_threshold", "ignore_difficult", "include_boundaries", "distinct_conf",
        "allow_multiple_matches_per_ignored", "overlap_method", "use_filtered_tp", "label_map", "integral"}
    assert set(METRICS["coco_precision"].keys) == common | {"max_detections"}
    assert set(METRICS["coco_orig_precision"].keys) == common | {"include_boundaries"}
    assert set(METRICS["coco_orig_segm_precision"].keys) == common | {"include_boundaries"}
    assert METRICS["map"].cls is DetectionMAP and METRICS["coco_precision"].cls is CocoPrecision
    assert METRICS["coco_orig_precision"].cls is CocoOrigPrecision
    assert METRICS["coco_orig_segm_precision"].cls is CocoOrigSegmPrecision


def test_parse_iou_thresholds():
    np.testing.assert_array_equal(parse_iou_thresholds(".50:.05:.95"), COCO_IOU_RANGE)
    np.testing.assert_array_equal(parse_iou_thresholds("0.5:0.05:0.95"), COCO_IOU_RANGE)
    np.testing.assert_array_equal(parse_iou_thresholds("0.5"), [0.5])
    np.testing.assert_array_equal(parse_iou_thresholds(".75"), [0.75])
    np.testing.assert_array_equal(parse_iou_thresholds(0.3), [0.3])
    np.testing.assert_array_equal(parse_iou_thresholds([0.5, 0.7]), [0.5, 0.7])
    assert COCO_IOU_RANGE.size == 10 and COCO_IOU_RANGE[0] == 0.5 and COCO_IOU_RANGE[-1] == 0.95
    for bad in ("0.5,0.75", "0.5:0.95", "x", None, [], 2.0, False):
        assert parse_iou_thresholds(bad) is None
