"""OverflowCorrection: keep a GNA layer's 32-bit accumulator from overflowing (16-bit weights).

GNA multiplies 16-bit activation codes by 8- or 16-bit weight codes and sums the products in a
32-bit accumulator. A layer's output in accumulator units is ``y / (s_x * s_w)`` (``s_x``: the
scale of its input FakeQuantize, ``s_w``: its weight scale); with 16-bit weights the scales are so
fine that a large output exceeds ``2^31 - 1``. As the original POT's OverflowCorrection (run
after MinMaxQuantization when ``target_device`` is GNA):

1. statistics: per sample, the per-tensor min and max of each weighted layer's output (after its
   bias Add when there is one), computed on the float model with the calibration subset;
2. for every weighted layer whose weights are quantized with more than 8 bits (more than 256
   levels), ``n = max|y| / (max s_x * max s_w)`` with ``max|y|`` the largest absolute output over
   the calibration samples;
3. when ``n > 2^31 - 1``, the weight scale is multiplied by ``r = n / (2^31 - 1)`` (the bounds of
   the weight quantizer too) and the weights quantized again: the integer codes shrink by ``r``,
   so the accumulator of the largest observed output fits int32, at the cost of ``log2(r)`` bits
   of weight resolution. The original divided the weights by ``r`` and multiplied the weight
   FakeQuantize's output bounds by ``r``, which is the same grid.

8-bit weights are left alone: ``2^15 * 2^7 * K`` stays below ``2^31`` up to ``K = 512``
products of full-range codes, and their scale is 256 times coarser.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np
import openvino as ov

from pot_cli.algorithms.fake_quantize import dequantize, quantize_to_int
from pot_cli.algorithms.min_max import MinMaxQuantization, WeightQuantizer, carries_quantized
from pot_cli.graph.patterns import WEIGHTED_OPS
from pot_cli.statistics.collector import Reduction, StatisticRequest, Statistics

log = logging.getLogger("pot")

#: the accumulator's largest value (int32)
INT32_MAX = int(np.iinfo(np.int32).max)
#: weights with more levels than this are checked (8-bit weights have at most 256)
CHECKED_ABOVE_LEVELS = 256


@dataclass
class OverflowRecord:
    """One corrected layer.

    :param layer: friendly name of the weighted op.
    :param max_accumulator: ``max|y| / (s_x * s_w)`` before the correction (accumulator units).
    :param rescale: ``r``, the factor the weight scale was multiplied by (> 1).
    """

    layer: str
    max_accumulator: float
    rescale: float


def _output_of(node: ov.Node, is_constant) -> ov.Output:
    """The layer's output: its bias Add's output when its only consumer adds a constant, else its own."""
    targets = list(node.output(0).get_target_inputs())
    if len(targets) == 1:
        add = targets[0].get_node()
        if add.get_type_name() == "Add" and is_constant(add.input(1 - targets[0].get_index()).get_source_output()):
            return add.output(0)
    return node.output(0)


class OverflowCorrection:
    """Plans the output statistics and rescales 16-bit weights of a planned :class:`MinMaxQuantization`.

    :param min_max: the planned MinMaxQuantization (``plan`` done; ``compute_ranges`` and
        ``compute_weights`` before :meth:`apply`).
    """

    def __init__(self, min_max: MinMaxQuantization):
        self.min_max = min_max
        self._outputs: dict[int, ov.Output] = {}

    def _checked(self) -> list[WeightQuantizer]:
        return [w for w in self.min_max.weights if w.node.get_type_name() in WEIGHTED_OPS
                and self.min_max.weight_spec(w.node)[0] > 8]

    def statistic_requests(self) -> list[StatisticRequest]:
        """Per-tensor MIN and MAX of the output of each weighted layer with more than 8-bit weights."""
        reqs = []
        for w in self._checked():
            out = _output_of(w.node, self.min_max.is_constant)
            self._outputs[w.node.get_instance_id()] = out
            reqs += [StatisticRequest(out, Reduction.MIN), StatisticRequest(out, Reduction.MAX)]
        return reqs

    def _input_scale(self, node: ov.Node, port: int) -> float | None:
        """Largest scale of the activation FakeQuantize ops feeding ``node``'s input ``port``
        (directly or through the agnostic ops a quantizer was moved across); None if unquantized."""
        by_input = {(i.get_node().get_instance_id(), i.get_index()): q
                    for q in self.min_max.activations for i in q.consumers}
        scales, stack, seen = [], [node.input(port)], set()
        while stack:
            inp = stack.pop()
            key = (inp.get_node().get_instance_id(), inp.get_index())
            if key in seen:
                continue
            seen.add(key)
            if key in by_input and by_input[key].params is not None:
                scales.append(float(np.max(by_input[key].params.scale)))
                continue
            src = inp.get_source_output().get_node()
            if carries_quantized(src):
                stack.extend(src.inputs() if src.get_type_name() == "Concat" else [src.input(0)])
        return max(scales) if scales else None

    def apply(self, stats: Statistics) -> list[OverflowRecord]:
        """Rescale the weights whose largest accumulator value exceeds int32 (in the quantizers,
        before the graph is edited).

        :param stats: statistics holding the requests of :meth:`statistic_requests`.
        :return: one record per corrected layer.
        """
        records = []
        for w in self._checked():
            if w.params is None or w.params.levels <= CHECKED_ABOVE_LEVELS:
                continue
            out = self._outputs.get(w.node.get_instance_id())
            if out is None or (out, Reduction.MAX, None, None) not in stats:
                continue
            in_scale = self._input_scale(w.node, w.port ^ 1)
            if in_scale is None:
                continue
            y = max(float(np.max(np.abs(stats.get(out, Reduction.MIN)))), float(np.max(np.abs(stats.get(out, Reduction.MAX)))))
            w_scale = float(np.max(w.params.scale))
            n = y / max(in_scale * w_scale, 1e-38)
            if n <= INT32_MAX:
                continue
            r = n / INT32_MAX
            p = w.params
            w.params = dataclasses.replace(p, scale=(p.scale * r).astype(np.float32),
                                           input_low=(p.input_low * r).astype(np.float32),
                                           input_high=(p.input_high * r).astype(np.float32))
            w.codes = quantize_to_int(w.value, w.params)
            w.dequantized = dequantize(w.codes, w.params)
            records.append(OverflowRecord(w.node.get_friendly_name(), n, r))
            log.info("OverflowCorrection: %s: accumulator up to %.3g > int32; weight scale x%.4g", w.node.get_friendly_name(), n, r)
        return records
