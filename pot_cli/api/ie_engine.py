"""``IEEngine`` and ``SimplifiedEngine``: the OpenVINO runtime engines of the API.

``IEEngine(config, data_loader, metric)`` reads ``DataLoader`` items (:mod:`pot_cli.api.feeding`
lays their data out for the model inputs), collects statistics with in-graph reductions in one
asynchronous pass (:func:`pot_cli.statistics.collector.collect_statistics`), and evaluates a
:class:`~pot_cli.api.Metric` sample by sample in dataset order, whatever order the asynchronous
requests finish in (the original numbered samples by their position in the batch, so per-sample
results came back in completion order).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import openvino as ov

from pot_cli.api.engine import Engine, append_stats, output_key, process_accumulated_stats
from pot_cli.api.feeding import InputFeeder, parse_item
from pot_cli.engines.evaluator import Evaluation, Evaluator
from pot_cli.errors import ConfigError
from pot_cli.statistics.collector import StatisticRequest, Statistics, collect_statistics

log = logging.getLogger("pot")


def collect_in_graph(engine: Engine, model: ov.Model, requests: list[StatisticRequest], indices: Sequence[int],
                     what: str = "statistics") -> Statistics:
    """One in-graph statistics pass of ``model`` over ``engine.iter_samples(indices)``, with the
    engine's progress bar and request count."""
    bar, update = engine.progress_bar(len(indices))
    log.info("Collecting %s on %d samples", what, len(indices))
    try:
        return collect_statistics(model, requests, engine.iter_samples(indices), len(indices), progress=update,
                                  requests_number=engine.stat_requests_number)
    finally:
        if bar is not None:
            bar.close()


@dataclass(frozen=True)
class MetricView:
    """One metric of a user :class:`~pot_cli.api.Metric`, as AccuracyAwareQuantization reads it.

    :param name: the metric's name (a key of ``get_attributes()``).
    :param type: its ``type`` attribute.
    :param higher_better: ``direction == 'higher-better'``.
    """

    name: str
    type: str
    higher_better: bool
    annotation_kind: str = "label"

    def aggregate(self, values) -> float:
        """Mean of per-sample values, NaN ignored (the original's ranking reduction)."""
        v = np.asarray(values, dtype=np.float64)
        return float(np.nanmean(v)) if v.size and not np.all(np.isnan(v)) else float("nan")

    def drop(self, baseline: float, value: float) -> float:
        """How much worse ``value`` is than ``baseline`` (negative: better)."""
        return baseline - value if self.higher_better else value - baseline


def metric_views(metric) -> list[MetricView]:
    """:class:`MetricView` of every metric ``metric.get_attributes()`` names.

    :raises ConfigError: on a ``direction`` other than ``higher-better``/``higher-worse``.
    """
    views = []
    for name, attrs in metric.get_attributes().items():
        direction = attrs.get("direction", "higher-better")
        if direction not in ("higher-better", "higher-worse"):
            raise ConfigError(f"Metric.get_attributes(): '{name}': direction '{direction}'; expected "
                              "'higher-better' or 'higher-worse'")
        views.append(MetricView(str(name), str(attrs.get("type", name)), direction == "higher-better"))
    return views


class _LoaderDataset:
    """The engine's data loader as the evaluator's dataset."""

    annotations = None

    def __init__(self, engine: "IEEngine"):
        self.engine = engine
        self.name = self.where = type(engine.data_loader).__name__

    def __len__(self) -> int:
        return len(self.engine.data_loader)

    def iter_samples(self, indices: Iterable[int]) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        return self.engine.iter_samples(indices)


class LoaderEvaluator(Evaluator):
    """Evaluates a user :class:`~pot_cli.api.Metric` over an engine's data loader.

    Outputs are ``{output name: array}`` per sample (:func:`~pot_cli.api.engine.output_key`);
    :meth:`score` feeds ``postprocess_output(outputs, [metadata])`` and ``[annotation]`` to
    ``metric.update`` in dataset order, reads ``metric.value`` after each sample (NaN when the
    metric has no ``value``) and ``metric.avg_value`` at the end.
    """

    supports_annotation_free = False

    def __init__(self, engine: "IEEngine"):
        views = metric_views(engine.metric) if engine.metric is not None else []
        super().__init__(_LoaderDataset(engine), views, device=engine.device,
                         requests_number=engine.eval_requests_number)
        self.engine = engine
        self._no_value = False

    def _read_output(self, request: ov.InferRequest, k: int | None, names: list | None = None) -> dict[str, np.ndarray]:
        return {output_key(o): np.array(request.get_output_tensor(j).data, copy=True)
                for j, o in enumerate(request.model_outputs)}

    def _per_sample(self, metric) -> dict[str, Any] | None:
        if self._no_value:
            return None
        try:
            return metric.value
        except Exception as e:  # the original's base class raises; many samples dropped ``value``
            self._no_value = True
            log.info("Metric %s has no per-sample 'value' (%s); AccuracyAwareQuantization ranks layers by the "
                     "output distance to FP32 only", type(metric).__name__, type(e).__name__)
            return None

    def score(self, outputs: dict[int, Any], indices: Sequence[int], per_sample: bool = True) -> Evaluation:
        """The metric of ``outputs`` on ``indices`` (see the class docstring). ``per_sample`` is
        accepted for the evaluator interface: a POT ``Metric`` gives per-sample values as it is fed."""
        metric, indices = self.engine.metric, list(indices)
        metric.reset()
        per = {m.name: np.full(len(indices), np.nan) for m in self.metrics}
        updated = False
        for k, i in enumerate(indices):
            annotation, metadata = self.engine.annotation(i)
            if annotation is None:
                continue
            updated = True
            metric.update(self.engine.postprocess_output(outputs[i], [metadata]), [annotation])
            values = self._per_sample(metric)
            for m in self.metrics:
                if values is not None and m.name in values:
                    v = values[m.name]
                    v = v[-1] if isinstance(v, (list, tuple, np.ndarray)) and np.ndim(v) and len(v) else v
                    per[m.name][k] = float(np.nanmean(np.asarray(v, dtype=np.float64)))
        avg = metric.avg_value if updated else {}
        metrics = {m.name: float(np.nanmean(np.asarray(avg[m.name], dtype=np.float64))) if m.name in avg
                   else float("nan") for m in self.metrics}
        return Evaluation(metrics, per, indices, {i: outputs[i] for i in indices})


class IEEngine(Engine):
    """The OpenVINO runtime engine over a :class:`~pot_cli.api.DataLoader` (the original's ``IEEngine``).

    :param config: ``device`` (default ``CPU``), ``stat_requests_number``,
        ``eval_requests_number`` (``None``: the device's optimal number of parallel requests;
        1: synchronous), our extension ``layout`` (``'NCHW'`` or ``{input name: layout}``, when the
        IR does not carry one and the shape does not tell).
    :param data_loader: the dataset; items as :class:`~pot_cli.api.DataLoader` describes.
    :param metric: a :class:`~pot_cli.api.Metric` (AccuracyAwareQuantization, ``evaluate``), or ``None``.

    Statistics and evaluation compile the model with ``INFERENCE_PRECISION_HINT=f32`` on CPU, so
    FP32 references are not computed in bf16.
    """

    #: items are bare data (``SimplifiedEngine``)
    simplified = False
    has_sample_feeds = True

    def __init__(self, config: Any = None, data_loader=None, metric=None):
        super().__init__(config, data_loader, metric)
        self._feeder: InputFeeder | None = None
        self._items: dict[int, tuple[Any, Any]] = {}
        self._evaluator: LoaderEvaluator | None = None

    def set_model(self, model) -> None:
        """Make ``model`` (a :class:`~pot_cli.api.CompressedModel` or ``ov.Model``) current; the
        input layout is worked out from the first model set."""
        from pot_cli.api.model import CompressedModel

        if isinstance(model, ov.Model):
            model = CompressedModel(model)
        super().set_model(model)
        if self._feeder is None:
            self._feeder = self._make_feeder(model.model)

    def _make_feeder(self, model: ov.Model) -> InputFeeder | None:
        return InputFeeder(model, layout=self.config.get("layout"))

    def _set_model(self, model) -> list[dict]:
        """The original's hook: ``[{'model': ov.Model, 'name'?}]`` of ``model``."""
        return [dict(entry) for entry in model.models]

    @staticmethod
    def postprocess_output(outputs: dict[str, np.ndarray], metadata: list) -> Any:
        """What ``Metric.update`` receives: by default ``list(outputs.values())``, one array per
        model output in model output order, batch first. Override to decode.

        :param outputs: ``{output name: array}``.
        :param metadata: one entry per batch item (``{}`` when the item had none).
        """
        return list(outputs.values())

    def annotation(self, index: int) -> tuple[Any, Any]:
        """``(annotation, metadata)`` of item ``index`` (read again if it was not seen yet)."""
        if index not in self._items:
            self._item(index)
        return self._items[index]

    def _item(self, index: int):
        item = parse_item(self.data_loader[index], index, simplified=self.simplified)
        self._items[index] = (item.annotation, item.metadata)
        return item

    def iter_samples(self, indices: Iterable[int]) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """``(index, {input name: array})`` from the data loader's items, laid out for the model."""
        if self._feeder is None:
            raise ConfigError(f"{type(self).__name__}: no model set; call set_model(model) first")
        for i in indices:
            yield i, self._feeder.feed(self._item(i).data, i)

    def collect_statistics(self, model: ov.Model, requests: list[StatisticRequest], indices: Sequence[int],
                           what: str = "statistics") -> Statistics:
        """In-graph reductions in one asynchronous pass (see :func:`collect_in_graph`)."""
        return collect_in_graph(self, model, requests, indices, what)

    def evaluator(self) -> LoaderEvaluator:
        """The evaluator of the metric over the data loader.

        :raises ConfigError: without a metric.
        """
        if self.metric is None:
            raise ConfigError(f"{type(self).__name__}: no metric; AccuracyAwareQuantization and evaluation need "
                              "one: IEEngine(config, data_loader, metric)")
        if self._evaluator is None:
            self._evaluator = LoaderEvaluator(self)
        return self._evaluator

    def predict(self, stats_layout=None, sampler=None, stat_aliases=None, metric_per_sample=False,
                print_progress=False):
        """Run the current model (see :meth:`Engine.predict`); outputs are kept in memory for
        the samples of this call."""
        if self._model is None:
            raise ConfigError(f"{type(self).__name__}.predict: no model set; call set_model(model) first")
        indices = list(sampler.subset_indices) if sampler is not None else list(range(len(self.data_loader)))
        ev = LoaderEvaluator(self)
        if print_progress:
            log.info("Inference of %d samples", len(indices))
        outputs = ev.infer(ev.compile(self._model.model), indices)
        stats: dict = {}
        if stats_layout:
            accumulated: dict = {}
            for i in indices:
                append_stats(accumulated, stats_layout, outputs[i], i)
            stats = process_accumulated_stats(accumulated)
        if self.metric is None:
            return None, stats
        evaluation = ev.score(outputs, indices)
        metrics: Any = dict(evaluation.metrics)
        if metric_per_sample:
            per = [{"sample_id": i, "metric_name": name, "result": float(values[k])}
                   for name, values in evaluation.per_sample.items() for k, i in enumerate(indices)]
            metrics = (sorted(per, key=lambda r: r["sample_id"]), metrics)
        return metrics, stats


class SimplifiedEngine(IEEngine):
    """``IEEngine`` whose data loader items are the bare data (array or dict): no annotation,
    no metric (the original's ``SimplifiedEngine``)."""

    simplified = True
