"""The algorithms a pipeline runs, by their POT names (:data:`ALGORITHMS`).

Each one is built as the original's were, ``Algorithm(config, engine)``, and owns its steps in
``run(model, state)``: it picks its calibration subset from the engine, collects the
statistics it needs through :meth:`pot_cli.pipeline.RunState.collect` (so a new statistics pass
happens only after an algorithm that changed the model) and edits the model in place. The
quantization math and graph edits stay in the modules these call:

* ``DefaultQuantization``: ActivationChannelAlignment (unless one already ran), SmoothQuant on
  transformers, MinMaxQuantization with FastBiasCorrection (or BiasCorrection) in one pass, If
  bodies, then the CPU speed check (target CPU/CPU_SPR);
* ``MinMaxQuantization``: the same without alignment and bias correction; a
  ``FastBiasCorrection`` or ``BiasCorrection`` right after it joins its pass (the original's
  MinMax + bias correction chain);
* ``ActivationChannelAlignment``: its own pass; the float model computes the same;
* ``AccuracyAwareQuantization``: alignment and SmoothQuant as DefaultQuantization, then the
  accuracy search on the engine's evaluator;
* ``QuantNoiseEstimator``: per-layer SQNR of the quantized model against its float version
  (:mod:`pot_cli.algorithms.quant_noise`); it measures a model that holds FakeQuantize ops (after
  a quantization algorithm, or a quantized model), as the original did.
"""
from __future__ import annotations

import dataclasses
import logging
import time
import openvino as ov

from pot_cli.algorithms.channel_alignment import ActivationChannelAlignment as _Aligner
from pot_cli.algorithms.default import DefaultQuantization as _Core, DefaultQuantizationResult
from pot_cli.algorithms.if_bodies import quantize_if_bodies
from pot_cli.algorithms.min_max import MinMaxQuantization as _Planner, MinMaxSettings
from pot_cli.algorithms.settings import GNA_DEVICES, create_min_max_settings
from pot_cli.algorithms.smooth_quant import DEFAULT_ALPHA as SMOOTH_QUANT_ALPHA, SmoothQuant
from pot_cli.config import load_hardware_config
from pot_cli.config.model import AlgorithmConfig, QuantizationParams
from pot_cli.errors import NotSupportedError, runtime_error_text
from pot_cli.graph.model import absent_op_types, check_ignored_scope, node_names, quantized_layers, sub_models
from pot_cli.graph.patterns import WEIGHTED_OPS
from pot_cli.statistics.collector import capture_outputs

log = logging.getLogger("pot")

#: calibration samples of SmoothQuant's per-channel statistics (the largest |x| per channel
#: changes little past a few dozen samples; the full subset took 6 of minilm_l6_v2's 26 s)
SMOOTH_QUANT_SAMPLES = 64
#: calibration samples whose activations choose each tensor's SmoothQuant strength
SMOOTH_QUANT_SEARCH_SAMPLES = 8
#: the speed check's time budget: this share of the time spent before it, at least the minimum (s)
SPEED_CHECK_SHARE = 0.6
SPEED_CHECK_MIN_S = 0.5


class Algorithm:
    """Base of the pipeline's algorithms.

    :param config: the typed :class:`~pot_cli.config.model.AlgorithmConfig`.
    :param engine: the pipeline's engine.
    :param index: position in ``compression.algorithms`` (for messages).
    :param source: the config file or ``create_pipeline`` (for messages).

    ``config`` is also readable as the original's params dict (``algo.config['preset']``);
    ``params`` is the typed form.
    """

    name = ""

    def __init__(self, config: AlgorithmConfig, engine, index: int = 0, source: str = "create_pipeline"):
        self.params: QuantizationParams = config.params
        self.config = {f.name: getattr(config.params, f.name) for f in dataclasses.fields(config.params)}
        self.engine = engine
        self.index = index
        self.config_source = source
        self.source = f"{source}: compression.algorithms[{index}].params"
        #: how messages name the ``ignored`` key (``...ignored.<sub-model>`` for a cascade's sub-model)
        self.ignored_key = f"{self.source}.ignored"
        #: the algorithms after this one in the pipeline
        self.following: list[Algorithm] = []

    def for_sub_model(self, name: str, engine) -> "Algorithm":
        """This algorithm for the cascade's sub-model ``name``: the same params with the ignored
        scope keyed by ``name`` (``ignored.<name>``), on ``engine``."""
        ignored = self.params.ignored.for_model(name)
        algo = type(self)(AlgorithmConfig(self.name, dataclasses.replace(self.params, ignored=ignored)), engine,
                          self.index, self.config_source)
        algo.ignored_key = f"{self.source}.ignored.{name}"
        return algo

    def check(self, model: ov.Model) -> None:
        """Ignored scope names must name nodes; ignored op types no op has are a warning.

        :raises ConfigError: naming the key and the missing node (or a sub-model key on a model
            that is not a cascade).
        """
        key = self.ignored_key
        if self.params.ignored.models:
            from pot_cli.errors import ConfigError

            raise ConfigError(f"{key}: keys {', '.join(repr(k) for k in self.params.ignored.models)} name "
                              "sub-models, but the model is not a cascade; expected scope, operations or skip_model")
        check_ignored_scope(model, self.params.ignored.scope, key=f"{key}.scope")
        for op_type, close in absent_op_types(model, [op.type for op in self.params.ignored.operations]):
            log.warning("%s.operations: no op of type '%s' in the model, so it leaves nothing in floating point%s",
                        key, op_type, f" (closest op types: {', '.join(repr(c) for c in close)})" if close else "")

    def indices(self) -> list[int]:
        """This algorithm's calibration subset (``stat_subset_size``, ``shuffle_data``, ``seed``)."""
        p = self.params
        if p.stat_batch_size > 1:
            log.warning("%s.stat_batch_size %d: statistics are collected one sample at a time (batch 1); "
                        "the ranges are the same", self.source, p.stat_batch_size)
        return self.engine.calibration_indices(p.stat_subset_size, p.shuffle_data, p.seed)

    def settings(self, model) -> MinMaxSettings:
        """MinMax settings from the params and the target device's hardware config; layers
        already quantized (``allow_quantized``, an earlier algorithm) are kept as they are."""
        hw = load_hardware_config(self.params.target_device)
        settings = create_min_max_settings(self.params, hw, source=self.source)
        done = [n for n in quantized_layers(model.model) if n not in settings.ignored_scope]
        if done:
            if model.allow_quantized:
                log.info("--allow-quantized: %d layer(s) already quantized are kept as they are", len(done))
            settings = dataclasses.replace(settings, ignored_scope=settings.ignored_scope + tuple(done))
        return settings

    def run(self, model, state):
        """Run on ``model`` (a :class:`~pot_cli.api.CompressedModel`, edited in place)."""
        raise NotImplementedError


class ActivationChannelAlignment(Algorithm):
    """Channel alignment (:mod:`pot_cli.algorithms.channel_alignment`), its own statistics pass.

    When a quantization algorithm follows, its ignored scope applies here too.
    """

    name = "ActivationChannelAlignment"

    def run(self, model, state):
        if self.params.ignored.skip_model:
            return model
        nxt = next((a for a in self.following if isinstance(a, _Quantization)), None)
        settings = (nxt or self).settings(model)
        align(model.model, settings, self.params.ignored.scope, self.indices(), state)
        return model


def align(model: ov.Model, settings: MinMaxSettings, extra_scope, indices: list[int], state) -> None:
    """ActivationChannelAlignment on ``model`` in place; records into ``state.alignment``."""
    t = time.perf_counter()
    aligner = _Aligner(ignored_scope=settings.ignored_scope + tuple(extra_scope), ignored_types=settings.ignored_types)
    requests = aligner.statistic_requests(model)
    state.alignment = state.alignment or []
    if requests:
        state.alignment.extend(aligner.apply(model, state.collect(model, requests, indices,
                                                                 "statistics for channel alignment")))
    state.timed("channel_alignment_s", t)
    log.info("ActivationChannelAlignment: %d of %d layer pair(s) aligned", len(state.alignment), len(aligner.pairs))


class _Quantization(Algorithm):
    """What DefaultQuantization, MinMaxQuantization and AccuracyAwareQuantization share."""

    #: align channels first (unless an alignment already ran in this pipeline)
    aligns = False

    def run(self, model, state):
        """Align, smooth, collect, quantize in place; then If bodies and the speed check."""
        if self.params.ignored.skip_model:
            log.info("%s.skip_model: %s leaves model '%s' in floating point", self.ignored_key, self.name, model.name)
            return model
        settings, indices = self.settings(model), self.indices()
        self._prepare(model.model, settings, indices, state)
        algorithm, stats = self._calibrate(model.model, settings, indices, state)
        t = time.perf_counter()
        fp_model = model.model.clone() if self._speed_check_enabled() else None
        if getattr(state, "keeps_float_model", False):  # the analysis reverts groups from it, the output
            # check compares with it; its own copy: the speed check compiles and edits fp_model
            state.float_model = model.model.clone()
        state.bodies = self._if_bodies(model.model, settings, indices, state)
        state.result = algorithm.apply(model.model, stats)
        state.state_only = list(algorithm.min_max.state_only)
        state.timed("quantization_s", t)
        self._check_speed(model, fp_model, indices, state)
        self._summary(model.model, state)
        return model

    def _prepare(self, model: ov.Model, settings: MinMaxSettings, indices: list[int], state) -> None:
        """ActivationChannelAlignment (unless it already ran) and SmoothQuant, each its own pass."""
        if self.aligns and state.alignment is None:
            align(model, settings, (), indices, state)
        self._smooth(model, settings, indices, state)

    def _smooth(self, model: ov.Model, settings: MinMaxSettings, indices: list[int], state) -> None:
        """SmoothQuant on transformers with 8-bit activations (its own pass); off with a negative alpha."""
        alpha = self.params.smooth_quant_alpha
        if alpha is not None and alpha < 0:
            log.info("smooth_quant_alpha %g: SmoothQuant off", alpha)
            return
        t = time.perf_counter()
        ahead = _Planner(settings)
        ahead.plan(model, quiet=True)
        if ahead.transformer and settings.activation_bits <= 8:  # 16-bit activations (GNA) need none
            smoother = SmoothQuant(settings, SMOOTH_QUANT_ALPHA if alpha is None else alpha)
            requests = smoother.statistic_requests(model, ahead)
            if requests:
                stats = state.collect(model, requests, indices[:SMOOTH_QUANT_SAMPLES], "statistics for SmoothQuant")
                # unless the config sets it, a few samples of each tensor choose its strength by simulation
                search = alpha is None and self.engine.has_sample_feeds
                captured = capture_outputs(model, [g.source for g in smoother.groups],
                                           self.engine.iter_samples(indices[:SMOOTH_QUANT_SEARCH_SAMPLES]),
                                           self.engine.stat_requests_number) if search else None
                state.smoothing = smoother.apply(model, stats, captured)
                state.smooth_quant_alpha = alpha
                del captured
                log.info("SmoothQuant: %d of %d activation tensor(s) smoothed (alpha %s) for %d FullyConnected "
                         "layer(s)", len(state.smoothing), len(smoother.groups),
                         ", ".join(f"{a:g} x{sum(1 for r in state.smoothing if r.alpha == a)}"
                                   for a in sorted({r.alpha for r in state.smoothing})) or "-",
                         sum(len(r.layers) for r in state.smoothing))
        state.timed("smooth_quant_s", t)

    def core(self, settings: MinMaxSettings, state, collect=None, compress: bool | None = None) -> _Core:
        """The MinMax (+ bias correction) core with this algorithm's bias settings.

        :param compress: store weights as INT8 (default: unless ``keep_uncompressed_weights``).
        """
        bias = self.bias_correction()
        return _Core(settings, use_fast_bias=bias == "fast", full_bias_correction=bias == "full",
                     bias_threshold=self.bias_threshold(),
                     compress_weights=not state.keep_uncompressed_weights if compress is None else compress,
                     collect=collect)

    def compresses_weights(self, state) -> bool:
        """Store this algorithm's weights as INT8 at once: unless ``keep_uncompressed_weights``, or
        a QuantNoiseEstimator follows (it measures the weights' noise against their float values
        behind FakeQuantize, then stores them as INT8)."""
        return not state.keep_uncompressed_weights and not any(isinstance(a, QuantNoiseEstimator)
                                                               for a in self.following)

    def bias_correction(self) -> str | None:
        """``fast``, ``full`` or ``None``."""
        return None

    def bias_threshold(self) -> float:
        return self.params.threshold

    def _calibrate(self, model: ov.Model, settings: MinMaxSettings, indices: list[int], state):
        """The planned core algorithm and its statistics (one pass)."""

        def collect(target, requests):
            return state.collect(target, requests, indices)

        algorithm = self.core(settings, state, collect, compress=self.compresses_weights(state))
        requests = algorithm.statistic_requests(model)
        t = time.perf_counter()
        stats = collect(model, requests)
        state.timed("statistics_s", t)
        return algorithm, stats

    def _if_bodies(self, model: ov.Model, settings: MinMaxSettings, indices: list[int], state) -> list:
        """Quantize If bodies from the samples that took each branch (reads the main graph's float values)."""
        if not self.engine.has_sample_feeds:
            return []

        def make_body_algorithm(body: ov.Model, collect_fn) -> _Core:
            names = set(node_names(body))
            scope = tuple(n for n in settings.ignored_scope if n in names) + tuple(quantized_layers(body))
            return self.core(dataclasses.replace(settings, ignored_scope=scope), state, collect_fn)

        return quantize_if_bodies(model, self.engine.iter_samples(indices), make_body_algorithm,
                                  requests_number=self.engine.stat_requests_number)

    def _speed_check_enabled(self) -> bool:
        """``speed_check`` as configured; by default on when the target is this kind of device:
        CPU or CPU_SPR, measured on the CPU. ``ANY`` asks for a portable model, so there the
        host CPU does not decide (a layer slow here may pay on a CPU with VNNI, a GPU or an NPU)."""
        if self.params.speed_check is not None:
            return self.params.speed_check and self.engine.has_sample_feeds
        return (self.params.target_device in ("CPU", "CPU_SPR") and self.engine.device == "CPU"
                and self.engine.has_sample_feeds)

    def _check_speed(self, model, fp_model: ov.Model | None, indices: list[int], state) -> None:
        """Keep in float the layers INT8 does not speed up on this CPU; the input model when none pays.
        Runs when :meth:`_speed_check_enabled` (``fp_model`` given) and something was quantized."""
        if fp_model is None:
            if self.params.target_device == "ANY" and self.params.speed_check is None:
                log.info("target_device ANY: a portable model, so layers are not timed on this CPU; "
                         "--target-device CPU keeps in floating point the layers INT8 does not speed up here")
            return
        if not state.result.quantizers:
            return
        t = time.perf_counter()
        # timed against the input model itself: a smoothed float model has more nodes
        reference = model.original() if state.smoothing else None
        budget = max(SPEED_CHECK_MIN_S, SPEED_CHECK_SHARE * (t - state.started))
        out, state.result, state.speed_check = check_speed(fp_model, model.model, state.result, self.engine,
                                                           indices, budget, reference)
        model.model = out
        reverted = state.speed_check.get("reverted")
        if reverted and len(reverted) == len(state.speed_check["layers"]):
            # nothing pays in INT8: write the input model itself, not the aligned/corrected
            # copy (an INT8 embedding table alone only saves space, at some speed)
            model.model = model.original()
            state.result, state.unquantized, state.bodies = DefaultQuantizationResult(), True, []
            state.alignment = [] if state.alignment is not None else None
        state.timed("speed_check_s", t)

    def _summary(self, model: ov.Model, state) -> None:
        result, bodies = state.result, state.bodies
        if not result.quantizers and not bodies and not (state.speed_check and state.speed_check.get("reverted")):
            aa = state.accuracy_aware
            if aa is not None and aa.reverted:
                log.warning("AccuracyAwareQuantization kept all %d layer group(s) in floating point to hold "
                            "maximal_drop: the output model computes in floating point", len(aa.reverted))
            elif quantized_layers(model):
                log.warning("no new layer was quantized: every quantizable layer outside the ignored scope is "
                            "already quantized")
            else:
                log.warning("no layer was quantized (no quantizable op outside the ignored scope); "
                            "the output model stays in floating point")
        loops = [op.get_friendly_name() for op in model.get_ops() if op.get_type_name() in ("Loop", "TensorIterator")
                 and any(n.get_type_name() in WEIGHTED_OPS for body in sub_models(op) for n in body.get_ops())]
        if loops:
            log.info("%d Loop/TensorIterator op(s) keep their bodies in floating point (only If bodies are "
                     "quantized): %s", len(loops), ", ".join(loops[:5]) + (", ..." if len(loops) > 5 else ""))
        in_bodies = [q for b in bodies for q in b.quantizers]
        log.info("Inserted %d activation FakeQuantize, quantized %d weight tensors, corrected %d biases%s",
                 sum(1 for q in result.quantizers if q.kind == "activation"),
                 sum(1 for q in result.quantizers if q.kind == "weights"),
                 sum(1 for b in result.bias_corrections if b.applied),
                 f" (and in {len(bodies)} If body(ies): {sum(1 for q in in_bodies if q.kind == 'activation')} "
                 f"activation FakeQuantize, {sum(1 for q in in_bodies if q.kind == 'weights')} weight tensors)"
                 if bodies else "")


def check_speed(fp_model: ov.Model, model: ov.Model, result, engine, indices: list[int], budget_s: float,
                reference: ov.Model | None = None):
    """:func:`pot_cli.algorithms.speed_check.check_layer_speed` on the first calibration sample.

    :param fp_model: the float model the quantization started from (reverted layers come from it).
    :param reference: the FP32 model to time against, when ``fp_model`` has nodes the input
        model has not (SmoothQuant's Multiply ops); default ``fp_model``.
    :return: the model to save, its records, and the report's ``speed_check`` section.
    """
    from pot_cli.algorithms.accuracy_aware import group_ops, revert_group
    from pot_cli.algorithms.speed_check import check_layer_speed
    from pot_cli.graph.model import is_constant_subgraph

    _, sample = next(iter(engine.iter_samples(indices[:1])))
    fp_ops = {op.get_friendly_name(): op for op in fp_model.get_ops()}
    cache: dict = {}

    def revert(target, group: str) -> None:
        revert_group(target, group, fp_ops, lambda output: is_constant_subgraph(output, cache))

    device = engine.device
    try:
        model, check = check_layer_speed(fp_model if reference is None else reference, model, group_ops(model, result),
                                         sample, revert, device=device, budget_s=budget_s)
    except RuntimeError as e:  # a measurement problem must not cost the user the quantized model
        log.warning("speed check skipped: %s; every quantized layer is kept", runtime_error_text(e))
        return model, result, {"error": runtime_error_text(e)}
    slower = len(check.reverted) - len(check.whole_model)
    reasons = [f"{slower} slower in INT8 on {device}"] if slower else []
    if check.whole_model:
        reasons.append(f"{len(check.whole_model)} because the quantized model was not faster as a whole on {device}")
    kept_slower = sum(1 for t in check.layers if t.int8 and t.int8_us > t.fp32_us)
    if kept_slower:  # measured slower, yet in INT8: untried for lack of time, or reverting did not pay
        reasons.append(f"{kept_slower} measured slower in INT8 kept in INT8"
                       + (f" (not tried for lack of time: {', '.join(check.skipped)})" if check.skipped else ""))
    why = "; ".join(reasons) or f"none slower in INT8 on {device}"
    log.info("speed check: %d of %d quantized layer(s) kept in floating point (%s); "
             "runtime node time %.0f us -> %.0f us per inference (FP32 %.0f us)",
             len(check.reverted), len(check.layers), why, check.int8_us_before, check.int8_us, check.fp32_us)
    if check.reverted:
        result = result.without(set(check.reverted), model)
    return model, result, check.report()


class DefaultQuantization(_Quantization):
    """POT's DefaultQuantization (see the module docstring)."""

    name = "DefaultQuantization"
    aligns = True

    def bias_correction(self) -> str | None:
        return "fast" if self.params.use_fast_bias else "full"


class MinMaxQuantization(_Quantization):
    """POT's MinMaxQuantization; a bias correction right after it joins its statistics pass."""

    name = "MinMaxQuantization"

    def _joined(self):
        return self.following[0] if self.following and isinstance(self.following[0], _BiasCorrection) else None

    def bias_correction(self) -> str | None:
        joined = self._joined()
        return None if joined is None else joined.kind

    def bias_threshold(self) -> float:
        joined = self._joined()
        return self.params.threshold if joined is None else joined.params.threshold


class _BiasCorrection(Algorithm):
    """A bias correction; it runs inside the MinMaxQuantization right before it."""

    kind = "fast"

    def run(self, model, state):
        log.info("%s: applied with the MinMaxQuantization before it (one statistics pass)", self.name)
        return model


class FastBiasCorrection(_BiasCorrection):
    """POT's FastBiasCorrection (:mod:`pot_cli.algorithms.fast_bias_correction`)."""

    name = "FastBiasCorrection"
    kind = "fast"


class BiasCorrection(_BiasCorrection):
    """POT's BiasCorrection (:mod:`pot_cli.algorithms.bias_correction`)."""

    name = "BiasCorrection"
    kind = "full"


class AccuracyAwareQuantization(_Quantization):
    """POT's AccuracyAwareQuantization (:mod:`pot_cli.algorithms.accuracy_aware`) on the engine's evaluator."""

    name = "AccuracyAwareQuantization"

    @property
    def aligns(self) -> bool:  # type: ignore[override]
        return self.params.base_algorithm == "DefaultQuantization"

    def run(self, model, state):
        """Align and smooth as DefaultQuantization, then the accuracy search on the engine's evaluator."""
        from pot_cli.algorithms.accuracy_aware import AccuracyAwareQuantization as _Search, check_gna_preset

        check_gna_preset(self.params, self.source)
        settings, indices = self.settings(model), self.indices()
        self._prepare(model.model, settings, indices, state)

        def collect(target, requests):
            return state.collect(target, requests, indices)

        p = self.params
        hw = load_hardware_config(p.target_device)
        mixed = create_min_max_settings(dataclasses.replace(p, preset="mixed"), hw) if p.convert_to_mixed_preset else None
        # GNA: the 16-bit 'accuracy' preset model is the baseline and the source of switched layers
        accuracy = dataclasses.replace(create_min_max_settings(dataclasses.replace(p, preset="mixed"), hw, self.source),
                                       ignored_scope=settings.ignored_scope) if p.target_device in GNA_DEVICES else None
        search = _Search(p, settings, self.engine.evaluator(), collect, mixed_settings=mixed, accuracy_settings=accuracy,
                         compress_weights=self.compresses_weights(state),
                         progress=self.engine.progress == "bar", stream=self.engine.progress == "stream")
        requests = search.statistic_requests(model.model)
        t = time.perf_counter()
        stats = collect(model.model, requests)
        state.timed("statistics_s", t)
        t = time.perf_counter()
        if getattr(state, "keeps_float_model", False):
            state.float_model = model.model  # apply leaves it as it is
        state.accuracy_aware = search.apply(model.model, stats)
        model.model, state.result = state.accuracy_aware.model, state.accuracy_aware.quantization
        state.timed("accuracy_aware_s", t)
        self._summary(model.model, state)
        return model


class QuantNoiseEstimator(Algorithm):
    """POT's QuantNoiseEstimator (:mod:`pot_cli.algorithms.quant_noise`): the SQNR of every
    quantized layer of the model against its float version on ``stat_subset_size`` calibration
    samples (``mode`` ``full_fq_noise``, alias ``simplified``, or ``layerwise_fq_noise``; ``type``
    ``sqnr``), into the CSV ``results_dump_filename`` (relative to the run's output folder) and
    the report's ``quant_noise`` section. It does not change the model (weights a quantization
    before it kept behind FakeQuantize for the measurement are stored as INT8 afterwards).

    :raises ConfigError: (``run``) the model has no quantized layer.
    """

    name = "QuantNoiseEstimator"

    def check(self, model: ov.Model) -> None:
        """Nothing to check before calibration (no ignored scope)."""

    def run(self, model, state):
        from pot_cli.algorithms.quant_noise import run_quant_noise

        run_quant_noise(self, model, state)
        return model


#: POT name -> class, for every algorithm this version runs
ALGORITHMS: dict[str, type[Algorithm]] = {cls.name: cls for cls in (
    DefaultQuantization, MinMaxQuantization, AccuracyAwareQuantization, ActivationChannelAlignment,
    FastBiasCorrection, BiasCorrection, QuantNoiseEstimator)}


def create_algorithms(configs: tuple[AlgorithmConfig, ...], engine, source: str) -> list[Algorithm]:
    """The algorithms of ``configs``, each told which algorithms follow it.

    :raises NotSupportedError: an algorithm not built yet, or a bias correction that does not
        directly follow MinMaxQuantization.
    """
    algos: list[Algorithm] = []
    for k, c in enumerate(configs):
        cls = ALGORITHMS.get(c.name)
        if cls is None:
            raise NotSupportedError(f"{source}: compression.algorithms[{k}].name: {c.name} is not supported yet; "
                                    f"expected one of: {', '.join(ALGORITHMS)}")
        if issubclass(cls, _BiasCorrection) and (not algos or not isinstance(algos[-1], MinMaxQuantization)):
            raise NotSupportedError(f"{source}: compression.algorithms[{k}].name: {c.name} runs right after "
                                    "MinMaxQuantization (which it corrects); expected MinMaxQuantization before it")
        earlier = next((a for a in algos if isinstance(a, _Quantization)), None)
        if cls is ActivationChannelAlignment and earlier is not None:
            raise NotSupportedError(f"{source}: compression.algorithms[{k}].name: ActivationChannelAlignment after "
                                    f"{earlier.name}: it aligns a float model; expected it before the quantization "
                                    "algorithm")
        if cls is AccuracyAwareQuantization and earlier is not None:
            raise NotSupportedError(f"{source}: compression.algorithms[{k}].name: AccuracyAwareQuantization after "
                                    f"{earlier.name}: it quantizes the float model with its base_algorithm itself; "
                                    "expected it as the only quantization algorithm")
        algos.append(cls(c, engine, k, source))
    for k, a in enumerate(algos):
        a.following = algos[k + 1:]
    return algos

