"""ActivationChannelAlignment: centre (and equalise) the channels of a tensor between two layers.

A tensor that is quantized per tensor wastes levels when its channels live in different ranges:
a channel in ``[5, 7]`` next to one in ``[-40, 40]`` gets a handful of levels. When the tensor is
produced by a layer with a bias and consumed by a linear layer, every channel ``c`` can be moved
without changing the float model::

    producer:  x_c = W_in[c] * a + b_in[c]          (Convolution, GroupConvolution, MatMul)
    between:   only ops f with f(s * x + t) = s * f(x) + t per channel (MaxPool, AvgPool)
    consumer:  y = sum_c W_out[:, c] * x_c + b_out   (Convolution without padding, MatMul)

With ``m_c`` the middle of channel ``c``'s range and ``f_c = sqrt(w_c / median_c(w_c))`` (``w_c``
the width of channel ``c``'s range), the aligned model computes ``x'_c = (x_c - m_c) / f_c``:

* shift: ``b_in[c] -= m_c`` and ``b_out += sum_{c,k} W_out[:, c, k] * m_c`` (summed over input
  channels and kernel positions; exact because the consumer has no padding, so every output
  position reads a full window of shifted inputs);
* scale: ``W_in[c] /= f_c``, ``b_in[c] /= f_c`` and ``W_out[:, c] *= f_c`` (the width ratio
  clipped to ``[1e-2, 1e2]`` first, 1 for a constant channel).

The float model's output is unchanged (up to float rounding); the tensor between the layers is
centred on zero, which is what a symmetric per-tensor quantizer wants, and its channel widths are
closer to each other. Ranges are the per-sample per-channel minima and maxima averaged over the
calibration samples (the estimator MinMaxQuantization uses for activation ranges).

The square root is a departure from POT, which equalised the widths fully (``f_c = w_c / median``)
and so multiplied the consumer's weight columns of wide channels by up to 100, coarsening that
layer's per-channel weight grid. Moving each channel half-way shares the correction between the
activation and the weights, as cross-layer equalisation balances two weight tensors (Nagel et al.,
2019, "Data-Free Quantization Through Weight Equalization and Bias Correction", section 4.1).
Measured here with DefaultQuantization, output cosine to FP32 on random crops (paired bootstrap
standard deviations in parentheses): mp_face_detection_short classificators 0.9675 without
alignment, 0.9688 with full equalisation, 0.9740 with the square root (+-0.0009); regressors
0.98419, 0.98512, 0.98583 (+-0.0001); mobilenet_v2 logits 0.99095, 0.99197, 0.99185 (+-0.0001);
ppocrv4_det probability-mask F1 0.9334, 0.9312, 0.9325 (+-0.0025, no significant change).

This is the original POT's ActivationChannelAlignment (the first step of its
DefaultQuantization; NNCF's ``ChannelAlignment``, there disabled by default), on the OpenVINO
graph: POT aligned ``Convolution -> [bias Add] -> Convolution`` pairs whose consumer has no
padding, stride 1 and one group. Here the producer may also be a GroupConvolution (a depthwise
convolution feeding a 1x1 convolution) or a MatMul, the consumer a MatMul with 2-D constant
weights, the consumer may have strides or dilations (harmless without padding), and MaxPool or
AvgPool ops may sit between the two layers. The shift needs both biases; without a consumer bias
only the scales are aligned.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import openvino as ov

from pot_cli.graph.insertion import replace_constant_input
from pot_cli.graph.model import check_ignored_scope, evaluate_constants, is_constant_subgraph
from pot_cli.graph.patterns import (bias_port, find_bias_add, input_channel_axis, is_float, output_channel_axis,
                                    weight_channel_axes)
from pot_cli.statistics.collector import Reduction, StatisticRequest, Statistics

log = logging.getLogger("pot")

#: per-channel width ratios are clipped to ``[1 / SCALE_LIMIT, SCALE_LIMIT]`` (POT's bounds)
SCALE_LIMIT = 100.0
#: ``f_c = ratio_c ** SCALE_POWER``: 0.5 moves each channel half-way (in log scale) to the median
#: width, sharing the correction between the tensor and the consumer's weight columns (POT: 1.0)
SCALE_POWER = 0.5
#: ops between the layers, at most this many
MAX_PATH_OPS = 4

_PRODUCERS = frozenset({"Convolution", "GroupConvolution", "MatMul"})


@dataclass
class AlignmentPair:
    """Two layers whose in-between tensor can be aligned.

    :param producer: Convolution, GroupConvolution or MatMul with constant weights on port 1.
    :param bias_add: the producer's bias Add (its bias is on port ``bias_port``).
    :param bias_port: port of ``bias_add`` holding the bias.
    :param consumer: Convolution (one group, no padding) or MatMul (2-D constant weights) reading
        the tensor on port 0.
    :param consumer_bias_add: the consumer's bias Add, or None (then no shift is possible).
    :param tensor: the consumer's data input (where the statistics are taken and where the
        FakeQuantize will go), float, rank ``R``.
    :param axis: channel axis of ``tensor`` in ``[0, R)``.
    :param path: types of the ops between ``bias_add`` and ``consumer`` (e.g. ``("MaxPool",)``).
    """

    producer: ov.Node
    bias_add: ov.Node
    bias_port: int
    consumer: ov.Node
    consumer_bias_add: ov.Node | None
    tensor: ov.Output
    axis: int
    path: tuple[str, ...] = ()


@dataclass
class AlignmentRecord:
    """What was done to one pair (a row of ``report.json``'s ``channel_alignment.pairs``).

    :param producer: friendly name of the producing layer.
    :param consumer: friendly name of the consuming layer.
    :param channels: number of channels of the tensor.
    :param shifted: whether the channel centres were moved to zero.
    :param scaled: whether the channel widths were equalised.
    :param range_before: ``[min, max]`` over channels of the averaged per-channel ranges, before.
    :param range_after: the same after alignment (computed from the statistics).
    :param max_shift: ``max_c |m_c|``, tensor units (0 when not shifted).
    :param scale_min: smallest ``f_c`` (1 when not scaled).
    :param scale_max: largest ``f_c``.
    :param path: ops between the two layers.
    """

    producer: str
    consumer: str
    channels: int
    shifted: bool
    scaled: bool
    range_before: list[float]
    range_after: list[float]
    max_shift: float = 0.0
    scale_min: float = 1.0
    scale_max: float = 1.0
    path: list[str] | None = None


def _zero_padding(node: ov.Node) -> bool:
    """True when a Convolution reads no padded value (explicit zero pads, ``valid``, or ``same_*``
    with a 1x1 kernel, whose padding is zero)."""
    a = node.get_attributes()
    auto_pad = str(a.get("auto_pad", "explicit")).lower()
    if auto_pad == "valid":
        return True
    if auto_pad in ("same_upper", "same_lower"):
        kernel = node.get_input_partial_shape(1)
        return kernel.rank.is_static and all(d.is_static and d.get_length() == 1 for d in list(kernel)[2:])
    return not any(a.get("pads_begin", [])) and not any(a.get("pads_end", []))


def _commutes(node: ov.Node) -> bool:
    """True for ops ``f`` with ``f(s * x + t) = s * f(x) + t`` per channel (``s > 0``): MaxPool
    (padding is never selected), AvgPool without padded values in the average."""
    t = node.get_type_name()
    if t == "MaxPool":
        # the indices output (MaxPool-8) must be unused
        return all(not node.output(k).get_target_inputs() for k in range(1, node.get_output_size()))
    if t == "AvgPool":
        a = node.get_attributes()
        exclude = bool(a.get("exclude-pad", a.get("exclude_pad", False)))
        return exclude or (not any(a.get("pads_begin", [])) and not any(a.get("pads_end", []))
                           and str(a.get("auto_pad", "explicit")).lower() in ("explicit", "notset", "valid"))
    return False


class ActivationChannelAlignment:
    """Finds alignable layer pairs, requests their statistics and edits weights and biases.

    Two-phase contract: :meth:`statistic_requests` (plans on the model), then :meth:`apply` with
    the collected statistics. The model is edited in place; its float outputs do not change.

    :param ignored_scope: friendly names of nodes left alone (as producer, bias or consumer).
    :param ignored_types: op types left alone.
    :param align_scales: also move channel widths half-way to the median width (POT moved them
        all the way); False only centres channels.
    """

    def __init__(self, ignored_scope: tuple[str, ...] = (), ignored_types: tuple[str, ...] = (),
                 align_scales: bool = True):
        self.ignored_scope = frozenset(ignored_scope)
        self.ignored_types = frozenset(ignored_types)
        self.align_scales = align_scales
        self.pairs: list[AlignmentPair] = []
        self._constant_cache: dict = {}

    def _is_constant(self, output: ov.Output) -> bool:
        return is_constant_subgraph(output, self._constant_cache)

    def _ignored(self, node: ov.Node) -> bool:
        return node.get_friendly_name() in self.ignored_scope or node.get_type_name() in self.ignored_types

    def _weights_ok(self, node: ov.Node) -> bool:
        w = node.input(1).get_source_output()
        if not is_float(w) or not self._is_constant(w) or w.get_partial_shape().is_dynamic:
            return False
        rank = w.get_partial_shape().rank.get_length()
        return bool(weight_channel_axes(node, rank))

    def plan(self, model: ov.Model) -> list[AlignmentPair]:
        """Find the pairs to align (fills and returns ``pairs``, in topological order).

        :param model: the floating-point model (not modified).
        :raises ConfigError: when an ignored scope name matches no node.
        """
        check_ignored_scope(model, sorted(self.ignored_scope))
        self._constant_cache = {}
        self.pairs = []
        for node in model.get_ordered_ops():
            if node.get_type_name() not in _PRODUCERS or self._ignored(node):
                continue
            pair = self._pair_from(node)
            if pair is not None:
                self.pairs.append(pair)
        return self.pairs

    def _pair_from(self, producer: ov.Node) -> AlignmentPair | None:
        if self._is_constant(producer.input(0).get_source_output()) or not self._weights_ok(producer):
            return None
        add = find_bias_add(producer, self._is_constant)
        if add is None or self._ignored(add):
            return None
        out, path = add.output(0), []
        consumer = None
        while len(path) <= MAX_PATH_OPS:
            targets = list(out.get_target_inputs())
            if len(targets) != 1 or targets[0].get_index() != 0:
                return None
            node = targets[0].get_node()
            if node.get_type_name() in ("Convolution", "MatMul"):
                consumer = node
                break
            if not _commutes(node) or self._ignored(node):
                return None
            path.append(node.get_type_name())
            out = node.output(0)
        if consumer is None or self._ignored(consumer) or not self._weights_ok(consumer):
            return None
        t = consumer.get_type_name()
        if t == "Convolution" and not _zero_padding(consumer):
            return None
        if t == "MatMul" and consumer.get_attributes().get("transpose_a"):
            return None
        pshape = out.get_partial_shape()
        if pshape.rank.is_dynamic:
            return None
        rank = pshape.rank.get_length()
        axis = output_channel_axis(producer) % rank
        if input_channel_axis(consumer) % rank != axis or pshape[axis].is_dynamic:
            return None
        consumer_bias = find_bias_add(consumer, self._is_constant)
        if consumer_bias is not None and self._ignored(consumer_bias):
            consumer_bias = None
        return AlignmentPair(producer, add, bias_port(add, producer), consumer, consumer_bias, out, axis, tuple(path))

    def statistic_requests(self, model: ov.Model) -> list[StatisticRequest]:
        """Plan on ``model`` and return the per-channel range statistics of every pair's tensor."""
        self.plan(model)
        reqs = []
        for p in self.pairs:
            reqs.append(StatisticRequest(p.tensor, Reduction.MEAN_MIN_PER_CHANNEL, p.axis))
            reqs.append(StatisticRequest(p.tensor, Reduction.MEAN_MAX_PER_CHANNEL, p.axis))
        return reqs

    def apply(self, model: ov.Model, stats: Statistics) -> list[AlignmentRecord]:
        """Align every planned pair in place (pairs sharing a layer are applied in order).

        :param model: the model planned by :meth:`statistic_requests`.
        :param stats: per-channel averaged minima and maxima of each pair's tensor.
        :return: one record per aligned pair.
        """
        if not self.pairs or stats.n_samples == 0:
            return []
        # current values of every weight and bias input touched, keyed by (node id, port): a
        # layer can be the consumer of one pair and the producer of the next
        inputs: dict[tuple[int, int], ov.Input] = {}
        for p in self.pairs:
            inputs[(p.producer.get_instance_id(), 1)] = p.producer.input(1)
            inputs[(p.bias_add.get_instance_id(), p.bias_port)] = p.bias_add.input(p.bias_port)
            inputs[(p.consumer.get_instance_id(), 1)] = p.consumer.input(1)
            if p.consumer_bias_add is not None:
                port = bias_port(p.consumer_bias_add, p.consumer)
                inputs[(p.consumer_bias_add.get_instance_id(), port)] = p.consumer_bias_add.input(port)
        keys = list(inputs)
        values = dict(zip(keys, (v.astype(np.float32) for v in
                                 evaluate_constants([inputs[k].get_source_output() for k in keys]))))
        changed: set[tuple[int, int]] = set()
        records = []
        for p in self.pairs:
            lo = stats.get(p.tensor, Reduction.MEAN_MIN_PER_CHANNEL, p.axis).reshape(-1)
            hi = stats.get(p.tensor, Reduction.MEAN_MAX_PER_CHANNEL, p.axis).reshape(-1)
            record = self._align(p, lo.astype(np.float64), hi.astype(np.float64), values, changed)
            if record is not None:
                records.append(record)
        for key in sorted(changed, key=keys.index):
            inp = inputs[key]
            replace_constant_input(inp, values[key], f"{inp.get_node().get_friendly_name()}/aligned_{inp.get_index()}")
        if changed:
            model.validate_nodes_and_infer_types()
        return records

    def _align(self, p: AlignmentPair, lo: np.ndarray, hi: np.ndarray, values: dict,
               changed: set) -> AlignmentRecord | None:
        """Edit ``values`` (current weights and biases by input key) for pair ``p`` from its
        channel ranges ``lo``/``hi`` (shape ``(C,)``); the keys edited are added to ``changed``."""
        channels = lo.size
        if channels == 0 or hi.size != channels or not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            return None
        w_in_key = (p.producer.get_instance_id(), 1)
        b_in_key = (p.bias_add.get_instance_id(), p.bias_port)
        w_out_key = (p.consumer.get_instance_id(), 1)
        b_out_key = None
        if p.consumer_bias_add is not None:
            b_out_key = (p.consumer_bias_add.get_instance_id(), bias_port(p.consumer_bias_add, p.consumer))
        w_in, b_in, w_out = values[w_in_key], values[b_in_key], values[w_out_key]
        in_axes = weight_channel_axes(p.producer, w_in.ndim)
        out_axis = _consumer_input_axis(p.consumer, w_out.ndim)
        if (b_in.size != channels or w_out.shape[out_axis] != channels
                or int(np.prod([w_in.shape[a] for a in in_axes])) != channels):
            return None
        shift = b_out_key is not None and values[b_out_key].size == _consumer_outputs(p.consumer, w_out)
        mean = (lo + hi) / 2.0 if shift else np.zeros(channels)
        width = hi - lo
        scale = np.ones(channels)
        if self.align_scales:
            positive = width > np.finfo(np.float32).eps * np.maximum(1.0, np.abs(mean))
            if positive.any():
                ratio = np.clip(np.where(positive, width / np.median(width[positive]), 1.0),
                                1.0 / SCALE_LIMIT, SCALE_LIMIT)
                scale = ratio ** SCALE_POWER
        scaled = bool(np.any(scale != 1.0))
        if not shift and not scaled:
            return None
        if shift:
            values[b_out_key] = (values[b_out_key].reshape(-1)
                                 + _consumer_response(p.consumer, w_out, mean)).reshape(values[b_out_key].shape)
            values[b_in_key] = (b_in.reshape(-1) - mean).reshape(b_in.shape)
            changed.update({b_out_key, b_in_key})
        if scaled:
            view_in = [1] * w_in.ndim
            for a in in_axes:
                view_in[a] = w_in.shape[a]
            values[w_in_key] = (w_in / scale.reshape(view_in)).astype(np.float32)
            values[b_in_key] = (values[b_in_key].reshape(-1) / scale).reshape(b_in.shape)
            view_out = [1] * w_out.ndim
            view_out[out_axis] = channels
            values[w_out_key] = (w_out * scale.reshape(view_out)).astype(np.float32)
            changed.update({w_in_key, b_in_key, w_out_key})
        for key in (b_in_key, b_out_key):
            if key is not None:
                values[key] = values[key].astype(np.float32)
        new_lo, new_hi = (lo - mean) / scale, (hi - mean) / scale
        log.debug("ActivationChannelAlignment: %s -> %s: %d channels, range [%.4g, %.4g] -> [%.4g, %.4g]",
                  p.producer.get_friendly_name(), p.consumer.get_friendly_name(), channels, lo.min(), hi.max(),
                  new_lo.min(), new_hi.max())
        return AlignmentRecord(
            p.producer.get_friendly_name(), p.consumer.get_friendly_name(), channels, shift, scaled,
            [float(lo.min()), float(hi.max())], [float(new_lo.min()), float(new_hi.max())],
            max_shift=float(np.max(np.abs(mean))), scale_min=float(scale.min()), scale_max=float(scale.max()),
            path=list(p.path))


def _consumer_input_axis(consumer: ov.Node, rank: int) -> int:
    """Input-channel axis of the consumer's weights: 1 for a Convolution ``(C_out, C_in, k...)``;
    for a MatMul, K: axis 1 of ``(N, K)`` with ``transpose_b``, axis 0 of ``(K, N)``."""
    if consumer.get_type_name() == "MatMul":
        return 1 if consumer.get_attributes().get("transpose_b") else 0
    return 1


def _consumer_outputs(consumer: ov.Node, w_out: np.ndarray) -> int:
    """Number of output channels of the consumer (C_out, or N of a MatMul)."""
    if consumer.get_type_name() == "MatMul":
        return w_out.shape[0] if consumer.get_attributes().get("transpose_b") else w_out.shape[1]
    return w_out.shape[0]


def _consumer_response(consumer: ov.Node, w_out: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """The consumer's output, without bias, for an input equal to ``mean[c]`` everywhere:
    ``sum_{c,k} W_out[o, c, k] * mean[c]``, shape ``(C_out,)`` float64."""
    w = w_out.astype(np.float64)
    if consumer.get_type_name() == "MatMul":
        return w @ mean if consumer.get_attributes().get("transpose_b") else mean @ w
    return w.reshape(w.shape[0], w.shape[1], -1).sum(axis=2) @ mean
