"""Acceptance on the real fmnist_cnn model with the example Accuracy Checker config (skipped
without ``../shared``)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import openvino as ov
import pytest

from accuracy_aware.conftest import pot, report_of


@pytest.fixture(scope="module")
def fmnist(shared_dir, repo_root) -> dict[str, Path]:
    return {"xml": shared_dir / "models" / "fmnist_cnn" / "fmnist_cnn.xml",
            "data": shared_dir / "data" / "fashion_mnist",
            "ac": repo_root / "configs" / "examples" / "fmnist_ac.yml",
            "config": repo_root / "configs" / "examples" / "fmnist_accuracy_aware.json"}


def batch_accuracy(xml: Path, data: Path) -> float:
    """Top-1 accuracy of an IR on the 2000 validation images in one batch, without pot_cli."""
    lines = [line.split() for line in (data / "val.txt").read_text().splitlines() if line.strip()]
    x = np.stack([cv2.imread(str(data / "val" / f), cv2.IMREAD_GRAYSCALE) for f, _ in lines])[:, None]
    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    predicted = compiled(x.astype(np.float32))[0].argmax(axis=1)
    return float(np.mean(predicted == np.array([int(label) for _, label in lines])))


def test_a_loose_target_reverts_nothing_and_evaluate_matches_a_separate_evaluation(fmnist, tmp_path):
    result = pot("-q", "accuracy_aware", "-m", fmnist["xml"], "--ac-config", fmnist["ac"], "--max-drop", "0.05",
                 "-e", "--output-dir", tmp_path, "-d")
    assert result.exit_code == 0, result.stderr
    report = report_of(tmp_path)
    aa = report["accuracy_aware"]
    assert aa["reverted_layers"] == [] and aa["target_met"] and len(aa["steps"]) == 1
    assert aa["baseline"]["accuracy@top1"] == batch_accuracy(fmnist["xml"], fmnist["data"])
    separate = batch_accuracy(tmp_path / "optimized" / "fmnist_cnn.xml", fmnist["data"])
    assert report["evaluation"]["metrics"] == {"accuracy@top1": separate}
    assert f"accuracy@top1: {separate:.6f}" in result.stdout.splitlines()


def test_the_example_config_meets_0_002(fmnist, tmp_path):
    result = pot("-c", fmnist["config"], "--output-dir", tmp_path, "-d")
    assert result.exit_code == 0, result.stderr
    aa = report_of(tmp_path)["accuracy_aware"]
    assert aa["target_met"] and aa["final"]["drop"]["accuracy@top1"] <= 0.002 + 1e-12


def test_a_strict_target_reverts_listed_layers(fmnist, tmp_path):
    result = pot("-q", "accuracy_aware", "-m", fmnist["xml"], "--ac-config", fmnist["ac"], "--max-drop", "0",
                 "--output-dir", tmp_path, "-d")
    assert result.exit_code == 0, result.stderr
    aa = report_of(tmp_path)["accuracy_aware"]
    assert aa["fully_quantized"]["drop"]["accuracy@top1"] > 0
    assert aa["target_met"] and aa["final"]["drop"]["accuracy@top1"] <= 0
    assert aa["reverted_layers"] and all(r["type"] in ("Convolution", "MatMul") for r in aa["reverted_layers"])
    assert batch_accuracy(tmp_path / "optimized" / "fmnist_cnn.xml", fmnist["data"]) == \
        aa["final"]["metrics"]["accuracy@top1"]
