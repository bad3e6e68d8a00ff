"""Acceptance of the API: a script written for the original POT runs with its import line changed,
the CLI and the API give byte-identical IRs, and the real POT example configs run."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import openvino as ov
import pytest
from click.testing import CliRunner

from pot_cli.cli import main

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
FMNIST = SHARED / "models" / "fmnist_cnn" / "fmnist_cnn.xml"
needs_shared = pytest.mark.skipif(not FMNIST.is_file(), reason="../shared (fmnist_cnn, fashion_mnist) is absent")


def _fq_and_int8(xml: Path) -> tuple[int, int]:
    m = ov.Core().read_model(str(xml))
    return (sum(op.get_type_name() == "FakeQuantize" for op in m.get_ops()),
            sum(op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8 for op in m.get_ops()))


@needs_shared
@pytest.mark.parametrize("order", ["new", "old"])
def test_a_pot_sample_script_runs_with_only_its_import_line_changed(tmp_path, order):
    original = (Path(__file__).parent / "scripts" / "pot_fmnist_sample.py").read_text()
    assert "from openvino.tools.pot import" in original
    script = tmp_path / "script.py"
    script.write_text(original.replace("from openvino.tools.pot import", "from pot_cli.api import"))
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, str(script), str(FMNIST), str(SHARED / "data" / "fashion_mnist"), str(out),
                          order], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    fp32, int8 = map(float, re.search(r"^aa \S+ (\S+) (\S+)$", run.stdout, re.M).groups())
    assert 0.8 < fp32 and fp32 - int8 <= 0.004 + 1e-9  # maximal_drop holds (absolute, top-1 on 1000 images)
    for xml in (out / "default" / "fmnist_default.xml", out / "aa" / "fmnist_aa.xml"):
        fq, i8 = _fq_and_int8(xml)
        assert fq > 0 and i8 > 0, xml  # quantized, weights stored as INT8
        compiled = ov.Core().compile_model(str(xml), "CPU")
        assert compiled(np.zeros((1, 1, 28, 28), np.float32))[0].shape == (1, 10)


@needs_shared
def test_the_cli_and_the_api_write_byte_identical_irs(tmp_path):
    calibration = SHARED / "data" / "fashion_mnist" / "calibration"
    params = {"preset": "performance", "stat_subset_size": 300}
    config = tmp_path / "config.json"
    config.write_text(
        '{"model": {"model_name": "fmnist_cnn", "model": "%s", "weights": "%s"}, '
        '"engine": {"type": "simplified", "data_source": "%s"}, '
        '"compression": {"target_device": "ANY", "algorithms": [{"name": "DefaultQuantization", '
        '"params": {"preset": "performance", "stat_subset_size": 300}}]}}'
        % (FMNIST, FMNIST.with_suffix(".bin"), calibration))
    result = CliRunner().invoke(main, ["-c", str(config), "--output-dir", str(tmp_path / "cli"), "-d"])
    assert result.exit_code == 0, result.stderr

    import cv2

    from pot_cli.api import DataLoader, IEEngine, compress_model_weights, create_pipeline, load_model, save_model

    class Images(DataLoader):
        def __init__(self, root: Path):
            self.files = sorted(root.iterdir())

        def __len__(self):
            return len(self.files)

        def __getitem__(self, i):
            return cv2.imread(str(self.files[i]), cv2.IMREAD_GRAYSCALE).astype(np.float32), None

    model = load_model({"model_name": "fmnist_cnn", "model": FMNIST, "weights": FMNIST.with_suffix(".bin")})
    pipeline = create_pipeline([{"name": "DefaultQuantization", "params": params}],
                               IEEngine({"device": "CPU"}, Images(calibration)))
    quantized = pipeline.run(model)
    compress_model_weights(quantized)
    paths = save_model(quantized, tmp_path / "api", "fmnist_cnn")
    assert paths == [{"model": str(tmp_path / "api" / "fmnist_cnn.xml"), "weights": str(tmp_path / "api" / "fmnist_cnn.bin")}]
    for suffix in (".xml", ".bin"):
        cli = (tmp_path / "cli" / "optimized" / f"fmnist_cnn{suffix}").read_bytes()
        assert (tmp_path / "api" / f"fmnist_cnn{suffix}").read_bytes() == cli, suffix
    assert _fq_and_int8(tmp_path / "api" / "fmnist_cnn.xml")[0] > 0


@pytest.mark.skipif(not (SHARED / "models" / "mobilenet_v2").is_dir(), reason="../shared (mobilenet_v2) is absent")
@pytest.mark.parametrize("name, biases", [("se_resnet50_pytorch_int8.json", True),  # MinMax + FastBiasCorrection
                                          ("ssd_mobilenetv1_int8.json", False)])  # top-level range_estimator
def test_real_pot_example_configs_run_to_an_ir(tmp_path, name, biases):
    result = CliRunner().invoke(main, ["-c", str(ROOT / "configs" / "examples" / "pot" / name),
                                       "--output-dir", str(tmp_path), "-d"])
    assert result.exit_code == 0, result.stderr
    import json

    report = json.loads((tmp_path / "optimized" / "report.json").read_text())
    assert report["summary"]["activation_quantizers"] > 0
    assert (report["summary"]["biases_corrected"] > 0) == biases
    ov.Core().compile_model(str(tmp_path / "optimized" / "mobilenet_v2.xml"), "CPU")
