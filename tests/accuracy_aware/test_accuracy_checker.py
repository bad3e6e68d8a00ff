"""The Accuracy Checker config reader: formats, converters, readers, preprocessing, errors."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest
import yaml

import models
from pot_cli.config import validate_config
from pot_cli.config.model import EngineConfig
from pot_cli.engines.accuracy_checker import create_ac_engine
from pot_cli.engines.evaluator import Evaluator
from pot_cli.errors import ConfigError, DatasetError, NotSupportedError


def engine_of(tmp_path: Path, doc: dict):
    path = tmp_path / "ac.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return create_ac_engine(EngineConfig(type="accuracy_checker", ac_config=path), "<command line>")


def original(dataset: dict, launcher: dict | None = None) -> dict:
    """A config in the original Accuracy Checker layout around one dataset."""
    return {"models": [{"name": "m", "launchers": [launcher or {"framework": "dlsdk", "adapter": "classification"}],
                        "datasets": [dataset]}]}


@pytest.fixture
def images(tmp_path) -> Path:
    """``imgs/`` with 6 BGR PNGs of 10 x 20 (H x W) and ``val.txt`` labelling them 0..5."""
    paths = models.write_images(tmp_path / "imgs", 6, (10, 20, 3), seed=3)
    (tmp_path / "val.txt").write_text("".join(f"{p.name} {k}\n" for k, p in enumerate(paths)))
    return tmp_path


def imagenet(**extra) -> dict:
    conv = {"converter": "imagenet", "annotation_file": "val.txt"}
    conv.update(extra)
    return conv


def test_original_format_with_preprocessing_matches_opencv(images):
    eng = engine_of(images, original({
        "name": "val", "data_source": "imgs", "annotation_conversion": imagenet(has_background=True),
        "reader": "opencv_imread",
        "preprocessing": [{"type": "resize", "size": 8, "aspect_ratio_scale": "greater"},
                          {"type": "crop", "size": 8}, {"type": "bgr_to_rgb"},
                          {"type": "normalization", "mean": "10, 20, 30", "std": [2, 4, 8]}],
        "metrics": [{"type": "accuracy", "top_k": 1}]}))
    assert eng.optimization is eng.evaluation and len(eng.evaluation) == 6
    assert eng.evaluation.annotations == [1, 2, 3, 4, 5, 6]  # has_background shifts labels by one
    eng.bind(models.conv_bias_relu(hw=8))
    img = cv2.imread(str(eng.evaluation.files[2]))  # 10 x 20: the shorter side becomes 8 -> 8 x 16
    img = cv2.resize(img, (16, 8))[:, 4:12, ::-1]
    want = ((img.astype(np.float32) - np.float32([10, 20, 30])) / np.float32([2, 4, 8])).transpose(2, 0, 1)[None]
    np.testing.assert_array_equal(eng.evaluation.load(2)["x"], want)


def test_tagged_datasets_calibrate_on_an_unannotated_folder(images):
    models.write_images(images / "calib", 4, (8, 8, 3), seed=9)
    eng = engine_of(images, {"models": [{"name": "m", "launchers": [{"framework": "openvino"}], "datasets": {
        "optimization": {"name": "calib", "data_source": "calib"},
        "evaluation": {"name": "val", "data_source": "imgs", "annotation_conversion": imagenet(),
                       "preprocessing": [{"type": "resize", "dst_width": 8, "dst_height": 8}],
                       "metrics": ["accuracy"]}}}]})
    assert (eng.optimization.name, len(eng.optimization), eng.optimization.annotations) == ("calib", 4, None)
    assert (eng.evaluation.name, len(eng.evaluation)) == ("val", 6)
    eng.bind(models.conv_bias_relu(hw=8))
    assert eng.optimization.load(0)["x"].shape == eng.evaluation.load(0)["x"].shape == (1, 3, 8, 8)
    eng.optimization.metrics = ()
    with pytest.raises(ConfigError):
        type(eng)(eng.name, eng.source, eng.launcher, eng.evaluation, eng.optimization).require_metrics("-e")


def test_inline_datasets_in_the_pot_config(images):
    xml, _ = models.save_ir(models.conv_bias_relu(hw=8), images / "model", "m")
    raw = {"model": {"model": str(xml)},
           "engine": {"launchers": [{"framework": "dlsdk"}],
                      "datasets": [{"name": "val", "data_source": str(images / "imgs"),
                                    "annotation_conversion": imagenet(annotation_file=str(images / "val.txt")),
                                    "preprocessing": [{"type": "resize", "size": 8}],
                                    "metrics": [{"type": "accuracy", "name": "top1"}], "subsample_size": 4}]},
           "compression": {"algorithms": [{"name": "AccuracyAwareQuantization"}]}}
    cfg = validate_config(raw, "<command line>")
    eng = create_ac_engine(cfg.engine, cfg.source)
    assert eng.source == "<command line>: engine"
    assert len(eng.evaluation) == 4 and eng.evaluation.metrics[0].name == "top1"


def test_subsample_size_count_percent_and_order(images):
    def files(**kw):
        d = {"data_source": "imgs", "annotation_conversion": imagenet(), "metrics": ["accuracy"]}
        d.update(kw)
        return [p.name for p in engine_of(images, original(d)).evaluation.files]
    all_files = files()
    shuffled = files(subsample_size=3)
    assert len(shuffled) == 3 and shuffled == sorted(shuffled) and set(shuffled) <= set(all_files)
    assert files(subsample_size=3) == shuffled  # seeded (subsample_seed 666)
    assert files(subsample_size="50%", shuffle=False) == all_files[:3]


def test_class_folder_converter_gray_reader(tmp_path):
    for k, name in enumerate(("shirt", "bag")):
        models.write_images(tmp_path / "data" / name, 2, (6, 6), seed=k)
    eng = engine_of(tmp_path, original({"data_source": "data", "reader": {"type": "opencv_imread",
                                                                          "reading_flag": "gray"},
                                        "annotation_conversion": {"converter": "cls_dataset_folder"},
                                        "metrics": ["accuracy"]}))
    assert eng.evaluation.label_names == ["bag", "shirt"]
    assert eng.evaluation.annotations == [0, 0, 1, 1]
    eng.bind(models.conv_only(c_in=1, hw=6))
    assert eng.evaluation.load(0)["x"].shape == (1, 1, 6, 6)


def test_features_regression_with_numpy_reader_and_mae(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "inputs").mkdir()
    (tmp_path / "refs").mkdir()
    deltas = []
    for k in range(5):
        x = rng.standard_normal(4).astype(np.float32)
        d = rng.uniform(-1, 1, 4).astype(np.float32)
        np.save(tmp_path / "inputs" / f"s{k}.npy", x)
        np.save(tmp_path / "refs" / f"s{k}.npy", 2 * x + d)
        deltas.append(np.abs(d).mean())
    x = models.param("x", [1, 4])
    model = ov.Model([ops.result(ops.multiply(x, ops.constant(np.float32(2.0))))], [x], "double")
    eng = engine_of(tmp_path, original({
        "data_source": "inputs", "reader": "numpy_reader",
        "annotation_conversion": {"converter": "features_regression", "input_dir": "inputs", "reference_dir": "refs",
                                  "input_suffix": ".npy", "reference_suffix": ".npy"},
        "metrics": [{"type": "mae"}, {"type": "rmse"}]}, {"framework": "openvino", "adapter": "regression"}))
    eng.bind(model)
    result = Evaluator(eng.evaluation).evaluate(model)
    assert result.metrics["mae"] == pytest.approx(np.mean(deltas), rel=1e-5)
    assert eng.launcher.adapter == "regression"


def test_unsupported_entries_are_named_with_what_is_supported(images):
    with pytest.raises(ConfigError) as e:
        engine_of(images, {"models": [{"name": "m", "launchers": [{"framework": "openvino"}], "datasets": [{
            "data_source": "imgs", "annotation_conversion": imagenet(), "reader": "lmdb_reader",
            "preprocessing": [{"type": "crop_rect"}, {"type": "resize"}], "metrics": [{"type": "cmc"}],
            "postprocessing": [{"type": "soft_nms"}], "annotations_file": "x"}]}]})
    src = f"{images / 'ac.yml'}: models[0]"
    lines = e.value.problems
    expected = [
        f"{src}.datasets[0].annotations_file: unknown key (did you mean 'annotation'?)",
        f"{src}.datasets[0].reader: 'lmdb_reader' is not supported",
        f"{src}.datasets[0].preprocessing[0].type: 'crop_rect' is not supported",
        f"{src}.datasets[0].preprocessing[1]: resize needs 'size' or both 'dst_width' and 'dst_height'",
        f"{src}.datasets[0].metrics[0].type: 'cmc' is not supported; expected one of: accuracy, mae, mse, rmse",
        f"{src}.datasets[0].postprocessing[0].type: 'soft_nms' is not supported",
    ]
    for want in expected:
        assert any(line.startswith(want) for line in lines), (want, lines)
    assert len(lines) == len(expected)


def test_no_openvino_launcher_names_what_was_found(images):
    with pytest.raises(ConfigError, match=r"models: no launcher with framework dlsdk or openvino for device CPU "
                                          r"\(found models\[0\]\.launchers\[0\]: tf\)"):
        engine_of(images, {"models": [{"name": "m", "launchers": [{"framework": "tf"}], "datasets": [{
            "data_source": "imgs", "annotation_conversion": imagenet(), "metrics": [{"type": "accuracy"}]}]}]})


def test_unsupported_converter(images):
    with pytest.raises(ConfigError, match=r"models\[0\]\.datasets\[0\]\.annotation_conversion\.converter: "
                                          r"'market1501_reid' is not supported; expected one of: camvid, "
                                          r"cityscapes, cls_dataset_folder, common_semantic_segmentation"):
        engine_of(images, original({"data_source": "imgs", "annotation_conversion": {"converter": "market1501_reid"}}))


def test_preconverted_annotation_is_not_supported(images):
    with pytest.raises(NotSupportedError, match=r"datasets\[0\]\.annotation: Accuracy Checker's pre-converted "
                                                r"annotation files \(pickles\) cannot be read; expected "
                                                "annotation_conversion"):
        engine_of(images, original({"data_source": "imgs", "annotation": "val.pickle"}))


def test_pickle_beside_a_conversion_is_ignored_and_never_written(images):
    eng = engine_of(images, original({"data_source": "imgs", "annotation_conversion": imagenet(),
                                      "annotation": "val.pickle", "dataset_meta": "val.json"}))
    assert len(eng.evaluation) == 6
    assert not (images / "val.pickle").exists() and not (images / "val.json").exists()


def test_size_and_channel_mismatches_name_the_missing_step(images):
    eng = engine_of(images, original({"data_source": "imgs", "annotation_conversion": imagenet()}))
    eng.bind(models.conv_bias_relu(hw=8))
    with pytest.raises(DatasetError, match=r"the image is 20x10 after preprocessing; input 'x' expects 8x8; "
                                           r"expected a resize \(or crop\) step"):
        eng.evaluation.load(0)
    eng.bind(models.conv_only(c_in=1, hw=10))
    with pytest.raises(DatasetError, match="has 3 channel.* expects 1; expected reader reading_flag: gray"):
        eng.evaluation.load(0)


def test_missing_annotated_files_are_listed(images):
    (images / "imgs" / "img_001.png").unlink()
    with pytest.raises(DatasetError, match=r"1 listed file\(s\) not found in .*imgs: img_001.png"):
        engine_of(images, original({"data_source": "imgs", "annotation_conversion": imagenet()}))
