"""Detection adapters: Accuracy Checker 2023.3's own adapters on seeded outputs
(``tests/data/ac_reference/adapter_expected.json``), boxes decoded by hand, and errors."""
from __future__ import annotations

import numpy as np
import pytest

from pot_cli.engines.ac import detection  # noqa: F401  (registers the adapters)
from pot_cli.engines.ac.base import ADAPTERS, Context, Outputs
from pot_cli.engines.ac.representations import DetectionPrediction, SampleMeta
from pot_cli.engines.preprocessing import Problems
from pot_cli.errors import ConfigError, EngineError

from .test_geometry import case_meta, reference


def build(config: dict):
    """The registered adapter of ``config`` (unknown keys and bad values raise ConfigError)."""
    problems = Problems("test.yml")
    entry = ADAPTERS[config["type"]]
    problems.keys(config, entry.keys, "adapter")
    adapter = entry.cls(config, Context(problems, "adapter"))
    problems.raise_if_any()
    return adapter


def outputs_of(arrays: dict) -> Outputs:
    return Outputs(list(arrays.values()), [(name,) for name in arrays])


def array(spec: dict) -> np.ndarray:
    return np.asarray(spec["data"], dtype=spec["dtype"]).reshape(spec["shape"])


def check(pred: DetectionPrediction, want: dict) -> None:
    np.testing.assert_array_equal(pred.labels, want["labels"])
    np.testing.assert_allclose(pred.scores, want["scores"], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(pred.boxes, np.asarray(want["boxes"], dtype=np.float64).reshape(-1, 4),
                               rtol=1e-6, atol=1e-9)


CASES = {c["name"]: c for c in reference()["adapters"]}


@pytest.mark.parametrize("name", sorted(CASES))
def test_adapter_matches_accuracy_checker(name):
    case = CASES[name]
    meta = case_meta(case)
    outputs = outputs_of({k: array(v) for k, v in case["outputs"].items()})
    pred = build(case["config"]).process(outputs, meta)
    assert len(case["expected"]["labels"]) > 0, "a reference case should decode something"
    check(pred, case["expected"])
    if "masks" in case["expected"]:
        assert pred.masks == case["expected"]["masks"]


@pytest.mark.parametrize("name", ["yolo_v8_best_class", "yolo_v8_multi_label"])
def test_accuracy_checker_yolov8_detection_config(name):
    case = CASES[name]
    assert case["ac_config"]["type"] == "yolov8_detection"
    outputs = outputs_of({k: array(v) for k, v in case["outputs"].items()})
    check(build(case["ac_config"]).process(outputs, SampleMeta("img", (40, 50, 3))), case["expected"])


def test_reference_fixture_records_its_command():
    ref = reference()
    assert ref["command"].endswith("tests/data/ac_reference/make_adapter_reference.py")
    assert ref["openvino_dev"].startswith("2023.3")


# --- by hand --------------------------------------------------------------------------------------

def test_ssd_cuts_at_the_first_empty_row():
    rows = np.array([[0, 2, 0.9, 0.1, 0.2, 0.3, 0.4],
                     [0, 5, 0.4, 0.5, 0.5, 0.7, 0.9],
                     [1, 7, 0.8, 0.0, 0.0, 1.0, 1.0],  # another image of the batch
                     [-1, 0, 0, 0, 0, 0, 0],
                     [0, 1, 0.99, 0, 0, 1, 1]], dtype=np.float32)
    pred = build({"type": "ssd"}).process(outputs_of({"det": rows[None, None]}), SampleMeta("a.jpg", (10, 10, 3)))
    assert pred.identifier == "a.jpg" and pred.labels.tolist() == [2, 5]
    np.testing.assert_allclose(pred.scores, [0.9, 0.4], rtol=1e-6)
    np.testing.assert_allclose(pred.boxes, [[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.7, 0.9]], rtol=1e-6)
    with pytest.raises(EngineError, match=r"adapter ssd: output 'det': output of shape \[1, 10\] is not "
                                          r"DetectionOutput rows; expected \[1, 1, N, 7\]"):
        build({"type": "ssd"}).process(outputs_of({"det": np.zeros((1, 10))}), SampleMeta("a", (1, 1, 3)))


def test_yolo_v2_decodes_one_cell_by_hand():
    # 2 x 2 grid, 1 anchor (2, 1) in cells, 2 classes: box = 4 + 1 + 2 = 7 channels
    grid = np.zeros((1, 7, 2, 2))
    grid[0, :, 1, 0] = [0.5, 0.25, np.log(0.5), 0.0, 0.8, 0.25, 0.75]  # row 1, column 0
    grid[0, 4, 0, 0] = 0.0005  # under the objectness threshold
    grid[0, 4, 0, 1] = 0.5
    grid[0, 4, 1, 1] = 0.002
    pred = build({"type": "yolo_v2", "classes": 2, "num": 1, "cells": 2, "anchors": [2, 1]}).process(
        outputs_of({"r": grid}), SampleMeta("x", (4, 4, 3)))
    # row-major cells: (0, 0) is under 0.001; (0, 1) and (1, 1) have zero class scores
    assert pred.labels.tolist() == [0, 1, 0]
    np.testing.assert_allclose(pred.scores, [0.0, 0.8 * 0.75, 0.0])
    # row 1, column 0: centre ((0.5 + 0) / 2, (0.25 + 1) / 2), size (0.5 * 2 / 2, 1 * 1 / 2)
    np.testing.assert_allclose(pred.boxes[1], [0.25 - 0.25, 0.625 - 0.25, 0.25 + 0.25, 0.625 + 0.25])


def test_yolo_v3_scales_anchors_by_the_input_size():
    # one 1 x 1 layer, one anchor (32, 16) px on a 64 x 128 (H x W) input, 1 class, objectness 0.9
    out = np.array([0.5, 0.5, 0.0, 0.0, 0.9, 1.0]).reshape(1, 6, 1, 1)
    adapter = build({"type": "yolo_v3", "classes": 1, "num": 1, "anchors": "32, 16", "outputs": ["o"]})
    pred = adapter.process(outputs_of({"o": out}), SampleMeta("x", (64, 128, 3), (64, 128)))
    np.testing.assert_allclose(pred.boxes, [[0.5 - 0.125, 0.5 - 0.125, 0.5 + 0.125, 0.5 + 0.125]])
    assert pred.labels.tolist() == [0] and pred.scores.tolist() == pytest.approx([0.9])
    with pytest.raises(EngineError, match=r"adapter yolo_v3: .* input size .* unknown"):
        adapter.process(outputs_of({"o": out}), SampleMeta("x", (64, 128, 3)))
    with pytest.raises(EngineError, match=r"adapter.outputs: the model has no output 'o'"):
        adapter.process(outputs_of({"p": out}), SampleMeta("x", (64, 128, 3), (64, 128)))
    with pytest.raises(EngineError, match=r"output 'o': region output of shape \[4, 1, 1\] does not hold 1 boxes"):
        adapter.process(outputs_of({"o": out[:, :4]}), SampleMeta("x", (64, 128, 3), (64, 128)))


def test_yolox_grid_and_strides():
    # 32 x 64 (H x W) input: strides 8, 16, 32 give 4x8 + 2x4 + 1x2 = 42 anchor points
    out = np.zeros((1, 42, 7))
    out[0, 9] = [0.5, 0.5, 0.0, np.log(2.0), 0.5, 0.9, 0.1]  # stride 8, row 1, column 1
    out[0, 41] = [0.0, 0.0, 0.0, 0.0, 0.9, 0.05, 0.5]  # stride 32, row 0, column 1
    pred = build({"type": "yolox", "threshold": 0.2}).process(outputs_of({"o": out}),
                                                              SampleMeta("x", (32, 64, 3), (32, 64)))
    assert pred.labels.tolist() == [0, 1]
    np.testing.assert_allclose(pred.scores, [0.45, 0.45])
    np.testing.assert_allclose(pred.boxes, [[12 - 4, 12 - 8, 12 + 4, 12 + 8], [32 - 16, -16, 32 + 16, 16]])
    with pytest.raises(EngineError, match=r"expected \[1, 42, 5 \+ classes\] for a 64x32 input"):
        build({"type": "yolox"}).process(outputs_of({"o": out[:, :40]}), SampleMeta("x", (32, 64, 3), (32, 64)))


def test_class_agnostic_detection():
    rows = np.array([[[1, 2, 3, 4, 0.5], [5, 6, 7, 8, 0.0], [2, 2, 4, 4, 0.7]]])
    pred = build({"type": "class_agnostic_detection", "scale": [2, 10]}).process(
        outputs_of({"probs": np.zeros((1, 3)), "boxes": rows}), SampleMeta("x", (9, 9, 3)))
    assert pred.labels.tolist() == [1, 1] and pred.scores.tolist() == [0.5, 0.7]
    np.testing.assert_allclose(pred.boxes, [[2, 20, 6, 40], [4, 20, 8, 40]])
    with pytest.raises(EngineError, match=r"no output is shaped \[n, 5\]"):
        build({"type": "class_agnostic_detection"}).process(outputs_of({"o": np.zeros((1, 3))}),
                                                            SampleMeta("x", (9, 9, 3)))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' decode under NumPy 2
def test_mask_rcnn_pastes_a_full_mask_in_the_original_image():
    import pycocotools.mask as coco_mask

    # one box normalized to a 20 x 20 input resized from a 40 x 60 image, class 2, mask all ones
    meta = SampleMeta("x", (40, 60, 3), (20, 20), [
        {"type": "resize", "original_width": 60, "original_height": 40, "scale_x": 1 / 3, "scale_y": 0.5,
         "dst_width": 20, "dst_height": 20}])
    rows = np.array([[0, 2, 0.9, 0.25, 0.25, 0.5, 0.75]])
    masks = np.zeros((1, 3, 4, 4), dtype=np.float32)
    masks[0, 1] = 1.0
    pred = build({"type": "mask_rcnn", "detection_out": "det", "raw_masks_out": "m"}).process(
        outputs_of({"det": rows, "m": masks}), meta)
    np.testing.assert_allclose(pred.boxes, [[0.25, 0.25, 0.5, 0.75]])  # boxes stay normalized
    full = coco_mask.decode(pred.masks[0])
    assert full.shape == (40, 60) and pred.masks[0]["size"] == [40, 60]
    ys, xs = np.nonzero(full)
    # the box is (15, 10)-(30, 30) px; the 6 x 6 bordered mask is resized onto the box enlarged by
    # 6/4 and truncated, (11, 5)-(33, 35) = 23 x 31 px; a pixel is set where the bilinear value is
    # > 0.5, i.e. source x in (0.5, 4.5): x_d in 4..18 -> 15..29, y_d in 5..25 -> 10..30
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (15, 29, 10, 30)
    assert full.sum() == 15 * 21 - 4  # at the four corners the product of the two ramps is <= 0.5
    with pytest.raises(ConfigError, match=r"cannot undo the preprocessing geometry \['crop'\]"):
        build({"type": "mask_rcnn", "detection_out": "det", "raw_masks_out": "m"}).process(
            outputs_of({"det": rows, "m": masks}), SampleMeta("x", (40, 60, 3), (20, 20), [{"type": "crop"}]))


# --- yolo_v8 --------------------------------------------------------------------------------------

def v8_output(channels_first: bool = True) -> np.ndarray:
    """10 anchors (7 with zero scores), 3 classes: cx, cy, w, h in pixels, then scores."""
    rows = np.zeros((10, 7), dtype=np.float32)
    rows[:3] = [[10, 20, 4, 6, 0.1, 0.8, 0.3],
                [50, 60, 10, 10, 0.5, 0.2, 0.6],
                [5, 5, 2, 2, 0.0005, 0.0001, 0.0002]]
    return rows.T[None] if channels_first else rows[None]


@pytest.mark.parametrize("channels_first", [True, False])
def test_yolo_v8_best_class_per_anchor(channels_first):
    pred = build({"type": "yolo_v8"}).process(outputs_of({"output0": v8_output(channels_first)}),
                                              SampleMeta("x", (320, 320, 3), (320, 320)))
    assert pred.labels.tolist() == [1, 2]
    np.testing.assert_allclose(pred.scores, [0.8, 0.6], rtol=1e-6)
    np.testing.assert_allclose(pred.boxes, [[8, 17, 12, 23], [45, 55, 55, 65]])


def test_yolo_v8_multi_label_and_class_map():
    meta = SampleMeta("x", (320, 320, 3), (320, 320))
    pred = build({"type": "yolo_v8", "multi_label": True, "threshold": 0.25}).process(
        outputs_of({"output0": v8_output()}), meta)
    assert pred.labels.tolist() == [1, 2, 0, 2]
    np.testing.assert_allclose(pred.scores, [0.8, 0.3, 0.5, 0.6], rtol=1e-6)
    # classes 0 and 2 are the same annotation label 0, class 1 is dropped
    pred = build({"type": "yolo_v8", "class_map": {0: 0, "2": 0}, "classes": 3}).process(
        outputs_of({"output0": v8_output()}), meta)
    assert pred.labels.tolist() == [0, 0]  # the third anchor's best mapped score 0.0005 is under 0.001
    np.testing.assert_allclose(pred.scores, [0.3, 0.6], rtol=1e-6)
    pred = build({"type": "yolo_v8", "class_map": {1: 7}, "threshold": 0.5}).process(
        outputs_of({"output0": v8_output()}), meta)
    assert pred.labels.tolist() == [7] and pred.scores.tolist() == pytest.approx([0.8])


def test_yolo_v8_shape_errors():
    meta = SampleMeta("x", (320, 320, 3), (320, 320))
    with pytest.raises(EngineError, match=r"adapter yolo_v8: output 'output0' has shape \[1, 7, 10\]; expected "
                                          r"\[1, 22, anchors\] for classes: 18"):
        build({"type": "yolo_v8", "classes": 18}).process(outputs_of({"output0": v8_output()}), meta)
    with pytest.raises(EngineError, match=r"has shape \[7, 3, 1, 1\]; expected \[1, 4 \+ classes, anchors\]"):
        build({"type": "yolo_v8"}).process(outputs_of({"output0": np.zeros((7, 3, 1, 1))}), meta)
    with pytest.raises(EngineError, match=r"class_map names model class 5 but output 'output0' has 3 classes"):
        build({"type": "yolo_v8", "class_map": {5: 0}}).process(outputs_of({"output0": v8_output()}), meta)


@pytest.mark.parametrize("config, message", [
    ({"type": "yolo_v8", "class_map": [1, 12]}, "adapter.class_map: [1, 12] is not a mapping"),
    ({"type": "yolo_v8", "class_map": {1: 0}, "classes": 1}, "adapter.class_map: model class 1 is not below"),
    ({"type": "yolo_v8", "conf_threshold": 0.2}, "adapter.conf_threshold: unknown key"),
    ({"type": "yolo_v3", "classes": 3}, "adapter.outputs: None: expected the list of region output names"),
    ({"type": "yolo_v3", "outputs": ["a"], "anchor_masks": [[0], [1]]}, "2 masks for 1 outputs"),
    ({"type": "yolo_v3", "outputs": ["a"], "anchor_masks": [[9]]}, "anchor_masks: [[9]]: expected per output"),
    ({"type": "yolo_v2", "anchors": "1, 2, 3"}, "adapter.anchors: '1, 2, 3' is not a list of anchor"),
    ({"type": "yolo_v2", "output_format": "CHW"}, "adapter.output_format: 'CHW' is not supported"),
    ({"type": "class_agnostic_detection", "scale": [1, 2, 3]}, "adapter.scale: [1, 2, 3] is not a scale"),
    ({"type": "mask_rcnn", "detection_out": "d"}, "adapter.raw_masks_out: missing"),
    ({"type": "ssd", "threshold": 0.5}, "adapter.threshold: unknown key"),
])
def test_bad_adapter_configs_are_reported(config, message):
    with pytest.raises(ConfigError) as err:
        build(config)
    assert any(message in line for line in err.value.problems), err.value.problems
