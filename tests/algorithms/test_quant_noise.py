"""QuantNoiseEstimator (pot_cli.algorithms.quant_noise): per-layer SQNR against the float model.

Tiny in-memory models whose FakeQuantize ops are known, so the expected SQNR is computed in
NumPy; then the pipeline (DefaultQuantization + QuantNoiseEstimator), the CSV, the params
validation, and the real ``mobilenetV2_tf_int8_sqnr.json`` config on ../shared.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

import models
from pot_cli.algorithms.quant_noise import CSV_COLUMNS, find_quantized_layers, sqnr_db
from pot_cli.api import DataLoader, IEEngine, create_pipeline
from pot_cli.api.model import CompressedModel
from pot_cli.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
N = 12
LEVELS = 9  # coarse, so the noise is large and far above float rounding


class Arrays(DataLoader):
    """``(data, annotation)``: uniform samples of ``shape``."""

    def __init__(self, shape, n: int = N, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.data = [rng.uniform(-1.5, 1.5, shape).astype(np.float32) for _ in range(n)]

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        return self.data[i], i


def _fq_numpy(x: np.ndarray, low: float, high: float, levels: int) -> np.ndarray:
    """FakeQuantize-1 with output range = input range."""
    q = np.round((np.clip(x, low, high) - low) / (high - low) * (levels - 1))
    return q / (levels - 1) * (high - low) + low


def _fq(x, low: float, high: float, name: str):
    lo, hi = ops.constant(np.float32(low)), ops.constant(np.float32(high))
    node = ops.fake_quantize(x, lo, hi, lo, hi, LEVELS)
    node.set_friendly_name(name)
    return node


def _two_fq_layers() -> tuple[ov.Model, np.ndarray, np.ndarray]:
    """``x [1, 8] -> FQ1 -> fc1 (MatMul W1) -> FQ2 -> fc2 (MatMul W2)``; float weights."""
    rng = np.random.default_rng(1)
    w1 = rng.standard_normal((8, 8)).astype(np.float32) * 0.4
    w2 = rng.standard_normal((8, 4)).astype(np.float32) * 0.4
    x = models.param("x", [1, 8])
    y = ops.matmul(_fq(x, -1.0, 1.0, "fq1"), ops.constant(w1), False, False)
    y.set_friendly_name("fc1")
    z = ops.matmul(_fq(y, -1.0, 1.0, "fq2"), ops.constant(w2), False, False)
    z.set_friendly_name("fc2")
    return ov.Model([ops.result(z)], [x], "two_fq"), w1, w2


def _expected(samples, w1, w2) -> dict[str, dict[str, float]]:
    """NumPy SQNR (10 log10 sum(ref^2) / sum((ref - q)^2)) of fc1 and fc2 in both modes."""
    sums = {k: [0.0, 0.0] for k in ("fc1", "fc2_full", "fc2_alone")}

    def add(key, ref, q):
        sums[key][0] += float(np.sum(ref.astype(np.float64) ** 2))
        sums[key][1] += float(np.sum((ref.astype(np.float64) - q) ** 2))

    for x in samples:
        x = x.reshape(1, 8)
        ref1 = x @ w1
        q1 = _fq_numpy(x, -1, 1, LEVELS) @ w1
        ref2 = ref1 @ w2
        add("fc1", ref1, q1)
        add("fc2_full", ref2, _fq_numpy(q1, -1, 1, LEVELS) @ w2)
        add("fc2_alone", ref2, _fq_numpy(ref1, -1, 1, LEVELS) @ w2)
    db = {k: 10 * np.log10(s / n) for k, (s, n) in sums.items()}
    return {"full_fq_noise": {"fc1": db["fc1"], "fc2": db["fc2_full"]},
            "layerwise_fq_noise": {"fc1": db["fc1"], "fc2": db["fc2_alone"]}}


def _run(algorithms, model: ov.Model, loader, **kw):
    pipeline = create_pipeline(algorithms, IEEngine({"device": "CPU"}, loader))
    out = pipeline.run(CompressedModel(model, "m", allow_quantized=True, **kw))
    return pipeline, out


def test_sqnr_db_is_ten_log10_of_signal_over_noise():
    assert sqnr_db(100.0, 1.0, eps=0) == pytest.approx(20.0)
    assert sqnr_db(2.0, 2.0, eps=0) == pytest.approx(0.0)
    assert sqnr_db(0.0, 1.0) is None  # no signal: nothing to compare
    assert sqnr_db(1.0, 0.0) == pytest.approx(150.0)  # exact: eps 1e-15 bounds it


@pytest.mark.parametrize("mode", ["full_fq_noise", "layerwise_fq_noise"])
def test_sqnr_of_each_layer_matches_numpy_on_a_constructed_model(mode):
    model, w1, w2 = _two_fq_layers()
    loader = Arrays((8,))
    pipeline, _ = _run([{"name": "QuantNoiseEstimator", "params": {"mode": mode, "stat_subset_size": N}}],
                       model, loader)
    section = pipeline.state.quant_noise
    assert (section["mode"], section["type"], section["csv"]) == (mode, "sqnr", None)
    got = {r["layer"]: r["sqnr_db"] for r in section["rows"]}
    assert [r["type"] for r in section["rows"]] == ["MatMul", "MatMul"]
    expected = _expected(loader.data, w1, w2)[mode]
    assert got == pytest.approx(expected, abs=2e-3)


def test_the_modes_differ_where_noise_accumulates():
    model, w1, w2 = _two_fq_layers()
    expected = _expected(Arrays((8,)).data, w1, w2)
    # fc2 quantized alone is cleaner than fc2 after the quantized fc1
    assert expected["layerwise_fq_noise"]["fc2"] > expected["full_fq_noise"]["fc2"] + 0.5


def test_simplified_is_read_as_the_one_pass_mode():
    model, w1, w2 = _two_fq_layers()
    pipeline, _ = _run([{"name": "QuantNoiseEstimator", "params": {"mode": "simplified"}}], model, Arrays((8,)))
    assert pipeline.state.quant_noise["mode"] == "full_fq_noise"


def test_after_default_quantization_the_csv_lists_every_quantized_layer(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # through the API a relative CSV path starts at the working directory
    pipeline, out = _run([{"name": "DefaultQuantization"},
                          {"name": "QuantNoiseEstimator", "params": {"stat_subset_size": 8,
                                                                     "results_dump_filename": "noise/sqnr.csv"}}],
                         models.conv_chain(), Arrays((3, 8, 8)))
    path = tmp_path / "noise" / "sqnr.csv"
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == CSV_COLUMNS == ("layer", "type", "sqnr_db")
    assert [r[:2] for r in rows[1:]] == [["conv1", "Convolution"], ["conv2", "Convolution"]]
    section = pipeline.state.quant_noise
    assert section["csv"] == str(path)
    assert [[r["layer"], r["type"], f"{r['sqnr_db']:.4f}"] for r in section["rows"]] == rows[1:]
    assert all(10 < r["sqnr_db"] < 80 for r in section["rows"])  # 8-bit noise, weights' included
    # the weights DefaultQuantization kept behind FakeQuantize for the measurement are INT8 now
    weights_fq = [op for op in out.model.get_ops() if op.get_type_name() == "FakeQuantize"
                  and op.input_value(0).get_node().get_type_name() == "Constant"]
    assert not weights_fq
    assert sum(op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8
               for op in out.model.get_ops()) == 2


def test_keep_uncompressed_weights_is_kept():
    pipeline = create_pipeline([{"name": "DefaultQuantization"}, {"name": "QuantNoiseEstimator"}],
                               IEEngine({"device": "CPU"}, Arrays((3, 8, 8))), keep_uncompressed_weights=True)
    out = pipeline.run(CompressedModel(models.conv_chain(), "m"))
    assert not any(op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8
                   for op in out.model.get_ops())


def test_a_model_without_quantized_layers_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"params: model 'conv_chain' has no quantized layer .*expected "
                                          r"DefaultQuantization"):
        _run([{"name": "QuantNoiseEstimator"}], models.conv_chain(), Arrays((3, 8, 8)))


@pytest.mark.parametrize("params, key", [
    ({"mode": "per_layer"}, "mode"),
    ({"type": "sqnr_per_channel"}, "type"),
    ({"results_dump_filename": ""}, "results_dump_filename"),
    ({"stat_subset_size": 0}, "stat_subset_size"),
    ({"eps": -1}, "eps"),
    ({"preset": "mixed"}, "preset"),  # not a QuantNoiseEstimator key
])
def test_bad_params_name_the_key(params, key):
    with pytest.raises(ConfigError, match=rf"compression\.algorithms\[0\]\.params.*{key}"):
        create_pipeline([{"name": "QuantNoiseEstimator", "params": params}],
                        IEEngine({"device": "CPU"}, Arrays((3, 8, 8))))


def test_layers_behind_agnostic_ops_and_bias_adds_are_found():
    x = models.param("x", [1, 3, 8, 8])
    lo, hi = ops.constant(np.float32(0)), ops.constant(np.float32(1))
    fq = ops.fake_quantize(x, lo, hi, lo, hi, 256)
    pooled = ops.max_pool(fq, [1, 1], [1, 1], [0, 0], [0, 0], [2, 2])
    conv = models.conv(pooled.output(0), models.conv_weights(np.random.default_rng(0), 4, 3), "conv")
    bias = models.add_bias(conv, np.ones(4, np.float32), "bias")
    model = ov.Model([ops.result(bias)], [x], "pooled")
    [(layer, measured)] = find_quantized_layers(model)
    assert (layer.get_friendly_name(), measured.get_friendly_name()) == ("conv", "bias")


def test_the_real_mobilenet_v2_sqnr_config_runs(shared_dir, tmp_path):
    from click.testing import CliRunner

    from pot_cli.cli import main
    from pot_cli.graph.model import quantized_layers

    config = ROOT / "configs" / "examples" / "pot" / "mobilenetV2_tf_int8_sqnr.json"
    result = CliRunner().invoke(main, ["-c", str(config), "--output-dir", str(tmp_path), "-d"])
    assert result.exit_code == 0, result.output
    with (tmp_path / "mobilenetv2_sqnr_data.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    report = json.loads((tmp_path / "optimized" / "report.json").read_text())
    assert report["quant_noise"]["csv"] == str(tmp_path / "mobilenetv2_sqnr_data.csv")
    assert [r["layer"] for r in rows] == [r["layer"] for r in report["quant_noise"]["rows"]]
    # every quantized Convolution / GroupConvolution / MatMul of the output IR has its row
    saved = ov.Core().read_model(str(tmp_path / "optimized" / "mobilenet_v2.xml"))
    types = {op.get_friendly_name(): op.get_type_name() for op in saved.get_ops()}
    weighted = {n for n in quantized_layers(saved) if types[n] in ("Convolution", "GroupConvolution", "MatMul")}
    assert len(weighted) == 53
    assert weighted <= {r["layer"] for r in rows}
    assert all(float(r["sqnr_db"]) > 0 for r in rows)
