"""POT's range estimators, explicit integer grids and per-channel activations, pinned against numpy.

What is pinned:

* the in-graph quantile reductions equal NumPy's default ``np.quantile`` (linear interpolation,
  the function POT used) per sample, per tensor and per channel, for static shapes and for a
  sequence length that changes from sample to sample;
* ``range_estimator.preset: quantile`` and explicit ``min``/``max`` estimators give the ranges
  computed by hand from those per-sample quantiles and the aggregator;
* ``level_low``/``level_high`` set ``levels`` and the bounds, zero stays a grid point, and INT8
  weight storage dequantizes to exactly what the FakeQuantize would compute;
* ``activations.granularity: perchannel`` gives ``(1, C, 1, 1)`` bounds;
* a config with these keys runs end to end through ``python -m pot_cli``.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

import models
from pot_cli.algorithms.default import DefaultQuantization
from pot_cli.algorithms.fake_quantize import compute_activation_params, fake_quantize
from pot_cli.config import QuantizationParams, load_hardware_config
from pot_cli.config.model import QuantizerOverrides, RangeEstimator, StatisticSpec
from pot_cli.errors import ConfigError, NotSupportedError
from pot_cli.algorithms.settings import create_min_max_settings
from pot_cli.statistics.collector import Reduction, StatisticRequest, collect_statistics

F32 = {"INFERENCE_PRECISION_HINT": "f32"}
P = 1e-4  # POT's default outlier_prob


# -- helpers -------------------------------------------------------------------------------------

def heavy_tailed(shape, seed: int, scale: float = 1.0) -> np.ndarray:
    """Student-t samples (3 degrees of freedom): quantiles at 1e-4 are far inside min/max."""
    return (np.random.default_rng(seed).standard_t(3, size=shape) * scale).astype(np.float32)


def conv_samples(n: int = 6, c: int = 3, hw: int = 40, seed: int = 0) -> list[dict[str, np.ndarray]]:
    return [{"x": heavy_tailed((1, c, hw, hw), seed + i)} for i in range(n)]


def activations(params: QuantizationParams | None = None, **kw) -> QuantizationParams:
    """QuantizationParams with an ``activations`` override built from ``kw``."""
    base = params or QuantizationParams()
    return QuantizationParams(**{**{f: getattr(base, f) for f in ("preset", "saturation_fix", "weights")},
                                 "activations": QuantizerOverrides(**kw)})


def quantize(model: ov.Model, samples, params: QuantizationParams, compress: bool = True, device: str = "ANY"):
    """DefaultQuantization on ``model`` in place (no bias correction, so weights stay as computed)."""
    settings = create_min_max_settings(params, load_hardware_config(device))
    algo = DefaultQuantization(settings, use_fast_bias=False, compress_weights=compress)
    requests = algo.statistic_requests(model)
    stats = collect_statistics(model, requests, enumerate(samples), len(samples))
    return algo.apply(model, stats), algo


def fq(model: ov.Model, name: str) -> tuple[np.ndarray, np.ndarray, int]:
    """``(input_low, input_high, levels)`` of the FakeQuantize ``name``; checks output bounds equal them."""
    node = next(o for o in model.get_ops() if o.get_friendly_name() == name)
    assert node.get_type_name() == "FakeQuantize"
    bounds = [np.array(node.input_value(i).get_node().get_data()) for i in range(1, 5)]
    np.testing.assert_array_equal(bounds[0], bounds[2])
    np.testing.assert_array_equal(bounds[1], bounds[3])
    return bounds[0], bounds[1], node.get_attributes()["levels"]


def assert_zero_is_a_level(low, high, levels):
    """FakeQuantize maps 0.0 to exactly 0.0 (relative to the step)."""
    y = fake_quantize(np.zeros_like(np.asarray(low, np.float32)), low, high, low, high, levels)
    step = (np.asarray(high) - np.asarray(low)) / (levels - 1)
    assert np.all(np.abs(y) <= 1e-4 * step), f"0 -> {y}"


def run(model: ov.Model, inputs: dict) -> np.ndarray:
    return ov.Core().compile_model(model, "CPU", F32)(inputs)[0]


# -- the in-graph quantile reductions ----------------------------------------------------------

def identity_model(shape) -> tuple[ov.Model, ov.Output]:
    x = models.param("x", shape)
    y = ops.multiply(x, ops.constant(np.float32(1.0)))
    return ov.Model([ops.result(y)], [x], "identity"), y.output(0)


@pytest.mark.parametrize("p", [0.0, P, 0.01, 0.25, 0.5, 1.0])
def test_quantile_reductions_equal_numpy_quantile_per_sample_and_per_channel(p):
    model, y = identity_model([1, 3, 9, 7])
    samples = [{"x": heavy_tailed((1, 3, 9, 7), i)} for i in range(4)]
    reqs = [StatisticRequest(y, r, None, p) for r in (Reduction.QUANTILE_LOW, Reduction.QUANTILE_HIGH,
                                                       Reduction.ABS_QUANTILE)]
    reqs += [StatisticRequest(y, r, 1, p) for r in (Reduction.QUANTILE_LOW_PER_CHANNEL,
                                                    Reduction.QUANTILE_HIGH_PER_CHANNEL,
                                                    Reduction.ABS_QUANTILE_PER_CHANNEL)]
    stats = collect_statistics(model, reqs, enumerate(samples), len(samples))
    xs = [s["x"].astype(np.float64) for s in samples]
    tol = {"rtol": 1e-5, "atol": 1e-5}
    np.testing.assert_allclose(stats.get(y, Reduction.QUANTILE_LOW, None, p), [np.quantile(x, p) for x in xs], **tol)
    np.testing.assert_allclose(stats.get(y, Reduction.QUANTILE_HIGH, None, p), [np.quantile(x, 1 - p) for x in xs],
                               **tol)
    np.testing.assert_allclose(stats.get(y, Reduction.ABS_QUANTILE, None, p),
                               [np.quantile(np.abs(x), 1 - p) for x in xs], **tol)

    def per_channel(x, q):  # (C,) quantiles over N, H, W
        return np.quantile(x.transpose(1, 0, 2, 3).reshape(3, -1), q, axis=1)

    # per channel, folded over samples: the minimum of the lower and the maximum of the upper ones
    np.testing.assert_allclose(stats.get(y, Reduction.QUANTILE_LOW_PER_CHANNEL, 1, p)[0],
                               np.min([per_channel(x, p) for x in xs], axis=0), **tol)
    np.testing.assert_allclose(stats.get(y, Reduction.QUANTILE_HIGH_PER_CHANNEL, 1, p)[0],
                               np.max([per_channel(x, 1 - p) for x in xs], axis=0), **tol)
    np.testing.assert_allclose(stats.get(y, Reduction.ABS_QUANTILE_PER_CHANNEL, 1, p)[0],
                               np.max([per_channel(np.abs(x), 1 - p) for x in xs], axis=0), **tol)


def test_quantile_reductions_follow_a_sequence_length_that_changes_per_sample():
    """Dynamic shape (minilm-like ``[1, T, 8]``): ``k`` and the interpolation weight are computed
    in the graph from the runtime shape of each sample."""
    model, y = identity_model([1, -1, 8])
    lengths = [1, 2, 5, 17, 64, 300]
    samples = [{"x": heavy_tailed((1, t, 8), t)} for t in lengths]
    p = 0.01
    reqs = [StatisticRequest(y, r, None, p) for r in (Reduction.QUANTILE_LOW, Reduction.QUANTILE_HIGH,
                                                       Reduction.ABS_QUANTILE)]
    stats = collect_statistics(model, reqs, enumerate(samples), len(samples))
    xs = [s["x"].astype(np.float64) for s in samples]
    np.testing.assert_allclose(stats.get(y, Reduction.QUANTILE_LOW, None, p), [np.quantile(x, p) for x in xs],
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stats.get(y, Reduction.QUANTILE_HIGH, None, p), [np.quantile(x, 1 - p) for x in xs],
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stats.get(y, Reduction.ABS_QUANTILE, None, p),
                               [np.quantile(np.abs(x), 1 - p) for x in xs], rtol=1e-5, atol=1e-5)


def test_collecting_quantiles_leaves_the_model_unchanged():
    model = models.conv_bias_relu()
    before = sorted((o.get_type_name(), o.get_friendly_name()) for o in model.get_ops())
    x = model.get_parameters()[0].output(0)
    relu = next(o for o in model.get_ops() if o.get_friendly_name() == "relu").output(0)
    reqs = [StatisticRequest(out, r, ax, P) for out in (x, relu)
            for r, ax in ((Reduction.QUANTILE_LOW, None), (Reduction.ABS_QUANTILE, None),
                          (Reduction.QUANTILE_HIGH_PER_CHANNEL, 1))]
    collect_statistics(model, reqs, enumerate([models.random_inputs(model, seed=0)]), 1)
    assert sorted((o.get_type_name(), o.get_friendly_name()) for o in model.get_ops()) == before
    assert len(x.get_target_inputs()) == 1 and len(relu.get_target_inputs()) == 1


# -- activation range estimators ---------------------------------------------------------------

def test_quantile_preset_mixed_is_the_mean_of_per_sample_quantiles():
    """Asymmetric activations, preset quantile: ``[mean_s q_p(x_s), mean_s q_{1-p}(x_s)]``."""
    model, samples = models.conv_only(c_in=3, c_out=4, hw=40), conv_samples()
    params = activations(QuantizationParams(preset="mixed"), range_estimator=RangeEstimator(preset="quantile"))
    result, _ = quantize(model, samples, params)
    xs = [s["x"].astype(np.float64) for s in samples]
    lo, hi = np.mean([np.quantile(x, P) for x in xs]), np.mean([np.quantile(x, 1 - P) for x in xs])
    row = next(q for q in result.quantizers if q.kind == "activation")
    np.testing.assert_allclose(row.observed, (lo, hi), rtol=1e-5)
    # the quantiles are well inside the mean per-sample min/max of these heavy-tailed samples
    assert np.mean([x.min() for x in xs]) < lo and hi < np.mean([x.max() for x in xs])
    expected = compute_activation_params(lo, hi, "asymmetric")
    low, high, levels = fq(model, "conv/fq_input_0")
    np.testing.assert_allclose([low, high], [expected.input_low, expected.input_high], rtol=1e-5)
    assert levels == 256
    assert_zero_is_a_level(low, high, levels)


def test_quantile_preset_performance_uses_the_abs_quantile_for_symmetric_quantizers():
    model, samples = models.conv_only(c_in=3, c_out=4, hw=40), conv_samples()
    params = activations(range_estimator=RangeEstimator(preset="quantile"))
    quantize(model, samples, params)
    xs = [s["x"].astype(np.float64) for s in samples]
    abs_q = np.mean([np.quantile(np.abs(x), 1 - P) for x in xs])
    low, high, levels = fq(model, "conv/fq_input_0")
    assert levels == 256
    np.testing.assert_allclose([low, high], [-abs_q * 128 / 127, abs_q], rtol=1e-5)


def test_quantile_preset_mixed_gives_the_attention_operands_their_abs_quantile():
    """The operands of an activation x activation MatMul are symmetric whatever the preset, so
    under ``mixed`` they still read the abs_quantile statistic (it was not requested:
    ``KeyError: ABS_QUANTILE``, exit 1, on every transformer with attention)."""
    model = models.matmul_two_activations()
    samples = [{"a": heavy_tailed((1, 4, 8), k), "b": heavy_tailed((1, 8, 6), 10 + k)} for k in range(6)]
    params = activations(QuantizationParams(preset="mixed"), range_estimator=RangeEstimator(preset="quantile"))
    quantize(model, samples, params)
    # the second operand: signed 8-bit, symmetric (the CPU plugin runs the MatMul in INT8 only so)
    abs_q = np.mean([np.quantile(np.abs(s["b"].astype(np.float64)), 1 - P) for s in samples])
    low, high, _ = fq(model, "matmul/fq_input_1")
    np.testing.assert_allclose([low, high], [-abs_q * 128 / 127, abs_q], rtol=1e-5)
    # the first one follows the preset: asymmetric, from the plain quantiles
    xs = [s["a"].astype(np.float64) for s in samples]
    lo, hi = np.mean([np.quantile(x, P) for x in xs]), np.mean([np.quantile(x, 1 - P) for x in xs])
    expected = compute_activation_params(lo, hi, "asymmetric")
    low, high, _ = fq(model, "matmul/fq_input_0")
    np.testing.assert_allclose([low, high], [expected.input_low, expected.input_high], rtol=1e-5)


def test_explicit_estimators_with_their_own_outlier_prob_aggregator_and_clipping():
    model, samples = models.conv_only(c_in=3, c_out=4, hw=40), conv_samples()
    re = RangeEstimator(min=StatisticSpec(type="quantile", outlier_prob=0.01, aggregator="min"),
                        max=StatisticSpec(type="quantile", outlier_prob=0.05, aggregator="median",
                                          clipping_value=1.5))
    result, _ = quantize(model, samples, activations(QuantizationParams(preset="mixed"), range_estimator=re))
    xs = [s["x"].astype(np.float64) for s in samples]
    lo = np.min([np.quantile(x, 0.01) for x in xs])
    hi = min(np.median([np.quantile(x, 0.95) for x in xs]), 1.5)
    assert hi == 1.5  # the clip is active for these samples
    row = next(q for q in result.quantizers if q.kind == "activation")
    np.testing.assert_allclose(row.observed, (lo, hi), rtol=1e-5)
    expected = compute_activation_params(lo, hi, "asymmetric")
    low, high, _ = fq(model, "conv/fq_input_0")
    np.testing.assert_allclose([low, high], [expected.input_low, expected.input_high], rtol=1e-5)


def test_symmetric_clipping_value_bounds_both_sides():
    model, samples = models.conv_only(c_in=3, c_out=4, hw=40), conv_samples()
    re = RangeEstimator(max=StatisticSpec(type="abs_max", clipping_value=2.0))
    quantize(model, samples, activations(range_estimator=re))
    low, high, _ = fq(model, "conv/fq_input_0")
    np.testing.assert_allclose([low, high], [-2.0 * 128 / 127, 2.0], rtol=1e-6)


def test_abs_quantile_lower_bound_is_zero_for_a_tensor_that_is_never_negative():
    model = models.conv_only(c_in=3, c_out=4, hw=40)
    samples = [{"x": np.abs(s["x"])} for s in conv_samples()]
    re = RangeEstimator(min=StatisticSpec(type="abs_quantile"), max=StatisticSpec(type="abs_quantile"))
    quantize(model, samples, activations(QuantizationParams(preset="mixed"), range_estimator=re))
    hi = np.mean([np.quantile(s["x"].astype(np.float64), 1 - P) for s in samples])
    low, high, levels = fq(model, "conv/fq_input_0")
    assert float(low) == 0.0 and levels == 256
    np.testing.assert_allclose(high, hi, rtol=1e-5)


def test_dynamic_sequence_length_model_quantizes_with_the_quantile_preset():
    """A MatMul on ``[1, T, 16]`` activations with T changing per sample (the minilm case)."""
    rng = np.random.default_rng(0)
    x = models.param("x", [1, -1, 16])
    w = models.const(rng.standard_normal((16, 8)).astype(np.float32), "fc/weights")
    y = ops.matmul(x, w, False, False)
    y.set_friendly_name("fc")
    model = ov.Model([ops.result(y)], [x], "seq")
    samples = [{"x": heavy_tailed((1, t, 16), t)} for t in (3, 11, 40, 7)]
    params = activations(QuantizationParams(preset="mixed"), range_estimator=RangeEstimator(preset="quantile"))
    quantize(model, samples, params)
    xs = [s["x"].astype(np.float64) for s in samples]
    expected = compute_activation_params(np.mean([np.quantile(v, P) for v in xs]),
                                         np.mean([np.quantile(v, 1 - P) for v in xs]), "asymmetric")
    low, high, _ = fq(model, "fc/fq_input_0")
    np.testing.assert_allclose([low, high], [expected.input_low, expected.input_high], rtol=1e-5)
    out = run(model, {"x": samples[2]["x"]})
    assert out.shape == (1, 40, 8)


# -- level_low / level_high --------------------------------------------------------------------

@pytest.mark.parametrize("preset,level_low,level_high,levels,grid", [
    ("performance", -127, 127, 255, (-127, 127)),  # symmetric narrow grid
    ("performance", 0, 255, 256, (-128, 127)),     # symmetric: the same 256 levels, centred on zero
    ("performance", -64, 63, 128, (-64, 63)),      # 7 bits
    ("mixed", -128, 127, 256, None),               # asymmetric: affine on 256 levels
    ("mixed", 0, 127, 128, None),
])
def test_activation_levels_set_the_grid_and_keep_zero_exact(preset, level_low, level_high, levels, grid):
    model, samples = models.conv_only(c_in=3, c_out=4, hw=40), conv_samples()
    params = activations(QuantizationParams(preset=preset), level_low=level_low, level_high=level_high)
    _, algo = quantize(model, samples, params)
    q = algo.min_max.activations[0]
    assert q.params.levels == levels
    low, high, fq_levels = fq(model, "conv/fq_input_0")
    assert fq_levels == levels
    assert_zero_is_a_level(low, high, levels)
    lo, hi = q.stats
    step = (high - low) / (levels - 1)
    if grid is not None:  # symmetric: max(|lo|, |hi|) on the positive end of a grid centred on zero
        assert (q.params.level_low, q.params.level_high, int(q.params.zero_point)) == (*grid, 0)
        np.testing.assert_allclose(high, max(-lo, hi), rtol=1e-6)
        np.testing.assert_allclose(low, step * grid[0], rtol=1e-6)
    else:  # asymmetric: the grid as given, covering [lo, hi] within one step
        assert (q.params.level_low, q.params.level_high) == (level_low, level_high)
        assert low <= lo + step / 2 and high >= hi - step / 2 and high - low <= hi - lo + step


def test_signed_activation_levels_make_a_never_negative_tensor_signed_as_pot():
    model = models.conv_only(c_in=3, c_out=4, hw=40)
    samples = [{"x": np.abs(s["x"])} for s in conv_samples()]
    quantize(model, samples, activations(level_low=-128, level_high=127))
    low, high, levels = fq(model, "conv/fq_input_0")
    assert levels == 256 and low < 0
    np.testing.assert_allclose(low, -high * 128 / 127, rtol=1e-6)


@pytest.mark.parametrize("mode,level_low,level_high,grid,codes_type", [
    ("symmetric", -127, 127, (-63, 63), ov.Type.i8),
    ("symmetric", -128, 127, (-64, 63), ov.Type.i8),
    ("symmetric", 0, 255, (-64, 63), ov.Type.i8),      # centred: no zero point, still INT8
    ("asymmetric", -128, 127, (-64, 63), ov.Type.i8),  # zero point: Subtract in the graph
    ("asymmetric", 0, 255, (0, 127), ov.Type.i8),      # [0, 127] fits int8 storage
])
def test_weight_levels_stored_as_int8_dequantize_to_the_fake_quantize_values(mode, level_low, level_high, grid,
                                                                            codes_type):
    """The INT8 storage (Constant -> Convert -> [Subtract] -> Multiply) equals FakeQuantize on the
    float weights with the same bounds and levels, and both models compute the same output as the
    model with those dequantized weights in float. ``saturation_fix: all`` halves every grid (and
    keeps the CPU's u8 x i8 kernels exact)."""
    params = QuantizationParams(saturation_fix="all",
                                weights=QuantizerOverrides(mode=mode, level_low=level_low, level_high=level_high))
    samples = [models.random_inputs(models.conv_chain(), seed=i) for i in range(3)]
    compressed, plain = models.conv_chain(), models.conv_chain()
    _, algo = quantize(compressed, samples, params)
    quantize(plain, samples, params, compress=False)
    w = next(w for w in algo.min_max.weights if w.node.get_friendly_name() == "conv2")
    assert (w.params.level_low, w.params.level_high, w.params.levels) == (*grid, grid[1] - grid[0] + 1)
    # walk the storage sub-graph of conv2 and evaluate it
    conv2 = next(o for o in compressed.get_ops() if o.get_friendly_name() == "conv2")
    mul = conv2.input_value(1).get_node()
    assert mul.get_type_name() == "Multiply"
    chain = mul.input_value(0).get_node()
    codes_node = chain
    while codes_node.get_type_name() != "Constant":
        codes_node = codes_node.input_value(0).get_node()
    assert codes_node.get_element_type() == codes_type
    assert (chain.get_type_name() == "Subtract") == bool(np.any(w.params.zero_point != 0)) == (mode == "asymmetric")
    codes = np.array(codes_node.get_data()).astype(np.float32)
    assert codes.min() >= grid[0] and codes.max() <= grid[1]
    scale = np.array(mul.input_value(1).get_node().get_data())
    stored = scale * (codes - w.params.zero_point.astype(np.float32))
    simulated = fake_quantize(w.value, w.params.input_low, w.params.input_high, w.params.input_low,
                              w.params.input_high, w.params.levels)
    np.testing.assert_allclose(stored, simulated, rtol=1e-5, atol=1e-6 * np.abs(w.value).max())
    assert_zero_is_a_level(w.params.input_low, w.params.input_high, w.params.levels)
    reference = plain.clone()  # the activation FakeQuantize ops, float weights equal to the stored ones
    for q in algo.min_max.weights:
        node = next(o for o in reference.get_ops() if o.get_friendly_name() == q.node.get_friendly_name())
        node.input(1).replace_source_output(ops.constant(q.dequantized).output(0))
    x = samples[0]
    expected = run(reference, x)
    np.testing.assert_allclose(run(compressed, x), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(run(plain, x), expected, rtol=1e-4, atol=1e-4)


def test_saturation_fix_halves_explicit_weight_levels_of_the_first_layer():
    params = QuantizationParams(weights=QuantizerOverrides(level_low=-127, level_high=127))
    _, algo = quantize(models.conv_chain(), [models.random_inputs(models.conv_chain(), seed=0)], params)
    grids = {w.node.get_friendly_name(): (w.params.level_low, w.params.level_high) for w in algo.min_max.weights}
    assert grids == {"conv1": (-63, 63), "conv2": (-127, 127)}


def test_level_bounds_that_exclude_zero_are_a_config_error():
    hw = load_hardware_config("ANY")
    with pytest.raises(ConfigError) as e:
        create_min_max_settings(activations(level_low=1, level_high=255), hw, source="c.json: params")
    assert e.value.format_message() == ("c.json: params.activations.level_low: value 1 is above 0; expected "
                                        "level_low <= 0 < level_high (zero must be one of the levels)")
    with pytest.raises(ConfigError, match=r"params.weights.level_high: value -1 is not above 0"):
        create_min_max_settings(QuantizationParams(weights=QuantizerOverrides(level_high=-1)), hw,
                                source="c.json: params")


def test_one_explicit_level_takes_the_other_from_bits():
    s = create_min_max_settings(activations(level_low=0), load_hardware_config("ANY"))
    assert s.activation_levels == (0, 127)  # POT: level_high defaults to 2^bits/2 - 1
    s = create_min_max_settings(QuantizationParams(weights=QuantizerOverrides(level_high=100)),
                                load_hardware_config("ANY"))
    assert s.weight_levels == (-127, 100)  # symmetric weights: level_low defaults to -(2^bits/2 - 1)


# -- weights range estimator -------------------------------------------------------------------

def test_weights_quantile_preset_scales_each_channel_by_its_abs_quantile():
    params = QuantizationParams(saturation_fix="no", weights=QuantizerOverrides(
        range_estimator=RangeEstimator(preset="quantile")))
    model = models.conv_only(c_in=16, c_out=4, hw=6)
    _, algo = quantize(model, [models.random_inputs(model, seed=0)], params)
    w = algo.min_max.weights[0]
    expected = np.quantile(np.abs(w.value).reshape(4, -1).astype(np.float64), 1 - P, axis=1) / 127
    np.testing.assert_allclose(w.params.scale.reshape(-1), expected, rtol=1e-6)
    assert np.all(expected < np.abs(w.value).reshape(4, -1).max(axis=1) / 127)  # really inside max|w|


def test_weights_asymmetric_quantile_estimators_with_outlier_prob():
    re = RangeEstimator(min=StatisticSpec(type="quantile", outlier_prob=0.05),
                        max=StatisticSpec(type="quantile", outlier_prob=0.1))
    params = QuantizationParams(saturation_fix="no", weights=QuantizerOverrides(mode="asymmetric", range_estimator=re))
    model = models.conv_only(c_in=16, c_out=4, hw=6)
    _, algo = quantize(model, [models.random_inputs(model, seed=0)], params)
    w = algo.min_max.weights[0]
    flat = w.value.reshape(4, -1).astype(np.float64)
    lo, hi = np.quantile(flat, 0.05, axis=1), np.quantile(flat, 0.9, axis=1)
    np.testing.assert_allclose(w.params.scale.reshape(-1), (hi - lo) / 255, rtol=1e-5)


# -- per-channel activations -------------------------------------------------------------------

def test_perchannel_activations_give_one_range_per_channel():
    model, samples = models.conv_only(c_in=3, c_out=4, hw=40), conv_samples()
    quantize(model, samples, activations(granularity="perchannel"))
    low, high, levels = fq(model, "conv/fq_input_0")
    assert low.shape == high.shape == (1, 3, 1, 1) and levels == 256
    xs = np.stack([s["x"][0] for s in samples]).astype(np.float64)  # (S, C, H, W)
    abs_max = np.max(np.abs(xs), axis=(0, 2, 3))
    np.testing.assert_allclose(high.reshape(-1), abs_max, rtol=1e-6)
    np.testing.assert_allclose(low.reshape(-1), -abs_max * 128 / 127, rtol=1e-6)
    # the model still runs and stays close to float
    ref = models.conv_only(c_in=3, c_out=4, hw=40)
    np.testing.assert_allclose(run(model, samples[0]), run(ref, samples[0]), atol=0.05 * abs_max.max() * 4)


def test_perchannel_activations_with_the_quantile_preset():
    model, samples = models.conv_only(c_in=3, c_out=4, hw=40), conv_samples()
    params = activations(QuantizationParams(preset="mixed"), granularity="perchannel",
                         range_estimator=RangeEstimator(preset="quantile"))
    quantize(model, samples, params)
    xs = [s["x"][0].reshape(3, -1).astype(np.float64) for s in samples]
    lo = np.min([np.quantile(x, P, axis=1) for x in xs], axis=0)
    hi = np.max([np.quantile(x, 1 - P, axis=1) for x in xs], axis=0)
    expected = compute_activation_params(lo.reshape(1, 3, 1, 1), hi.reshape(1, 3, 1, 1), "asymmetric")
    low, high, _ = fq(model, "conv/fq_input_0")
    np.testing.assert_allclose(low, expected.input_low, rtol=1e-5)
    np.testing.assert_allclose(high, expected.input_high, rtol=1e-5)


def test_perchannel_activations_on_a_dynamic_channel_axis_is_refused_with_the_key():
    x = models.param("x", [1, -1, 16])
    y = ops.matmul(x, models.const(np.ones((16, 4), np.float32), "w"), False, False)
    model = ov.Model([ops.result(y)], [x], "seq")
    settings = create_min_max_settings(activations(granularity="perchannel"), load_hardware_config("ANY"),
                                       source="c.json: compression.algorithms[0].params")
    algo = DefaultQuantization(settings, use_fast_bias=False)
    with pytest.raises(NotSupportedError) as e:
        algo.statistic_requests(model)
    assert str(e.value).startswith("c.json: compression.algorithms[0].params.activations.granularity: "
                                   "'perchannel' needs a static channel dimension (axis 1); tensor 'x' has shape")


def test_pertensor_granularity_also_applies_to_depthwise_inputs():
    model = models.depthwise_conv()
    samples = [models.random_inputs(model, seed=i) for i in range(3)]
    quantize(model, samples, activations(granularity="pertensor"))
    low, _, _ = fq(model, "dwconv/fq_input_0")
    assert low.size == 1
    model = models.depthwise_conv()
    quantize(model, samples, QuantizationParams())
    low, _, _ = fq(model, "dwconv/fq_input_0")
    assert low.shape == (1, 4, 1, 1)  # the hardware config's per-channel default


def test_perchannel_with_a_mean_aggregator_is_refused_with_the_key():
    re = RangeEstimator(max=StatisticSpec(aggregator="mean"))
    with pytest.raises(NotSupportedError, match=r"^c.json: params.activations.range_estimator.max.aggregator: "
                                                r"'mean' with activations.granularity 'perchannel' is not supported "
                                                r"yet; expected 'max'"):
        create_min_max_settings(activations(granularity="perchannel", range_estimator=re),
                                load_hardware_config("ANY"), source="c.json: params")


# -- end to end --------------------------------------------------------------------------------

def test_cli_with_quantile_preset_levels_and_weight_estimator(tmp_path):
    model = models.conv_bias_relu(c_in=3, c_out=8, hw=16)
    xml, _ = models.save_ir(model, tmp_path / "model", "tiny")
    data = tmp_path / "data"
    data.mkdir()
    for i in range(5):
        np.save(data / f"s{i}.npy", heavy_tailed((1, 3, 16, 16), i))
    config = {
        "model": {"model_name": "tiny", "model": str(xml)},
        "engine": {"type": "simplified", "data_source": str(data)},
        "compression": {"target_device": "ANY", "algorithms": [{"name": "DefaultQuantization", "params": {
            "preset": "mixed", "stat_subset_size": 5,
            "activations": {"level_low": 0, "level_high": 254,
                            "range_estimator": {"preset": "quantile", "max": {"outlier_prob": 0.001}}},
            "weights": {"level_low": -127, "level_high": 127,
                        "range_estimator": {"max": {"type": "abs_quantile", "outlier_prob": 0.01}}}}}]}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    proc = subprocess.run([sys.executable, "-m", "pot_cli", "-c", str(path), "--output-dir", str(tmp_path / "out"),
                           "-d", "--log-level", "WARNING"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = ov.Core().read_model(str(tmp_path / "out" / "optimized" / "tiny.xml"))
    low, high, levels = fq(out, "conv/fq_input_0")
    assert levels == 255
    xs = [np.load(data / f"s{i}.npy").astype(np.float64) for i in range(5)]
    expected = compute_activation_params(np.mean([np.quantile(x, P) for x in xs]),
                                         np.mean([np.quantile(x, 1 - 0.001) for x in xs]), "asymmetric",
                                         level_low=0, level_high=254)
    np.testing.assert_allclose([low, high], [expected.input_low, expected.input_high], rtol=1e-5)
    report = json.loads((tmp_path / "out" / "optimized" / "report.json").read_text())
    rows = {r["name"]: r for r in report["quantizers"]}
    assert rows["conv/fq_input_0"]["levels"] == 255
    assert rows["conv/fq_weights_1"]["levels"] == 127  # first layer: 7-bit by the saturation fix
    sample = np.load(data / "s0.npy")
    ref = ov.Core().compile_model(model, "CPU", F32)({"x": sample})[0]
    got = ov.Core().compile_model(out, "CPU", F32)({"x": sample})[0]
    assert np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.99


def test_cli_refuses_perchannel_on_a_dynamic_sequence_before_calibration(tmp_path):
    from click.testing import CliRunner

    from pot_cli.cli import main

    x = models.param("x", [1, -1, 16])
    y = ops.matmul(x, models.const(np.ones((16, 4), np.float32), "fc/weights"), False, False)
    y.set_friendly_name("fc")
    xml, _ = models.save_ir(ov.Model([ops.result(y)], [x], "seq"), tmp_path / "model", "seq")
    data = tmp_path / "data"
    data.mkdir()
    np.save(data / "s0.npy", heavy_tailed((1, 5, 16), 0))
    config = {"model": {"model_name": "seq", "model": str(xml)},
              "engine": {"type": "simplified", "data_source": str(data)},
              "compression": {"algorithms": [{"name": "DefaultQuantization",
                                              "params": {"activations": {"granularity": "perchannel"}}}]}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    result = CliRunner().invoke(main, ["-c", str(path), "--output-dir", str(tmp_path / "out")],
                                catch_exceptions=False)
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR:")]
    assert errors == [f"ERROR: {path}: compression.algorithms[0].params.activations.granularity: 'perchannel' "
                      "needs a static channel dimension (axis 1); tensor 'x' has shape [1,?,16]; "
                      "expected 'pertensor' for this model"]
    assert "Collecting statistics" not in result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.xml"))
