"""The quantization math of :mod:`pot_cli.algorithms.fake_quantize` against hand-computed values."""
from __future__ import annotations

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pot_cli.algorithms.fake_quantize import (
    MIN_SCALE,
    compute_activation_params,
    compute_asymmetric_params,
    compute_symmetric_params,
    compute_weight_params,
    dequantize,
    fake_quantize,
    quantize_to_int,
)


def fq_of(x, p):
    """The reference FakeQuantize with ``p``'s bounds (output bounds equal to the input bounds)."""
    return fake_quantize(x, p.input_low, p.input_high, p.input_low, p.input_high, p.levels)


def assert_same_grid_point(a, b, scale):
    """``a == b`` up to float32 rounding: far less than one step (``scale``) apart everywhere."""
    assert a.shape == b.shape
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    bound = 1e-3 * np.broadcast_to(scale, a.shape) + 1e-6 * np.abs(b)
    assert np.all(diff <= bound), f"max difference {diff.max()} (scale {np.max(scale)})"


finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32)
arrays = hnp.arrays(np.float32, st.integers(2, 64), elements=finite)


# -- weights -------------------------------------------------------------------------------------

def test_symmetric_int8_weights_scale_is_max_abs_over_127_per_output_channel():
    w = np.array([[[[0.5, -1.0], [0.25, 0.0]]],
                  [[[2.0, 1.0], [-0.5, 0.1]]],
                  [[[-0.02, 0.01], [0.0, 0.0]]]], dtype=np.float32)  # (C_out=3, C_in=1, 2, 2)
    p = compute_weight_params(w, keep_axes=(0,))
    assert p.scale.shape == (3, 1, 1, 1)
    np.testing.assert_allclose(p.scale.reshape(-1), np.array([1.0, 2.0, 0.02]) / 127, rtol=1e-6)
    assert (p.level_low, p.level_high, p.levels) == (-127, 127, 255)
    assert np.all(p.zero_point == 0)
    np.testing.assert_allclose(p.input_low, -p.input_high)
    np.testing.assert_allclose(p.input_high.reshape(-1), [1.0, 2.0, 0.02], rtol=1e-6)

    codes = quantize_to_int(w, p)
    assert codes.dtype == np.int8 and codes.shape == w.shape
    assert codes.min() >= -127 and codes.max() <= 127
    # the largest |w| of every channel maps to exactly +-127; hand-computed codes of channel 0
    assert np.abs(codes).reshape(3, -1).max(axis=1).tolist() == [127, 127, 127]
    assert codes[0].reshape(-1).tolist() == [64, -127, 32, 0]  # 0.5/(1/127) = 63.5 -> 64 (half to even)
    assert codes[1].reshape(-1).tolist() == [127, 64, -32, 6]  # 63.5 -> 64, -31.75 -> -32, 6.35 -> 6


def test_weight_quantization_per_tensor_and_group_convolution_axes():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    per_tensor = compute_weight_params(w, keep_axes=())
    assert per_tensor.scale.shape == (1, 1, 1, 1)
    np.testing.assert_allclose(per_tensor.scale.item(), np.abs(w).max() / 127, rtol=1e-6)

    g = rng.standard_normal((3, 2, 1, 3, 3)).astype(np.float32)  # (G, C_out/G, C_in/G, kH, kW)
    p = compute_weight_params(g, keep_axes=(0, 1))
    assert p.scale.shape == (3, 2, 1, 1, 1)
    np.testing.assert_allclose(p.scale[..., 0, 0, 0], np.abs(g).max(axis=(2, 3, 4)) / 127, rtol=1e-6)


def test_seven_bit_narrow_weights_saturation_fix_grid():
    w = np.random.default_rng(2).standard_normal((5, 3, 3, 3)).astype(np.float32)
    p = compute_weight_params(w, keep_axes=(0,), bits=7)
    assert (p.level_low, p.level_high, p.levels) == (-63, 63, 127)
    np.testing.assert_allclose(p.scale.reshape(-1), np.abs(w).max(axis=(1, 2, 3)) / 63, rtol=1e-6)
    codes = quantize_to_int(w, p)
    assert codes.dtype == np.int8
    assert codes.min() >= -63 and codes.max() <= 63
    assert np.abs(codes).reshape(5, -1).max(axis=1).tolist() == [63] * 5


def test_asymmetric_weights_use_an_affine_u8_grid_with_exact_zero():
    w = np.array([[0.2, 0.9, 0.5], [-3.0, -1.0, 1.0]], dtype=np.float32)  # MatMul (N=2, K=3)
    p = compute_weight_params(w, keep_axes=(0,), mode="asymmetric")
    assert (p.level_low, p.level_high, p.levels) == (0, 255, 256)
    # channel 0 is positive: widened to [0, 0.9]; channel 1: [-3, 1]
    np.testing.assert_allclose(p.scale.reshape(-1), [0.9 / 255, 4.0 / 255], rtol=1e-6)
    assert p.zero_point.reshape(-1).tolist() == [0, round(3.0 / (4.0 / 255))]
    np.testing.assert_array_equal(dequantize(np.asarray(p.zero_point), p), 0.0)


def test_all_zero_weight_channel_gets_the_minimum_scale_and_zero_codes():
    w = np.zeros((2, 1, 1, 1), dtype=np.float32)
    w[1] = 0.5
    p = compute_weight_params(w, keep_axes=(0,))
    assert p.scale.reshape(-1)[0] == MIN_SCALE
    codes = quantize_to_int(w, p)
    assert codes.reshape(-1).tolist() == [0, 127]
    assert np.all(np.isfinite(fq_of(w, p)))


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="unknown quantization mode 'affine'"):
        compute_weight_params(np.ones((2, 2), np.float32), (0,), mode="affine")
    with pytest.raises(ValueError, match="unknown quantization mode"):
        compute_activation_params(-1.0, 1.0, "affine")


# -- activations ---------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["symmetric", "asymmetric"])
def test_non_negative_activations_use_the_unsigned_grid(mode):
    p = compute_activation_params(0.0, 5.1, mode)
    assert (p.level_low, p.level_high, p.levels) == (0, 255, 256)
    assert not p.signed
    assert float(p.input_low) == 0.0
    np.testing.assert_allclose(float(p.input_high), 5.1, rtol=1e-6)
    np.testing.assert_allclose(float(p.scale), 5.1 / 255, rtol=1e-6)
    # a strictly positive minimum still starts the grid at zero (ReLU outputs keep exact zeros)
    p2 = compute_activation_params(0.7, 5.1, mode)
    assert float(p2.input_low) == 0.0 and p2.levels == 256
    assert quantize_to_int(np.array([0.0, 5.1, 2.55], np.float32), p).tolist() == [0, 255, 128]
    assert quantize_to_int(np.array([1.0], np.float32), p).dtype == np.uint8


def test_signed_symmetric_activations_grid_and_scale():
    p = compute_activation_params(-2.0, 3.0, "symmetric")
    assert (p.level_low, p.level_high, p.levels) == (-128, 127, 256)
    assert p.signed
    np.testing.assert_allclose(float(p.scale), 3.0 / 127, rtol=1e-6)
    np.testing.assert_allclose(float(p.input_high), 3.0, rtol=1e-6)
    np.testing.assert_allclose(float(p.input_low), -128 * 3.0 / 127, rtol=1e-6)
    assert int(p.zero_point) == 0
    # |min| larger than |max|: the scale follows the absolute maximum
    q = compute_activation_params(-5.0, 1.0, "symmetric")
    np.testing.assert_allclose(float(q.scale), 5.0 / 127, rtol=1e-6)
    codes = quantize_to_int(np.array([-5.0, 0.0, 1.0, 100.0, -100.0], np.float32), q)
    assert codes.dtype == np.int8
    assert codes.tolist() == [-127, 0, round(127 / 5), 127, -128]


def test_asymmetric_activations_represent_zero_exactly():
    p = compute_activation_params(-1.3, 2.7, "asymmetric")
    assert (p.level_low, p.level_high) == (0, 255)
    scale = float(p.scale)
    np.testing.assert_allclose(scale, 4.0 / 255, rtol=1e-6)
    zp = int(p.zero_point)
    assert zp == round(1.3 / scale)
    # the range moved by at most scale / 2 when the zero point was rounded
    assert abs(float(p.input_low) + 1.3) <= scale / 2 + 1e-6
    assert abs(float(p.input_high) - 2.7) <= scale / 2 + 1e-6
    # zero goes through FakeQuantize unchanged, and zero_point decodes to 0.0
    assert fq_of(np.zeros(3, np.float32), p).tolist() == [0.0, 0.0, 0.0]
    assert dequantize(np.array([zp]), p).tolist() == [0.0]


def test_asymmetric_range_is_widened_to_include_zero():
    p = compute_asymmetric_params(np.float32(-4.0), np.float32(-1.0))
    assert float(p.input_high) == 0.0
    np.testing.assert_allclose(float(p.input_low), -4.0, rtol=1e-6)
    assert int(p.zero_point) == 255


def test_per_channel_activation_params_keep_their_shape():
    lo = np.array([0.0, -1.0, -2.0], np.float32).reshape(1, 3, 1, 1)
    hi = np.array([1.0, 1.0, 4.0], np.float32).reshape(1, 3, 1, 1)
    p = compute_activation_params(lo, hi, "symmetric")
    assert p.input_low.shape == (1, 3, 1, 1)
    # one channel is negative: the whole tensor uses the signed grid, scale per channel
    assert p.level_low == -128
    np.testing.assert_allclose(p.scale.reshape(-1), np.array([1.0, 1.0, 4.0]) / 127, rtol=1e-6)


@pytest.mark.parametrize("bits,unsigned,dtype", [(8, False, np.int8), (8, True, np.uint8),
                                                 (16, False, np.int16), (16, True, np.uint16)])
def test_code_dtype_follows_the_grid(bits, unsigned, dtype):
    p = compute_symmetric_params(np.float32(2.0), bits=bits, unsigned=unsigned)
    expected_levels = 2 ** bits
    assert p.levels == expected_levels
    codes = quantize_to_int(np.linspace(-2, 2, 11, dtype=np.float32), p)
    assert codes.dtype == dtype
    assert codes.max() == p.level_high
    assert codes.min() == (0 if unsigned else -(2 ** (bits - 1) - 1))


def test_sixteen_bit_signed_grid_is_finer():
    p8 = compute_activation_params(-1.0, 1.0, "symmetric", bits=8)
    p16 = compute_activation_params(-1.0, 1.0, "symmetric", bits=16)
    assert (p16.level_low, p16.level_high, p16.levels) == (-32768, 32767, 65536)
    np.testing.assert_allclose(float(p16.scale), 1.0 / 32767, rtol=1e-6)
    x = np.linspace(-1, 1, 1001, dtype=np.float32)
    assert np.abs(fq_of(x, p16) - x).max() < np.abs(fq_of(x, p8) - x).max() / 100


# -- properties ----------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(arrays, st.sampled_from(["symmetric", "asymmetric"]))
def test_fake_quantize_error_is_at_most_half_a_step_inside_the_range(x, mode):
    p = compute_activation_params(float(x.min()), float(x.max()), mode)
    y = fq_of(x, p)
    inside = (x >= p.input_low) & (x <= p.input_high)
    assert inside.any()
    scale = float(p.scale)
    # half a step, plus float32 rounding of values up to 1e3
    assert np.all(np.abs(y - x)[inside] <= scale / 2 + 1e-4 * max(1.0, scale) + 1e-6 * np.abs(x[inside]))
    # every output lies on the grid
    codes = (y - float(p.input_low)) / scale
    np.testing.assert_allclose(codes, np.round(codes), atol=1e-2)


@settings(max_examples=60, deadline=None)
@given(arrays, st.sampled_from(["symmetric", "asymmetric"]), st.floats(0.2, 1.0))
def test_dequantize_of_quantize_equals_fake_quantize(x, mode, shrink):
    # shrink the range so that some values are clamped too
    p = compute_activation_params(float(x.min()) * shrink, float(x.max()) * shrink, mode)
    a = dequantize(quantize_to_int(x, p), p)
    b = fq_of(x, p)
    # equal up to float32 reconstruction error; a different integer would differ by a whole step
    assert_same_grid_point(a, b, p.scale)


def test_dequantize_of_quantize_equals_fake_quantize_for_per_channel_weights():
    w = np.random.default_rng(3).standard_normal((6, 4, 3, 3)).astype(np.float32)
    for bits in (7, 8):
        p = compute_weight_params(w, keep_axes=(0,), bits=bits)
        assert_same_grid_point(dequantize(quantize_to_int(w, p), p), fq_of(w, p), p.scale)
        err = np.abs(dequantize(quantize_to_int(w, p), p) - w)
        assert np.all(err <= p.scale / 2 * (1 + 1e-5))


def test_numpy_reference_matches_openvino_fake_quantize():
    x = (np.random.default_rng(4).standard_normal((1, 4, 16, 16)) * 3).astype(np.float32)
    for mode in ("symmetric", "asymmetric"):
        p = compute_activation_params(float(x.min()) * 0.8, float(x.max()) * 0.8, mode)
        data = ops.parameter(x.shape, ov.Type.f32)
        c = [ops.constant(np.asarray(v, np.float32)) for v in (p.input_low, p.input_high, p.input_low, p.input_high)]
        model = ov.Model([ops.fake_quantize(data, *c, p.levels)], [data])
        compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        y = compiled(x)[0]
        np.testing.assert_allclose(y, fq_of(x, p), atol=1e-3 * float(p.scale))
