"""Metrics: per-sample values, aggregation, direction, config errors."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pot_cli.engines.metrics import Metric, create_metrics
from pot_cli.errors import ConfigError, DatasetError


def test_accuracy_top1_and_topk_per_sample():
    scores = np.array([[0.1, 0.7, 0.2, 0.0]], dtype=np.float32)
    top1, top2 = Metric("a1", "accuracy", 1), Metric("a2", "accuracy", 2)
    assert [top1.per_sample(scores, label) for label in range(4)] == [0.0, 1.0, 0.0, 0.0]
    assert [top2.per_sample(scores, label) for label in range(4)] == [0.0, 1.0, 1.0, 0.0]
    assert top1.aggregate([1.0, 0.0, 1.0, 1.0]) == 0.75
    assert top1.higher_better and top1.drop(0.9, 0.85) == pytest.approx(0.05)


def test_accuracy_label_outside_the_output_names_has_background():
    with pytest.raises(DatasetError, match=r"label 10 is outside the model's 10 output classes.*has_background"):
        Metric("accuracy", "accuracy").per_sample(np.zeros((1, 10)), 10)


def test_regression_metrics():
    y, ref = np.array([[1.0, 2.0, 4.0]]), np.array([1.0, 0.0, 1.0])
    mae, mse, rmse = (Metric(t, t) for t in ("mae", "mse", "rmse"))
    assert mae.per_sample(y, ref) == pytest.approx(5 / 3)
    assert mse.per_sample(y, ref) == pytest.approx(13 / 3)
    assert rmse.aggregate([4.0, 16.0]) == pytest.approx(math.sqrt(10.0))
    assert not mae.higher_better and mae.drop(0.5, 0.7) == pytest.approx(0.2)
    with pytest.raises(DatasetError, match="the reference has 2 values, the model output 3"):
        mae.per_sample(y, ref[:2])


def test_create_metrics_defaults_and_names():
    metrics = create_metrics([{"type": "accuracy", "top_k": 5, "name": "top5", "reference": 0.9}, "mae"], "f: m")
    assert metrics == (Metric("top5", "accuracy", 5), Metric("mae", "mae", 1))


def test_create_metrics_reports_every_problem_with_key_and_supported_values():
    with pytest.raises(ConfigError) as e:
        create_metrics([{"type": "map"}, {"type": "accuracy", "topk": 1}, {"type": "accuracy", "top_k": 0},
                        {"type": "mae"}, {"type": "mae"}], "ac.yml: models[0].datasets[0].metrics")
    assert e.value.problems == [
        "ac.yml: models[0].datasets[0].metrics[0].type: 'map' is not supported (did you mean 'mae'?); "
        "expected one of: accuracy, mae, mse, rmse",
        "ac.yml: models[0].datasets[0].metrics[1].topk: unknown key for metric 'accuracy' (did you mean 'top_k'?); "
        "expected one of: type, name, top_k, reference, threshold, abs_threshold, rel_threshold, presenter",
        "ac.yml: models[0].datasets[0].metrics[2].top_k: 0 is not a positive integer; expected e.g. 1 or 5",
        "ac.yml: models[0].datasets[0].metrics: two metrics are named 'accuracy'; give each a distinct 'name'",
        "ac.yml: models[0].datasets[0].metrics: two metrics are named 'mae'; give each a distinct 'name'",
    ]
