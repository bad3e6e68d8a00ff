"""The ``pot`` command: flag rules, exit codes, messages, files written, report, determinism."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import openvino as ov
import pytest
from click.testing import CliRunner

import models
from pot_cli import __version__
from pot_cli.cli import main

STAMP = re.compile(r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}(_\d+)?")


def pot(*args: str):
    """Run ``pot args`` in process; returns the Click result (``exit_code``, ``stdout``, ``stderr``)."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def op_types(xml: Path) -> list[str]:
    return [o.get_type_name() for o in ov.Core().read_model(str(xml)).get_ops()]


@pytest.fixture
def tiny(tiny_model_dir, tmp_path) -> dict[str, Path]:
    """A private copy of the tiny IR and its images: ``xml``, ``bin``, ``images``, ``tmp``."""
    shutil.copytree(tiny_model_dir, tmp_path / "in")
    root = tmp_path / "in"
    return {"xml": root / "model" / "tiny.xml", "bin": root / "model" / "tiny.bin", "images": root / "images",
            "tmp": tmp_path}


@pytest.fixture(scope="module")
def direct_run(tiny_model_dir, tmp_path_factory):
    """One successful ``-d`` run on the tiny IR, shared by the read-only checks below."""
    root = tmp_path_factory.mktemp("direct")
    shutil.copytree(tiny_model_dir, root / "in")
    xml, bin_ = root / "in" / "model" / "tiny.xml", root / "in" / "model" / "tiny.bin"
    before = (digest(xml), digest(bin_))
    out = root / "out"
    result = pot("-q", "default", "-m", xml, "--data-source", root / "in" / "images", "--output-dir", out, "-d")
    return {"result": result, "out": out, "xml": xml, "bin": bin_, "before": before, "root": root}


# -- usage rules ---------------------------------------------------------------------------------

@pytest.mark.parametrize("args,message", [
    (["-c", "x.json", "-q", "default", "-m", "m.xml"], "-c/--config and -q/--quantize are mutually exclusive"),
    ([], "either -c/--config or -q/--quantize is required"),
    (["-q", "default"], "-q/--quantize needs -m/--model"),
    (["-q", "default", "-m", "x.xml"], "-q default needs --data-source"),
    (["-q", "default", "-m", "x.xml", "--data-source", "d", "--max-drop", "0.01"],
     "--max-drop applies only to -q accuracy_aware"),
])
def test_usage_errors_exit_2_with_one_line_and_no_traceback(args, message, tmp_path):
    result = pot(*args, "--output-dir", tmp_path / "out")
    assert result.exit_code == 2
    assert f"ERROR: {message}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    (["-q", "accuracy_aware", "-m", "x.xml"], "-q accuracy_aware needs --ac-config FILE"),
    (["-q", "default", "-m", "x.xml", "--engine", "accuracy_checker"], "--ac-config FILE"),
])
def test_accuracy_options_without_annotated_data_exit_2(args, message, tmp_path):
    result = pot(*args, "--output-dir", tmp_path / "out")
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_missing_model_file_is_a_config_error_naming_the_path(tiny):
    missing = tiny["tmp"] / "nope.xml"
    result = pot("-q", "default", "-m", missing, "--data-source", tiny["images"], "--output-dir", tiny["tmp"] / "o")
    assert result.exit_code == 2
    assert f"model.model: file not found: {missing}" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_weights_file_is_named(tiny):
    missing = tiny["tmp"] / "nope.bin"
    result = pot("-q", "default", "-m", tiny["xml"], "-w", missing, "--data-source", tiny["images"],
                 "--output-dir", tiny["tmp"] / "o")
    assert result.exit_code == 2
    assert f"model.weights: file not found: {missing}" in result.stderr


def test_weights_default_to_the_bin_beside_the_xml(tiny):
    tiny["bin"].rename(tiny["tmp"] / "elsewhere.bin")
    result = pot("-q", "default", "-m", tiny["xml"], "--data-source", tiny["images"], "--output-dir", tiny["tmp"] / "o")
    assert result.exit_code == 2
    assert f"model.weights: file not found: {tiny['xml'].with_suffix('.bin')}" in result.stderr


def test_malformed_config_reports_line_and_column(tmp_path):
    config = tmp_path / "bad.json"
    config.write_text('{"model": {"model": "m.xml",\n  "weights" "m.bin"}\n}\n')
    result = pot("-c", config, "--output-dir", tmp_path / "o")
    assert result.exit_code == 2
    assert f"{config}: line 2, column 13: Expecting ':' delimiter" in result.stderr
    assert "Traceback" not in result.stderr
    debug = pot("-c", config, "--output-dir", tmp_path / "o", "--log-level", "DEBUG")
    assert debug.exit_code == 2
    assert "Traceback" in debug.stderr and "ConfigError" in debug.stderr


def test_unreadable_model_exits_1_naming_it(tiny):
    tiny["xml"].write_text("<net>not an IR")
    result = pot("-q", "default", "-m", tiny["xml"], "--data-source", tiny["images"], "--output-dir", tiny["tmp"] / "o", "-d")
    assert result.exit_code == 1
    assert f"{tiny['xml']}: cannot read the model as OpenVINO IR" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tiny["tmp"] / "o" / "optimized").exists()


def test_missing_data_source_exits_2(tiny):
    # a path that does not exist is a configuration error, as for the model (README: exit codes)
    result = pot("-q", "default", "-m", tiny["xml"], "--data-source", tiny["tmp"] / "nodir",
                 "--output-dir", tiny["tmp"] / "o", "-d")
    assert result.exit_code == 2
    assert f"{tiny['tmp'] / 'nodir'}: no such file or folder" in result.stderr
    assert not (tiny["tmp"] / "o" / "optimized").exists()


def test_version():
    result = pot("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"pot, version {__version__}"


# -- a successful run ----------------------------------------------------------------------------

def test_direct_dump_layout(direct_run):
    result, out = direct_run["result"], direct_run["out"]
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(out / "optimized" / "tiny.xml")
    assert sorted(p.name for p in out.iterdir()) == ["log.txt", "optimized"]
    assert sorted(p.name for p in (out / "optimized").iterdir()) == ["report.html", "report.json", "tiny.bin", "tiny.xml"]
    log = (out / "log.txt").read_text()
    assert "Quantized model written to" in log and "Collecting statistics on 12 samples" in log


def test_input_model_is_not_modified(direct_run):
    assert direct_run["result"].exit_code == 0
    assert (digest(direct_run["xml"]), digest(direct_run["bin"])) == direct_run["before"]


def test_output_is_quantized_and_smaller(direct_run):
    xml = direct_run["out"] / "optimized" / "tiny.xml"
    types = op_types(xml)
    assert types.count("FakeQuantize") == 1
    model = ov.Core().read_model(str(xml))
    i8 = [o for o in model.get_ops() if o.get_type_name() == "Constant" and o.get_element_type() == ov.Type.i8]
    assert len(i8) == 1 and list(i8[0].get_output_shape(0)) == [8, 3, 3, 3]
    assert xml.with_suffix(".bin").stat().st_size < direct_run["bin"].stat().st_size
    # it still computes the float model's function on an image-like input
    x = np.random.default_rng(0).integers(0, 256, (1, 3, 8, 8)).astype(np.float32)
    core = ov.Core()
    ref = core.compile_model(str(direct_run["xml"]), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0]
    out = core.compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0]
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 0.05


def test_report_keys_and_rows(direct_run):
    out = direct_run["out"]
    report = json.loads((out / "optimized" / "report.json").read_text())
    assert {"version", "config", "input", "output", "samples", "time_s", "quantizers"} <= set(report)
    assert report["version"] == __version__
    assert report["input"]["model"] == str(direct_run["xml"])
    assert report["input"]["weights"] == str(direct_run["bin"])  # -w defaults to the .bin beside the .xml
    assert Path(report["output"]["xml"]) == out / "optimized" / "tiny.xml"
    assert report["samples"]["used"] == 12 and report["samples"]["skipped"] == []
    assert report["config"]["compression"]["algorithms"][0]["name"] == "DefaultQuantization"
    assert all(isinstance(v, float) and v >= 0 for v in report["time_s"].values())
    rows = {r["name"]: r for r in report["quantizers"]}
    assert set(rows) == {"conv/fq_input_0", "conv/fq_weights_1"}
    for row in rows.values():
        assert {"name", "kind", "tensor", "consumers", "levels", "input_low", "input_high"} <= set(row)
    act = rows["conv/fq_input_0"]
    assert (act["kind"], act["tensor"], act["consumers"], act["levels"]) == ("activation", "x:0", ["conv:0"], 256)
    # raw pixels 0..255: unsigned grid, upper bound the mean of the per-image maxima (<= 255)
    assert act["input_low"] == 0.0 and 200 < act["input_high"] <= 255
    w = rows["conv/fq_weights_1"]
    assert (w["kind"], w["consumers"], w["levels"]) == ("weights", ["conv:1"], 127)


def test_report_times_every_stage(direct_run):
    report = json.loads((direct_run["out"] / "optimized" / "report.json").read_text())
    assert {"load_model_s", "data_source_s", "statistics_s", "quantization_s", "save_s", "total_s"} <= set(report["time_s"])


def test_rerun_in_a_new_process_gives_identical_files(direct_run):
    out2 = direct_run["root"] / "out2"
    proc = subprocess.run([sys.executable, "-m", "pot_cli", "-q", "default", "-m", str(direct_run["xml"]),
                           "--data-source", str(direct_run["root"] / "in" / "images"), "--output-dir", str(out2),
                           "-d", "--log-level", "WARNING"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for suffix in (".xml", ".bin"):
        first = direct_run["out"] / "optimized" / f"tiny{suffix}"
        again = out2 / "optimized" / f"tiny{suffix}"
        assert first.read_bytes() == again.read_bytes(), f"{suffix} differs between runs"


def test_run_folder_layout_without_direct_dump(tiny):
    out = tiny["tmp"] / "results"
    result = pot("-q", "default", "-m", tiny["xml"], "--data-source", tiny["images"], "--output-dir", out)
    assert result.exit_code == 0, result.stderr
    assert [p.name for p in out.iterdir()] == ["tiny_DefaultQuantization"]
    runs = list((out / "tiny_DefaultQuantization").iterdir())
    assert len(runs) == 1 and STAMP.fullmatch(runs[0].name), runs
    run = runs[0]
    assert sorted(p.name for p in run.iterdir()) == ["log.txt", "optimized"]
    assert sorted(p.name for p in (run / "optimized").iterdir()) == ["report.html", "report.json", "tiny.bin", "tiny.xml"]
    assert result.stdout.strip() == str(run / "optimized" / "tiny.xml")
    # a second run never reuses the folder
    again = pot("-q", "default", "-m", tiny["xml"], "--data-source", tiny["images"], "--output-dir", out)
    assert again.exit_code == 0
    assert len(list((out / "tiny_DefaultQuantization").iterdir())) == 2


def test_name_option_names_the_outputs(tiny):
    out = tiny["tmp"] / "o"
    result = pot("-q", "default", "-m", tiny["xml"], "--data-source", tiny["images"], "--output-dir", out,
                 "-n", "renamed")
    assert result.exit_code == 0, result.stderr
    run = next((out / "renamed_DefaultQuantization").iterdir())
    assert sorted(p.name for p in (run / "optimized").iterdir()) == ["renamed.bin", "renamed.xml", "report.html", "report.json"]


def test_keep_uncompressed_weights(tiny):
    out = tiny["tmp"] / "o"
    result = pot("-q", "default", "-m", tiny["xml"], "--data-source", tiny["images"], "--output-dir", out, "-d",
                 "--keep-uncompressed-weights")
    assert result.exit_code == 0, result.stderr
    model = ov.Core().read_model(str(out / "optimized" / "tiny.xml"))
    fq = {o.get_friendly_name(): o for o in model.get_ops() if o.get_type_name() == "FakeQuantize"}
    assert set(fq) == {"conv/fq_input_0", "conv/fq_weights_1"}
    assert fq["conv/fq_weights_1"].input_value(0).get_node().get_element_type() == ov.Type.f32
    assert not [o for o in model.get_ops() if o.get_type_name() == "Constant" and o.get_element_type() == ov.Type.i8]
    report = json.loads((out / "optimized" / "report.json").read_text())
    assert report["output"]["weights_compressed"] is False


def test_target_device_gna_gives_16_bit_activations(tiny):
    out = tiny["tmp"] / "o"
    result = pot("-q", "default", "-m", tiny["xml"], "--data-source", tiny["images"], "--output-dir", out, "-d",
                 "--target-device", "GNA")
    assert result.exit_code == 0, result.stderr
    model = ov.Core().read_model(str(out / "optimized" / "tiny.xml"))
    levels = [o.get_attributes()["levels"] for o in model.get_ops() if o.get_type_name() == "FakeQuantize"]
    assert levels == [65536]
    report = json.loads((out / "optimized" / "report.json").read_text())
    assert report["config"]["compression"]["target_device"] == "GNA"


def test_an_already_quantized_model_is_refused(direct_run, tmp_path):
    xml = direct_run["out"] / "optimized" / "tiny.xml"
    result = pot("-q", "default", "-m", xml, "--data-source", direct_run["root"] / "in" / "images",
                 "--output-dir", tmp_path / "o", "-d")
    assert result.exit_code == 1
    assert f"{xml}: the model is already quantized" in result.stderr


def test_bundled_example_config(repo_root, tmp_path, monkeypatch):
    config = Path("configs/examples/digits_default.json")
    if not (repo_root / config).is_file() or not (repo_root / "examples/digits/model/digits_cnn.xml").is_file():
        pytest.skip("the bundled digits example is not in this checkout")
    monkeypatch.chdir(repo_root)  # paths in the config are relative to the config's folder
    out = tmp_path / "digits"
    result = pot("-c", config, "--output-dir", out, "-d")
    assert result.exit_code == 0, result.stderr
    assert (out / "optimized" / "digits_cnn.xml").is_file() and (out / "optimized" / "digits_cnn.bin").is_file()
    report = json.loads((out / "optimized" / "report.json").read_text())
    assert report["input"]["model"] == str(repo_root / "examples/digits/model/digits_cnn.xml")
    assert report["samples"]["used"] == 300
    assert op_types(out / "optimized" / "digits_cnn.xml").count("FakeQuantize") >= 1


def test_layout_flag_sets_engine_layout(tmp_path):
    """``--layout``: a model whose input is ``[?,?,?,?]`` with no layout in the IR cannot take
    images until told (NCHW here; NHWC would feed 8-channel data to 3-channel weights)."""
    model = models.conv_bias_relu()
    x = models.param("x", [-1, -1, -1, -1])
    next(op for op in model.get_ops() if op.get_type_name() == "Convolution").input(0).replace_source_output(x.output(0))
    xml, _ = models.save_ir(ov.Model(model.get_results(), [x], "anyshape"), tmp_path / "m", "anyshape")
    images = tmp_path / "images"
    models.write_images(images, 3, shape=(8, 8, 3))
    base = ["-q", "default", "-m", xml, "--data-source", images, "-d"]
    result = pot(*base, "--output-dir", tmp_path / "a")
    assert result.exit_code == 1 and "give it with --layout or engine.layout" in result.stderr
    for k, layout in enumerate(("NCHW", "x:NCHW")):
        result = pot(*base, "--output-dir", tmp_path / f"ok{k}", "--layout", layout)
        assert result.exit_code == 0, result.stderr
        report = json.loads((tmp_path / f"ok{k}" / "optimized" / "report.json").read_text())
        assert report["config"]["engine"]["layout"] == ("NCHW" if k == 0 else {"x": "NCHW"})
    result = pot(*base, "--output-dir", tmp_path / "bad", "--layout", "NCHW,NHWC")
    assert result.exit_code == 2 and "--layout NCHW,NHWC: expected one layout" in result.stderr
