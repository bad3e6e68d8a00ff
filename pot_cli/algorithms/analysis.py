"""Per-layer sensitivity analysis without labels (``pot ... --analyze [TARGET]``) and the
recommendation that follows from it: which quantized layer groups to keep in floating point.

After quantization, on a few calibration samples, for every quantized *layer group* (the
grouping of AccuracyAwareQuantization, :func:`pot_cli.algorithms.accuracy_aware.group_ops`: a
weighted op or residual Add with the FakeQuantize ops on its inputs, its INT8 weights and its
corrected bias), the model output is compared with the FP32 model's

* when **only that group is quantized** (every other group in floating point), and
* when **only that group is kept in floating point** (every other group quantized),

as SQNR (dB) and cosine similarity. Groups are ranked most harmful first: the largest output
cosine when that group alone is kept in float (then the lowest when it alone is quantized).

Cost: every variant runs on **one** compiled model. The quantized model is cloned and each group
is reverted with AccuracyAwareQuantization's own :func:`~pot_cli.algorithms.accuracy_aware.revert_group`,
except that each edit switches between the quantized and the float source by ``gate[k]`` (``fp + gate[k] *
(quantized - fp)``; a weighted op gets a float twin with the float weights, the switch after
both); ``gate`` is an extra f32 input of shape ``[groups]`` holding 0 or 1. The
FakeQuantize ops of that switchable model are computed as the same arithmetic in f32 ops
(:func:`pot_cli.statistics.collector.fake_quantize_in_float`), so a variant is one inference per
sample with another gate vector: ``(2 x groups + 1) x samples`` inferences and 2 compilations (it
and the FP32 reference), whatever the number of groups. The number of samples is chosen so that
the analysis stays within :data:`BUDGET_SHARE` of the time the run took before it (at least
:data:`MIN_SAMPLES`, at most :data:`MAX_SAMPLES`); the log says ``groups x samples`` before it starts.

Metrics, per model output ``o`` over the analysed samples (FP32 output ``r``, variant ``y``):
``SQNR_o = 10 log10(sum r^2 / sum (y - r)^2)`` and ``cos_o`` = the mean over samples of
``<y, r> / (|y| |r|)``; a variant's figure is the minimum over the outputs (the worst output).

Recommendation: the shortest prefix of the ranking whose groups, kept in float, bring the output
cosine to the target (default :data:`DEFAULT_TARGET_COSINE`), found on the switchable model by an
exponential then binary search over the prefix length, then **verified** on the real quantized
model with those groups reverted (one more compilation; if it falls short the next groups of the
ranking are added, a few times at most). Those groups are the ``ignored.scope`` to add; see
:func:`recommended_config` for the config file (the CLI writes ``<model_name>_recommended.json``
beside the model).

Measured speed/accuracy: see ``docs/analysis.md`` (``benchmarks/analyze.py``).
"""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from pot_cli.algorithms.accuracy_aware import group_ops, revert_group
from pot_cli.graph.model import is_constant_subgraph
from pot_cli.statistics.collector import fake_quantize_in_float

log = logging.getLogger("pot")

#: the output cosine against FP32 the recommendation aims at when no target is given
DEFAULT_TARGET_COSINE = 0.99
#: at most / at least this many calibration samples are analysed
MAX_SAMPLES = 8
MIN_SAMPLES = 1
#: the analysis' time budget: this share of the run's time before it (at least BUDGET_MIN_S)
BUDGET_SHARE = 0.8
BUDGET_MIN_S = 2.0
#: verifications on the real model after the predicted prefix (each adds the next group)
MAX_VERIFICATIONS = 4
#: name of the gate input of the switchable model
GATE_INPUT = "pot_analysis_gates"


@dataclass(frozen=True)
class AnalysisSettings:
    """What ``--analyze`` asks for.

    :param target: output cosine against FP32 the recommendation must reach, in (0, 1].
    :param samples: most calibration samples to analyse (fewer when the time budget asks).
    :param budget_share: the analysis' time budget as a share of the run's time before it.
    """

    target: float = DEFAULT_TARGET_COSINE
    samples: int = MAX_SAMPLES
    budget_share: float = BUDGET_SHARE

    @classmethod
    def from_value(cls, value: Any) -> "AnalysisSettings | None":
        """``None``/``False``: no analysis; ``True``: the defaults; a number: the target cosine;
        an :class:`AnalysisSettings`: itself.

        :raises ValueError: a target outside (0, 1].
        """
        if value is None or value is False:
            return None
        if isinstance(value, AnalysisSettings):
            return value
        if value is True:
            return cls()
        target = float(value)
        if not 0.0 < target <= 1.0:
            raise ValueError(f"analyze target {value}: expected an output cosine in (0, 1], e.g. 0.99")
        return cls(target=target)


@dataclass
class _Stats:
    """Running sums of one variant, per model output."""

    err2: np.ndarray
    ref2: np.ndarray
    cos: np.ndarray
    n: int = 0

    @classmethod
    def new(cls, outputs: int) -> "_Stats":
        return cls(np.zeros(outputs), np.zeros(outputs), np.zeros(outputs))

    def add(self, ys: list[np.ndarray], refs: list[np.ndarray]) -> None:
        for k, (y, r) in enumerate(zip(ys, refs)):
            y = np.asarray(y, np.float64).ravel()
            d = y - r
            self.err2[k] += float(d @ d)
            rr = float(r @ r)
            self.ref2[k] += rr
            denom = math.sqrt(float(y @ y) * rr)
            self.cos[k] += float(y @ r) / denom if denom > 0 else (1.0 if not np.any(d) else 0.0)
        self.n += 1

    def figures(self) -> dict[str, float]:
        """``{"sqnr_db", "cosine"}``: the worst output's."""
        sqnr = [10 * math.log10(max(r, 1e-30) / e) if e > 0 else 200.0 for e, r in zip(self.err2, self.ref2)]
        return {"sqnr_db": round(float(min(sqnr)), 3), "cosine": round(float(min(self.cos / max(self.n, 1))), 6)}


@dataclass
class Recommendation:
    """Groups to keep in float and what the run predicted for that model."""

    keep_float: list[str]
    ignored_scope: list[str]
    predicted: dict[str, float]
    target_met: bool
    config: str | None = None
    verified_models: int = 0


@dataclass
class Analysis:
    """The result of :func:`analyze`; :meth:`report` is the ``analysis`` section of report.json."""

    samples: int
    groups: int
    time_s: float
    plain_time_s: float | None
    target: float
    rows: list[dict]
    fully_quantized: dict[str, float]
    recommendation: Recommendation
    compiled_models: int = 0
    inferences: int = 0
    extra: dict = field(default_factory=dict)

    def report(self) -> dict:
        """The ``analysis`` section (the issue-16 data contract)."""
        rec = self.recommendation
        return {"samples": self.samples, "groups": self.groups, "time_s": round(self.time_s, 3),
                "plain_time_s": None if self.plain_time_s is None else round(self.plain_time_s, 3),
                "target": {"cosine": self.target},
                "rows": self.rows,
                "recommendation": {"keep_float": list(rec.keep_float), "ignored_scope": list(rec.ignored_scope),
                                   "predicted": dict(rec.predicted), "config": rec.config},
                "fully_quantized": dict(self.fully_quantized), "target_met": rec.target_met,
                "compiled_models": self.compiled_models, "inferences": self.inferences}


def switchable_model(model: ov.Model, fp_model: ov.Model, groups: list[str]) -> ov.Model:
    """A clone of the quantized ``model`` in which each group can be quantized or float per inference.

    Each of AccuracyAwareQuantization's revert edits of group ``k``
    (:func:`~pot_cli.algorithms.accuracy_aware.revert_group`) becomes a switch ``fp + gate[k] *
    (quantized - fp)`` between the quantized and the float source; the op's own float weights
    make a twin op, switched after both. The new f32 input :data:`GATE_INPUT`, shape
    ``[len(groups)]``, holds ``gate``: all 1: the quantized model; group ``k``'s gate 0: it in float.

    :param model: the quantized model (not modified).
    :param fp_model: the float model it was quantized from (its constants are shared, not copied).
    :param groups: friendly names of the groups, in gate order.
    """
    sw = model.clone()
    gates = ops.parameter([len(groups)], ov.Type.f32, name=GATE_INPUT)
    gates.output(0).set_names({GATE_INPUT})
    sw.add_parameters([gates])
    fp_ops = {op.get_friendly_name(): op for op in fp_model.get_ops()}
    cache: dict = {}
    axis = ops.constant(np.int64(0))
    for k, g in enumerate(groups):
        gate = ops.gather(gates, ops.constant(np.int64(k)), axis).output(0)
        node = next(op for op in sw.get_ops() if op.get_friendly_name() == g)
        weights: dict[int, ov.Output] = {}

        def connect(inp: ov.Input, fp_src: ov.Output, gate=gate, node=node, weights=weights) -> None:
            if inp.get_node().get_instance_id() == node.get_instance_id() and is_constant_subgraph(fp_src, cache):
                weights[inp.get_index()] = fp_src  # the op's own weights: a float twin of the op (below)
                return
            inp.replace_source_output(_switch(gate, inp.get_source_output(), fp_src))

        revert_group(sw, g, fp_ops, lambda o: is_constant_subgraph(o, cache), connect)
        if weights:
            _float_twin(node, weights, gate)
    sw.validate_nodes_and_infer_types()
    return sw


def _float_twin(node: ov.Node, weights: dict[int, ov.Output], gate: ov.Output) -> None:
    """``node``'s consumers read ``Select(gate, node, twin)``, ``twin`` being ``node`` with its float
    ``weights`` (port -> source). Weights behind a Select would be re-laid out by the CPU plugin on
    every inference (10x slower than the model); two ops with constant weights cost twice the op."""
    from openvino.utils.node_factory import NodeFactory

    inputs = [weights.get(p, node.input_value(p)) for p in range(node.get_input_size())]
    twin = None
    if node.get_output_size() == 1:
        try:
            twin = NodeFactory("opset13").create(node.get_type_name(), inputs, node.get_attributes())
        except Exception:  # noqa: BLE001 - an op the factory cannot rebuild: switch its weights instead
            twin = None
    if twin is None:
        for port, src in weights.items():
            node.input(port).replace_source_output(_switch(gate, node.input_value(port), src))
        return
    targets = list(node.output(0).get_target_inputs())
    switch = _switch(gate, node.output(0), twin.output(0))
    for t in targets:
        t.replace_source_output(switch)


def _switch(gate: ov.Output, quantized: ov.Output, fp: ov.Output) -> ov.Output:
    """``fp + gate * (quantized - fp)``: ``quantized`` for gate 1, ``fp`` for gate 0. Element-wise
    ops, which the CPU plugin fuses and runs in any memory layout (a Select made it reorder tensors
    around it: 4x the model's time)."""
    et = quantized.get_element_type()
    g = gate if et == ov.Type.f32 else ops.convert(gate, et).output(0)
    return ops.add(fp, ops.multiply(g, ops.subtract(quantized, fp))).output(0)


_CORE: ov.Core | None = None


def _compile_f32(model: ov.Model, device: str) -> ov.CompiledModel:
    """Compile on a Core of the analysis's own: the switchable model shares constant buffers with
    models the run's Core already compiled (the speed check's), and the CPU plugin of that Core
    reused their packed INT8 weights for it (its outputs were wrong, output cosine 0.5 on
    mobilenet_v2 with ``--target-device CPU``)."""
    global _CORE
    if _CORE is None:
        _CORE = ov.Core()
    config = {"PERFORMANCE_HINT": "THROUGHPUT"}
    if device.upper().startswith("CPU"):
        config["INFERENCE_PRECISION_HINT"] = "f32"
    try:
        return _CORE.compile_model(model, device, config)
    except Exception as e:
        from pot_cli.errors import ModelError, runtime_error_text

        raise ModelError(f"model '{model.get_friendly_name()}': {device} cannot compile it for the sensitivity "
                         f"analysis: {runtime_error_text(e)}") from e


def _run(compiled: ov.CompiledModel, jobs: list[tuple[Any, dict]], on_result) -> None:
    """Run ``jobs`` (``(key, inputs)``) asynchronously; ``on_result(key, [outputs])`` per job."""
    queue = ov.AsyncInferQueue(compiled, max(1, min(4, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))))
    errors: list[BaseException] = []

    def done(request, key):
        try:
            on_result(key, [np.array(request.get_output_tensor(k).data, copy=True)
                            for k in range(len(compiled.outputs))])
        except BaseException as e:  # noqa: BLE001 - raised after the queue drained
            errors.append(e)

    queue.set_callback(done)
    for key, inputs in jobs:
        queue.start_async(inputs, key)
    queue.wait_all()
    if errors:
        raise errors[0]


def analyze(model: ov.Model, fp_model: ov.Model, result, engine, indices: list[int],
            settings: AnalysisSettings, ignored_scope: list[str] | tuple[str, ...] = (),
            plain_time_s: float | None = None) -> Analysis:
    """Rank the quantized layer groups of ``model`` by the harm they do to its output and find the
    fewest to keep in float for the target output cosine (see the module docstring).

    :param model: the quantized model (not modified).
    :param fp_model: the float model ``model`` was quantized from (after channel alignment and
        SmoothQuant: the same function as the input model; not modified).
    :param result: the quantization records of ``model`` (:class:`DefaultQuantizationResult`).
    :param engine: an engine with model-ready samples (``iter_samples``, ``has_sample_feeds``).
    :param indices: the calibration subset; the analysed samples are spread over it.
    :param settings: target and sample count.
    :param ignored_scope: the run's ignored scope (the recommendation extends it).
    :param plain_time_s: the run's time before the analysis (s): sets the time budget.
    :return: the analysis; ``report()`` gives the report section.
    """
    t0 = time.perf_counter()
    groups = list(group_ops(model, result))
    types = {op.get_friendly_name(): op.get_type_name() for op in fp_model.get_ops()}
    device = getattr(engine, "device", "CPU") or "CPU"
    picked = _spread(indices, settings.samples)
    # copies: an engine may hand out the same buffers again for later samples
    samples = {i: {k: np.array(v, copy=True) for k, v in sample.items()} for i, sample in engine.iter_samples(picked)}
    fp = _compile_f32(fp_model.clone(), device)  # compiling marks the nodes (rt_info); the switchable model reuses them
    refs: dict[int, list[np.ndarray]] = {}
    _run(fp, [(i, samples[i]) for i in picked],
         lambda i, ys: refs.__setitem__(i, [np.asarray(y, np.float64).ravel() for y in ys]))
    sw = switchable_model(model, fp_model, groups)
    # FakeQuantize as the plugin's own f32 op (no INT8 kernel reads a Select); with a dynamic input
    # shape as plain f32 arithmetic, as the statistics collector does (pot_cli.statistics.collector)
    dynamic = any(p.get_partial_shape().is_dynamic for p in sw.get_parameters())
    with fake_quantize_in_float(sw) if dynamic else contextlib.nullcontext():
        compiled = _compile_f32(sw, device)
    n_out = len(compiled.outputs)
    ones = np.ones(len(groups), np.float32)
    inferences = len(picked)

    def measure(gate_sets: list[np.ndarray], which: list[int]) -> list[_Stats]:
        nonlocal inferences
        stats = [_Stats.new(n_out) for _ in gate_sets]
        jobs = [((v, i), {**samples[i], GATE_INPUT: g}) for i in which for v, g in enumerate(gate_sets)]
        _run(compiled, jobs, lambda key, ys: stats[key[0]].add(ys, refs[key[1]]))
        inferences += len(jobs)
        return stats

    # time the fully quantized variant (after a warm-up inference) to size the sample count
    measure([ones], picked[:1])
    t = time.perf_counter()
    measure([ones] * 4, picked[:1])
    per_inference = max((time.perf_counter() - t) / 4, 1e-5)
    budget = max(BUDGET_MIN_S, settings.budget_share * plain_time_s) if plain_time_s else None
    per_sample = (2 * len(groups) + 1) * per_inference
    n = len(picked)
    if budget is not None:
        spent = time.perf_counter() - t0
        n = max(MIN_SAMPLES, min(n, int((budget - spent) / per_sample)))
    picked = picked[:n] if n < len(picked) else picked
    log.info("Sensitivity analysis: %d layer group(s) x 2 variants (only quantized, only in float) x %d "
             "calibration sample(s) = %d inferences on one switchable model (about %.1f s%s)",
             len(groups), n, (2 * len(groups) + 1) * n, per_sample * n,
             f"; budget {budget:.1f} s" if budget is not None else "")
    variants = [ones]
    for k in range(len(groups)):
        only_q = np.zeros(len(groups), np.float32)
        only_q[k] = 1.0
        only_f = ones.copy()
        only_f[k] = 0.0
        variants += [only_q, only_f]
    stats = measure(variants, picked)
    full = stats[0].figures()
    rows = []
    for k, g in enumerate(groups):
        rows.append({"group": g, "type": types.get(g, ""), "only_quantized": stats[1 + 2 * k].figures(),
                     "only_float": stats[2 + 2 * k].figures(), "metrics": None})
    rows.sort(key=lambda r: (-r["only_float"]["cosine"], -r["only_float"]["sqnr_db"],
                             r["only_quantized"]["cosine"], r["group"]))
    log.info("Fully quantized: output cosine %.5f, SQNR %.2f dB against FP32; most harmful group(s): %s",
             full["cosine"], full["sqnr_db"], ", ".join(
                 f"{r['group']} ({r['type']}, in float: cosine {r['only_float']['cosine']:.5f})" for r in rows[:3]))

    order = [r["group"] for r in rows]
    position = {g: k for k, g in enumerate(groups)}

    def prefix_gates(k: int) -> np.ndarray:
        g = ones.copy()
        for name in order[:k]:
            g[position[name]] = 0.0
        return g

    predicted_cache: dict[int, dict] = {0: full}

    def predicted(k: int) -> dict:
        if k not in predicted_cache:
            predicted_cache[k] = measure([prefix_gates(k)], picked)[0].figures()
        return predicted_cache[k]

    k = _shortest_prefix(lambda m: predicted(m)["cosine"] >= settings.target, len(order))
    rec = _verify(model, fp_model, order, k, samples, picked, refs, settings.target, device,
                  list(ignored_scope), predicted_cache)
    compiled_models = 2 + rec.verified_models
    inferences += rec.verified_models * len(picked)
    analysis = Analysis(samples=len(picked), groups=len(groups), time_s=time.perf_counter() - t0,
                        plain_time_s=plain_time_s, target=settings.target, rows=rows, fully_quantized=full,
                        recommendation=rec, compiled_models=compiled_models, inferences=inferences)
    _log_recommendation(analysis)
    return analysis


def _spread(indices: list[int], n: int) -> list[int]:
    """``n`` indices spread evenly over ``indices``."""
    if len(indices) <= n:
        return list(indices)
    step = len(indices) / n
    return [indices[int(k * step)] for k in range(n)]


def _shortest_prefix(ok, total: int) -> int:
    """The smallest ``k`` in ``0..total`` with ``ok(k)`` (assumed mostly monotone): exponential,
    then binary search; ``total`` when none is."""
    if ok(0):
        return 0
    lo, hi = 0, 1
    while hi < total and not ok(hi):
        lo, hi = hi, min(total, hi * 2)
    if hi >= total and not ok(total):
        return total
    while hi - lo > 1:  # ok(hi), not ok(lo)
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _verify(model: ov.Model, fp_model: ov.Model, order: list[str], k: int, samples: dict, picked: list[int],
            refs: dict, target: float, device: str, ignored: list[str], predicted_cache: dict) -> Recommendation:
    """The real quantized model with the first ``k`` groups of ``order`` reverted, measured; while it
    misses the target, the next group is added (at most :data:`MAX_VERIFICATIONS` models)."""
    fp_ops = {op.get_friendly_name(): op for op in fp_model.get_ops()}
    cache: dict = {}
    verified = 0
    figures = predicted_cache.get(k, predicted_cache[0])
    while True:
        keep = order[:k]
        if not keep:  # the quantized model itself: measured on the switchable model with every gate on
            figures = predicted_cache[0]
        else:
            candidate = model.clone()
            for g in keep:
                revert_group(candidate, g, fp_ops, lambda o: is_constant_subgraph(o, cache))
            compiled = _compile_f32(candidate, device)
            verified += 1
            stats = _Stats.new(len(compiled.outputs))
            _run(compiled, [(i, samples[i]) for i in picked], lambda i, ys: stats.add(ys, refs[i]))
            figures = stats.figures()
        met = figures["cosine"] >= target
        if met or k >= len(order) or verified >= MAX_VERIFICATIONS:
            break
        k += 1
    scope = list(ignored) + [g for g in keep if g not in ignored]
    return Recommendation(keep_float=list(keep), ignored_scope=scope, predicted=figures, target_met=met,
                          verified_models=verified)


def _log_recommendation(analysis: Analysis) -> None:
    rec = analysis.recommendation
    if not rec.keep_float:
        log.info("Recommendation: the fully quantized model already reaches output cosine %.5f >= %g on %d "
                 "sample(s); nothing to keep in floating point", rec.predicted["cosine"], analysis.target,
                 analysis.samples)
        return
    snippet = json.dumps({"ignored": {"scope": rec.ignored_scope}})
    log.log(logging.INFO if rec.target_met else logging.WARNING,
            "Recommendation: keep %d of %d layer group(s) in floating point for output cosine %.5f (SQNR %.2f dB) "
            "%s target %g on %d calibration sample(s); add to the algorithm's params: %s",
            len(rec.keep_float), analysis.groups, rec.predicted["cosine"], rec.predicted["sqnr_db"],
            ">=" if rec.target_met else "< (not reached)", analysis.target, analysis.samples, snippet)


def recommended_config(raw: dict, analysis: dict) -> dict:
    """The run's config with the recommendation: every quantization algorithm's
    ``params.ignored.scope`` set to the recommended scope (the run's own plus the groups to keep
    in float); ``compression.analyze`` is dropped.

    :param raw: the run's config as used (``PotConfig.raw``, paths absolute).
    :param analysis: the ``analysis`` section (:meth:`Analysis.report`).
    :return: a new config dict (``raw`` is not modified).
    """
    cfg = copy.deepcopy(raw)
    comp = cfg.setdefault("compression", {})
    comp.pop("analyze", None)
    scope = list(analysis["recommendation"]["ignored_scope"])
    for algo in comp.get("algorithms", []):
        if algo.get("name") in ("DefaultQuantization", "MinMaxQuantization", "AccuracyAwareQuantization"):
            ignored = algo.setdefault("params", {}).setdefault("ignored", {})
            ignored["scope"] = list(dict.fromkeys(list(ignored.get("scope", [])) + scope))
    return cfg


__all__ = ["AnalysisSettings", "Analysis", "Recommendation", "analyze", "recommended_config", "switchable_model",
           "DEFAULT_TARGET_COSINE"]
