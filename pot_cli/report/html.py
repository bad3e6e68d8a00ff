"""``report.html``: ``report.json`` for people, one self-contained page beside the quantized IR.

The page has inline CSS only: no script, no external font, image or style sheet, so it opens
offline from ``file://`` and can be mailed or attached to a ticket. Tables scroll horizontally
on a narrow screen (390 px phones). Plots are drawn with matplotlib (Agg backend, SVG output
inlined; text kept as text), and only for the sections that have data, so a plain run does not
pay matplotlib's import (about 0.5 s). Every text taken from the report or the model is escaped
(:func:`html.escape`).

Sections, each shown only when the report has it: summary (model, device, preset, samples,
sizes, INT8 share of Convolution/MatMul in the IR and on the CPU runtime), time per stage,
layers kept in floating point with the reason, per-layer sensitivity (``analysis``) with the
recommended ignored scope, ``quant_noise`` (QuantNoiseEstimator), AccuracyAwareQuantization
steps, the speed check's FP32 vs INT8 time per layer, evaluation metrics, and every FakeQuantize
with its range.
"""
from __future__ import annotations

import html
import io
import json
import math
from pathlib import Path

#: plotted rows at most in one bar chart (the tables list them all)
MAX_BARS = 40

_CSS = """
:root{--fg:#1d2330;--muted:#5b6475;--line:#d9dee7;--bg:#fff;--alt:#f5f7fa;--int8:#2f6fdb;--fp:#e07b24;
--ok:#1e8a4c;--bad:#c0392b}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
color:var(--fg);background:var(--bg)}
main{max-width:1200px;margin:0 auto;padding:12px 14px 40px;min-width:0}
h1{font-size:1.35rem;margin:.4rem 0 .2rem;overflow-wrap:anywhere}
h2{font-size:1.1rem;margin:1.6rem 0 .5rem;padding-bottom:.2rem;border-bottom:2px solid var(--line)}
h3{font-size:1rem;margin:1rem 0 .4rem}
p,li{margin:.4rem 0;overflow-wrap:anywhere}
.muted{color:var(--muted)}
.note{color:var(--muted);font-size:.9rem}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:.8rem;font-weight:600;color:#fff;
background:var(--muted);vertical-align:middle}
.badge.ok{background:var(--ok)}.badge.bad{background:var(--bad)}.badge.int8{background:var(--int8)}
.badge.fp{background:var(--fp)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(165px,1fr));gap:8px;margin:.6rem 0}
.card{border:1px solid var(--line);border-radius:8px;padding:8px 10px;background:var(--alt)}
.card b{display:block;font-size:1.15rem}
.card span{color:var(--muted);font-size:.82rem}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch;margin:.4rem 0;border:1px solid var(--line);
border-radius:6px}
table{border-collapse:collapse;width:100%;font-size:.86rem}
th,td{padding:4px 8px;text-align:left;vertical-align:top;border-bottom:1px solid var(--line)}
th{background:var(--alt);position:sticky;top:0;white-space:nowrap}
tr:nth-child(even) td{background:#fafbfc}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.name{overflow-wrap:anywhere;min-width:12em;max-width:34em}
table.kv th{width:13em;white-space:normal;position:static}
table.kv td{overflow-wrap:anywhere}
.bar{display:inline-block;height:.7em;background:var(--int8);border-radius:2px;vertical-align:middle}
.plot{margin:.6rem 0;overflow-x:auto}
.plot svg{width:100%;max-width:760px;min-width:500px;height:auto;display:block}
pre{background:#f0f2f5;border:1px solid var(--line);border-radius:6px;padding:8px 10px;overflow-x:auto;
font-size:.82rem;margin:.4rem 0}pre.wrap{white-space:pre-wrap;overflow-wrap:anywhere}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.88em}
details{margin:.4rem 0}summary{cursor:pointer;font-weight:600}
nav{font-size:.88rem;margin:.3rem 0 .8rem;display:flex;flex-wrap:wrap;gap:.2em .9em}nav a{white-space:nowrap}
.narrow{display:none}
@media (max-width:600px){.narrow{display:block}body{font-size:14px}main{padding:8px 8px 30px}table{font-size:.8rem}
th,td{padding:3px 5px}table.kv th{width:8.5em}td.name{min-width:7em}.plot svg{min-width:0}
th.wide,td.wide{display:none}th.num{white-space:normal}}
"""


def _e(value) -> str:
    """Text escaped for HTML (None shown as an em dash)."""
    return "\u2014" if value is None else html.escape(str(value), quote=True)


def _num(value, digits: int = 4) -> str:
    """A number for a table cell: ``digits`` significant digits, ints as they are."""
    if value is None:
        return "\u2014"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.{digits}g}"
    return _e(value)


def _size(n: int | None) -> str:
    if n is None:
        return "\u2014"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _table(headers: list[str], rows: list[list[str]], numeric: set[int] = frozenset(), name_cols: set[int] = frozenset(),
           cls: str = "", wide_only: set[int] = frozenset()) -> str:
    """A scrollable table; cells are already-escaped HTML. Columns in ``wide_only`` are hidden
    on a narrow screen (a phone)."""
    def classes(i: int, head: bool = False) -> str:
        c = ["num"] if i in numeric else ["name"] if i in name_cols and not head else []
        return " ".join(c + (["wide"] if i in wide_only else []))

    head = "".join(f'<th class="{classes(i, True)}">{_e(h)}</th>' for i, h in enumerate(headers))
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            c = classes(i)
            cells.append(f'<td class="{c}">{cell}</td>' if c else f"<td>{cell}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _kv(pairs: list[tuple[str, str]]) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in pairs)
    return f'<div class="scroll"><table class="kv"><tbody>{rows}</tbody></table></div>'


class _Plots:
    """matplotlib figures rendered to inline SVG (imported on first use, Agg backend)."""

    def __init__(self):
        self.count = 0

    def figure(self, width: float, height: float):
        import matplotlib
        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure

        fig = Figure(figsize=(width, height), layout="constrained")
        return fig, fig.add_subplot()

    def svg(self, fig, title: str) -> str:
        """The figure as an ``<svg>`` element (ids salted per figure: several plots share the page)."""
        import matplotlib

        self.count += 1
        buf = io.StringIO()
        with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": f"pot-plot-{self.count}"}):
            fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
        text = buf.getvalue()
        text = text[text.index("<svg"):]
        text = text.replace("<svg ", f'<svg role="img" aria-label="{_e(title)}" class="pot-plot" ', 1)
        return f'<div class="plot">{text}</div>'


def _short(name: str, n: int = 38) -> str:
    return name if len(name) <= n else name[:n // 2 - 1] + "\u2026" + name[-(n // 2 - 1):]


def _barh(plots: _Plots, labels: list[str], series: list[tuple[str, list[float], str]], xlabel: str, title: str,
          vline: float | None = None) -> str:
    """Horizontal grouped bars, one row per label (first label on top)."""
    import numpy as np

    n = len(labels)
    fig, ax = plots.figure(7.5, max(2.0, 0.9 + 0.26 * n * max(1, len(series)) ** 0.5))
    y = np.arange(n)
    height = 0.8 / len(series)
    for k, (name, values, color) in enumerate(series):
        ax.barh(y + (k - (len(series) - 1) / 2) * height, [0.0 if v is None else v for v in values], height,
                label=name, color=color)
    ax.set_yticks(y, [_short(x) for x in labels], fontsize=7)
    ax.set_ylim(n - 0.5, -0.5)  # first label on top, no empty rows
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10, pad=18 if len(series) > 1 or vline is not None else 6)
    ax.grid(axis="x", alpha=0.3)
    if vline is not None:
        ax.axvline(vline, color="#c0392b", linestyle="--", linewidth=1, label=f"target {vline:.3g}")
    if len(series) > 1 or vline is not None:
        ax.legend(fontsize=7, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=3, frameon=False)  # above: long charts
    return plots.svg(fig, title)


def _algorithms(report: dict) -> list[dict]:
    algos = ((report.get("config") or {}).get("compression") or {}).get("algorithms") or []
    return [a for a in algos if isinstance(a, dict)] if isinstance(algos, list) else []


def _summary(report: dict, parts: list[str], nav: list[tuple[str, str]]) -> None:
    config = report.get("config") or {}
    compression = config.get("compression") or {}
    algos = _algorithms(report)
    params = (algos[0].get("params") or {}) if algos else {}
    inp, out = report.get("input") or {}, report.get("output") or {}
    summary = report.get("summary") or {}
    layers = report.get("layers") or {}
    samples = report.get("samples") or {}
    sizes = report.get("sizes") or {}
    speed = report.get("speed_check") or {}
    aa = report.get("accuracy_aware")

    status = ""
    if report.get("unquantized"):
        status = '<span class="badge fp">written unquantized: INT8 was not faster</span>'
    elif aa is not None:
        status = ('<span class="badge ok">accuracy target met</span>' if aa.get("target_met")
                  else '<span class="badge bad">accuracy target NOT met</span>')
    name = (config.get("model") or {}).get("model_name") or Path(str(inp.get("model", "model"))).stem
    parts.append(f"<h1>{_e(name)} {status}</h1>")
    parts.append(f'<p class="muted">pot {_e(report.get("version"))}, OpenVINO {_e(report.get("openvino"))}, '
                 f'Python {_e(report.get("python"))}</p>')

    cards = []
    if layers:
        total = layers.get("int8", 0) + layers.get("float", 0)
        cards.append((f"{layers.get('int8', 0)} / {total}", "Convolution/MatMul in INT8 (IR)"))
    runtime = speed.get("runtime") or {}
    if runtime.get("total"):
        cards.append((f"{100 * runtime['int8'] / runtime['total']:.0f}%",
                      f"INT8 on the CPU runtime ({runtime['int8']} of {runtime['total']} nodes)"))
    cards.append((str(summary.get("activation_quantizers", 0)), "activation FakeQuantize"))
    cards.append((str(summary.get("weight_quantizers", 0)), "weight tensors quantized"))
    if layers:
        cards.append((str(layers.get("float", 0)), "Convolution/MatMul kept in float"))
    total_s = (report.get("time_s") or {}).get("total_s")
    if total_s is not None:
        cards.append((f"{total_s:.2f} s", "total time"))
    if sizes.get("input_bytes") and sizes.get("output_bytes"):
        cards.append((f"{_size(sizes['input_bytes'])} \u2192 {_size(sizes['output_bytes'])}", "weights size"))
    if speed.get("fp32_us"):
        cards.append((f"{speed['fp32_us'] / 1000:.2f} \u2192 {speed['int8_us'] / 1000:.2f} ms",
                      "FP32 \u2192 INT8 per inference"))
    parts.append('<div class="cards">' + "".join(f"<div class=\"card\"><b>{_e(v)}</b><span>{_e(k)}</span></div>"
                                                  for v, k in cards) + "</div>")

    pairs = [("Model", f"<code>{_e(inp.get('model'))}</code>")]
    if inp.get("cascade"):
        pairs.append(("Cascade", ", ".join(f"{_e(c.get('name'))}: <code>{_e(c.get('model'))}</code>"
                                           for c in inp["cascade"])))
    pairs.append(("Output", "<br>".join(f"<code>{_e(m.get('xml'))}</code>" for m in out.get("models") or [])
                  or f"<code>{_e(out.get('xml'))}</code>"))
    pairs.append(("Target device", _e(compression.get("target_device"))))
    pairs.append(("Algorithms", _e(", ".join(str(a.get("name")) for a in algos) or "\u2014")))
    pairs.append(("Preset", _e(params.get("preset"))))
    engine = config.get("engine") or {}
    data = inp.get("ac_config") or inp.get("data_source") or engine.get("data_source")
    pairs.append(("Engine / data", f"{_e(engine.get('type'))}: <code>{_e(data)}</code>"))
    skipped = samples.get("skipped") or []
    pairs.append(("Calibration samples", f"{_num(samples.get('used'))} used"
                  + (f", {len(skipped)} unreadable skipped" if skipped else "")
                  + (f" (stat_subset_size {_num(params.get('stat_subset_size'))})"
                     if params.get("stat_subset_size") is not None else "")))
    if sizes:
        pairs.append(("Weights size", f"{_size(sizes.get('input_bytes'))} (input .bin) \u2192 "
                                      f"{_size(sizes.get('output_bytes'))} (written model's constants)"))
    pairs.append(("Weights", "INT8 constants" if out.get("weights_compressed", True)
                  else "float behind FakeQuantize (--keep-uncompressed-weights)"))
    if layers.get("types"):
        pairs.append(("INT8 share (IR)", ", ".join(f"{_e(t)} {c.get('int8', 0)}/{c.get('int8', 0) + c.get('float', 0)}"
                                                   for t, c in layers["types"].items())))
    if runtime.get("types"):
        pairs.append(("CPU runtime precision", ", ".join(
            f"{_e(t)}: " + " ".join(f"{_e(p)}\u00d7{n}" for p, n in sorted(c.items())) for t, c in runtime["types"].items())))
    else:
        pairs.append(("CPU runtime precision", '<span class="note">not measured in this run (the speed check of '
                                               '<code>--target-device CPU</code> records it); the IR share above '
                                               'says which layers carry FakeQuantize</span>'))
    extra = []
    for key, label in (("biases_corrected", "biases corrected"), ("aligned_layers", "channel pairs aligned"),
                       ("quantized_if_bodies", "If bodies quantized"), ("unreached_branches", "If branches never reached")):
        if summary.get(key):
            extra.append(f"{summary[key]} {label}")
    if extra:
        pairs.append(("Also", _e(", ".join(extra))))
    parts.append(_kv(pairs))
    nav.append(("summary", "Summary"))


def _times(report: dict, parts: list[str], nav: list[tuple[str, str]]) -> None:
    times = report.get("time_s") or {}
    stages = [(k, v) for k, v in times.items() if k != "total_s" and isinstance(v, (int, float))]
    if not stages:
        return
    longest = max(v for _, v in stages) or 1.0
    reused = (report.get("evaluation") or {}).get("reused")

    def label(k: str) -> str:
        text = k.removesuffix("_s").replace("_", " ")
        return text + " (AccuracyAware's final evaluation, reused)" if k == "evaluation_s" and reused else text

    rows = [[_e(label(k)), f"{v:.3f}",
             f'<span class="bar" style="width:{max(1.0, 120 * v / longest):.0f}px"></span>'] for k, v in stages]
    if "total_s" in times:
        rows.append(["<b>total</b>", f"<b>{times['total_s']:.3f}</b>", ""])
    parts.append('<h2 id="times">Time per stage</h2>')
    parts.append(_table(["stage", "seconds", ""], rows, numeric={1}))
    nav.append(("times", "Times"))


def _float_layers(report: dict, parts: list[str], nav: list[tuple[str, str]]) -> None:
    layers = report.get("layers")
    if layers is None:
        return
    parts.append('<h2 id="float">What stayed in floating point, and why</h2>')
    rows = layers.get("float_layers") or []
    reverted = [n for n in (report.get("unreached_branches") or [])]
    if not rows:
        parts.append(f"<p>Every Convolution/MatMul of the written model reads INT8 data "
                     f"({layers.get('int8', 0)} layers).</p>")
    else:
        parts.append(f"<p>{len(rows)} of {layers.get('int8', 0) + layers.get('float', 0)} Convolution/MatMul layers "
                     f"run in floating point:</p>")
        parts.append(_table(["layer", "type", "why"], [[_e(r.get("layer")), _e(r.get("type")), _e(r.get("reason"))]
                                                      for r in rows], name_cols={0}))
    for i, algo in enumerate(_algorithms(report)):
        name, scope = algo.get("name"), list(((algo.get("params") or {}).get("ignored") or {}).get("scope") or [])
        if scope:
            parts.append(f"<p>Ignored scope of {_e(name)} (<code>compression.algorithms[{i}].params.ignored.scope</code>, "
                         f"{len(scope)} name(s), any layer type; kept in float because the config says so):</p>"
                         f'<pre class="wrap"><code>{_e(", ".join(scope))}</code></pre>')
    if reverted:
        parts.append("<p>If branches no calibration sample took (their bodies stay in float):</p><ul>"
                     + "".join(f"<li>{_e(b.get('node'))}: {_e(b.get('branch'))} branch</li>" for b in reverted) + "</ul>")
    nav.append(("float", "Kept in float"))


def _quant_algorithms(report: dict) -> list[tuple[int, str]]:
    """``(index, name)`` of the config's quantization algorithms (where an ignored scope goes)."""
    return [(i, a.get("name")) for i, a in enumerate(_algorithms(report))
            if a.get("name") in ("DefaultQuantization", "MinMaxQuantization", "AccuracyAwareQuantization")]


#: what the analysis and the output check mean by their figures
_FIGURES = ("Cosine: the cosine similarity of the output and the FP32 output (1: the same direction), averaged "
            "over the samples; SQNR: the signal-to-noise ratio in dB over all samples; a model with several outputs "
            "shows its worst output's.")


def _output_check(report: dict, parts: list[str], nav: list[tuple[str, str]]) -> None:
    check = report.get("output_check")
    if not check:
        return
    parts.append('<h2 id="output-check">Output against FP32</h2>')
    expected = check.get("expected") or {}
    rows = [["this model", _num(check.get("cosine"), 6), _num(check.get("sqnr_db"))]]
    if expected:
        rows.append(["predicted by the analysis that recommended this config", _num(expected.get("cosine"), 6),
                     _num(expected.get("sqnr_db"))])
    if check.get("target") is not None:
        rows.append([f"target: {'reached' if check.get('target_met') else '<b>not reached</b>'}",
                     _num(check.get("target"), 6), ""])
    parts.append(f"<p>The output model against the float model on {_num(check.get('samples'))} calibration "
                 "sample(s)" + (" (the samples of the prediction)" if expected else "") + f". {_FIGURES}</p>")
    parts.append(_table(["", "cosine", "SQNR dB"], rows, numeric={1, 2}))
    nav.append(("output-check", "Output vs FP32"))


def _analysis(report: dict, parts: list[str], nav: list[tuple[str, str]], plots: _Plots) -> None:
    analysis = report.get("analysis")
    if not analysis:
        if not report.get("quant_noise") and not report.get("accuracy_aware"):
            parts.append('<h2 id="analysis">Which layers hurt</h2>')
            parts.append("<p>Not measured in this run. Run again with <code>--analyze</code> (or "
                         "<code>\"analyze\": true</code> in <code>compression</code>) for each layer group's effect "
                         "on the model output and a recommended ignored scope, or add the "
                         "<code>QuantNoiseEstimator</code> algorithm for each layer's SQNR.</p>")
            nav.append(("analysis", "Which layers hurt"))
        return
    rows = analysis.get("rows") or []
    target = analysis.get("target") or {}
    spent = (report.get("time_s") or {}).get("analysis_s", analysis.get("time_s"))
    parts.append('<h2 id="analysis">Which layers hurt: per-layer sensitivity</h2>')
    parts.append(f"<p>Model output against FP32 on {_num(analysis.get('samples'))} calibration "
                 f"sample{'' if analysis.get('samples') == 1 else 's'}, "
                 f"{_num(analysis.get('groups'))} layer groups, most harmful first. {_FIGURES} <i>only quantized</i>: that "
                 "group alone in INT8, every other group in float (the ranking: lowest cosine first"
                 + (f", of output <code>{_e(analysis['ranked_by_output'])}</code>, the one the fully quantized model "
                    "is furthest from FP32 on, so the table's worst-output cosine may be out of order"
                    if analysis.get("ranked_by_output") else "") + "); "
                 "<i>only float</i>: that group alone in float, every other group in INT8 (measured for the most "
                 f"harmful groups the time allowed; \u2014 where not measured). The analysis took {_num(spent, 3)} s"
                 + (f", the run before it {_num(analysis.get('plain_time_s'), 3)} s"
                    if analysis.get("plain_time_s") else "") + ".</p>")
    blocks = (analysis.get("screening") or {}).get("blocks") or []
    if blocks:
        refined = [b for b in blocks if b.get("refined")]
        alone = sum(len(b.get("groups") or []) for b in refined)
        parts.append(f"<p>The time budget did not fit every group alone quantized: the {len(blocks)} blocks of "
                     f"consecutive groups were measured first, then the groups of the {len(refined)} most harmful "
                     f"blocks one by one ({alone} groups). The other groups show \u2014 under <i>only quantized</i> and "
                     "rank by their share of their block's harm (<code>screening</code> in report.json).</p>")
    full = analysis.get("fully_quantized") or {}
    if full:
        parts.append(f"<p>Fully quantized (the baseline of both columns): output SQNR {_num(full.get('sqnr_db'))} dB, "
                     f"cosine {_num(full.get('cosine'), 6)}"
                     + "".join(f", {_e(k)} {_num(v)}" for k, v in (analysis.get("fully_quantized_metrics") or {}).items())
                     + ". A group's <i>only float</i> figure above it: keeping that group in float helps; below it: "
                     "it does not"
                     + (f" (on {_num(analysis.get('samples'))} sample(s) a single figure is noisy; the recommendation "
                        "below is checked on more)" if (analysis.get("samples") or 0) <= 2 else "") + ".</p>")
    if rows:
        top = rows[0]
        parts.append(f'<p>Most harmful: <b>{_e(top.get("group"))}</b> ({_e(top.get("type"))}; the group is named '
                     "after its layer in the IR).</p>")
        shown = rows[:MAX_BARS]
        parts.append(_barh(plots, [r.get("group", "") for r in shown],
                           [("only this group quantized", [(r.get("only_quantized") or {}).get("sqnr_db") for r in shown],
                             "#2f6fdb"),
                            ("only this group in float", [(r.get("only_float") or {}).get("sqnr_db") for r in shown],
                             "#e07b24")],
                           "output SQNR against FP32 (dB, higher is better)",
                           "Output SQNR per group, in the table's order"
                           + (f" (first {MAX_BARS} of {len(rows)})" if len(rows) > MAX_BARS else "")))
        metric_names = sorted({k for r in rows for k in (r.get("metrics") or {})})
        headers = ["#", "group", "type", "only quantized: SQNR dB", "only quantized: cosine", "only float: SQNR dB",
                   "only float: cosine"] + metric_names
        table = []
        for i, r in enumerate(rows, 1):
            q, f = r.get("only_quantized") or {}, r.get("only_float") or {}
            table.append([str(i), _e(r.get("group")), _e(r.get("type")), _num(q.get("sqnr_db")), _num(q.get("cosine"), 6),
                          _num(f.get("sqnr_db")), _num(f.get("cosine"), 6)]
                         + [_num((r.get("metrics") or {}).get(m)) for m in metric_names])
        parts.append('<p class="note narrow">On this narrow screen the type and SQNR columns are hidden (the chart '
                     'shows SQNR).</p>')
        parts.append(_table(headers, table, numeric={0, 3, 4, 5, 6} | set(range(7, 7 + len(metric_names))), name_cols={1},
                            wide_only={2, 3, 5}))
    rec = analysis.get("recommendation")
    if rec:
        parts.append("<h3>Recommendation</h3>")
        pred = rec.get("predicted") or {}
        keep = rec.get("keep_float") or []
        checked = rec.get("verified_samples") or analysis.get("samples")
        measured = (f"output SQNR {_num(pred.get('sqnr_db'))} dB, cosine {_num(pred.get('cosine'), 6)} on "
                    f"{_num(checked)} calibration samples")
        if keep:
            parts.append(f"<p>Keep {len(keep)} group(s) in floating point to reach the target (output cosine "
                         f"{_num(target.get('cosine'), 6)}): measured with them reverted, {measured}"
                         + ("" if analysis.get("target_met", True) else " <b>(target not reached)</b>")
                         + ". They are the first groups of the ranking, checked together on the real model: a group "
                         "among them may have an <i>only float</i> figure below the baseline, as the errors of "
                         "several groups can partly cancel.</p>")
        else:
            parts.append(f"<p>The fully quantized model already reaches the target (output cosine "
                         f"{_num(target.get('cosine'), 6)}): {measured}. Nothing to keep in floating point; "
                         "<code>--analyze 0.999</code> asks for a higher target.</p>")
        snippet = json.dumps({"ignored": {"scope": list(rec.get("ignored_scope") or [])}}, indent=2)
        where = ", ".join(f"<code>compression.algorithms[{i}].params</code> ({_e(n)})" for i, n in _quant_algorithms(report))
        parts.append(f"<p>Paste into {where or 'the quantization algorithm’s <code>params</code>'} (it replaces "
                     "<code>ignored.scope</code>; the run's own scope is included):</p>")
        parts.append(f'<pre id="ignored-snippet"><code>{_e(snippet)}</code></pre>')
        if rec.get("config"):
            parts.append(f"<p>Ready-to-run config: <code>{_e(rec['config'])}</code> "
                         f"(<code>pot -c {_e(rec['config'])}</code>).</p>")
    nav.append(("analysis", "Which layers hurt"))


def _quant_noise(report: dict, parts: list[str], nav: list[tuple[str, str]], plots: _Plots) -> None:
    noise = report.get("quant_noise")
    if not noise:
        return
    rows = noise.get("rows") or []
    parts.append('<h2 id="quant-noise">Quantization noise per layer (QuantNoiseEstimator)</h2>')
    parts.append(f"<p>Mode <code>{_e(noise.get('mode'))}</code>, {_e(noise.get('type'))}; CSV: "
                 f"<code>{_e(noise.get('csv'))}</code> (in the model's layer order). Lower SQNR = more noise; noisiest "
                 "first.</p>")
    if rows:
        ranked = sorted(rows, key=lambda r: (r.get("sqnr_db") is None, r.get("sqnr_db") or 0.0))
        shown = ranked[:MAX_BARS]
        parts.append(_barh(plots, [r.get("layer", "") for r in shown],
                           [("SQNR", [r.get("sqnr_db") for r in shown], "#2f6fdb")], "SQNR (dB)",
                           "Noisiest layers" + (f" (first {MAX_BARS} of {len(rows)})" if len(rows) > MAX_BARS else "")))
        parts.append(_table(["layer", "type", "SQNR dB"], [[_e(r.get("layer")), _e(r.get("type")), _num(r.get("sqnr_db"))]
                                                            for r in ranked], numeric={2}, name_cols={0}))
    nav.append(("quant-noise", "Noise"))


def _accuracy_aware(report: dict, parts: list[str], nav: list[tuple[str, str]], plots: _Plots) -> None:
    aa = report.get("accuracy_aware")
    if not aa:
        return
    steps = aa.get("steps") or []
    parts.append('<h2 id="accuracy-aware">AccuracyAwareQuantization</h2>')
    limit = aa.get("max_drop") or {}
    parts.append(f"<p>Maximal drop {_num(aa.get('maximal_drop'))} ({_e(aa.get('drop_type'))}); baseline "
                 + ", ".join(f"{_e(k)} {_num(v)}" for k, v in (aa.get("baseline") or {}).items())
                 + f"; stop reason: {_e(aa.get('stop_reason'))}"
                 + ("" if aa.get("target_met") else "; <b>target not met</b>") + ".</p>")
    if steps:
        metrics = sorted({m for s in steps for m in (s.get("drop") or {})})
        fig, ax = plots.figure(7.0, 3.0)
        for m in metrics:
            xs = [s.get("iteration") for s in steps if m in (s.get("drop") or {})]
            ys = [s["drop"][m] for s in steps if m in (s.get("drop") or {})]
            ax.plot(xs, ys, marker="o", label=f"drop {m}")
            if isinstance(limit.get(m), (int, float)):
                ax.axhline(limit[m], color="#c0392b", linestyle="--", linewidth=1, label=f"maximal drop {m}")
        ax.set_xlabel("iteration (layers reverted to float)")
        ax.set_ylabel("accuracy drop")
        ax.set_title("Accuracy drop against iteration", fontsize=10)
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=7)
        parts.append(plots.svg(fig, "Accuracy drop against iteration"))
        rows = [[_num(s.get("iteration")), _e(s.get("action")), _e(", ".join(s.get("layers") or [])),
                 _e(", ".join(f"{k} {_num(v)}" for k, v in (s.get("metrics") or {}).items())),
                 _e(", ".join(f"{k} {_num(v)}" for k, v in (s.get("drop") or {}).items())),
                 "yes" if s.get("accepted", True) else "no", _num(s.get("time_s"), 3)] for s in steps]
        parts.append(_table(["iteration", "action", "layers", "metrics", "drop", "accepted", "s"], rows,
                            numeric={0, 6}, name_cols={2}))
    for ranking in aa.get("rankings") or []:  # which layers hurt, as AccuracyAware measured them
        metric = ranking.get("metric")
        scores = ranking.get("scores") or []
        parts.append(f"<h3>Ranking of iteration {_num(ranking.get('iteration'))}: {metric} with each group alone "
                     f"reverted to float, on {_num(ranking.get('subset_size'))} samples (best first: the group that "
                     "hurts most)</h3>")
        parts.append(_table(["#", "group", "type", _e(metric), "output distance"],
                            [[str(i), _e(r.get("layer")), _e(r.get("type")), _num(r.get(metric)), _num(r.get("distance"))]
                             for i, r in enumerate(scores, 1)], numeric={0, 3, 4}, name_cols={1}))
    nav.append(("accuracy-aware", "AccuracyAware"))


def _speed_check(report: dict, parts: list[str], nav: list[tuple[str, str]], plots: _Plots, reasons: dict) -> None:
    speed = report.get("speed_check")
    if not speed:
        return
    layers = speed.get("layers") or []
    parts.append('<h2 id="speed">Speed check: FP32 vs INT8 time per layer</h2>')
    fp, before, after = speed.get("fp32_us") or 0.0, speed.get("int8_us_before") or 0.0, speed.get("int8_us") or 0.0
    parts.append(f"<p>Runtime node time per inference on this CPU: FP32 {fp:.0f} us, INT8 {before:.0f} us before "
                 f"and {after:.0f} us after keeping {len(speed.get('reverted') or [])} layer(s) in float "
                 f"({_num(speed.get('rounds'))} round(s) of timing, {_num(speed.get('seconds'), 3)} s of the stage's time)."
                 + (f" Categories not tried in float for lack of time: "
                    f"{_e(', '.join(speed['categories_not_tried']))} (their slower layers may stay in INT8)."
                    if speed.get("categories_not_tried") else "") + "</p>")
    if layers:
        shown = sorted(layers, key=lambda r: -max(r.get("fp32_us") or 0, r.get("int8_us") or 0))[:MAX_BARS]
        parts.append(_barh(plots, [r.get("layer", "") for r in shown],
                           [("FP32", [r.get("fp32_us") for r in shown], "#e07b24"),
                            ("INT8", [r.get("int8_us") for r in shown], "#2f6fdb")],
                           "microseconds per inference",
                           "FP32 vs INT8 time per layer" + (f" (slowest {MAX_BARS} of {len(layers)})"
                                                            if len(layers) > MAX_BARS else "")))
        rows = []
        for r in layers:
            decision = r.get("decision")
            badge = '<span class="badge int8">INT8</span>' if decision == "int8" else '<span class="badge fp">float</span>'
            why = _e(reasons.get(r.get("layer"), "")) if decision != "int8" else ""
            rows.append([_e(r.get("layer")), _e(r.get("type")), _num(r.get("fp32_us")), _num(r.get("int8_us")),
                         badge, why])
        parts.append(_table(["layer", "type", "FP32 us", "INT8 us", "kept in", "why float"], rows, numeric={2, 3},
                            name_cols={0}))
    nav.append(("speed", "Speed"))


def _evaluation(report: dict, parts: list[str], nav: list[tuple[str, str]]) -> None:
    ev = report.get("evaluation")
    if not ev:
        return
    parts.append('<h2 id="evaluation">Evaluation (-e)</h2>')
    parts.append(_table(["metric", "value"], [[_e(k), _num(v, 6)] for k, v in (ev.get("metrics") or {}).items()],
                        numeric={1}))
    nav.append(("evaluation", "Evaluation"))


def _quantizers(report: dict, parts: list[str], nav: list[tuple[str, str]]) -> None:
    rows = report.get("quantizers") or []
    parts.append(f'<h2 id="quantizers">Every FakeQuantize ({len(rows)})</h2>')
    if not rows:
        parts.append("<p>None: nothing was quantized.</p>")
        nav.append(("quantizers", "FakeQuantize"))
        return
    has_model = any("model" in r for r in rows)
    headers = (["model"] if has_model else []) + ["name", "kind", "levels", "input_low", "input_high", "channels",
                                                  "observed min", "observed max", "consumers"]
    table = []
    for r in rows:
        obs = r.get("observed") or [None, None]
        table.append(([_e(r.get("model"))] if has_model else [])
                     + [_e(r.get("name")), _e(r.get("kind")), _num(r.get("levels")), _num(r.get("input_low")),
                        _num(r.get("input_high")), _num(r.get("channels")), _num(obs[0]), _num(obs[1]),
                        _e(", ".join(r.get("consumers") or []))])
    off = 1 if has_model else 0
    parts.append('<p class="note">Per-channel quantizers (channels &gt; 1): input_low is the smallest and input_high the '
                 'largest bound over the channels. levels: 8-bit activations have 256 and symmetric 8-bit weights 255 '
                 '(the grid [-127, 127]); 128 or 127 where the saturation fix keeps one bit less (by default on the first '
                 'layer: CPUs without VNNI add pairs of INT8 products in 16 bits, which the full grid can '
                 'overflow).</p>')
    parts.append(f"<details {'open' if len(rows) <= 150 else ''}><summary>{len(rows)} quantizers</summary>"
                 + _table(headers, table, numeric={off + i for i in (2, 3, 4, 5, 6, 7)}, name_cols={off, off + 8})
                 + "</details>")
    nav.append(("quantizers", "FakeQuantize"))


def render_html(report: dict) -> str:
    """The report page as text (UTF-8 HTML5, self-contained).

    :param report: the ``report.json`` dict (:func:`pot_cli.report.report.build_run_report`, plus
        ``layers`` and ``sizes`` from :func:`pot_cli.report.precision.layer_precision`); sections
        it lacks are left out.
    :return: the page.
    """
    from pot_cli.report.precision import float_reasons

    plots = _Plots()
    parts: list[str] = []
    nav: list[tuple[str, str]] = []
    reasons = float_reasons(report)
    head: list[str] = []
    _summary(report, head, nav)
    _times(report, parts, nav)
    _float_layers(report, parts, nav)
    _output_check(report, parts, nav)
    _analysis(report, parts, nav, plots)
    _quant_noise(report, parts, nav, plots)
    _accuracy_aware(report, parts, nav, plots)
    _speed_check(report, parts, nav, plots, reasons)
    _evaluation(report, parts, nav)
    _quantizers(report, parts, nav)
    links = "".join(f'<a href="#{_e(a)}">{_e(t)}</a>' for a, t in nav if a != "summary")
    name = ((report.get("config") or {}).get("model") or {}).get("model_name") or "model"
    cue = '<p class="note narrow">Wide tables scroll sideways.</p>'
    body = "\n".join([head[0], f"<nav>{links}</nav>", cue, '<section id="summary">', *head[1:], "</section>", *parts])
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>pot report: {_e(name)}</title><style>{_CSS}</style></head>"
            f"<body><main>\n{body}\n<p class=\"note\">Machine-readable: <code>report.json</code> in the same folder."
            "</p></main></body></html>\n")


def report_files(report: dict) -> dict[str, str]:
    """``report.json`` and ``report.html`` as texts, for :func:`pot_cli.graph.model.save_model_atomic`.

    A failure while drawing the page (a bug, or matplotlib missing) must not cost the quantized
    model: the page then says what failed, the log warns, and ``report.json`` is complete.
    """
    import logging

    from pot_cli.report.report import dump_report

    try:
        page = render_html(report)
    except Exception as e:  # noqa: BLE001 (the model and report.json are written whatever happens here)
        logging.getLogger("pot").warning("report.html: the page could not be drawn (%s: %s); see report.json",
                                         type(e).__name__, e)
        page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>pot report</title></head>"
                f"<body><p>The report page could not be drawn ({_e(type(e).__name__)}: {_e(e)}); "
                "see <code>report.json</code> in this folder.</p></body></html>\n")
    return {"report.json": dump_report(report), "report.html": page}
