"""Render ``benchmarks/results.json`` as ``docs/benchmarks.md``.

Usage (re-render without re-running)::

    python benchmarks/report.py [benchmarks/results.json] [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import acceptance  # noqa: E402

TOOLS = ("ours", "nncf")
LABEL = {"fp32": "FP32", "ours": "ours", "nncf": "NNCF"}


def _f(x, nd=3, suffix="") -> str:
    if x is None:
        return "–"
    return f"{x:.{nd}f}{suffix}"


def _ratio(a, b, nd=2) -> str:
    return "–" if a is None or b is None or b == 0 else f"{a / b:.{nd}f}x"


def _slash(values, nd=3) -> str:
    return " / ".join(_f(v, nd) for v in values)


def _quant_cell(q: dict | None) -> str:
    if q is None:
        return "not run"
    if q.get("reused"):
        return "reused"
    if not q.get("ok"):
        return f"**FAILED** ({q.get('error', 'exit ' + str(q.get('exit_code')))})"
    return _f(q.get("seconds"), 1)


MEMORY_DOC = Path(__file__).resolve().parents[1] / "docs" / "memory.md"


def with_memory_section(text: str) -> str:
    """Append the memory measurements (``benchmarks/memory.py`` writes ``docs/memory.md``)."""
    if not MEMORY_DOC.is_file():
        return text
    body = MEMORY_DOC.read_text().split("\n", 1)[-1]  # drop its title line
    return text.rstrip("\n") + "\n\n## Memory (peak RSS, from `benchmarks/memory.py`)\n" + body


def _speed_check_cell(q: dict | None) -> str:
    sc = (q or {}).get("speed_check")
    if not sc:
        return "not run"
    return (f"{sc['layers_timed']} timed, {sc['layers_float']} float; {_f(sc.get('fp32_us'), 1)} → "
            f"{_f(sc.get('int8_us'), 1)} µs (before reverts {_f(sc.get('int8_us_before'), 1)})")


def _parity_section(add, models: dict) -> None:
    """Per-layer INT8 parity ours vs NNCF, and the Reorder/Convert nodes of each runtime model."""
    add("## Per-layer INT8 parity with NNCF")
    add("")
    add("Each Convolution/Deconvolution/FullyConnected/MatMul of the CPU plugin's runtime model, matched "
        "between the two INT8 models by the IR op it executes (`rt_info['originalLayersNames']`): the ones "
        "NNCF runs in u8/i8 and ours runs in float, and how many of those our speed check timed and kept in "
        "float on purpose (`speed_check` in ours' `report.json`). An attention op (ScaledDotProductAttention) "
        "is one row, INT8 when its Q.K^T product runs in u8/i8. Reorder/Convert = runtime nodes of that "
        "type in each compiled model (layout and precision conversions) that run at every inference; the "
        "ones on constant paths (weights, FakeQuantize limits), which the plugin runs once when it loads "
        "the model, are not counted.")
    add("")
    hdr = ["model", "INT8 layers ours/NNCF", "NNCF-INT8, float in ours", "of which kept by the speed check",
           "ours-INT8, float in NNCF", "Reorder FP32/ours/NNCF (per inference)", "Convert FP32/ours/NNCF (per inference)",
           "speed check (ours)"]
    add("| " + " | ".join(hdr) + " |")
    add("|" + "---|" * len(hdr))
    notes = []
    for name, r in models.items():
        p = r.get("int8_parity")
        st = r.get("structure", {})
        nodes = [st.get(v, {}).get("runtime_nodes") or {} for v in ("fp32",) + TOOLS]
        row = [f"`{name}`"]
        if p:
            row += [f"{p['ours_int8']}/{p['nncf_int8']}", str(p["nncf_int8_ours_float_count"]),
                    str(p["nncf_int8_ours_float_on_purpose"]), str(p["ours_int8_nncf_float_count"])]
            for g in p["nncf_int8_ours_float"]:
                why = ("kept in float by the speed check" if g["on_purpose"]
                       else f"**not on purpose** (speed check: {g['speed_check']})")
                timed = (f", FP32 {g['fp32_us']} µs vs INT8 {g['int8_us']} µs"
                         if g.get("fp32_us") is not None else "")
                notes.append(f"- `{name}` `{g['layer']}` ({g['type']}, ours runs it in {g['ours_precision']}): "
                             f"{why}{timed}")
            if p["ours_int8_nncf_float"]:
                notes.append(f"- `{name}` INT8 in ours, float in NNCF: "
                             + ", ".join(f"`{n}`" for n in p["ours_int8_nncf_float"][:12])
                             + (" ..." if p["ours_int8_nncf_float_count"] > 12 else ""))
        else:
            row += ["–"] * 4
        row += ["/".join(str(n.get(k, "–")) for n in nodes) for k in ("Reorder", "Convert")]
        row.append(_speed_check_cell(r.get("quantization", {}).get("ours")))
        add("| " + " | ".join(row) + " |")
    add("")
    for line in notes:
        add(line)
    if notes:
        add("")


def render_markdown(results: dict) -> str:
    m = results["machine"]
    s = results["settings"]
    models = results["models"]
    tools = [t for t in TOOLS if s.get(t)]
    variants = ["fp32"] + tools
    L = []
    add = L.append
    add("# Benchmarks: FP32 vs `pot` (ours) vs NNCF")
    add("")
    add("Generated by `benchmarks/run.py` (raw numbers in `benchmarks/results.json`; how to run and what each "
        "column means: `benchmarks/README.md`). Do not edit by hand: re-run the benchmark.")
    add("")
    add("## Machine and run")
    add("")
    add(f"- CPU: {m['cpu']} ({m.get('ov_device_name')}), {m['cores_logical']} logical cores; "
        f"ISA: {', '.join(m.get('isa') or []) or 'n/a'}")
    prec = None
    for r in models.values():
        prec = (r.get("speed", {}).get("latency_compile", {}).get("fp32", {}) or {}).get("inference_precision")
        if prec:
            break
    if prec:
        add(f"- Inference precision of a default CPU compile of the FP32 IRs (the FP32 speed baseline): `{prec}`")
    isa = set(m.get("isa") or [])
    if not isa & {"avx512_vnni", "avx_vnni", "amx_int8"}:
        add("- No VNNI/AMX on this CPU: INT8 convolutions and matmuls run on AVX2 u8 x s8 kernels, so INT8 "
            "gains over FP32 are smaller than on VNNI/AMX CPUs (and some INT8 graphs can be slower).")
    if not isa & {"avx512_bf16", "amx_bf16"}:
        add("- No bf16 support: the default compile of an FP32 IR runs in f32, so the FP32 speed baseline and "
            "the f32 accuracy reference are the same precision here.")
    add(f"- OpenVINO {m['openvino']}, NNCF {m.get('nncf') or 'not installed'}, Python {m['python']}, "
        f"numpy {m['numpy']}; {m['platform']}")
    add(f"- Date: {m['date']}")
    loads = [(name, r.get("speed", {}).get("loadavg_before")) for name, r in models.items()]
    add(f"- Load average (1/5/15 min) at start {results.get('loadavg_start')}, at the end "
        f"{results.get('loadavg_end')}; before each model's speed run: "
        + ", ".join(f"{n} {l[0] if l else '?'}" for n, l in loads)
        + ". Other jobs on the machine slow all variants; interleaving spreads that evenly, but ratios "
          "from a loaded machine are noisier.")
    td = s.get("target_device")
    if td:
        add(f"- Target device of both tools: `{td}` (ours `--target-device {td}`, NNCF "
            f"`target_device=nncf.TargetDevice.{td}`)"
            + ("; with CPU ours also times each quantized layer on this CPU and keeps in floating point "
               "the ones INT8 does not speed up (speed check)" if td == "CPU" else ""))
    add(f"- Command: `{results['command']}` (ours run as `{s.get('ours_command')} -q default ...`)")
    add(f"- Total benchmark time: {results.get('total_seconds')} s; speed: {s['rounds']} interleaved rounds x "
        f"{s['seconds']} s per variant and mode, median of the rounds")
    add("")

    # ----------------------------------------------------------------- summary
    add("## Summary")
    add("")
    cols = ["model", "calib time s " + "/".join(LABEL[t] for t in tools),
            "agreement metric", "agreement " + "/".join(LABEL[v] for v in variants),
            "conv/FC int8 " + "/".join(LABEL[t] for t in tools),
            "bin ratio " + "/".join(LABEL[t] for t in tools),
            "latency ms " + "/".join(LABEL[v] for v in variants),
            "throughput FPS " + "/".join(LABEL[v] for v in variants)]
    add("| " + " | ".join(cols) + " |")
    add("|" + "---|" * len(cols))
    for name, r in models.items():
        acc = r.get("accuracy", {})
        st = r.get("structure", {})
        sp = r.get("speed", {})
        q = r.get("quantization", {})
        row = [f"`{name}`", " / ".join(_quant_cell(q.get(t)) for t in tools),
               acc.get("metric", "error"),
               _slash([acc.get("primary", {}).get(v) for v in variants], 4),
               _slash([st.get(t, {}).get("int8_fraction") for t in tools], 2),
               _slash([st.get(t, {}).get("bin_ratio") for t in tools], 3),
               _slash([(sp.get("latency_ms") or {}).get(v) for v in variants], 2),
               _slash([(sp.get("throughput_fps") or {}).get(v) for v in variants], 1)]
        add("| " + " | ".join(row) + " |")
    add("")

    # ----------------------------------------------------------------- calibration
    add("## Quantization (calibration) time")
    add("")
    add("Wall time of the quantization subprocess, process start to exit (imports, model read, data "
        "loading, statistics, algorithms, save).")
    add("")
    hdr = ["model", "calibration data"] + [f"{LABEL[t]} s" for t in tools]
    if len(tools) == 2:
        hdr.append("ours/NNCF")
    hdr.append("notes")
    add("| " + " | ".join(hdr) + " |")
    add("|" + "---|" * len(hdr))
    for name, r in models.items():
        q = r.get("quantization", {})
        row = [f"`{name}`", f"`{Path(r['calibration_data']).name}`"] + [_quant_cell(q.get(t)) for t in tools]
        if len(tools) == 2:
            ok = all(q.get(t, {}).get("ok") for t in tools)
            row.append(_ratio(q["ours"].get("seconds"), q["nncf"].get("seconds")) if ok else "–")
        notes = []
        inproc = (q.get("nncf") or {}).get("in_process")
        if inproc:
            tm = inproc.get("timings", {})
            notes.append(f"NNCF: {inproc.get('samples')} samples, nncf.quantize {tm.get('quantize_s')} s "
                         f"(imports {tm.get('imports_s')} s)")
        row.append("; ".join(notes))
        add("| " + " | ".join(row) + " |")
    failures = [(name, t, r["quantization"][t]) for name, r in models.items() for t in tools
                if t in r.get("quantization", {}) and not r["quantization"][t].get("ok")]
    for name, t, qq in failures:
        add("")
        add(f"**{LABEL[t]} failed on `{name}`** (`{qq.get('command', '')}`), exit code {qq.get('exit_code')}; "
            f"stderr tail:")
        add("")
        add("```")
        add(qq.get("stderr_tail", "") or "(empty)")
        add("```")
    add("")

    # ----------------------------------------------------------------- accuracy
    add("## Agreement with FP32")
    add("")
    add("Reference: the FP32 IR compiled with `INFERENCE_PRECISION_HINT=f32`; INT8 IRs compiled with defaults. "
        "The FP32 column is the FP32 IR compiled with defaults (the path a user gets), against the same "
        "reference (for `fmnist_cnn`: the f32 reference's own accuracy). None of these inputs was used for "
        "calibration, except the extra `minilm_l6_v2` line on the calibration samples.")
    add("")
    hdr = ["model", "metric"] + [LABEL[v] for v in variants]
    if len(tools) == 2:
        hdr.append("ours − NNCF")
    hdr.append("inputs")
    add("| " + " | ".join(hdr) + " |")
    add("|" + "---|" * len(hdr))
    for name, r in models.items():
        acc = r.get("accuracy", {})
        if "primary" not in acc:
            add(f"| `{name}` | error: {acc.get('error')} |" + " |" * (len(hdr) - 2))
            continue
        p = acc["primary"]
        row = [f"`{name}`", acc["metric_label"]] + [_f(p.get(v), 4) for v in variants]
        if len(tools) == 2:
            row.append("–" if p.get("ours") is None or p.get("nncf") is None else f"{p['ours'] - p['nncf']:+.4f}")
        row.append(acc.get("inputs", ""))
        add("| " + " | ".join(row) + " |")
    add("")
    add("Secondary metrics (same inputs):")
    add("")
    hdr = ["model", "metric"] + [LABEL[v] for v in variants]
    add("| " + " | ".join(hdr) + " |")
    add("|" + "---|" * len(hdr))
    for name, r in models.items():
        det = r.get("accuracy", {}).get("details", {})
        if not det:
            continue
        keys = [k for k, val in (det.get("fp32") or next(iter(det.values()))).items()
                if isinstance(val, (int, float)) and k != r["accuracy"]["metric"]]
        for k in keys:
            add("| " + " | ".join([f"`{name}`", k] + [_f(det.get(v, {}).get(k), 4) if isinstance(
                det.get(v, {}).get(k), float) else str(det.get(v, {}).get(k, "–")) for v in variants]) + " |")
        for k in [k for k, val in (det.get("fp32") or {}).items() if isinstance(val, dict)]:
            for sub in det["fp32"][k]:
                add("| " + " | ".join([f"`{name}`", f"{k}: {sub}"] + [
                    _f(det.get(v, {}).get(k, {}).get(sub), 4) for v in variants]) + " |")
    errs = [(name, v, e) for name, r in models.items() for v, e in r.get("accuracy", {}).get("errors", {}).items()]
    for name, v, e in errs:
        add(f"\n- `{name}` {LABEL[v]}: {e}")
    add("")

    # ----------------------------------------------------------------- structure
    add("## Structure of the INT8 models")
    add("")
    add("From the CPU plugin's runtime model (`compiled.get_runtime_model()`, `rt_info['layerType']` and "
        "`rt_info['runtimePrecision']`): Convolution + Deconvolution + FullyConnected layers executed in u8/i8, "
        "out of all of them. Activation x activation MatMuls (attention) are counted separately. "
        "FakeQuantize = FakeQuantize ops in the saved IR (NNCF stores weights as int8 constants with a "
        "Convert/Subtract/Multiply decompression instead of weight FakeQuantizes, so its count covers activations "
        "only); int8 constants = i8/u8 Constant ops; bin ratio = INT8 `.bin` size / FP32 `.bin` size "
        "(`minilm_l6_v2`'s FP32 IR stores FP16 weights).")
    add("")
    hdr = ["model", "FP32 .bin MB"]
    for t in tools:
        hdr += [f"{LABEL[t]} conv/FC int8", f"{LABEL[t]} MatMul int8", f"{LABEL[t]} FakeQuantize",
                f"{LABEL[t]} int8 constants", f"{LABEL[t]} bin ratio"]
    add("| " + " | ".join(hdr) + " |")
    add("|" + "---|" * len(hdr))
    for name, r in models.items():
        st = r.get("structure", {})
        row = [f"`{name}`", _f((st.get("fp32", {}).get("bin_bytes") or 0) / 1e6, 2)]
        for t in tools:
            x = st.get(t)
            if not x or "error" in x:
                row += ["–"] * 5 if not x else [f"error: {x['error']}"] + ["–"] * 4
                continue
            row += [f"{x['weighted_int8']}/{x['weighted_total']} ({_f(x['int8_fraction'], 2)})",
                    f"{x['matmul_int8']}/{x['matmul_total']}", str(x["fake_quantize"]), str(x["int8_constants"]),
                    _f(x["bin_ratio"], 3)]
        add("| " + " | ".join(row) + " |")
    add("")
    for name, r in models.items():
        for t in tools:
            x = r.get("structure", {}).get(t) or {}
            if x.get("not_int8"):
                add(f"- `{name}` {LABEL[t]}: {x['not_int8_count']} conv/FC layer(s) not in int8: "
                    + ", ".join(f"`{n}`" for n in x["not_int8"][:12]) + (" ..." if x["not_int8_count"] > 12 else ""))
    add("")

    if len(tools) == 2:
        _parity_section(add, models)

    # ----------------------------------------------------------------- speed
    add("## Speed")
    add("")
    add("Batch 1. Latency: `PERFORMANCE_HINT=LATENCY`, one synchronous request, median ms. Throughput: "
        "`PERFORMANCE_HINT=THROUGHPUT`, `AsyncInferQueue` with `OPTIMAL_NUMBER_OF_INFER_REQUESTS` requests, "
        "inferences/s. FP32 = default compile. The variants run interleaved (A, B, C, B, C, A, ...), each "
        "round the same length; the table gives the median of the rounds. \"FP32 again\" is the FP32 IR "
        "compiled and measured once more in its own slot: its ratio to FP32 is the noise floor of the ratios. `minilm_l6_v2` is reshaped to "
        "[1,128] (a sample padded with attention_mask 0), `fmnist_cnn` to [1,1,28,28].")
    add("")
    for key, unit, nd, better in (("latency_ms", "latency ms", 2, "lower"), ("throughput_fps", "FPS", 1, "higher")):
        hdr = ["model"] + [f"{unit} {LABEL[v]}" for v in variants] + [f"{LABEL[t]}/FP32" for t in tools]
        if len(tools) == 2:
            hdr.append("ours/NNCF")
        hdr.append("FP32 again/FP32 (noise floor)")
        if key == "throughput_fps":
            hdr.append("requests")
        add(f"{'Latency' if key == 'latency_ms' else 'Throughput'} ({better} is better; value = median of the "
            f"rounds, (min–max) over the rounds; ratios = median of the per-round ratios):")
        add("")
        add("| " + " | ".join(hdr) + " |")
        add("|" + "---|" * len(hdr))
        for name, r in models.items():
            sp = r.get("speed", {})
            med = sp.get(key) or {}
            rounds = sp.get(key + "_rounds") or {}
            paired = sp.get(key + "_paired_ratios") or {}
            row = [f"`{name}`"]
            for v in variants:
                xs = rounds.get(v) or []
                row.append(_f(med.get(v), nd) + (f" ({min(xs):.{nd}f}–{max(xs):.{nd}f})" if len(xs) > 1 else ""))
            pairs = [(t, "fp32") for t in tools] + ([("ours", "nncf")] if len(tools) == 2 else [])
            for a, b in pairs + [("fp32_control", "fp32")]:
                pr = paired.get(f"{a}/{b}")
                row.append(f"{pr:.2f}x" if pr is not None else _ratio(med.get(a), med.get(b)))
            if key == "throughput_fps":
                info = sp.get("throughput_compile", {})
                row.append("/".join(str(info.get(v, {}).get("nireq", "–")) for v in variants))
            add("| " + " | ".join(row) + " |")
        add("")
    errs = [(name, r["speed"]["error"]) for name, r in models.items() if "error" in r.get("speed", {})]
    for name, e in errs:
        add(f"\n- `{name}` speed: {e}")
    add("")

    # ----------------------------------------------------------------- acceptance
    add("## Acceptance criteria (`benchmarks/acceptance.py`)")
    add("")
    if s.get("ours"):
        checks = acceptance.evaluate(results, "ours")
    else:
        add("Ours was not run: issue A shown for NNCF instead, issue B not applicable.")
        add("")
        checks = [c for c in acceptance.evaluate(results, "nncf") if c.issue == "A"]
    add("| status | issue | model | criterion | detail |")
    add("|---|---|---|---|---|")
    for c in checks:
        st = f"**{c.status}**" if c.status == "FAIL" else c.status
        add(f"| {st} | {c.issue} | {c.model} | {c.criterion} | {c.detail} |")
    add("")
    return "\n".join(L) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = Path(__file__).resolve().parent
    ap.add_argument("results", nargs="?", type=Path, default=here / "results.json")
    ap.add_argument("--out", type=Path, default=here.parent / "docs" / "benchmarks.md")
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(with_memory_section(render_markdown(json.loads(args.results.read_text()))))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
