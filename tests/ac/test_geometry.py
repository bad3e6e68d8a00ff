"""Geometric preprocessing (resize, auto_resize, crop, padding) and what it records in
``SampleMeta.geometric_operations``, against Accuracy Checker 2023.3's own preprocessors
(``tests/data/ac_reference/adapter_expected.json``, see ``make_adapter_reference.py``)."""
from __future__ import annotations

import base64
import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from pot_cli.engines.ac.representations import SampleMeta
from pot_cli.engines.preprocessing import Problems, Step, padding_amounts, parse_step
from pot_cli.errors import DatasetError

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "ac_reference" / "adapter_expected.json"


@lru_cache(maxsize=1)
def reference() -> dict:
    return json.loads(FIXTURE.read_text())


def steps_of(configs: list[dict]) -> list[Step]:
    problems = Problems("test.yml")
    steps = [parse_step(c, f"preprocessing[{k}]", problems) for k, c in enumerate(configs)]
    problems.raise_if_any()
    return steps


def run_geometry(name: str) -> tuple[np.ndarray, SampleMeta]:
    """Our preprocessing of the fixture's geometry case ``name``: ``(image, meta)``."""
    case = reference()["geometry"][name]
    image = np.random.RandomState(case["seed"]).randint(0, 256, size=case["image_shape"]).astype(np.uint8)
    meta = SampleMeta(name, tuple(image.shape))
    if case["model_input_size"]:
        meta.extra["model_input_size"] = tuple(case["model_input_size"])
    for step in steps_of(case["steps"]):
        image = step.apply(image, Path(name), meta)
    meta.input_size = image.shape[:2]
    return image, meta


def case_meta(case: dict) -> SampleMeta:
    """The sample metadata of an adapter or postprocessing reference case: from our preprocessing
    of its geometry case, else from its image (and input) size."""
    if case["geometry"]:
        return run_geometry(case["geometry"])[1]
    return SampleMeta("img", tuple(case["image_size"]),
                      tuple(case["input_size"]) if case.get("input_size") else None)


def unpack(packed: dict) -> np.ndarray:
    raw = np.frombuffer(base64.b64decode(packed["base64"]), dtype=packed["stored"])
    return raw.astype(packed["dtype"]).reshape(packed["shape"])


GEOMETRY = sorted(reference()["geometry"])


@pytest.mark.parametrize("name", GEOMETRY)
def test_geometry_matches_accuracy_checker(name):
    case = reference()["geometry"][name]
    image, meta = run_geometry(name)
    want = unpack(case["output"])
    assert image.shape == want.shape and image.dtype == want.dtype
    np.testing.assert_array_equal(image, want)  # OpenCV 4.8 (reference) and ours agree on these
    ours = meta.geometric_operations
    assert [op["type"].replace("auto_resize", "resize") for op in ours] == [op["type"] for op in case["ops"]]
    for mine, theirs in zip(ours, case["ops"]):
        keys = {"resize": ("scale_x", "scale_y", "original_width", "original_height", "preferable_width",
                           "preferable_height"),
                "padding": ("pad", "pref_width", "pref_height", "width", "height", "resized")}.get(theirs["type"], ())
        for key in keys:
            assert mine[key] == pytest.approx(theirs[key], abs=1e-12), (name, key)
        if theirs["type"] == "resize":
            assert [mine["dst_height"], mine["dst_width"], 1] == case["image_info"] or len(ours) > 1


def test_padding_numbers_by_hand():
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    meta = SampleMeta("x", image.shape)
    (step,) = steps_of([{"type": "padding", "dst_width": 6, "dst_height": 5, "pad_value": [1, 2, 3]}])
    out = step.apply(image, Path("x"), meta)
    # center: 3 rows -> 1 top, 2 bottom; 3 columns -> 1 left, 2 right
    assert out.shape == (5, 6, 3)
    np.testing.assert_array_equal(out[1:3, 1:4], image)
    assert out[0, 0].tolist() == [1, 2, 3] and out[4, 5].tolist() == [1, 2, 3]
    assert meta.geometric_operations == [{
        "type": "padding", "pad": [1, 1, 2, 2], "pref_width": 6, "pref_height": 5, "width": 3, "height": 2,
        "original_width": 3, "original_height": 2, "resized": False, "dst_width": 6, "dst_height": 5}]
    assert padding_amounts("center", 6, 5, 3, 2, left_top_extend=True) == [2, 2, 1, 1]
    assert padding_amounts("left_top", 6, 5, 3, 2) == [3, 3, 0, 0]
    assert padding_amounts("right_bottom", 6, 5, 3, 2) == [0, 0, 3, 3]


def test_padding_stride_uses_the_resize_preferred_size():
    image = np.zeros((30, 45, 1), dtype=np.uint8)
    meta = SampleMeta("x", image.shape)
    resize, pad = steps_of([{"type": "resize", "size": 20, "aspect_ratio_scale": "fit_to_window"},
                            {"type": "padding", "stride": 8, "pad_type": "right_bottom"}])
    out = pad.apply(resize.apply(image, Path("x"), meta), Path("x"), meta)
    # fit_to_window: scale 20/45 -> 20 x int(13.33) = 13; pad to the preferred 20 x 20, then stride 8 -> 24 x 24
    assert out.shape == (24, 24, 1) and out.dtype == np.float32
    assert meta.geometric_operations[1]["pad"] == [0, 0, 11, 4]
    assert meta.geometric_operations[0]["scale_x"] == pytest.approx(20 / 45)


def test_crop_records_its_offset_and_central_fraction_truncates():
    image = np.zeros((30, 45, 3), dtype=np.uint8)
    meta = SampleMeta("x", image.shape)
    (step,) = steps_of([{"type": "crop", "central_fraction": 0.875}])
    out = step.apply(image, Path("x"), meta)
    assert out.shape == (26, 39, 3)  # int(26.25), int(39.375)
    assert meta.geometric_operations == [{"type": "crop", "top": 2, "left": 3, "original_width": 45,
                                          "original_height": 30, "dst_width": 39, "dst_height": 26}]


def test_steps_without_meta_still_work():
    image = np.full((4, 6, 3), 9, dtype=np.uint8)
    resize, pad = steps_of([{"type": "resize", "size": 8}, {"type": "padding", "size": 10}])
    out = pad.apply(resize.apply(image, Path("x")), Path("x"))
    assert out.shape == (10, 10, 3) and out[5, 5, 0] == 9 and out[0, 0, 0] == 0


def test_auto_resize_needs_the_model_input_size():
    (step,) = steps_of([{"type": "auto_resize"}])
    image = np.zeros((5, 7, 3), dtype=np.uint8)
    with pytest.raises(DatasetError, match=r"img.png: preprocessing auto_resize needs the model input size"):
        step.apply(image, Path("img.png"), SampleMeta("img.png", image.shape))
    meta = SampleMeta("img.png", image.shape, extra={"model_input_size": (3, 4)})
    out = step.apply(image, Path("img.png"), meta)
    assert out.shape == (3, 4, 3) and out.dtype == np.float32
    assert meta.geometric_operations[0]["scale_x"] == pytest.approx(4 / 7)


def test_resize_size_wins_and_frcnn_aspect():
    (step,) = steps_of([{"type": "resize", "size": 10, "dst_width": 4, "dst_height": 4}])
    assert step.apply(np.zeros((20, 30, 3), np.uint8), Path("x")).shape == (10, 10, 3)
    (step,) = steps_of([{"type": "resize", "dst_width": 40, "dst_height": 24,
                         "aspect_ratio_scale": "frcnn_keep_aspect_ratio"}])
    # shorter side 24 would make the longer 108 > 40: fit into 40 x 40 instead
    assert step.apply(np.zeros((20, 90, 3), np.uint8), Path("x")).shape == (8, 40, 3)


@pytest.mark.parametrize("config, message", [
    ({"type": "padding", "pad_type": "middle"}, "preprocessing[0].pad_type: 'middle' is not supported"),
    ({"type": "padding", "stride": 0}, "preprocessing[0].stride: 0 is not a positive integer"),
    ({"type": "padding", "pad_value": "a, b"}, "preprocessing[0].pad_value: 'a, b' is not a number"),
    ({"type": "padding", "use_numpy": True, "pad_value": "1, 2"}, "has 2 value(s); expected 3 with use_numpy"),
    ({"type": "padding", "numpy_pad_mode": "reflectt"}, "preprocessing[0].numpy_pad_mode: 'reflectt'"),
    ({"type": "padding", "dst_width": 8}, "padding needs 'size', both 'dst_width' and 'dst_height', or neither"),
    ({"type": "padding", "enable_resize": "yes"}, "preprocessing[0].enable_resize: 'yes' is not a boolean"),
    ({"type": "auto_resize", "size": 3}, "preprocessing[0].size: unknown key"),
    ({"type": "resize", "size": 8, "aspect_ratio_scale": "east_keep_aspect_ratio"},
     "aspect_ratio_scale: 'east_keep_aspect_ratio' is not supported"),
])
def test_bad_geometry_configs_are_reported(config, message):
    problems = Problems("test.yml")
    parse_step(config, "preprocessing[0]", problems)
    assert any(message in line for line in problems.lines), problems.lines
