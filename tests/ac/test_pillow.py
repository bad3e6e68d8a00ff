"""``pillow_imread`` and ``use_pillow`` steps: Accuracy Checker's Pillow backends."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from pot_cli.engines.ac.representations import SampleMeta
from pot_cli.engines.preprocessing import Problems, parse_reader, parse_step, read_pillow
from pot_cli.errors import DatasetError


@pytest.fixture
def png(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    path = tmp_path / "x.png"
    Image.fromarray(rgb).save(path)
    return path, rgb


def step(entry):
    problems = Problems("ac.yml")
    s = parse_step(entry, "pre[0]", problems)
    assert problems.lines == []
    return s


def test_pillow_imread_gives_rgb_and_opencv_gives_bgr(png):
    path, rgb = png
    assert np.array_equal(read_pillow(path), rgb)
    assert np.array_equal(cv2.imread(str(path))[:, :, ::-1], rgb)
    gray = path.with_name("g.png")
    Image.fromarray(rgb[:, :, 0]).save(gray)
    assert read_pillow(gray, to_rgb=False).shape == (37, 53, 1)
    assert read_pillow(gray).shape == (37, 53, 3)


def test_reader_keys():
    problems = Problems("ac.yml")
    reader = parse_reader({"type": "pillow_imread", "to_rgb": False}, "reader", problems)
    assert (reader.type, reader.to_rgb, problems.lines) == ("pillow_imread", False, [])
    parse_reader({"type": "pillow_imread", "reading_flag": "gray"}, "reader", problems)
    assert problems.lines == ["ac.yml: reader.reading_flag: unknown key for reader 'pillow_imread'; expected one "
                              "of: type, to_rgb"]


@pytest.mark.parametrize("interpolation", ["BILINEAR", "NEAREST", "BICUBIC", "LANCZOS"])
def test_use_pillow_resize_is_pillows_resampling(png, interpolation):
    _, rgb = png
    meta = SampleMeta("x", rgb.shape)
    out = step({"type": "resize", "size": 24, "use_pillow": True, "interpolation": interpolation}).apply(rgb, "x", meta)
    filt = getattr(Image.Resampling, "LANCZOS" if interpolation == "LANCZOS" else interpolation)
    assert out.dtype == np.uint8
    assert np.array_equal(out, np.asarray(Image.fromarray(rgb).resize((24, 24), filt)))
    assert meta.geometric_operations[0]["scale_x"] == pytest.approx(24 / 53)


def test_use_pillow_crop_rounds_the_offsets(png):
    _, rgb = png
    out = step({"type": "crop", "size": 20, "use_pillow": True}).apply(rgb, "x", None)
    top, left = int(round((37 - 20) / 2.0)), int(round((53 - 20) / 2.0))  # 8 (banker's rounding of 8.5), 16
    assert np.array_equal(out, rgb[top:top + 20, left:left + 20])
    assert np.array_equal(step({"type": "crop", "central_fraction": 0.5, "use_pillow": True}).apply(rgb, "x").shape,
                          (18, 26, 3))


def test_use_pillow_needs_8_bit_images(png):
    _, rgb = png
    with pytest.raises(DatasetError, match="resize with use_pillow needs an 8-bit image, got float32"):
        step({"type": "resize", "size": 8, "use_pillow": True}).apply(rgb.astype(np.float32), "x.png")


def test_use_pillow_interpolation_names_are_checked():
    problems = Problems("ac.yml")
    parse_step({"type": "resize", "size": 8, "use_pillow": True, "interpolation": "AREA"}, "pre[0]", problems)
    assert problems.lines[0].startswith("ac.yml: pre[0].interpolation: 'AREA' is not supported with use_pillow; "
                                        "expected one of: NEAREST")
