"""The speed check: per-layer attribution of runtime times, the category trials, the FP32 guard,
and its wiring (default on for target_device CPU, off for ANY, report rows match the graph).

Decisions depend on timing, so the decision logic is tested with fixed times (the profiler's
measurement is replaced); the attribution and the CLI wiring run on the real CPU plugin.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import openvino as ov
import pytest

import models
from pot_cli.algorithms import speed_check
from pot_cli.algorithms.accuracy_aware import group_ops, revert_group
from pot_cli.algorithms.speed_check import _aliases, _Profiler, check_layer_speed, layer_category
from pot_cli.graph.model import is_constant_subgraph

from test_placement import _cpu_has_vnni, fqs, quantize


def _setup(build=models.conv_chain):
    fp = build()
    q = fp.clone()
    result = quantize(q)
    fp_ops = {op.get_friendly_name(): op for op in fp.get_ops()}
    cache: dict = {}

    def revert(model, group):
        revert_group(model, group, fp_ops, lambda o: is_constant_subgraph(o, cache))

    return fp, q, result, revert


@pytest.mark.parametrize("build, names", [
    (models.conv_chain, {"conv1", "conv2"}),
    # the CPU plugin names the INT8 FullyConnected ``fc/DequantizationMultiply``
    (lambda: models.matmul_bias(True), {"fc"}),
])
def test_group_times_attribute_runtime_nodes_to_each_quantized_layer(build, names):
    fp, q, result, _ = _setup(build)
    groups = group_ops(q, result)
    assert set(groups) == names
    inputs = models.random_inputs(fp, seed=1)
    prof = _Profiler(ov.Core(), q, inputs, "CPU")
    prof.run(20)
    times = prof.group_times(set(groups))
    assert set(times) == names
    assert all(t > 0 for t in times.values())
    # attributed time is a part of the measured node times, never more
    assert sum(times.values()) <= sum(prof.node_us().values()) + 1e-6
    assert prof.total_us() > 0
    # the FP32 model too: a FullyConnected fused with its bias is named after the bias Add only
    fp_prof = _Profiler(ov.Core(), fp, inputs, "CPU")
    fp_prof.run(20)
    fp_times = fp_prof.group_times(_aliases({n: o for n, o in group_ops(fp, result).items()}))
    assert set(fp_times) == names and all(t > 0 for t in fp_times.values())


def test_a_decomposed_attention_is_timed_as_its_attention_group():
    """The CPU plugin runs a quantized ScaledDotProductAttention as nodes it creates (Q.K^T MatMul,
    mask Add, Softmax) plus a MatMul named after the op: all of them are the attention's time.
    On a VNNI/AMX CPU it fuses them into one Snippets Subgraph, named after the FakeQuantize at its
    end, with the op among its original layers; the nodes it creates in front of that Subgraph (a
    Transpose of the key) are the attention's time too."""
    from test_propagation import ATTENTION_THREADS, attention_model, fused_attention
    fp, q, result, _ = _setup(attention_model)
    groups = group_ops(q, result)
    assert layer_category(groups["sdpa"]) == "attention"
    core = ov.Core()
    core.set_property("CPU", ATTENTION_THREADS)
    prof = _Profiler(core, q, models.random_inputs(fp, seed=1), "CPU")
    prof.run(20)
    times = prof.group_times(_aliases(groups), frozenset({"sdpa"}))
    runtime = prof.compiled.get_runtime_model().get_ops()
    if _cpu_has_vnni():
        fused = fused_attention(runtime)
        assert len(fused) == 1, "the INT8 attention runs as one Snippets Subgraph"
        assert not [o for o in runtime if o.get_rt_info()["layerType"].astype(str) in ("MatMul", "Softmax")]
        # the nodes the plugin created in front of it (the key's Transpose for Q.K^T)
        ir_names = {o.get_friendly_name() for o in q.get_ops()}
        feeding = [i.get_source_output().get_node() for i in fused[0].inputs()]
        created = [o.get_friendly_name() for o in feeding
                   if o.get_rt_info()["layerType"].astype(str) not in ("Const", "Reorder", "Convert")
                   and not set(o.get_rt_info()["originalLayersNames"].astype(str).split(",")) & ir_names]
    else:
        created = [o.get_friendly_name() for o in runtime
                   if o.get_rt_info()["layerType"].astype(str) in ("MatMul", "Softmax")
                   and "sdpa" not in o.get_rt_info()["originalLayersNames"].astype(str)]
        assert created, "the attention is decomposed into plugin-created nodes"
    node_us = prof.node_us()
    own = [o.get_friendly_name() for o in runtime if "sdpa" in o.get_rt_info()["originalLayersNames"].astype(str)]
    assert times["sdpa"] >= sum(node_us.get(n, 0.0) for n in created + own) - 1e-6
    assert sum(times.values()) <= sum(node_us.values()) + 1e-6


def test_layer_categories():
    model = models.depthwise_conv()
    cats = {op.get_friendly_name(): layer_category(op) for op in model.get_ops()
            if op.get_type_name() in ("Convolution", "GroupConvolution")}
    assert set(cats.values()) == {"depthwise"}
    mm = models.matmul_bias(transpose_b=False)
    assert {layer_category(op) for op in mm.get_ops() if op.get_type_name() == "MatMul"} == {"fully_connected"}
    two = models.matmul_two_activations()
    assert {layer_category(op) for op in two.get_ops() if op.get_type_name() == "MatMul"} == {"matmul"}
    chain = models.conv_chain()
    assert {layer_category(op) for op in chain.get_ops() if op.get_type_name() == "Convolution"} == {"conv"}
    from test_propagation import interpolate_model
    up = interpolate_model()
    assert {layer_category(op) for op in up.get_ops() if op.get_type_name() == "Interpolate"} == {"resample"}
    x = ov.opset13.parameter([1, 4, 8, 8], ov.Type.f32)
    assert layer_category(ov.opset13.reduce_mean(x, np.array([2, 3], np.int64), True)) == "pooling"
    assert layer_category(ov.opset13.avg_pool(x, [1, 1], [0, 0], [0, 0], [2, 2], True)) == "pooling"


def _fixed_times(monkeypatch, fp_us: dict, int8_us: dict, totals: list[float],
                 after_reset: dict[int, float] | None = None):
    """Replace measurement: group times from the dicts (FP32 profiler = the first one created),
    totals of the later profilers from ``totals`` in creation order; ``after_reset``: the total of
    the profiler with that index once it is reset (measured again, under other load)."""
    made: list[_Profiler] = []
    real_init = _Profiler.__init__

    def init(self, core, model, inputs, device, compiled=None):
        real_init(self, core, model, inputs, device, compiled)
        self.index = len(made)
        made.append(self)

    monkeypatch.setattr(_Profiler, "__init__", init)
    monkeypatch.setattr(speed_check, "_measure", lambda *profilers, seconds, chunks=4: None)
    monkeypatch.setattr(_Profiler, "group_times",
                        lambda self, names, attention=frozenset():
                        {g: (fp_us if self.index == 0 else int8_us)[g] for g in set(names.values())})
    monkeypatch.setattr(_Profiler, "total_us",
                        lambda self: after_reset[self.index] if getattr(self, "again", False) else totals[self.index])
    if after_reset:
        monkeypatch.setattr(_Profiler, "reset",
                            lambda self: setattr(self, "again", True) if self.index in after_reset else None)
    return made


def test_a_slower_category_is_reverted_when_the_whole_model_gets_faster(monkeypatch):
    fp, q, result, revert = _setup()
    inputs = models.random_inputs(fp, seed=1)
    # conv2 is slower in INT8; the trial without it is faster (totals: fp32, int8, trial)
    _fixed_times(monkeypatch, {"conv1": 10.0, "conv2": 10.0}, {"conv1": 5.0, "conv2": 20.0}, [30.0, 25.0, 20.0])
    out, check = check_layer_speed(fp, q, group_ops(q, result), inputs, revert)
    assert check.reverted == ["conv2"]
    rows = {t.layer: t for t in check.layers}
    assert rows["conv1"].int8 and not rows["conv2"].int8
    assert (rows["conv2"].fp32_us, rows["conv2"].int8_us) == (10.0, 20.0)
    # conv2 reads float data and float weights again, conv1 keeps its FakeQuantize and INT8 weights
    conv2 = next(op for op in out.get_ops() if op.get_friendly_name() == "conv2")
    assert all(i.get_source_output().get_node().get_type_name() != "FakeQuantize" for i in conv2.inputs())
    assert conv2.input_value(1).get_element_type() == ov.Type.f32
    assert {c.get_node().get_friendly_name() for f in fqs(out).values() for c in f.output(0).get_target_inputs()} \
        == {"conv1"}
    # the input model is not modified
    assert len(fqs(q)) == 2


def test_a_trial_that_does_not_speed_up_the_model_is_rolled_back(monkeypatch):
    fp, q, result, revert = _setup()
    inputs = models.random_inputs(fp, seed=1)
    _fixed_times(monkeypatch, {"conv1": 10.0, "conv2": 10.0}, {"conv1": 5.0, "conv2": 20.0}, [30.0, 25.0, 26.0])
    out, check = check_layer_speed(fp, q, group_ops(q, result), inputs, revert)
    assert check.reverted == [] and out is q
    assert all(t.int8 for t in check.layers)


def test_a_rolled_back_trial_does_not_move_the_fp32_comparison_to_another_time_window(monkeypatch):
    """The INT8 model is measured again beside a trial (here under heavier load: 40 us); the final
    comparison with FP32 must still use the interleaved first measurement (25 vs 30 us)."""
    fp, q, result, revert = _setup()
    inputs = models.random_inputs(fp, seed=1)
    made = _fixed_times(monkeypatch, {"conv1": 10.0, "conv2": 10.0}, {"conv1": 5.0, "conv2": 20.0},
                        [30.0, 25.0, 45.0], after_reset={1: 40.0})
    out, check = check_layer_speed(fp, q, group_ops(q, result), inputs, revert)
    assert len(made) == 3  # FP32, INT8, one trial (conv2 in float), rolled back
    assert check.reverted == [] and out is q
    assert (check.fp32_us, check.int8_us) == (30.0, 25.0)


@pytest.mark.parametrize("totals, measured_again", [([30.0, 25.0, 20.0], False), ([30.0, 29.0, 28.0], True)])
def test_the_fp32_comparison_is_measured_again_only_when_the_chained_ratio_is_close(monkeypatch, totals,
                                                                                   measured_again):
    """After a kept trial the result's INT8/FP32 ratio is the product of interleaved ratios (25/30 x
    20/25 = 0.67: clearly faster, no new measurement); near break-even (0.93) FP32 is measured again."""
    fp, q, result, revert = _setup()
    inputs = models.random_inputs(fp, seed=1)
    made = _fixed_times(monkeypatch, {"conv1": 10.0, "conv2": 10.0}, {"conv1": 5.0, "conv2": 20.0}, totals)
    resets: list[int] = []
    monkeypatch.setattr(_Profiler, "reset", lambda self: resets.append(self.index))
    _, check = check_layer_speed(fp, q, group_ops(q, result), inputs, revert)
    assert check.reverted == ["conv2"] and len(made) == 3
    assert (0 in resets) == measured_again
    if not measured_again:
        assert check.int8_us == pytest.approx(20.0) and check.fp32_us == 30.0


@pytest.mark.parametrize("trial_us, kept", [(15.0, True), (19.9, False)])
def test_out_of_time_the_untried_slower_layers_get_one_trial_before_the_model_goes_back_to_fp32(
        monkeypatch, trial_us, kept):
    """No time for the per-category trials (budget 0) and INT8 slower than FP32 (24 vs 20 us):
    conv2 (slower in INT8) goes to float in one trial measured against FP32, kept only when the
    model is then at least MIN_GAIN faster than FP32."""
    fp, q, result, revert = _setup()
    inputs = models.random_inputs(fp, seed=1)
    made = _fixed_times(monkeypatch, {"conv1": 10.0, "conv2": 10.0}, {"conv1": 5.0, "conv2": 20.0},
                        [20.0, 24.0, trial_us])
    out, check = check_layer_speed(fp, q, group_ops(q, result), inputs, revert, budget_s=0.0)
    assert len(made) == 3 and check.skipped
    if kept:
        assert check.reverted == ["conv2"] and check.whole_model == []
        assert {c.get_node().get_friendly_name() for f in fqs(out).values()
                for c in f.output(0).get_target_inputs()} == {"conv1"}
        assert (check.fp32_us, check.int8_us) == (20.0, 15.0)
    else:
        assert sorted(check.reverted) == ["conv1", "conv2"] and not fqs(out)


def test_the_last_trial_must_beat_the_current_model_measured_beside_it(monkeypatch):
    """The first FP32 comparison came in a burst of load (INT8 24 vs FP32 20 us); in the last
    trial's measurement the current model runs beside FP32 and the trial again (14 us) and beats
    both: it is kept as it is, rather than the trial (17 us), faster than FP32 but slower than it
    (a zoo TCN lost 5 INT8 layers and 18% speed so)."""
    fp, q, result, revert = _setup()
    inputs = models.random_inputs(fp, seed=1)
    made = _fixed_times(monkeypatch, {"conv1": 10.0, "conv2": 10.0}, {"conv1": 5.0, "conv2": 20.0},
                        [20.0, 24.0, 17.0], after_reset={1: 14.0})
    out, check = check_layer_speed(fp, q, group_ops(q, result), inputs, revert, budget_s=0.0)
    assert len(made) == 3 and check.skipped
    assert check.reverted == [] and out is q
    assert (check.fp32_us, check.int8_us) == (20.0, 14.0)


def test_a_model_still_slower_than_fp32_goes_back_to_fp32(monkeypatch):
    fp, q, result, revert = _setup()
    inputs = models.random_inputs(fp, seed=1)
    _fixed_times(monkeypatch, {"conv1": 10.0, "conv2": 10.0}, {"conv1": 11.0, "conv2": 9.0}, [20.0, 24.0])
    out, check = check_layer_speed(fp, q, group_ops(q, result), inputs, revert)
    assert sorted(check.reverted) == ["conv1", "conv2"]
    # conv1 was tried in float (slower in INT8) and rolled back: both go back for the model as a whole
    assert sorted(check.whole_model) == ["conv1", "conv2"]
    assert sorted(check.report()["reverted_as_whole_model"]) == ["conv1", "conv2"]
    assert check.int8_us == check.fp32_us == 20.0
    assert not fqs(out)
    x = models.random_inputs(fp, seed=3)
    f32 = {"INFERENCE_PRECISION_HINT": "f32"}
    ref = ov.Core().compile_model(fp, "CPU", f32)(x)[0]
    got = ov.Core().compile_model(out, "CPU", f32)(x)[0]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def _run_cli(tiny_model_dir, tmp_path, *extra):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "pot_cli", "-q", "default", "-m", str(tiny_model_dir / "model" / "tiny.xml"),
                           "--data-source", str(tiny_model_dir / "images"), "--output-dir", str(out), "-d", *extra],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads((out / "optimized" / "report.json").read_text()), out / "optimized" / "tiny.xml"


def test_cli_target_cpu_reports_a_decision_per_layer_that_matches_the_saved_model(tiny_model_dir, tmp_path):
    report, xml = _run_cli(tiny_model_dir, tmp_path, "--target-device", "CPU")
    check = report["speed_check"]
    assert [row["layer"] for row in check["layers"]] == ["conv"]
    row = check["layers"][0]
    assert row["decision"] in ("int8", "float") and row["fp32_us"] > 0 and row["int8_us"] > 0
    model = ov.Core().read_model(xml)
    quantized = {c.get_node().get_friendly_name() for f in fqs(model).values() for c in f.output(0).get_target_inputs()}
    assert quantized == ({"conv"} if row["decision"] == "int8" else set())
    assert check["reverted"] == ([] if row["decision"] == "int8" else ["conv"])
    assert "speed_check_s" in report["time_s"]


@pytest.mark.parametrize("extra, expected", [((), False), (("--target-device", "CPU"), True)])
def test_speed_check_is_on_by_default_only_for_a_cpu_target(tiny_model_dir, tmp_path, extra, expected):
    report, _ = _run_cli(tiny_model_dir, tmp_path, *extra)
    assert ("speed_check" in report) is expected


def test_a_failing_measurement_keeps_every_quantized_layer(tiny_model_dir, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from pot_cli.cli import main

    def broken(*args, **kwargs):
        raise RuntimeError("Exception from src/plugin.cpp:1:\nprofiling is not available")

    monkeypatch.setattr(speed_check, "check_layer_speed", broken)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["-q", "default", "-m", str(tiny_model_dir / "model" / "tiny.xml"),
                                       "--data-source", str(tiny_model_dir / "images"), "--target-device", "CPU",
                                       "--output-dir", str(out), "-d"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "optimized" / "report.json").read_text())
    assert report["speed_check"] == {"error": "profiling is not available"}
    assert report["summary"]["activation_quantizers"] == 1
    assert "speed check skipped: profiling is not available" in result.output + (result.stderr or "")


def test_when_nothing_pays_in_int8_the_input_model_is_written(tiny_model_dir, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from pot_cli.cli import main

    # INT8 measured slower than FP32 everywhere (totals: FP32 profiler first, then the INT8 one)
    _fixed_times(monkeypatch, {"conv": 10.0}, {"conv": 10.2}, [10.0, 12.0])
    out = tmp_path / "out"
    xml = tiny_model_dir / "model" / "tiny.xml"
    result = CliRunner().invoke(main, ["-q", "default", "-m", str(xml), "--data-source", str(tiny_model_dir / "images"),
                                       "--target-device", "CPU", "--output-dir", str(out), "-d"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "optimized" / "report.json").read_text())
    assert report["speed_check"]["reverted"] == ["conv"]
    assert report["summary"]["kept_in_float_for_speed"] == 1 and report["quantizers"] == []
    written = ov.Core().read_model(out / "optimized" / "tiny.xml")
    original = ov.Core().read_model(xml)
    assert sorted(o.get_type_name() for o in written.get_ops()) == sorted(o.get_type_name() for o in original.get_ops())
    assert (out / "optimized" / "tiny.bin").read_bytes() == (tiny_model_dir / "model" / "tiny.bin").read_bytes()
    log = (out / "log.txt").read_text()
    assert "Model written unquantized (INT8 was not faster on CPU" in log and "Quantized model written" not in log


def test_faster_asks_the_median_slice_and_tolerates_one_noisy_slice():
    from types import SimpleNamespace

    from pot_cli.algorithms.speed_check import SLICES, _faster, _slice_ratios

    def prof(times):
        return SimpleNamespace(wall_seconds=list(times), total_us=lambda: 1e6 * float(np.median(times)))

    per = 4
    fp32 = prof([10.0] * per * SLICES)
    steady = prof([9.0] * per * SLICES)
    one_burst = prof([9.0] * per * (SLICES - 1) + [10.5] * per)  # faster, but slower in the last slice
    two_bursts = prof([9.0] * per * (SLICES - 2) + [10.5] * per * 2)
    assert _slice_ratios(steady, fp32) == pytest.approx([0.9] * SLICES)
    assert _slice_ratios(one_burst, fp32)[-1] == pytest.approx(1.05)
    assert _faster(_slice_ratios(steady, fp32), 0.03)
    assert _faster(_slice_ratios(one_burst, fp32), 0.03)  # one noisy slice of a 0.2 ms model
    assert not _faster(_slice_ratios(two_bursts, fp32), 0.03)
    assert not _faster(_slice_ratios(prof([9.9] * per * SLICES), fp32), 0.03)  # 1% faster: within noise
    assert _slice_ratios(prof([9.0] * 3), fp32) == pytest.approx([0.9])  # too few runs: the medians
    assert not _faster([1.0], 0.03) and _faster([0.9], 0.03)
