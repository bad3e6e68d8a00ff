"""The engines of a POT config (``engine.type``), built on the API's engine classes.

* ``simplified``: :class:`DataSourceEngine`, a :class:`~pot_cli.api.SimplifiedEngine` whose
  data loader is the ``engine.data_source`` folder (:mod:`pot_cli.engines.data_source`);
* ``data_free``: the same :class:`DataSourceEngine` on synthetic images generated into (or reused
  from) ``engine.data_source`` (:func:`create_data_free_engine`);
* ``accuracy_checker``: :class:`AccuracyCheckerEngine`, calibration on the Accuracy Checker
  config's optimization dataset and metrics on its evaluation dataset.
"""
from __future__ import annotations

import logging
from typing import Iterable, Iterator, Sequence

import numpy as np
import openvino as ov

from pot_cli.api.engine import Engine
from pot_cli.api.ie_engine import SimplifiedEngine, collect_in_graph
from pot_cli.config.model import EngineConfig
from pot_cli.engines.data_source import DataSource, create_data_source
from pot_cli.engines.evaluator import Evaluator
from pot_cli.errors import NotSupportedError
from pot_cli.statistics.collector import StatisticRequest, Statistics

log = logging.getLogger("pot")


def _settings(config: EngineConfig) -> dict:
    return {"device": config.device, "stat_requests_number": config.stat_requests_number,
            "eval_requests_number": config.eval_requests_number}


class DataSourceEngine(SimplifiedEngine):
    """The simplified engine of a config: samples decoded from ``engine.data_source``, already
    laid out for the model (layout, shape, element type) by the data source.

    :param config: the engine section.
    :param data: the data source, bound to the model.
    """

    def __init__(self, config: EngineConfig, data: DataSource):
        super().__init__(_settings(config), data)
        self.source = data
        self._where = str(config.data_source)

    @property
    def calibration_where(self) -> str:
        return self._where

    @property
    def skipped(self) -> list:
        """Files that could not be decoded."""
        return list(self.source.skipped)

    def _make_feeder(self, model: ov.Model):
        return None  # the data source lays samples out itself

    def iter_samples(self, indices: Iterable[int]) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        return self.source.iter_samples(indices)


def create_simplified_engine(config: EngineConfig, model: ov.Model) -> DataSourceEngine:
    """The simplified engine of ``config`` for ``model``.

    :raises ConfigError: a data path that does not exist, a layout or shape that cannot fit.
    :raises DatasetError: no usable sample.
    """
    data = create_data_source(config.data_source, model, layout=config.layout, shape=config.shape,
                              source_key="engine.data_source")
    return DataSourceEngine(config, data)


def create_data_free_engine(config: EngineConfig, model: ov.Model, subset_size: int = 300) -> DataSourceEngine:
    """The data_free engine of ``config`` for ``model``: synthetic images generated (or reused) in
    ``engine.data_source`` (:mod:`pot_cli.engines.data_free`), then fed as the simplified engine feeds a
    folder of images (same layout and shape handling).

    :param subset_size: how many images calibration needs (the largest ``stat_subset_size``).
    :raises ConfigError: not a single image input, a dynamic H/W without ``engine.shape``, a cache
        folder that cannot hold the images.
    :raises DatasetError: no images and ``generate_data`` false.
    :raises OutputError: the images cannot be written.
    """
    from dataclasses import replace

    from pot_cli.engines.data_free import default_cache_dir, ensure_dataset, image_spec

    spec, _ = image_spec(model, config.layout, config.shape)
    folder = config.data_source or str(default_cache_dir(spec))
    ensure_dataset(folder, spec, subset_size, generate=config.generate_data)
    config = replace(config, data_source=str(folder))
    data = create_data_source(config.data_source, model, layout=config.layout, shape=config.shape,
                              source_key="engine.data_source")
    return DataSourceEngine(config, data)


class AccuracyCheckerEngine(Engine):
    """The accuracy_checker engine: an Accuracy Checker config's datasets and metrics.

    :param config: the engine section.
    :param ac: the parsed Accuracy Checker config, bound to the model (:meth:`ACEngine.bind`).
    """

    has_sample_feeds = True
    skipped: list = []

    def __init__(self, config: EngineConfig, ac):
        super().__init__(_settings(config), ac.optimization)
        self.ac = ac
        self._evaluator: Evaluator | None = None

    @property
    def calibration_where(self) -> str:
        return self.ac.optimization.where

    def iter_samples(self, indices: Iterable[int]) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        return self.ac.optimization.iter_samples(indices)

    def collect_statistics(self, model: ov.Model, requests: list[StatisticRequest], indices: Sequence[int],
                           what: str = "statistics") -> Statistics:
        return collect_in_graph(self, model, requests, indices, what)

    def evaluator(self) -> Evaluator:
        """The evaluator of the evaluation dataset and its metrics (one per engine: its sample cache serves every model)."""
        if self._evaluator is None:
            self.ac.require_metrics("AccuracyAwareQuantization")
            self._evaluator = Evaluator(self.ac.evaluation, device=self.ac.launcher.device or self.device,
                                        requests_number=self.eval_requests_number, output=self.ac.launcher.output,
                                        decoder=self.ac.launcher.decoder)
        return self._evaluator

    def predict(self, stats_layout=None, sampler=None, stat_aliases=None, metric_per_sample=False,
                print_progress=False):
        """Metrics of the current model on the evaluation dataset (``sampler``: its indices).

        :raises NotSupportedError: for ``stats_layout`` (statistics go through :meth:`collect_statistics`).
        """
        if stats_layout:
            raise NotSupportedError("accuracy_checker engine: predict(stats_layout): statistics are collected "
                                    "with collect_statistics; expected no stats_layout")
        evaluation = self.evaluator().evaluate(self._model.model,
                                               None if sampler is None else list(sampler.subset_indices))
        metrics = dict(evaluation.metrics)
        if metric_per_sample:
            per = [{"sample_id": i, "metric_name": name, "result": float(values[k])}
                   for name, values in evaluation.per_sample.items() for k, i in enumerate(evaluation.indices)]
            return (sorted(per, key=lambda r: r["sample_id"]), metrics), {}
        return metrics, {}


def create_ac_engine(config: EngineConfig, config_source: str, model: ov.Model, roots=None) -> AccuracyCheckerEngine:
    """The accuracy_checker engine of ``config``, its datasets bound to ``model``.

    :param roots: definitions file and path roots (:class:`~pot_cli.engines.ac.config_reader.Roots`;
        default: from the environment).

    :raises ConfigError: every problem of the Accuracy Checker config at once.
    """
    from pot_cli.engines.accuracy_checker import create_ac_engine as parse

    ac = parse(config, config_source, roots)
    ac.bind(model, config.layout)
    return AccuracyCheckerEngine(config, ac)
