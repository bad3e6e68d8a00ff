"""Data-free mode (``engine.type: data_free`` / ``--engine data_free``): the synthetic image
generator, its cache, the config and flag checks, and a tiny model end to end."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import openvino as ov
import pytest
from click.testing import CliRunner
from openvino import opset13 as ops

import models
from pot_cli.cli import main
from pot_cli.config import validate_config
from pot_cli.engines import data_free
from pot_cli.engines.data_free import MANIFEST, SyntheticSpec, ensure_dataset, generate_image, image_spec
from pot_cli.errors import ConfigError, DatasetError


def pot(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def relu_model(shape, layout=None, et=ov.Type.f32) -> ov.Model:
    p = ops.parameter(shape, et, name="x")
    p.output(0).set_names({"x"})
    if layout:
        p.set_layout(ov.Layout(layout))
    return ov.Model([ops.relu(p)], [p], "relu")


# -- the generator -------------------------------------------------------------------------------

def test_generator_is_deterministic_and_images_differ():
    spec = SyntheticSpec(32, 48, 3, seed=5)
    a, b = generate_image(spec, 3), generate_image(spec, 3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, generate_image(spec, 4))
    assert not np.array_equal(a, generate_image(SyntheticSpec(32, 48, 3, seed=6), 3))


def test_images_are_bgr_uint8_of_the_size_asked_with_contrast():
    for i in range(4):
        img = generate_image(SyntheticSpec(40, 56, 3), i)
        assert img.shape == (40, 56, 3) and img.dtype == np.uint8
        assert img.std() > 15 and img.max() - img.min() > 120  # not flat
        assert np.abs(img.astype(int)[..., 0] - img[..., 2]).mean() > 1  # colour, not gray
    gray = generate_image(SyntheticSpec(28, 28, 1), 0)
    assert gray.shape == (28, 28) and gray.dtype == np.uint8 and gray.std() > 10


def test_bad_spec_is_refused():
    with pytest.raises(ValueError, match="8x8"):
        generate_image(SyntheticSpec(4, 4, 3), 0)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        generate_image(SyntheticSpec(16, 16, 2), 0)


# -- the cache -----------------------------------------------------------------------------------

def test_cache_is_written_whole_and_reused(tmp_path, caplog):
    folder = tmp_path / "cache" / "imgs"
    spec = SyntheticSpec(16, 16, 3)
    ensure_dataset(folder, spec, 5)
    names = sorted(p.name for p in folder.iterdir())
    assert names == [MANIFEST] + [f"{i:06d}.png" for i in range(5)]
    assert np.array_equal(cv2.imread(str(folder / "000002.png")), generate_image(spec, 2))
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left
    stamp = (folder / "000000.png").stat().st_mtime_ns
    caplog.set_level("INFO", logger="pot")
    ensure_dataset(folder, spec, 4)  # fewer needed: reused
    assert (folder / "000000.png").stat().st_mtime_ns == stamp
    assert any("using 4 synthetic 16x16 images cached" in r.getMessage() for r in caplog.records)
    ensure_dataset(folder, SyntheticSpec(20, 20, 3), 3)  # our cache of another size: replaced
    assert json.loads((folder / MANIFEST).read_text())["height"] == 20
    assert sorted(p.name for p in folder.iterdir() if p.suffix == ".png") == [f"{i:06d}.png" for i in range(3)]


def test_a_folder_of_other_images_is_used_as_it_is(tmp_path):
    models.write_images(tmp_path / "mine", 3, shape=(10, 10, 3))
    ensure_dataset(tmp_path / "mine", SyntheticSpec(16, 16, 3), 300)
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["img_000.png", "img_001.png", "img_002.png"]


def test_no_images_and_generate_data_false_is_an_error(tmp_path):
    with pytest.raises(DatasetError, match="generate_data is false"):
        ensure_dataset(tmp_path / "empty", SyntheticSpec(16, 16, 3), 3, generate=False)
    assert not (tmp_path / "empty").exists()


def test_a_file_or_a_folder_of_other_files_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="engine.data_source .*not a folder"):
        ensure_dataset(tmp_path / "f", SyntheticSpec(16, 16, 3), 3)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match="holds files but no image"):
        ensure_dataset(tmp_path / "d", SyntheticSpec(16, 16, 3), 3)


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def interrupted(spec, index):
        calls.append(index)
        if index == 2:
            raise KeyboardInterrupt
        return np.zeros((spec.height, spec.width, 3), np.uint8)

    monkeypatch.setattr(data_free, "generate_image", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ensure_dataset(tmp_path / "c", SyntheticSpec(16, 16, 3), 5)
    assert calls == [0, 1, 2]
    assert list(tmp_path.iterdir()) == []


def test_interrupted_regeneration_keeps_the_old_cache(tmp_path, monkeypatch):
    folder = tmp_path / "c"
    ensure_dataset(folder, SyntheticSpec(16, 16, 3), 2)
    before = sorted(p.name for p in folder.iterdir())

    def failing(spec, index):
        raise KeyboardInterrupt

    monkeypatch.setattr(data_free, "generate_image", failing)
    with pytest.raises(KeyboardInterrupt):
        ensure_dataset(folder, SyntheticSpec(24, 24, 3), 2)
    assert sorted(p.name for p in folder.iterdir()) == before
    assert json.loads((folder / MANIFEST).read_text())["height"] == 16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


# -- model inputs --------------------------------------------------------------------------------

def test_image_spec_from_the_model():
    assert image_spec(relu_model([1, 3, 20, 24], "NCHW"))[0] == SyntheticSpec(20, 24, 3)
    assert image_spec(relu_model([1, 20, 24, 3]))[0] == SyntheticSpec(20, 24, 3)  # NHWC from the shape
    assert image_spec(relu_model([-1, 1, 28, 28], "NCHW"))[0] == SyntheticSpec(28, 28, 1)  # dynamic batch
    assert image_spec(relu_model([1, 3, -1, -1], "NCHW"), shape=[1, 3, 32, 40])[0] == SyntheticSpec(32, 40, 3)


def test_dynamic_height_width_needs_shape():
    with pytest.raises(ConfigError, match=r"engine.shape: input 'x' \[1,3,\?,\?\] has a dynamic height or width.*"
                                          r"--shape"):
        image_spec(relu_model([1, 3, -1, -1], "NCHW"))


def test_non_image_and_multi_input_models_are_refused():
    with pytest.raises(ConfigError, match="not an image input"):
        image_spec(relu_model([1, 16], et=ov.Type.f32))
    with pytest.raises(ConfigError, match="data_free: the model has 2 inputs"):
        image_spec(models.multi_input())


def test_engine_feeds_generated_images_laid_out_for_the_model(tmp_path):
    import pot_cli.api  # noqa: F401  (loads the engines in the order the CLI does)
    from pot_cli.engines.cli_engines import create_data_free_engine

    cfg = validate_config({"model": {"model": str(_ir(tmp_path))}, "engine": {
        "type": "data_free", "data_source": str(tmp_path / "cache")},
        "compression": {"algorithms": [{"name": "DefaultQuantization"}]}}, source="t")
    model = relu_model([1, 12, 12, 3])
    engine = create_data_free_engine(cfg.engine, model, subset_size=4)
    samples = dict(engine.iter_samples(range(4)))
    assert sorted(samples) == [0, 1, 2, 3]
    x = samples[1]["x"]
    assert x.shape == (1, 12, 12, 3) and x.dtype == np.float32
    assert np.array_equal(x[0], generate_image(SyntheticSpec(12, 12, 3), 1).astype(np.float32))
    assert engine.calibration_where == str(tmp_path / "cache")


# -- config and flags ----------------------------------------------------------------------------

def _ir(tmp_path) -> Path:
    xml, _ = models.save_ir(models.conv_bias_relu(hw=16), tmp_path / "model", "tiny")
    return xml


def _config(tmp_path, engine: dict, algorithms=None) -> dict:
    return {"model": {"model": str(_ir(tmp_path))}, "engine": engine,
            "compression": {"algorithms": algorithms or [{"name": "DefaultQuantization"}]}}


def test_config_keys_and_defaults(tmp_path):
    cfg = validate_config(_config(tmp_path, {"type": "data_free", "shape": [1, 3, 16, 16], "layout": "NCHW"}), "t")
    assert (cfg.engine.type, cfg.engine.data_source, cfg.engine.generate_data, cfg.engine.data_type) == \
        ("data_free", None, True, "image")
    cfg = validate_config(_config(tmp_path, {"type": "data_free", "generate_data": False, "data_type": "image",
                                             "data_source": "c"}), "t")
    assert cfg.engine.generate_data is False and cfg.engine.data_source.endswith("c")


@pytest.mark.parametrize("engine,message", [
    ({"type": "data_free", "data_type": "text"}, "engine.data_type: 'text' is not supported; expected 'image'"),
    ({"type": "data_free", "config": "ac.yml"}, "engine.config: not used by engine type 'data_free'"),
    ({"type": "simplified", "data_source": "d", "generate_data": True},
     "engine.generate_data: not used by engine type 'simplified'"),
    ({"type": "data_free", "generate_data": "yes"}, "engine.generate_data"),
])
def test_config_errors_name_the_key(tmp_path, engine, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_config(_config(tmp_path, engine), "t")


def test_accuracy_aware_needs_the_accuracy_checker_engine(tmp_path):
    with pytest.raises(ConfigError, match="expected engine type 'accuracy_checker'"):
        validate_config(_config(tmp_path, {"type": "data_free"}, [{"name": "AccuracyAwareQuantization"}]), "t")


def test_subset_size_is_the_largest_stat_subset_size(tmp_path):
    cfg = validate_config(_config(tmp_path, {"type": "data_free"}, [
        {"name": "DefaultQuantization", "params": {"stat_subset_size": 7}},
        {"name": "MinMaxQuantization", "params": {"stat_subset_size": 11}}]), "t")
    assert data_free.subset_size(cfg.compression.algorithms) == 11
    cfg = validate_config(_config(tmp_path, {"type": "data_free"}), "t")
    assert data_free.subset_size(cfg.compression.algorithms) == 300


def test_cli_data_type_other_than_image_exits_2(tmp_path):
    r = pot("-q", "default", "-m", _ir(tmp_path), "--engine", "data_free", "--data-type", "audio",
            "--output-dir", tmp_path / "out")
    assert r.exit_code == 2
    assert "engine.data_type: 'audio' is not supported" in r.stderr and "Traceback" not in r.stderr


def test_cli_dynamic_model_without_shape_exits_2(tmp_path):
    xml, _ = models.save_ir(relu_model([1, 3, -1, -1], "NCHW"), tmp_path / "m", "dyn")
    r = pot("-q", "default", "-m", xml, "--engine", "data_free", "--data-source", tmp_path / "c",
            "--output-dir", tmp_path / "out", "-d")
    assert r.exit_code == 2
    assert "engine.shape" in r.stderr and "--shape" in r.stderr
    assert not (tmp_path / "c").exists()


def test_cli_bad_shape_flag_exits_2(tmp_path):
    r = pot("-q", "default", "-m", _ir(tmp_path), "--engine", "data_free", "--shape", "1,3,a,b",
            "--output-dir", tmp_path / "out")
    assert r.exit_code == 2 and "--shape 1,3,a,b: expected comma-separated integers" in r.stderr


# -- end to end ----------------------------------------------------------------------------------

def test_cli_end_to_end_generates_then_reuses_the_cache(tmp_path):
    xml = _ir(tmp_path)
    cache = tmp_path / "cache"
    config = tmp_path / "df.json"
    config.write_text(json.dumps({
        "model": {"model_name": "tiny", "model": str(xml)},
        "engine": {"type": "data_free", "data_source": str(cache), "layout": "NCHW"},
        "compression": {"algorithms": [{"name": "DefaultQuantization", "params": {"stat_subset_size": 6}}]}}))
    r = pot("-c", config, "--output-dir", tmp_path / "out", "-d")
    assert r.exit_code == 0, r.stderr
    out = tmp_path / "out" / "optimized" / "tiny.xml"
    assert r.stdout.strip() == str(out)
    assert "FakeQuantize" in {o.get_type_name() for o in ov.Core().read_model(str(out)).get_ops()}
    assert len(list(cache.glob("*.png"))) == 6 and "generating 6 synthetic 16x16 images" in r.stderr
    first = out.read_bytes(), out.with_suffix(".bin").read_bytes()
    # a second run reuses the cache and gives the same model
    r = pot("-c", config, "--output-dir", tmp_path / "out2", "-d")
    assert r.exit_code == 0, r.stderr
    assert "generating" not in r.stderr and "using 6 synthetic 16x16 images cached in" in r.stderr
    out2 = tmp_path / "out2" / "optimized" / "tiny.xml"
    assert (out2.read_bytes(), out2.with_suffix(".bin").read_bytes()) == first


def test_cli_flags_and_the_default_cache_folder(tmp_path, monkeypatch):
    """``-q default --engine data_free`` without --data-source: 300 images in the user's cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    xml, _ = models.save_ir(models.conv_bias_relu(c_in=1, hw=12, batch=-1), tmp_path / "m", "gray")
    r = pot("-q", "default", "-m", xml, "--engine", "data_free", "--output-dir", tmp_path / "out", "-d")
    assert r.exit_code == 0, r.stderr
    cache = tmp_path / "xdg" / "pot" / "data_free" / "12x12x1"
    assert len(list(cache.glob("*.png"))) == 300
    assert cv2.imread(str(cache / "000000.png"), cv2.IMREAD_UNCHANGED).shape == (12, 12)
