"""``Engine``: how the pipeline runs a model on data (the original POT API's contract, plus the
few methods our algorithms call).

The original's contract, kept for custom engines: ``Engine(config, data_loader, metric)``,
``set_model(model)``, ``predict(stats_layout, sampler, stat_aliases, metric_per_sample,
print_progress)`` called **positionally** and returning ``(metrics, statistics)``,
``get_metrics_attributes()``.

What our algorithms call (documented for engine authors; :class:`~pot_cli.api.IEEngine`
implements every one natively):

* :meth:`Engine.calibration_size`, :meth:`Engine.calibration_indices`: the calibration subset;
* :meth:`Engine.collect_statistics`: one statistics pass; the base class does it through
  ``predict`` with a ``stats_layout`` of NumPy reductions (:mod:`pot_cli.statistics.host`), so a
  custom engine that only implements ``predict`` can calibrate;
* :meth:`Engine.iter_samples`: model-ready inputs, for the steps that run samples themselves
  (SmoothQuant's search, If bodies, the CPU speed check); engines without it skip those steps;
* :meth:`Engine.evaluator`: evaluation for AccuracyAwareQuantization.
"""
from __future__ import annotations

import logging
import sys
from abc import ABC, abstractmethod
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import openvino as ov

from pot_cli.api.data_loader import AttrDict
from pot_cli.engines.data_source import select_subset
from pot_cli.errors import DatasetError, NotSupportedError
from pot_cli.statistics.collector import StatisticRequest, Statistics

log = logging.getLogger("pot")

EMPTY_LOADER = ("Empty data loader! Please make sure that the calibration dataset you provided is correct and "
                "contains at least a number of samples defined in the configuration file.")


class BatchSampler:
    """Batches of data loader items in index order (the original's ``BatchSampler``).

    :param data_loader: the dataset.
    :param batch_size: items per batch (the last batch may be shorter).
    :param subset_indices: dataset indices to visit (default: all).

    Iterating yields lists of items (``data_loader[i]``); :meth:`batches` yields
    ``(indices, items)`` so the dataset index can travel with each item. ``len()`` counts
    samples, not batches, as the original.
    """

    def __init__(self, data_loader, batch_size: int = 1, subset_indices: Sequence[int] | None = None):
        self._data_loader = data_loader
        self.batch_size = batch_size
        self.subset_indices = list(range(len(data_loader)) if subset_indices is None else subset_indices)

    @property
    def num_samples(self) -> int:
        return len(self.subset_indices)

    def __len__(self) -> int:
        return len(self.subset_indices)

    def batches(self) -> Iterator[tuple[list[int], list[Any]]]:
        """``(dataset indices, items)`` per batch."""
        for k in range(0, len(self.subset_indices), self.batch_size):
            idx = self.subset_indices[k:k + self.batch_size]
            yield idx, [self._data_loader[i] for i in idx]

    def __iter__(self) -> Iterator[list[Any]]:
        for _, items in self.batches():
            yield items


def append_stats(accumulated: dict, stats_layout: dict, outputs: dict[str, np.ndarray], dataset_index: int) -> None:
    """Add one sample's statistics (the original's ``engines.utils.append_stats``).

    :param accumulated: ``{tensor key: {statistic key: [(dataset_index, value), ...]}}``, filled here.
    :param stats_layout: ``{tensor key: {statistic key: fn}}`` as given to ``predict``.
    :param outputs: ``{tensor key: array}`` of this sample; keys absent here are skipped (a cascade
        stage that did not run).
    :param dataset_index: the sample's index in the dataset (results are sorted by it).
    """
    for key, stats in stats_layout.items():
        if key in outputs:
            for name, fn in stats.items():
                accumulated.setdefault(key, {}).setdefault(name, []).append((dataset_index, fn(outputs[key])))


def process_accumulated_stats(accumulated: dict) -> dict[str, dict[str, list]]:
    """Sort :func:`append_stats`'s values by dataset index and drop the index."""
    return {key: {name: [v for _, v in sorted(values, key=lambda p: p[0])] for name, values in stats.items()}
            for key, stats in accumulated.items()}


def output_key(output: ov.Output, model_name: str | None = None) -> str:
    """The name of a model output in ``outputs`` dicts and ``stats_layout``: the friendly name of
    the node producing it (``.<port>`` appended when that is not port 0), as the original named
    outputs by their producer.

    :param model_name: for an output of a cascade's sub-model: that sub-model's name, prepended as
        ``<model_name>_`` (the original prefixed every node of sub-model ``X`` with ``X_``); the
        ``stats_layout`` of a cascade names tensors that way.
    """
    source = output.get_node().input_value(0) if output.get_node().get_type_name() == "Result" else output
    node = source.get_node()
    key = node.get_friendly_name() + (f".{source.get_index()}" if source.get_index() else "")
    return f"{model_name}_{key}" if model_name else key


class Engine(ABC):
    """Runs a model on a dataset: the base of every engine.

    :param config: engine settings: ``device`` (default ``CPU``), ``stat_requests_number`` and
        ``eval_requests_number`` (parallel infer requests; ``None``: the device's optimal number,
        1: synchronous), and any key a subclass reads. A dict becomes an :class:`AttrDict`.
    :param data_loader: the dataset (:class:`~pot_cli.api.DataLoader` or anything with
        ``__len__``/``__getitem__``).
    :param metric: a :class:`~pot_cli.api.Metric`, or ``None`` (DefaultQuantization needs none).
    """

    #: ``bar`` (tqdm on stderr), ``stream`` (one line per update on stdout) or ``None``; the CLI sets it
    progress: str | None = None

    def __init__(self, config: Any = None, data_loader=None, metric=None):
        self.config = AttrDict(config or {}) if not isinstance(config, AttrDict) else config
        self._data_loader = data_loader
        self._metric = metric
        self._stat_requests_number = self.config.get("stat_requests_number")
        self._eval_requests_number = self.config.get("eval_requests_number")
        self._model = None

    # -- the original's contract

    @property
    def data_loader(self):
        """The dataset.

        :raises DatasetError: when it is missing or empty.
        """
        if self._data_loader is None or len(self._data_loader) == 0:
            raise DatasetError(EMPTY_LOADER)
        return self._data_loader

    @property
    def metric(self):
        """The metric, or ``None``."""
        return self._metric

    def set_model(self, model) -> None:
        """Make ``model`` (a :class:`~pot_cli.api.CompressedModel`) the one ``predict`` runs."""
        self._model = model

    @abstractmethod
    def predict(self, stats_layout=None, sampler=None, stat_aliases=None, metric_per_sample=False,
                print_progress=False):
        """Run the current model on ``sampler``'s samples (all by default).

        :param stats_layout: ``{tensor key: {statistic key: fn(array) -> value}}``; tensor keys
            name outputs of the current model (:func:`output_key`).
        :param sampler: a :class:`BatchSampler`, or ``None`` for the whole dataset.
        :param stat_aliases: unused here (the original shared passes between algorithms with it).
        :param metric_per_sample: also return per-sample metric values.
        :param print_progress: log progress.
        :return: ``(metrics, statistics)``: ``metrics`` is ``None`` without a metric, else the
            metric's ``avg_value``, or with ``metric_per_sample`` the pair ``(per_sample,
            avg_value)`` where ``per_sample`` is a list of ``{'sample_id', 'metric_name',
            'result'}`` sorted by dataset index; ``statistics`` is ``{tensor key: {statistic key:
            [value per sample, in dataset order]}}`` (``{}`` without ``stats_layout``).
        """

    def get_metrics_attributes(self) -> dict:
        """The metric's ``get_attributes()``."""
        return self._metric.get_attributes()

    # -- what our algorithms call

    @property
    def device(self) -> str:
        """The OpenVINO device samples run on (``config.device``, default ``CPU``)."""
        return str(self.config.get("device") or "CPU")

    @property
    def stat_requests_number(self) -> int | None:
        return self._stat_requests_number

    @property
    def eval_requests_number(self) -> int | None:
        return self._eval_requests_number

    @property
    def calibration_where(self) -> str:
        """How messages name the calibration data."""
        return type(self._data_loader).__name__ if self._data_loader is not None else type(self).__name__

    def calibration_size(self) -> int:
        """Number of calibration samples available (``len(data_loader)``)."""
        return len(self.data_loader)

    def calibration_indices(self, stat_subset_size: int | None, shuffle: bool = False, seed: int = 0) -> list[int]:
        """The calibration subset: the first ``stat_subset_size`` indices, or a seeded random
        subset with ``shuffle`` (capped at the data size, with one log line)."""
        return select_subset(self.calibration_size(), stat_subset_size, shuffle, seed, source=self.calibration_where)

    #: whether :meth:`iter_samples` gives model-ready inputs
    has_sample_feeds = False

    def iter_samples(self, indices: Iterable[int]) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """``(dataset index, {input name: array})`` in the order of ``indices``, arrays ready to
        feed (batch 1, model layout and element type).

        :raises NotSupportedError: in the base class (a custom engine prepares inputs itself).
        """
        raise NotSupportedError(f"{type(self).__name__}: this engine gives no model inputs to the pipeline; "
                                "expected an IEEngine subclass for this step")

    def collect_statistics(self, model: ov.Model, requests: list[StatisticRequest], indices: Sequence[int],
                           what: str = "statistics") -> Statistics:
        """One statistics pass of ``model`` over the calibration samples ``indices``.

        The base class adds the requested tensors as outputs of a copy of ``model``, sets it as
        the current model and calls ``predict(stats_layout, sampler, None)`` positionally (the
        original's call), with NumPy reductions (:mod:`pot_cli.statistics.host`).

        :param model: the model (not modified).
        :param requests: the statistics wanted.
        :param indices: dataset indices of the calibration samples.
        :param what: names the pass in the log.
        :return: the statistics.
        """
        import openvino.opset13 as ops

        from pot_cli.api.model import CompressedModel
        from pot_cli.graph.model import model_with_results
        from pot_cli.statistics.host import fold_statistics, stats_layout

        unique = list(dict.fromkeys(requests))
        if not unique:
            return Statistics({}, 0)
        results = [ops.result(r.output) for r in unique]
        previous = self._model
        try:
            stat_model = model_with_results(model, [*model.get_results(), *results], f"{what}")
            self.set_model(CompressedModel(stat_model))
            log.info("Collecting %s on %d samples (%s.predict)", what, len(indices), type(self).__name__)
            _, values = self.predict(stats_layout(unique), BatchSampler(self.data_loader, 1, list(indices)), None)
        finally:
            for r in results:
                r.input(0).get_source_output().remove_target_input(r.input(0))
            self._model = previous
        return fold_statistics(unique, values)

    def collect_cascade_statistics(self, cascade, wanted: dict[str, tuple[ov.Model, list[StatisticRequest]]],
                                   indices: Sequence[int], what: str = "statistics") -> dict[str, Statistics]:
        """One statistics pass of a cascade over the calibration samples ``indices``: ``predict``
        runs the whole cascade (the engine runs the stages) and measures the tensors of every
        sub-model in ``wanted`` at once, as the original collected a cascade's statistics.

        Each wanted sub-model runs as the graph given here (its current graph, the requested
        tensors added as extra outputs) in its place in the cascade; ``stats_layout`` keys are
        prefixed ``<name>_`` (:func:`output_key` with ``model_name``), as the original prefixed a
        cascade's nodes. The other sub-models run as they are.

        :param cascade: the cascade :class:`~pot_cli.api.CompressedModel` (not modified).
        :param wanted: ``{sub-model name: (its ov.Model, requests)}``.
        :return: ``{sub-model name: statistics}``.
        :raises DatasetError: when no calibration sample reached a measured tensor (an earlier
            stage passed nothing on).
        """
        import openvino.opset13 as ops

        from pot_cli.api.model import CompressedModel
        from pot_cli.graph.model import model_with_results
        from pot_cli.statistics.host import fold_statistics, stats_layout

        unique = {name: list(dict.fromkeys(requests)) for name, (_, requests) in wanted.items()}
        results = {name: [ops.result(r.output) for r in unique[name]] for name in wanted}
        stat_models = {name: model_with_results(model, [*model.get_results(), *results[name]], what)
                       for name, (model, _) in wanted.items() if unique[name]}
        layout: dict = {}
        for name in stat_models:
            layout.update(stats_layout(unique[name], f"{name}_"))
        previous = self._model
        try:
            if layout:
                models = [{**m, "model": stat_models[m.get("name")]} if m.get("name") in stat_models else dict(m)
                          for m in cascade.models]
                self.set_model(CompressedModel(name=cascade.name, models=models,
                                               allow_quantized=cascade.allow_quantized))
                log.info("Collecting %s of sub-model(s) %s on %d samples (%s.predict)", what,
                         ", ".join(stat_models), len(indices), type(self).__name__)
                _, values = self.predict(layout, BatchSampler(self.data_loader, 1, list(indices)), None)
        finally:
            for outputs in results.values():
                for r in outputs:
                    r.input(0).get_source_output().remove_target_input(r.input(0))
            self._model = previous
        out = {}
        for name in wanted:
            try:
                out[name] = fold_statistics(unique[name], values, f"{name}_") if unique[name] else Statistics({}, 0)
            except KeyError as e:
                raise DatasetError(f"{type(self).__name__}: sub-model '{name}' of cascade '{cascade.name}': no "
                                   f"calibration sample reached tensor {e.args[0]!r} (the earlier stages passed "
                                   f"nothing on in {len(indices)} samples); expected calibration data on which "
                                   "the cascade runs every stage") from e
        return out

    def evaluator(self):
        """The evaluator AccuracyAwareQuantization and ``-e`` use.

        :raises NotSupportedError: in the base class.
        """
        raise NotSupportedError(f"{type(self).__name__}: AccuracyAwareQuantization needs an IEEngine (or subclass) "
                                "with a Metric; expected IEEngine(config, data_loader, metric)")

    def progress_bar(self, total: int, desc: str = "statistics") -> tuple[Any, Callable[[int], None] | None]:
        """A tqdm bar as :attr:`progress` asks, and its update function (``(None, None)`` when off)."""
        if self.progress is None:
            return None, None
        from tqdm import tqdm

        if self.progress == "stream":
            bar = tqdm(total=total, desc=desc, unit="sample", file=sys.stdout, ascii=True, mininterval=1.0,
                       bar_format="{desc}: {n_fmt}/{total_fmt} samples [{elapsed}<{remaining}]\n")
        else:
            bar = tqdm(total=total, desc=desc, unit="sample", file=sys.stderr)

        def update(done: int) -> None:
            bar.update(done - bar.n)

        return bar, update
