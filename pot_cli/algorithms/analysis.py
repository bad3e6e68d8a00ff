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
another gate vector; the reference (every gate 0) is the float model. The comparison with the
reference runs in the plugin too (:func:`add_comparison`): a variant returns two sums per output.
The time budget (:data:`BUDGET_SHARE` of the run's time before the analysis, at least
:data:`BUDGET_MIN_S`) sets the number of samples first (at least :data:`MIN_SAMPLES`, at most
:data:`MAX_SAMPLES`), every group's "only quantized" variant included; the "only in float"
variants are then measured for as many of the most harmful groups as still fit (at least
:data:`MIN_FLOAT_VARIANTS`; the others' ``only_float`` is ``null``). When one sample with every
group does not fit, a coarse pass first (:func:`_plan`): blocks of consecutive groups alone
quantized, then group by group only in the most harmful blocks (``screening`` in the report; the
other groups' ``only_quantized`` is ``null`` and they rank by their share of their block's harm).
The log says ``groups x samples`` and the inference count before it starts.

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
model with those groups reverted, on up to :data:`MAX_VERIFY_SAMPLES` calibration samples (as
many as :data:`VERIFY_SHARE` of the budget allows, at least the analysed ones; one more
compilation; if it falls short the next groups of the ranking are added, a few times at most).
Those groups are the ``ignored.scope`` to add; see :func:`recommended_config` for the config
file (the CLI writes ``<model_name>_recommended.json`` beside the model).

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
#: the analysis' time budget: this share of the run's time before it (at least BUDGET_MIN_S);
#: with what the budget does not cover (the report's chart, a second verification) the whole
#: ``--analyze`` run stays under 3x the plain one (at 1.5, minilm_l6_v2 took 3.1x once)
BUDGET_SHARE = 1.2
BUDGET_MIN_S = 2.0
#: "only this group in float" variants measured at least (the most harmful groups)
MIN_FLOAT_VARIANTS = 4
#: the coarse pass (blocks of groups) applies from this many groups on, and refines at least this
#: share of the blocks group by group
MIN_BLOCKED_GROUPS = 16
MIN_REFINED_SHARE = 1 / 3
#: the recommendation is verified on this many calibration samples at most (at least the analysed
#: ones), as many as this share of the budget allows: on 8 samples a noisy output
#: (mp_face_detection_short) met the target there and missed it on others
MAX_VERIFY_SAMPLES = 32
VERIFY_SHARE = 0.25
#: evaluation samples the per-group metric runs on at most (annotated data only)
METRIC_SAMPLES = 64
#: verifications on the real model after the predicted prefix (each adds the next group)
MAX_VERIFICATIONS = 4
#: name of the gate input of the switchable model
GATE_INPUT = "pot_analysis_gates"
#: names of the reference inputs and the comparison outputs of the switchable model (per output k)
REFERENCE_INPUT = "pot_analysis_reference_{}"
SUMS_OUTPUT = "pot_analysis_sums_{}"


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

    def add(self, err2: list[float], y2: list[float], ref2: list[float]) -> None:
        """One sample: per output, ``sum (y - r)^2``, ``sum y^2`` and ``sum r^2``. The cosine is
        ``1 - (|y - r|^2 - (|y| - |r|)^2) / (2 |y| |r|)``, an identity that keeps the small
        difference ``1 - cos`` exact where ``<y, r> / (|y| |r|)`` would cancel."""
        for k, (e2, yy, rr) in enumerate(zip(err2, y2, ref2)):
            e2, yy, rr = max(float(e2), 0.0), max(float(yy), 0.0), max(float(rr), 0.0)
            self.err2[k] += e2
            self.ref2[k] += rr
            ny, nr = math.sqrt(yy), math.sqrt(rr)
            if ny * nr > 0:
                self.cos[k] += min(1.0, max(-1.0, 1.0 - (e2 - (ny - nr) ** 2) / (2.0 * ny * nr)))
            else:
                self.cos[k] += 1.0 if e2 == 0 else 0.0
        self.n += 1

    def add_outputs(self, ys: list[np.ndarray], refs: list[np.ndarray]) -> None:
        """One sample from whole outputs (the real model's, compared here in f64)."""
        ys = [np.asarray(y, np.float64).ravel() for y in ys]
        refs = [np.asarray(r, np.float64).ravel() for r in refs]
        self.add([float((y - r) @ (y - r)) for y, r in zip(ys, refs)], [float(y @ y) for y in ys],
                 [float(r @ r) for r in refs])

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
    screening: dict | None = None
    ranked_by_output: str | None = None

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
                "screening": self.screening,
                "ranked_by_output": self.ranked_by_output,
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


def add_comparison(sw: ov.Model) -> int:
    """Give ``sw`` the comparison against the float reference, computed by the plugin: per output
    ``k`` (``y``), an f32 input :data:`REFERENCE_INPUT` (``r``) of the output's shape and an f32
    output :data:`SUMS_OUTPUT` of shape ``[2]``: ``[sum (y - r)^2, sum y^2]`` (``y`` converted to
    f32). A variant then returns two numbers per output instead of the whole output to copy and
    compare in Python, which on the 2-core CPU cost a third of the inference (ppocrv4_det: 20 ms
    on top of 65 ms per variant). Runs that only need the outputs feed :func:`_placeholders`.

    :return: the number of the model's own outputs (the first outputs; the sums follow).
    """
    own = [r.input_value(0) for r in sw.get_results()]  # what each Result reads, in output order
    flat = ops.constant(np.array([-1], np.int64))
    axis = ops.constant(np.array([0], np.int64))
    params, results = [], []
    for k, out in enumerate(own):
        ref = ops.parameter(out.get_partial_shape(), ov.Type.f32, name=REFERENCE_INPUT.format(k))
        ref.output(0).set_names({REFERENCE_INPUT.format(k)})
        y = out if out.get_element_type() == ov.Type.f32 else ops.convert(out, ov.Type.f32).output(0)
        d = ops.reshape(ops.subtract(y, ref), flat, False)  # a placeholder broadcasts
        y = ops.reshape(y, flat, False)
        sums = ops.concat([ops.reduce_sum(ops.multiply(d, d), axis, True),
                           ops.reduce_sum(ops.multiply(y, y), axis, True)], 0)
        sums.output(0).set_names({SUMS_OUTPUT.format(k)})
        params.append(ref)
        results.append(ops.result(sums))
    sw.add_parameters(params)
    sw.add_results(results)
    return len(own)


def _output_name(compiled: ov.CompiledModel, k: int) -> str:
    names = sorted(compiled.outputs[k].get_names())
    return names[0] if names else f"output {k}"


def _placeholders(model: ov.Model | ov.CompiledModel, outputs: int) -> dict[str, np.ndarray]:
    """Zero reference inputs for runs that read only the outputs: the static dimensions as they
    are, a dynamic one 1 (broadcast), a dynamic rank a scalar."""
    feeds = {}
    for k in range(outputs):
        shape = model.input(REFERENCE_INPUT.format(k)).get_partial_shape()
        dims = () if shape.rank.is_dynamic else tuple(d.get_length() if d.is_static else 1 for d in shape)
        feeds[REFERENCE_INPUT.format(k)] = np.zeros(dims, np.float32)
    return feeds


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


def _load(engine, indices: list[int]) -> dict[int, dict[str, np.ndarray]]:
    """The model-ready samples ``indices`` of ``engine``, copied: an engine may hand out the same
    buffers again for later samples (every FP32 reference once came from the last one)."""
    return {i: {k: np.array(v, copy=True) for k, v in sample.items()} for i, sample in engine.iter_samples(indices)}


def _compare(compiled: ov.CompiledModel, samples: dict, which: list[int], refs: dict) -> "_Stats":
    """``compiled``'s outputs on the samples ``which`` against the float ``refs`` (whole
    outputs, compared in Python: the real models have no comparison outputs)."""
    stats = _Stats.new(len(compiled.outputs))
    _run(compiled, [(i, samples[i]) for i in which], lambda i, ys: stats.add_outputs(ys, refs[i]))
    return stats


def _run(compiled: ov.CompiledModel, jobs: list[tuple[Any, dict]], on_result, outputs: range | None = None) -> None:
    """Run ``jobs`` (``(key, inputs)``) on a few requests in turn; ``on_result(key, [outputs])`` per
    job (copies of the outputs of index in ``outputs``, default all), in this thread, after the
    request finished and before it is started again.

    (``AsyncInferQueue`` callbacks of concurrent requests, adding one variant's samples to the
    same running sums without a lock, lost additions: mobilenet_v2's fully quantized output
    cosine read 0.25-0.42 over 8 samples instead of 0.99. Read here, in one thread, nothing is
    shared with the plugin's threads.)
    """
    n = max(1, min(4, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))))
    requests = [compiled.create_infer_request() for _ in range(n)]
    idle = object()  # a request with no job (job keys may be anything, None included)
    pending: list[Any] = [idle] * n
    outputs = range(len(compiled.outputs)) if outputs is None else outputs

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
    samples = _load(engine, picked)
    sw = switchable_model(model, fp_model, groups)
    # FakeQuantize as the plugin's own f32 op; with a dynamic input shape as plain f32 arithmetic,
    # as the statistics collector does (pot_cli.statistics.collector)
    dynamic = any(p.get_partial_shape().is_dynamic for p in sw.get_parameters())
    n_out = add_comparison(sw)
    with fake_quantize_in_float(sw) if dynamic else contextlib.nullcontext():
        compiled = _compile_f32(sw, device)
    compile_s = time.perf_counter() - t0
    split = {"compile_s": compile_s}
    ones, zeros = np.ones(len(groups), np.float32), np.zeros(len(groups), np.float32)
    placeholders = _placeholders(compiled, n_out)
    refs: dict[int, list[np.ndarray]] = {}  # sample -> the float model's outputs (f32)
    ref_feeds: dict[int, dict[str, np.ndarray]] = {}
    ref2: dict[int, list[float]] = {}
    inferences = 0

    def keep_reference(i: int, ys: list[np.ndarray]) -> None:
        refs[i] = [np.asarray(y, np.float32) for y in ys]
        ref_feeds[i] = {REFERENCE_INPUT.format(k): y for k, y in enumerate(refs[i])}
        ref2[i] = [float(np.square(y.ravel(), dtype=np.float64).sum()) for y in refs[i]]

    def reference(which: list[int]) -> None:  # every gate off: the float model
        nonlocal inferences
        jobs = [(i, {**samples[i], **placeholders, GATE_INPUT: zeros}) for i in which if i not in refs]
        _run(compiled, jobs, keep_reference, range(n_out))
        inferences += len(jobs)

    def measure(gate_sets: list[np.ndarray], which: list[int]) -> list[_Stats]:
        nonlocal inferences
        stats = [_Stats.new(n_out) for _ in gate_sets]
        jobs = [((v, i), {**samples[i], **ref_feeds[i], GATE_INPUT: g}) for i in which for v, g in enumerate(gate_sets)]
        _run(compiled, jobs, lambda key, ys: stats[key[0]].add([y[0] for y in ys], [y[1] for y in ys],
                                                                ref2[key[1]]), range(n_out, 2 * n_out))
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
    more = [i for i in verification_indices(indices, len(samples), plan.verify_samples) if i not in samples]
    samples.update(_load(engine, more))
    deadline = None if plan.budget is None else time.perf_counter() + plan.budget
    if plan.blocks:
        alone = (f"{plan.blocks} blocks of consecutive groups alone quantized, then the groups of the {plan.refined} "
                 f"most harmful blocks one by one (the budget does not fit every group)")
    else:
        alone = f"{len(groups)} 'only this group quantized'"
    log.info("Sensitivity analysis: %d layer group(s) x %d calibration sample(s): %s and %d 'only this group in "
             "float' variant(s), %d inferences on one switchable model (about %.1f s of inference%s)",
             len(groups), plan.samples, alone, plan.float_variants, plan.inferences, plan.seconds,
             f"; {plan.budget:.1f} s left of the time budget, the verification on {plan.verify_samples} samples "
             "included" if plan.budget is not None else "")
    t = time.perf_counter()
    reference(picked)
    full_stats = measure([ones], picked)[0]
    full = full_stats.figures()
    worst = int(np.argmin(full_stats.cosines()))  # the output the fully quantized model hurts most
    screening = None
    measured = list(range(len(groups)))
    estimate: dict[int, float] = {}  # unmeasured group -> its share of its block's harm
    if plan.blocks:
        size = math.ceil(len(groups) / plan.blocks)
        blocks = [list(range(b, min(len(groups), b + size))) for b in range(0, len(groups), size)]
        block_stats = measure([sum(_one_hot(len(groups), k) for k in b) for b in blocks], picked)
        block_worst = [float(st.cosines()[worst]) for st in block_stats]
        by_harm = sorted(range(len(blocks)), key=lambda b: block_worst[b])
        refined = sorted(by_harm[:plan.refined])
        measured = [k for b in refined for k in blocks[b]]
        for b in by_harm[plan.refined:]:
            for k in blocks[b]:
                estimate[k] = 1.0 - (1.0 - block_worst[b]) / len(blocks[b])
        screening = {"blocks": [{"groups": [groups[k] for k in blk], "only_quantized": st.figures(),
                                 "refined": b in refined} for b, (blk, st) in enumerate(zip(blocks, block_stats))]}
    only_q = dict(zip(measured, measure([_one_hot(len(groups), k) for k in measured], picked)))
    rows = [{"group": g, "type": types.get(g, ""), "only_quantized": only_q[k].figures() if k in only_q else None,
             "only_float": None, "metrics": None} for k, g in enumerate(groups)]
    # most harmful first: the lowest cosine of that worst output (then the lowest of any output,
    # then SQNR) with that group alone quantized. On few samples this ranks more stably than the
    # small gain of keeping one group alone in float (a difference of two noisy figures); on a
    # model with several outputs, a group that hurts another output does not lift the worst one
    # (mp_face_detection_short; docs/analysis.md). A group not measured alone (coarse pass) ranks
    # by its share of its block's harm.
    harm = {r["group"]: (float(only_q[k].cosines()[worst]), r["only_quantized"]["cosine"],
                         r["only_quantized"]["sqnr_db"], r["group"]) if k in only_q
            else (estimate[k], estimate[k], math.inf, r["group"]) for k, r in enumerate(rows)}
    rows.sort(key=lambda r: harm[r["group"]])
    position = {g: k for k, g in enumerate(groups)}
    shortlist = rows[:plan.float_variants]
    only_f = measure([ones - _one_hot(len(groups), position[r["group"]]) for r in shortlist], picked)
    for r, s in zip(shortlist, only_f):
        r["only_float"] = s.figures()
    split["variants_s"] = time.perf_counter() - t
    t = time.perf_counter()
    later = (_search_inferences(len(groups)) + len(samples)) * len(picked) * per_inference + compile_s / 2
    full_metrics = _group_metrics(engine, compiled, shortlist, position, ones, placeholders,
                                  None if deadline is None else deadline - later)
    if full_metrics is not None:
        split["metrics_s"] = time.perf_counter() - t
    log.info("Fully quantized: output cosine %.5f, SQNR %.2f dB against FP32 on %d sample(s); most harmful "
             "group(s): %s", full["cosine"], full["sqnr_db"], len(picked), ", ".join(
                 f"{r['group']} ({r['type']}, alone quantized: cosine {r['only_quantized']['cosine']:.5f})"
                 for r in rows[:3] if r["only_quantized"]))

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
    check = list(samples)  # verified on every loaded sample (plan.verify_samples), not only the analysed ones
    reference(check)
    rec = _verify(model, fp_model, order, k, samples, check, refs, settings.target, device, list(ignored_scope))
    inferences += rec.verified_models * len(check)
    split["verification_s"] = time.perf_counter() - t
    log.debug("Sensitivity analysis times: %s", ", ".join(f"{k.removesuffix('_s')} {v:.2f} s" for k, v in split.items()))
    analysis = Analysis(samples=len(picked), groups=len(groups), time_s=time.perf_counter() - t0,
                        plain_time_s=plain_time_s, target=settings.target, rows=rows, fully_quantized=full,
                        recommendation=rec, compiled_models=1 + rec.verified_models, inferences=inferences,
                        time_split_s={k: round(v, 3) for k, v in split.items()},
                        fully_quantized_metrics=full_metrics, screening=screening,
                        ranked_by_output=_output_name(compiled, worst) if n_out > 1 else None)
    _log_recommendation(analysis)
    return analysis


def verification_indices(indices: list[int], first: int, total: int) -> list[int]:
    """The calibration samples the analysis verifies its recommendation on: ``first`` spread over
    ``indices`` (the analysed ones come first among them), then ``total - first`` more spread
    over the others. :func:`check_output` takes the same, so a ``pot -c <recommended>`` run
    measures its output on the samples the prediction was made on."""
    picked = _spread(indices, first)
    chosen = set(picked)
    return picked + _spread([i for i in indices if i not in chosen], total - len(picked))


def check_output(model: ov.Model, fp_model: ov.Model, engine, indices: list[int], samples: int = MAX_VERIFY_SAMPLES,
                 expected: dict | None = None, target: float | None = None) -> dict:
    """The output model against FP32 (``compression.output_check``; the config ``--analyze``
    recommends asks for it): both compiled in f32, run on ``samples`` calibration samples chosen
    as the analysis' verification chose them (:func:`verification_indices`), compared per output
    as the analysis does (cosine: the mean over samples; SQNR in dB; the worst output's).

    :param model: the quantized model; ``fp_model``: the float model it was quantized from.
    :param engine: an engine with model-ready samples (``iter_samples``).
    :param indices: the calibration subset.
    :param samples: how many calibration samples (at most ``len(indices)``).
    :param expected: what the analysis predicted (``{"cosine", "sqnr_db"}``), reported beside.
    :param target: the output cosine the analysis aimed at: ``target_met`` says whether this
        model reaches it.
    :return: the ``output_check`` report section: ``samples``, ``cosine``, ``sqnr_db``,
        ``expected``, ``target``, ``target_met``, ``time_s``.
    :raises ModelError: the device cannot compile either model.
    """
    t0 = time.perf_counter()
    device = getattr(engine, "device", "CPU") or "CPU"
    which = verification_indices(list(indices), min(MAX_SAMPLES, samples), samples)
    data = _load(engine, which)
    refs: dict = {}
    _run(_compile_f32(fp_model, device), [(i, data[i]) for i in which], refs.__setitem__)
    figures = _compare(_compile_f32(model, device), data, which, refs).figures()
    met = None if target is None else figures["cosine"] >= target
    section = {"samples": len(which), **figures, "expected": dict(expected) if expected else None,
               "target": target, "target_met": met, "time_s": round(time.perf_counter() - t0, 3)}
    log.info("Output against FP32 on %d calibration sample(s): cosine %.5f, SQNR %.2f dB%s%s", len(which),
             figures["cosine"], figures["sqnr_db"],
             f" (the analysis predicted cosine {expected['cosine']:.5f}, SQNR {expected['sqnr_db']:.2f} dB)"
             if expected and "cosine" in expected and "sqnr_db" in expected else "",
             "" if target is None else f"; target {target:g} {'reached' if met else 'NOT reached'}")
    return section


def _evaluator_of(engine):
    """The engine's evaluator when it has a metric (accuracy_checker engine, or an ``IEEngine``
    with a ``Metric``); else ``None``."""
    try:
        evaluator = engine.evaluator()
    except (PotError, AttributeError):
        return None
    return evaluator if evaluator.metrics else None


def _group_metrics(engine, compiled: ov.CompiledModel, shortlist: list[dict], position: dict[str, int],
                   ones: np.ndarray, placeholders: dict[str, np.ndarray],
                   deadline: float | None) -> dict[str, float] | None:
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
        outputs = evaluator.infer(compiled, indices, extra_inputs={**placeholders, GATE_INPUT: gates},
                                  own_outputs=len(placeholders))
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
    """How much of the analysis fits the time budget. ``blocks`` 0: every group's "only
    quantized" variant; else the groups are first measured in ``blocks`` blocks of consecutive
    groups and only the ``refined`` most harmful blocks group by group."""

    samples: int
    float_variants: int
    inferences: int
    seconds: float
    budget: float | None
    blocks: int = 0
    refined: int = 0
    verify_samples: int = 0


def _search_inferences(groups: int) -> int:
    """Inferences per sample of :func:`_shortest_prefix` over ``groups`` at most (exponential,
    then binary search)."""
    return 2 * math.ceil(math.log2(groups + 1)) + 1


def _blocks(groups: int) -> int:
    """How many blocks of consecutive groups the coarse pass measures: about sqrt(groups)."""
    size = math.ceil(groups / math.ceil(math.sqrt(groups)))
    return math.ceil(groups / size)


def _plan(groups: int, max_samples: int, per_inference_s: float, compile_s: float, budget_s: float | None) -> _Plan:
    """The most samples (at least :data:`MIN_SAMPLES`) for which every group's "only quantized"
    variant, the prefix search and the verification fit ``budget_s`` (seconds left), then as many
    "only float" variants (the most harmful groups first, at least :data:`MIN_FLOAT_VARIANTS`)
    as still fit. ``budget_s`` ``None``: ``max_samples`` and every group.

    When even one sample does not fit (many groups, a slow model: ppocrv4_det, 81 groups at
    65 ms), a coarse pass first: :func:`_blocks` blocks of consecutive groups (topological order),
    each alone quantized, then the most harmful blocks group by group, as many as fit and at least
    a third of them (:data:`MIN_REFINED_SHARE`), on one sample.

    :param per_inference_s: seconds per inference of the switchable model (measured).
    :param compile_s: seconds the switchable model took to compile (a verification compiles the
        quantized model, estimated at half of it, and needs the float reference of every loaded
        sample).
    """
    search = _search_inferences(groups)
    fixed = 1 + groups + search  # full model, only-quantized, search
    if budget_s is None:
        n, floats = max_samples, groups
        return _Plan(n, floats, n * (fixed + floats), n * (fixed + floats) * per_inference_s, None,
                     verify_samples=max(max_samples, MAX_VERIFY_SAMPLES))
    # the verification: a compilation and, per verified sample, the float reference on the
    # switchable model and an inference of the real model (counted as another)
    checked = max(max_samples, min(MAX_VERIFY_SAMPLES, int(VERIFY_SHARE * budget_s / (2 * per_inference_s))))
    verify_s = compile_s / 2 + checked * per_inference_s
    floats_min = min(groups, MIN_FLOAT_VARIANTS)
    fit = (budget_s - verify_s) / ((fixed + floats_min) * per_inference_s)
    blocks = _blocks(groups) if groups >= MIN_BLOCKED_GROUPS else 0
    if fit < 1 and blocks:
        size = math.ceil(groups / blocks)
        left = budget_s - verify_s - (1 + blocks + search + floats_min) * per_inference_s
        refined = min(blocks, max(math.ceil(blocks * MIN_REFINED_SHARE), int(left / (size * per_inference_s))))
        measured = min(groups, refined * size)
        if measured + blocks < groups:
            inferences = 1 + blocks + measured + search + floats_min
            return _Plan(1, floats_min, inferences, inferences * per_inference_s, budget_s, blocks, refined, checked)
    n = max(MIN_SAMPLES, min(max_samples, int(fit)))
    left = budget_s - verify_s - n * fixed * per_inference_s
    floats = max(floats_min, min(groups, int(left / (n * per_inference_s))))
    inferences = n * (fixed + floats)
    return _Plan(n, floats, inferences, inferences * per_inference_s, budget_s, verify_samples=checked)


def _spread(indices: list[int], n: int) -> list[int]:
    """``n`` indices spread evenly over ``indices``."""
    if n <= 0:
        return []
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
    the next groups of ``order`` are added (a quarter more each time, at least a sixteenth of all;
    at most :data:`MAX_VERIFICATIONS` models)."""
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
        verified += 1
        figures = _compare(_compile_f32(candidate, device), samples, check, refs).figures()
        met = figures["cosine"] >= target
        if met or k >= len(order) or verified >= MAX_VERIFICATIONS:
            break
        k = min(len(order), k + max(math.ceil(k / 4), math.ceil(len(order) / 16)))
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
    in float); ``compression.analyze`` is dropped and ``compression.output_check`` asks the run to
    measure its output against FP32 on the samples the prediction was verified on, the
    prediction beside (:func:`check_output`).

    :param raw: the run's config as used (``PotConfig.raw``, paths absolute).
    :param analysis: the ``analysis`` section (:meth:`Analysis.report`).
    :return: a new config dict (``raw`` is not modified).
    """
    cfg = copy.deepcopy(raw)
    comp = cfg.setdefault("compression", {})
    comp.pop("analyze", None)
    rec = analysis["recommendation"]
    comp["output_check"] = {"samples": rec.get("verified_samples") or analysis.get("samples") or MAX_VERIFY_SAMPLES,
                            "expected": dict(rec["predicted"])}
    if (analysis.get("target") or {}).get("cosine") is not None:
        comp["output_check"]["target"] = analysis["target"]["cosine"]
    scope = list(analysis["recommendation"]["ignored_scope"])
    for algo in comp.get("algorithms", []):
        if algo.get("name") in ("DefaultQuantization", "MinMaxQuantization", "AccuracyAwareQuantization"):
            ignored = algo.setdefault("params", {}).setdefault("ignored", {})
            ignored["scope"] = list(dict.fromkeys(list(ignored.get("scope", [])) + scope))
    return cfg


__all__ = ["AnalysisSettings", "Analysis", "Recommendation", "analyze", "check_output", "recommended_config",
           "switchable_model", "verification_indices", "DEFAULT_TARGET_COSINE"]
