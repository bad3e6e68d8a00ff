"""AccuracyAwareQuantization on a synthetic model with one layer broken by INT8 (an outlier channel)."""
from __future__ import annotations

import json

import openvino as ov
import pytest

from accuracy_aware.conftest import pot, report_of


def aa_config(tmp_path, outlier, **params) -> str:
    """A POT JSON config running AccuracyAwareQuantization on the outlier model with ``params``."""
    path = tmp_path / "aa.json"
    path.write_text(json.dumps({
        "model": {"model_name": "m", "model": str(outlier["xml"])},
        "engine": {"type": "accuracy_checker", "config": str(outlier["ac"])},
        "compression": {"algorithms": [{"name": "AccuracyAwareQuantization", "params": params}]}}))
    return str(path)


def source_type(model: ov.Model, node: str, port: int) -> str:
    op = next(o for o in model.get_ops() if o.get_friendly_name() == node)
    return op.input(port).get_source_output().get_node().get_type_name()


def test_the_layer_broken_by_the_outlier_channel_is_reverted_first(outlier):
    result = pot("-q", "accuracy_aware", "-m", outlier["xml"], "--ac-config", outlier["ac"], "--max-drop", "0.3",
                 "--output-dir", outlier["out"], "-d")
    assert result.exit_code == 0, result.stderr
    aa = report_of(outlier["out"])["accuracy_aware"]
    assert aa["baseline"] == {"accuracy": 1.0}
    assert aa["fully_quantized"]["drop"]["accuracy"] > 0.5  # conv3 breaks under INT8
    assert aa["rankings"][0]["scores"][0]["layer"] == "conv3"
    assert [s["layers"] for s in aa["steps"]] == [[], ["conv3"]]
    assert aa["reverted_layers"] == [{"name": "conv3", "type": "Convolution"}]
    assert aa["target_met"] and aa["final"]["drop"]["accuracy"] <= 0.3
    saved = ov.Core().read_model(str(outlier["out"] / "optimized" / "m.xml"))
    assert source_type(saved, "conv3", 0) != "FakeQuantize" and source_type(saved, "conv3", 1) == "Constant"
    assert source_type(saved, "conv2", 0) == "FakeQuantize" and source_type(saved, "conv2", 1) == "Multiply"


def test_a_larger_maximal_drop_never_reverts_more_layers(outlier):
    reverted = []
    for max_drop in (0.0, 0.05, 0.15, 0.3, 0.9):
        out = outlier["out"] / str(max_drop)
        result = pot("-q", "accuracy_aware", "-m", outlier["xml"], "--ac-config", outlier["ac"],
                     "--max-drop", max_drop, "--output-dir", out, "-d")
        assert result.exit_code == 0, result.stderr
        aa = report_of(out)["accuracy_aware"]
        assert aa["target_met"] and aa["final"]["drop"]["accuracy"] <= max_drop + 1e-9  # (1 - 0.85 = 0.15000000000000002)
        reverted.append(len(aa["reverted_layers"]))
    assert reverted == sorted(reverted, reverse=True)
    assert reverted[-1] == 0 and len(set(reverted)) >= 3


def test_target_not_met_writes_the_best_model_and_exits_3(outlier, tmp_path):
    config = aa_config(tmp_path, outlier, maximal_drop=0.0, max_iter_num=1)
    result = pot("-c", config, "--output-dir", outlier["out"], "-d")
    assert result.exit_code == 3
    assert "could not reach the required drop" in result.stderr
    assert "the best model found was written (exit code 3)" in result.stderr
    assert result.stdout.strip() == str(outlier["out"] / "optimized" / "m.xml")
    report = report_of(outlier["out"])
    aa = report["accuracy_aware"]
    assert (aa["target_met"], aa["stop_reason"]) == (False, "max_iter_num 1 reached")
    assert [r["name"] for r in aa["reverted_layers"]] == ["conv3"] == report["summary"]["reverted_layers"]
    assert report["summary"]["target_met"] is False


def test_relative_drop_baseline_values_mixed_preset_and_tuning(outlier, tmp_path):
    config = aa_config(tmp_path, outlier, maximal_drop=0.3, drop_type="relative", convert_to_mixed_preset=True,
                       tune_hyperparams=True, metric_subset_ratio=0.5, ranking_subset_size=40,
                       metrics=[{"name": "accuracy", "baseline_value": 0.8}])
    result = pot("-c", config, "--output-dir", outlier["out"], "-d")
    assert result.exit_code == 0, result.stderr
    aa = report_of(outlier["out"])["accuracy_aware"]
    assert (aa["baseline"], aa["baseline_source"]) == ({"accuracy": 0.8}, "config")
    assert aa["max_drop"]["accuracy"] == pytest.approx(0.24)
    assert (aa["evaluation_samples"], aa["per_sample_subset"]) == (120, 60)
    actions = [s["action"] for s in aa["steps"]]
    assert actions[:2] == ["quantize", "convert_to_mixed_preset"]
    assert any(a.startswith("tune_hyperparams") for a in actions)
    assert all(r["subset_size"] <= 40 for r in aa["rankings"])
    assert aa["target_met"] and aa["final"]["drop"]["accuracy"] <= 0.24


def test_annotation_free_with_minmax_base_algorithm(outlier, tmp_path):
    config = aa_config(tmp_path, outlier, maximal_drop=1.0, annotation_free=True, annotation_conf_threshold=0.6,
                       base_algorithm="MinMaxQuantization")
    result = pot("-c", config, "--output-dir", outlier["out"], "-d")
    assert result.exit_code == 0, result.stderr
    report = report_of(outlier["out"])
    aa = report["accuracy_aware"]
    assert aa["baseline"] == {"accuracy": 1.0}  # the FP32 model agrees with its own confident predictions
    assert 0 < aa["evaluation_samples"] < 120
    assert not any(b["applied"] for b in report["bias_correction"])


def test_unknown_metric_name_is_a_config_error(outlier, tmp_path):
    result = pot("-c", aa_config(tmp_path, outlier, metrics=[{"name": "top1"}]), "--output-dir", outlier["out"])
    assert result.exit_code == 2
    assert "AccuracyAwareQuantization metrics: top1 not computed by the engine; expected one of: accuracy" \
        in result.stderr
