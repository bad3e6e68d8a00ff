"""Graph edits: insert FakeQuantize on activations, store weights as INT8, replace biases.

All edits go through the OpenVINO graph API (``Input.replace_source_output``); the model is
edited in memory and saved by :func:`pot_cli.graph.model.save_model_atomic`.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from pot_cli.algorithms.fake_quantize import QuantizerParams


_NUMPY_TYPES = {ov.Type.f32: np.float32, ov.Type.f16: np.float16, ov.Type.f64: np.float64}


def _const(value: np.ndarray, element_type: ov.Type, name: str) -> ov.Node:
    """A named Constant of ``value`` in ``element_type`` (float32 when bf16 or unknown)."""
    node = ops.constant(np.asarray(value).astype(_NUMPY_TYPES.get(element_type, np.float32)))
    node.set_friendly_name(name)
    return node


def insert_fake_quantize(output: ov.Output, consumers: list[ov.Input], params: QuantizerParams, name: str) -> ov.Node:
    """Insert one FakeQuantize on ``output`` and make ``consumers`` read it.

    :param output: the tensor to quantize.
    :param consumers: inputs rewired to the FakeQuantize (other consumers keep the float tensor).
    :param params: bounds (``input_low == output_low``, ``input_high == output_high``) and levels.
    :param name: friendly name of the FakeQuantize; its constants are ``<name>/input_low`` etc.
    :return: the FakeQuantize node.
    """
    et = output.get_element_type()
    lo = _const(params.input_low, et, f"{name}/input_low")
    hi = _const(params.input_high, et, f"{name}/input_high")
    olo = _const(params.input_low, et, f"{name}/output_low")
    ohi = _const(params.input_high, et, f"{name}/output_high")
    fq = ops.fake_quantize(output, lo, hi, olo, ohi, params.levels)
    fq.set_friendly_name(name)
    for inp in consumers:
        inp.replace_source_output(fq.output(0))
    return fq


def insert_compressed_weights(target: ov.Input, codes: np.ndarray, params: QuantizerParams, name: str) -> ov.Output:
    """Feed ``target`` with INT8 weights: ``Constant(i8) -> Convert -> [Subtract zp] -> Multiply scale``.

    16-bit codes (GNA's 16-bit weights) are stored the same way as an ``i16`` Constant named
    ``<name>/int16``; the CPU plugin compiles that pattern and computes the layer in floating point.

    The CPU plugin's low-precision transformations recognise this dequantization pattern and run
    the consumer in INT8 when its activation input has a FakeQuantize.

    :param target: the weight input of the weighted op.
    :param codes: integer codes (int8 or uint8), the port's shape, e.g. ``(C_out, C_in, kH, kW)``.
    :param params: their scale (float32, broadcastable: ``(C_out, 1, 1, 1)``) and zero point.
    :param name: base friendly name (``<node>/fq_weights_<port>``).
    :return: the output of the dequantizing Multiply (already connected to ``target``).
    """
    et = target.get_element_type()
    q = ops.constant(codes)
    q.set_friendly_name(f"{name}/int{8 * codes.dtype.itemsize}")  # int8; int16 for 16-bit (GNA) weights
    x = ops.convert(q, et)
    x.set_friendly_name(f"{name}/convert")
    if np.any(params.zero_point != 0):
        zp = ops.constant(np.asarray(params.zero_point, dtype=codes.dtype))
        zp.set_friendly_name(f"{name}/zero_point")
        x = ops.subtract(x, ops.convert(zp, et))
        x.set_friendly_name(f"{name}/subtract")
    scale = _const(params.scale, et, f"{name}/scale")
    out = ops.multiply(x, scale)
    out.set_friendly_name(f"{name}/dequantize")
    target.replace_source_output(out.output(0))
    return out.output(0)


def insert_weight_fake_quantize(target: ov.Input, value: np.ndarray, params: QuantizerParams, name: str) -> ov.Output:
    """Feed ``target`` with ``FakeQuantize(Constant(float weights))`` (``--keep-uncompressed-weights``).

    :param target: the weight input.
    :param value: float weights of the port's shape.
    :param params: per-channel bounds and levels.
    :param name: friendly name of the FakeQuantize.
    :return: the FakeQuantize output (connected to ``target``).

    A narrower symmetric grid (the 7-bit weights of ``saturation_fix``: 127 levels, codes
    -63..63) is written as the same grid inside a 255-level FakeQuantize over a range
    ``127 / 63`` times wider, with the weights clipped to the narrow range first: the values are
    identical, and the CPU plugin runs a layer in INT8 only with 255 or 256 weight levels (with
    ``levels=127`` it ran YOLO-like and BiFPN-like models in f32).
    """
    n = params.level_high
    if params.levels < 255 and params.level_low == -n and n > 0 and not np.any(params.zero_point):
        value = np.clip(value, params.input_low, params.input_high)
        wide = (params.scale * 127.0).astype(np.float32)
        params = dataclasses.replace(params, input_low=-wide, input_high=wide, levels=255, level_low=-127,
                                     level_high=127)
    w = _const(value, target.get_element_type(), f"{name}/weights")
    fq = insert_fake_quantize(w.output(0), [target], params, name)
    return fq.output(0)


#: constants with fewer elements than this are written in the consumer's type (see
#: :func:`replace_constant_input`)
KEEP_F32_BELOW = 1024


def replace_constant_input(target: ov.Input, value: np.ndarray, name: str) -> None:
    """Feed ``target`` with a new Constant holding ``value`` (in the input's element type).

    When the input read a compressed constant (``Constant(f16/bf16) -> Convert``, as in an FP16
    IR), the new value is stored the same way, so an edited layer does not double its size in
    the ``.bin``. Small values (biases, under :data:`KEEP_F32_BELOW` elements) stay in the input's
    type: a bias correction is a small shift that f16 would round away.
    """
    src = target.get_source_output().get_node()
    stored = None
    if src.get_type_name() == "Convert" and np.size(value) >= KEEP_F32_BELOW:
        const = src.input_value(0).get_node()
        if const.get_type_name() == "Constant" and const.get_element_type() == ov.Type.f16:
            stored = ov.Type.f16
    if stored is None:
        node = _const(value, target.get_element_type(), name)
    else:
        node = ops.convert(_const(value, stored, name), target.get_element_type())
        node.set_friendly_name(f"{name}/decompress")
    target.replace_source_output(node.output(0))
