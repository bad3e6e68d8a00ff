"""Which weighted layers of the written model run in INT8, which stayed in floating point and why
(the ``layers`` section of ``report.json``, read by ``report.html`` and the console summary)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import openvino as ov

#: the layers whose precision decides the speed of a model (convolutions and matrix products)
WEIGHTED_TYPES = ("Convolution", "GroupConvolution", "ConvolutionBackpropData",
                  "GroupConvolutionBackpropData", "MatMul")

#: ops a quantized activation may pass through between its FakeQuantize and the layer
_LAYOUT = frozenset({"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Convert"})
#: ops of a compressed weight's decompression (INT8 constant -> Convert -> Subtract -> Multiply)
_DECOMPRESSION = _LAYOUT | {"Subtract", "Multiply"}
_INT_TYPES = frozenset({ov.Type.i8, ov.Type.u8, ov.Type.i4, ov.Type.u4})

#: the runtime (CPU plugin) layer types counted as Convolution/MatMul in ``runtime_precision``
RUNTIME_WEIGHTED = frozenset({"Convolution", "GroupConvolution", "Deconvolution", "FullyConnected", "MatMul"})


def _quantized_input(node: ov.Node, port: int) -> bool:
    """Whether input ``port`` of ``node`` reads a FakeQuantize or an integer constant, through
    layout ops (activations) or the weight decompression ops (port 1)."""
    passable = _DECOMPRESSION if port > 0 else _LAYOUT
    src = node.input_value(port).get_node()
    for _ in range(8):
        kind = src.get_type_name()
        if kind == "FakeQuantize":
            return True
        if kind == "Constant":
            return src.get_output_element_type(0) in _INT_TYPES
        if kind not in passable or src.get_input_size() == 0:
            return False
        src = src.input_value(0).get_node()
    return False


def _ignored(report: dict) -> tuple[set[str], set[str]]:
    """(node names, op types) of the config's ``ignored`` scopes, all algorithms together."""
    names, types = set(), set()
    algos = ((report.get("config") or {}).get("compression") or {}).get("algorithms") or []
    for algo in algos if isinstance(algos, list) else []:
        ignored = ((algo or {}).get("params") or {}).get("ignored") or {}
        if isinstance(ignored, dict):
            names.update(str(s) for s in ignored.get("scope") or [])
            types.update(str(o.get("type")) for o in ignored.get("operations") or [] if isinstance(o, dict))
    return names, types


def float_reasons(report: dict) -> dict[str, str]:
    """Layer name -> why it was kept in floating point, from the report's sections (the config's
    ignored scope, AccuracyAwareQuantization's reverts, the speed check, the analysis
    recommendation). Layers not named here have no recorded reason."""
    reasons: dict[str, str] = {}
    names, _ = _ignored(report)
    keep = set((((report.get("analysis") or {}).get("recommendation")) or {}).get("keep_float") or [])
    for name in names:
        reasons[name] = "in the config's ignored scope" + (" (recommended by --analyze)" if name in keep else "")
    aa = report.get("accuracy_aware") or {}
    for step in aa.get("steps") or []:
        if step.get("action") == "revert" and step.get("accepted", True):
            drop = ", ".join(f"{k} {v:.4g}" for k, v in (step.get("drop") or {}).items()
                             if isinstance(v, (int, float)))
            for layer in step.get("layers") or []:
                reasons[layer] = (f"reverted by AccuracyAwareQuantization in iteration {step.get('iteration')} "
                                  f"(accuracy drop after: {drop or 'n/a'})")
    for row in aa.get("reverted_layers") or []:
        reasons.setdefault(row.get("name"), "reverted by AccuracyAwareQuantization (accuracy)")
    speed = report.get("speed_check") or {}
    whole = set(speed.get("reverted_as_whole_model") or [])
    for row in speed.get("layers") or []:
        if row.get("decision") != "float":
            continue
        if row["layer"] in whole:
            reasons[row["layer"]] = ("speed check: the INT8 model as a whole was not faster than FP32 on "
                                     "this CPU, so every layer went back to float")
        else:
            reasons[row["layer"]] = (f"speed check: slower in INT8 on this CPU ({row.get('int8_us', 0):.1f} us "
                                     f"vs {row.get('fp32_us', 0):.1f} us in FP32)")
    for name in report.get("state_only_layers") or []:
        reasons.setdefault(name, "its input reads only a model state (stateful model)")
    return reasons


def layer_precision(model: ov.Model, report: dict) -> dict:
    """The ``layers`` section: every Convolution/MatMul-like op of the written model, INT8 or
    float, with the reason when it stayed in float.

    An op counts as INT8 when one of its inputs reads a FakeQuantize (through layout ops) or an
    integer (i8/u8/i4/u4) weight constant (through its decompression); this is the IR's view,
    the CPU plugin may still run a layer in float (see ``runtime`` in :func:`runtime_precision`).

    :param model: the model as written.
    :param report: the report built so far (its ``config``, ``accuracy_aware``, ``speed_check``,
        ``state_only_layers`` and ``analysis`` sections give the reasons).
    :return: ``{"types": {op type: {"int8": n, "float": n}}, "int8": n, "float": n,
        "float_layers": [{"layer", "type", "reason"}]}``; the reason of a layer no step reverted
        and no scope ignored says that no quantization pattern applies to it.
    """
    reasons = float_reasons(report)
    _, ignored_types = _ignored(report)
    types: dict[str, Counter] = {}
    float_layers = []
    for node in model.get_ordered_ops():
        kind = node.get_type_name()
        if kind not in WEIGHTED_TYPES:
            continue
        # a MatMul of two activations nobody quantized (attention scores) is still a MatMul
        quantized = any(_quantized_input(node, p) for p in range(min(2, node.get_input_size())))
        types.setdefault(kind, Counter())["int8" if quantized else "float"] += 1
        if not quantized:
            name = node.get_friendly_name()
            reason = reasons.get(name) or ("its type is in the config's ignored operations" if kind in ignored_types
                                           else "no quantization pattern of the preset/target device covers it "
                                                "(or its input is not quantizable)")
            float_layers.append({"layer": name, "type": kind, "reason": reason})
    return {"types": {k: dict(int8=v["int8"], float=v["float"]) for k, v in types.items()},
            "int8": sum(v["int8"] for v in types.values()), "float": sum(v["float"] for v in types.values()),
            "float_layers": float_layers}


def runtime_precision(compiled: ov.CompiledModel) -> dict:
    """The precision the plugin runs each Convolution/MatMul-like node in (its execution graph's
    ``runtimePrecision``), counted: ``{"types": {layerType: {precision: n}}, "int8": n, "total": n}``
    (int8: u8/i8 nodes). No inference is needed: the execution graph exists once compiled."""
    types: dict[str, Counter] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        kind = rt["layerType"].astype(str) if "layerType" in rt else op.get_type_name()
        if kind not in RUNTIME_WEIGHTED:
            continue
        precision = rt["runtimePrecision"].astype(str) if "runtimePrecision" in rt else "?"
        types.setdefault(kind, Counter())[precision] += 1
    total = sum(sum(c.values()) for c in types.values())
    int8 = sum(c[p] for c in types.values() for p in ("u8", "i8"))
    return {"types": {k: dict(v) for k, v in types.items()}, "int8": int8, "total": total}


def add_model_sections(report: dict, models: dict[str, ov.Model], weights: list[str]) -> None:
    """Add ``layers`` (:func:`layer_precision`, the layers of every model together) and ``sizes``
    (``input_bytes``: the input .bin files, ``output_bytes``: the written models' constants) to
    ``report`` in place.

    :param models: the models as written, by file stem.
    :param weights: the input weights files (.bin).
    """
    merged = {"types": {}, "int8": 0, "float": 0, "float_layers": []}
    for model in models.values():
        part = layer_precision(model, report)
        for kind, c in part["types"].items():
            t = merged["types"].setdefault(kind, {"int8": 0, "float": 0})
            t["int8"] += c["int8"]
            t["float"] += c["float"]
        merged["int8"] += part["int8"]
        merged["float"] += part["float"]
        merged["float_layers"] += part["float_layers"]
    report["layers"] = merged
    sizes = {}
    try:
        sizes["input_bytes"] = sum(Path(w).stat().st_size for w in weights)
    except OSError:
        pass
    sizes["output_bytes"] = sum(op.get_byte_size() for m in models.values() for op in m.get_ops()
                                if op.get_type_name() == "Constant")
    report["sizes"] = sizes


def console_summary(report: dict, report_path: Path, limit: int = 5) -> list[str]:
    """The console's closing lines: what was quantized, what stayed in float and why (the first
    ``limit`` layers, grouped by reason), where ``report.json`` and ``report.html`` are."""
    summary = report.get("summary") or {}
    layers = report.get("layers") or {}
    lines = []
    total = layers.get("int8", 0) + layers.get("float", 0)
    head = (f"Summary: {layers.get('int8', 0)} of {total} Convolution/MatMul layers in INT8"
            if layers else "Summary:")
    lines.append(f"{head} ({summary.get('activation_quantizers', 0)} activation FakeQuantize, "
                 f"{summary.get('weight_quantizers', 0)} weight tensors quantized)")
    by_reason: dict[str, list[str]] = {}
    for row in layers.get("float_layers") or []:
        reason = row["reason"].split(" (")[0] if row["reason"].startswith(("reverted", "speed check: slower")) \
            else row["reason"]
        by_reason.setdefault(reason, []).append(row["layer"])
    for reason, names in by_reason.items():
        shown = ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
        lines.append(f"  kept in float: {len(names)} ({reason}): {shown}")
    folder = Path(report_path).parent
    lines.append(f"Reports: {folder / 'report.json'} and {folder / 'report.html'}")
    return lines
