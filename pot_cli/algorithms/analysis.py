"""Per-layer sensitivity analysis without labels (``pot ... --analyze [TARGET]``) and the
recommendation that follows from it: which quantized layer groups to keep in floating point.

After quantization, on a few calibration samples, for every quantized *layer group* (the
grouping of AccuracyAwareQuantization, :func:`pot_cli.algorithms.accuracy_aware.group_ops`: a
weighted op or residual Add with the FakeQuantize ops on its inputs, its INT8 weights and its
corrected bias), the model output is compared with the FP32 model's

* when **only that group is quantized** (every other group in floating point), and
* when **only that group is kept in floating point** (every other group quantized),

as SQNR (dB) and cosine similarity. Groups are ranked most harmful first by the lowest output
cosine (then SQNR) with that group **alone quantized**: on one or two samples that ranks the
groups as many samples do, while the gain of keeping one group alone in float is a small
difference of two noisy figures (mobilenet_v2: the 8-sample top group was 5th by "alone
quantized" on 1 sample, 45th by "alone in float"; ``docs/analysis.md``).

Cost: every variant runs on **one** compiled model. The quantized model is cloned and each group
is reverted with AccuracyAwareQuantization's own :func:`~pot_cli.algorithms.accuracy_aware.revert_group`,
except that each edit of a group's op becomes a float twin of that op (its float inputs and
weights), switched after both by ``gate[k]`` (``fp + gate[k] * (quantized - fp)``), and an edit of
another op (a corrected bias) a switch on that input; ``gate`` is an extra f32 input of shape
``[groups]`` holding 0 or 1. The quantized op keeps its FakeQuantize inputs and INT8 weights, so
the CPU plugin runs it in INT8 as in the real model. A variant is one inference per sample with
another gate vector; the reference (every gate 0) is the float model. The time budget
(:data:`BUDGET_SHARE` of the run's time before the analysis, at least :data:`BUDGET_MIN_S`) sets
the number of samples first (at least :data:`MIN_SAMPLES`, at most :data:`MAX_SAMPLES`), every
group's "only quantized" variant included; the "only in float" variants are then measured for as
many of the most harmful groups as still fit (at least :data:`MIN_FLOAT_VARIANTS`; the others'
``only_float`` is ``null``). The log says ``groups x samples`` and the inference count before it
starts.

Metrics, per model output ``o`` over the analysed samples (FP32 output ``r``, variant ``y``):
``SQNR_o = 10 log10(sum r^2 / sum (y - r)^2)`` and ``cos_o`` = the mean over samples of
``<y, r> / (|y| |r|)``; a variant's figure is the minimum over the outputs (the worst output).

With annotated data (the accuracy_checker engine, or an ``IEEngine`` with a ``Metric``), the
metric too: of the fully quantized model and with each of the most harmful groups alone in float
(``rows[k]["metrics"]``, as many as the budget allows, at least the first), on up to
:data:`METRIC_SAMPLES` evaluation samples, on the same switchable model.

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
from pot_cli.errors import EngineError, PotError
from pot_cli.statistics.collector import fake_quantize_in_float

log = logging.getLogger("pot")

#: the output cosine against FP32 the recommendation aims at when no target is given
DEFAULT_TARGET_COSINE = 0.99
#: at most / at least this many calibration samples are analysed
MAX_SAMPLES = 8
MIN_SAMPLES = 1
#: the analysis' time budget: this share of the run's time before it (at least BUDGET_MIN_S)
BUDGET_SHARE = 1.5
BUDGET_MIN_S = 2.0
#: "only this group in float" variants measured at least (the most harmful groups)
MIN_FLOAT_VARIANTS = 4
#: evaluation samples the per-group metric runs on at most (annotated data only)
METRIC_SAMPLES = 64
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

    def cosines(self) -> np.ndarray:
        """The mean cosine of each output, shape ``[outputs]``."""
        return self.cos / max(self.n, 1)

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
    samples: int = 0


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
    time_split_s: dict = field(default_factory=dict)
    fully_quantized_metrics: dict | None = None

    def report(self) -> dict:
        """The ``analysis`` section (the issue-16 data contract)."""
        rec = self.recommendation
        return {"samples": self.samples, "groups": self.groups, "time_s": round(self.time_s, 3),
                "plain_time_s": None if self.plain_time_s is None else round(self.plain_time_s, 3),
                "target": {"cosine": self.target},
                "rows": self.rows,
                "recommendation": {"keep_float": list(rec.keep_float), "ignored_scope": list(rec.ignored_scope),
                                   "predicted": dict(rec.predicted), "verified_samples": rec.samples,
                                   "config": rec.config},
                "fully_quantized": dict(self.fully_quantized), "target_met": rec.target_met,
                "fully_quantized_metrics": self.fully_quantized_metrics,
                "compiled_models": self.compiled_models, "inferences": self.inferences,
                "time_split_s": dict(self.time_split_s)}


def switchable_model(model: ov.Model, fp_model: ov.Model, groups: list[str]) -> ov.Model:
    """A clone of the quantized ``model`` in which each group can be quantized or float per inference.

    Each of AccuracyAwareQuantization's revert edits of group ``k``
    (:func:`~pot_cli.algorithms.accuracy_aware.revert_group`) of the group's op feeds a float twin
    of the op, switched after both (:func:`_float_twin`); an edit of another op (a corrected bias)
    becomes a switch ``fp + gate[k] * (quantized - fp)`` on that input. The new f32 input :data:`GATE_INPUT`, shape
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
    by_name = {op.get_friendly_name(): op for op in sw.get_ops()}
    for k, g in enumerate(groups):
        gate = ops.gather(gates, ops.constant(np.int64(k)), axis).output(0)
        node = by_name[g]
        twin_inputs: dict[int, ov.Output] = {}

        def connect(inp: ov.Input, fp_src: ov.Output, gate=gate, node=node, twin_inputs=twin_inputs) -> None:
            if inp.get_node().get_instance_id() == node.get_instance_id():
                twin_inputs[inp.get_index()] = fp_src  # the op's own inputs: a float twin of the op (below)
                return
            inp.replace_source_output(_switch(gate, inp.get_source_output(), fp_src))

        revert_group(sw, g, fp_ops, lambda o: is_constant_subgraph(o, cache), connect, by_name)
        if twin_inputs:
            _float_twin(node, twin_inputs, gate)
    sw.validate_nodes_and_infer_types()
    return sw


def _float_twin(node: ov.Node, fp_inputs: dict[int, ov.Output], gate: ov.Output) -> None:
    """``node``'s consumers read ``switch(gate, node, twin)``, ``twin`` being ``node`` with the
    float sources ``fp_inputs`` (port -> source: the activation before its FakeQuantize, the
    float weights). ``node`` keeps its FakeQuantize inputs and INT8 weights, so the plugin still
    runs it in INT8; weights behind a switch would be re-laid out on every inference (10x slower
    than the model). Cost: the op twice. An op the factory cannot rebuild gets switches on its
    inputs instead."""
    from openvino.utils.node_factory import NodeFactory

    inputs = [fp_inputs.get(p, node.input_value(p)) for p in range(node.get_input_size())]
    twin = None
    if node.get_output_size() == 1:
        try:
            twin = NodeFactory("opset13").create(node.get_type_name(), inputs, node.get_attributes())
        except Exception:  # noqa: BLE001 - an op the factory cannot rebuild: switch its weights instead
            twin = None
    if twin is None:
        for port, src in fp_inputs.items():
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
    rank = quantized.get_partial_shape().rank
    if rank.is_static and rank.get_length() > 0:  # a 0-d operand kept the CPU plugin's eltwise in plain layout
        g = ops.reshape(g, ops.constant(np.ones(rank.get_length(), np.int64)), False).output(0)
    return ops.add(fp, ops.multiply(g, ops.subtract(quantized, fp))).output(0)


_CORE: ov.Core | None = None


def _compile_f32(model: ov.Model, device: str) -> ov.CompiledModel:
    """Compile in f32 on a Core of the analysis's own: the switchable model shares constant
    buffers with models the run's Core compiled (the speed check's), and a plugin may cache
    per-buffer state (packed weights) across the models of one Core. (Wrong figures once blamed
    on that sharing, output cosine 0.5 on mobilenet_v2, look like the lost additions of
    :func:`_run`'s former callbacks; not re-checked, so the separate Core stays as a cheap
    isolation.)"""
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
    """Run ``jobs`` (``(key, inputs)``) on a few requests in turn; ``on_result(key, [outputs])`` per
    job, in this thread, after the request finished and before it is started again.

    (``AsyncInferQueue`` callbacks of concurrent requests, adding one variant's samples to the
    same running sums without a lock, lost additions: mobilenet_v2's fully quantized output
    cosine read 0.25-0.42 over 8 samples instead of 0.99. Read here, in one thread, nothing is
    shared with the plugin's threads.)
    """
    n = max(1, min(4, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))))
    requests = [compiled.create_infer_request() for _ in range(n)]
    idle = object()  # a request with no job (job keys may be anything, None included)
    pending: list[Any] = [idle] * n
    outputs = range(len(compiled.outputs))

    def finish(r: int) -> None:
        requests[r].wait()
        on_result(pending[r], [np.array(requests[r].get_output_tensor(k).data, copy=True) for k in outputs])
        pending[r] = idle

    try:
        for j, (key, inputs) in enumerate(jobs):
            r = j % n
            if pending[r] is not idle:
                finish(r)
            requests[r].start_async(inputs)
            pending[r] = key
        for r in range(n):
            if pending[r] is not idle:
                finish(r)
    finally:  # an error or Ctrl-C: let started requests finish before they are destroyed
        for r in range(n):
            if pending[r] is not idle:
                with contextlib.suppress(Exception):
                    requests[r].wait()


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
    :param settings: target, most samples and time budget.
    :param ignored_scope: the run's ignored scope (the recommendation extends it).
    :param plain_time_s: the run's time before the analysis (s): sets the time budget; ``None``:
        no budget (``settings.samples`` samples, every group's "only float" variant).
    :return: the analysis; ``report()`` gives the report section.
    :raises ModelError: the device cannot compile the switchable model.
    """
    t0 = time.perf_counter()
    groups = list(group_ops(model, result))
    types = {op.get_friendly_name(): op.get_type_name() for op in fp_model.get_ops()}
    device = getattr(engine, "device", "CPU") or "CPU"
    picked = _spread(indices, settings.samples)
    # copies: an engine may hand out the same buffers again for later samples
    samples = {i: {k: np.array(v, copy=True) for k, v in sample.items()} for i, sample in engine.iter_samples(picked)}
    sw = switchable_model(model, fp_model, groups)
    # FakeQuantize as the plugin's own f32 op; with a dynamic input shape as plain f32 arithmetic,
    # as the statistics collector does (pot_cli.statistics.collector)
    dynamic = any(p.get_partial_shape().is_dynamic for p in sw.get_parameters())
    with fake_quantize_in_float(sw) if dynamic else contextlib.nullcontext():
        compiled = _compile_f32(sw, device)
    compile_s = time.perf_counter() - t0
    split = {"compile_s": compile_s}
    n_out = len(compiled.outputs)
    ones, zeros = np.ones(len(groups), np.float32), np.zeros(len(groups), np.float32)
    refs: dict[int, list[np.ndarray]] = {}
    inferences = 0

    def reference(which: list[int]) -> None:  # every gate off: the float model
        nonlocal inferences
        jobs = [(i, {**samples[i], GATE_INPUT: zeros}) for i in which if i not in refs]
        _run(compiled, jobs, lambda i, ys: refs.__setitem__(i, [np.asarray(y, np.float64).ravel() for y in ys]))
        inferences += len(jobs)

    def measure(gate_sets: list[np.ndarray], which: list[int]) -> list[_Stats]:
        nonlocal inferences
        stats = [_Stats.new(n_out) for _ in gate_sets]
        jobs = [((v, i), {**samples[i], GATE_INPUT: g}) for i in which for v, g in enumerate(gate_sets)]
        _run(compiled, jobs, lambda key, ys: stats[key[0]].add(ys, refs[key[1]]))
        inferences += len(jobs)
        return stats

    reference(picked[:1])  # also the warm-up
    per_inference, timed = 0.0, 0
    while timed < 16 and (timed < 2 or per_inference * timed < 0.1):  # 2 inferences, more on a fast model
        t = time.perf_counter()
        measure([ones] * 2, picked[:1])
        per_inference = (per_inference * timed + time.perf_counter() - t) / (timed + 2)
        timed += 2
    per_inference = max(per_inference, 1e-5)
    plan = _plan(len(groups), len(picked), per_inference, compile_s,
                 None if plain_time_s is None else max(BUDGET_MIN_S, settings.budget_share * plain_time_s)
                 - (time.perf_counter() - t0))
    picked = picked[:plan.samples]
    deadline = None if plan.budget is None else time.perf_counter() + plan.budget
    log.info("Sensitivity analysis: %d layer group(s) x %d calibration sample(s): %d 'only this group quantized' "
             "and %d 'only this group in float' variant(s), %d inferences on one switchable model (about %.1f s%s)",
             len(groups), plan.samples, len(groups), plan.float_variants, plan.inferences, plan.seconds,
             f"; budget {plan.budget:.1f} s" if plan.budget is not None else "")
    t = time.perf_counter()
    reference(picked)
    full_stats = measure([ones], picked)[0]
    full = full_stats.figures()
    worst = int(np.argmin(full_stats.cosines()))  # the output the fully quantized model hurts most
    only_q = measure([_one_hot(len(groups), k) for k in range(len(groups))], picked)
    rows = [{"group": g, "type": types.get(g, ""), "only_quantized": only_q[k].figures(), "only_float": None,
             "metrics": None} for k, g in enumerate(groups)]
    # most harmful first: the lowest cosine of that worst output (then the lowest of any output,
    # then SQNR) with that group alone quantized. On few samples this ranks more stably than the
    # small gain of keeping one group alone in float (a difference of two noisy figures); on a
    # model with several outputs, a group that hurts another output does not lift the worst one
    # (mp_face_detection_short; docs/analysis.md)
    harm = {r["group"]: (float(q.cosines()[worst]), r["only_quantized"]["cosine"], r["only_quantized"]["sqnr_db"],
                         r["group"]) for r, q in zip(rows, only_q)}
    rows.sort(key=lambda r: harm[r["group"]])
    position = {g: k for k, g in enumerate(groups)}
    shortlist = rows[:plan.float_variants]
    only_f = measure([ones - _one_hot(len(groups), position[r["group"]]) for r in shortlist], picked)
    for r, s in zip(shortlist, only_f):
        r["only_float"] = s.figures()
    split["variants_s"] = time.perf_counter() - t
    t = time.perf_counter()
    later = (_search_inferences(len(groups)) + len(samples)) * len(picked) * per_inference + compile_s / 2
    full_metrics = _group_metrics(engine, compiled, shortlist, position, ones,
                                  None if deadline is None else deadline - later)
    if full_metrics is not None:
        split["metrics_s"] = time.perf_counter() - t
    log.info("Fully quantized: output cosine %.5f, SQNR %.2f dB against FP32; most harmful group(s): %s",
             full["cosine"], full["sqnr_db"], ", ".join(
                 f"{r['group']} ({r['type']}, alone quantized: cosine {r['only_quantized']['cosine']:.5f})"
                 for r in rows[:3]))

    order = [r["group"] for r in rows]

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

    t = time.perf_counter()
    k = _shortest_prefix(lambda m: predicted(m)["cosine"] >= settings.target, len(order))
    split["search_s"] = time.perf_counter() - t
    t = time.perf_counter()
    check = list(samples)  # the real model is fast: verified on every loaded sample, not only the analysed ones
    reference(check)
    rec = _verify(model, fp_model, order, k, samples, check, refs, settings.target, device, list(ignored_scope))
    inferences += rec.verified_models * len(check)
    split["verification_s"] = time.perf_counter() - t
    log.debug("Sensitivity analysis times: %s", ", ".join(f"{k.removesuffix('_s')} {v:.2f} s" for k, v in split.items()))
    analysis = Analysis(samples=len(picked), groups=len(groups), time_s=time.perf_counter() - t0,
                        plain_time_s=plain_time_s, target=settings.target, rows=rows, fully_quantized=full,
                        recommendation=rec, compiled_models=1 + rec.verified_models, inferences=inferences,
                        time_split_s={k: round(v, 3) for k, v in split.items()},
                        fully_quantized_metrics=full_metrics)
    _log_recommendation(analysis)
    return analysis


def _evaluator_of(engine):
    """The engine's evaluator when it has a metric (accuracy_checker engine, or an ``IEEngine``
    with a ``Metric``); else ``None``."""
    try:
        evaluator = engine.evaluator()
    except (PotError, AttributeError):
        return None
    return evaluator if evaluator.metrics else None


def _group_metrics(engine, compiled: ov.CompiledModel, shortlist: list[dict], position: dict[str, int],
                   ones: np.ndarray, deadline: float | None) -> dict[str, float] | None:
    """With annotated data, the metric of the fully quantized model and, in ``row["metrics"]``,
    with each of the ``shortlist``'s groups alone in float (most harmful first, while ``deadline``
    allows; at least the first), on up to :data:`METRIC_SAMPLES` evaluation samples spread over
    the dataset, on the switchable model. ``None`` without an evaluator.

    :return: the fully quantized model's metrics (name -> value, the metric's own units).
    """
    evaluator = _evaluator_of(engine)
    if evaluator is None or not shortlist:
        return None
    indices = _spread(list(range(len(evaluator.dataset))), METRIC_SAMPLES)

    def metric(gates: np.ndarray) -> dict[str, float]:
        outputs = evaluator.infer(compiled, indices, extra_inputs={GATE_INPUT: gates})
        return {k: round(float(v), 6) for k, v in evaluator.score(outputs, indices, per_sample=False).metrics.items()}

    t = time.perf_counter()
    try:
        full = metric(ones)
    except EngineError as e:  # an evaluation set without annotations (annotation-free AccuracyAware data)
        log.debug("analysis: no per-group metric: %s", e)
        return None
    per_variant = time.perf_counter() - t
    for k, row in enumerate(shortlist):
        if k and deadline is not None and time.perf_counter() + per_variant > deadline:
            break
        gates = ones.copy()
        gates[position[row["group"]]] = 0.0
        row["metrics"] = metric(gates)
    measured = sum(1 for r in shortlist if r["metrics"] is not None)
    log.info("Metric on %d evaluation sample(s): fully quantized %s; measured with each of the %d most harmful "
             "group(s) alone in float (report.json, report.html), the first: %s", len(indices), full, measured,
             ", ".join(f"{r['group']} {r['metrics']}" for r in shortlist[:min(measured, 3)]))
    return full


def _one_hot(n: int, k: int) -> np.ndarray:
    g = np.zeros(n, np.float32)
    g[k] = 1.0
    return g


@dataclass(frozen=True)
class _Plan:
    """How much of the analysis fits the time budget."""

    samples: int
    float_variants: int
    inferences: int
    seconds: float
    budget: float | None


def _search_inferences(groups: int) -> int:
    """Inferences per sample of :func:`_shortest_prefix` over ``groups`` at most (exponential,
    then binary search)."""
    return 2 * math.ceil(math.log2(groups + 1)) + 1


def _plan(groups: int, max_samples: int, per_inference_s: float, compile_s: float, budget_s: float | None) -> _Plan:
    """The most samples (at least :data:`MIN_SAMPLES`) for which every group's "only quantized"
    variant, the prefix search and the verification fit ``budget_s`` (seconds left), then as many
    "only float" variants (the most harmful groups first, at least :data:`MIN_FLOAT_VARIANTS`)
    as still fit. ``budget_s`` ``None``: ``max_samples`` and every group.

    :param per_inference_s: seconds per inference of the switchable model (measured).
    :param compile_s: seconds the switchable model took to compile (a verification compiles the
        quantized model, estimated at half of it, and needs the float reference of every loaded
        sample).
    """
    fixed = 1 + groups + _search_inferences(groups)  # full model, only-quantized, search
    if budget_s is None:
        n, floats = max_samples, groups
    else:  # a verification: a compilation and, on every loaded sample, the float reference
        verify_s = compile_s / 2 + max_samples * per_inference_s
        per_sample = (fixed + min(groups, MIN_FLOAT_VARIANTS)) * per_inference_s
        n = max(MIN_SAMPLES, min(max_samples, int((budget_s - verify_s) / per_sample)))
        left = budget_s - verify_s - n * fixed * per_inference_s
        floats = max(min(groups, MIN_FLOAT_VARIANTS), min(groups, int(left / (n * per_inference_s))))
    inferences = n * (fixed + floats)
    return _Plan(n, floats, inferences, inferences * per_inference_s, budget_s)


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


def _verify(model: ov.Model, fp_model: ov.Model, order: list[str], k: int, samples: dict, check: list[int],
            refs: dict, target: float, device: str, ignored: list[str]) -> Recommendation:
    """The real quantized model with the first ``k`` groups of ``order`` reverted, measured on the
    ``check`` samples (every loaded calibration sample: more than the analysed ones when the
    budget cut those, as the recommendation must hold beyond them); while it misses the target,
    the next groups of ``order`` are added (a quarter more each time, at least one; at most
    :data:`MAX_VERIFICATIONS` models)."""
    fp_ops = {op.get_friendly_name(): op for op in fp_model.get_ops()}
    cache: dict = {}
    verified = 0
    while True:
        keep = order[:k]
        candidate = model.clone()
        by_name = {op.get_friendly_name(): op for op in candidate.get_ops()}
        for g in keep:
            revert_group(candidate, g, fp_ops, lambda o: is_constant_subgraph(o, cache), ops_by_name=by_name)
        candidate.validate_nodes_and_infer_types()
        compiled = _compile_f32(candidate, device)
        verified += 1
        stats = _Stats.new(len(compiled.outputs))
        _run(compiled, [(i, samples[i]) for i in check], lambda i, ys: stats.add(ys, refs[i]))
        figures = stats.figures()
        met = figures["cosine"] >= target
        if met or k >= len(order) or verified >= MAX_VERIFICATIONS:
            break
        k = min(len(order), k + max(1, math.ceil(k / 4)))
    scope = list(ignored) + [g for g in keep if g not in ignored]
    return Recommendation(keep_float=list(keep), ignored_scope=scope, predicted=figures, target_met=met,
                          verified_models=verified, samples=len(check))


def _log_recommendation(analysis: Analysis) -> None:
    rec = analysis.recommendation
    if not rec.keep_float:
        log.info("Recommendation: the fully quantized model already reaches output cosine %.5f >= %g on %d "
                 "calibration sample(s); nothing to keep in floating point", rec.predicted["cosine"], analysis.target,
                 rec.samples)
        return
    snippet = json.dumps({"ignored": {"scope": rec.ignored_scope}})
    log.log(logging.INFO if rec.target_met else logging.WARNING,
            "Recommendation: keep %d of %d layer group(s) in floating point for output cosine %.5f (SQNR %.2f dB) "
            "%s target %g on %d calibration sample(s); add to the algorithm's params: %s",
            len(rec.keep_float), analysis.groups, rec.predicted["cosine"], rec.predicted["sqnr_db"],
            ">=" if rec.target_met else "< (not reached)", analysis.target, rec.samples, snippet)


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
