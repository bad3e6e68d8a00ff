"""BiasCorrection's second pass runs on the quantized model. With a dynamic input shape the CPU
plugin gives wrong values at extra outputs of a quantized model (OpenVINO 2026.4), so that pass
computes the quantized layers in plain f32 ops; the corrected model must stay close to FP32."""
from __future__ import annotations

import json

import numpy as np
import openvino as ov
import openvino.opset13 as ops

import models
from pot_cli.algorithms.fake_quantize import fake_quantize
from pot_cli.graph.model import evaluate_constants
from pot_cli.statistics.collector import compile_with_outputs
from reliability.helpers import pot


def _dynamic_conv_stack(seed: int = 0) -> ov.Model:
    """``x [1,3,?,?] -> 4 x (conv 3x3 + bias + relu)``, 16 channels."""
    rng = np.random.default_rng(seed)
    x = models.param("x", [1, 3, -1, -1], layout="NCHW")
    y, c_in = x, 3
    for k in range(4):
        w = (rng.standard_normal((16, c_in, 3, 3)) * np.sqrt(2.0 / (9 * c_in))).astype(np.float32)
        y = ops.relu(models.add_bias(models.conv(y, w, f"conv{k}"), rng.uniform(-0.2, 0.2, 16).astype(np.float32),
                                     f"bias{k}"))
        c_in = 16
    return ov.Model([ops.result(y)], [x], "dyn_stack")


def _quantized_dynamic_model(seed: int = 0) -> ov.Model:
    """``x [1,3,?,?]`` -> per-tensor FakeQuantize -> Convolution with INT8 weights (``Constant(i8)
    -> Convert -> Multiply``) -> per-channel FakeQuantize: the forms DefaultQuantization writes."""
    rng = np.random.default_rng(seed)
    x = models.param("x", [1, 3, -1, -1], layout="NCHW")
    c = lambda v: ops.constant(np.asarray(v, np.float32))
    fq_in = ops.fake_quantize(x, c(-0.8), c(0.9), c(-0.8), c(0.9), 256, name="fq_in")
    w = rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    scale = rng.uniform(0.002, 0.01, (4, 1, 1, 1)).astype(np.float32)
    weights = ops.multiply(ops.convert(ops.constant(w), ov.Type.f32), ops.constant(scale))
    conv = ops.convolution(fq_in, weights, [1, 1], [1, 1], [1, 1], [1, 1], name="conv")
    low, high = -rng.uniform(0.5, 1.0, (1, 4, 1, 1)), rng.uniform(0.5, 1.0, (1, 4, 1, 1))
    fq_out = ops.fake_quantize(conv, c(low), c(high), c(low), c(high), 255, name="fq_out")
    return ov.Model([ops.result(fq_out), ops.result(ops.relu(fq_in))], [x], "quantized_dynamic")


def _structure(model: ov.Model) -> list[tuple]:
    """Every op with its inputs' sources and its outputs' consumers, by name."""
    return sorted((op.get_friendly_name(), op.get_type_name(),
                   tuple(i.get_source_output().get_node().get_friendly_name() for i in op.inputs()),
                   tuple(sorted(t.get_node().get_friendly_name() for o in op.outputs() for t in o.get_target_inputs())))
                  for op in model.get_ops())


def test_fake_quantize_in_float_computes_the_op_and_leaves_the_model_as_it_was():
    """Statistics on a quantized dynamic-shape model run its FakeQuantize ops as plain f32 ops and
    its INT8 weights as one f32 Constant: values as the FakeQuantize-1 specification, no INT8
    kernel (the CPU plugin's ones gave wrong values there at extra outputs)."""
    model = _quantized_dynamic_model()
    before = _structure(model)
    x = np.random.default_rng(3).uniform(-1.2, 1.2, (1, 3, 9, 11)).astype(np.float32)
    ops_by_name = {op.get_friendly_name(): op for op in model.get_ops()}
    conv_out = ops_by_name["conv"].output(0)
    compiled = compile_with_outputs(model, [conv_out, ops_by_name["fq_out"].output(0)])
    assert _structure(model) == before  # every added op detached, every consumer restored
    runtime = {op.get_type_name() for op in compiled.get_runtime_model().get_ops()}
    assert "FakeQuantize" not in runtime
    got_conv, got_fq = (np.asarray(v) for v in compiled.create_infer_request().infer({"x": x}).values())
    # the reference: numpy FakeQuantize around a float convolution with the dequantized weights
    bounds = lambda name: [np.asarray(ops_by_name[name].input_value(k).get_node().get_data()) for k in range(1, 5)]
    q_in = fake_quantize(x, *bounds("fq_in"), 256)
    weights = evaluate_constants([ops_by_name["conv"].input_value(1)])[0]
    q = models.param("q", [1, 3, 9, 11])
    plain = ov.Model([ops.result(ops.convolution(q, ops.constant(weights), [1, 1], [1, 1], [1, 1], [1, 1]))],
                     [q], "plain")
    expected = ov.Core().compile_model(plain, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})({0: q_in})[0]
    np.testing.assert_allclose(got_conv, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_fq, fake_quantize(expected, *bounds("fq_out"), 255), atol=1e-5)
    assert len(np.unique(got_fq[0, 0])) <= 255


def test_full_bias_correction_on_a_dynamic_shape_model_stays_close_to_fp32(tmp_path):
    model = _dynamic_conv_stack()
    xml, _ = models.save_ir(model, tmp_path / "m", "dyn_stack")
    data = tmp_path / "calib"
    data.mkdir()
    rng = np.random.default_rng(1)
    for k in range(16):
        np.save(data / f"{k:02d}.npy", rng.uniform(0, 1, (1, 3, 24, 32)).astype(np.float32))
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"model": {"model": str(xml)}, "engine": {"data_source": str(data)},
                                  "compression": {"algorithms": [{"name": "DefaultQuantization",
                                                                  "params": {"use_fast_bias": False}}]}}))
    result = pot("-c", config, "--output-dir", tmp_path / "out", "-d")
    assert result.exit_code == 0, result.stderr
    core = ov.Core()
    q = core.compile_model(str(tmp_path / "out" / "optimized" / "dyn_stack.xml"), "CPU")
    ref = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    for k in range(4):
        x = rng.uniform(0, 1, (1, 3, 24, 32)).astype(np.float32)
        a, b = np.asarray(q(x)[0]).ravel(), np.asarray(ref(x)[0]).ravel()
        assert float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) > 0.99
