"""Activation statistics collected on the OpenVINO runtime in one asynchronous pass.

Reductions run inside the graph: for each requested tensor the collector attaches ReduceMin,
ReduceMax, ReduceMean (per channel) or ShapeOf nodes and makes them outputs of a temporary model.
Only those small outputs come back to Python, so memory grows with
``samples x channels``, never with the activation size. The model is compiled with
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

from pot_cli.errors import EngineError
from pot_cli.graph.model import compile_model

log = logging.getLogger("pot")


class Reduction(str, Enum):
    """What is computed per sample for a tensor ``x`` of shape ``(N=1, C, ...)``."""

    MIN = "min"  #: ``min(x)`` over all elements, a scalar
    MAX = "max"  #: ``max(x)`` over all elements, a scalar
    MIN_PER_CHANNEL = "min_per_channel"  #: min over all axes but the channel axis, shape ``(C,)``
    MAX_PER_CHANNEL = "max_per_channel"  #: max over all axes but the channel axis, shape ``(C,)``
    MEAN_PER_CHANNEL = "mean_per_channel"  #: mean over all axes but the channel axis, shape ``(C,)``
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
    """Per-sample statistics: ``(output, reduction, channel_axis) -> array (n_samples, ...)``, float64."""

    def __init__(self, values: dict[tuple[ov.Output, Reduction], np.ndarray], n_samples: int):
        self._values = values
        self.n_samples = n_samples

    def get(self, output: ov.Output, reduction: Reduction, channel_axis: int | None = None) -> np.ndarray:
        """Per-sample values of ``reduction`` on ``output``: shape ``(n_samples,)`` for MIN/MAX,
        ``(n_samples, C)`` for the per-channel ones, ``(n_samples, rank)`` for SHAPE.

        :raises KeyError: when it was not requested.
        """
        return self._values[(output, reduction, channel_axis)]

    def __contains__(self, key) -> bool:
        return key in self._values


def _reducer(req: StatisticRequest) -> ov.Node:
    x = req.output
    rank = x.get_partial_shape().rank
    if req.reduction == Reduction.SHAPE:
        return ops.shape_of(x, output_type="i64")
    if rank.is_dynamic:
        raise EngineError(f"tensor '{x.get_node().get_friendly_name()}': dynamic rank; cannot collect statistics")
    r = rank.get_length()
    if req.channel_axis is not None:
        axes = ops.constant(np.array([a for a in range(r) if a != req.channel_axis % r], dtype=np.int64))
    else:
        axes = ops.constant(np.arange(r, dtype=np.int64))
    reduce = {Reduction.MIN: ops.reduce_min, Reduction.MIN_PER_CHANNEL: ops.reduce_min,
              Reduction.MAX: ops.reduce_max, Reduction.MAX_PER_CHANNEL: ops.reduce_max,
              Reduction.MEAN_PER_CHANNEL: ops.reduce_mean}[req.reduction]
    return reduce(x, axes, keep_dims=False)


def collect_statistics(model: ov.Model, requests: list[StatisticRequest],
                       samples: Iterable[tuple[int, dict[str, np.ndarray]]], n_samples: int,
                       progress: Callable[[int], None] | None = None,
                       requests_number: int | None = None) -> Statistics:
    """Run the calibration samples once and return the requested per-sample reductions.

    The reducer nodes are attached to ``model`` only while the temporary model is compiled, and
    detached afterwards; ``model`` is left as it was.

    :param model: the floating-point model being quantized.
    :param requests: what to collect (duplicates are merged).
    :param samples: ``(position, {input_name: array})`` pairs, positions ``0..n_samples-1``;
        arrays are ready to feed (batch 1, model layout, model dtype).
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
    reducers = [_reducer(r) for r in unique]
    results = [ops.result(n) for n in reducers]
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
    per_sample: list[list[np.ndarray] | None] = [None] * n_samples
    errors: list[str] = []
    lock = threading.Lock()
    done = [0]

    def on_done(request: ov.InferRequest, position: int) -> None:
        per_sample[position] = [np.array(request.get_output_tensor(k).data, dtype=np.float64)
                                for k in range(len(unique))]
        with lock:
            done[0] += 1

    queue = ov.AsyncInferQueue(compiled, max(1, int(nireq)))
    queue.set_callback(on_done)
    started = time.perf_counter()
    count = 0
    try:
        for position, inputs in samples:
            try:
                queue.start_async(inputs, userdata=position)
            except Exception as e:
                errors.append(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
                break
            count += 1
            if progress is not None:
                progress(done[0])
        queue.wait_all()
    except Exception as e:
        raise EngineError(f"inference failed during statistics collection: {str(e).strip().splitlines()[0]}") from e
    if errors:
        raise EngineError(f"inference failed during statistics collection: {errors[0]}")
    if progress is not None:
        progress(done[0])
    rows = [r for r in per_sample if r is not None]
    log.debug("statistics: %d samples in %.2f s", len(rows), time.perf_counter() - started)
    values: dict = {}
    for k, req in enumerate(unique):
        values[(req.output, req.reduction, req.channel_axis)] = np.stack([r[k] for r in rows]) if rows else np.zeros((0,))
    return Statistics(values, len(rows))
