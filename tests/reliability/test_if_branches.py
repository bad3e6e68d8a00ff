"""Case 2 (models), item 8: an If whose calibration data never takes one branch. The run succeeds,
quantizes the main graph, keeps both bodies in floating point, and says once per unreached
branch which If and which branch (stderr, log.txt, report.json)."""
from __future__ import annotations

import json

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

import models
from pot_cli.statistics.branches import branch_requests, find_unreached_branches
from pot_cli.statistics.collector import collect_statistics
from reliability.helpers import model_with_if, op_names, pot


def _if_on_sign(cond_shape) -> ov.Model:
    """``y = x + 1 if mean(x) > 0 else x - 1``, ``x [1, 4]``; the condition has shape ``cond_shape``."""
    x = models.param("x", [1, 4])
    mean = ops.reduce_mean(x, ops.constant(np.array([0, 1], dtype=np.int64)), False)
    cond = ops.greater(mean, ops.constant(np.float32(0)))
    if cond_shape:
        cond = ops.reshape(cond, ops.constant(np.array(cond_shape, dtype=np.int64)), False)
    bodies = []
    for value in (1.0, -1.0):
        p = ops.parameter([1, 4], ov.Type.f32)
        bodies.append((p, ops.result(ops.add(p, ops.constant(np.float32(value))))))
    branch = ops.if_op(cond.output(0))
    branch.set_friendly_name("sign_if")
    branch.set_then_body(ov.Model([bodies[0][1]], [bodies[0][0]], "then"))
    branch.set_else_body(ov.Model([bodies[1][1]], [bodies[1][0]], "else"))
    branch.set_input(x.output(0), bodies[0][0], bodies[1][0])
    out = branch.set_output(bodies[0][1], bodies[1][1])
    return ov.Model([ops.result(out)], [x], "sign_if")


@pytest.mark.parametrize("cond_shape", [[], [1]], ids=["scalar", "one_element"])
@pytest.mark.parametrize("signs, unreached", [
    ((1, 1, 1), ["else"]),   # always true: the else body never ran
    ((-1, -1), ["then"]),    # always false: the then body never ran
    ((1, -1, 1), []),        # both ran
], ids=["only_then", "only_else", "both"])
def test_unreached_branch_found_from_the_condition_statistics(cond_shape, signs, unreached):
    model = _if_on_sign(cond_shape)
    samples = [{"x": np.full((1, 4), s * (k + 1), np.float32)} for k, s in enumerate(signs)]
    stats = collect_statistics(model, branch_requests(model), enumerate(samples), len(samples))
    found = find_unreached_branches(model, stats)
    assert [b.branch for b in found] == unreached
    assert all(b.node == "sign_if" and b.samples == len(signs) for b in found)
    # the model is left as it was: the condition feeds the If only
    cond = next(o for o in model.get_ops() if o.get_type_name() == "If").input_value(0)
    assert len(cond.get_target_inputs()) == 1


def test_model_with_a_branch_never_taken_warns_once_and_quantizes_the_main_graph(ws):
    model = model_with_if()  # condition: mean(relu(conv1(x))) > 0, always true on images
    xml, _ = models.save_ir(model, ws.root / "if", "with_if")
    result = pot("-q", "default", "-m", xml, "--data-source", ws.images, "--output-dir", ws.out, "-d")
    assert result.exit_code == 0, result.stderr
    message = ("If 'if': the calibration data never took its else branch (12 samples); "
               "that body stays in floating point")
    assert result.stderr.count(message) == 1, result.stderr
    assert [ln for ln in result.stderr.splitlines() if "never took" in ln] == [f"WARNING: {message}"]
    assert message in (ws.out / "log.txt").read_text()
    out = ws.out / "optimized" / "with_if.xml"
    report = json.loads((ws.out / "optimized" / "report.json").read_text())
    assert report["unreached_branches"] == [{"node": "if", "branch": "else", "samples": 12}]
    assert report["summary"]["unreached_branches"] == 1
    # the main graph's convolutions are quantized, the bodies stay in floating point
    assert op_names(out, "FakeQuantize") == ["conv1/fq_input_0", "conv2/fq_input_0"]
    saved = ov.Core().read_model(str(out))
    node = next(o for o in saved.get_ops() if o.get_type_name() == "If")
    for body in (node.get_then_body(), node.get_else_body()):
        assert not [o for o in body.get_ops() if o.get_type_name() == "FakeQuantize"]
        assert not [o for o in body.get_ops() if o.get_element_type() == ov.Type.i8]
    compiled = ov.Core().compile_model(saved, "CPU")
    y = compiled(models.random_inputs(saved, low=0, high=255))[0]
    assert y.shape == (1, 2, 8, 8) and np.isfinite(y).all()


def test_model_without_if_reports_no_unreached_branch(ws):
    result = pot("-q", "default", "-m", ws.xml, "--data-source", ws.images, "--output-dir", ws.out, "-d")
    assert result.exit_code == 0, result.stderr
    report = json.loads((ws.out / "optimized" / "report.json").read_text())
    assert report["unreached_branches"] == [] and report["summary"]["unreached_branches"] == 0
    assert "never took" not in result.stderr


def test_a_range_behind_an_if_covers_the_samples_of_each_branch():
    """``y = If(mean(x) > 0, x * 10, x * 0.1) @ W``: a mean over all samples of the per-sample
    maxima would clip every sample that took the then branch (measured on a 2-branch model:
    output cosine 0.855); each branch's samples are aggregated apart and the range covers both."""
    from pot_cli.algorithms.default import DefaultQuantization
    from pot_cli.config import QuantizationParams, load_hardware_config
    from pot_cli.pipeline import create_min_max_settings

    x = models.param("x", [1, 4])
    mean = ops.reduce_mean(x, ops.constant(np.array([0, 1], dtype=np.int64)), False)
    cond = ops.greater(mean, ops.constant(np.float32(0)))
    bodies = []
    for gain in (10.0, 0.1):
        p = ops.parameter([1, 4], ov.Type.f32)
        bodies.append((p, ops.result(ops.multiply(p, ops.constant(np.float32(gain))))))
    branch = ops.if_op(cond.output(0))
    branch.set_then_body(ov.Model([bodies[0][1]], [bodies[0][0]], "then"))
    branch.set_else_body(ov.Model([bodies[1][1]], [bodies[1][0]], "else"))
    branch.set_input(x.output(0), bodies[0][0], bodies[1][0])
    out = branch.set_output(bodies[0][1], bodies[1][1])
    w = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    fc = models._named(ops.matmul(out, ops.constant(w), False, False), "fc")
    model = ov.Model([ops.result(fc)], [x], "if_ranges")
    rng = np.random.default_rng(1)
    # 2 samples take the then branch (values in [0, 1] -> [0, 10]), 6 the else branch (in [-1, 0])
    samples = ([{"x": rng.uniform(0, 1, (1, 4)).astype(np.float32)} for _ in range(2)]
               + [{"x": rng.uniform(-1, 0, (1, 4)).astype(np.float32)} for _ in range(6)])
    algo = DefaultQuantization(create_min_max_settings(QuantizationParams(), load_hardware_config("ANY")))
    stats = collect_statistics(model, algo.statistic_requests(model), enumerate(samples), len(samples))
    algo.apply(model, stats)
    fq = next(o for o in model.get_ops() if o.get_type_name() == "FakeQuantize")
    assert fq.input_value(0).get_node().get_type_name() == "If"
    low, high = (float(np.array(fq.input_value(k).get_node().get_data())) for k in (1, 2))
    then_max = np.mean([10 * s["x"].max() for s in samples[:2]])
    else_min = np.mean([0.1 * s["x"].min() for s in samples[2:]])
    assert high >= then_max * 0.99  # a mean over all 8 samples would be about a quarter of it
    assert low <= else_min + (high - low) / 255  # the else samples' minima (zero point on the grid)
