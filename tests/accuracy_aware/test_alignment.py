"""AccuracyAwareQuantization over DefaultQuantization aligns channels first, as POT did; reverting
a layer restores the aligned FP32 weights and biases, so a fully reverted model computes what the
original model computes."""
from __future__ import annotations

import numpy as np
import openvino as ov
import openvino.opset13 as ops

import models
from accuracy_aware import synthetic
from accuracy_aware.conftest import pot, report_of
from pot_cli.algorithms.accuracy_aware import group_ops, revert_group
from pot_cli.algorithms.channel_alignment import ActivationChannelAlignment
from pot_cli.algorithms.default import DefaultQuantization
from pot_cli.config import QuantizationParams, load_hardware_config
from pot_cli.graph.model import is_constant_subgraph
from pot_cli.algorithms.settings import create_min_max_settings
from pot_cli.statistics.collector import collect_statistics


def aligned_classifier(seed: int = 0) -> ov.Model:
    """``x [1,3,8,8] -> conv1 (3x3) -> bias1 -> conv2 (1x1) -> bias2 -> relu -> mean(H, W) -> fc``:
    one alignable pair (conv1, conv2)."""
    rng = np.random.default_rng(seed)
    x = models.param("x", [1, 3, 8, 8], layout="NCHW")
    y = models.conv(x, models.conv_weights(rng, 8, 3) / np.float32(128.0), "conv1")
    y = models.add_bias(y, np.linspace(-3.0, 5.0, 8).astype(np.float32), "bias1")
    y = models.add_bias(models.conv(y, models.conv_weights(rng, 8, 8, k=1), "conv2", pad=0),
                        models.bias_values(rng, 8), "bias2")
    y = ops.reduce_mean(ops.relu(y), ops.constant(np.array([2, 3], dtype=np.int64)), False)
    w = rng.standard_normal((10, 8)).astype(np.float32)
    y = models._named(ops.matmul(y, models.const(w, "fc/weights"), False, True), "fc")
    return ov.Model([ops.result(y)], [x], "aligned_classifier")


def test_accuracy_aware_run_aligns_first(tmp_path):
    model = aligned_classifier()
    xml, _ = models.save_ir(model, tmp_path / "model", "m")
    ac = synthetic.write_dataset(tmp_path, model, n=40)
    result = pot("-q", "accuracy_aware", "-m", xml, "--ac-config", ac, "--max-drop", "0.2",
                 "--output-dir", tmp_path / "out", "-d")
    assert result.exit_code == 0, result.stderr
    report = report_of(tmp_path / "out")
    assert report["summary"]["aligned_layers"] == 1
    assert [(p["producer"], p["consumer"]) for p in report["channel_alignment"]["pairs"]] == [("conv1", "conv2")]


def test_reverting_every_group_of_an_aligned_model_gives_the_original_function():
    original = aligned_classifier()
    model = aligned_classifier()
    images = synthetic.make_images(8, seed=3)
    samples = [{"x": img.transpose(2, 0, 1)[None].astype(np.float32)} for img in images]
    aligner = ActivationChannelAlignment()
    stats = collect_statistics(model, aligner.statistic_requests(model), enumerate(samples), len(samples))
    assert len(aligner.apply(model, stats)) == 1
    fp32 = model.clone()  # the aligned FP32 model, as the pipeline hands it to AccuracyAwareQuantization
    algo = DefaultQuantization(create_min_max_settings(QuantizationParams(), load_hardware_config("ANY")))
    requests = algo.statistic_requests(model)
    result = algo.apply(model, collect_statistics(model, requests, enumerate(samples), len(samples)))
    assert result.bias_corrections and any(b.applied for b in result.bias_corrections)
    fp_ops = {op.get_friendly_name(): op for op in fp32.get_ops()}
    cache: dict = {}
    groups = list(group_ops(model, result))
    assert {"conv1", "conv2", "fc"} <= set(groups)  # and the global ReduceMean between them, run in INT8
    for group in groups:
        revert_group(model, group, fp_ops, lambda o: is_constant_subgraph(o, cache))
    assert not [o for o in model.get_ops() if o.get_type_name() == "FakeQuantize"]
    core = ov.Core()
    ref = core.compile_model(original, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    out = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    for s in samples:
        a, b = ref(s)[0], out(s)[0]
        assert np.max(np.abs(a - b)) <= 1e-4 * np.max(np.abs(a))
