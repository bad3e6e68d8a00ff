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
    :param options: the :class:`pot_cli.pipeline.RunOptions`.
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


def dump_report(report: dict) -> str:
    """The report as indented JSON text (NaN/inf written as strings would be invalid: none occur)."""
    return json.dumps(report, indent=2, sort_keys=False, default=str) + "\n"
