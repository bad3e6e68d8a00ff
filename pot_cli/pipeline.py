"""The driver: load model -> data source -> statistics -> algorithms -> save -> report.

No quantization math and no graph code live here; this module only sequences the steps and
times them.
"""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from pot_cli import __version__
from pot_cli.algorithms.default import DefaultQuantization
from pot_cli.algorithms.min_max import MinMaxSettings, RangeSpec
from pot_cli.config import PotConfig, load_hardware_config
from pot_cli.engines.data_source import create_data_source, select_subset
from pot_cli.errors import NotSupportedError
from pot_cli.graph.model import load_model, save_model_atomic
from pot_cli.graph.patterns import WEIGHTED_OPS
from pot_cli.report.report import build_report, dump_report
from pot_cli.statistics.collector import collect_statistics

log = logging.getLogger("pot")

#: algorithms this version runs; the others are valid config names but not built yet
IMPLEMENTED = ("DefaultQuantization", "MinMaxQuantization")


@dataclass(frozen=True)
class RunOptions:
    """Command-line options that are not part of the POT config.

    :param output_dir: ``--output-dir``.
    :param direct_dump: ``-d``: write into ``output_dir/optimized`` without the run sub-folders.
    :param keep_uncompressed_weights: keep float weights behind FakeQuantize.
    :param progress_bar: show a tqdm bar for statistics collection.
    :param stream_output: print progress as separate lines (for log collectors).
    """

    output_dir: Path = Path("results")
    direct_dump: bool = False
    keep_uncompressed_weights: bool = False
    progress_bar: bool = False
    stream_output: bool = False


@dataclass
class RunResult:
    """Paths written and the report dictionary."""

    xml: Path
    bin: Path
    report_path: Path
    report: dict = field(default_factory=dict)


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


def _pick(specs, mode: str | None):
    """First quantizer spec of the hardware config with ``mode`` (the device's preference order)."""
    return next((q for q in specs if mode is None or q.mode == mode), specs[0] if specs else None)


def create_min_max_settings(params, hw, source: str = "compression.algorithms[0].params") -> MinMaxSettings:
    """Typed MinMaxQuantization settings from the config params and the hardware config.

    The preset chooses the activation mode (``performance``: symmetric, ``mixed``: asymmetric)
    among those the device allows for Convolution; the device's first weight quantizer is used
    for weights. Explicit ``activations``/``weights`` overrides win.

    :raises NotSupportedError: for overrides this version cannot honour.
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
    ranges = RangeSpec()
    for overrides, kind in ((params.activations, "activations"), (params.weights, "weights")):
        if overrides is None:
            continue
        if overrides.level_low is not None or overrides.level_high is not None:
            raise NotSupportedError(f"{source}.{kind}: level_low/level_high are not supported yet")
        if kind == "weights":
            w_mode, w_bits = overrides.mode or w_mode, overrides.bits or w_bits
            if overrides.granularity:
                w_per_channel = overrides.granularity == "perchannel"
            continue
        act_mode, act_bits = overrides.mode or act_mode, overrides.bits or act_bits
        if overrides.granularity == "perchannel":
            raise NotSupportedError(f"{source}.activations.granularity: 'perchannel' is not supported yet")
        re = overrides.range_estimator
        if re is None:
            continue
        if re.preset == "quantile":
            raise NotSupportedError(f"{source}.activations.range_estimator.preset: 'quantile' is not supported yet; "
                                    "expected 'default'")
        kw = {}
        for side in ("min", "max"):
            spec = getattr(re, side)
            if spec is None:
                continue
            if spec.type:
                kw[f"{side}_type"] = spec.type
            if spec.aggregator:
                kw[f"{side}_aggregator"] = spec.aggregator
            if spec.outlier_prob is not None:
                kw["outlier_prob"] = spec.outlier_prob
            if side == "max" and spec.clipping_value is not None:
                kw["clipping_value"] = spec.clipping_value
        ranges = RangeSpec(**kw)
    quantizable = hw.quantizable_types()
    return MinMaxSettings(
        activation_op_types=frozenset(t for t in quantizable if t in WEIGHTED_OPS or t in ELTWISE_WITH_TWO_ACTIVATIONS),
        eltwise_op_types=frozenset(t for t in quantizable if t in ELTWISE_WITH_TWO_ACTIVATIONS),
        activation_mode=act_mode, activation_bits=act_bits,
        weight_mode=w_mode, weight_bits=w_bits, weight_per_channel=w_per_channel, ranges=ranges,
        depthwise_per_channel=dw_per_channel and act_bits == 8,
        saturation_fix=params.saturation_fix if hw.target_device in ("ANY", "CPU", "CPU_SPR") else "no",
        ignored_scope=tuple(params.ignored.scope),
        ignored_types=tuple(op.type for op in params.ignored.operations if not op.attributes),
    )


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


def run_quantization(config: PotConfig, options: RunOptions, run_dir: Path) -> RunResult:
    """Quantize ``config.model`` and write ``<run_dir>/optimized/<model_name>.xml|.bin|report.json``.

    :param config: the validated configuration.
    :param options: command-line options.
    :param run_dir: the folder of this run (see :func:`create_run_dir`).
    :return: the written paths and the report.
    :raises PotError: any user-facing failure (config, model, data, engine, output).
    """
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    algos = config.compression.algorithms
    if len(algos) != 1 or algos[0].name not in IMPLEMENTED:
        names = ", ".join(a.name for a in algos) or "none"
        raise NotSupportedError(f"{config.source}: compression.algorithms: {names} not supported yet; "
                                f"expected exactly one of {', '.join(IMPLEMENTED)}")
    algo_cfg = algos[0]
    params = algo_cfg.params
    if config.engine.type != "simplified":
        raise NotSupportedError(f"{config.source}: engine.type: '{config.engine.type}' is not supported yet; "
                                "expected 'simplified'")

    model = load_model(config.model.model, config.model.weights)
    times["load_model_s"] = time.perf_counter() - t0

    t = time.perf_counter()
    hw = load_hardware_config(config.compression.target_device)
    data = create_data_source(config.engine.data_source, model, layout=config.engine.layout,
                              shape=config.engine.shape, source_key="engine.data_source")
    indices = select_subset(len(data), params.stat_subset_size, params.shuffle_data, params.seed,
                            source=str(config.engine.data_source))
    times["data_source_s"] = time.perf_counter() - t

    algorithm = DefaultQuantization(
        create_min_max_settings(params, hw),
        use_fast_bias=params.use_fast_bias and algo_cfg.name == "DefaultQuantization",
        bias_threshold=params.threshold,
        compress_weights=not options.keep_uncompressed_weights)
    requests = algorithm.statistic_requests(model)

    t = time.perf_counter()
    bar, update = _progress(len(indices), options)
    log.info("Collecting statistics on %d samples", len(indices))
    try:
        stats = collect_statistics(model, requests, data.iter_samples(indices), len(indices), progress=update,
                                   requests_number=config.engine.stat_requests_number)
    finally:
        if bar is not None:
            bar.close()
    times["statistics_s"] = time.perf_counter() - t
    if data.skipped:
        log.warning("%d sample(s) skipped while reading", len(data.skipped))

    t = time.perf_counter()
    result = algorithm.apply(model, stats)
    times["quantization_s"] = time.perf_counter() - t
    log.info("Inserted %d activation FakeQuantize, quantized %d weight tensors, corrected %d biases",
             sum(1 for q in result.quantizers if q.kind == "activation"),
             sum(1 for q in result.quantizers if q.kind == "weights"),
             sum(1 for b in result.bias_corrections if b.applied))

    t = time.perf_counter()
    target = Path(run_dir) / "optimized"
    name = config.model.model_name
    report = build_report(config=config, options=options, result=result, xml=target / f"{name}.xml",
                          samples_used=stats.n_samples, samples_skipped=[str(p) for p in data.skipped],
                          times=times, version=__version__)
    times["save_s"] = time.perf_counter() - t
    report["time_s"]["total_s"] = time.perf_counter() - t0
    xml = save_model_atomic(model, target, name, extra_files={"report.json": dump_report(report)})
    log.info("Quantized model written to %s", xml)
    return RunResult(xml=xml, bin=xml.with_suffix(".bin"), report_path=target / "report.json", report=report)
