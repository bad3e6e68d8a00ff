"""Stateful models (ReadValue/Assign variables): statistics, placement and the saved model.

Each calibration sample starts from the state's initial value (as NNCF's OpenVINO engine does),
so a layer that reads only the state sees nothing but that value during calibration and stays in
floating point; the rest is quantized, and the model keeps its variables.
"""
from __future__ import annotations

import json

import numpy as np
import openvino as ov
import openvino.opset13 as ops
from openvino.op.util import Variable, VariableInfo

import models
from pot_cli.algorithms.min_max import MinMaxQuantization
from pot_cli.graph.model import reads_state_only
from pot_cli.statistics.collector import Reduction, StatisticRequest, collect_statistics
from reliability.helpers import pot


def _recurrent_cell(seed: int = 0, n: int = 16) -> ov.Model:
    """``h = tanh(x @ Wx + state @ Wh); state <- h; y = h @ Wy``: x [1,16] -> y [1,8], one variable."""
    rng = np.random.default_rng(seed)
    x = models.param("x", [1, n])
    info = VariableInfo()
    info.data_shape, info.data_type, info.variable_id = ov.PartialShape([1, n]), ov.Type.f32, "h"
    variable = Variable(info)
    state = ops.read_value(ops.constant(np.zeros((1, n), np.float32)), variable)
    state.set_friendly_name("state")
    from_x = ops.matmul(x, ops.constant(rng.normal(size=(n, n)).astype(np.float32)), False, False)
    from_x.set_friendly_name("from_x")
    from_state = ops.matmul(state, ops.constant((rng.normal(size=(n, n)) * 0.3).astype(np.float32)), False, False)
    from_state.set_friendly_name("from_state")
    h = ops.tanh(ops.add(from_x, from_state, name="mix"))
    assign = ops.assign(h, variable)
    y = ops.matmul(h, ops.constant(rng.normal(size=(n, 8)).astype(np.float32)), False, False)
    y.set_friendly_name("head")
    return ov.Model([ops.result(y)], [assign], [x], [variable], "recurrent_cell")


def _sequence(n: int = 12, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(1, 16)).astype(np.float32) for _ in range(n)]


def test_statistics_start_every_sample_from_the_initial_state():
    model = _recurrent_cell()
    state_out = next(op for op in model.get_ops() if op.get_friendly_name() == "from_state").output(0)
    mix_out = next(op for op in model.get_ops() if op.get_friendly_name() == "mix").output(0)
    samples = [{"x": x} for x in _sequence()]
    reqs = [StatisticRequest(state_out, Reduction.MAX), StatisticRequest(mix_out, Reduction.MAX)]
    stats = collect_statistics(model, reqs, enumerate(samples), len(samples), requests_number=2)
    # the state is reset before each sample: state @ Wh is exactly 0, whatever ran before
    assert np.all(stats.get(state_out, Reduction.MAX) == 0.0)
    # and the mix is x @ Wx alone: the same values a stateless first step gives
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    wx = next(op for op in model.get_ops() if op.get_friendly_name() == "from_x").input_value(1).get_node().get_data()
    expected = [float((s["x"] @ wx).max()) for s in samples]
    np.testing.assert_allclose(np.asarray(stats.get(mix_out, Reduction.MAX)).ravel(), expected, rtol=1e-5)
    assert len(request.query_state()) == 1  # the statistics model kept the variable (the plugin needs its Assign)


def test_layers_reading_only_the_state_are_not_planned():
    model = _recurrent_cell()
    ops_by_name = {op.get_friendly_name(): op for op in model.get_ops()}
    assert reads_state_only(ops_by_name["from_state"].output(0))
    assert not reads_state_only(ops_by_name["mix"].output(0))  # the input reaches it too
    assert not reads_state_only(ops_by_name["from_x"].output(0))
    from pot_cli.algorithms.min_max import MinMaxSettings
    algo = MinMaxQuantization(MinMaxSettings())
    algo.plan(model)
    consumers = {i.get_node().get_friendly_name() for q in algo.activations for i in q.consumers}
    assert "from_state" not in consumers and "from_state" in algo.state_only
    assert {"from_x", "head"} <= consumers


def test_a_stateful_model_quantizes_and_keeps_its_state(tmp_path):
    model = _recurrent_cell()
    xml, _ = models.save_ir(model, tmp_path / "m", "cell")
    data = tmp_path / "calib"
    data.mkdir()
    for k, x in enumerate(_sequence(20, seed=2)):
        np.save(data / f"{k:02d}.npy", x)
    result = pot("-q", "default", "-m", xml, "--data-source", data, "--output-dir", tmp_path / "out", "-d")
    assert result.exit_code == 0, result.stderr
    assert "have an input that reads only the model's state" in result.stderr and "from_state" in result.stderr
    report = json.loads((tmp_path / "out" / "optimized" / "report.json").read_text())
    assert report["state_only_layers"] == ["from_state", "mix"]  # mix: an Add reading from_state
    core = ov.Core()
    quantized = core.read_model(tmp_path / "out" / "optimized" / "cell.xml")
    assert len(quantized.get_variables()) == 1 and len(quantized.get_sinks()) == 1
    fq_consumers = {t.get_node().get_friendly_name() for op in quantized.get_ops()
                    if op.get_type_name() == "FakeQuantize" for t in op.output(0).get_target_inputs()}
    assert "from_x" in fq_consumers and "from_state" not in fq_consumers
    # run as a sequence: the state carries over, and the INT8 model follows the FP32 one
    q = core.compile_model(quantized, "CPU").create_infer_request()
    ref = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}).create_infer_request()
    cosines = []
    for x in _sequence(20, seed=3):
        a, b = np.asarray(q.infer({0: x})[0]).ravel(), np.asarray(ref.infer({0: x})[0]).ravel()
        cosines.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
    assert np.mean(cosines) > 0.97, cosines
