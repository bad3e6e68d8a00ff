"""FastBiasCorrection: cancel the mean output shift that weight quantization causes.

Quantizing the weights of a layer ``y = W * x + b`` changes its output by ``(W_q - W) * x``, whose
expectation over the data is a per-channel shift ``E[(W_q - W) * x]``. Subtracting it from the
bias restores the mean output of every channel (Nagel et al., 2019, "Data-Free Quantization
Through Weight Equalization and Bias Correction", section 4.2; empirical variant of the original
POT's FastBiasCorrection). The expectation is computed by running the layer itself, with
``W_q - W`` as weights, on a tensor filled with the per-channel mean of its input: one small model
for all layers, compiled once, so padding, strides, groups and dilations are exact.

Each channel's shift is limited to ``threshold * |bias|`` (POT's ``threshold``, default 2.0),
guarding against channels whose bias is tiny compared with the shift; the original POT skipped
the whole layer when any channel exceeded it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from pot_cli.algorithms.min_max import WeightQuantizer
from pot_cli.graph.model import compile_model, evaluate_constants
from pot_cli.graph.patterns import bias_port, find_bias_add, input_channel_axis, output_channel_axis
from pot_cli.statistics.collector import Reduction, StatisticRequest, Statistics

log = logging.getLogger("pot")

_NUMPY = {ov.Type.f32: np.float32, ov.Type.f16: np.float16}


@dataclass
class BiasCorrectionRecord:
    """What happened to one layer's bias (for the report).

    :param layer: friendly name of the weighted op.
    :param applied: whether the bias was changed.
    :param max_shift: max over channels of ``|shift|`` (output units).
    :param magnitude: ``max|shift / bias|``.
    :param clipped_channels: channels whose shift was limited to ``threshold * |bias|``.
    """

    layer: str
    applied: bool
    max_shift: float
    magnitude: float
    clipped_channels: int = 0


@dataclass
class _Layer:
    weights: WeightQuantizer
    add: ov.Node
    port: int
    bias: np.ndarray | None = None
    shift: np.ndarray | None = None


def _same_op(node: ov.Node, data: ov.Output, weights: ov.Output) -> ov.Node:
    """A new op of ``node``'s type and attributes on other inputs (data, weights)."""
    t, a = node.get_type_name(), node.get_attributes()
    if t == "MatMul":
        return ops.matmul(data, weights, a["transpose_a"], a["transpose_b"])
    conv = {"Convolution": ops.convolution, "GroupConvolution": ops.group_convolution}.get(t)
    if conv is not None:
        return conv(data, weights, a["strides"], a["pads_begin"], a["pads_end"], a["dilations"], a["auto_pad"].upper())
    deconv = {"ConvolutionBackpropData": ops.convolution_backprop_data,
              "GroupConvolutionBackpropData": ops.group_convolution_backprop_data}[t]
    return deconv(data, weights, a["strides"], pads_begin=a["pads_begin"], pads_end=a["pads_end"],
                  dilations=a["dilations"], auto_pad=a["auto_pad"].upper(), output_padding=a["output_padding"])


class FastBiasCorrection:
    """Plans and applies bias correction for the weighted layers that have a bias Add.

    :param threshold: each channel's shift is limited to ``threshold * |bias|``.
    """

    def __init__(self, threshold: float = 2.0):
        self.threshold = threshold
        self.layers: list[_Layer] = []

    def plan(self, weights: list[WeightQuantizer], is_constant) -> None:
        """Pick the layers to correct: port-1 weights followed by a per-channel bias Add.

        :param weights: the weight quantizers of MinMaxQuantization.
        :param is_constant: predicate on an output: constant sub-graph.
        """
        self.layers = []
        for w in weights:
            if w.port != 1 or w.node.get_input_size() != 2:
                continue
            add = find_bias_add(w.node, is_constant)
            if add is not None:
                self.layers.append(_Layer(w, add, bias_port(add, w.node)))

    def statistic_requests(self) -> list[StatisticRequest]:
        """Per-channel mean of each corrected layer's data input (and its shape when dynamic)."""
        reqs = []
        for layer in self.layers:
            data = layer.weights.node.input(0).get_source_output()
            reqs.append(StatisticRequest(data, Reduction.MEAN_PER_CHANNEL, input_channel_axis(layer.weights.node)))
            if data.get_partial_shape().is_dynamic:
                reqs.append(StatisticRequest(data, Reduction.SHAPE))
        return reqs

    def compute(self, stats: Statistics) -> None:
        """Compute the shift of every planned layer (needs ``compute_weights`` done).

        :param stats: per-sample input means (and shapes) requested by :meth:`statistic_requests`.
        """
        if not self.layers or stats.n_samples == 0:
            return
        shifts = self._layer_outputs_on_means(
            stats, data_of=lambda node: node.input(0).get_source_output(),
            weights_of=lambda layer: layer.weights.dequantized - layer.weights.value)
        for layer, shift in zip(self.layers, shifts):
            layer.shift = shift

    def _layer_outputs_on_means(self, stats: Statistics, data_of, weights_of) -> list[np.ndarray]:
        """Run every planned layer, with other weights, on a tensor filled with its input's
        per-channel mean; one model for all layers, compiled once. Also reads the biases.

        :param stats: holds MEAN_PER_CHANNEL (and SHAPE when dynamic) of ``data_of(node)``.
        :param data_of: node -> the tensor whose statistics describe the layer's input.
        :param weights_of: layer -> float32 weights to run with, the port's shape.
        :return: per layer, the per-channel mean of the output, shape ``(C_out,)`` float32.
        """
        biases = evaluate_constants([l.add.input(l.port).get_source_output() for l in self.layers])
        params, results = [], []
        for layer, bias in zip(self.layers, biases):
            layer.bias = bias.astype(np.float32)
            node = layer.weights.node
            data = data_of(node)
            mean = stats.get(data, Reduction.MEAN_PER_CHANNEL, input_channel_axis(node)).mean(axis=0)
            pshape = data.get_partial_shape()
            if pshape.is_dynamic:
                shape = [int(v) for v in stats.get(data, Reduction.SHAPE)[0]]
            else:
                shape = [d.get_length() for d in pshape]
            shape[0] = 1 if len(shape) > 1 else shape[0]
            axis = input_channel_axis(node) % len(shape)
            view = [1] * len(shape)
            view[axis] = shape[axis]
            et = data.get_element_type()
            dtype = _NUMPY.get(et, np.float32)
            param = ops.parameter(shape, et)
            clone = _same_op(node, param.output(0), ops.constant(np.asarray(weights_of(layer), dtype=dtype)).output(0))
            out_rank = clone.get_output_partial_shape(0).rank.get_length()
            out_axis = output_channel_axis(node) % out_rank
            axes = [a for a in range(out_rank) if a != out_axis]
            reduced = ops.reduce_mean(clone, ops.constant(np.array(axes, dtype=np.int64)), keep_dims=False)
            params.append((param, np.broadcast_to(mean.reshape(view), shape).astype(dtype)))
            results.append(ops.result(reduced))
        model = ov.Model(results, [p for p, _ in params], "layers_on_means")
        compiled = compile_model(model, {"INFERENCE_PRECISION_HINT": "f32"})
        out = compiled([f for _, f in params])
        return [np.asarray(out[compiled.output(k)], dtype=np.float32) for k in range(len(self.layers))]

    def apply(self, replace_bias) -> list[BiasCorrectionRecord]:
        """Subtract the shifts from the biases where the threshold allows.

        :param replace_bias: ``replace_bias(add_input, new_value, name)`` edits the graph.
        :return: one record per planned layer.
        """
        records = []
        for layer in self.layers:
            if layer.shift is None:
                continue
            bias = layer.bias
            shift = layer.shift.reshape(-1)
            flat = bias.reshape(-1)
            if flat.size != shift.size:
                continue
            eps = np.finfo(np.float32).eps
            magnitude = float(np.max(np.abs(shift / np.where(np.abs(flat) < eps, eps, flat))))
            # per channel, the shift is limited to threshold * |bias| (a channel with a ~0 bias
            # gets no correction) instead of skipping the whole layer as the original POT did:
            # measured here, mobilenet_v2 logits cosine 0.9888 -> 0.9929, top-1 agreement
            # 0.893 -> 0.900, mp_face_detection_short classificators cosine 0.9659 -> 0.9677
            limit = self.threshold * np.abs(flat)
            clipped = np.clip(shift, -limit, limit)
            applied = bool(np.any(clipped != 0))
            if applied:
                new = (flat - clipped).reshape(bias.shape)
                replace_bias(layer.add.input(layer.port), new, f"{layer.weights.node.get_friendly_name()}/bias_corrected")
            records.append(BiasCorrectionRecord(layer.weights.node.get_friendly_name(), applied,
                                                float(np.max(np.abs(shift))), magnitude,
                                                int(np.count_nonzero(clipped != shift))))
        return records
