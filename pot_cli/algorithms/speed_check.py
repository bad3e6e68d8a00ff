"""Keep in floating point the quantized layers that INT8 does not make faster on this CPU.

INT8 does not pay everywhere. On a CPU without VNNI (AVX2 only) a small depthwise convolution
runs slower in INT8 than in f32 (mp_face_detection_short: 45.6 vs 34.2 us for its first one), a
FullyConnected on a 128-token sequence runs about 12% slower (minilm_l6_v2), and a layer whose
neighbours stay in floating point pays for the FakeQuantize and Reorder nodes around it. Which
layers do not pay depends on the CPU, the shapes and the neighbours, so the decision is measured
rather than written as fixed rules:

1. compile the FP32 model and the quantized model with ``PERF_COUNT`` (latency hint, the
   default inference precision: what a deployment runs) and run one calibration sample on both,
   interleaved in short chunks so that a change of machine load hits both alike;
2. give every quantized layer group (a weighted op or residual Add reading a FakeQuantize, as in
   AccuracyAwareQuantization) the time of the runtime nodes that executed it (rt_info
   ``originalLayersNames``), plus a share of the conversion nodes in front of it (Reorder,
   Convert, FakeQuantize and fused element-wise ``Subgraph`` nodes, followed downstream to the
   groups they feed), in both models;
3. revert to floating point every group whose INT8 time exceeds its FP32 time by more than a
   margin (:func:`pot_cli.algorithms.accuracy_aware.revert_group`), then measure again, since a
   revert changes its neighbours' conversions; at most ``max_rounds`` rounds.

This extends the original POT, which had no such step; NNCF has none either (its INT8
mp_face_detection_short model runs slower than FP32 on this machine).
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import openvino as ov

from pot_cli.graph.model import is_constant_subgraph
from pot_cli.graph.patterns import ATTENTION_OPS, LAYOUT_OPS, is_depthwise

log = logging.getLogger("pot")

#: runtime node types that convert data for a layer rather than compute it
CONVERSION_TYPES = frozenset({"Reorder", "Convert", "FakeQuantize", "Subgraph", "Eltwise"})


@dataclass
class LayerTiming:
    """One quantized layer group's measurement and the decision taken.

    :param layer: friendly name of the group's op.
    :param type: its op type.
    :param fp32_us: microseconds per inference in the FP32 model (its runtime nodes plus its
        share of conversion nodes).
    :param int8_us: the same in the quantized model, in the round the decision was taken.
    :param int8: True when the layer stays quantized.
    :param round: the round (1-based) that reverted it, or the last round measured.
    """

    layer: str
    type: str
    fp32_us: float
    int8_us: float
    int8: bool = True
    round: int = 1


@dataclass
class SpeedCheckResult:
    """What the speed check measured and decided.

    :param layers: one row per quantized layer group.
    :param reverted: the groups kept in floating point, in the order they were reverted.
    :param fp32_us: sum of the FP32 model's runtime node times (us per inference).
    :param int8_us: the same for the returned model (after the reverts).
    :param int8_us_before: the same for the model before any revert.
    :param rounds: measurement rounds run.
    :param seconds: wall time of the whole check.
    :param skipped: layer categories not tried for lack of time (see ``budget_s``).
    :param whole_model: groups reverted at the end because the model as a whole was not at least
        :data:`MIN_GAIN` faster than FP32 (the rest of ``reverted`` were slower in INT8 in a trial).
    """

    layers: list[LayerTiming] = field(default_factory=list)
    reverted: list[str] = field(default_factory=list)
    fp32_us: float = 0.0
    int8_us: float = 0.0
    int8_us_before: float = 0.0
    rounds: int = 0
    seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)
    whole_model: list[str] = field(default_factory=list)
    #: precision the CPU plugin runs the returned model's Convolution/MatMul nodes in
    #: (:func:`pot_cli.report.precision.runtime_precision`)
    runtime: dict = field(default_factory=dict)

    def report(self) -> dict:
        """The ``speed_check`` section of report.json (times in microseconds per inference)."""
        return {
            "fp32_us": round(self.fp32_us, 1), "int8_us_before": round(self.int8_us_before, 1),
            "int8_us": round(self.int8_us, 1), "rounds": self.rounds, "seconds": round(self.seconds, 3),
            "reverted": list(self.reverted), "categories_not_tried": list(self.skipped),
            "reverted_as_whole_model": list(self.whole_model), "runtime": self.runtime,
            "layers": [{"layer": t.layer, "type": t.type, "fp32_us": round(t.fp32_us, 2),
                        "int8_us": round(t.int8_us, 2), "decision": "int8" if t.int8 else "float",
                        "round": t.round} for t in self.layers],
        }


def _compile_profiled(core: ov.Core, model: ov.Model, device: str) -> tuple[ov.CompiledModel, float]:
    """``model`` compiled with performance counters (latency hint), and the seconds it took."""
    t0 = time.perf_counter()
    compiled = core.compile_model(model, device, {"PERF_COUNT": True, "PERFORMANCE_HINT": "LATENCY"})
    return compiled, time.perf_counter() - t0


class _Profiler:
    """A model compiled with performance counters, and its per-group times.

    :param core: the OpenVINO core.
    :param model: the model to compile (not modified).
    :param inputs: one sample, ``{input name: array}``.
    :param device: OpenVINO device.
    :param compiled: the model already compiled by :func:`_compile_profiled`, if it was.
    """

    def __init__(self, core: ov.Core, model: ov.Model, inputs: dict[str, np.ndarray], device: str,
                 compiled: tuple[ov.CompiledModel, float] | None = None):
        self.compiled, self.compile_seconds = compiled or _compile_profiled(core, model, device)
        self.request = self.compiled.create_infer_request()
        self.stateful = bool(self.request.query_state())  # then every run starts from the initial state
        self.inputs = inputs
        self.node_seconds: dict[str, list[float]] = defaultdict(list)
        self.wall_seconds: list[float] = []
        self.request.infer(inputs)  # warm-up: first-run allocations are not the layer's cost
        self.ir_names = {op.get_friendly_name() for op in model.get_ops()}

    def run(self, n: int) -> float:
        """Run ``n`` inferences, record node and wall times; return the wall seconds taken."""
        t0 = time.perf_counter()
        for _ in range(n):
            if self.stateful:
                self.request.reset_state()
            start = time.perf_counter()
            self.request.infer(self.inputs)
            self.wall_seconds.append(time.perf_counter() - start)
            for info in self.request.profiling_info:
                self.node_seconds[info.node_name].append(info.real_time.total_seconds())
        return time.perf_counter() - t0

    def reset(self) -> None:
        """Forget the times recorded so far (a new interleaved comparison starts)."""
        self.node_seconds.clear()
        self.wall_seconds.clear()

    def total_us(self) -> float:
        """Median wall time of one inference, microseconds (medians: a preempted run on a busy
        machine does not move them)."""
        return 1e6 * float(np.median(self.wall_seconds)) if self.wall_seconds else 0.0

    def node_us(self) -> dict[str, float]:
        """Median time of each runtime node, microseconds per inference."""
        return {name: 1e6 * float(np.median(v)) for name, v in self.node_seconds.items()}

    def group_times(self, groups: set[str] | dict[str, str], attention: frozenset[str] = frozenset()
                    ) -> dict[str, float]:
        """Microseconds per inference of each group (see the module docstring).

        :param groups: group names, or a mapping of op names to the group they belong to (a
            layer's bias Add: the CPU plugin may name a fused FullyConnected after it only).
        :param attention: the attention groups (ScaledDotProductAttention), which also own the
            nodes the plugin creates when it decomposes them.
        """
        if not isinstance(groups, dict):
            groups = {g: g for g in groups}
        runtime = self.compiled.get_runtime_model()
        owners: dict[str, list[str]] = {}
        kind: dict[str, str] = {}
        consumers: dict[str, list[str]] = {}
        producers: dict[str, list[str]] = {}
        created: dict[str, bool] = {}
        for op in runtime.get_ordered_ops():
            name = op.get_friendly_name()
            rt = op.get_rt_info()
            original = rt["originalLayersNames"].astype(str) if "originalLayersNames" in rt else ""
            # low-precision transformations rename a layer ``<name>/DequantizationMultiply``
            owners[name] = sorted({groups[g] for g in {o.split("/Dequantization")[0] for o in original.split(",")}
                                   if g in groups})
            kind[name] = rt["layerType"].astype(str) if "layerType" in rt else op.get_type_name()
            consumers[name] = [t.get_node().get_friendly_name() for out in op.outputs()
                               for t in out.get_target_inputs()]
            producers[name] = [i.get_source_output().get_node().get_friendly_name() for i in op.inputs()]
            created[name] = bool(original) and not any(o in self.ir_names for o in original.split(","))
        for name in owners:  # runtime ops come in topological order
            # a node the plugin created (a decomposed attention's Q.K^T MatMul, mask Add and Softmax,
            # named after nodes that are not in the IR) belongs to the one group owning its inputs
            if owners[name] or not created[name] or kind[name] in ("Reorder", "Convert", "FakeQuantize"):
                continue
            inputs = {tuple(owners[p]) for p in producers[name] if owners.get(p)}
            if len(inputs) == 1 and len(next(iter(inputs))) == 1 and next(iter(inputs))[0] in attention:
                owners[name] = list(next(iter(inputs)))

        def downstream_groups(start: str) -> set[str]:
            found, stack, seen = set(), list(consumers.get(start, ())), set()
            while stack:
                name = stack.pop()
                if name in seen:
                    continue
                seen.add(name)
                if owners.get(name):
                    found.update(owners[name])
                elif kind.get(name) in CONVERSION_TYPES:
                    stack.extend(consumers.get(name, ()))
            return found

        out: dict[str, float] = defaultdict(float)
        for name, us in self.node_us().items():
            targets = owners.get(name) or (sorted(downstream_groups(name)) if kind.get(name) in CONVERSION_TYPES else [])
            for g in targets:
                out[g] += us / len(targets)
        return out


#: a result whose chained INT8/FP32 time ratio is below this is not measured against FP32 again
#: (each link of the chain carries a few % of noise: minilm_l6_v2 chained to 0.87 while the model
#: measured as fast as FP32)
CLEARLY_FASTER = 0.75

#: the quantized model is kept only when at least this much faster than FP32 (fraction): within the
#: measurement noise (2-5% on a loaded 2-core machine) INT8 would only cost accuracy
MIN_GAIN = 0.03

#: inferences per model per measurement at most (enough for stable per-node means on small models)
MAX_RUNS = 100


#: interleaved slices of one measurement
SLICES = 6


def _measure(*profilers: _Profiler, seconds: float, chunks: int = SLICES) -> None:
    """Run the profilers in turn in ``chunks`` slices of at most ``seconds`` in total and at
    most :data:`MAX_RUNS` inferences each."""
    probe = max(sum(p.run(2) for p in profilers) / (2 * len(profilers)), 1e-5)  # s per run, profiling included
    n = max(3, min(int(seconds / chunks / len(profilers) / probe), MAX_RUNS // chunks))
    for _ in range(chunks):
        for p in profilers:
            p.run(n)


def _slice_ratios(a: _Profiler, b: _Profiler, chunks: int = SLICES) -> list[float]:
    """The ratios of ``a``'s to ``b``'s median inference time in each interleaved slice of their
    last :func:`_measure` (one ratio, of the overall medians, when there are too few runs)."""
    if len(a.wall_seconds) < 2 * chunks or len(b.wall_seconds) < 2 * chunks:
        return [a.total_us() / b.total_us() if b.total_us() else 1.0]
    ratios = [float(np.median(x) / np.median(y))
              for x, y in zip(np.array_split(np.asarray(a.wall_seconds), chunks),
                              np.array_split(np.asarray(b.wall_seconds), chunks))]
    log.debug("speed check: per-slice wall ratios %s (node time ratio %.3f)", " ".join(f"{r:.3f}" for r in ratios),
              a.total_us() / b.total_us() if b.total_us() else 1.0)
    return ratios


def _faster(ratios: list[float], gain: float) -> bool:
    """Whether interleaved slice ratios (time of the candidate / time of the reference) say the
    candidate is faster by more than ``gain`` (fraction): their median is at most ``1 - gain``
    and at most one slice of four or more (none of fewer) has the candidate at or above the
    reference.

    One median alone let a burst of load on the other core pass for a speed difference
    (measured: a single median ratio put a minilm_l6_v2 mix with 4 INT8 layers at 0.91x FP32;
    the benchmark measured it at 1.03x). Asking every slice to agree failed the other way on a
    0.2 ms model, whose single slices swing between 0.67x and 1.35x: fmnist_cnn, 11-25% faster in
    INT8 by its medians, went back to FP32 in 2 of 6 runs."""
    slower = sum(r >= 1.0 for r in ratios)
    return float(np.median(ratios)) <= 1.0 - gain and slower <= (1 if len(ratios) >= 4 else 0)


def _aliases(groups: dict[str, ov.Node]) -> dict[str, str]:
    """Op name -> group: each group's own name, and its bias (an Add or Multiply with a constant
    input right after it, the group's only consumer), whose name the plugin may keep alone; for an
    attention group, the Reshape/Transpose ops feeding its query and key (a decomposed Q.K^T
    reads them)."""
    out = {name: name for name in groups}
    cache: dict = {}
    for name, node in groups.items():
        if node.get_type_name() in ATTENTION_OPS:  # the layout ops feeding its query and key
            for port in (0, 1):
                src = node.input_value(port)
                while src.get_node().get_type_name() in LAYOUT_OPS and len(src.get_target_inputs()) == 1:
                    out.setdefault(src.get_node().get_friendly_name(), name)
                    src = src.get_node().input_value(0)
            continue
        targets = list(node.output(0).get_target_inputs())
        if len(targets) != 1:
            continue
        after = targets[0].get_node()
        if after.get_type_name() in ("Add", "Multiply") and after.get_friendly_name() not in groups and any(
                is_constant_subgraph(i.get_source_output(), cache) for i in after.inputs()):
            out.setdefault(after.get_friendly_name(), name)
    return out


def layer_category(node: ov.Node) -> str:
    """The class of a quantized layer group whose INT8 speed is decided together.

    :param node: the group's op.
    :return: ``depthwise``, ``group_conv``, ``conv_1x1``, ``conv``, ``deconv``, ``fully_connected``
        (MatMul with constant weights), ``matmul`` (two activations), ``attention``
        (ScaledDotProductAttention), ``pooling`` (AvgPool, ReduceMean), ``resample``
        (Interpolate) or ``eltwise``.
    """
    t = node.get_type_name()
    if t in ATTENTION_OPS:
        return "attention"
    if t in ("AvgPool", "ReduceMean"):
        return "pooling"
    if t == "Interpolate":
        return "resample"
    if t == "GroupConvolution":
        return "depthwise" if is_depthwise(node) else "group_conv"
    if t == "Convolution":
        shape = node.get_input_partial_shape(1)
        spatial = [shape[i] for i in range(2, shape.rank.get_length())] if shape.rank.is_static else []
        return "conv_1x1" if spatial and all(d.is_static and d.get_length() == 1 for d in spatial) else "conv"
    if t in ("ConvolutionBackpropData", "GroupConvolutionBackpropData"):
        return "deconv"
    if t == "MatMul":
        return "fully_connected" if any(is_constant_subgraph(i.get_source_output(), {}) for i in node.inputs()) \
            else "matmul"
    return "eltwise"


def check_layer_speed(fp_model: ov.Model, model: ov.Model, groups: dict[str, ov.Node],
                      inputs: dict[str, np.ndarray], revert, device: str = "CPU", seconds: float = 0.3,
                      margin: float = 0.05, min_gain_us: float = 0.5, accept: float = 0.01,
                      max_trials: int = 4, budget_s: float | None = None,
                      core: ov.Core | None = None) -> tuple[ov.Model, SpeedCheckResult]:
    """Revert the quantized layer groups that do not run faster in INT8 than in FP32 on ``device``.

    Per-layer times are not additive: reverting one layer changes the conversions of its
    neighbours. So the per-layer measurement only proposes candidates, and the whole model
    decides: layers are grouped by :func:`layer_category`; the categories are tried in the order
    of their measured INT8 excess (sum over their layers of ``int8_us - fp32_us`` where positive),
    each trial reverting the category's layers that are slower in INT8 by more than
    ``fp32_us * margin + min_gain_us``; a trial is kept only when the model's inference time drops
    by more than ``accept`` (fraction) in every slice of a measurement interleaved with the
    current model (a class kept in float costs model size, so noise keeps INT8). When the result
    is not at least :data:`MIN_GAIN` faster than FP32 across the slices (:func:`_faster`), every
    layer is reverted: the output then equals the FP32 model (and
    a warning says so). The result is compared with FP32 through the product of the
    interleaved ratios (first measurement, then each kept trial); only when that product is above
    :data:`CLEARLY_FASTER` are the two measured against each other again.

    :param fp_model: the floating-point model (not modified).
    :param model: the quantized model (not modified; reverts are made on clones).
    :param groups: friendly name -> op of every quantized layer group of ``model``.
    :param inputs: one calibration sample, ``{input name: array}`` with the model's input shapes.
    :param revert: ``revert(model, group)`` puts one group of ``model`` back in floating point in
        place (:func:`pot_cli.algorithms.accuracy_aware.revert_group` bound to the FP32 model).
    :param device: OpenVINO device measured (the deployment device).
    :param seconds: inference time per measurement, both models together.
    :param margin: relative slack of the per-layer comparison.
    :param min_gain_us: absolute slack in microseconds, against timer noise on tiny layers.
    :param accept: relative drop of the total time a trial must bring to be kept.
    :param max_trials: category trials at most.
    :param budget_s: seconds the whole check may take: a trial that would end after it (its
        expected cost is one compilation and one measurement, as measured on the quantized model)
        is not started; the FP32 comparison at the end always runs. When the budget left
        categories untried and the model is not faster than FP32, one more trial puts all their
        slower layers in floating point at once, measured beside FP32 and the current model
        (measured again: its first verdict may have been a burst of load); the faster of the two
        that is :data:`MIN_GAIN` faster than FP32 is kept, else the whole model goes back to FP32.
        None: no limit.
    :param core: an OpenVINO core to reuse.
    :return: the model to save (``model`` itself when nothing was reverted) and the record.
    """
    t0 = time.perf_counter()
    core = core or ov.Core()
    result = SpeedCheckResult()
    aliases = _aliases(groups)
    # both compilations at once: the plugin releases the GIL while compiling (about 35% less wall time)
    with ThreadPoolExecutor(2) as pool:
        compiled = list(pool.map(lambda m: _compile_profiled(core, m, device), (fp_model, model)))
    fp32 = _Profiler(core, fp_model, inputs, device, compiled[0])
    state = _Profiler(core, model, inputs, device, compiled[1])
    _measure(fp32, state, seconds=seconds)
    result.rounds = 1
    fast_enough = _faster(_slice_ratios(state, fp32), MIN_GAIN)  # against FP32, while no trial is kept
    final = state  # the profiler of the model returned
    attention = frozenset(g for g, node in groups.items() if node.get_type_name() in ATTENTION_OPS)
    fp_times, q_times = fp32.group_times(aliases, attention), state.group_times(aliases, attention)
    result.int8_us_before = state.total_us()
    timings = {g: LayerTiming(g, groups[g].get_type_name(), fp_times.get(g, 0.0), q_times.get(g, 0.0))
               for g in groups}
    excess: dict[str, float] = defaultdict(float)
    candidates: dict[str, list[str]] = defaultdict(list)
    for g, t in timings.items():
        category = layer_category(groups[g])
        if t.int8_us > t.fp32_us * (1.0 + margin) + min_gain_us:
            excess[category] += t.int8_us - t.fp32_us
            candidates[category].append(g)
    current = model
    # INT8/FP32 time ratio of ``current``, chained over kept trials (each one measured interleaved
    # with the model it replaces)
    ratio = result.int8_us_before / fp32.total_us() if fp32.total_us() else 1.0
    measure_seconds = time.perf_counter() - t0 - fp32.compile_seconds - state.compile_seconds
    order = sorted(candidates, key=lambda c: -excess[c])[:max_trials]
    for k, category in enumerate(order):
        expected = time.perf_counter() - t0 + state.compile_seconds + measure_seconds
        if budget_s is not None and expected > budget_s:
            result.skipped = order[k:]
            log.info("speed check: time budget of %.1f s reached; not tried: %s", budget_s, ", ".join(order[k:]))
            break
        trial_model = current.clone()
        for g in candidates[category]:
            revert(trial_model, g)
        trial = _Profiler(core, trial_model, inputs, device)
        state.reset()
        _measure(state, trial, seconds=seconds)
        result.rounds += 1
        # a trial must win in every slice: reverting a class costs model size, so noise keeps INT8
        kept = max(_slice_ratios(trial, state)) < 1.0 - accept
        log.info("speed check: %s layers (%d) in floating point: %.0f -> %.0f us per inference, %s",
                 category, len(candidates[category]), state.total_us(), trial.total_us(),
                 "kept" if kept else "rolled back (not faster in every measurement slice)")
        if kept:
            for g in candidates[category]:
                timings[g].int8, timings[g].round = False, result.rounds
            result.reverted += candidates[category]
            ratio *= trial.total_us() / state.total_us()
            fast_enough = ratio <= 1.0 - MIN_GAIN
            current, state = trial_model, trial
            final = state
    # never slower than FP32: compare the result with the FP32 model, interleaved. When no trial
    # was kept, the first measurement is that comparison (``state`` was measured again beside each
    # rolled-back trial, in another time window than ``fp32``: comparing those mixed load changes in)
    if result.reverted and ratio > CLEARLY_FASTER:
        fp32.reset()
        state.reset()
        _measure(fp32, state, seconds=seconds)
        ratio = state.total_us() / fp32.total_us() if fp32.total_us() else 1.0
        fast_enough = _faster(_slice_ratios(state, fp32), MIN_GAIN)
    result.fp32_us, result.int8_us = fp32.total_us(), fp32.total_us() * ratio
    untried = [g for c in result.skipped for g in candidates[c]]
    if untried and not fast_enough:
        # out of time with slower-in-INT8 layers never tried, and the model would go back to FP32
        # as a whole: one last trial with all of them in floating point, timed beside FP32 and the current model
        trial_model = current.clone()
        for g in untried:
            revert(trial_model, g)
        trial = _Profiler(core, trial_model, inputs, device)
        fp32.reset()
        state.reset()
        # the current model is measured again too: the trial must beat it as well as FP32, and the
        # first verdict on the current model may have been a burst of load
        _measure(fp32, state, trial, seconds=1.5 * seconds)
        result.rounds += 1
        candidates_fast = {name: p for name, p in (("current", state), ("trial", trial))
                           if _faster(_slice_ratios(p, fp32), MIN_GAIN)}
        best = min(candidates_fast, key=lambda k: candidates_fast[k].total_us()) if candidates_fast else None
        log.info("speed check: the %d untried slower layer(s) (%s) in floating point at once: %.0f us per "
                 "inference, the current model %.0f us, FP32 %.0f us: %s", len(untried), ", ".join(result.skipped),
                 trial.total_us(), state.total_us(), fp32.total_us(),
                 "kept" if best == "trial" else "the current model kept" if best == "current" else
                 f"neither is {100 * MIN_GAIN:.0f}% faster than FP32 across the measurement slices")
        if best == "trial":
            for g in untried:
                timings[g].int8, timings[g].round = False, result.rounds
            result.reverted += untried
            current, final = trial_model, trial
        if best is not None:
            result.fp32_us, result.int8_us = fp32.total_us(), candidates_fast[best].total_us()
            fast_enough = True
    rest = [g for g in groups if timings[g].int8]
    if rest and not fast_enough:
        log.warning("speed check: the quantized model is not at least %.0f%% faster than FP32 on %s across the "
                    "measurement slices (medians %.0f vs %.0f us per inference); all %d remaining quantized "
                    "layer(s) are kept in floating point",
                    100 * MIN_GAIN, device, result.int8_us, result.fp32_us, len(rest))
        current = current.clone()
        for g in rest:
            revert(current, g)
            timings[g].int8, timings[g].round = False, result.rounds
        result.reverted += rest
        result.whole_model = rest
        final = fp32
    if not any(t.int8 for t in timings.values()):  # nothing quantized is left: the FP32 model
        result.int8_us = result.fp32_us
    result.layers = [timings[g] for g in groups]
    from pot_cli.report.precision import runtime_precision
    result.runtime = runtime_precision(final.compiled if any(t.int8 for t in timings.values()) else fp32.compiled)
    result.seconds = time.perf_counter() - t0
    return current, result
