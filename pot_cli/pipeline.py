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
from typing import Any, Callable, Iterable

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
    :param output_dir: the run's output folder (relative ``results_dump_filename`` paths start
        there); ``None``: the working directory.
    :param quant_noise: QuantNoiseEstimator's report section, if it ran.
    :param analyze: the sensitivity analysis asked for (:class:`~pot_cli.algorithms.analysis.AnalysisSettings`),
        or ``None``.
    :param float_model: with ``analyze`` or ``check_output``: the float model the last
        quantization started from.
    :param analysis: the ``analysis`` report section, when it ran.
    :param check_output: the output check asked for (``compression.output_check``: ``{"samples",
        "target", "expected"}``, each optional), or ``None``.
    :param output_check: the ``output_check`` report section, when it ran.
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
    output_dir: Any = None
    quant_noise: dict | None = None
    analyze: Any = None
    float_model: ov.Model | None = None
    analysis: dict | None = None
    check_output: dict | None = None
    output_check: dict | None = None
    started: float = field(default_factory=time.perf_counter)
    _pending: list[StatisticRequest] | None = None

    def collect(self, model: ov.Model, requests: list[StatisticRequest], indices: list[int],
                what: str = "statistics") -> Statistics:
        """One statistics pass through the engine; the first pass also observes every If
        condition, to warn about branches no sample takes. ``what`` names the pass in the log."""
        if self._pending is None:
            self._pending = branch_requests(model)
        stats = self.engine.collect_statistics(model, list(requests) + self._pending, indices, what)
        if self._pending:
            self.unreached.extend(find_unreached_branches(model, stats))
            for branch in self.unreached:
                log.warning(branch.message)
        self._pending = []
        self.samples_used = stats.n_samples
        return stats

    @property
    def keeps_float_model(self) -> bool:
        """The quantization keeps the float model it started from (``float_model``) for the
        analysis or the output check."""
        return self.analyze is not None or self.check_output is not None

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
        #: for a cascade: the :class:`RunState` of each sub-model, by name
        self.states: dict[str, RunState] = {}
        #: seconds already spent before :meth:`run` (the CLI's model and data loading)
        self.times: dict[str, float] = {}
        #: :meth:`check` already ran on the model (the CLI checks before reading the data)
        self.checked = False
        #: the run's output folder (the CLI's run folder); ``None``: the working directory
        self.output_dir = None
        #: after the algorithms, the per-layer sensitivity analysis and its recommendation
        #: (:class:`~pot_cli.algorithms.analysis.AnalysisSettings`, or ``None``; see :func:`create_pipeline`)
        self.analyze = None
        #: after the algorithms, the output model against FP32 on calibration samples
        #: (``compression.output_check``: ``{"samples", "target", "expected"}``, or ``None``); the
        #: analysis measures it itself
        self.check_output = None

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
        model = _compressed(model)
        if model.is_cascade:
            check_cascade(self._algo_seq, model)
            return
        for algo in self._algo_seq:
            algo.check(model.model)

    def run(self, model):
        """Run the algorithms on ``model`` (a :class:`~pot_cli.api.CompressedModel` or an
        ``ov.Model``), which is edited in place; returns it (the original did the same).

        :raises PotError: any user-facing failure (config, model, data, engine).
        """
        model = _compressed(model)
        if model.is_cascade:
            return self._run_cascade(model)
        log.info("pot %s, OpenVINO %s", __version__, ov.__version__)
        state = RunState(self.engine, self.keep_uncompressed_weights, dict(self.times))
        state.started -= sum(self.times.values())
        state.output_dir = self.output_dir
        state.analyze = self.analyze
        state.check_output = self.check_output
        self.state = state
        self.engine.set_model(model)
        if not self.checked:
            self.check(model)
        for algo in self._algo_seq:
            model = algo.run(model, state) or model
        if state.keeps_float_model:
            self._measure_output(model, state)
        return model

    def _measure_output(self, model, state: RunState) -> None:
        """After the algorithms, the output model against its float model: the sensitivity
        analysis (:func:`pot_cli.algorithms.analysis.analyze`, into ``state.analysis``), which
        measures the whole model too, else the output check
        (:func:`~pot_cli.algorithms.analysis.check_output`, into ``state.output_check``); skipped
        with a warning when there is nothing to compare."""
        from pot_cli.algorithms.analysis import analyze, check_output

        what = "analyze" if state.analyze is not None else "output_check"
        quant = [a for a in self._algo_seq if a.name in ("DefaultQuantization", "MinMaxQuantization",
                                                         "AccuracyAwareQuantization")]
        why = ("the engine gives no model inputs to the pipeline" if not self.engine.has_sample_feeds else
               "no quantization algorithm ran" if state.float_model is None or not quant else
               "the output model is unquantized" if state.unquantized or not state.result.quantizers else None)
        if why:
            log.warning("%s: skipped, %s", what, why)
            return
        t, algo = time.perf_counter(), quant[-1]
        if state.analyze is not None:
            state.analysis = analyze(model.model, state.float_model, state.result, self.engine, algo.indices(),
                                     state.analyze, ignored_scope=list(algo.params.ignored.scope),
                                     plain_time_s=t - state.started).report()
            state.timed("analysis_s", t)
        else:
            state.output_check = check_output(model.model, state.float_model, self.engine, algo.indices(),
                                              **state.check_output)
            state.timed("output_check_s", t)

    def _run_cascade(self, model):
        """Run the algorithms on each sub-model of a cascade (their own ignored scopes,
        ``ignored.<sub-model>``), with statistics from the engine running the whole cascade
        (:meth:`~pot_cli.api.Engine.collect_cascade_statistics`): the statistics passes the
        sub-models ask for at the same step are one pass (:class:`_CascadeScheduler`), so with
        DefaultQuantization every sub-model is measured on the float cascade, as in the original.
        ``self.states`` holds each sub-model's :class:`RunState`; ``self.state`` the run's (times
        of the whole run: ``statistics_s`` the shared passes, ``quantization_s`` the rest).

        :raises NotSupportedError: AccuracyAwareQuantization, or an engine that runs one model (IEEngine).
        """
        from pot_cli.api.ie_engine import IEEngine

        log.info("pot %s, OpenVINO %s", __version__, ov.__version__)
        aa = [a.name for a in self._algo_seq if a.name == "AccuracyAwareQuantization"]
        if aa:
            raise NotSupportedError(f"model '{model.name}': AccuracyAwareQuantization on a cascade of "
                                    f"{len(model.models)} models is not supported; expected DefaultQuantization or "
                                    "MinMaxQuantization (each sub-model is quantized on statistics of the whole cascade)")
        if isinstance(self.engine, IEEngine):
            raise NotSupportedError(f"model '{model.name}': {type(self.engine).__name__} runs one model; a cascade of "
                                    f"{len(model.models)} models needs an Engine whose predict runs the stages "
                                    "(see examples/face_detection/mtcnn_engine.py)")
        state = RunState(self.engine, self.keep_uncompressed_weights, dict(self.times))
        state.started -= sum(self.times.values())
        self.state = state
        self.states = {}
        self.engine.set_model(model)
        if not self.checked:
            self.check(model)
        scheduler = _CascadeScheduler(self.engine, model)

        def job(name: str):
            sub_engine = _SubModelEngine(self.engine, scheduler, name)
            algos = [a.for_sub_model(name, sub_engine) for a in self._algo_seq]
            for k, a in enumerate(algos):
                a.following = algos[k + 1:]
            sub_state = RunState(sub_engine, self.keep_uncompressed_weights)
            self.states[name] = sub_state

            def run() -> None:
                if all(a.params.ignored.skip_model for a in algos):
                    log.info("sub-model '%s': skip_model, left in floating point", name)
                else:
                    log.info("sub-model '%s' of cascade '%s': %s", name, model.name,
                             ", ".join(a.name for a in algos))
                view = model.sub_model(name)
                for algo in algos:
                    view = algo.run(view, sub_state) or view
                next(m for m in model.models if m.get("name") == name)["model"] = view.model
            return run

        started = time.perf_counter()
        scheduler.run({name: job(name) for name in model.names})
        # each sub-model's times include the shared passes it waited for: the run's own are
        # the passes once, and the rest of the wall time as quantization
        state.times["statistics_s"] = scheduler.seconds
        state.times["quantization_s"] = time.perf_counter() - started - scheduler.seconds
        state.samples_used = scheduler.samples
        self.engine.set_model(model)
        return model

    def evaluate(self, model) -> Any:
        """The engine's metrics of ``model``: ``engine.set_model(model)``, then ``engine.predict()``.

        :return: ``{metric name: value}``, or ``None`` when the engine has no metric.
        """
        self.engine.set_model(_compressed(model))
        metrics, _ = self.engine.predict(None, None, None, False, True)
        return metrics


class _Cancelled(Exception):
    """Stops a sub-model's algorithms after another sub-model failed."""


class _CascadeScheduler:
    """Runs the algorithms of every sub-model of a cascade so that their statistics passes are
    shared: each sub-model's algorithms run in a thread of their own, **one thread at a time**
    (no two ever run together), until they ask for statistics or end; once every sub-model waits
    or has ended, one pass of the whole cascade (:meth:`~pot_cli.api.Engine.collect_cascade_statistics`)
    measures what all of them asked for, then each resumes in cascade order. So DefaultQuantization
    of a 3-model cascade costs one pass over the calibration data, on the float cascade, as the
    original's single statistics pass.
    """

    def __init__(self, engine, cascade):
        import threading

        self.engine, self.cascade = engine, cascade
        self.cond = threading.Condition()
        self.waiting: dict[str, tuple] = {}
        self.answers: dict[str, Any] = {}
        self.running: str | None = None
        #: seconds spent in shared statistics passes, and the most calibration samples of one
        self.seconds, self.samples = 0.0, 0

    def collect(self, name: str, model: ov.Model, requests, indices, what: str) -> Statistics:
        """Called from sub-model ``name``'s thread: wait for the next shared pass."""
        with self.cond:
            self.waiting[name] = (model, list(requests), list(indices), what)
            self.running = None
            self.cond.notify_all()
            self.cond.wait_for(lambda: name in self.answers and self.running == name)
            answer = self.answers.pop(name)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def _step(self, name: str) -> None:
        """Let ``name``'s thread run until it waits for statistics or ends."""
        with self.cond:
            self.running = name
            self.cond.notify_all()
            self.cond.wait_for(lambda: self.running is None)

    def run(self, jobs: dict[str, Callable[[], None]]) -> None:
        """Run ``{sub-model name: job}`` to the end; re-raises the first failure (cascade order)."""
        import threading

        errors: dict[str, BaseException] = {}

        def body(name: str, job) -> None:
            with self.cond:
                self.cond.wait_for(lambda: self.running == name)
            try:
                job()
            except BaseException as e:  # noqa: BLE001 - handed to the main thread
                errors[name] = e
            finally:
                with self.cond:
                    self.running = None
                    self.cond.notify_all()

        threads = [threading.Thread(target=body, args=(n, j), name=f"pot-{n}", daemon=True) for n, j in jobs.items()]
        for t in threads:
            t.start()
        for name in jobs:
            self._step(name)
        while self.waiting:
            pending, self.waiting = self.waiting, {}
            if errors:
                for name in pending:
                    self.answers[name] = _Cancelled()
            else:
                groups: dict[tuple, dict] = {}
                for name, (model, requests, indices, what) in pending.items():
                    groups.setdefault((tuple(indices), what), {})[name] = (model, requests)
                for (indices, what), wanted in groups.items():
                    t = time.perf_counter()
                    self.samples = max(self.samples, len(indices))
                    try:
                        self.answers.update(self.engine.collect_cascade_statistics(self.cascade, wanted,
                                                                                   list(indices), what))
                    except BaseException as e:  # noqa: BLE001 - raised in each waiting thread
                        self.answers.update({name: e for name in wanted})
                    self.seconds += time.perf_counter() - t
            for name in jobs:
                if name in pending:
                    self._step(name)
        for t in threads:
            t.join()
        real = [errors[n] for n in jobs if n in errors and not isinstance(errors[n], _Cancelled)]
        if real:
            raise real[0]


class _SubModelEngine:
    """The pipeline's engine as the algorithms of one sub-model of a cascade see it: statistics
    passes run the whole cascade (:meth:`~pot_cli.api.Engine.collect_cascade_statistics`); the
    steps that feed the model themselves (SmoothQuant's search, If bodies, the speed check) are
    skipped; everything else is the engine's."""

    has_sample_feeds = False

    def __init__(self, engine, scheduler: _CascadeScheduler, name: str):
        self._engine, self._scheduler, self.name = engine, scheduler, name

    def __getattr__(self, attr):
        return getattr(self._engine, attr)

    def collect_statistics(self, model: ov.Model, requests, indices, what: str = "statistics") -> Statistics:
        return self._scheduler.collect(self.name, model, requests, indices, what)

    def iter_samples(self, indices):
        raise NotSupportedError(f"sub-model '{self.name}' of a cascade: the engine runs the stages, so it gives "
                                "no model inputs to the pipeline")

    def evaluator(self):
        raise NotSupportedError(f"sub-model '{self.name}' of a cascade: evaluation runs the whole cascade "
                                "(Pipeline.evaluate); AccuracyAwareQuantization is not supported on cascades")


def check_cascade(algos: list, model) -> None:
    """Check each algorithm's ``ignored`` against a cascade: its keys must be sub-model names
    (``scope``/``operations`` of a cascade are given per sub-model), and each sub-model's scope
    must name nodes of that sub-model.

    :raises ConfigError: naming the key, the sub-models and the missing node.
    """
    from pot_cli.config.loader import did_you_mean
    from pot_cli.errors import ConfigError

    names = model.names
    for algo in algos:
        ignored = algo.params.ignored
        if ignored.scope or ignored.operations:
            raise ConfigError(f"{algo.ignored_key}: model '{model.name}' is a cascade; expected the ignored scope "
                              f"keyed by sub-model name ({', '.join(names)}), e.g. "
                              f"{{'{names[0]}': {{'scope': [...]}}}}")
        for key in ignored.models:
            if key not in names:
                raise ConfigError(f"{algo.ignored_key}.{key}: no sub-model '{key}'{did_you_mean(key, names)}; "
                                  f"expected one of: {', '.join(names)}")
        for name in names:
            algo.for_sub_model(name, None).check(model.sub_model(name).model)


def _compressed(model):
    from pot_cli.api.model import CompressedModel

    return CompressedModel(model) if isinstance(model, ov.Model) else model


def create_pipeline(algo_config: Iterable[Any], engine, interface: str = "API", *,
                    keep_uncompressed_weights: bool = False, source: str = "create_pipeline",
                    analyze: Any = None, check_output: Any = None) -> Pipeline:
    """A :class:`Pipeline` of the algorithms ``algo_config`` on ``engine`` (the original's ``create_pipeline``).

    :param algo_config: ``[{'name': 'DefaultQuantization', 'params': {...}}, ...]`` (POT names
        and params; ``target_device`` defaults to ``ANY``), or the typed
        ``compression.algorithms`` of a validated config; empty: a pipeline that only evaluates.
    :param engine: the engine (its data loader must not be empty when there are algorithms).
    :param interface: accepted for compatibility.
    :param keep_uncompressed_weights: see :class:`Pipeline`.
    :param source: prefixes config messages (the config file, for the CLI).
    :param analyze: ``True`` or a target output cosine in (0, 1]: after the algorithms, the per-layer
        sensitivity analysis and its recommendation (:mod:`pot_cli.algorithms.analysis`), in
        ``pipeline.state.analysis``; ``None``/``False``: none.
    :param check_output: ``True`` or ``{"samples": n, "target": t, "expected": {"cosine", "sqnr_db"}}``: after
        the algorithms, the output model against FP32 on calibration samples
        (:func:`pot_cli.algorithms.analysis.check_output`), in ``pipeline.state.output_check``
        (the analysis measures it itself); ``None``/``False``: none.
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
    from pot_cli.algorithms.analysis import AnalysisSettings

    try:
        pipeline.analyze = AnalysisSettings.from_value(analyze)
    except ValueError as e:
        from pot_cli.errors import ConfigError

        raise ConfigError(f"{source}: {e}") from None
    if check_output:
        value = {} if check_output is True else dict(check_output) if isinstance(check_output, dict) else None
        if (value is None or set(value) - {"samples", "expected", "target"}
                or not isinstance(value.get("samples", 1), int) or value.get("samples", 1) < 1):
            from pot_cli.errors import ConfigError

            raise ConfigError(f"{source}: check_output {check_output!r}: expected True or "
                              "{'samples': an integer >= 1, 'target': an output cosine, "
                              "'expected': {'cosine': ..., 'sqnr_db': ...}}")
        pipeline.check_output = value
    if configs:
        engine.calibration_size()  # an empty data loader fails here, as in the original
    for algo in create_algorithms(configs, engine, source):
        pipeline.add_algo(algo)
    if not configs:
        log.debug("create_pipeline: no algorithm; the pipeline only evaluates")
    return pipeline


__all__ = ["Pipeline", "RunState", "create_pipeline"]
