"""``ACEngine``: an Accuracy Checker YAML driving the API pipeline, as POT's ACEngine did."""
from __future__ import annotations

from pathlib import Path

import pytest

from pot_cli.api import ACEngine, create_pipeline, load_model
from pot_cli.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
FMNIST = SHARED / "models" / "fmnist_cnn" / "fmnist_cnn.xml"


def test_unknown_keys_and_missing_config_are_named():
    with pytest.raises(ConfigError, match="ACEngine config: dvice: unknown key"):
        ACEngine({"config": "x.yml", "dvice": "CPU"})
    with pytest.raises(ConfigError, match="expected 'config' \\(an Accuracy Checker YAML\\) or inline 'models'"):
        ACEngine({"device": "CPU"})


@pytest.mark.skipif(not FMNIST.is_file(), reason="needs ../shared/models/fmnist_cnn")
def test_ac_yaml_runs_evaluation_and_accuracy_aware_through_the_api(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    yml = tmp_path / "ac.yml"
    text = (ROOT / "configs" / "examples" / "fmnist_ac.yml").read_text()
    yml.write_text(text.replace("../../../shared", str(SHARED)).replace(
        "            top_k: 1", "            top_k: 1\n        subsample_size: 300\n        shuffle: false"))
    engine = ACEngine({"config": str(yml), "device": "CPU"})
    model = load_model({"model_name": "fmnist", "model": str(FMNIST), "weights": str(FMNIST.with_suffix(".bin"))})
    fp32 = create_pipeline([], engine).evaluate(model)
    assert 0.8 < fp32["accuracy@top1"] < 0.95
    pipeline = create_pipeline([{"name": "AccuracyAwareQuantization",
                                 "params": {"target_device": "ANY", "maximal_drop": 0.004, "stat_subset_size": 100}}],
                               engine)
    int8 = pipeline.run(model)
    assert any(op.get_type_name() == "FakeQuantize" for op in int8.model.get_ops())
    value = pipeline.evaluate(int8)["accuracy@top1"]
    assert fp32["accuracy@top1"] - value <= 0.004 + 1e-9


@pytest.mark.parametrize("first", ["pot_cli.engines.cli_engines", "pot_cli.api", "pot_cli.engines.evaluator"])
def test_modules_import_in_any_order(first):
    import subprocess
    import sys

    code = f"import {first}; from pot_cli.api import ACEngine, IEEngine; import pot_cli.engines.cli_engines"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
