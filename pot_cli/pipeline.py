"""The driver: load model -> data source -> statistics -> algorithms -> save -> report.

No quantization math and no graph code live here; this module only sequences the steps and
times them. Calibration samples come from the simplified engine's ``data_source`` or from the
Accuracy Checker engine's optimization dataset; AccuracyAwareQuantization and ``-e`` evaluate on
the Accuracy Checker engine's evaluation dataset.
"""
from __future__ import annotations

import dataclasses
import logging
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import openvino as ov

from pot_cli import __version__
from pot_cli.algorithms.channel_alignment import ActivationChannelAlignment
from pot_cli.algorithms.default import DefaultQuantization, DefaultQuantizationResult
from pot_cli.algorithms.fake_quantize import WeightRangeEstimator, default_levels
from pot_cli.algorithms.if_bodies import quantize_if_bodies
from pot_cli.algorithms.min_max import (AGNOSTIC_OPS, QUANTILE_PRESET, REQUANTIZED_OPS, MinMaxQuantization,
                                       MinMaxSettings, RangeSpec)
from pot_cli.algorithms.smooth_quant import DEFAULT_ALPHA as SMOOTH_QUANT_ALPHA, SmoothQuant
from pot_cli.algorithms.recurrent import recurrent_op_settings
from pot_cli.config import PotConfig, load_hardware_config
from pot_cli.engines.data_source import create_data_source, select_subset
from pot_cli.errors import ConfigError, NotSupportedError, UsageError, runtime_error_text
from pot_cli.graph.model import (absent_op_types, check_ignored_scope, load_model, node_names, quantized_layers,
                                 save_model_atomic, sub_models)
from pot_cli.graph.patterns import ATTENTION_OPS, WEIGHTED_OPS
from pot_cli.report.report import build_report, dump_report
from pot_cli.statistics.branches import UnreachedBranch, branch_requests, find_unreached_branches
from pot_cli.statistics.collector import capture_outputs, collect_statistics

log = logging.getLogger("pot")

#: algorithms this version runs; the others are valid config names but not built yet
IMPLEMENTED = ("DefaultQuantization", "MinMaxQuantization", "AccuracyAwareQuantization", "ActivationChannelAlignment")
#: the quantization algorithms among them (one per config, optionally after ActivationChannelAlignment)
QUANTIZATION_ALGORITHMS = IMPLEMENTED[:3]
ALIGNMENT = "ActivationChannelAlignment"
#: calibration samples of SmoothQuant's per-channel statistics (the largest |x| per channel
#: changes little past a few dozen samples; the full subset took 6 of minilm_l6_v2's 26 s)
SMOOTH_QUANT_SAMPLES = 64
#: calibration samples whose activations choose each tensor's SmoothQuant strength
SMOOTH_QUANT_SEARCH_SAMPLES = 8
#: DefaultQuantization (and AccuracyAwareQuantization over it) runs ActivationChannelAlignment
#: first, as the original POT's DefaultQuantization did
ALIGN_IN_DEFAULT_QUANTIZATION = True


@dataclass(frozen=True)
class RunOptions:
    """Command-line options that are not part of the POT config.

    :param output_dir: ``--output-dir``.
    :param direct_dump: ``-d``: write into ``output_dir/optimized`` without the run sub-folders.
    :param keep_uncompressed_weights: keep float weights behind FakeQuantize.
    :param progress_bar: show a tqdm bar for statistics collection.
    :param stream_output: print progress as separate lines (for log collectors).
    :param evaluate: ``-e``: evaluate the output model on the whole evaluation dataset.
    :param allow_quantized: ``--allow-quantized``: accept a model that is already (partly)
        quantized; its quantized layers are left as they are.
    """

    output_dir: Path = Path("results")
    direct_dump: bool = False
    keep_uncompressed_weights: bool = False
    progress_bar: bool = False
    stream_output: bool = False
    evaluate: bool = False
    allow_quantized: bool = False


@dataclass
class RunResult:
    """Paths written and the report dictionary.

    :param target_met: False when AccuracyAwareQuantization could not reach ``maximal_drop``
        (the best model found was written).
    :param evaluation: ``-e``: the ``evaluation`` section of the report (``metrics`` etc.).
    """

    xml: Path
    bin: Path
    report_path: Path
    report: dict = field(default_factory=dict)
    target_met: bool = True
    evaluation: dict | None = None


def create_run_dir(options: RunOptions, model_name: str, algorithm: str, now: datetime | None = None) -> Path:
    """The folder of this run: ``<output_dir>/<model>_<algorithm>/<YYYY-MM-DD_HH-MM-SS>`` as the
    original POT, or ``<output_dir>`` with ``-d``. Not created here.

    A second run in the same second gets a ``_1``, ``_2``... suffix instead of reusing the folder.
    """
    if options.direct_dump:
        return Path(options.output_dir)
    stamp = (now or datetime.now()).strftime("%Y-%m-%d_%H-%M-%S")
    base = Path(options.output_dir) / f"{model_name}_{algorithm}"
    run = base / stamp
    k = 1
    while run.exists():
        run = base / f"{stamp}_{k}"
        k += 1
    return run


def _split_algorithms(config: PotConfig):
    """``(alignment entry or None, quantization entry or None, index of the quantization entry)``
    of ``compression.algorithms``: one quantization algorithm, optionally preceded by
    ActivationChannelAlignment, or ActivationChannelAlignment alone.

    :raises NotSupportedError: for any other list, naming it.
    """
    algos = config.compression.algorithms
    names = [a.name for a in algos]
    rest = names[1:] if names[:1] == [ALIGNMENT] else names
    if not names or len(rest) > 1 or (rest and rest[0] not in QUANTIZATION_ALGORITHMS):
        raise NotSupportedError(f"{config.source}: compression.algorithms: {', '.join(names) or 'none'} not "
                                f"supported yet; expected exactly one of {', '.join(QUANTIZATION_ALGORITHMS)}, "
                                f"optionally preceded by {ALIGNMENT}, or {ALIGNMENT} alone")
    align_cfg = algos[0] if names[0] == ALIGNMENT else None
    algo_cfg = algos[-1] if rest else None
    return align_cfg, algo_cfg, len(algos) - 1


def _pick(specs, mode: str | None):
    """First quantizer spec of the hardware config with ``mode`` (the device's preference order)."""
    return next((q for q in specs if mode is None or q.mode == mode), specs[0] if specs else None)


def _explicit_levels(overrides, bits: int, narrow: bool, key: str) -> tuple[int, int] | None:
    """``(level_low, level_high)`` from ``level_low``/``level_high`` overrides, the missing one from
    the ``bits`` default (POT: ``-2^b/2`` or, for symmetric weights, ``-2^b/2 + 1``; ``2^b/2 - 1``),
    or None when neither is given.

    :raises ConfigError: unless ``level_low <= 0 < level_high`` (zero must be a level).
    """
    if overrides.level_low is None and overrides.level_high is None:
        return None
    default_low, default_high = default_levels(bits, signed=True, narrow_range=narrow)
    low = default_low if overrides.level_low is None else overrides.level_low
    high = default_high if overrides.level_high is None else overrides.level_high
    if low > 0:
        raise ConfigError(f"{key}.level_low: value {low} is above 0; expected level_low <= 0 < level_high "
                          "(zero must be one of the levels)")
    if high <= 0:
        raise ConfigError(f"{key}.level_high: value {high} is not above 0; "
                          "expected level_low <= 0 < level_high (zero must be one of the levels)")
    return low, high


def _check_statistic_granularity(re, granularity: str, key: str) -> None:
    for side in ("min", "max"):
        spec = getattr(re, side)
        if spec is not None and spec.granularity and spec.granularity != granularity:
            raise NotSupportedError(f"{key}.range_estimator.{side}.granularity: '{spec.granularity}' differs from the "
                                    f"quantizer's granularity '{granularity}'; not supported yet; expected "
                                    f"'{granularity}' or no granularity key")


def _activation_ranges(re, per_channel: bool, key: str) -> RangeSpec:
    """RangeSpec from ``activations.range_estimator``: the preset (POT's ``default``: here
    min/mean and max/mean; ``quantile``: :data:`QUANTILE_PRESET`), then the ``min``/``max`` keys."""
    if re is None:
        return RangeSpec()
    _check_statistic_granularity(re, "perchannel" if per_channel else "pertensor", key)
    kw = dataclasses.asdict(QUANTILE_PRESET if re.preset == "quantile" else RangeSpec())
    for side, spec in (("min", re.min), ("max", re.max)):
        if spec is None:
            continue
        if spec.aggregator and per_channel and spec.aggregator != side:
            raise NotSupportedError(f"{key}.range_estimator.{side}.aggregator: '{spec.aggregator}' with "
                                    f"activations.granularity 'perchannel' is not supported yet; expected '{side}' "
                                    f"(per-channel ranges take the {side}imum over samples)")
        if spec.type:
            kw[f"{side}_type"] = spec.type
            if side == "max":
                kw["symmetric_max_type"] = None  # an explicit type serves symmetric quantizers too
        if spec.aggregator:
            kw[f"{side}_aggregator"] = spec.aggregator
        if spec.outlier_prob is not None:
            kw["min_outlier_prob" if side == "min" else "outlier_prob"] = spec.outlier_prob
        if spec.clipping_value is not None:
            kw["min_clipping_value" if side == "min" else "clipping_value"] = spec.clipping_value
    return RangeSpec(**kw)


def _weight_ranges(re, mode: str, per_channel: bool, key: str) -> WeightRangeEstimator:
    """WeightRangeEstimator from ``weights.range_estimator`` (POT's presets: ``default``:
    abs_max, or min/max when asymmetric; ``quantile``: abs_quantile, or quantile/quantile, with
    ``outlier_prob`` 1e-4), then the ``min``/``max`` keys."""
    if re is None:
        return WeightRangeEstimator()
    _check_statistic_granularity(re, "perchannel" if per_channel else "pertensor", key)
    kw = {}
    if re.preset == "quantile":
        kw = {"min_type": "quantile", "max_type": "abs_quantile" if mode == "symmetric" else "quantile"}
    for side, spec in (("min", re.min), ("max", re.max)):
        if spec is None:
            continue
        if spec.type:
            kw[f"{side}_type"] = spec.type
        if spec.outlier_prob is not None:
            kw[f"{side}_outlier_prob"] = spec.outlier_prob
        if spec.clipping_value is not None:
            kw[f"{side}_clipping_value"] = spec.clipping_value
    return WeightRangeEstimator(**kw)


def create_min_max_settings(params, hw, source: str = "compression.algorithms[0].params") -> MinMaxSettings:
    """Typed MinMaxQuantization settings from the config params and the hardware config.

    The preset chooses the activation mode (``performance``: symmetric, ``mixed``: asymmetric)
    among those the device allows for Convolution; the device's first weight quantizer is used
    for weights. Explicit ``activations``/``weights`` overrides win: ``bits``, ``mode``,
    ``granularity`` (activations ``perchannel``: every activation quantizer per channel along axis
    1; ``pertensor``: depthwise inputs too), ``level_low``/``level_high`` (an explicit integer grid,
    POT's semantics) and ``range_estimator`` (``preset`` ``default`` or ``quantile``, then ``min``/
    ``max`` with ``type``, ``aggregator``, ``outlier_prob``, ``clipping_value``), as in the original
    POT's "DefaultQuantization parameters".

    :param params: the algorithm's :class:`~pot_cli.config.QuantizationParams`.
    :param hw: the target device's hardware config.
    :param source: key path prefix for messages (``<file>: compression.algorithms[0].params``).
    :raises ConfigError: on ``level_low``/``level_high`` that do not contain zero.
    :raises NotSupportedError: for overrides this version cannot honour (each names its key).
    """
    conv = hw.op_spec("Convolution")
    want = "symmetric" if params.preset == "performance" else "asymmetric"
    act = _pick(conv.activations, want) if conv else None
    wsp = _pick(conv.weights, "symmetric") if conv else None
    act_mode, act_bits = (act.mode, act.bits) if act else (want, 8)
    w_mode, w_bits = (wsp.mode, wsp.bits) if wsp else ("symmetric", 8)
    w_per_channel = (wsp.granularity == "perchannel") if wsp else True
    dw = hw.op_spec("DepthWiseConvolution")
    dw_per_channel = bool(dw and any(q.granularity == "perchannel" for q in dw.activations))
    ranges, weight_ranges = RangeSpec(), WeightRangeEstimator()
    act_levels = w_levels = None
    act_per_channel = False
    w = params.weights
    if w is not None:
        key = f"{source}.weights"
        w_mode, w_bits = w.mode or w_mode, w.bits or w_bits
        if w.granularity:
            w_per_channel = w.granularity == "perchannel"
        w_levels = _explicit_levels(w, w_bits, narrow=w_mode == "symmetric", key=key)
        weight_ranges = _weight_ranges(w.range_estimator, w_mode, w_per_channel, key)
    a = params.activations
    if a is not None:
        key = f"{source}.activations"
        act_mode, act_bits = a.mode or act_mode, a.bits or act_bits
        if a.granularity == "perchannel":
            act_per_channel = True
        elif a.granularity == "pertensor":
            dw_per_channel = False
        act_levels = _explicit_levels(a, act_bits, narrow=False, key=key)
        if (act_levels and act_bits == 8 and act_levels[1] - act_levels[0] + 1 != 256
                and hw.target_device in ("ANY", "CPU", "CPU_SPR")):
            # measured: one convolution after a 255-level FakeQuantize differs from the FakeQuantize
            # simulation by 0.2-0.6% of its output range in the CPU plugin's INT8 kernels (exact with
            # 256 levels); mobilenet_v2 top-1 agreement with FP32 0.885 -> 0.737 with [0, 254] (270 crops)
            log.warning("%s.level_low/level_high: %d activation levels; the CPU plugin's INT8 kernels are exact "
                        "only with 256 and were measured to lose accuracy with other counts",
                        key, act_levels[1] - act_levels[0] + 1)
        ranges = _activation_ranges(a.range_estimator, act_per_channel, key)
    quantizable = hw.quantizable_types()
    # the device allows asymmetric activations and the user did not fix the mode explicitly
    may_switch_to_asymmetric = bool(conv and any(q.mode == "asymmetric" for q in conv.activations)
                                    and not (params.activations and params.activations.mode))
    return MinMaxSettings(
        activation_op_types=frozenset(t for t in quantizable
                                      if t in WEIGHTED_OPS or t in ATTENTION_OPS or t in ELTWISE_WITH_TWO_ACTIVATIONS),
        eltwise_op_types=frozenset(t for t in quantizable if t in ELTWISE_WITH_TWO_ACTIVATIONS),
        activation_mode=act_mode, activation_bits=act_bits,
        weight_mode=w_mode, weight_bits=w_bits, weight_per_channel=w_per_channel, ranges=ranges,
        activation_levels=act_levels, weight_levels=w_levels, weight_ranges=weight_ranges,
        activation_per_channel=act_per_channel, config_source=source,
        depthwise_per_channel=dw_per_channel and act_bits == 8,
        saturation_fix=params.saturation_fix or ("first_layer" if hw.target_device in ("ANY", "CPU", "CPU_SPR")
                                                 else "no"),
        skewed_asymmetric=0.1 if may_switch_to_asymmetric else 0.0,
        model_type=params.model_type,
        # an explicit activations.mode wins over the transformer default (asymmetric)
        transformer_activation_mode="asymmetric" if may_switch_to_asymmetric else None,
        agnostic_op_types=frozenset(hw.agnostic_types() & AGNOSTIC_OPS),
        requantized_op_types=frozenset(quantizable & REQUANTIZED_OPS),
        unified_scale_types=frozenset(hw.unified_scale_types() & {"Concat"}),
        recurrent_ops=recurrent_op_settings(hw) if params.quantize_recurrent else None,
        ignored_scope=tuple(params.ignored.scope),
        ignored_types=tuple(op.type for op in params.ignored.operations if not op.attributes),
        ignored_operations=tuple((op.type, tuple(sorted(op.attributes.items())))
                                 for op in params.ignored.operations if op.attributes),
    )


#: the speed check's time budget: this share of the time spent before it, at least the minimum (s)
SPEED_CHECK_SHARE = 0.6
SPEED_CHECK_MIN_S = 0.5


def _speed_check_enabled(params, config) -> bool:
    """``speed_check`` as configured; by default on when the target is this kind of device: CPU or
    CPU_SPR, measured on the CPU. ``ANY`` asks for a portable model, so there the host CPU does not
    decide (a layer slow here may pay on a CPU with VNNI, a GPU or an NPU)."""
    if params.speed_check is not None:
        return params.speed_check
    return config.compression.target_device in ("CPU", "CPU_SPR") and config.engine.device == "CPU"


def _check_speed(fp_model, model, result, iter_samples, indices, device: str, budget_s: float | None = None,
                 reference=None):
    """Run :func:`pot_cli.algorithms.speed_check.check_layer_speed` on the first calibration sample.

    :param fp_model: the float model the quantization started from (reverted layers come from it).
    :param reference: the FP32 model to time against, when ``fp_model`` has nodes the input
        model has not (SmoothQuant's Multiply ops); default ``fp_model``.
    :return: the model to save, its records, and the report's ``speed_check`` section.
    """
    from pot_cli.algorithms.accuracy_aware import group_ops, revert_group
    from pot_cli.algorithms.speed_check import check_layer_speed
    from pot_cli.graph.model import is_constant_subgraph

    _, sample = next(iter(iter_samples(indices[:1])))
    fp_ops = {op.get_friendly_name(): op for op in fp_model.get_ops()}
    cache: dict = {}

    def revert(target, group: str) -> None:
        revert_group(target, group, fp_ops, lambda output: is_constant_subgraph(output, cache))

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
    why = "; ".join(reasons) or f"none slower in INT8 on {device}"
    log.info("speed check: %d of %d quantized layer(s) kept in floating point (%s); "
             "runtime node time %.0f us -> %.0f us per inference (FP32 %.0f us)",
             len(check.reverted), len(check.layers), why, check.int8_us_before, check.int8_us, check.fp32_us)
    if check.reverted:
        result = result.without(set(check.reverted), model)
    return model, result, check.report()


#: element-wise ops quantized when every input is an activation (residual connections)
ELTWISE_WITH_TWO_ACTIVATIONS = frozenset({"Add"})


def _progress(total: int, options: RunOptions):
    if not options.progress_bar and not options.stream_output:
        return None, None
    from tqdm import tqdm

    if options.stream_output:
        bar = tqdm(total=total, desc="statistics", unit="sample", file=sys.stdout, ascii=True,
                   mininterval=1.0, bar_format="{desc}: {n_fmt}/{total_fmt} samples [{elapsed}<{remaining}]\n")
    else:
        bar = tqdm(total=total, desc="statistics", unit="sample", file=sys.stderr)

    def update(done: int) -> None:
        bar.update(done - bar.n)

    return bar, update


def _evaluation_report(evaluation, dataset) -> dict:
    return {"dataset": dataset.name, "samples": len(evaluation.indices), "metrics": dict(evaluation.metrics),
            "time_s": round(evaluation.time_s, 3)}


def run_quantization(config: PotConfig, options: RunOptions, run_dir: Path) -> RunResult:
    """Quantize ``config.model`` and write ``<run_dir>/optimized/<model_name>.xml|.bin|report.json``.

    :param config: the validated configuration.
    :param options: command-line options.
    :param run_dir: the folder of this run (see :func:`create_run_dir`).
    :return: the written paths, the report, whether the accuracy target was met and, with
        ``options.evaluate``, the evaluation.
    :raises PotError: any user-facing failure (config, model, data, engine, output).
    """
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    align_cfg, algo_cfg, algo_index = _split_algorithms(config)
    params = (algo_cfg or align_cfg).params
    accuracy_aware = algo_cfg is not None and algo_cfg.name == "AccuracyAwareQuantization"
    align = align_cfg is not None or (ALIGN_IN_DEFAULT_QUANTIZATION and algo_cfg is not None and (
        algo_cfg.name == "DefaultQuantization"
        or (accuracy_aware and params.base_algorithm == "DefaultQuantization")))
    ac_engine = config.engine.type == "accuracy_checker"
    if options.evaluate and not ac_engine:
        raise UsageError(f"{config.source}: -e/--evaluate needs annotated data and metrics: engine type "
                         "'accuracy_checker' with an Accuracy Checker config (--ac-config or engine.config)")

    model = load_model(config.model.model, config.model.weights, allow_quantized=options.allow_quantized)
    times["load_model_s"] = time.perf_counter() - t0
    if algo_cfg is not None or align_cfg is not None:  # before any calibration pass
        key = f"{config.source}: compression.algorithms[{algo_index}].params.ignored"
        check_ignored_scope(model, params.ignored.scope, key=f"{key}.scope")
        for op_type, close in absent_op_types(model, [op.type for op in params.ignored.operations]):
            log.warning("%s.operations: no op of type '%s' in the model, so it leaves nothing in floating point%s",
                        key, op_type, f" (closest op types: {', '.join(repr(c) for c in close)})" if close else "")

    t = time.perf_counter()
    hw = load_hardware_config(config.compression.target_device)
    evaluator = ac = None
    if ac_engine:
        from pot_cli.engines.accuracy_checker import create_ac_engine
        from pot_cli.engines.evaluator import Evaluator

        ac = create_ac_engine(config.engine, config.source)
        ac.bind(model, config.engine.layout)
        if accuracy_aware or options.evaluate:
            ac.require_metrics("AccuracyAwareQuantization" if accuracy_aware else "-e/--evaluate")
            evaluator = Evaluator(ac.evaluation, device=ac.launcher.device or config.engine.device,
                                  requests_number=config.engine.eval_requests_number, output=ac.launcher.output)
        calibration = ac.optimization
        available = len(calibration)
        indices = select_subset(len(calibration), params.stat_subset_size, params.shuffle_data, params.seed,
                                source=calibration.where)
        iter_samples, skipped = calibration.iter_samples, []
        log.info("Accuracy Checker engine: %s; calibration on '%s' (%d samples), evaluation on '%s' (%d samples)",
                 ac.source, calibration.name, len(calibration), ac.evaluation.name, len(ac.evaluation))
    else:
        data = create_data_source(config.engine.data_source, model, layout=config.engine.layout,
                                  shape=config.engine.shape, source_key="engine.data_source")
        available = len(data)
        indices = select_subset(len(data), params.stat_subset_size, params.shuffle_data, params.seed,
                                source=str(config.engine.data_source))
        iter_samples, skipped = data.iter_samples, data.skipped
    times["data_source_s"] = time.perf_counter() - t

    def collect(target, requests, subset=None):
        subset = indices if subset is None else subset
        bar, update = _progress(len(subset), options)
        log.info("Collecting statistics on %d samples", len(subset))
        try:
            return collect_statistics(target, requests, iter_samples(subset), len(subset), progress=update,
                                      requests_number=config.engine.stat_requests_number)
        finally:
            if bar is not None:
                bar.close()

    settings = create_min_max_settings(params, hw,
                                       source=f"{config.source}: compression.algorithms[{algo_index}].params")
    if options.allow_quantized:
        done = [n for n in quantized_layers(model) if n not in settings.ignored_scope]
        if done:
            log.info("--allow-quantized: %d layer(s) already quantized are kept as they are", len(done))
            settings = dataclasses.replace(settings, ignored_scope=settings.ignored_scope + tuple(done))
    aa_result = None
    evaluation = None
    speed_report = None
    unquantized = False  # the speed check sent every layer back to float: the input model is written
    bodies = []  # quantized If bodies
    # If conditions ride along with the first calibration pass
    pending = branch_requests(model)
    unreached: list[UnreachedBranch] = []

    def check_branches(stats) -> None:
        nonlocal pending
        if pending:
            unreached.extend(find_unreached_branches(model, stats))
            for branch in unreached:
                log.warning(branch.message)
            pending = []

    alignment = None
    ca_stats = None
    if align:
        # a first pass for the alignment's statistics; the quantization then plans on the aligned model
        t = time.perf_counter()
        aligner = ActivationChannelAlignment(ignored_scope=settings.ignored_scope + tuple(
            align_cfg.params.ignored.scope if align_cfg is not None else ()), ignored_types=settings.ignored_types)
        align_requests = aligner.statistic_requests(model)
        alignment = []
        if align_requests or algo_cfg is None:
            subset = indices
            if align_cfg is not None and algo_cfg is not None:
                a = align_cfg.params
                if (a.stat_subset_size, a.shuffle_data, a.seed) != (params.stat_subset_size, params.shuffle_data,
                                                                  params.seed):
                    subset = select_subset(available, a.stat_subset_size,
                                           a.shuffle_data, a.seed, source="ActivationChannelAlignment")
            ca_stats = collect(model, align_requests + pending, subset)
            check_branches(ca_stats)
            alignment = aligner.apply(model, ca_stats)
        times["channel_alignment_s"] = time.perf_counter() - t
        log.info("ActivationChannelAlignment: %d of %d layer pair(s) aligned", len(alignment), len(aligner.pairs))
    smoothing = None
    sq_alpha = params.smooth_quant_alpha
    if algo_cfg is not None and (sq_alpha is None or sq_alpha >= 0):
        # SmoothQuant on transformers: its own pass; the quantization then plans on the smoothed model
        t = time.perf_counter()
        ahead = MinMaxQuantization(settings)
        ahead.plan(model, quiet=True)
        if ahead.transformer and settings.activation_bits <= 8:  # 16-bit activations (GNA) need none
            smoother = SmoothQuant(settings, SMOOTH_QUANT_ALPHA if sq_alpha is None else sq_alpha)
            sq_requests = smoother.statistic_requests(model, ahead)
            if sq_requests:
                sq_stats = collect(model, sq_requests + pending, indices[:SMOOTH_QUANT_SAMPLES])
                check_branches(sq_stats)
                # unless the config sets it, a few samples of each tensor choose its strength by simulation
                captured = None if sq_alpha is not None else capture_outputs(
                    model, [g.source for g in smoother.groups], iter_samples(indices[:SMOOTH_QUANT_SEARCH_SAMPLES]),
                    config.engine.stat_requests_number)
                smoothing = smoother.apply(model, sq_stats, captured)
                del captured
                log.info("SmoothQuant: %d of %d activation tensor(s) smoothed (alpha %s) for %d FullyConnected "
                         "layer(s)", len(smoothing), len(smoother.groups),
                         ", ".join(f"{a:g} x{sum(1 for r in smoothing if r.alpha == a)}"
                                   for a in sorted({r.alpha for r in smoothing})) or "-",
                         sum(len(r.layers) for r in smoothing))
        del ahead
        times["smooth_quant_s"] = time.perf_counter() - t
    elif algo_cfg is not None:
        log.info("smooth_quant_alpha %g: SmoothQuant off", sq_alpha)
    if algo_cfg is None:
        algorithm = None
    elif accuracy_aware:
        from pot_cli.algorithms.accuracy_aware import AccuracyAwareQuantization

        mixed = create_min_max_settings(dataclasses.replace(params, preset="mixed"), hw) \
            if params.convert_to_mixed_preset else None
        algorithm = AccuracyAwareQuantization(params, settings, evaluator, collect, mixed_settings=mixed,
                                              compress_weights=not options.keep_uncompressed_weights,
                                              progress=options.progress_bar, stream=options.stream_output)
    else:
        default = algo_cfg.name == "DefaultQuantization"

        def make_default(s: MinMaxSettings, collect_fn) -> DefaultQuantization:
            return DefaultQuantization(
                s,
                use_fast_bias=params.use_fast_bias and default,
                full_bias_correction=default and not params.use_fast_bias,
                bias_threshold=params.threshold,
                compress_weights=not options.keep_uncompressed_weights,
                collect=collect_fn)

        def make_body_algorithm(body: ov.Model, collect_fn) -> DefaultQuantization:
            # the ignored scope names of this body, and its layers already quantized
            names = set(node_names(body))
            scope = tuple(n for n in settings.ignored_scope if n in names) + tuple(quantized_layers(body))
            return make_default(dataclasses.replace(settings, ignored_scope=scope), collect_fn)

        algorithm = make_default(settings, collect)
    if algorithm is None:  # ActivationChannelAlignment alone: the aligned float model is the output
        stats, result = ca_stats, DefaultQuantizationResult()
    else:
        requests = algorithm.statistic_requests(model)

        t = time.perf_counter()
        stats = collect(model, requests + pending)
        check_branches(stats)
        times["statistics_s"] = time.perf_counter() - t

        t = time.perf_counter()
        if accuracy_aware:
            aa_result = algorithm.apply(model, stats)
            model, result = aa_result.model, aa_result.quantization
            times["accuracy_aware_s"] = time.perf_counter() - t
        else:
            speed_check = _speed_check_enabled(params, config)
            fp_model = model.clone() if speed_check else None
            # If bodies from the samples that took each branch (reads the main graph's float values)
            bodies = quantize_if_bodies(model, iter_samples(indices), make_body_algorithm,
                                        requests_number=config.engine.stat_requests_number)
            result = algorithm.apply(model, stats)
            times["quantization_s"] = time.perf_counter() - t
            if speed_check and result.quantizers:
                t = time.perf_counter()
                # the check may take about half as long as everything before it
                # timed against the input model itself: a smoothed float model has more nodes
                reference = load_model(config.model.model, config.model.weights,
                                       allow_quantized=options.allow_quantized) if smoothing else None
                model, result, speed_report = _check_speed(fp_model, model, result, iter_samples, indices,
                                                           config.engine.device,
                                                           budget_s=max(SPEED_CHECK_MIN_S, SPEED_CHECK_SHARE * (t - t0)),
                                                           reference=reference)
                del reference
                unquantized = bool(speed_report.get("reverted")) and \
                    len(speed_report["reverted"]) == len(speed_report["layers"])
                if unquantized:
                    # nothing pays in INT8: write the input model itself, not the aligned/corrected
                    # copy (an INT8 embedding table alone only saves space, at some speed)
                    model = load_model(config.model.model, config.model.weights,
                                       allow_quantized=options.allow_quantized)
                    result = DefaultQuantizationResult()
                    alignment = [] if alignment is not None else None
                    bodies = []
                times["speed_check_s"] = time.perf_counter() - t
            elif not speed_check and config.compression.target_device == "ANY" and params.speed_check is None:
                log.info("target_device ANY: a portable model, so layers are not timed on this CPU; "
                         "--target-device CPU keeps in floating point the layers INT8 does not speed up here")
            del fp_model
        if not result.quantizers and not bodies and not (speed_report and speed_report.get("reverted")):
            if aa_result is not None and aa_result.reverted:
                log.warning("AccuracyAwareQuantization kept all %d layer group(s) in floating point to hold "
                            "maximal_drop: the output model computes in floating point", len(aa_result.reverted))
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

    if options.evaluate:
        t = time.perf_counter()
        if aa_result is not None and not params.annotation_free:
            evaluation = _evaluation_report(aa_result.evaluation, ac.evaluation)  # already on the whole set
        else:
            evaluation = _evaluation_report(evaluator.evaluate(model), ac.evaluation)
        times["evaluation_s"] = time.perf_counter() - t
        log.info("Evaluation of the output model on '%s' (%d samples): %s", evaluation["dataset"],
                 evaluation["samples"], ", ".join(f"{k} {v:.6g}" for k, v in evaluation["metrics"].items()))

    t = time.perf_counter()
    target = Path(run_dir) / "optimized"
    name = config.model.model_name
    report = build_report(config=config, options=options, result=result, xml=target / f"{name}.xml",
                          samples_used=stats.n_samples, samples_skipped=[str(p) for p in skipped],
                          times=times, version=__version__)
    if ac is not None:
        report["input"]["ac_config"] = str(config.engine.ac_config) if config.engine.ac_config else "inline"
    if alignment is not None:
        report["channel_alignment"] = {"aligned_layers": len(alignment),
                                       "pairs": [dataclasses.asdict(r) for r in alignment]}
        report["summary"]["aligned_layers"] = len(alignment)
    if smoothing is not None and not unquantized:
        report["smooth_quant"] = {"alpha": "per tensor" if sq_alpha is None else sq_alpha,
                                  "tensors": [dataclasses.asdict(r) for r in smoothing]}
    report["unreached_branches"] = [dataclasses.asdict(b) for b in unreached]
    # layers left in float because their input reads only a model state (stateful models)
    report["state_only_layers"] = list(getattr(getattr(algorithm, "min_max", None), "state_only", []))
    report["if_bodies"] = [b.report() for b in bodies]
    report["summary"]["quantized_if_bodies"] = len(bodies)
    report["summary"]["unreached_branches"] = len(unreached)
    if aa_result is not None:
        report["accuracy_aware"] = aa_result.report
        report["summary"]["target_met"] = aa_result.target_met
        report["summary"]["reverted_layers"] = list(aa_result.reverted)
    if evaluation is not None:
        report["evaluation"] = evaluation
    if speed_report is not None:
        report["speed_check"] = speed_report
        report["summary"]["kept_in_float_for_speed"] = len(speed_report.get("reverted", ()))
    times["report_s"] = time.perf_counter() - t

    def report_files(save_seconds: float) -> dict[str, str]:
        report["time_s"].update(report_s=times["report_s"], save_s=save_seconds, total_s=time.perf_counter() - t0)
        return {"report.json": dump_report(report)}

    xml = save_model_atomic(model, target, name, extra_files=report_files)
    if unquantized:
        log.info("Model written unquantized (INT8 was not faster on %s; see report.json speed_check) to %s",
                 config.compression.target_device, xml)
    else:
        log.info("Quantized model written to %s", xml)
    return RunResult(xml=xml, bin=xml.with_suffix(".bin"), report_path=target / "report.json", report=report,
                     target_met=aa_result is None or aa_result.target_met, evaluation=evaluation)
