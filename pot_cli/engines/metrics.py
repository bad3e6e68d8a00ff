"""Metrics of the Accuracy-Checker-style engine, computed per sample and then aggregated.

Every metric turns one model output and one annotation into a per-sample value, and the
per-sample values of a set of samples into the metric of that set, so the same numbers serve
the whole validation set, any subset of it (the ranking subset of AccuracyAwareQuantization),
and the per-sample comparison of two models.

Supported ``type`` values (Accuracy Checker names):

* ``accuracy`` (``top_k``, default 1): per sample 1.0 when the label is among the ``top_k``
  highest scores of the output, else 0.0; the metric is the mean. Higher is better.
* ``mae``, ``mse``, ``rmse``: regression against a reference array of the output's size
  (``features_regression`` annotations). Per sample ``mean|y - r|`` (mae) or ``mean (y - r)^2``
  (mse, rmse); the metric is the mean over samples, and for rmse the square root of the mean
  squared error. Lower is better.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from pot_cli.errors import ConfigError, DatasetError

#: keys Accuracy Checker configs commonly carry that do not change the value; accepted, unused
_IGNORED_KEYS = ("reference", "threshold", "abs_threshold", "rel_threshold", "presenter")


@dataclass(frozen=True)
class Metric:
    """One metric of a dataset.

    :param name: the metric's name in reports and in AccuracyAwareQuantization ``metrics``
        (default: its ``type``).
    :param type: ``accuracy``, ``mae``, ``mse`` or ``rmse``.
    :param top_k: ``accuracy`` only: how many best scores may hold the label.
    """

    name: str
    type: str
    top_k: int = 1

    @property
    def higher_better(self) -> bool:
        """True when a larger value is better (``accuracy``), False for the error metrics."""
        return self.type == "accuracy"

    @property
    def annotation_kind(self) -> str:
        """``label`` (an int class id) or ``regression`` (a reference array)."""
        return "label" if self.type == "accuracy" else "regression"

    def per_sample(self, output: np.ndarray, annotation: Any) -> float:
        """The value of one sample.

        :param output: the model output of one sample, any shape with batch 1, e.g. ``(1, 10)``
            scores (logits or probabilities; only their order matters for ``accuracy``).
        :param annotation: an int label (``accuracy``) or a reference array with as many
            elements as ``output`` (regression metrics).
        :return: 0.0/1.0 (accuracy), ``mean|y - r|`` (mae) or ``mean (y - r)^2`` (mse, rmse).
        :raises DatasetError: when the annotation does not fit the output.
        """
        y = np.asarray(output, dtype=np.float64).reshape(-1)
        if self.type == "accuracy":
            label = int(annotation)
            if not 0 <= label < y.size:
                raise DatasetError(f"metric '{self.name}': label {label} is outside the model's "
                                   f"{y.size} output classes; expected 0..{y.size - 1} "
                                   "(check has_background)")
            if self.top_k == 1:
                return float(int(np.argmax(y)) == label)
            # the label is in the top k when fewer than k scores are strictly greater than its own
            return float(int(np.count_nonzero(y > y[label])) < self.top_k)
        ref = np.asarray(annotation, dtype=np.float64).reshape(-1)
        if ref.size != y.size:
            raise DatasetError(f"metric '{self.name}': the reference has {ref.size} values, the model "
                               f"output {y.size}; expected the same number")
        diff = y - ref
        return float(np.mean(np.abs(diff))) if self.type == "mae" else float(np.mean(diff * diff))

    def aggregate(self, values: Sequence[float] | np.ndarray) -> float:
        """The metric of a set of samples from their per-sample values (NaN for an empty set)."""
        v = np.asarray(values, dtype=np.float64)
        if v.size == 0:
            return float("nan")
        mean = float(np.mean(v))
        return math.sqrt(mean) if self.type == "rmse" else mean

    def evaluate(self, predictions: Sequence, annotations: Sequence) -> float:
        """The metric of a set of samples: :meth:`aggregate` of the per-sample values.

        :param predictions: model outputs, one per sample (as for :meth:`per_sample`).
        :param annotations: the samples' labels or reference arrays, same order.
        """
        return self.aggregate([self.per_sample(p, a) for p, a in zip(predictions, annotations)])

    def drop(self, baseline: float, value: float) -> float:
        """How much worse ``value`` is than ``baseline``: ``baseline - value`` for a metric where
        higher is better, ``value - baseline`` otherwise (negative: ``value`` is better)."""
        return baseline - value if self.higher_better else value - baseline


#: metric ``type`` -> keys allowed in its config entry besides ``type`` and ``name``
METRIC_KEYS: dict[str, tuple[str, ...]] = {
    "accuracy": ("top_k",),
    "mae": (),
    "mse": (),
    "rmse": (),
}


def create_metrics(entries: Any, where: str) -> tuple[Metric, ...]:
    """Build the metrics of a dataset's ``metrics`` list.

    :param entries: the list from the config: ``[{type: accuracy, top_k: 1, name: ...}, ...]``.
    :param where: ``<file>: <key.path>`` of the list, prefixed to messages.
    :return: the metrics, in order.
    :raises ConfigError: an unsupported type or key, a bad ``top_k``, or two metrics with the
        same name (all problems at once).
    """
    from pot_cli.config.loader import did_you_mean

    if not isinstance(entries, (list, tuple)) or not entries:
        raise ConfigError(f"{where}: expected a non-empty list of metrics such as "
                          "[{type: accuracy, top_k: 1}]")
    problems: list[str] = []
    metrics: list[Metric] = []
    for k, entry in enumerate(entries):
        at = f"{where}[{k}]"
        if isinstance(entry, str):
            entry = {"type": entry}
        if not isinstance(entry, Mapping):
            problems.append(f"{at}: expected a mapping with 'type'")
            continue
        kind = entry.get("type")
        if kind not in METRIC_KEYS:
            problems.append(f"{at}.type: {kind!r} is not supported{did_you_mean(kind, METRIC_KEYS)}; "
                            f"expected one of: {', '.join(METRIC_KEYS)}")
            continue
        allowed = ("type", "name") + METRIC_KEYS[kind] + _IGNORED_KEYS
        for key in entry:
            if key not in allowed:
                problems.append(f"{at}.{key}: unknown key for metric '{kind}'{did_you_mean(key, allowed)}; "
                                f"expected one of: {', '.join(allowed)}")
        top_k = entry.get("top_k", 1)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            problems.append(f"{at}.top_k: {top_k!r} is not a positive integer; expected e.g. 1 or 5")
            top_k = 1
        name = entry.get("name", kind)
        if not isinstance(name, str) or not name:
            problems.append(f"{at}.name: expected a non-empty string")
            name = kind
        metrics.append(Metric(name=name, type=kind, top_k=top_k))
    names = [m.name for m in metrics]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"{where}: two metrics are named '{name}'; give each a distinct 'name'")
    if problems:
        raise ConfigError("\n".join(problems), problems=problems)
    return tuple(metrics)
