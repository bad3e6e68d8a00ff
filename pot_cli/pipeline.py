"""The pipeline: an engine and a sequence of algorithms, as in the original POT.

``create_pipeline(algorithms, engine)`` builds the algorithms from their POT configs
(:data:`pot_cli.algorithms.registry.ALGORITHMS`), validated by the CLI's JSON Schema;
``Pipeline.run(model)`` runs them in order on the model (edited in place and returned), each
algorithm collecting the statistics it needs through the engine (a new statistics pass only
after an algorithm that changed the model); ``Pipeline.evaluate(model)`` runs the engine's
metric. The ``pot`` command is a client of this module, like any API script.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import openvino as ov

from pot_cli import __version__
from pot_cli.algorithms.default import DefaultQuantizationResult
from pot_cli.errors import NotSupportedError
from pot_cli.statistics.branches import UnreachedBranch, branch_requests, find_unreached_branches
from pot_cli.statistics.collector import StatisticRequest, Statistics

log = logging.getLogger("pot")


@dataclass
class RunState:
    """What a :meth:`Pipeline.run` did, for the log and the report.

    :param engine: the engine the algorithms run on.
    :param keep_uncompressed_weights: weights stay float behind FakeQuantize.
    :param times: seconds per stage (``statistics_s``, ``quantization_s``...).
    :param result: report rows of the output model's quantizers and bias corrections.
    :param samples_used: calibration samples of the last statistics pass.
    :param alignment: ActivationChannelAlignment records, or ``None`` when it did not run.
    :param smoothing: SmoothQuant records, or ``None`` when it did not run.
    :param smooth_quant_alpha: its configured strength (``None``: chosen per tensor).
    :param unreached: If branches no calibration sample took.
    :param bodies: quantized If bodies.
    :param state_only: layers kept in float because they read only a model state.
    :param accuracy_aware: the AccuracyAwareQuantization result, if it ran.
    :param speed_check: the speed check's report section, if it ran.
    :param unquantized: the speed check sent every layer back to float (the input model is the output).
    """

    engine: Any
    keep_uncompressed_weights: bool = False
    times: dict[str, float] = field(default_factory=dict)
    result: DefaultQuantizationResult = field(default_factory=DefaultQuantizationResult)
    samples_used: int = 0
    alignment: list | None = None
    smoothing: list | None = None
    smooth_quant_alpha: float | None = None
    unreached: list[UnreachedBranch] = field(default_factory=list)
    bodies: list = field(default_factory=list)
    state_only: list[str] = field(default_factory=list)
    accuracy_aware: Any = None
    speed_check: dict | None = None
    unquantized: bool = False
    started: float = field(default_factory=time.perf_counter)
    _pending: list[StatisticRequest] | None = None

    def collect(self, model: ov.Model, requests: list[StatisticRequest], indices: list[int]) -> Statistics:
        """One statistics pass through the engine; the first pass also observes every If
        condition, to warn about branches no sample takes."""
        if self._pending is None:
            self._pending = branch_requests(model)
        stats = self.engine.collect_statistics(model, list(requests) + self._pending, indices)
        if self._pending:
            self.unreached.extend(find_unreached_branches(model, stats))
            for branch in self.unreached:
                log.warning(branch.message)
        self._pending = []
        self.samples_used = stats.n_samples
        return stats

    def timed(self, key: str, since: float) -> None:
        """Add the seconds since ``since`` to stage ``key``."""
        self.times[key] = self.times.get(key, 0.0) + time.perf_counter() - since


class Pipeline:
    """An engine and the algorithms to run with it (the original's ``Pipeline``).

    :param engine: the :class:`~pot_cli.api.Engine`.
    :param keep_uncompressed_weights: store quantized weights as float behind FakeQuantize
        (``compress_model_weights`` stores them as INT8 afterwards); by default they are INT8.
    """

    def __init__(self, engine, keep_uncompressed_weights: bool = False):
        self.engine = engine
        self.keep_uncompressed_weights = keep_uncompressed_weights
        self._algo_seq: list = []
        self.state: RunState | None = None
        #: seconds already spent before :meth:`run` (the CLI's model and data loading)
        self.times: dict[str, float] = {}
        #: :meth:`check` already ran on the model (the CLI checks before reading the data)
        self.checked = False

    @property
    def algo_seq(self) -> list:
        """The algorithms, in the order they run."""
        return self._algo_seq

    def add_algo(self, algo) -> None:
        """Append an algorithm."""
        self._algo_seq.append(algo)

    def check(self, model) -> None:
        """Check every algorithm's config against the model before any calibration pass
        (ignored scope names; ignored op types no op has are a warning).

        :raises ConfigError: naming the key and the missing node.
        """
        for algo in self._algo_seq:
            algo.check(_compressed(model).model)

    def run(self, model):
        """Run the algorithms on ``model`` (a :class:`~pot_cli.api.CompressedModel` or an
        ``ov.Model``), which is edited in place; returns it (the original did the same).

        :raises PotError: any user-facing failure (config, model, data, engine).
        """
        model = _compressed(model)
        if model.is_cascade:
            raise NotSupportedError(f"model '{model.name}': cascaded models are not supported yet")
        log.info("pot %s, OpenVINO %s", __version__, ov.__version__)
        state = RunState(self.engine, self.keep_uncompressed_weights, dict(self.times))
        state.started -= sum(self.times.values())
        self.state = state
        self.engine.set_model(model)
        if not self.checked:
            self.check(model)
        for algo in self._algo_seq:
            model = algo.run(model, state) or model
        return model

    def evaluate(self, model) -> Any:
        """The engine's metrics of ``model``: ``engine.set_model(model)``, then ``engine.predict()``.

        :return: ``{metric name: value}``, or ``None`` when the engine has no metric.
        """
        self.engine.set_model(_compressed(model))
        metrics, _ = self.engine.predict(None, None, None, False, True)
        return metrics


def _compressed(model):
    from pot_cli.api.model import CompressedModel

    return CompressedModel(model) if isinstance(model, ov.Model) else model


def create_pipeline(algo_config: Iterable[Any], engine, interface: str = "API", *,
                    keep_uncompressed_weights: bool = False, source: str = "create_pipeline") -> Pipeline:
    """A :class:`Pipeline` of the algorithms ``algo_config`` on ``engine`` (the original's ``create_pipeline``).

    :param algo_config: ``[{'name': 'DefaultQuantization', 'params': {...}}, ...]`` (POT names
        and params; ``target_device`` defaults to ``ANY``), or the typed
        ``compression.algorithms`` of a validated config; empty: a pipeline that only evaluates.
    :param engine: the engine (its data loader must not be empty when there are algorithms).
    :param interface: accepted for compatibility.
    :param keep_uncompressed_weights: see :class:`Pipeline`.
    :param source: prefixes config messages (the config file, for the CLI).
    :return: the pipeline.
    :raises ConfigError: unknown names, misspelt or invalid params (the CLI's schema and messages).
    :raises NotSupportedError: an algorithm not built yet, or a bias correction not right after
        MinMaxQuantization.
    :raises DatasetError: an empty data loader.
    """
    from pot_cli.algorithms.registry import create_algorithms
    from pot_cli.config.algorithms import validate_algorithms

    if not algo_config:  # None, [] or the original's create_pipeline(dict(), engine)
        algo_config = []
    configs = validate_algorithms(algo_config, source)
    pipeline = Pipeline(engine, keep_uncompressed_weights)
    if configs:
        engine.calibration_size()  # an empty data loader fails here, as in the original
    for algo in create_algorithms(configs, engine, source):
        pipeline.add_algo(algo)
    if not configs:
        log.debug("create_pipeline: no algorithm; the pipeline only evaluates")
    return pipeline


__all__ = ["Pipeline", "RunState", "create_pipeline"]
