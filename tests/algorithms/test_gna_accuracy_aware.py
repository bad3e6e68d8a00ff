"""GNA: per-op weight schemes, switching a layer group from 8 to 16 bits (AccuracyAwareGNA),
the performance-only rule, OverflowCorrection, and the speech example end to end."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest
from click.testing import CliRunner

import models
from pot_cli.algorithms.accuracy_aware import AccuracyAwareQuantization, switch_group, switchable_groups
from pot_cli.algorithms.default import DefaultQuantization
from pot_cli.algorithms.overflow_correction import INT32_MAX
from pot_cli.algorithms.settings import create_min_max_settings
from pot_cli.cli import main
from pot_cli.config import load_hardware_config
from pot_cli.config.model import QuantizationParams
from pot_cli.errors import ConfigError
from pot_cli.graph.model import is_constant_subgraph
from pot_cli.statistics.collector import collect_statistics

ROOT = Path(__file__).resolve().parents[2]


def mlp(seed: int = 0, scale: float = 1.0) -> ov.Model:
    """``x [1, 16] -> fc1 (16x12) + bias -> ReLU -> fc2 (12x6) + bias``."""
    rng = np.random.default_rng(seed)
    x = ops.parameter([1, 16], np.float32, name="x")
    h = x
    for k, (a, b) in enumerate(((16, 12), (12, 6)), start=1):
        w = ops.constant((rng.normal(0, 1, (a, b)) * scale).astype(np.float32))
        w.set_friendly_name(f"fc{k}/weights")
        mm = ops.matmul(h, w, False, False)
        mm.set_friendly_name(f"fc{k}")
        h = ops.add(mm, ops.constant(rng.normal(0, 0.1, (1, b)).astype(np.float32)))
        h.set_friendly_name(f"fc{k}/add")
        if k == 1:
            h = ops.relu(h)
    return ov.Model([ops.result(h)], [x], "mlp")


def settings(device: str, preset: str = "performance", **kw):
    return create_min_max_settings(QuantizationParams(preset=preset, target_device=device, **kw),
                                   load_hardware_config(device))


def quantize(fp: ov.Model, s, compress: bool = True, n: int = 8, low: float = -1.0, high: float = 1.0):
    model = fp.clone()
    algorithm = DefaultQuantization(s, compress_weights=compress)
    requests = algorithm.statistic_requests(model)
    samples = [(k, models.random_inputs(model, seed=k, low=low, high=high)) for k in range(n)]
    result = algorithm.apply(model, collect_statistics(model, requests, iter(samples), len(samples)))
    return model, result


def source(model: ov.Model, node: str, port: int) -> ov.Node:
    op = next(o for o in model.get_ops() if o.get_friendly_name() == node)
    return op.input(port).get_source_output().get_node()


def wide_ops(model: ov.Model):
    cache: dict = {}
    return {o.get_friendly_name(): o for o in model.get_ops()}, (lambda out: is_constant_subgraph(out, cache))


def test_gna_presets_pick_each_ops_weight_scheme_as_the_hardware_config_orders_them():
    perf, acc = settings("GNA"), settings("GNA", "mixed")  # POT's 'accuracy' preset reads as 'mixed'
    # gna.json: Convolution weights q16_w only; MatMul [q8_w, q16_w]
    assert (perf.weight_bits, perf.weight_per_channel) == (16, False)
    assert perf.weight_specs_by_type == (("MatMul", 8, True),)
    assert (acc.weight_bits, acc.weight_specs_by_type, acc.activation_bits) == (16, (), 16)
    gna3, gna3_acc = settings("GNA3"), settings("GNA3", "mixed")
    assert (gna3.activation_bits, gna3.weight_bits) == (8, 8) and (gna3_acc.activation_bits, gna3_acc.weight_bits) == (16, 16)
    assert perf.overflow_correction and not settings("CPU").overflow_correction


@pytest.mark.parametrize("compress", [True, False])
def test_switching_a_group_changes_the_weight_levels_of_exactly_that_group(compress):
    fp = mlp()
    q, result = quantize(fp, settings("GNA"), compress)
    wide, _ = quantize(fp, settings("GNA", "mixed"), compress)
    assert switchable_groups(q, result) == ("fc1", "fc2")
    ops_, const = wide_ops(wide)
    assert switch_group(q, "fc1", ops_, "GNA", const) == []
    if compress:
        dtypes = {n: source(q, n, 1).input_value(0).get_node().input_value(0).get_element_type() for n in ("fc1", "fc2")}
        assert dtypes == {"fc1": ov.Type.i16, "fc2": ov.Type.i8}
    else:
        levels = {n: source(q, n, 1).get_attributes()["levels"] for n in ("fc1", "fc2")}
        assert levels == {"fc1": 65535, "fc2": 255}
    # activations stay 16-bit on GNA, untouched
    assert source(q, "fc1", 0).get_attributes()["levels"] == 65536
    x = models.random_inputs(fp, seed=50)
    f32 = {"INFERENCE_PRECISION_HINT": "f32"}
    out = ov.Core().compile_model(q, "CPU", f32)(x)[0]
    ref = ov.Core().compile_model(fp, "CPU", f32)(x)[0]
    assert np.allclose(out, ref, atol=0.1)


def test_gna3_switches_a_convolutions_input_with_its_weights_and_only_for_it():
    fp = models.conv_chain()
    q, result = quantize(fp, settings("GNA3"), compress=False)
    wide, _ = quantize(fp, settings("GNA3", "mixed"), compress=False)
    assert switchable_groups(q, result) == ("conv1", "conv2")
    ops_, const = wide_ops(wide)
    added = switch_group(q, "conv2", ops_, "GNA3", const)
    assert added == ["conv2/fq_input_0_16bit"]
    levels = {n: (source(q, n, 0).get_attributes()["levels"], source(q, n, 1).get_attributes()["levels"])
              for n in ("conv1", "conv2")}
    assert levels == {"conv1": (256, 255), "conv2": (65536, 65535)}


class _NoEvaluator:
    metrics = ()


@pytest.mark.parametrize("preset", ["mixed", "accuracy"])
def test_accuracy_aware_for_gna_refuses_a_preset_other_than_performance(preset):
    params = QuantizationParams(preset="mixed" if preset == "accuracy" else preset, target_device="GNA")
    with pytest.raises(ConfigError, match="expected preset 'performance'"):
        AccuracyAwareQuantization(params, settings("GNA"), _NoEvaluator(), collect=None)


def test_non_gna_devices_keep_reverting_to_floating_point():
    aa = AccuracyAwareQuantization(QuantizationParams(preset="mixed"), settings("CPU"), _NoEvaluator(), collect=None)
    assert not aa.gna and "accuracy" not in aa.settings


def _accumulators(model: ov.Model, layer: str, x: np.ndarray) -> np.ndarray:
    """Integer accumulator of ``layer``: input codes (its input FakeQuantize grid) times weight codes."""
    fq = source(model, layer, 0)
    lo, hi = (float(np.asarray(fq.input_value(k).get_node().get_data()).max()) for k in (1, 2))
    s_x = (hi - lo) / (fq.get_attributes()["levels"] - 1)
    codes = np.round(np.clip(x, lo, hi) / s_x)
    w_codes = np.asarray(source(model, layer, 1).input_value(0).get_node().input_value(0).get_node().get_data())
    return codes.astype(np.int64) @ w_codes.astype(np.int64)


def test_overflow_correction_keeps_the_accumulator_within_int32():
    # large inputs (+-100), large output: with 16-bit activations and 16-bit weights the
    # accumulator y / (s_x * s_w) reaches about 1e11
    fp = mlp(seed=3, scale=3.0)
    acc = settings("GNA", "mixed")
    samples = [models.random_inputs(fp, seed=k, low=-100.0, high=100.0)["x"] for k in range(8)]
    plain, _ = quantize(fp, dataclasses.replace(acc, overflow_correction=False), low=-100.0, high=100.0)
    assert max(np.abs(_accumulators(plain, "fc1", x)).max() for x in samples) > INT32_MAX
    fixed, result = quantize(fp, acc, low=-100.0, high=100.0)
    assert {o.layer for o in result.overflow_corrections} >= {"fc1"}
    assert all(o.rescale > 1 for o in result.overflow_corrections)
    assert max(np.abs(_accumulators(fixed, "fc1", x)).max() for x in samples) <= INT32_MAX
    # 8-bit weights (performance preset) are never rescaled
    _, perf = quantize(fp, settings("GNA"), low=-100.0, high=100.0)
    assert not perf.overflow_corrections


def _speech_build():
    spec = importlib.util.spec_from_file_location("speech_build", ROOT / "examples" / "speech" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_speech_example_switches_fc1_to_16_bits_to_hold_maximal_drop(tmp_path, monkeypatch):
    _speech_build().build(tmp_path, val_frames=200, calib_frames=100, train_frames=500, steps=120)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["-q", "accuracy_aware", "-m", "model/speech_dnn.xml",
                                  "--ac-config", str(ROOT / "examples" / "speech" / "speech_ac.yml"),
                                  "--target-device", "GNA", "--max-drop", "0.01", "--output-dir", str(out), "-d"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    report = json.loads((out / "optimized" / "report.json").read_text())
    aa = report["accuracy_aware"]
    assert aa["target_met"] and aa["fully_quantized"]["drop"]["frame_accuracy"] > 0.01
    assert {"name": "fc1", "type": "MatMul"} in aa["switched_to_16_bit"] and aa["reverted_layers"] == []
    assert "fp32_metrics" in aa and aa["baseline_source"].startswith("measured: 16-bit")
    model = ov.Core().read_model(str(out / "optimized" / "speech_dnn.xml"))
    weights = {o.get_friendly_name().split("/")[0]: o.get_element_type() for o in model.get_ops()
               if o.get_type_name() == "Constant" and o.get_element_type() in (ov.Type.i8, ov.Type.i16)}
    assert weights["fc1"] == ov.Type.i16
    assert all(weights[n] == (ov.Type.i16 if n in {s["name"] for s in aa["switched_to_16_bit"]} else ov.Type.i8)
               for n in weights)
    compiled = ov.Core().compile_model(model, "CPU")
    assert compiled({"feats": np.load(next((tmp_path / "data" / "val").glob("*.npy")))[None]})[0].shape == (1, 10)
