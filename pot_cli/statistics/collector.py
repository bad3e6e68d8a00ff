"""Activation statistics collected on the OpenVINO runtime in one asynchronous pass.

Reductions run inside the graph: for each requested tensor the collector attaches ReduceMin,
ReduceMax, ReduceMean (per channel), TopK (quantiles) or ShapeOf nodes and makes them outputs of a
temporary model.
Only those small outputs come back to Python, and they are folded across samples as they
arrive (in sample order, so the result is the same on every run): the per-channel reductions
keep a running min, max or sum, the per-tensor ones a few numbers per sample. Memory therefore
does not grow with the activation size and barely with the number of samples. The model is compiled with
``INFERENCE_PRECISION_HINT=f32``: this CPU would otherwise run a float32 model in bf16 and the
statistics would carry bf16 rounding. On a quantized model with a dynamic input shape (the pass of
BiasCorrection) the quantized layers are compiled as plain f32 arithmetic
(:func:`fake_quantize_in_float`), and a stateful model starts every sample from its variables'
initial values (:func:`start_sample`).
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Iterable

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from pot_cli.errors import EngineError, PotError, runtime_error_text
from pot_cli.graph.model import compile_model, evaluate_constants, is_constant_subgraph, model_with_results

log = logging.getLogger("pot")


class Reduction(str, Enum):
    """What is computed per sample for a tensor ``x`` of shape ``(N=1, C, ...)``."""

    MIN = "min"  #: ``min(x)`` over all elements, a scalar
    MAX = "max"  #: ``max(x)`` over all elements, a scalar
    MIN_PER_CHANNEL = "min_per_channel"  #: min over all axes but the channel axis, shape ``(C,)``
    MAX_PER_CHANNEL = "max_per_channel"  #: max over all axes but the channel axis, shape ``(C,)``
    MEAN_PER_CHANNEL = "mean_per_channel"  #: mean over all axes but the channel axis, shape ``(C,)``
    #: per-sample min over all axes but the channel axis, averaged over the samples, shape ``(C,)``
    MEAN_MIN_PER_CHANNEL = "mean_min_per_channel"
    #: per-sample max over all axes but the channel axis, averaged over the samples, shape ``(C,)``
    MEAN_MAX_PER_CHANNEL = "mean_max_per_channel"
    SHAPE = "shape"  #: the runtime shape of ``x``, int64 ``(rank,)``
    #: ``np.quantile(x, p)`` over all elements (linear interpolation), a scalar; ``p`` is the
    #: request's ``outlier_prob``
    QUANTILE_LOW = "quantile_low"
    QUANTILE_HIGH = "quantile_high"  #: ``np.quantile(x, 1 - p)`` over all elements, a scalar
    ABS_QUANTILE = "abs_quantile"  #: ``np.quantile(|x|, 1 - p)`` over all elements, a scalar
    #: ``np.quantile(x, p)`` over all axes but the channel axis, shape ``(C,)``
    QUANTILE_LOW_PER_CHANNEL = "quantile_low_per_channel"
    #: ``np.quantile(x, 1 - p)`` over all axes but the channel axis, shape ``(C,)``
    QUANTILE_HIGH_PER_CHANNEL = "quantile_high_per_channel"
    #: ``np.quantile(|x|, 1 - p)`` over all axes but the channel axis, shape ``(C,)``
    ABS_QUANTILE_PER_CHANNEL = "abs_quantile_per_channel"


#: reductions kept as one row per sample (the others are folded across samples)
_PER_SAMPLE = frozenset({Reduction.MIN, Reduction.MAX, Reduction.SHAPE, Reduction.QUANTILE_LOW,
                         Reduction.QUANTILE_HIGH, Reduction.ABS_QUANTILE})
#: per-channel reductions folded by a running minimum (the others by a running maximum or mean)
_FOLD_MIN = frozenset({Reduction.MIN_PER_CHANNEL, Reduction.QUANTILE_LOW_PER_CHANNEL})
_FOLD_MAX = frozenset({Reduction.MAX_PER_CHANNEL, Reduction.QUANTILE_HIGH_PER_CHANNEL,
                       Reduction.ABS_QUANTILE_PER_CHANNEL})
_QUANTILES = {Reduction.QUANTILE_LOW: "low", Reduction.QUANTILE_HIGH: "high", Reduction.ABS_QUANTILE: "abs",
              Reduction.QUANTILE_LOW_PER_CHANNEL: "low", Reduction.QUANTILE_HIGH_PER_CHANNEL: "high",
              Reduction.ABS_QUANTILE_PER_CHANNEL: "abs"}


@dataclass(frozen=True)
class StatisticRequest:
    """One tensor and what to reduce it to.

    :param output: the node output (tensor) to observe; hashable, used as the key of the results.
    :param reduction: the per-sample reduction.
    :param channel_axis: channel axis of the per-channel reductions (may be negative), else None.
    :param outlier_prob: the tail probability ``p`` of the quantile reductions, in [0, 1]
        (POT's ``outlier_prob``); None for the others.
    """

    output: ov.Output
    reduction: Reduction
    channel_axis: int | None = None
    outlier_prob: float | None = None


class Statistics:
    """Statistics over the calibration samples:
    ``(output, reduction, channel_axis, outlier_prob) -> array``, float64.

    MIN, MAX, SHAPE and the per-tensor quantiles hold one row per sample. The per-channel
    reductions are already folded across samples and hold one row: the minimum over samples for
    MIN_PER_CHANNEL and QUANTILE_LOW_PER_CHANNEL, the maximum for MAX_PER_CHANNEL,
    QUANTILE_HIGH_PER_CHANNEL and ABS_QUANTILE_PER_CHANNEL, the mean for MEAN_PER_CHANNEL,
    MEAN_MIN_PER_CHANNEL and MEAN_MAX_PER_CHANNEL (mean of the per-sample minima or maxima);
    reducing that row again over axis 0 (``.min(axis=0)``, ``.max(axis=0)``, ``.mean(axis=0)``)
    gives the same values as reducing per-sample rows would.
    """

    def __init__(self, values: dict[tuple, np.ndarray], n_samples: int):
        self._values = values
        self.n_samples = n_samples

    def get(self, output: ov.Output, reduction: Reduction, channel_axis: int | None = None,
            outlier_prob: float | None = None) -> np.ndarray:
        """Values of ``reduction`` on ``output``: shape ``(n_samples,)`` for MIN/MAX and the
        per-tensor quantiles, ``(n_samples, rank)`` for SHAPE, ``(1, C)`` for the per-channel ones
        (folded over the samples; see the class docstring).

        :raises KeyError: when it was not requested.
        """
        return self._values[(output, reduction, channel_axis, outlier_prob)]

    def __contains__(self, key) -> bool:
        """``(output, reduction, channel_axis[, outlier_prob])`` was collected."""
        return (tuple(key) + (None,) * (4 - len(key))) in self._values


#: smallest TopK ``k`` used for quantiles: on a long row the CPU plugin's TopK with ``k <= 6`` was
#: measured 10-40x slower than with ``k = 8`` and took ~250 MB of scratch memory per node (1.2M
#: values, OpenVINO 2026.4); the extra values are not used
_MIN_TOPK = 8


def _i64(value) -> ov.Node:
    return ops.constant(np.array(value, dtype=np.int64))


class _ReducerBuilder:
    """Builds the in-graph reduction of each request; quantile requests on the same tensor,
    channel axis and ``p`` share their TopK nodes.

    A quantile of ``M`` values at ``q = p`` (or ``1 - p``) is computed as NumPy's default
    (``linear``) ``np.quantile``: with ``j = (M - 1) * p``, ``i = floor(j)``, the values sorted
    ascending (descending for ``1 - p``) ``v``, it is ``v[i] + (j - i) * (v[i + 1] - v[i])``. Only
    ``k = i + 2`` values are needed (at least :data:`_MIN_TOPK` are taken): one TopK of ``k`` over
    the flattened tensor (its rows per channel), so nothing of the activation's size leaves the
    graph (about 3-4 ns per value on this CPU, 4-5x a ReduceMax). ``M``, ``i``, ``k`` and ``j - i``
    are constants for a static shape and are computed from ShapeOf in the graph otherwise (a
    sequence length that varies per sample).
    ``|x|`` quantiles reuse both TopKs: the ``k`` largest ``|x|`` are among the ``k`` largest and
    the ``min(k, M - k)`` smallest values of ``x`` (disjoint sets), so a TopK over those ``2k``
    values at most gives them exactly.
    """

    def __init__(self):
        self._quantile_cache: dict[tuple, dict] = {}
        self._attached: list[ov.Node] = []  # nodes reading a tensor of the model

    def _attach(self, node: ov.Node) -> ov.Node:
        self._attached.append(node)
        return node

    def detach(self) -> None:
        """Disconnect every node built here from the model's tensors (the model is left as it was)."""
        for node in self._attached:
            for inp in node.inputs():
                src = inp.get_source_output()
                if src.get_node().get_type_name() != "Constant":
                    src.remove_target_input(inp)
        self._attached.clear()
        self._quantile_cache.clear()

    def build(self, req: StatisticRequest) -> ov.Node:
        """The reduction of ``req`` as new nodes (the returned node is its result). A boolean
        tensor (an If condition) is converted to f32 first (1.0 true, 0.0 false)."""
        x = req.output
        rank = x.get_partial_shape().rank
        if req.reduction == Reduction.SHAPE:
            return self._attach(ops.shape_of(x, output_type="i64"))
        if x.get_element_type() == ov.Type.boolean:
            x = self._attach(ops.convert(x, ov.Type.f32)).output(0)
            req = StatisticRequest(x, req.reduction, req.channel_axis, req.outlier_prob)
        if rank.is_dynamic:
            raise EngineError(f"tensor '{x.get_node().get_friendly_name()}': dynamic rank; cannot collect statistics")
        r = rank.get_length()
        if req.reduction in _QUANTILES:
            return self._quantile(req, r)
        if req.channel_axis is not None:
            axes = _i64([a for a in range(r) if a != req.channel_axis % r])
        else:
            axes = _i64(np.arange(r))
        reduce = {Reduction.MIN: ops.reduce_min, Reduction.MIN_PER_CHANNEL: ops.reduce_min,
                  Reduction.MAX: ops.reduce_max, Reduction.MAX_PER_CHANNEL: ops.reduce_max,
                  Reduction.MEAN_PER_CHANNEL: ops.reduce_mean, Reduction.MEAN_MIN_PER_CHANNEL: ops.reduce_min,
                  Reduction.MEAN_MAX_PER_CHANNEL: ops.reduce_max}[req.reduction]
        return self._attach(reduce(x, axes, keep_dims=False))

    def _rows(self, x: ov.Output, rank: int, channel_axis: int | None) -> tuple[ov.Node, int | None]:
        """``x`` viewed as ``(R, M)``: one row per tensor, or per channel; ``M`` when static."""
        if channel_axis is None:
            rows = self._attach(ops.reshape(x, _i64([1, -1]), special_zero=False))
        else:
            axis = channel_axis % rank
            perm = [axis] + [a for a in range(rank) if a != axis]
            moved = self._attach(ops.transpose(x, _i64(perm))) if axis != 0 else x
            rows = ops.reshape(moved, _i64([0, -1]), special_zero=True)
            if axis == 0:
                self._attach(rows)
        shape = rows.get_output_partial_shape(0)
        return rows, (shape[1].get_length() if shape[1].is_static else None)

    def _positions(self, rows: ov.Node, m: int | None, p: float) -> dict:
        """``k``, ``i``, ``i + 1`` (clamped) and ``j - i`` for the tail probability ``p``."""
        if m is not None:
            j = (m - 1) * p
            i = min(int(np.floor(j)), m - 1)
            k = min(max(i + 2, _MIN_TOPK), m)
            return {"k": _i64(k), "k_rest": _i64(min(k, m - k)), "i0": _i64(i), "i1": _i64(min(i + 1, m - 1)),
                    "frac": ops.constant(np.float32(j - i))}
        m_node = ops.gather(ops.shape_of(rows, output_type="i64"), _i64(1), _i64(0))
        last = ops.subtract(m_node, _i64(1))
        j = ops.multiply(ops.convert(last, "f32"), ops.constant(np.float32(p)))
        floor = ops.floor(j)
        i0 = ops.minimum(ops.convert(floor, "i64"), last)
        k = ops.minimum(ops.maximum(ops.add(i0, _i64(2)), _i64(_MIN_TOPK)), m_node)
        return {"k": k, "k_rest": ops.minimum(k, ops.subtract(m_node, k)), "i0": i0,
                "i1": ops.minimum(ops.add(i0, _i64(1)), last), "frac": ops.subtract(j, floor)}

    @staticmethod
    def _interpolate(values: ov.Output, pos: dict) -> ov.Node:
        """``v[i] + frac * (v[i + 1] - v[i])`` along axis 1 of sorted ``values`` ``(R, k)``, in f32."""
        if values.get_element_type() != ov.Type.f32:
            values = ops.convert(values, "f32").output(0)
        v0 = ops.gather(values, pos["i0"], _i64(1))
        v1 = ops.gather(values, pos["i1"], _i64(1))
        return ops.add(v0, ops.multiply(pos["frac"], ops.subtract(v1, v0)))

    def _quantile(self, req: StatisticRequest, rank: int) -> ov.Node:
        p = req.outlier_prob
        if p is None or not 0.0 <= p <= 1.0:
            raise EngineError(f"{req.reduction.value}: outlier_prob {p} is not in [0, 1]")
        key = (req.output, req.channel_axis, p)
        cache = self._quantile_cache.get(key)
        if cache is None:
            rows, m = self._rows(req.output, rank, req.channel_axis)
            cache = self._quantile_cache[key] = {"rows": rows, "pos": self._positions(rows, m, p)}
        pos = cache["pos"]

        def topk(mode: str) -> ov.Output:
            if mode not in cache:
                cache[mode] = ops.topk(cache["rows"], pos["k"], 1, mode, "value", "i32").output(0)
            return cache[mode]

        kind = _QUANTILES[req.reduction]
        if kind == "low":
            values = topk("min")
        elif kind == "high":
            values = topk("max")
        else:
            smallest = ops.slice(topk("min"), _i64([0]), ops.reshape(pos["k_rest"], _i64([1]), False),
                                 _i64([1]), _i64([1]))
            both = ops.abs(ops.concat([topk("max"), smallest], 1))
            values = ops.topk(both, pos["k"], 1, "max", "value", "i32").output(0)
        q = self._interpolate(values, pos)
        if req.channel_axis is None:  # (1,) -> a scalar, as ReduceMin gives
            return ops.reshape(q, _i64([]), special_zero=False)
        return q


def collect_statistics(model: ov.Model, requests: list[StatisticRequest],
                       samples: Iterable[tuple[int, dict[str, np.ndarray]]], n_samples: int,
                       progress: Callable[[int], None] | None = None,
                       requests_number: int | None = None) -> Statistics:
    """Run the calibration samples once and return the requested per-sample reductions.

    The reducer nodes are attached to ``model`` only while the temporary model is compiled, and
    detached afterwards; ``model`` is left as it was.

    :param model: the floating-point model being quantized.
    :param requests: what to collect (duplicates are merged).
    :param samples: ``(key, {input_name: array})`` pairs (the key, e.g. a data-source index,
        is not used: samples are numbered in the order they come); arrays are ready to feed
        (batch 1, model layout, model dtype).
    :param n_samples: how many samples ``samples`` yields at most.
    :param progress: called with the number of samples finished so far.
    :param requests_number: parallel infer requests (default: the plugin's optimal number).
    :return: the statistics; samples the iterator skipped are absent (``n_samples`` is the count
        actually run).
    :raises EngineError: when inference fails.
    """
    unique = list(dict.fromkeys(requests))
    if not unique:
        return Statistics({}, 0)
    builder = _ReducerBuilder()
    try:
        reducers = [builder.build(r) for r in unique]
        results = [ops.result(n) for n in reducers]
        compiled = _compile_f32(model, results, "statistics")
        del results, reducers
    finally:
        builder.detach()  # from the model being quantized
        del builder
    accumulators = [_Accumulator(r.reduction) for r in unique]
    folder = _InOrderFolder(accumulators)
    started = time.perf_counter()

    def on_done(request: ov.InferRequest, position: int) -> None:
        folder.add(position, [np.array(request.get_output_tensor(k).data, dtype=np.float64)
                              for k in range(len(unique))])

    count = run_samples(compiled, samples, on_done, "during statistics collection", requests_number,
                        after_start=None if progress is None else lambda: progress(folder.done))
    if progress is not None:
        progress(folder.done)
    if count and folder.done != count:
        raise EngineError(f"statistics collection lost {count - folder.done} of {count} samples")
    log.debug("statistics: %d samples in %.2f s", folder.done, time.perf_counter() - started)
    values = {(req.output, req.reduction, req.channel_axis, req.outlier_prob): acc.result()
              for req, acc in zip(unique, accumulators)}
    return Statistics(values, folder.done)


def _compile_f32(model: ov.Model, results: list, name: str) -> ov.CompiledModel:
    """``model``'s parameters to ``results`` (Results on tensors of ``model``), compiled on CPU
    in f32 (THROUGHPUT hint). On a quantized model with a dynamic input shape its FakeQuantize
    ops are compiled as the same arithmetic in plain ops (:func:`fake_quantize_in_float`): there
    the CPU plugin's INT8 kernels give wrong values at any extra output (OpenVINO 2026.4: a U-Net's
    second INT8 Convolution, reduced in the graph, averaged about 1e-5 where the model alone
    gives 0.1-1.4; one more Result on a ResNet's inner INT8 Convolution took the model's own
    output from cosine 0.998 to 0.947; the same models with static shapes were right), which made
    BiasCorrection's pass on the quantized model push every bias to its limit."""
    emulate = (any(p.get_partial_shape().is_dynamic for p in model.get_parameters())
               and any(op.get_type_name() == "FakeQuantize" for op in model.get_ops()))
    with fake_quantize_in_float(model) if emulate else contextlib.nullcontext():
        return compile_model(model_with_results(model, results, name),
                             {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "THROUGHPUT"})


@contextlib.contextmanager
def fake_quantize_in_float(model: ov.Model):
    """Within the block, ``model`` (not its If/Loop bodies) computes its quantized layers in plain
    f32 ops, which no plugin turns into INT8 kernels; afterwards the model is as it was.

    * Every FakeQuantize is bypassed by the same function in element-wise ops. Per the
      FakeQuantize-1 specification (input_low < input_high): ``x`` clamped to ``[input_low,
      input_high]``, mapped to ``q = round((x - input_low) / (input_high - input_low) * (levels -
      1))`` (half away from zero), then to ``q / (levels - 1) * (output_high - output_low) +
      output_low``; bounds broadcast as in the op (per tensor or per channel).
    * Every constant sub-graph feeding a computed op (INT8 weights: ``Constant(i8) -> Convert ->
      Multiply``) is read as one f32 Constant: with such weights left as they are, the plugin gave
      different, wrong values at extra outputs from run to run (OpenVINO 2026.4, dynamic shapes).
    """
    cache: dict = {}
    folded = [inp for op in model.get_ordered_ops()
              if op.get_output_size() == 0 or not is_constant_subgraph(op.output(0), cache)
              for inp in op.inputs() if inp.get_source_output().get_node().get_type_name() != "Constant"
              and is_constant_subgraph(inp.get_source_output(), cache)]
    values = evaluate_constants([inp.get_source_output() for inp in folded])
    originals = [inp.get_source_output() for inp in folded]
    for inp, value in zip(folded, values):
        inp.replace_source_output(ops.constant(value).output(0))
    swaps: list[tuple[ov.Output, list[ov.Input]]] = []  # each FakeQuantize output and its consumers
    # the added ops' last nodes: they hold the rest alive until ``entries`` are detached (an
    # ov.Input does not own its node; without them the detach below read freed nodes: segfault)
    added: list[ov.Node] = []
    entries: list[ov.Input] = []  # inputs of the added ops that read nodes of ``model``
    for fq in [op for op in model.get_ops() if op.get_type_name() == "FakeQuantize"]:
        targets = list(fq.output(0).get_target_inputs())
        if not targets:
            continue
        x, in_low, in_high, out_low, out_high = (fq.input_value(k) for k in range(5))
        dtype = np.float16 if x.get_element_type() == ov.Type.f16 else np.float32  # the op's own type
        steps = ops.constant(dtype(fq.get_attributes()["levels"] - 1))
        clamped = ops.minimum(ops.maximum(x, in_low), in_high)
        width = ops.maximum(ops.subtract(in_high, in_low), ops.constant(np.finfo(dtype).tiny))
        q = ops.round(ops.multiply(ops.subtract(clamped, in_low), ops.divide(steps, width)), "half_away_from_zero")
        y = ops.add(ops.multiply(q, ops.divide(ops.subtract(out_high, out_low), steps)), out_low)
        sources = {o.get_node().get_instance_id() for o in (x, in_low, in_high, out_low, out_high)}
        stack, seen = [y.output(0).get_node()], set()
        while stack:  # the added ops, back to the FakeQuantize's own inputs
            node = stack.pop()
            if node.get_instance_id() in seen:
                continue
            seen.add(node.get_instance_id())
            for inp in node.inputs():
                if inp.get_source_output().get_node().get_instance_id() in sources:
                    entries.append(inp)
                else:
                    stack.append(inp.get_source_output().get_node())
        for t in targets:
            t.replace_source_output(y.output(0))
        swaps.append((fq.output(0), targets))
        added.append(y)
    try:
        yield
    finally:
        for fq_out, targets in swaps:
            for t in targets:
                t.replace_source_output(fq_out)
        for inp in entries:
            inp.get_source_output().remove_target_input(inp)
        del added
        for inp, source in zip(folded, originals):
            inp.replace_source_output(source)


def compile_with_outputs(model: ov.Model, outputs: list[ov.Output]) -> ov.CompiledModel:
    """``model``'s parameters to ``outputs`` (tensors of ``model``), compiled on CPU in f32
    (THROUGHPUT hint); ``model`` is left as it was.

    :raises ModelError: when the plugin cannot compile it.
    """
    results = [ops.result(o) for o in outputs]
    try:
        return _compile_f32(model, results, "capture")
    finally:
        for r in results:
            r.input(0).get_source_output().remove_target_input(r.input(0))


def capture_outputs(model: ov.Model, outputs: list[ov.Output], samples: Iterable[tuple[int, dict[str, np.ndarray]]],
                    requests_number: int | None = None) -> list[list[np.ndarray]]:
    """The values of ``outputs`` for each sample (keep ``samples`` few: everything stays in memory).

    :return: per sample, in sample order, one array per output.
    :raises EngineError: when inference fails.
    """
    compiled = compile_with_outputs(model, outputs)
    got: dict[int, list[np.ndarray]] = {}

    def on_done(request: ov.InferRequest, position: int) -> None:
        got[position] = [np.array(request.get_output_tensor(k).data) for k in range(len(outputs))]

    count = run_samples(compiled, samples, on_done, "while capturing activations", requests_number)
    return [got[k] for k in range(count)]


def run_samples(compiled: ov.CompiledModel, samples: Iterable[tuple[int, dict[str, np.ndarray]]],
                on_done: Callable[[ov.InferRequest, int], None], what: str,
                requests_number: int | None = None, after_start: Callable[[], None] | None = None) -> int:
    """Infer every sample asynchronously; ``on_done(request, position)`` reads each result.

    ``on_done`` runs in the runtime's threads, in completion order (``position`` is the sample's
    0-based order); an exception it raises is kept and reported after the queue drained, never
    let into the runtime's thread. In-flight requests always finish before this returns or
    raises (Ctrl-C included), so no callback outlives the queue.

    :param compiled: the compiled model.
    :param samples: ``(key, {input: array})`` pairs.
    :param on_done: the result handler.
    :param what: how the error message names the step (``"during statistics collection"``).
    :param requests_number: parallel infer requests (default: the plugin's optimal number).
    :param after_start: called after each sample started (progress reporting).
    :return: samples started.
    :raises EngineError: when inference or ``on_done`` fails.
    :raises PotError: as raised by the sample iterator (data errors, already one clear line).
    """
    errors: list[str] = []

    def callback(request: ov.InferRequest, position: int) -> None:
        try:
            on_done(request, position)
        except Exception as e:  # an exception must not escape into the runtime's thread
            errors.append(f"{type(e).__name__}: {e}")

    nireq = requests_number or compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
    queue = ov.AsyncInferQueue(compiled, max(1, int(nireq)))
    queue.set_callback(callback)
    stateful = is_stateful(queue)
    count = 0
    drained = False
    try:
        for _, inputs in samples:
            try:
                start_sample(queue, inputs, count, stateful)
            except Exception as e:
                errors.append(runtime_error_text(e))
                break
            count += 1
            if after_start is not None:
                after_start()
        queue.wait_all()
        drained = True
    except PotError:
        raise
    except Exception as e:
        raise EngineError(f"inference failed {what}: {runtime_error_text(e)}") from e
    finally:
        if not drained:  # Ctrl-C, SIGTERM or an error: let in-flight requests finish before the
            wait_for_requests(queue)  # queue is destroyed (else their callbacks can crash the process)
    if errors:
        raise EngineError(f"inference failed {what}: {errors[0]}")
    return count


def is_stateful(queue: ov.AsyncInferQueue) -> bool:
    """Whether the queue's model keeps a state between inferences (ReadValue/Assign variables)."""
    return bool(queue[0].query_state())


def start_sample(queue: ov.AsyncInferQueue, inputs: dict[str, np.ndarray], userdata, stateful: bool) -> None:
    """Start one sample on ``queue``; on a stateful model, from the variables' initial values.

    Calibration samples are independent, so each one starts from a reset state, as NNCF's
    OpenVINO engine does (a state carried over from whichever sample the request ran before
    would make the statistics depend on scheduling). ``start_async`` takes the idle request that
    ``get_idle_request_id`` names: both read the front of the queue's idle list.
    """
    if stateful:
        queue[queue.get_idle_request_id()].reset_state()
    queue.start_async(inputs, userdata=userdata)


def wait_for_requests(queue: ov.AsyncInferQueue) -> None:
    """Wait for every in-flight request of ``queue``, even while an interrupt or an error is
    propagating (a second Ctrl-C during the wait is ignored: the wait takes one inference at
    most; a failed request, which ``wait_all`` raises again after waiting, is already being
    reported by the caller)."""
    while True:
        try:
            queue.wait_all()
            return
        except KeyboardInterrupt:
            continue
        except Exception:  # the failure the caller is reporting: wait_all raised it once all finished
            return


class _Accumulator:
    """Folds the per-sample values of one request, in sample order.

    MIN, MAX, SHAPE and the per-tensor quantiles keep one row per sample (a few numbers each);
    the per-channel reductions keep only their running min, max or float64 sum, so memory does
    not grow with the number of samples.
    """

    def __init__(self, reduction: Reduction):
        self.reduction = reduction
        self.rows: list[np.ndarray] = []
        self.acc: np.ndarray | None = None
        self.n = 0

    def add(self, value: np.ndarray) -> None:
        self.n += 1
        r = self.reduction
        if r in _PER_SAMPLE:
            self.rows.append(value)
        elif self.acc is None:
            self.acc = value.copy()
        elif r in _FOLD_MIN:
            np.minimum(self.acc, value, out=self.acc)
        elif r in _FOLD_MAX:
            np.maximum(self.acc, value, out=self.acc)
        else:  # MEAN_PER_CHANNEL, MEAN_MIN_PER_CHANNEL, MEAN_MAX_PER_CHANNEL: a running sum
            self.acc += value

    def result(self) -> np.ndarray:
        if self.reduction in _PER_SAMPLE:
            return np.stack(self.rows) if self.rows else np.zeros((0,))
        if self.acc is None:
            return np.zeros((0,))
        averaged = (Reduction.MEAN_PER_CHANNEL, Reduction.MEAN_MIN_PER_CHANNEL, Reduction.MEAN_MAX_PER_CHANNEL)
        value = self.acc / self.n if self.reduction in averaged else self.acc
        return value[None]


class _InOrderFolder:
    """Feeds per-sample results to the accumulators in sample order, whatever order the
    asynchronous requests finish in, so float sums (and the saved model) are the same on every
    run. At most about one result per infer request waits in the buffer."""

    def __init__(self, accumulators: list[_Accumulator]):
        self._accumulators = accumulators
        self._pending: dict[int, list[np.ndarray]] = {}
        self._next = 0
        self._lock = threading.Lock()
        self.done = 0

    def add(self, position: int, values: list[np.ndarray]) -> None:
        with self._lock:
            self._pending[position] = values
            while self._next in self._pending:
                for acc, value in zip(self._accumulators, self._pending.pop(self._next)):
                    acc.add(value)
                self._next += 1
                self.done += 1
