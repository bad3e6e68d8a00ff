"""SmoothQuant on transformers: the smoothed float model computes the same, the activation range
shrinks where a few channels are far wider than the rest, and the INT8 model gets closer to FP32."""
from __future__ import annotations

import json

import numpy as np
import openvino as ov
import openvino.opset13 as ops

import models
from pot_cli.algorithms.min_max import MinMaxQuantization
from pot_cli.algorithms.smooth_quant import SmoothQuant
from pot_cli.config import QuantizationParams, load_hardware_config
from pot_cli.algorithms.settings import create_min_max_settings
from pot_cli.statistics.collector import capture_outputs, collect_statistics
from reliability.helpers import pot

K, N, T = 32, 16, 24
#: channels 3 and 17 of the normalised activations are 30x and 20x wider, as in trained transformers
GAMMA = np.ones(K, np.float32)
GAMMA[3], GAMMA[17] = 30.0, -20.0


def outlier_mlp(seed: int = 0) -> ov.Model:
    """``x [1,T,K] -> MVN -> * GAMMA -> fc1 (MatMul K x N) -> Relu -> fc2 (MatMul N x N)``."""
    rng = np.random.default_rng(seed)
    x = models.param("x", [1, T, K])
    y = ops.mvn(x, ops.constant(np.array([-1], dtype=np.int64)), True, 1e-5, "inside_sqrt")
    y = models._named(ops.multiply(y, ops.constant(GAMMA)), "ln")
    fc1 = models._named(ops.matmul(y, ops.constant((rng.standard_normal((K, N)) * 0.2).astype(np.float32)),
                                   False, False), "fc1")
    fc2 = models._named(ops.matmul(ops.relu(fc1), ops.constant((rng.standard_normal((N, N)) * 0.2).astype(
        np.float32)), False, True), "fc2")
    return ov.Model([ops.result(fc2)], [x], "outlier_mlp")


def samples(n: int, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, T, K)).astype(np.float32)} for _ in range(n)]


def _smooth(model, data, captured: bool):
    settings = create_min_max_settings(QuantizationParams(model_type="transformer"), load_hardware_config("ANY"))
    mm = MinMaxQuantization(settings)
    mm.plan(model, quiet=True)
    sq = SmoothQuant(settings)
    reqs = sq.statistic_requests(model, mm)
    stats = collect_statistics(model, reqs, enumerate(data), len(data))
    rows = capture_outputs(model, [g.source for g in sq.groups], enumerate(data[:4])) if captured else None
    return sq, sq.apply(model, stats, rows)


def _run(model, x):
    return ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0]


def test_smoothing_keeps_the_float_model_and_narrows_the_outlier_tensor():
    model, data = outlier_mlp(), samples(16)
    before = [_run(model, s) for s in data[:3]]
    sq, done = _smooth(model, data, captured=False)
    assert [d.layers for d in done] == [["fc1"], ["fc2"]]
    row = done[0]
    assert row.tensor == "ln:0" and row.alpha == 0.95
    # the range set by channels 3 and 17 (about 30 x 4 sigma) shrinks many times
    assert row.range_before > 60 and row.range_after < row.range_before / 5
    assert 0.0 < row.scale_min <= row.scale_max <= 100.0
    mul = next(o for o in model.get_ops() if o.get_friendly_name() == "ln/smooth_quant_0")
    fc1 = next(o for o in model.get_ops() if o.get_friendly_name() == "fc1")
    assert fc1.input_value(0).get_node() == mul
    for s, ref in zip(data[:3], before):  # X / s @ diag(s) W == X @ W
        np.testing.assert_allclose(_run(model, s), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_int8_model_is_closer_to_fp32_with_smoothing(tmp_path):
    xml, _ = models.save_ir(outlier_mlp(), tmp_path / "m", "outlier_mlp")
    data_dir = tmp_path / "calib"
    data_dir.mkdir()
    for k, s in enumerate(samples(32)):
        np.save(data_dir / f"{k:03d}.npy", s["x"])
    cos = {}
    for alpha in (None, 0.95, -1):  # None: the strength chosen per tensor; 0.95 for all; -1: off
        params = {} if alpha is None else {"smooth_quant_alpha": alpha}
        config = tmp_path / f"c{alpha}.json"
        config.write_text(json.dumps({
            "model": {"model": str(xml)}, "engine": {"data_source": str(data_dir)},
            "compression": {"model_type": "transformer",
                            "algorithms": [{"name": "DefaultQuantization", "params": params}]}}))
        out = tmp_path / f"out{alpha}"
        result = pot("-c", config, "--output-dir", out, "-d")
        assert result.exit_code == 0, result.stderr
        report = json.loads((out / "optimized" / "report.json").read_text())
        if alpha is None or alpha > 0:
            assert "SmoothQuant: 2 of 2 activation tensor(s) smoothed" in result.stderr
            rows = report["smooth_quant"]["tensors"]
            assert [r["layers"] for r in rows] == [["fc1"], ["fc2"]]
            # chosen per tensor by simulation, or the one given
            assert all(r["alpha"] in ((0.5, 0.75, 0.95) if alpha is None else (alpha,)) for r in rows)
        else:
            assert "SmoothQuant:" not in result.stderr and "smooth_quant" not in report
            assert "smooth_quant_alpha -1: SmoothQuant off" in result.stderr
        q, ref = ov.Core().read_model(str(out / "optimized" / "outlier_mlp.xml")), outlier_mlp()
        vals = []
        for s in samples(8, seed=7):
            a, b = _run(q, s).ravel(), _run(ref, s).ravel()
            vals.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
        cos[alpha] = float(np.mean(vals))
    assert cos[None] > cos[-1] and cos[0.95] > cos[-1] and cos[None] > 0.99, cos
