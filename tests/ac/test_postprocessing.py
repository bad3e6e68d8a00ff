"""Detection postprocessing: Accuracy Checker 2023.3's own postprocessors on seeded boxes
(``tests/data/ac_reference/adapter_expected.json``), numbers by hand, immutability, config errors."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from pot_cli.engines.ac import postprocessing  # noqa: F401  (registers the steps)
from pot_cli.engines.ac.base import POSTPROCESSING, Context
from pot_cli.engines.ac.postprocessing import ac_remove, greedy_nms
from pot_cli.engines.ac.representations import DatasetMeta, DetectionAnnotation, DetectionPrediction, SampleMeta
from pot_cli.engines.preprocessing import Problems
from pot_cli.errors import ConfigError

from .test_geometry import case_meta, reference


def build(config: dict):
    problems = Problems("test.yml")
    entry = POSTPROCESSING[config["type"]]
    problems.keys(config, entry.keys, "postprocessing[0]")
    step = entry.cls(config, Context(problems, "postprocessing[0]"))
    problems.raise_if_any()
    return step


def boxes_of(rec: dict) -> np.ndarray:
    rows = [[np.nan if v is None else v for v in row] for row in rec["boxes"]]
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


def difficult_of(rec: dict) -> np.ndarray:
    mask = np.zeros(len(rec["labels"]), dtype=bool)
    mask[rec["difficult"]] = True
    return mask


def annotation_of(rec: dict | None) -> DetectionAnnotation | None:
    if rec is None:
        return None
    return DetectionAnnotation("img", rec["labels"], boxes_of(rec), difficult_of(rec))


def prediction_of(rec: dict) -> DetectionPrediction:
    return DetectionPrediction("img", rec["labels"], rec["scores"], boxes_of(rec), difficult_of(rec))


def check(record, want: dict) -> None:
    np.testing.assert_array_equal(record.labels, want["labels"])
    np.testing.assert_allclose(record.boxes, boxes_of(want), rtol=1e-12, atol=1e-9, equal_nan=True)
    np.testing.assert_array_equal(np.flatnonzero(record.difficult), want["difficult"])
    if "scores" in want:
        np.testing.assert_allclose(record.scores, want["scores"], rtol=1e-12)


CASES = {c["name"]: c for c in reference()["postprocessing"]}


@pytest.mark.parametrize("name", sorted(CASES))
def test_postprocessing_matches_accuracy_checker(name):
    case = CASES[name]
    meta = case_meta(case)
    ann, pred = annotation_of(case["annotation"]), prediction_of(case["prediction"])
    before = copy.deepcopy((ann, pred))
    new_ann, new_pred = build(case["config"])(ann, pred, meta, DatasetMeta())
    check(new_pred, case["expected"]["prediction"])
    if ann is not None:
        check(new_ann, case["expected"]["annotation"])
    # the inputs are unchanged (the same annotation is scored many times)
    for old, now in zip(before, (ann, pred)):
        if old is not None:
            np.testing.assert_array_equal(old.boxes, now.boxes)
            np.testing.assert_array_equal(old.difficult, now.difficult)
            np.testing.assert_array_equal(old.labels, now.labels)


def test_reference_covers_every_registered_step():
    used = {c["config"]["type"] for c in CASES.values()}
    detection = {name for name, reg in POSTPROCESSING.items() if reg.cls.__module__.endswith(".postprocessing")}
    assert used == {"nms", "class_aware_nms", "diou_nms", "filter", "clip_boxes", "cast_to_int", "shift_labels",
                    "resize_prediction_boxes", "faster_rcnn_postprocessing_resize"} == detection


# --- by hand --------------------------------------------------------------------------------------

def pred(boxes, scores, labels=None, masks=None) -> DetectionPrediction:
    n = len(scores)
    return DetectionPrediction("x", labels if labels is not None else [0] * n, scores, boxes, masks=masks)


def test_nms_by_hand():
    boxes = np.array([[0, 0, 9, 9], [1, 1, 10, 10], [20, 20, 29, 29], [0, 0, 4, 9]], dtype=np.float64)
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    # with +1: box 0 and 1 overlap 81 / (100 + 100 - 81) = 0.68; box 3 and 0: 50 / 100 = 0.5
    assert greedy_nms(boxes, scores, 0.5).tolist() == [0, 2, 3]
    # box 3 (first by score) suppresses box 0 at 0.5 > 0.49, and overlaps box 1 by 36 / 114 only
    assert greedy_nms(boxes, scores, 0.49).tolist() == [1, 2, 3]
    assert greedy_nms(boxes, scores, 0.7).tolist() == [0, 1, 2, 3]
    assert greedy_nms(boxes, scores, 0.5, keep_top_k=2).tolist() == [0, 3]
    # intersection over the smaller box: box 3 lies inside box 0
    assert greedy_nms(boxes, scores, 0.99, use_min_area=True).tolist() == [1, 2, 3]
    step = build({"type": "nms", "overlap": 0.5})
    masks = [{"m": k} for k in range(4)]
    _, out = step(None, pred(boxes, scores, masks=masks), SampleMeta("x", (30, 30, 3)), DatasetMeta())
    assert out.scores.tolist() == [0.9, 0.7, 0.95] and out.masks == [{"m": 0}, {"m": 2}, {"m": 3}]


def test_removal_reindexes_difficult_flags_like_accuracy_checker():
    ann = DetectionAnnotation("x", [0, 1, 2, 3], np.zeros((4, 4)), [True, False, True, False])
    out = ac_remove(ann, np.array([False, True, False, False]))
    assert out.labels.tolist() == [0, 2, 3] and out.difficult.tolist() == [True, False, False]
    # a flag is kept only when a removed box follows it; a removed flagged box passes its flag on
    out = ac_remove(ann, np.array([False, False, True, True]))
    assert out.labels.tolist() == [0, 1] and out.difficult.tolist() == [True, True]
    assert ac_remove(ann, np.zeros(4, dtype=bool)).difficult.tolist() == [False] * 4  # removing nothing clears
    # AC gives index -1 here, which the metrics' mask indexing reads as the last box
    out = ac_remove(ann, np.array([True, False, True, True]))
    assert out.labels.tolist() == [1] and out.difficult.tolist() == [True]


def test_class_aware_nms_keeps_overlaps_of_other_labels():
    boxes = np.array([[0, 0, 9, 9], [1, 1, 10, 10], [1, 1, 10, 10]], dtype=np.float64)
    step = build({"type": "class_aware_nms"})
    _, out = step(None, pred(boxes, [0.9, 0.8, 0.7], [1, 2, 1]), SampleMeta("x", (30, 30, 3)), DatasetMeta())
    assert out.labels.tolist() == [1, 2] and out.scores.tolist() == [0.9, 0.8]


def test_diou_penalises_distant_centres():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 20]], dtype=np.float64)
    # no +1: IoU 100 / 200 = 0.5; centres 5 apart, enclosing diagonal^2 = 10^2 + 20^2 -> 0.5 - (25/500)^0.6
    penalty = (25 / 500) ** 0.6
    assert greedy_nms(boxes, [0.9, 0.8], 0.5 - penalty + 1e-9, include_boundaries=False, diou=True).tolist() == [0, 1]
    assert greedy_nms(boxes, [0.9, 0.8], 0.5 - penalty - 1e-9, include_boundaries=False, diou=True).tolist() == [0]
    assert greedy_nms(boxes, [0.9, 0.8], 0.5 - 1e-9, include_boundaries=False, diou=True).tolist() == [0, 1]


def test_filter_marks_or_removes():
    ann = DetectionAnnotation("x", [0, 1, 1], [[0, 0, 10, 4], [0, 0, 10, 30], [5, 5, 5, 9]], [False, False, True])
    meta = SampleMeta("x", (100, 100, 3))
    marked, _ = build({"type": "filter", "apply_to": "annotation", "height_range": "5, 100"})(
        ann, None, meta, DatasetMeta())
    assert marked.difficult.tolist() == [True, False, True] and len(marked) == 3
    removed, _ = build({"type": "filter", "apply_to": "all", "is_empty": False, "remove_filtered": True})(
        ann, None, meta, DatasetMeta())
    # is_empty filters whatever its value (as Accuracy Checker); the kept boxes keep their flags
    assert removed.boxes.tolist() == [[0, 0, 10, 4], [0, 0, 10, 30]] and removed.difficult.tolist() == [False, False]
    assert ann.difficult.tolist() == [False, False, True]
    p = pred([[0, 0, 1, 1]] * 4, [0.1, 0.5, 0.3, 0.5], [0, 1, 2, 3])
    _, top = build({"type": "filter", "apply_to": "prediction", "top_k": 2, "labels": [1],
                    "remove_filtered": True})(None, p, meta, DatasetMeta())
    assert top.labels.tolist() == [3]  # top 2 scores are labels 1 and 3 (ties: the later first), then label 1 goes


def test_clip_cast_shift_and_resize_by_hand():
    meta = SampleMeta("x", (50, 80, 3), (20, 20), [
        {"type": "resize", "original_width": 80, "original_height": 50, "scale_x": 0.25, "scale_y": 0.4,
         "dst_width": 20, "dst_height": 20, "preferable_width": 20, "preferable_height": 20}])
    p = pred([[-0.1, 0.2, 0.5, 1.2]], [0.5], [3])
    _, out = build({"type": "clip_boxes", "apply_to": "prediction", "boxes_normalized": True})(None, p, meta, None)
    assert out.boxes.tolist() == [[0.0, 0.2, 0.5, 1.0]]
    _, out = build({"type": "resize_prediction_boxes"})(None, out, meta, None)
    np.testing.assert_allclose(out.boxes, [[0, 10, 40, 50]])
    _, out = build({"type": "resize_prediction_boxes", "rescale": True})(None, pred([[2, 2, 10, 10]], [1]), meta, None)
    np.testing.assert_allclose(out.boxes, [[8, 5, 40, 25]])  # x * 80 / 20, y * 50 / 20
    _, out = build({"type": "faster_rcnn_postprocessing_resize"})(None, p, meta, None)
    np.testing.assert_allclose(out.boxes, [[-8, 10, 40, 60]])
    _, out = build({"type": "cast_to_int", "round_policy": "nearest"})(None, pred([[0.5, 1.5, 2.5, -0.5]], [1]),
                                                                       meta, None)
    assert out.boxes.tolist() == [[0.0, 2.0, 2.0, -0.0]]  # half to even
    _, out = build({"type": "shift_labels", "offset": 1})(None, p, meta, None)
    assert out.labels.tolist() == [4] and p.labels.tolist() == [3]


def test_faster_rcnn_resize_rejects_other_geometry():
    step = build({"type": "faster_rcnn_postprocessing_resize"})
    meta = SampleMeta("x", (50, 80, 3), (20, 20), [{"type": "crop", "top": 0, "left": 0}])
    with pytest.raises(ConfigError, match=r"postprocessing\[0\]: cannot undo the preprocessing geometry \['crop'\]; "
                                          "expected one resize, or a resize followed by a padding"):
        step(None, pred([[0, 0, 1, 1]], [1]), meta, None)


@pytest.mark.parametrize("config, message", [
    ({"type": "clip_boxes"}, "postprocessing[0].apply_to: missing"),
    ({"type": "filter", "min_confidence": 0.1}, "postprocessing[0].apply_to: missing"),
    ({"type": "filter", "apply_to": "all", "height_range": "a, b"}, "height_range: 'a, b' is not a range"),
    ({"type": "filter", "apply_to": "all", "labels": "1, 2"}, "labels: '1, 2' is not a list of class ids"),
    ({"type": "filter", "apply_to": "all", "min_visibility": "half"}, "min_visibility: 'half' is not a visibility"),
    ({"type": "filter", "apply_to": "all", "min_area": 3}, "postprocessing[0].min_area: unknown key"),
    ({"type": "nms", "overlap": 1.5}, "postprocessing[0].overlap: 1.5 is not a number in [0, 1]"),
    ({"type": "nms", "apply_to": "prediction"}, "postprocessing[0].apply_to: unknown key"),
    ({"type": "diou_nms", "use_min_area": True}, "postprocessing[0].use_min_area: unknown key"),
    ({"type": "cast_to_int", "round_policy": "up"}, "round_policy: 'up' is not supported"),
    ({"type": "shift_labels"}, "postprocessing[0].offset: missing"),
    ({"type": "resize_prediction_boxes", "rescale": "maybe"}, "rescale: 'maybe' is not a boolean"),
])
def test_bad_postprocessing_configs_are_reported(config, message):
    with pytest.raises(ConfigError) as err:
        build(config)
    assert any(message in line for line in err.value.problems), err.value.problems
