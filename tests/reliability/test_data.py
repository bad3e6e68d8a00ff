"""Case 3: calibration data. No usable sample is an error (exit 1) naming the data source and
files; some bad files are skipped with one warning naming them; odd image formats are converted;
huge images cost bounded memory; Unicode and spaces work in every path."""
from __future__ import annotations

import json
import sys

import cv2
import numpy as np
import openvino as ov
import pytest

import models
from pot_cli.engines.data_source import create_data_source
from reliability.helpers import assert_failed_cleanly, leftovers, op_names, pot, run_measured, snapshot

EXPECTED = "expected images (.jpg .png .bmp .tif .webp ...) or .npy/.npz files"


def _fail(ws, data, fragments, out=None):
    out = out or ws.out
    before = {**ws.before(), **snapshot(data)}
    result = pot("-q", "default", "-m", ws.xml, "--data-source", data, "--output-dir", out, "-d")
    return assert_failed_cleanly(result.exit_code, result.stderr, 1, fragments, out, before)


def test_empty_folder(ws):
    empty = ws.root / "empty"
    empty.mkdir()
    _fail(ws, empty, [f"{empty}: no usable samples (no files found); {EXPECTED}"])


def test_only_non_image_files(ws):
    folder = ws.root / "notes"
    folder.mkdir()
    (folder / "readme.txt").write_text("hello")
    (folder / "labels.csv").write_text("a,b\n")
    _fail(ws, folder, [f"{folder}: no usable samples (2 not images or .npy/.npz: labels.csv, readme.txt); {EXPECTED}"])


def test_corrupt_images(ws):
    folder = ws.root / "corrupt"
    folder.mkdir()
    good = (ws.images / "img_000.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[:60])  # valid signature, does not decode
    (folder / "garbage.jpg").write_bytes(b"not a jpeg at all")  # no image signature
    line = _fail(ws, folder, [f"engine.data_source: {folder}: no usable samples: all 1 selected file(s) are "
                              f"unreadable or corrupt (truncated.png); {EXPECTED}"])
    assert "OpenCV" not in line

    # one good image among corrupt ones: skipped with one warning naming them, exit 0
    (folder / "good.png").write_bytes(good)
    result = pot("-q", "default", "-m", ws.xml, "--data-source", folder, "--output-dir", ws.out, "-d")
    assert result.exit_code == 0, result.stderr
    assert "1 unreadable or corrupt: garbage.jpg" in result.stderr
    assert "skipped 1 unreadable or corrupt file(s)" in result.stderr and "truncated.png" in result.stderr
    assert "[ WARN" not in result.stderr  # OpenCV's own warnings are silenced
    report = json.loads((ws.out / "optimized" / "report.json").read_text())
    assert report["samples"]["used"] == 1
    assert sorted(p.rsplit("/", 1)[1] for p in report["samples"]["skipped"]) == ["garbage.jpg", "truncated.png"]


def _mixed_images(folder):
    folder.mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(str(folder / "gray.png"), rng.integers(0, 256, (10, 12), dtype=np.uint8))
    cv2.imwrite(str(folder / "rgba.png"), rng.integers(0, 256, (9, 7, 4), dtype=np.uint8))
    cv2.imwrite(str(folder / "gray16.png"), rng.integers(0, 65536, (8, 8), dtype=np.uint16))
    cv2.imwrite(str(folder / "bgr16.png"), rng.integers(0, 65536, (8, 8, 3), dtype=np.uint16))
    cv2.imwrite(str(folder / "bgr.jpg"), rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))


@pytest.mark.parametrize("channels", [3, 1])
def test_mixed_grayscale_rgba_and_16_bit_pngs(ws, channels):
    xml = ws.xml
    if channels == 1:
        xml, _ = models.save_ir(models.conv_only(c_in=1, hw=8), ws.root / "gray_model", "gray")
    folder = ws.root / "mixed"
    _mixed_images(folder)
    data = create_data_source(folder, models.conv_only(c_in=1, hw=8) if channels == 1 else models.conv_bias_relu())
    for i in range(len(data)):
        x = data[i]["x"]
        assert x.shape == (1, channels, 8, 8) and x.dtype == np.float32
        assert 0 <= x.min() and x.max() <= 255  # 16-bit scaled to 0..255
    before = snapshot(folder, xml.parent)
    result = pot("-q", "default", "-m", xml, "--data-source", folder, "--output-dir", ws.out, "-d")
    assert result.exit_code == 0, result.stderr
    report = json.loads((ws.out / "optimized" / "report.json").read_text())
    assert report["samples"] == {"used": 5, "skipped": []}
    assert snapshot(folder, xml.parent) == before


def _big_images(folder, n: int, side: int, ext: str, seed: int = 0):
    """Smooth images (small files, full decoded size): side x side x 3 uint8."""
    folder.mkdir(parents=True, exist_ok=True)
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    for k in range(n):
        img = np.empty((side, side, 3), np.uint8)
        img[..., 0] = ramp[None, :]
        img[..., 1] = ramp[:, None]
        img[..., 2] = (k * 37 + seed) % 256
        cv2.imwrite(str(folder / f"big_{k}{ext}"), img,
                    [cv2.IMWRITE_PNG_COMPRESSION, 1] if ext == ".png" else [cv2.IMWRITE_JPEG_QUALITY, 90])


def _peak(ws, data, tag):
    out = ws.root / f"out_{tag}"
    code, err, peak = run_measured([sys.executable, "-m", "pot_cli", "-q", "default", "-m", ws.xml,
                                    "--data-source", data, "--output-dir", out, "-d", "--log-level", "WARNING"])
    assert code == 0, err
    return peak


def test_images_far_larger_than_the_input_keep_memory_bounded(ws):
    """4000x4000 photos for an 8x8 input: JPEGs are decoded at a reduced scale, so the peak stays
    within 10% of the run on small images; PNGs are decoded one at a time, so the peak does not
    grow with their number. (Lists repeat one file: each line is decoded again.)"""
    _big_images(ws.root / "img", 1, 64, ".jpg", seed=1)
    (ws.root / "img" / "big_0.jpg").rename(ws.root / "img" / "small.jpg")
    _big_images(ws.root / "img", 1, 4000, ".jpg")
    _big_images(ws.root / "img", 1, 4000, ".png")

    def listing(name, n):
        path = ws.root / f"{name}_{n}.txt"
        path.write_text(f"img/{name}\n" * n)
        return path

    before = {**ws.before(), **snapshot(ws.root / "img")}
    small, big = _peak(ws, listing("small.jpg", 4), "js"), _peak(ws, listing("big_0.jpg", 4), "jb")
    assert big <= small * 1.10, f"JPEG 4000x4000: peak {big:.0f} MiB vs {small:.0f} MiB on 64x64"
    two, five = _peak(ws, listing("big_0.png", 2), "p2"), _peak(ws, listing("big_0.png", 5), "p5")
    assert five <= two + 10, f"PNG 4000x4000: 5 images peak {five:.0f} MiB vs 2 images {two:.0f} MiB"
    decoded = 4000 * 4000 * 3 / 2**20
    assert two <= small + 3 * decoded, f"PNG 4000x4000: peak {two:.0f} MiB vs {small:.0f} MiB on 64x64"
    assert {**ws.before(), **snapshot(ws.root / "img")} == before


def test_txt_list_with_missing_files(ws):
    listing = ws.inputs / "list.txt"
    listing.write_text("images/img_000.png\nimages/missing one.png\n# a comment\n\nimages/img_001.png 7\n")
    before = ws.before()
    result = pot("-q", "default", "-m", ws.xml, "--data-source", listing, "--output-dir", ws.out, "-d")
    assert result.exit_code == 0, result.stderr
    assert "skipped 1 of 3 files" in result.stderr and "1 listed but missing: images/missing one.png" in result.stderr
    assert json.loads((ws.out / "optimized" / "report.json").read_text())["samples"]["used"] == 2
    assert ws.before() == before

    listing.write_text("gone_1.png\nsub/gone_2.jpg\n")
    _fail(ws, listing, [f"{listing}: no usable samples (2 listed but missing: gone_1.png, sub/gone_2.jpg); {EXPECTED}"],
          out=ws.root / "out2")


def test_unicode_and_spaces_in_every_path(ws):
    base = ws.root / "dönnées été" / "模型 目录"
    xml, _ = models.save_ir(models.conv_bias_relu(), base / "mödel dir", "tïny módel")
    data = base / "dätä ü"
    models.write_images(data, 3, (8, 8, 3))
    (data / "img_000.png").rename(data / "ïmage 0 ✓.png")
    (data / "img_001.png").rename(data / "图像 1.png")
    listing = base / "lïst ✓.txt"
    listing.write_text("dätä ü/ïmage 0 ✓.png\ndätä ü/图像 1.png\n", encoding="utf-8")
    config = base / "cönfig ✓.json"
    config.write_text(json.dumps({"model": {"model": str(xml)}, "engine": {"data_source": str(listing)},
                                  "compression": {"algorithms": [{"name": "DefaultQuantization"}]}},
                                 ensure_ascii=False), encoding="utf-8")
    out = base / "öut ✓ dir"
    before = snapshot(base)
    for args in (["-q", "default", "-m", xml, "--data-source", data], ["-c", config]):
        result = pot(*args, "--output-dir", out)
        assert result.exit_code == 0, result.stderr
        written = result.stdout.strip().splitlines()[-1]
        assert written.startswith(str(out / "tïny módel_DefaultQuantization")) and written.endswith("tïny módel.xml")
        assert op_names(written, "FakeQuantize") == ["conv/fq_input_0"]
    assert {k: v for k, v in snapshot(base).items() if not k.startswith(str(out))} == before
    assert len(leftovers(out)) == 2  # the two runs' optimized/ folders, no temporary ones


def test_batched_arrays_calibrate_a_dynamic_batch_model(tmp_path):
    """``.npy`` files of 4 samples each, for a model with a dynamic batch: fed as they are, the
    ranges cover every sample of each batch, and the quantized model keeps its dynamic batch."""
    model = models.dynamic_batch_conv()
    xml, _ = models.save_ir(model, tmp_path / "m", "dyn")
    data = tmp_path / "calib"
    data.mkdir()
    rng = np.random.default_rng(0)
    shape = [4] + [d.get_length() for d in list(model.inputs[0].get_partial_shape())[1:]]
    for k in range(3):
        batch = rng.uniform(0, 1, shape).astype(np.float32)
        batch[3] *= 10.0  # the largest values sit in the last sample of each batch
        np.save(data / f"{k}.npy", batch)
    result = pot("-q", "default", "-m", xml, "--data-source", data, "--output-dir", tmp_path / "out", "-d")
    assert result.exit_code == 0, result.stderr
    report = json.loads((tmp_path / "out" / "optimized" / "report.json").read_text())
    assert report["samples"]["used"] == 3
    first = next(q for q in report["quantizers"] if q["kind"] == "activation")
    assert first["observed"][1] > 5.0  # the 4th sample of each batch was seen
    quantized = ov.Core().read_model(tmp_path / "out" / "optimized" / "dyn.xml")
    assert quantized.inputs[0].get_partial_shape()[0].is_dynamic


def test_a_sample_the_runtime_rejects_mid_run_is_one_clean_error(tmp_path):
    """A dynamic channel dim lets 4-channel arrays pass the checks; the convolution (3 input
    channels) then fails inside the asynchronous statistics pass. The error is the runtime's
    message on one line (it surfaced as 'internal error' from the queue's drain)."""
    model = models.conv_chain()  # the second convolution's input statistics need the first one to run
    x = models.param("x", [1, -1, -1, -1])
    first = next(op for op in model.get_ordered_ops() if op.get_type_name() == "Convolution")
    first.input(0).replace_source_output(x.output(0))
    model = ov.Model(model.get_results(), [x], "dyn_channels")
    xml, _ = models.save_ir(model, tmp_path / "m", "dyn_channels")
    data = tmp_path / "calib"
    data.mkdir()
    for k in range(4):
        np.save(data / f"{k}.npy", np.ones((1, 4, 8, 8), np.float32))
    before = snapshot(xml.parent, data)
    out = tmp_path / "out"
    result = pot("-q", "default", "-m", xml, "--data-source", data, "--output-dir", out, "-d")
    line = assert_failed_cleanly(result.exit_code, result.stderr, 1,
                                 ["inference failed during statistics collection", "channels"], out, before)
    assert "internal error" not in line and "Traceback" not in result.stderr
