"""Tests of the simplified-engine data source (folders, globs, lists, images, .npy/.npz)."""
from __future__ import annotations

import logging
import struct
from pathlib import Path

import cv2
import numpy as np
import openvino as ov
import pytest
from openvino import opset13 as ops

from pot_cli.engines.data_source import (
    DataSource,
    SampleReadError,
    create_data_source,
    select_subset,
)
from pot_cli.engines.image_io import infer_image_layout, looks_like_image, parse_layout
from pot_cli.errors import ConfigError, DatasetError

SHARED = Path(__file__).resolve().parents[2].parent / "shared"


# -- tiny models --------------------------------------------------------------------------------

def relu_model(shape, layout: str | None = None, et=ov.Type.f32, name: str = "x") -> ov.Model:
    """Parameter -> Relu -> Result."""
    p = ops.parameter(shape, et, name=name)
    if layout:
        p.set_layout(ov.Layout(layout))
    return ov.Model([ops.relu(p)], [p], "relu")


def token_model() -> ov.Model:
    """Three int64 inputs [?, ?] (like a BERT), summed."""
    params = [ops.parameter([-1, -1], ov.Type.i64, name=n)
              for n in ("input_ids", "attention_mask", "token_type_ids")]
    out = ops.add(ops.add(params[0], params[1]), params[2])
    return ov.Model([out], params, "tokens")


def write(path: Path, image: np.ndarray) -> Path:
    """Write an image (any Unicode path) with OpenCV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix, image)
    assert ok
    buf.tofile(path)
    return path


def rgb_noise(h=32, w=32, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "pot" and r.levelno == logging.WARNING]


# -- listing files ------------------------------------------------------------------------------

def test_folder_recursive_sorted_hidden_ignored(tmp_path):
    for rel in ("b.png", "a.png", "sub/c.png", "a_dir/z.png", ".hidden.png", ".cache/x.png"):
        write(tmp_path / rel, rgb_noise())
    ds = create_data_source(tmp_path, relu_model([1, 3, 32, 32]))
    rel = [p.relative_to(tmp_path).as_posix() for p in ds.paths]
    assert rel == ["a.png", "a_dir/z.png", "b.png", "sub/c.png"]
    assert len(ds) == 4 and ds.skipped == []
    assert all(p.is_absolute() for p in ds.paths)


def test_glob_pattern(tmp_path, monkeypatch):
    for rel in ("imgs/1.png", "imgs/2.jpg", "imgs/deep/3.png", "other/4.png"):
        write(tmp_path / rel, rgb_noise())
    model = relu_model([1, 3, 32, 32])
    ds = create_data_source(str(tmp_path / "imgs" / "*.png"), model)
    assert [p.name for p in ds.paths] == ["1.png"]
    ds = create_data_source(str(tmp_path / "imgs" / "**" / "*.png"), model)
    assert [p.name for p in ds.paths] == ["1.png", "3.png"]
    monkeypatch.chdir(tmp_path)
    ds = create_data_source("*/*.png", model)
    assert [p.relative_to(tmp_path).as_posix() for p in ds.paths] == ["imgs/1.png", "other/4.png"]
    with pytest.raises(DatasetError, match=r"engine\.data_source: nothing/\*\.png: no file matches"):
        create_data_source("nothing/*.png", model)


def test_missing_path_names_it_and_the_key(tmp_path):
    with pytest.raises(ConfigError) as e:  # a path that does not exist: a configuration error
        create_data_source(tmp_path / "nope", relu_model([1, 3, 32, 32]), source_key="engine.data_source")
    assert "engine.data_source" in e.value.message and str(tmp_path / "nope") in e.value.message
    assert e.value.exit_code == 2


def test_txt_list_missing_file_warns_once_and_skips(tmp_path, caplog):
    write(tmp_path / "imgs" / "a.png", rgb_noise())
    write(tmp_path / "imgs" / "b.png", rgb_noise())
    lst = tmp_path / "list.txt"
    lst.write_text("# calibration files\n\nimgs/b.png\nimgs/gone.png\n"
                   f"{tmp_path / 'imgs' / 'a.png'} 7\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="pot"):
        ds = create_data_source(lst, relu_model([1, 3, 32, 32]))
    assert [p.name for p in ds.paths] == ["b.png", "a.png"]  # listed order kept
    assert [p.name for p in ds.skipped] == ["gone.png"]
    msgs = warnings_of(caplog)
    assert len(msgs) == 1 and "imgs/gone.png" in msgs[0] and "missing" in msgs[0]


def test_non_image_files_skipped_with_one_warning(tmp_path, caplog):
    write(tmp_path / "a.png", rgb_noise())
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "meta.json").write_text("{}")
    (tmp_path / "fake.jpg").write_bytes(b"this is not a jpeg")
    with caplog.at_level(logging.WARNING, logger="pot"):
        ds = create_data_source(tmp_path, relu_model([1, 3, 32, 32]))
    assert [p.name for p in ds.paths] == ["a.png"]
    assert sorted(p.name for p in ds.skipped) == ["fake.jpg", "meta.json", "notes.txt"]
    msgs = warnings_of(caplog)
    assert len(msgs) == 1
    assert "skipped 3 of 4 files" in msgs[0]
    assert "meta.json, notes.txt" in msgs[0] and "corrupt: fake.jpg" in msgs[0]


def test_empty_folder_and_no_usable_samples(tmp_path):
    model = relu_model([1, 3, 32, 32])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError) as e:
        create_data_source(tmp_path / "empty", model)
    assert e.value.message == (f"{tmp_path / 'empty'}: no usable samples (no files found); "
                               "expected images (.jpg .png .bmp .tif .webp ...) or .npy/.npz files")
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"no usable samples \(1 not images or \.npy/\.npz: a\.txt\)"):
        create_data_source(tmp_path / "texts", model)


def test_unicode_and_spaces_in_paths(tmp_path):
    folder = tmp_path / "données d'étalonnage" / "照片 1"
    img = rgb_noise(seed=3)
    write(folder / "чай с лимоном.png", img)
    ds = create_data_source(tmp_path / "données d'étalonnage", relu_model([1, 3, 32, 32]))
    assert ds.paths[0].name == "чай с лимоном.png"
    np.testing.assert_array_equal(ds[0]["x"][0], img.transpose(2, 0, 1).astype(np.float32))
    lst = tmp_path / "liste à moi.txt"
    lst.write_text("données d'étalonnage/照片 1/чай с лимоном.png\n", encoding="utf-8")
    assert len(create_data_source(lst, relu_model([1, 3, 32, 32]))) == 1


# -- image conversion ---------------------------------------------------------------------------

def test_bgr_image_to_nchw_values_unchanged(tmp_path):
    img = rgb_noise(seed=1)
    write(tmp_path / "a.png", img)
    ds = create_data_source(tmp_path, relu_model([1, 3, 32, 32]))
    x = ds[0]["x"]
    assert x.shape == (1, 3, 32, 32) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_array_equal(x[0], img.transpose(2, 0, 1))  # BGR, 0..255, no normalization
    assert ds.layouts == {"x": "NCHW"}
    assert ds.input_shapes["x"] == ov.PartialShape([1, 3, 32, 32])


def test_gray_image_to_bgr_input(tmp_path):
    gray = np.arange(32 * 32, dtype=np.uint32).reshape(32, 32).astype(np.uint8)
    write(tmp_path / "g.png", gray)
    x = create_data_source(tmp_path, relu_model([1, 3, 32, 32]))[0]["x"]
    for c in range(3):
        np.testing.assert_array_equal(x[0, c], gray)


def test_bgr_image_to_gray_input(tmp_path):
    img = rgb_noise(seed=2)
    write(tmp_path / "c.png", img)
    x = create_data_source(tmp_path, relu_model([1, 1, 32, 32]))[0]["x"]
    assert x.shape == (1, 1, 32, 32)
    np.testing.assert_array_equal(x[0, 0], cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))


def test_bgra_drops_alpha(tmp_path):
    bgra = np.zeros((32, 32, 4), np.uint8)
    bgra[..., 0], bgra[..., 1], bgra[..., 2], bgra[..., 3] = 10, 20, 30, 40
    write(tmp_path / "a.png", bgra)
    x = create_data_source(tmp_path, relu_model([1, 3, 32, 32]))[0]["x"]
    assert x.shape == (1, 3, 32, 32)
    assert [float(x[0, c].mean()) for c in range(3)] == [10.0, 20.0, 30.0]
    # a BGRA input keeps the alpha channel
    x4 = create_data_source(tmp_path, relu_model([1, 4, 32, 32]))[0]["x"]
    assert [float(x4[0, c].mean()) for c in range(4)] == [10.0, 20.0, 30.0, 40.0]


def test_16bit_png_scaled_to_8bit_range(tmp_path):
    g16 = np.full((32, 32), 65535, np.uint16)
    g16[0, 0], g16[0, 1] = 0, 257 * 100
    write(tmp_path / "g16.png", g16)
    x = create_data_source(tmp_path, relu_model([1, 1, 32, 32]))[0]["x"]
    assert x.dtype == np.float32
    assert x[0, 0, 0, 0] == 0 and x[0, 0, 0, 1] == 100 and x[0, 0, 5, 5] == 255


def test_float_image_kept_as_is(tmp_path):
    f = np.full((32, 32, 3), 0.25, np.float32)
    write(tmp_path / "f.pfm", f)
    x = create_data_source(tmp_path, relu_model([1, 3, 32, 32]))[0]["x"]
    np.testing.assert_allclose(x, 0.25)


def test_resize_to_model_hw(tmp_path):
    img = rgb_noise(40, 50, seed=4)
    write(tmp_path / "a.png", img)
    x = create_data_source(tmp_path, relu_model([1, 3, 24, 16]))[0]["x"]
    assert x.shape == (1, 3, 24, 16)
    expected = cv2.resize(img, (16, 24), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1)
    np.testing.assert_array_equal(x[0], expected)


def test_exif_orientation_applied_like_imread(tmp_path):
    img = np.zeros((8, 16, 3), np.uint8)
    img[:, :8] = 200
    jpeg = cv2.imencode(".jpg", img)[1].tobytes()
    tiff = (b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1)
            + struct.pack("<HHIHH", 0x0112, 3, 1, 6, 0) + struct.pack("<I", 0))
    app1 = b"Exif\x00\x00" + tiff
    path = tmp_path / "rotated.jpg"
    path.write_bytes(jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:])
    ds = create_data_source(tmp_path, relu_model([1, 3, -1, -1]))
    x = ds[0]["x"]
    assert x.shape == (1, 3, 16, 8)  # rotated by 90 degrees, as cv2.imread does
    np.testing.assert_array_equal(x[0].transpose(1, 2, 0), cv2.imread(str(path)))


# -- layouts and shapes -------------------------------------------------------------------------

def test_nhwc_from_ir_layout(tmp_path):
    img = rgb_noise(seed=5)
    write(tmp_path / "a.png", img)
    ds = create_data_source(tmp_path, relu_model([1, 128, 128, 3], layout="NHWC"))
    x = ds[0]["x"]
    assert ds.layouts == {"x": "NHWC"} and x.shape == (1, 128, 128, 3)
    np.testing.assert_array_equal(x[0], cv2.resize(img, (128, 128)))


def test_nhwc_inferred_from_shape(tmp_path):
    write(tmp_path / "a.png", rgb_noise())
    ds = create_data_source(tmp_path, relu_model([1, 20, 24, 3]))
    assert ds.layouts == {"x": "NHWC"} and ds[0]["x"].shape == (1, 20, 24, 3)


def test_ir_layout_wins_over_shape_and_argument_wins_over_ir(tmp_path, caplog):
    img = rgb_noise(seed=6)
    write(tmp_path / "a.png", img)
    # [1,3,8,3]: the shape alone says NCHW (3 channels, H 8, W 3)
    assert create_data_source(tmp_path, relu_model([1, 3, 8, 3]))[0]["x"].shape == (1, 3, 8, 3)
    ds = create_data_source(tmp_path, relu_model([1, 3, 8, 3], layout="NHWC"))
    assert ds.layouts == {"x": "NHWC"}
    np.testing.assert_array_equal(ds[0]["x"][0], cv2.resize(img, (8, 3)))  # H 3, W 8
    with caplog.at_level(logging.WARNING, logger="pot"):
        ds = create_data_source(tmp_path, relu_model([1, 3, 8, 3], layout="NHWC"), layout="nchw")
    assert ds.layouts == {"x": "NCHW"}
    assert warnings_of(caplog) == ["engine.layout NCHW for input 'x' [1,3,8,3] overrides the IR's layout NHWC"]
    np.testing.assert_array_equal(ds[0]["x"][0], cv2.resize(img, (3, 8)).transpose(2, 0, 1))
    ds = create_data_source(tmp_path, relu_model([1, 3, 8, 3]), layout={"x": "[N,H,W,C]"})
    assert ds.layouts == {"x": "NHWC"}


def test_rank3_chw_and_hwc(tmp_path):
    write(tmp_path / "a.png", rgb_noise())
    assert create_data_source(tmp_path, relu_model([3, 16, 16]))[0]["x"].shape == (3, 16, 16)
    assert create_data_source(tmp_path, relu_model([16, 16, 3]))[0]["x"].shape == (16, 16, 3)


def test_layout_errors(tmp_path):
    write(tmp_path / "a.png", rgb_noise())
    with pytest.raises(DatasetError, match=r"cannot tell its layout.*--layout or engine.layout"):
        create_data_source(tmp_path, relu_model([1, 8, 8, 8]))
    # a layout the user gave that cannot be right is a config error (exit code 2) naming the key
    with pytest.raises(ConfigError, match=r"engine.layout 'NCH' for input 'x'.*expected 4 axis letters"):
        create_data_source(tmp_path, relu_model([1, 3, 8, 8]), layout="NCH")
    with pytest.raises(ConfigError, match=r"engine.layout: unknown input\(s\) y; expected x"):
        create_data_source(tmp_path, relu_model([1, 3, 8, 8]), layout={"y": "NCHW"})
    with pytest.raises(DatasetError, match=r"has 2 channels; images give 1 \(gray\), 3 \(BGR\)"):
        create_data_source(tmp_path, relu_model([1, 2, 8, 8]), layout="NCHW")


def test_dynamic_batch_set_to_one(tmp_path):
    write(tmp_path / "a.png", np.full((28, 28), 9, np.uint8))
    ds = create_data_source(tmp_path, relu_model([-1, 1, 28, 28]))
    assert ds.input_shapes == {"x": ov.PartialShape([1, 1, 28, 28])}
    x = ds[0]["x"]
    assert x.shape == (1, 1, 28, 28) and (x == 9).all()


def test_dynamic_hw_keeps_image_size_unless_shape_given(tmp_path):
    write(tmp_path / "a.png", rgb_noise(20, 30))
    write(tmp_path / "b.png", rgb_noise(10, 12))
    model = relu_model([-1, 3, -1, -1])
    ds = create_data_source(tmp_path, model)
    assert ds.input_shapes["x"] == ov.PartialShape([1, 3, -1, -1])
    assert [s["x"].shape for _, s in ds.iter_samples()] == [(1, 3, 20, 30), (1, 3, 10, 12)]
    ds = create_data_source(tmp_path, model, shape=[1, 3, 16, 24])
    assert ds.input_shapes["x"] == ov.PartialShape([1, 3, 16, 24])
    assert [s["x"].shape for _, s in ds.iter_samples()] == [(1, 3, 16, 24)] * 2
    ds = create_data_source(tmp_path, model, shape={"x": [-1, -1, 16, 24]})
    assert ds.input_shapes["x"] == ov.PartialShape([1, 3, 16, 24])
    with pytest.raises(ConfigError, match=r"engine.shape \[4, 3, 16, 24\].*batch dim 4; expected 1"):
        create_data_source(tmp_path, model, shape=[4, 3, 16, 24])
    with pytest.raises(ConfigError, match=r"engine.shape .*expected 4 dims"):
        create_data_source(tmp_path, model, shape=[3, 16, 24])


def test_infer_image_layout_and_parse_layout():
    assert infer_image_layout([1, 3, 224, 224]) == "NCHW"
    assert infer_image_layout([None, 1, 28, 28]) == "NCHW"
    assert infer_image_layout([1, 128, 128, 3]) == "NHWC"
    assert infer_image_layout([None, None, None, 3]) == "NHWC"
    assert infer_image_layout([3, 5, 5]) == "CHW" and infer_image_layout([5, 5, 1]) == "HWC"
    assert infer_image_layout([None, None, None, None]) is None
    assert parse_layout("[N,C,H,W]") == ("N", "C", "H", "W") == parse_layout("nchw")
    assert parse_layout("[...]") is None and parse_layout("") is None
    assert looks_like_image(b"\x89PNG\r\n\x1a\n....") and not looks_like_image(b"{}")


# -- arrays -------------------------------------------------------------------------------------

def test_npy_single_input_batch_added_and_dtype_converted(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 8, 8))  # float64, no batch dim
    b = rng.normal(size=(1, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    ds = create_data_source(tmp_path, relu_model([-1, 3, 8, 8]))
    xa, xb = ds[0]["x"], ds[1]["x"]
    assert xa.shape == (1, 3, 8, 8) and xa.dtype == np.float32
    np.testing.assert_allclose(xa[0], a.astype(np.float32))
    np.testing.assert_array_equal(xb, b)


def test_npy_shape_and_dtype_mismatch(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((1, 3, 9, 9), np.float32))
    with pytest.raises(DatasetError, match=r"a\.npy: array: shape \[1, 3, 9, 9\] does not fit input 'x'"):
        create_data_source(tmp_path, relu_model([1, 3, 8, 8]))
    np.save(tmp_path / "a.npy", np.zeros((1, 4), np.float64))
    with pytest.raises(DatasetError, match=r"dtype float64 cannot be converted to the input's int64"):
        create_data_source(tmp_path, relu_model([1, 4], et=ov.Type.i64))


def test_npy_batch_of_several_samples_is_fed_as_it_is_where_the_batch_is_dynamic(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((4, 3, 8, 8), np.float32))
    ds = create_data_source(tmp_path, relu_model([-1, 3, 8, 8]))
    assert ds[0]["x"].shape == (4, 3, 8, 8)
    # a static batch of 1 still refuses it
    with pytest.raises(DatasetError, match=r"shape \[4, 3, 8, 8\] does not fit input 'x'; expected \[1,3,8,8\]"):
        create_data_source(tmp_path, relu_model([1, 3, 8, 8]))


def test_npz_multi_input(tmp_path):
    for i, t in enumerate((5, 7)):
        ids = np.arange(t, dtype=np.int64)[None] + i
        np.savez(tmp_path / f"s{i}.npz", input_ids=ids, attention_mask=np.ones((1, t), np.int32),
                 token_type_ids=np.zeros((t,), np.int64))
    ds = create_data_source(tmp_path, token_model())
    assert ds.input_names == ("input_ids", "attention_mask", "token_type_ids")
    assert ds.input_shapes == {n: ov.PartialShape([1, -1]) for n in ds.input_names}
    samples = dict(ds.iter_samples())
    assert list(samples[1]) == list(ds.input_names)
    assert {k: (v.shape, v.dtype) for k, v in samples[1].items()} == {
        n: ((1, 7), np.dtype(np.int64)) for n in ds.input_names}
    np.testing.assert_array_equal(samples[1]["input_ids"], np.arange(7)[None] + 1)


def test_npz_scalar_bool_and_f16_inputs_keep_their_rank_and_dtype(tmp_path):
    """A rank-0 input (a temperature, a threshold) stays rank 0: numpy's ascontiguousarray made
    it [1], and the CPU plugin refused the sample ("got [1] expecting []")."""
    x = ops.parameter([1, 4], ov.Type.f16, name="x")
    mask = ops.parameter([1, 4], ov.Type.boolean, name="mask")
    temp = ops.parameter([], ov.Type.f32, name="temp")
    y = ops.multiply(ops.multiply(ops.convert(x, ov.Type.f32), ops.convert(mask, ov.Type.f32)), temp)
    model = ov.Model([ops.result(y)], [x, mask, temp], "scalar_input")
    np.savez(tmp_path / "s.npz", x=np.ones((1, 4), np.float32), mask=np.array([[True, False, True, True]]),
             temp=np.array(0.5, np.float32))
    sample = dict(create_data_source(tmp_path, model).iter_samples())[0]
    assert {k: (v.shape, v.dtype) for k, v in sample.items()} == {
        "x": ((1, 4), np.dtype(np.float16)), "mask": ((1, 4), np.dtype(bool)), "temp": ((), np.dtype(np.float32))}
    out = ov.Core().compile_model(model, "CPU").create_infer_request().infer(sample)[0]
    np.testing.assert_allclose(out, [[0.5, 0.0, 0.5, 0.5]])


def test_npz_wrong_keys_names_them(tmp_path):
    np.savez(tmp_path / "bad.npz", input_ids=np.zeros((1, 4), np.int64),
             attention_masks=np.zeros((1, 4), np.int64), token_type_ids=np.zeros((1, 4), np.int64))
    with pytest.raises(DatasetError) as e:
        create_data_source(tmp_path, token_model())
    msg = e.value.message
    assert str(tmp_path / "bad.npz") in msg
    assert "missing attention_mask" in msg and "unexpected attention_masks" in msg
    assert "expected one array per input: input_ids, attention_mask, token_type_ids" in msg


def test_npz_keys_that_feed_no_input_are_ignored_with_one_warning(tmp_path, caplog):
    """A label stored beside the inputs (NNCF's datasets pick the inputs out of such items)."""
    for i in range(3):
        np.savez(tmp_path / f"s{i}.npz", input_ids=np.arange(4, dtype=np.int64)[None],
                 attention_mask=np.ones((1, 4), np.int64), token_type_ids=np.zeros((1, 4), np.int64),
                 label=np.array([i]))
    with caplog.at_level(logging.WARNING, logger="pot"):
        ds = create_data_source(tmp_path, token_model())
    assert warnings_of(caplog) == ["engine.data_source: arrays that feed no model input are ignored: 'label' in 3 "
                                   "file(s) (model inputs: input_ids, attention_mask, token_type_ids)"]
    assert [sorted(s) for _, s in ds.iter_samples()] == [sorted(ds.input_names)] * 3


def test_npz_single_input(tmp_path):
    np.savez(tmp_path / "named.npz", x=np.ones((1, 3, 8, 8), np.float32))
    np.savez(tmp_path / "unnamed.npz", np.full((3, 8, 8), 2.0))
    ds = create_data_source(tmp_path, relu_model([1, 3, 8, 8]))
    assert [float(s["x"].mean()) for _, s in ds.iter_samples()] == [1.0, 2.0]


def test_images_for_multi_input_model(tmp_path):
    write(tmp_path / "a.png", rgb_noise())
    with pytest.raises(DatasetError, match=r"holds images, but the model has 3 inputs \(input_ids, "
                                           r"attention_mask, token_type_ids\); use \.npz files"):
        create_data_source(tmp_path, token_model())
    with pytest.raises(DatasetError, match=r"not an image input.*use \.npy or \.npz"):
        create_data_source(tmp_path, relu_model([1, 16]))
    (tmp_path / "a.png").unlink()
    np.save(tmp_path / "a.npy", np.zeros((1, 4), np.int64))
    with pytest.raises(DatasetError, match=r"holds \.npy files, but the model has 3 inputs"):
        create_data_source(tmp_path, token_model())


# -- reading, streaming, subsets ----------------------------------------------------------------

def test_corrupt_image_skipped_at_read_time(tmp_path, caplog):
    write(tmp_path / "a.png", rgb_noise())
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(200))  # JPEG signature, no data
    write(tmp_path / "c.png", rgb_noise())
    ds = create_data_source(tmp_path, relu_model([1, 3, 32, 32]))
    assert len(ds) == 3
    with caplog.at_level(logging.WARNING, logger="pot"):
        assert [i for i, _ in ds.iter_samples()] == [0, 2]
    msgs = warnings_of(caplog)
    assert len(msgs) == 1 and "b.jpg" in msgs[0]
    assert [p.name for p in ds.skipped] == ["b.jpg"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pot"):
        assert [i for i, _ in ds.iter_samples([1, 2])] == [2]  # known bad: skipped silently
    assert warnings_of(caplog) == []
    with pytest.raises(SampleReadError, match="b.jpg"):
        ds[1]


def test_iter_samples_with_workers_matches_serial(tmp_path):
    for i in range(7):
        write(tmp_path / f"{i}.png", rgb_noise(seed=i))
    ds = create_data_source(tmp_path, relu_model([1, 3, 16, 16]))
    order = [6, 0, 3, 5]
    serial = list(ds.iter_samples(order))
    threaded = list(ds.iter_samples(order, workers=3))
    assert [i for i, _ in threaded] == order
    for (_, a), (_, b) in zip(serial, threaded):
        np.testing.assert_array_equal(a["x"], b["x"])
    it = ds.iter_samples(workers=2)  # stopping early shuts the threads down
    next(it)
    it.close()


def test_select_subset(caplog):
    assert select_subset(10, 3, False, 0) == [0, 1, 2]
    a = select_subset(100, 10, True, 42)
    assert a == select_subset(100, 10, True, 42)
    assert a != select_subset(100, 10, True, 43)
    assert len(set(a)) == 10 and all(0 <= i < 100 for i in a)
    assert a == np.random.default_rng(42).permutation(100)[:10].tolist()
    assert select_subset(5, None, False, 0) == [0, 1, 2, 3, 4]
    import pot_cli.engines.data_source as data_source

    data_source._WARNED_SUBSETS.clear()
    with caplog.at_level(logging.INFO, logger="pot"):
        assert select_subset(54, 400, False, 0, source="imgs") == list(range(54))
        assert select_subset(54, 300, False, 0, source="imgs") == list(range(54))
        assert select_subset(54, 300, False, 0, source="imgs") == list(range(54))  # said once
    assert warnings_of(caplog) == [
        "stat_subset_size 400 is larger than the 54 samples in imgs; using all 54"]
    # at its default (300, as POT's) the same is an info line: the user asked for nothing
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.INFO] == [
        "stat_subset_size 300 is larger than the 54 samples in imgs; using all 54"]
    with pytest.raises(ConfigError, match="stat_subset_size"):
        select_subset(5, 0, False, 0)


def test_data_source_select_subset_warns_once(tmp_path, caplog):
    write(tmp_path / "a.png", rgb_noise())
    ds = create_data_source(tmp_path, relu_model([1, 3, 32, 32]))
    with caplog.at_level(logging.WARNING, logger="pot"):
        assert ds.select_subset(400) == [0]
        assert ds.select_subset(400, shuffle=True, seed=1) == [0]
    assert len(warnings_of(caplog)) == 1


def test_index_out_of_range(tmp_path):
    write(tmp_path / "a.png", rgb_noise())
    ds = create_data_source(tmp_path, relu_model([1, 3, 32, 32]))
    assert isinstance(ds, DataSource)
    assert ds[-1]["x"].shape == (1, 3, 32, 32)
    with pytest.raises(IndexError):
        ds[1]
    with pytest.raises(IndexError):
        list(ds.iter_samples([3]))


# -- the shared real models and data ------------------------------------------------------------

needs_shared = pytest.mark.skipif(not (SHARED / "models").is_dir(),
                                  reason=f"shared models and data not found at {SHARED}")


@needs_shared
def test_real_face_detector_nhwc():
    model = ov.Core().read_model(SHARED / "models/mp_face_detection_short/mp_face_detection_short.xml")
    ds = create_data_source(SHARED / "data/images", model)
    assert len(ds) == 54 and ds.layouts == {"input": "NHWC"}
    i, sample = next(ds.iter_samples(ds.select_subset(5, True, 0)))
    assert sample["input"].shape == (1, 128, 128, 3) and sample["input"].dtype == np.float32
    assert 0 <= sample["input"].min() and sample["input"].max() <= 255


@needs_shared
def test_real_fmnist_gray_dynamic_batch():
    model = ov.Core().read_model(SHARED / "models/fmnist_cnn/fmnist_cnn.xml")
    ds = create_data_source(SHARED / "data/fashion_mnist/calibration", model)
    assert len(ds) == 300 and ds.input_shapes == {"x": ov.PartialShape([1, 1, 28, 28])}
    x = ds[0]["x"]
    assert x.shape == (1, 1, 28, 28) and x.dtype == np.float32


@needs_shared
def test_real_minilm_npz(caplog):
    model = ov.Core().read_model(SHARED / "models/minilm_l6_v2/minilm_l6_v2.xml")
    with caplog.at_level(logging.WARNING, logger="pot"):
        ds = create_data_source(SHARED / "data/text_minilm", model)
    assert len(ds) == 200
    assert [p.name for p in ds.skipped] == ["sentences.txt"]  # the source text, not a sample
    sample = ds[0]
    assert list(sample) == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(v.dtype == np.int64 and v.ndim == 2 and v.shape[0] == 1 for v in sample.values())
