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


def default_levels(bits: int, signed: bool, narrow_range: bool = False) -> tuple[int, int]:
    """The integer grid ``(level_low, level_high)`` of ``bits`` bits: signed
    ``[-2^(b-1), 2^(b-1) - 1]`` (``[-128, 127]``), with ``narrow_range`` ``[-(2^(b-1) - 1), 2^(b-1) - 1]``
    (``[-127, 127]``); unsigned ``[0, 2^b - 1]`` (``[0, 255]``)."""
    if not signed:
        return 0, 2**bits - 1
    level_high = 2 ** (bits - 1) - 1
    return (-level_high if narrow_range else -(level_high + 1)), level_high


def narrow_levels(level_low: int, level_high: int) -> tuple[int, int]:
    """The grid with one bit less (the saturation fix): both ends halved towards zero,
    ``[-127, 127] -> [-63, 63]``, ``[-128, 127] -> [-64, 63]``, ``[0, 255] -> [0, 127]``."""
    return int(level_low / 2), max(int(level_high / 2), 1)


def compute_symmetric_params(abs_max: np.ndarray, bits: int = 8, narrow_range: bool = False,
                             unsigned: bool = False, level_low: int | None = None,
                             level_high: int | None = None) -> QuantizerParams:
    """Symmetric quantizer around zero.

    Default grids (no ``level_low``/``level_high``): ``scale = abs_max / level_high`` with
    zero_point 0 on the signed grid ``[-2^(b-1), 2^(b-1)-1]`` (``[-128, 127]``) or, with
    ``narrow_range``, ``[-(2^(b-1)-1), 2^(b-1)-1]`` (``[-127, 127]``, 255 levels, the usual grid for
    weights); unsigned ``[0, 2^b - 1]`` (``[0, 255]``), used when the tensor is never negative
    (after ReLU).

    An explicit grid ``[level_low, level_high]`` (POT's ``level_low``/``level_high``, ``levels =
    level_high - level_low + 1``): unsigned puts zero on ``level_low`` and ``abs_max`` on
    ``level_high`` (``scale = abs_max / (level_high - level_low)``); otherwise the grid is centred on
    zero with zero_point 0, ``[-(levels // 2), levels - 1 - levels // 2]`` whatever its offset
    (``[-128, 127]`` for ``[-128, 127]`` and for ``[0, 255]``, ``[-127, 127]`` for 255 levels), and
    ``scale = abs_max / (levels - 1 - levels // 2)``: the same FakeQuantize (levels and bounds) as
    any offset of the grid, and weights stay INT8 without a zero point. Zero is always a grid point.

    :param abs_max: float array of max(|x|), shape ``()`` per tensor or per channel.
    :param bits: bit width (8 or 16); unused with an explicit grid.
    :param narrow_range: drop the most negative level (signed default grid only).
    :param unsigned: use the unsigned grid.
    :param level_low: explicit lowest integer level (<= 0), with ``level_high``.
    :param level_high: explicit highest integer level (> 0).
    :return: the quantizer parameters, arrays shaped like ``abs_max``.
    """
    abs_max = np.abs(np.asarray(abs_max, dtype=np.float64))
    if level_low is None or level_high is None:
        level_low, level_high = default_levels(bits, signed=not unsigned, narrow_range=narrow_range)
        zero_point = 0
    elif unsigned:
        zero_point = level_low
    else:
        levels = level_high - level_low + 1
        level_low, level_high, zero_point = -(levels // 2), levels - 1 - levels // 2, 0
    scale = abs_max / max(level_high - zero_point, 1)
    return _from_scale(scale, np.full_like(scale, zero_point, dtype=np.int32), level_low, level_high)


def compute_asymmetric_params(min_value: np.ndarray, max_value: np.ndarray, bits: int = 8,
                              level_low: int | None = None, level_high: int | None = None) -> QuantizerParams:
    """Asymmetric (affine) quantizer on the unsigned grid ``[0, 2^b - 1]``, or on an explicit grid
    ``[level_low, level_high]``.

    The range is first widened to include zero (``min' = min(min, 0)``, ``max' = max(max, 0)``),
    then ``scale = (max' - min') / (level_high - level_low)`` and
    ``zero_point = level_low + round(-min' / scale)``, so zero is exactly representable; the
    bounds are recomputed from the rounded zero point (the range moves by at most ``scale / 2``).

    :param min_value: float array of observed minima, shape ``()`` or per channel.
    :param max_value: float array of observed maxima, same shape.
    :param bits: bit width (unused with an explicit grid).
    :param level_low: explicit lowest integer level, with ``level_high``.
    :param level_high: explicit highest integer level.
    :return: the quantizer parameters.
    """
    if level_low is None or level_high is None:
        level_low, level_high = default_levels(bits, signed=False)
    steps = level_high - level_low
    lo = np.minimum(np.asarray(min_value, dtype=np.float64), 0.0)
    hi = np.maximum(np.asarray(max_value, dtype=np.float64), 0.0)
    scale = np.maximum((hi - lo) / steps, float(MIN_SCALE))
    offset = np.round(-lo / scale)
    # a range that is negative but narrower than one step still keeps one level below zero
    offset = np.clip(np.where(lo < 0, np.maximum(offset, 1), offset), 0, steps)
    return _from_scale(scale, level_low + offset, level_low, level_high)


def compute_activation_params(min_value, max_value, mode: str, bits: int = 8, level_low: int | None = None,
                              level_high: int | None = None) -> QuantizerParams:
    """Activation quantizer from aggregated minima and maxima, per tensor or per channel.

    A tensor that is never negative (every ``min >= 0``) gets the unsigned grid ``[0, 255]`` with
    ``input_low = 0`` in both modes. Otherwise ``mode='symmetric'`` gives ``[-128, 127]`` with
    ``scale = max(|min|, |max|) / 127`` and ``mode='asymmetric'`` an affine u8 grid (see
    :func:`compute_asymmetric_params`).

    With an explicit grid (POT's ``activations.level_low``/``level_high``), ``levels = level_high -
    level_low + 1`` and: a never-negative tensor on a grid starting at 0 maps ``[0, max]`` onto it;
    a signed grid (``level_low < 0``) makes the range signed in symmetric mode even for a
    never-negative tensor (POT's ``signed``), ``input_low = scale * (level_low - zero_point)``; see
    :func:`compute_symmetric_params` and :func:`compute_asymmetric_params`.

    :param min_value: aggregated minimum: a float, or an array ``(1, C, 1, ...)`` per channel.
    :param max_value: aggregated maximum, same shape.
    :param mode: ``"symmetric"`` or ``"asymmetric"``.
    :param bits: bit width (unused with an explicit grid).
    :param level_low: explicit lowest integer level (<= 0), with ``level_high``.
    :param level_high: explicit highest integer level (> 0).
    :raises ValueError: on an unknown mode.
    """
    lo = np.asarray(min_value, dtype=np.float64)
    hi = np.asarray(max_value, dtype=np.float64)
    explicit = level_low is not None and level_high is not None
    if np.all(lo >= 0) and not (explicit and level_low < 0 and mode == "symmetric"):
        return compute_symmetric_params(hi, bits=bits, unsigned=True, level_low=level_low, level_high=level_high)
    if mode == "symmetric":
        return compute_symmetric_params(np.maximum(np.abs(lo), np.abs(hi)), bits=bits, level_low=level_low,
                                        level_high=level_high)
    if mode == "asymmetric":
        return compute_asymmetric_params(lo, hi, bits=bits, level_low=level_low, level_high=level_high)
    raise ValueError(f"unknown quantization mode {mode!r}; expected 'symmetric' or 'asymmetric'")


def reduce_keep_axes(x: np.ndarray, keep_axes: tuple[int, ...], fn) -> np.ndarray:
    """Reduce ``x`` with ``fn`` over every axis not in ``keep_axes``, keeping dims (size 1).

    :param x: array of any shape.
    :param keep_axes: the channel axes to keep (non-negative); ``()`` reduces to shape ``(1,)*ndim``.
    :param fn: a numpy reduction taking ``axis`` and ``keepdims`` (``np.max``, ``np.min``).
    """
    axes = tuple(a for a in range(x.ndim) if a not in keep_axes)
    return fn(x, axis=axes, keepdims=True) if axes else x.copy()


#: per-channel (or per-tensor) statistics of a weight tensor, names as in POT's ``range_estimator``
WEIGHT_STATISTICS = ("min", "max", "abs_max", "quantile", "abs_quantile")


@dataclass(frozen=True)
class WeightRangeEstimator:
    """POT's ``weights.range_estimator``: how the range of a constant weight tensor is measured.

    Weights are exact, so there is no aggregator. Symmetric quantizers use only the ``max`` side
    (POT's defaults: ``abs_max``; preset ``quantile``: ``abs_quantile`` with ``outlier_prob`` 1e-4);
    asymmetric ones use both (``min``/``max``; preset ``quantile``: ``quantile``/``quantile``).

    :param min_type: statistic of the lower bound, one of :data:`WEIGHT_STATISTICS`; None: ``min``.
    :param max_type: statistic of the upper bound; None: ``abs_max`` (symmetric) or ``max``.
    :param min_outlier_prob: ``p`` of a ``min`` side quantile (``np.quantile(w, p)``).
    :param max_outlier_prob: ``p`` of a ``max`` side quantile (``np.quantile(w, 1 - p)``, of
        ``|w|`` for ``abs_quantile``).
    :param min_clipping_value: the lower bound is raised to at least this value (POT's
        ``clipping_value``), or None.
    :param max_clipping_value: the upper bound (symmetric: ``max|w|``) is lowered to at most this.
    """

    min_type: str | None = None
    max_type: str | None = None
    min_outlier_prob: float = 1e-4
    max_outlier_prob: float = 1e-4
    min_clipping_value: float | None = None
    max_clipping_value: float | None = None


def compute_weight_statistic(weights: np.ndarray, keep_axes: tuple[int, ...], kind: str, low: bool,
                             outlier_prob: float = 1e-4) -> np.ndarray:
    """One range bound of ``weights`` per channel along ``keep_axes`` (POT's weight statistics).

    ``min``, ``max``, ``abs_max`` as named; ``quantile``: ``np.quantile(w_c, p)`` for the lower
    bound (``low``), ``np.quantile(w_c, 1 - p)`` for the upper one; ``abs_quantile``:
    ``np.quantile(|w_c|, 1 - p)``, negated for the lower bound. Quantiles use NumPy's default
    linear interpolation.

    :param weights: float array, e.g. ``(C_out, C_in, kH, kW)``.
    :param keep_axes: the channel axes kept (``()`` per tensor).
    :param kind: one of :data:`WEIGHT_STATISTICS`.
    :param low: the lower bound (True) or the upper one.
    :param outlier_prob: ``p`` of the quantiles, in [0, 1].
    :return: float64 array with ``weights.ndim`` dims, 1 on reduced axes.
    :raises ValueError: on an unknown ``kind``.
    """
    w = np.asarray(weights, dtype=np.float64)
    if kind == "min":
        return reduce_keep_axes(w, keep_axes, np.min)
    if kind == "max":
        return reduce_keep_axes(w, keep_axes, np.max)
    if kind == "abs_max":
        value = reduce_keep_axes(np.abs(w), keep_axes, np.max)
        return -value if low else value
    if kind == "quantile":
        q = outlier_prob if low else 1.0 - outlier_prob
        return reduce_keep_axes(w, keep_axes, lambda a, axis, keepdims: np.quantile(a, q, axis=axis, keepdims=keepdims))
    if kind == "abs_quantile":
        value = reduce_keep_axes(np.abs(w), keep_axes, lambda a, axis, keepdims: np.quantile(
            a, 1.0 - outlier_prob, axis=axis, keepdims=keepdims))
        return -value if low else value
    raise ValueError(f"unknown weight statistic {kind!r}; expected one of {', '.join(WEIGHT_STATISTICS)}")


def compute_weight_params(weights: np.ndarray, keep_axes: tuple[int, ...], mode: str = "symmetric",
                          bits: int = 8, narrow_range: bool = True, level_low: int | None = None,
                          level_high: int | None = None,
                          estimator: WeightRangeEstimator | None = None) -> QuantizerParams:
    """Quantizer for a constant weight tensor, per channel along ``keep_axes``.

    Symmetric (default): ``scale_c = max|W_c| / 127`` on the grid ``[-127, 127]`` (255 levels).
    Asymmetric: affine u8 grid from ``min(W_c)``, ``max(W_c)``. ``estimator`` replaces
    ``max|W_c|`` (or ``min``/``max``) by other statistics and clips them; an explicit grid
    ``[level_low, level_high]`` replaces the default one (see :func:`compute_symmetric_params`).

    :param weights: float array, e.g. Convolution ``(C_out, C_in, kH, kW)``, GroupConvolution
        ``(G, C_out/G, C_in/G, kH, kW)``, MatMul ``(K, N)`` or ``(N, K)``.
    :param keep_axes: output-channel axes (``(0,)`` for Convolution, ``(0, 1)`` for
        GroupConvolution, ``()`` for per-tensor).
    :param mode: ``"symmetric"`` or ``"asymmetric"``.
    :param bits: bit width (unused with an explicit grid).
    :param narrow_range: symmetric default grid only: ``[-127, 127]`` instead of ``[-128, 127]``.
    :param level_low: explicit lowest integer level (<= 0), with ``level_high``.
    :param level_high: explicit highest integer level (> 0).
    :param estimator: the range estimator; None: ``abs_max`` (symmetric) or ``min``/``max``.
    :return: parameters whose arrays have ``weights.ndim`` dims, 1 on reduced axes.
    :raises ValueError: on an unknown mode or statistic.
    """
    w = np.asarray(weights, dtype=np.float32)
    e = estimator or WeightRangeEstimator()
    if mode == "symmetric":
        kind = e.max_type or "abs_max"
        if kind == "abs_max" and e.max_clipping_value is None:  # the exact default, in float32
            abs_max = reduce_keep_axes(np.abs(w), keep_axes, np.max)
        else:
            abs_max = np.abs(compute_weight_statistic(w, keep_axes, kind, low=False, outlier_prob=e.max_outlier_prob))
            if e.max_clipping_value is not None:
                abs_max = np.minimum(abs_max, abs(e.max_clipping_value))
        return compute_symmetric_params(abs_max, bits=bits, narrow_range=narrow_range, level_low=level_low,
                                        level_high=level_high)
    if mode == "asymmetric":
        lo = compute_weight_statistic(w, keep_axes, e.min_type or "min", low=True, outlier_prob=e.min_outlier_prob)
        hi = compute_weight_statistic(w, keep_axes, e.max_type or "max", low=False, outlier_prob=e.max_outlier_prob)
        if e.min_clipping_value is not None:
            lo = np.maximum(lo, e.min_clipping_value)
        if e.max_clipping_value is not None:
            hi = np.minimum(hi, e.max_clipping_value)
        return compute_asymmetric_params(lo, hi, bits=bits, level_low=level_low, level_high=level_high)
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
