"""Activation statistics collected on the OpenVINO runtime in one asynchronous pass.

Reductions run inside the graph: for each requested tensor the collector attaches ReduceMin,
ReduceMax, ReduceMean (per channel) or ShapeOf nodes and makes them outputs of a temporary model.
Only those small outputs come back to Python, and they are folded across samples as they
arrive (in sample order, so the result is the same on every run): the per-channel reductions
keep a running min, max or sum, the per-tensor ones a few numbers per sample. Memory therefore
does not grow with the activation size and barely with the number of samples. The model is compiled with
``INFERENCE_PRECISION_HINT=f32``: this CPU would otherwise run a float32 model in bf16 and the
statistics would carry bf16 rounding.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Iterable

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from pot_cli.errors import EngineError, PotError
from pot_cli.graph.model import compile_model

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


@dataclass(frozen=True)
class StatisticRequest:
    """One tensor and what to reduce it to.

    :param output: the node output (tensor) to observe; hashable, used as the key of the results.
    :param reduction: the per-sample reduction.
    :param channel_axis: channel axis of the per-channel reductions (may be negative), else None.
    """

    output: ov.Output
    reduction: Reduction
    channel_axis: int | None = None


class Statistics:
    """Statistics over the calibration samples: ``(output, reduction, channel_axis) -> array``, float64.

    MIN, MAX and SHAPE hold one row per sample. The per-channel reductions are already folded
    across samples (min of the minima, max of the maxima, mean of the means, mean of the per-sample
    minima or maxima) and hold one row:
    reducing that row again over axis 0 (``.min(axis=0)``, ``.max(axis=0)``, ``.mean(axis=0)``)
    gives the same values as reducing per-sample rows would.
    """

    def __init__(self, values: dict[tuple[ov.Output, Reduction], np.ndarray], n_samples: int):
        self._values = values
        self.n_samples = n_samples

    def get(self, output: ov.Output, reduction: Reduction, channel_axis: int | None = None) -> np.ndarray:
        """Values of ``reduction`` on ``output``: shape ``(n_samples,)`` for MIN/MAX,
        ``(n_samples, rank)`` for SHAPE, ``(1, C)`` for the per-channel ones (folded over the
        samples; see the class docstring).

        :raises KeyError: when it was not requested.
        """
        return self._values[(output, reduction, channel_axis)]

    def __contains__(self, key) -> bool:
        return key in self._values


def _reducer(req: StatisticRequest) -> tuple[ov.Node, ov.Node]:
    """The reduction of ``req`` as new nodes: ``(output node, node reading the model's tensor)``
    (the second is detached again after compilation). A boolean tensor (an If condition) is
    converted to f32 first (1.0 true, 0.0 false)."""
    x = req.output
    rank = x.get_partial_shape().rank
    if req.reduction == Reduction.SHAPE:
        node = ops.shape_of(x, output_type="i64")
        return node, node
    entry = None
    if x.get_element_type() == ov.Type.boolean:
        entry = ops.convert(x, ov.Type.f32)
        x = entry.output(0)
    if rank.is_dynamic:
        raise EngineError(f"tensor '{x.get_node().get_friendly_name()}': dynamic rank; cannot collect statistics")
    r = rank.get_length()
    if req.channel_axis is not None:
        axes = ops.constant(np.array([a for a in range(r) if a != req.channel_axis % r], dtype=np.int64))
    else:
        axes = ops.constant(np.arange(r, dtype=np.int64))
    reduce = {Reduction.MIN: ops.reduce_min, Reduction.MIN_PER_CHANNEL: ops.reduce_min,
              Reduction.MAX: ops.reduce_max, Reduction.MAX_PER_CHANNEL: ops.reduce_max,
              Reduction.MEAN_PER_CHANNEL: ops.reduce_mean, Reduction.MEAN_MIN_PER_CHANNEL: ops.reduce_min,
              Reduction.MEAN_MAX_PER_CHANNEL: ops.reduce_max}[req.reduction]
    node = reduce(x, axes, keep_dims=False)
    return node, entry or node


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
    pairs = [_reducer(r) for r in unique]
    reducers = [entry for _, entry in pairs]
    results = [ops.result(n) for n, _ in pairs]
    del pairs
    stats_model = ov.Model(results, model.get_parameters(), "statistics")
    try:
        compiled = compile_model(stats_model, {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "THROUGHPUT"})
    finally:
        del stats_model, results
        for node in reducers:  # detach from the model being quantized
            for inp in node.inputs():
                src = inp.get_source_output()
                if src.get_node().get_type_name() != "Constant":
                    src.remove_target_input(inp)
        del reducers
    nireq = requests_number or compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
    accumulators = [_Accumulator(r.reduction) for r in unique]
    folder = _InOrderFolder(accumulators)
    errors: list[str] = []

    def on_done(request: ov.InferRequest, position: int) -> None:
        try:
            folder.add(position, [np.array(request.get_output_tensor(k).data, dtype=np.float64)
                                  for k in range(len(unique))])
        except Exception as e:  # an exception must not escape into the runtime's thread
            errors.append(f"{type(e).__name__}: {e}")

    queue = ov.AsyncInferQueue(compiled, max(1, int(nireq)))
    queue.set_callback(on_done)
    started = time.perf_counter()
    count = 0
    drained = False
    try:
        for _, inputs in samples:
            try:
                queue.start_async(inputs, userdata=count)
            except Exception as e:
                errors.append(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
                break
            count += 1
            if progress is not None:
                progress(folder.done)
        queue.wait_all()
        drained = True
    except PotError:  # raised by the sample iterator (data errors): already one clear line
        raise
    except Exception as e:
        text = str(e).strip()
        raise EngineError("inference failed during statistics collection: "
                          f"{text.splitlines()[0] if text else type(e).__name__}") from e
    finally:
        if not drained:  # Ctrl-C, SIGTERM or an error: let in-flight requests finish before the
            wait_for_requests(queue)  # queue is destroyed (else their callbacks can crash the process)
    if errors:
        raise EngineError(f"inference failed during statistics collection: {errors[0]}")
    if progress is not None:
        progress(folder.done)
    if count and folder.done != count:
        raise EngineError(f"statistics collection lost {count - folder.done} of {count} samples")
    log.debug("statistics: %d samples in %.2f s", folder.done, time.perf_counter() - started)
    values = {(req.output, req.reduction, req.channel_axis): acc.result()
              for req, acc in zip(unique, accumulators)}
    return Statistics(values, folder.done)


def wait_for_requests(queue: ov.AsyncInferQueue) -> None:
    """Wait for every in-flight request of ``queue``, even while an interrupt is propagating
    (a second Ctrl-C during the wait is ignored: the wait takes one inference at most)."""
    while True:
        try:
            queue.wait_all()
            return
        except KeyboardInterrupt:
            continue


class _Accumulator:
    """Folds the per-sample values of one request, in sample order.

    MIN, MAX and SHAPE keep one row per sample (a few numbers each); the per-channel reductions
    keep only their running min, max or float64 sum, so memory does not grow with the number of
    samples.
    """

    def __init__(self, reduction: Reduction):
        self.reduction = reduction
        self.rows: list[np.ndarray] = []
        self.acc: np.ndarray | None = None
        self.n = 0

    def add(self, value: np.ndarray) -> None:
        self.n += 1
        r = self.reduction
        if r in (Reduction.MIN, Reduction.MAX, Reduction.SHAPE):
            self.rows.append(value)
        elif self.acc is None:
            self.acc = value.copy()
        elif r == Reduction.MIN_PER_CHANNEL:
            np.minimum(self.acc, value, out=self.acc)
        elif r == Reduction.MAX_PER_CHANNEL:
            np.maximum(self.acc, value, out=self.acc)
        else:  # MEAN_PER_CHANNEL, MEAN_MIN_PER_CHANNEL, MEAN_MAX_PER_CHANNEL: a running sum
            self.acc += value

    def result(self) -> np.ndarray:
        if self.reduction in (Reduction.MIN, Reduction.MAX, Reduction.SHAPE):
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
