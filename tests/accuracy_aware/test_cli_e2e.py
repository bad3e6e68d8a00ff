"""``pot`` with the accuracy_checker engine: -e, flags, configs, exit codes."""
from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import openvino as ov
import pytest
import yaml

from accuracy_aware.conftest import pot, report_of
from pot_cli.config.model import EngineConfig
from pot_cli.engines.accuracy_checker import create_ac_engine
from pot_cli.engines.evaluator import Evaluator
from pot_cli.graph.model import load_model

LINE = re.compile(r"^(\S+): (\d+\.\d{6})$")


def printed_metrics(stdout: str) -> dict[str, str]:
    return dict(m.groups() for m in map(LINE.match, stdout.splitlines()) if m)


def plain_accuracy(xml: Path, root: Path) -> float:
    """Top-1 accuracy of an IR on ``root/val`` + ``root/val.txt``, computed without pot_cli."""
    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    hits = []
    for line in (root / "val.txt").read_text().splitlines():
        name, label = line.split()
        image = cv2.imread(str(root / "val" / name)).transpose(2, 0, 1)[None].astype(np.float32)
        hits.append(int(np.argmax(compiled(image)[0])) == int(label))
    return float(np.mean(hits))


def evaluate_saved(xml: Path, ac: Path) -> dict[str, float]:
    """Metrics of a saved IR through a fresh engine and evaluator (nothing shared with the run)."""
    model = load_model(xml, xml.with_suffix(".bin"), allow_quantized=True)
    engine = create_ac_engine(EngineConfig(type="accuracy_checker", ac_config=ac), "<command line>")
    engine.bind(model)
    return Evaluator(engine.evaluation).evaluate(model).metrics


@pytest.mark.parametrize("mode", ["default", "accuracy_aware"])
def test_evaluate_prints_what_a_separate_evaluation_of_the_saved_ir_gives(outlier, mode):
    extra = ["--max-drop", "0.3"] if mode == "accuracy_aware" else []
    result = pot("-q", mode, "-m", outlier["xml"], "--ac-config", outlier["ac"], *extra, "-e",
                 "--output-dir", outlier["out"], "-d")
    assert result.exit_code == 0, result.stderr
    xml = outlier["out"] / "optimized" / "m.xml"
    assert result.stdout.splitlines()[-1] == str(xml)
    printed = printed_metrics(result.stdout)
    report = report_of(outlier["out"])
    separate = evaluate_saved(xml, outlier["ac"])
    assert report["evaluation"]["metrics"] == separate
    assert report["evaluation"]["samples"] == 120
    assert printed == {"accuracy": f"{separate['accuracy']:.6f}"}
    assert separate["accuracy"] == plain_accuracy(xml, outlier["root"])
    if mode == "accuracy_aware":
        assert report["accuracy_aware"]["final"]["metrics"] == separate


def test_default_quantization_with_inline_datasets_in_a_pot_config(outlier, tmp_path):
    doc = yaml.safe_load(outlier["ac"].read_text())["models"][0]
    for d in doc["datasets"]:
        d["data_source"] = str(outlier["root"] / "val")
        d["annotation_conversion"]["annotation_file"] = str(outlier["root"] / "val.txt")
    config = tmp_path / "pot.json"
    config.write_text(json.dumps({
        "model": {"model": str(outlier["xml"])},
        "engine": {"type": "accuracy_checker", "launchers": doc["launchers"], "datasets": doc["datasets"]},
        "compression": {"algorithms": [{"name": "DefaultQuantization", "params": {"stat_subset_size": 50}}]}}))
    result = pot("-c", config, "--output-dir", outlier["out"], "-d")
    assert result.exit_code == 0, result.stderr
    report = report_of(outlier["out"])
    assert report["input"]["ac_config"] == "inline" and report["samples"]["used"] == 50
    assert "evaluation" not in report and "accuracy_aware" not in report
    assert printed_metrics(result.stdout) == {}


def test_max_drop_overrides_the_config(outlier, tmp_path):
    config = tmp_path / "aa.yml"
    config.write_text(yaml.safe_dump({
        "model": {"model": str(outlier["xml"])}, "engine": {"config": str(outlier["ac"])},
        "compression": {"algorithms": [{"name": "AccuracyAwareQuantization", "params": {"maximal_drop": 0.01}}]}}))
    result = pot("-c", config, "--max-drop", "0.9", "--output-dir", outlier["out"], "-d")
    assert result.exit_code == 0, result.stderr
    report = report_of(outlier["out"])
    assert report["config"]["compression"]["algorithms"][0]["params"]["maximal_drop"] == 0.9
    assert report["accuracy_aware"]["reverted_layers"] == []


@pytest.mark.parametrize("args,message", [
    (["-q", "accuracy_aware", "-m", "{xml}"], "-q accuracy_aware needs --ac-config FILE"),
    (["-q", "default", "-m", "{xml}", "--data-source", "{root}/val", "-e"],
     "-e/--evaluate needs annotated data and metrics: the accuracy_checker engine"),
    (["-q", "default", "-m", "{xml}", "--ac-config", "{ac}", "--engine", "simplified"],
     "--ac-config needs the accuracy_checker engine"),
    (["-q", "default", "-m", "{xml}", "--ac-config", "{ac}", "--data-source", "{root}/val"],
     "--ac-config and --data-source are exclusive"),
    (["-q", "default", "-m", "{xml}", "--ac-config", "{ac}", "--max-drop", "0.1"],
     "--max-drop applies only to -q accuracy_aware"),
    (["-q", "accuracy_aware", "-m", "{xml}", "--ac-config", "{ac}", "--max-drop", "-1"],
     "Invalid value for '--max-drop'"),
])
def test_usage_errors_exit_2(outlier, args, message):
    values = {"xml": outlier["xml"], "ac": outlier["ac"], "root": outlier["root"]}
    result = pot(*[a.format(**values) for a in args], "--output-dir", outlier["out"])
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr and not outlier["out"].exists()


def test_max_drop_needs_an_accuracy_aware_config(tmp_path, tiny_model_dir):
    config = tmp_path / "d.json"
    config.write_text(json.dumps({"model": {"model": str(tiny_model_dir / "model" / "tiny.xml")},
                                  "engine": {"data_source": str(tiny_model_dir / "images")},
                                  "compression": {"algorithms": [{"name": "DefaultQuantization"}]}}))
    result = pot("-c", config, "--max-drop", "0.01", "--output-dir", tmp_path / "out")
    assert result.exit_code == 2
    assert "--max-drop applies only to AccuracyAwareQuantization; the config has no such algorithm" in result.stderr


def test_evaluation_needs_an_annotated_dataset(outlier, tmp_path):
    models_dir = tmp_path / "calib"
    doc = {"models": [{"name": "m", "launchers": [{"framework": "openvino"}],
                       "datasets": [{"name": "calib", "data_source": str(outlier["root"] / "val")}]}]}
    ac = tmp_path / "ac.yml"
    ac.write_text(yaml.safe_dump(doc))
    ok = pot("-q", "default", "-m", outlier["xml"], "--ac-config", ac, "--output-dir", models_dir, "-d")
    assert ok.exit_code == 0, ok.stderr  # calibration alone needs no annotation
    result = pot("-q", "default", "-m", outlier["xml"], "--ac-config", ac, "-e", "--output-dir", tmp_path / "o")
    assert result.exit_code == 2
    assert "datasets[0].annotation_conversion: missing; -e/--evaluate needs an annotated dataset" in result.stderr
