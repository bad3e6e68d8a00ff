"""The machine-readable report (``report.json`` beside the quantized IR)."""
from __future__ import annotations

import dataclasses
import json
import platform
from pathlib import Path


def build_report(config, options, result, xml: Path, samples_used: int, samples_skipped: list[str],
                 times: dict[str, float], version: str) -> dict:
    """Assemble the report as a JSON-serialisable dict.

    Keys: ``version``, ``openvino``, ``config`` (as used, paths absolute, defaults filled),
    ``input`` (model, weights, data_source), ``output`` (xml, bin), ``samples`` (used, skipped),
    ``time_s`` (seconds per stage, wall clock), ``quantizers`` (one row per FakeQuantize or
    quantized weight tensor: name, kind, tensor, consumers, levels, input_low, input_high,
    channels, observed), ``bias_correction`` (layer, applied, max_shift, magnitude), ``summary``.

    :param config: the validated :class:`pot_cli.config.PotConfig`.
    :param options: the :class:`pot_cli.client.RunOptions`.
    :param result: the algorithm's result records.
    :param xml: where the IR will be written.
    :param samples_used: calibration samples actually run.
    :param samples_skipped: unreadable files skipped.
    :param times: seconds per stage.
    :param version: pot version.
    """
    import openvino as ov

    rows = [dataclasses.asdict(q) for q in result.quantizers]
    bias = [dataclasses.asdict(b) for b in result.bias_corrections]
    return {
        "version": version,
        "openvino": ov.__version__,
        "python": platform.python_version(),
        "config": config.raw,
        "input": {"model": str(config.model.model), "weights": str(config.model.weights),
                  "data_source": config.engine.data_source},
        "output": {"xml": str(xml.resolve()), "bin": str(xml.resolve().with_suffix(".bin")),
                   "weights_compressed": not options.keep_uncompressed_weights},
        "samples": {"used": samples_used, "skipped": samples_skipped},
        "time_s": dict(times),
        "summary": {
            "activation_quantizers": sum(1 for r in rows if r["kind"] == "activation"),
            "weight_quantizers": sum(1 for r in rows if r["kind"] == "weights"),
            "biases_corrected": sum(1 for b in bias if b["applied"]),
        },
        "quantizers": rows,
        "bias_correction": bias,
    }


def build_run_report(config, options, state, xml: Path, version: str, skipped: list[str],
                     evaluation: dict | None = None) -> dict:
    """The report of a pipeline run: :func:`build_report` plus the sections of the steps that ran
    (``channel_alignment``, ``smooth_quant``, ``unreached_branches``, ``state_only_layers``,
    ``if_bodies``, ``accuracy_aware``, ``evaluation``, ``speed_check``, ``quant_noise``).

    :param state: the :class:`pot_cli.pipeline.RunState` of the run.
    :param skipped: calibration files that could not be read.
    :param evaluation: the ``-e`` section, if any.
    """
    report = build_report(config=config, options=options, result=state.result, xml=xml,
                          samples_used=state.samples_used, samples_skipped=skipped, times=state.times, version=version)
    summary = report["summary"]
    if config.engine.type == "accuracy_checker":
        report["input"]["ac_config"] = str(config.engine.ac_config) if config.engine.ac_config else "inline"
    if state.alignment is not None:
        report["channel_alignment"] = {"aligned_layers": len(state.alignment),
                                       "pairs": [dataclasses.asdict(r) for r in state.alignment]}
        summary["aligned_layers"] = len(state.alignment)
    if state.smoothing is not None and not state.unquantized:
        alpha = state.smooth_quant_alpha
        report["smooth_quant"] = {"alpha": "per tensor" if alpha is None else alpha,
                                  "tensors": [dataclasses.asdict(r) for r in state.smoothing]}
    report["unreached_branches"] = [dataclasses.asdict(b) for b in state.unreached]
    # layers left in float because their input reads only a model state (stateful models)
    report["state_only_layers"] = list(state.state_only)
    report["if_bodies"] = [b.report() for b in state.bodies]
    summary["quantized_if_bodies"] = len(state.bodies)
    summary["unreached_branches"] = len(state.unreached)
    aa = state.accuracy_aware
    if aa is not None:
        report["accuracy_aware"] = aa.report
        summary["target_met"] = aa.target_met
        summary["reverted_layers"] = list(aa.reverted)
        if getattr(aa, "switched", None):  # GNA: layers switched from 8-bit to 16-bit quantization
            summary["switched_to_16_bit"] = list(aa.switched)
    if evaluation is not None:
        report["evaluation"] = evaluation
    if state.speed_check is not None:
        report["speed_check"] = state.speed_check
        summary["kept_in_float_for_speed"] = len(state.speed_check.get("reverted", ()))
    if getattr(state, "quant_noise", None) is not None:  # QuantNoiseEstimator ran
        report["quant_noise"] = state.quant_noise
    if getattr(state, "output_check", None) is not None:  # compression.output_check
        report["output_check"] = state.output_check
    if getattr(state, "analysis", None) is not None:  # --analyze: per-layer sensitivity and recommendation
        report["analysis"] = state.analysis
        summary["recommended_keep_float"] = len(state.analysis["recommendation"]["keep_float"])
    return report


def build_cascade_report(config, options, state, states: dict, xmls: dict, version: str, skipped: list[str],
                         evaluation: dict | None = None) -> dict:
    """The report of a cascade's run: :func:`build_report`'s keys, with ``input.cascade`` and
    ``output.models`` (each sub-model's files), ``quantizers`` and ``bias_correction`` rows
    carrying the sub-model name (``model``), a ``models`` section per sub-model (its summary,
    channel alignment, samples and times) and the sums in ``summary``.

    :param state: the run's :class:`pot_cli.pipeline.RunState` (times of the whole run).
    :param states: ``{sub-model name: RunState}``.
    :param xmls: ``{sub-model name: .xml path}`` where each IR will be written.
    """
    first = next(iter(xmls.values()))
    report = build_report(config=config, options=options, result=state.result, xml=first,
                          samples_used=state.samples_used, samples_skipped=skipped, times=state.times, version=version)
    report["input"]["cascade"] = [{"name": c.name, "model": str(c.model), "weights": str(c.weights)}
                                  for c in config.model.cascade]
    if config.engine.ac_config:
        report["input"]["ac_config"] = str(config.engine.ac_config)
    report["output"]["models"] = [{"name": n, "xml": str(x.resolve()), "bin": str(x.resolve().with_suffix(".bin"))}
                                  for n, x in xmls.items()]
    report["models"], report["quantizers"], report["bias_correction"] = [], [], []
    for name, sub in states.items():
        part = build_run_report(config, options, sub, xmls[name], version, skipped)
        report["quantizers"] += [{"model": name, **row} for row in part["quantizers"]]
        report["bias_correction"] += [{"model": name, **row} for row in part["bias_correction"]]
        section = {"name": name, "output": part["output"]["xml"], "summary": part["summary"],
                   "samples_used": sub.samples_used, "time_s": dict(sub.times)}
        if "channel_alignment" in part:
            section["channel_alignment"] = part["channel_alignment"]
        report["models"].append(section)
    summary = report["summary"]
    for key in ("activation_quantizers", "weight_quantizers", "biases_corrected"):
        summary[key] = sum(m["summary"][key] for m in report["models"])
    if evaluation is not None:
        report["evaluation"] = evaluation
    return report


def dump_report(report: dict) -> str:
    """The report as indented JSON text (NaN/inf written as strings would be invalid: none occur)."""
    return json.dumps(report, indent=2, sort_keys=False, default=str) + "\n"
