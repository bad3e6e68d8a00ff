"""Case 2 (models), item 8: an If whose calibration data never takes one branch. The run succeeds,
quantizes the main graph and the bodies the samples took (each from the samples that took it),
keeps an unreached body in floating point, and says once per unreached branch which If and
which branch (stderr, log.txt, report.json)."""
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
    # the main graph's convolutions are quantized, and so is the then body, which every sample
    # took; the else body, never taken, stays in floating point
    assert op_names(out, "FakeQuantize") == ["conv1/fq_input_0", "conv2/fq_input_0"]
    assert report["if_bodies"] == [{"node": "if", "branch": "then", "samples": 12, "activation_fake_quantize": 1,
                                    "weights": 1, "bias_corrections": 0,
                                    "quantizers": ["then_conv/fq_input_0", "then_conv/fq_weights_1"]}]
    assert report["summary"]["quantized_if_bodies"] == 1
    assert "If 'if': then body quantized on the 12 sample(s) that took it" in result.stderr
    saved = ov.Core().read_model(str(out))
    node = next(o for o in saved.get_ops() if o.get_type_name() == "If")
    then_body, else_body = node.get_then_body(), node.get_else_body()
    assert [o.get_friendly_name() for o in then_body.get_ops() if o.get_type_name() == "FakeQuantize"] == \
        ["then_conv/fq_input_0"]
    assert [o for o in then_body.get_ops() if o.get_type_name() == "Constant" and o.get_element_type() == ov.Type.i8]
    assert not [o for o in else_body.get_ops() if o.get_type_name() == "FakeQuantize"]
    assert not [o for o in else_body.get_ops() if o.get_element_type() == ov.Type.i8]
    core = ov.Core()
    inputs = models.random_inputs(saved, low=0, high=255)
    y = core.compile_model(saved, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(inputs)[0]
    ref = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(inputs)[0]
    assert y.shape == (1, 2, 8, 8) and np.isfinite(y).all()
    cos = float(np.dot(y.ravel(), ref.ravel()) / (np.linalg.norm(y) * np.linalg.norm(ref)))
    assert cos > 0.99, cos


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
    from pot_cli.algorithms.settings import create_min_max_settings

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


def _matmul_body(rng, name: str, inner_if: bool = False) -> tuple[ov.Node, ov.Node]:
    """Body ``p [1,4] -> MatMul(name) [1,3]``; with ``inner_if`` the MatMul's output goes through
    ``If(sum(p) > 2: MatMul(name_hi) | Relu)`` first (the inner If's then body quantizable)."""
    p = ops.parameter([1, 4], ov.Type.f32)
    y = models._named(ops.matmul(p, ops.constant(rng.standard_normal((4, 3)).astype(np.float32)), False, False), name)
    if inner_if:
        cond = ops.greater(ops.reduce_sum(p, ops.constant(np.array([0, 1], dtype=np.int64)), False),
                           ops.constant(np.float32(2)))
        pt, pe = ops.parameter([1, 3], ov.Type.f32), ops.parameter([1, 3], ov.Type.f32)
        rt = ops.result(models._named(ops.matmul(pt, ops.constant(rng.standard_normal((3, 3)).astype(np.float32)),
                                                 False, False), name + "_hi"))
        re = ops.result(ops.relu(pe))
        inner = ops.if_op(cond.output(0))
        inner.set_then_body(ov.Model([rt], [pt], "inner_then"))
        inner.set_else_body(ov.Model([re], [pe], "inner_else"))
        inner.set_input(y.output(0), pt, pe)
        y = models._named(inner, "inner_if").set_output(rt, re).get_node()
    return p, ops.result(y)


def _if_of_matmuls(inner_if: bool = False) -> ov.Model:
    """``If(mean(x) > 0: MatMul(then_fc) | MatMul(else_fc))``, ``x [1, 4]``."""
    rng = np.random.default_rng(0)
    x = models.param("x", [1, 4])
    cond = ops.greater(ops.reduce_mean(x, ops.constant(np.array([0, 1], dtype=np.int64)), False),
                       ops.constant(np.float32(0)))
    (pt, rt), (pe, re) = _matmul_body(rng, "then_fc", inner_if), _matmul_body(rng, "else_fc")
    branch = ops.if_op(cond.output(0))
    branch.set_then_body(ov.Model([rt], [pt], "then"))
    branch.set_else_body(ov.Model([re], [pe], "else"))
    branch.set_input(x.output(0), pt, pe)
    models._named(branch, "outer_if")
    return ov.Model([ops.result(branch.set_output(rt, re))], [x], "if_of_matmuls")


def _quantize_bodies(model, samples):
    from pot_cli.algorithms.default import DefaultQuantization
    from pot_cli.algorithms.if_bodies import quantize_if_bodies
    from pot_cli.config import QuantizationParams, load_hardware_config
    from pot_cli.algorithms.settings import create_min_max_settings

    settings = create_min_max_settings(QuantizationParams(preset="mixed"), load_hardware_config("ANY"))
    return quantize_if_bodies(model, enumerate(samples), lambda body, collect: DefaultQuantization(settings))


def _fq_range(body: ov.Model, name: str) -> tuple[float, float]:
    fq = next(o for o in body.get_ops() if o.get_friendly_name() == name)
    return tuple(float(np.array(fq.input_value(k).get_node().get_data()).min() if k == 1 else
                       np.array(fq.input_value(k).get_node().get_data()).max()) for k in (1, 2))


def test_each_if_body_gets_ranges_from_the_samples_that_took_its_branch():
    """then samples hold values in [0, 5], else samples in [-1, 0]: a body calibrated on every
    sample would get the other branch's range too."""
    model = _if_of_matmuls()
    rng = np.random.default_rng(1)
    samples = ([{"x": rng.uniform(0, 5, (1, 4)).astype(np.float32)} for _ in range(3)]
               + [{"x": rng.uniform(-1, 0, (1, 4)).astype(np.float32)} for _ in range(5)])
    done = _quantize_bodies(model, samples)
    assert [(b.node, b.branch, b.samples) for b in done] == [("outer_if", "then", 3), ("outer_if", "else", 5)]
    node = next(o for o in model.get_ops() if o.get_type_name() == "If")
    t_low, t_high = _fq_range(node.get_then_body(), "then_fc/fq_input_0")
    assert t_low >= -0.05 and 3.0 < t_high <= 5.0  # mixed preset: asymmetric, from the then samples only
    low, high = _fq_range(node.get_else_body(), "else_fc/fq_input_0")
    assert -1.0 <= low < -0.5 and high <= 0.05
    # the edited model still runs and stays close to the float one (on a sample inside the ranges)
    x = {"x": np.clip(samples[0]["x"], t_low, t_high)}
    ref = ov.Core().compile_model(_if_of_matmuls(), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0]
    y = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0]
    assert np.allclose(y, ref, atol=0.05 * np.abs(ref).max())


def test_an_if_inside_an_if_body_is_quantized_from_the_outer_body_samples():
    model = _if_of_matmuls(inner_if=True)
    rng = np.random.default_rng(2)
    # all take the outer then branch; the inner condition sum(x) > 2 holds for the large ones only
    samples = ([{"x": rng.uniform(1, 2, (1, 4)).astype(np.float32)} for _ in range(4)]
               + [{"x": rng.uniform(0, 0.3, (1, 4)).astype(np.float32)} for _ in range(2)])
    done = _quantize_bodies(model, samples)
    assert sorted((b.node, b.branch, b.samples) for b in done) == [
        ("outer_if", "then", 6), ("outer_if/inner_if", "then", 4)]
    outer = next(o for o in model.get_ops() if o.get_type_name() == "If")
    inner = next(o for o in outer.get_then_body().get_ops() if o.get_type_name() == "If")
    assert [o.get_friendly_name() for o in inner.get_then_body().get_ops() if o.get_type_name() == "FakeQuantize"] \
        == ["then_fc_hi/fq_input_0"]
    assert not [o for o in outer.get_else_body().get_ops() if o.get_type_name() == "FakeQuantize"]
    ov.Core().compile_model(model, "CPU")


def _with_if_config(ws, name: str, ignored: dict):
    """The If model saved under ``ws.root`` and a DefaultQuantization config with ``ignored``."""
    xml, _ = models.save_ir(model_with_if(), ws.root / "if", "with_if")
    config = ws.root / f"{name}.json"
    config.write_text(json.dumps({
        "model": {"model": str(xml)}, "engine": {"data_source": str(ws.images)},
        "compression": {"algorithms": [{"name": "DefaultQuantization", "params": {"ignored": ignored}}]}}))
    return config


def test_ignored_scope_may_name_a_node_inside_an_if_body(ws):
    config = _with_if_config(ws, "ignore_body", {"scope": ["then_conv"]})
    result = pot("-c", config, "--output-dir", ws.out, "-d")
    assert result.exit_code == 0, result.stderr
    saved = ov.Core().read_model(str(ws.out / "optimized" / "with_if.xml"))
    node = next(o for o in saved.get_ops() if o.get_type_name() == "If")
    assert not [o for o in node.get_then_body().get_ops() if o.get_type_name() == "FakeQuantize"]
    assert op_names(ws.out / "optimized" / "with_if.xml", "FakeQuantize") == ["conv1/fq_input_0", "conv2/fq_input_0"]
    report = json.loads((ws.out / "optimized" / "report.json").read_text())
    assert report["if_bodies"] == []


def test_a_body_whose_inference_fails_stays_in_floating_point(monkeypatch, caplog):
    import pot_cli.algorithms.if_bodies as if_bodies
    from pot_cli.errors import EngineError

    def failing(*args, **kwargs):
        raise EngineError("inference failed during statistics collection: boom")

    monkeypatch.setattr(if_bodies, "collect_statistics", failing)
    model = _if_of_matmuls()
    rng = np.random.default_rng(1)
    samples = [{"x": rng.uniform(-1, 1, (1, 4)).astype(np.float32)} for _ in range(6)]
    with caplog.at_level("WARNING", logger="pot"):
        assert _quantize_bodies(model, samples) == []
    assert "If 'outer_if': then body kept in floating point: inference failed during statistics collection: boom" \
        in caplog.text
    node = next(o for o in model.get_ops() if o.get_type_name() == "If")
    for body in (node.get_then_body(), node.get_else_body()):
        assert not [o for o in body.get_ops() if o.get_type_name() == "FakeQuantize"]


def test_ignored_scope_errors_name_the_config_key_and_operation_typos_warn(ws):
    config = _with_if_config(ws, "bad_scope", {"scope": ["then_convv"]})
    result = pot("-c", config, "--output-dir", ws.root / "o1", "-d")
    assert result.exit_code == 2
    assert (f"ERROR: {config}: compression.algorithms[0].params.ignored.scope: no node named 'then_convv' in the "
            "model (closest node names: 'then_conv'") in result.stderr
    assert not (ws.root / "o1" / "optimized").exists()
    config = _with_if_config(ws, "bad_type", {"operations": [{"type": "Convolutio"}]})
    result = pot("-c", config, "--output-dir", ws.out, "-d")
    assert result.exit_code == 0, result.stderr
    assert (f"WARNING: {config}: compression.algorithms[0].params.ignored.operations: no op of type 'Convolutio' "
            "in the model, so it leaves nothing in floating point (closest op types: 'Convolution'") in result.stderr
