"""Quantization math in pure numpy: ranges, FakeQuantize, integer weights.

Conventions (OpenVINO FakeQuantize spec, opset1):

* ``FakeQuantize(x, input_low, input_high, output_low, output_high, levels)`` clamps ``x`` to
  ``[input_low, input_high]`` and rounds it to one of ``levels`` evenly spaced values::

      q = round((x - input_low) / (input_high - input_low) * (levels - 1))
      y = q / (levels - 1) * (output_high - output_low) + output_low

* An integer grid ``[level_low, level_high]`` (for example ``[-128, 127]``) with ``scale`` and
  ``zero_point`` maps to ``r = scale * (q - zero_point)``; then
  ``input_low = scale * (level_low - zero_point)``, ``input_high = scale * (level_high - zero_point)``
  and ``levels = level_high - level_low + 1``.

Zero is always exactly representable (some integer ``q`` maps to 0.0), so zero padding and ReLU
outputs lose nothing (Jacob et al., 2018, "Quantization and Training of Neural Networks for
Efficient Integer-Arithmetic-Only Inference", section 2.1).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: smallest scale used for an all-zero tensor or channel, so FakeQuantize stays well defined
MIN_SCALE = np.float32(1e-10)


@dataclass(frozen=True)
class QuantizerParams:
    """The parameters of one FakeQuantize and its integer grid.

    ``input_low``/``input_high`` are float32 arrays broadcastable to the quantized tensor: shape
    ``()`` per tensor, or the tensor's shape with 1 on every axis but the channel axes per
    channel (weights of a Convolution: ``(C_out, 1, 1, 1)``). ``output_low``/``output_high`` are
    equal to them (the dequantized value is emitted).

    :param input_low: lower clamp bound, float32.
    :param input_high: upper clamp bound, float32.
    :param levels: number of quantization levels (255 for symmetric 8-bit weights, 256 for 8-bit
        activations, 65536 for 16-bit).
    :param level_low: smallest integer of the grid (-127, -128 or 0 for 8 bits).
    :param level_high: largest integer of the grid.
    :param scale: float32 array like ``input_low``; ``r = scale * (q - zero_point)``.
    :param zero_point: int32 array like ``input_low``.
    """

    input_low: np.ndarray
    input_high: np.ndarray
    levels: int
    level_low: int
    level_high: int
    scale: np.ndarray
    zero_point: np.ndarray

    @property
    def signed(self) -> bool:
        """True when the integer grid holds negative values (i8), False for u8."""
        return self.level_low < 0


def _from_scale(scale: np.ndarray, zero_point: np.ndarray, level_low: int, level_high: int) -> QuantizerParams:
    scale = np.maximum(np.asarray(scale, dtype=np.float32), MIN_SCALE)
    zero_point = np.asarray(zero_point, dtype=np.int32)
    return QuantizerParams(
        input_low=(scale * (level_low - zero_point)).astype(np.float32),
        input_high=(scale * (level_high - zero_point)).astype(np.float32),
        levels=level_high - level_low + 1,
        level_low=level_low,
        level_high=level_high,
        scale=scale,
        zero_point=zero_point,
    )


def compute_symmetric_params(abs_max: np.ndarray, bits: int = 8, narrow_range: bool = False,
                             unsigned: bool = False) -> QuantizerParams:
    """Symmetric quantizer around zero (zero_point 0).

    ``scale = abs_max / level_high``; signed grids are ``[-2^(b-1), 2^(b-1)-1]`` (``[-128, 127]``)
    or, with ``narrow_range``, ``[-(2^(b-1)-1), 2^(b-1)-1]`` (``[-127, 127]``, 255 levels, the
    usual grid for weights). Unsigned grids are ``[0, 2^b - 1]`` (``[0, 255]``), used when the
    tensor is never negative (after ReLU).

    :param abs_max: float array of max(|x|), shape ``()`` per tensor or per channel.
    :param bits: bit width (8 or 16).
    :param narrow_range: drop the most negative level (signed only).
    :param unsigned: use the unsigned grid.
    :return: the quantizer parameters, arrays shaped like ``abs_max``.
    """
    if unsigned:
        level_low, level_high = 0, 2**bits - 1
    else:
        level_high = 2 ** (bits - 1) - 1
        level_low = -level_high if narrow_range else -(level_high + 1)
    abs_max = np.abs(np.asarray(abs_max, dtype=np.float64))
    scale = abs_max / level_high
    return _from_scale(scale, np.zeros_like(scale, dtype=np.int32), level_low, level_high)


def compute_asymmetric_params(min_value: np.ndarray, max_value: np.ndarray, bits: int = 8) -> QuantizerParams:
    """Asymmetric (affine) quantizer on the unsigned grid ``[0, 2^b - 1]``.

    The range is first widened to include zero (``min' = min(min, 0)``, ``max' = max(max, 0)``),
    then ``scale = (max' - min') / (2^b - 1)`` and ``zero_point = round(-min' / scale)``, so zero is
    exactly representable; the bounds are recomputed from the rounded zero point (the range moves
    by at most ``scale / 2``).

    :param min_value: float array of observed minima, shape ``()`` or per channel.
    :param max_value: float array of observed maxima, same shape.
    :param bits: bit width.
    :return: the quantizer parameters.
    """
    level_low, level_high = 0, 2**bits - 1
    lo = np.minimum(np.asarray(min_value, dtype=np.float64), 0.0)
    hi = np.maximum(np.asarray(max_value, dtype=np.float64), 0.0)
    scale = np.maximum((hi - lo) / (level_high - level_low), float(MIN_SCALE))
    zero_point = np.round(-lo / scale)
    # a range that is negative but narrower than one step still keeps one level below zero
    zero_point = np.clip(np.where(lo < 0, np.maximum(zero_point, 1), zero_point), level_low, level_high)
    return _from_scale(scale, zero_point, level_low, level_high)


def compute_activation_params(min_value, max_value, mode: str, bits: int = 8) -> QuantizerParams:
    """Activation quantizer from aggregated minima and maxima, per tensor or per channel.

    A tensor that is never negative (every ``min >= 0``) gets the unsigned grid ``[0, 255]`` with
    ``input_low = 0`` in both modes. Otherwise ``mode='symmetric'`` gives ``[-128, 127]`` with
    ``scale = max(|min|, |max|) / 127`` and ``mode='asymmetric'`` an affine u8 grid (see
    :func:`compute_asymmetric_params`).

    :param min_value: aggregated minimum: a float, or an array ``(1, C, 1, ...)`` per channel.
    :param max_value: aggregated maximum, same shape.
    :param mode: ``"symmetric"`` or ``"asymmetric"``.
    :param bits: bit width.
    :raises ValueError: on an unknown mode.
    """
    lo = np.asarray(min_value, dtype=np.float64)
    hi = np.asarray(max_value, dtype=np.float64)
    if np.all(lo >= 0):
        return compute_symmetric_params(hi, bits=bits, unsigned=True)
    if mode == "symmetric":
        return compute_symmetric_params(np.maximum(np.abs(lo), np.abs(hi)), bits=bits)
    if mode == "asymmetric":
        return compute_asymmetric_params(lo, hi, bits=bits)
    raise ValueError(f"unknown quantization mode {mode!r}; expected 'symmetric' or 'asymmetric'")


def reduce_keep_axes(x: np.ndarray, keep_axes: tuple[int, ...], fn) -> np.ndarray:
    """Reduce ``x`` with ``fn`` over every axis not in ``keep_axes``, keeping dims (size 1).

    :param x: array of any shape.
    :param keep_axes: the channel axes to keep (non-negative); ``()`` reduces to shape ``(1,)*ndim``.
    :param fn: a numpy reduction taking ``axis`` and ``keepdims`` (``np.max``, ``np.min``).
    """
    axes = tuple(a for a in range(x.ndim) if a not in keep_axes)
    return fn(x, axis=axes, keepdims=True) if axes else x.copy()


def compute_weight_params(weights: np.ndarray, keep_axes: tuple[int, ...], mode: str = "symmetric",
                          bits: int = 8, narrow_range: bool = True) -> QuantizerParams:
    """Quantizer for a constant weight tensor, per channel along ``keep_axes``.

    Symmetric (default): ``scale_c = max|W_c| / 127`` on the grid ``[-127, 127]`` (255 levels).
    Asymmetric: affine u8 grid from ``min(W_c)``, ``max(W_c)``.

    :param weights: float array, e.g. Convolution ``(C_out, C_in, kH, kW)``, GroupConvolution
        ``(G, C_out/G, C_in/G, kH, kW)``, MatMul ``(K, N)`` or ``(N, K)``.
    :param keep_axes: output-channel axes (``(0,)`` for Convolution, ``(0, 1)`` for
        GroupConvolution, ``()`` for per-tensor).
    :param mode: ``"symmetric"`` or ``"asymmetric"``.
    :param bits: bit width.
    :param narrow_range: symmetric only: ``[-127, 127]`` instead of ``[-128, 127]``.
    :return: parameters whose arrays have ``weights.ndim`` dims, 1 on reduced axes.
    """
    w = np.asarray(weights, dtype=np.float32)
    if mode == "symmetric":
        abs_max = reduce_keep_axes(np.abs(w), keep_axes, np.max)
        return compute_symmetric_params(abs_max, bits=bits, narrow_range=narrow_range)
    if mode == "asymmetric":
        return compute_asymmetric_params(reduce_keep_axes(w, keep_axes, np.min), reduce_keep_axes(w, keep_axes, np.max),
                                         bits=bits)
    raise ValueError(f"unknown quantization mode {mode!r}; expected 'symmetric' or 'asymmetric'")


def quantize_to_int(x: np.ndarray, params: QuantizerParams) -> np.ndarray:
    """Integer codes ``q = clip(round(x / scale) + zero_point, level_low, level_high)``.

    Rounding is half to even (numpy's and OpenVINO's ``round``), the same as FakeQuantize.

    :param x: float array broadcastable with ``params.scale``.
    :return: the smallest integer dtype holding the grid: int8, uint8, int16, uint16 or int32.
    """
    q = np.clip(np.round(np.asarray(x, dtype=np.float32) / params.scale) + params.zero_point,
                params.level_low, params.level_high)
    if params.level_low >= -128 and params.level_high <= 127:
        return q.astype(np.int8)
    for dtype in (np.uint8, np.int16, np.uint16, np.int32):
        info = np.iinfo(dtype)
        if params.level_low >= info.min and params.level_high <= info.max:
            return q.astype(dtype)
    return q.astype(np.int64)


def dequantize(q: np.ndarray, params: QuantizerParams) -> np.ndarray:
    """``r = scale * (q - zero_point)`` as float32."""
    return (params.scale * (q.astype(np.float32) - params.zero_point)).astype(np.float32)


def fake_quantize(x: np.ndarray, input_low, input_high, output_low, output_high, levels: int) -> np.ndarray:
    """Reference FakeQuantize (OpenVINO opset1 spec) in float32 numpy.

    :param x: float array.
    :param input_low: bounds broadcastable to ``x``; likewise the other three.
    :param levels: number of levels (>= 2).
    :return: float32 array of ``x``'s shape.
    """
    x = np.asarray(x, dtype=np.float32)
    il, ih = np.asarray(input_low, np.float32), np.asarray(input_high, np.float32)
    ol, oh = np.asarray(output_low, np.float32), np.asarray(output_high, np.float32)
    clipped = np.clip(x, il, ih)
    q = np.round((clipped - il) / (ih - il) * (levels - 1))
    return (q / (levels - 1) * (oh - ol) + ol).astype(np.float32)
