"""The Python API examples (examples/api/) run as a user runs them: a subprocess from another
folder, on few samples. The INT8 IRs they write must compile and carry quantization, and the
accuracies they print must be those of the IRs (re-measured here) within the drop asked."""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import openvino as ov
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "examples" / "api"
DIGITS = REPO_ROOT / "examples" / "digits"
_spec = importlib.util.spec_from_file_location("digits_evaluate", DIGITS / "evaluate.py")
_digits_evaluate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_digits_evaluate)
evaluate = _digits_evaluate.evaluate  # top-1 of an IR on the digits images of an annotation file

SUBSET = 100  # digits images used by each run (calibration and evaluation)


def run(script: str, *args, cwd: Path) -> str:
    """Run ``examples/api/<script>`` in ``cwd``; fails the test unless it exits 0; returns stdout."""
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


def printed_accuracy(stdout: str) -> dict[str, float]:
    """``{'FP32': v, 'INT8': v}`` from the ``accuracy@top1              : v`` lines (classification.py
    prints a ``FP32``/``INT8`` title line before each; custom_engine.py prefixes the name)."""
    found, title = {}, None
    for line in stdout.splitlines():
        if line.strip() in ("FP32", "INT8"):
            title = line.strip()
        m = re.fullmatch(r"(?:(FP32|INT8) )?accuracy@top1\s+: ([0-9.]+)", line.strip())
        if m:
            found[m.group(1) or title] = float(m.group(2))
    assert set(found) == {"FP32", "INT8"}, stdout
    return found


def check_int8_ir(xml: Path) -> ov.Model:
    """The IR exists, compiles and runs on CPU, and holds FakeQuantize ops and INT8 weights."""
    assert xml.is_file() and xml.with_suffix(".bin").is_file()
    core = ov.Core()
    model = core.read_model(xml)
    compiled = core.compile_model(model, "CPU")
    shape = [d.get_length() if d.is_static else 1 for d in model.input(0).get_partial_shape()]
    out = compiled(np.full(shape, 128, np.float32))[0]
    assert np.all(np.isfinite(out))
    types = [op.get_type_name() for op in model.get_ops()]
    assert types.count("FakeQuantize") > 0
    assert any(op.get_type_name() == "Constant" and op.get_element_type() in (ov.Type.i8, ov.Type.u8)
               for op in model.get_ops()), "weights not stored as INT8"
    return model


def subset_annotation(tmp: Path, source: Path, n: int) -> Path:
    path = tmp / f"first_{n}.txt"
    path.write_text("".join(source.read_text().splitlines(keepends=True)[:n]))
    return path


def test_classification_digits(tmp_path):
    out = run("classification.py", "-m", DIGITS / "model" / "digits_cnn.xml", "-d", DIGITS / "images" / "val",
              "-a", DIGITS / "images" / "val.txt", "--subset", SUBSET, "-o", tmp_path / "int8", cwd=tmp_path)
    xml = tmp_path / "int8" / "digits_cnn.xml"
    assert f"INT8 model: {xml}" in out
    check_int8_ir(xml)
    acc = printed_accuracy(out)
    annotation = subset_annotation(tmp_path, DIGITS / "images" / "val.txt", SUBSET)
    fp32, _, _ = evaluate(DIGITS / "model" / "digits_cnn.xml", DIGITS / "images" / "val", annotation)
    int8, _, _ = evaluate(xml, DIGITS / "images" / "val", annotation)
    assert acc["FP32"] == pytest.approx(fp32) and acc["INT8"] == pytest.approx(int8)
    assert acc["FP32"] > 0.95
    assert acc["FP32"] - acc["INT8"] <= 0.004 + 1e-9, out  # the default --max-drop


def test_custom_engine_digits(tmp_path):
    out = run("custom_engine.py", "--subset", SUBSET, "-o", tmp_path / "int8", cwd=tmp_path)
    xml = tmp_path / "int8" / "digits_cnn.xml"
    model = check_int8_ir(xml)
    fq = sum(op.get_type_name() == "FakeQuantize" for op in model.get_ops())
    assert f"INT8 model: {xml} ({fq} FakeQuantize ops)" in out
    acc = printed_accuracy(out)
    annotation = subset_annotation(tmp_path, DIGITS / "images" / "val.txt", SUBSET)
    assert acc["FP32"] == pytest.approx(evaluate(DIGITS / "model" / "digits_cnn.xml", DIGITS / "images" / "val",
                                                 annotation)[0])
    assert acc["INT8"] == pytest.approx(evaluate(xml, DIGITS / "images" / "val", annotation)[0])
    assert acc["FP32"] - acc["INT8"] <= 0.01, out


def test_custom_engine_statistics_match_ie_engine(tmp_path):
    """The custom engine's host-side statistics give the quantization ranges IEEngine's in-graph
    ones give on the same samples."""
    run("custom_engine.py", "--subset", SUBSET, "-o", tmp_path / "custom", cwd=tmp_path)
    run("classification.py", "-m", DIGITS / "model" / "digits_cnn.xml", "-d", DIGITS / "images" / "val",
        "-a", DIGITS / "images" / "val.txt", "--subset", SUBSET, "-o", tmp_path / "ie", cwd=tmp_path)
    core = ov.Core()

    def ranges(xml):
        return {op.get_friendly_name(): [op.input_value(k).get_node().get_data() for k in range(1, 5)]
                for op in core.read_model(xml).get_ops() if op.get_type_name() == "FakeQuantize"}

    custom, ie = ranges(tmp_path / "custom" / "digits_cnn.xml"), ranges(tmp_path / "ie" / "digits_cnn.xml")
    assert custom.keys() == ie.keys() and custom
    for name in ie:
        for a, b in zip(custom[name], ie[name]):
            np.testing.assert_allclose(a, b, rtol=1e-5, err_msg=name)


def test_classification_fmnist_accuracy_aware(tmp_path, shared_dir):
    """fmnist_cnn on 1,000 validation images: DefaultQuantization loses about 0.003 there, so a
    0.002 limit hands over to AccuracyAwareQuantization, which must meet it with layers still INT8."""
    model, data = shared_dir / "models" / "fmnist_cnn", shared_dir / "data" / "fashion_mnist"
    out = run("classification.py", "-m", model / "fmnist_cnn.xml", "-w", model / "fmnist_cnn.bin",
              "-d", data / "val", "-a", data / "val.txt", "--subset", 1000, "--max-drop", 0.002,
              "-o", tmp_path / "int8", cwd=tmp_path)
    check_int8_ir(tmp_path / "int8" / "fmnist_cnn.xml")
    acc = printed_accuracy(out)
    assert 0.8 < acc["FP32"] < 0.95, out  # fmnist_cnn: about 0.87 top-1
    assert acc["FP32"] - acc["INT8"] <= 0.002 + 1e-9, out
    default_drop = float(re.search(r"DefaultQuantization: accuracy drop (-?[0-9.]+)", out).group(1))
    assert ("AccuracyAwareQuantization: accuracy drop" in out) == (default_drop > 0.002), out
