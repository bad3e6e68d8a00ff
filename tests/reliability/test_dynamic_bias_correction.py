"""BiasCorrection's second pass runs on the quantized model. With a dynamic input shape the CPU
plugin's in-graph reductions of an INT8 layer's output are wrong (OpenVINO 2026.4), so that pass
reduces on the host; the corrected model must stay close to FP32."""
from __future__ import annotations

import json

import numpy as np
import openvino as ov
import openvino.opset13 as ops

import models
from pot_cli.statistics.collector import Reduction, StatisticRequest, _host_reduction, collect_statistics
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


def test_host_reductions_match_the_in_graph_ones():
    model = models.conv_chain()
    out = next(o for o in model.get_ops() if o.get_friendly_name() == "conv2").output(0)
    reqs = [StatisticRequest(out, r, 1) for r in (Reduction.MIN_PER_CHANNEL, Reduction.MAX_PER_CHANNEL,
                                                   Reduction.MEAN_PER_CHANNEL)]
    reqs += [StatisticRequest(out, Reduction.MIN), StatisticRequest(out, Reduction.MAX)]
    samples = [models.random_inputs(model, seed=k) for k in range(3)]
    stats = collect_statistics(model, reqs, enumerate(samples), 3)
    exposed = ov.Model([ops.result(out)], model.get_parameters(), "exposed")
    compiled = ov.Core().compile_model(exposed, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    values = [np.asarray(compiled(s)[0], dtype=np.float64) for s in samples]
    for r in reqs:
        host = [_host_reduction(v, r) for v in values]
        folded = (np.min(host, axis=0) if r.reduction == Reduction.MIN_PER_CHANNEL else
                  np.max(host, axis=0) if r.reduction == Reduction.MAX_PER_CHANNEL else
                  np.mean(host, axis=0) if r.reduction == Reduction.MEAN_PER_CHANNEL else np.array(host))
        np.testing.assert_allclose(stats.get(out, r.reduction, r.channel_axis).reshape(folded.shape), folded,
                                   rtol=1e-5, atol=1e-6)


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
