"""Recurrent ops (item 7): float by default; with ``quantize_recurrent: true``, X and H share one
FakeQuantize range and W, R are INT8 with one scale per output channel shared by both, as the CPU
hardware config's ``unified_scales`` says; the result compiles and runs on the CPU plugin."""
from __future__ import annotations

import json
import logging

import numpy as np
import openvino as ov
import pytest
from click.testing import CliRunner

import models
from pot_cli.algorithms.default import DefaultQuantization
from pot_cli.cli import main
from pot_cli.config import QuantizationParams, load_hardware_config, validate_config
from pot_cli.errors import ConfigError
from pot_cli.algorithms.settings import create_min_max_settings
from pot_cli.statistics.collector import collect_statistics

F32 = {"INFERENCE_PRECISION_HINT": "f32"}


def lstm_samples(model: ov.Model, n: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Inputs ``x`` in [-2, 2], states in [-1, 1] (what an LSTM's own states look like)."""
    out = []
    for k in range(n):
        rng = np.random.default_rng(seed + k)
        sample = {}
        for p in model.get_parameters():
            shape = [d.get_length() for d in p.get_partial_shape()]
            bound = 2.0 if p.get_friendly_name() == "x" else 1.0
            sample[p.get_friendly_name()] = rng.uniform(-bound, bound, shape).astype(np.float32)
        out.append(sample)
    return out


def quantize(model: ov.Model, device: str = "CPU", **params):
    settings = create_min_max_settings(QuantizationParams(**params), load_hardware_config(device))
    algo = DefaultQuantization(settings)
    requests = algo.statistic_requests(model)
    samples = lstm_samples(model, 16, seed=0)
    return algo.apply(model, collect_statistics(model, requests, enumerate(samples), len(samples)))


def node(model: ov.Model, name: str) -> ov.Node:
    return next(o for o in model.get_ops() if o.get_friendly_name() == name)


def fq_bounds(fq: ov.Node) -> tuple[float, float]:
    assert fq.get_type_name() == "FakeQuantize"
    return float(fq.input_value(1).get_node().get_data()), float(fq.input_value(2).get_node().get_data())


def int8_weights(cell: ov.Node, port: int) -> tuple[np.ndarray, np.ndarray]:
    """``Constant(i8) -> Convert -> Multiply(scale) -> cell:port``: (codes, scale)."""
    mul = cell.input_value(port).get_node()
    assert mul.get_type_name() == "Multiply"
    codes = mul.input_value(0).get_node().input_value(0).get_node()
    assert codes.get_element_type() == ov.Type.i8
    return np.array(codes.get_data()), np.array(mul.input_value(1).get_node().get_data())


@pytest.mark.parametrize("build, name", [(models.lstm_sequence, "lstm"), (models.gru_sequence, "gru")])
def test_recurrent_ops_stay_float_by_default_and_say_so(build, name, caplog):
    model = build()
    with caplog.at_level(logging.INFO, logger="pot"):
        result = quantize(model)
    assert result.quantizers == []
    cell = node(model, name)
    for port in range(cell.get_input_size()):
        src = cell.input_value(port).get_node()
        assert src.get_type_name() in ("Parameter", "Constant"), (port, src.get_type_name())
        assert src.get_element_type() in (ov.Type.f32, ov.Type.i32)
    op_type = cell.get_type_name()
    assert (f'Recurrent ops stay in floating point (1 {op_type}); set "quantize_recurrent": true in the algorithm '
            "params to quantize them") in caplog.messages


@pytest.mark.parametrize("build, name, weight_ports", [
    (models.lstm_sequence, "lstm", (4, 5)),
    (models.gru_sequence, "gru", (3, 4)),
])
def test_opt_in_quantizes_x_and_h_with_one_range_and_w_r_per_channel(build, name, weight_ports):
    reference_model = build()
    model = build()
    result = quantize(model, quantize_recurrent=True)
    cell = node(model, name)
    x_fq, h_fq = cell.input_value(0).get_node(), cell.input_value(1).get_node()
    assert x_fq.get_friendly_name() == f"{name}/fq_input_0" and h_fq.get_friendly_name() == f"{name}/fq_input_1"
    lo, hi = fq_bounds(x_fq)
    assert fq_bounds(h_fq) == (lo, hi)
    # one range covering both: x in [-2, 2] (mean of per-sample extremes a bit inside), h in [-1, 1]
    assert -2.0 < lo < -1.5 and 1.5 < hi < 2.0
    assert x_fq.get_attributes()["levels"] == 256
    (w_codes, w_scale), (r_codes, r_scale) = (int8_weights(cell, p) for p in weight_ports)
    np.testing.assert_array_equal(w_scale, r_scale)
    assert w_scale.shape == (1, w_codes.shape[1], 1)
    # one scale per output channel for W and R together; 7-bit codes (signed input, saturation_fix)
    both = np.concatenate([np.abs(w_codes), np.abs(r_codes)], axis=2)
    assert both.max(axis=2).tolist() == [[63] * w_codes.shape[1]]
    w = node(reference_model, f"{name}/W").get_data()
    r = node(reference_model, f"{name}/R").get_data()
    np.testing.assert_allclose(w_scale[0, :, 0], np.maximum(np.abs(w).max(axis=2), np.abs(r).max(axis=2))[0] / 63,
                               rtol=1e-6)
    assert {q.name for q in result.quantizers} == {f"{name}/fq_input_0", f"{name}/fq_input_1",
                                                   f"{name}/fq_weights_{weight_ports[0]}",
                                                   f"{name}/fq_weights_{weight_ports[1]}"}

    # compiles and runs on the CPU; outputs close to FP32 on other inputs than the calibration ones
    core = ov.Core()
    fp32 = core.compile_model(reference_model, "CPU", F32)
    int8 = core.compile_model(model, "CPU")
    errors = [np.abs(int8(s)[0] - fp32(s)[0]) for s in lstm_samples(model, 8, seed=100)]
    assert np.mean([e.mean() for e in errors]) < 0.05
    assert max(e.max() for e in errors) < 0.5


def test_gru_with_linear_before_reset_stays_float(caplog):
    model = models.gru_sequence(linear_before_reset=True)
    with caplog.at_level(logging.INFO, logger="pot"):
        result = quantize(model, quantize_recurrent=True)
    assert result.quantizers == []
    assert "GRUSequence 'gru' has linear_before_reset: it stays in floating point (no INT8 kernel on CPU)" \
        in caplog.messages
    ov.Core().compile_model(model, "CPU")


def test_opt_in_on_a_device_whose_hardware_config_has_no_recurrent_ops(caplog):
    model = models.lstm_sequence()
    with caplog.at_level(logging.INFO, logger="pot"):
        result = quantize(model, device="GPU", quantize_recurrent=True)
    assert result.quantizers == []
    assert "Recurrent ops the hardware config does not quantize stay in floating point: 1 LSTMSequence" \
        in caplog.messages


def test_quantize_recurrent_is_a_boolean_config_key(tmp_path):
    (tmp_path / "m.xml").touch()
    (tmp_path / "m.bin").touch()
    raw = {"model": {"model": str(tmp_path / "m.xml")}, "engine": {"data_source": str(tmp_path)},
           "compression": {"algorithms": [{"name": "DefaultQuantization", "params": {"quantize_recurrent": True}}]}}
    assert validate_config(raw, "<command line>").compression.algorithms[0].params.quantize_recurrent is True
    raw["compression"]["algorithms"][0]["params"]["quantize_recurrent"] = "yes"
    with pytest.raises(ConfigError) as info:
        validate_config(raw, "<command line>")
    assert str(info.value) == ('<command line>: compression.algorithms[0].params.quantize_recurrent: wrong type: '
                               'got string "yes"; expected boolean')


def test_command_line_run_with_the_opt_in_writes_a_model_that_runs_on_cpu(tmp_path):
    xml, _ = models.save_ir(models.lstm_sequence(), tmp_path / "model", "lstm")
    data = tmp_path / "npz"
    data.mkdir()
    for k, sample in enumerate(lstm_samples(models.lstm_sequence(), 6, seed=0)):
        np.savez(data / f"s{k}.npz", **sample)
    config = tmp_path / "lstm.json"
    config.write_text(json.dumps({
        "model": {"model": str(xml)}, "engine": {"data_source": str(data)},
        "compression": {"target_device": "CPU", "algorithms": [
            {"name": "DefaultQuantization", "params": {"quantize_recurrent": True, "speed_check": False}}]}}))
    result = CliRunner().invoke(main, ["-c", str(config), "--output-dir", str(tmp_path / "out"), "-d"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    out = tmp_path / "out" / "optimized"
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["compression"]["algorithms"][0]["params"]["quantize_recurrent"] is True
    assert report["summary"]["activation_quantizers"] == 2 and report["summary"]["weight_quantizers"] == 2
    saved = ov.Core().read_model(str(out / "lstm.xml"))
    cell = node(saved, "lstm")
    assert [cell.input_value(p).get_node().get_type_name() for p in (0, 1, 4, 5)] == \
        ["FakeQuantize", "FakeQuantize", "Multiply", "Multiply"]
    y = ov.Core().compile_model(saved, "CPU")(lstm_samples(saved, 1, seed=50)[0])[0]
    assert y.shape == (1, 1, 6, 32) and np.isfinite(y).all()
