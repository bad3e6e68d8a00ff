"""ActivationChannelAlignment: which layer pairs it finds, that the float model computes the same
after it, and that the tensor between the layers is centred with closer channel widths; its
place in the pipeline (standalone, before a quantization algorithm, inside DefaultQuantization)."""
from __future__ import annotations

import json

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest
from click.testing import CliRunner

import models
from pot_cli.algorithms.channel_alignment import SCALE_POWER, ActivationChannelAlignment
from pot_cli.cli import main
from pot_cli.statistics.collector import Reduction, StatisticRequest, collect_statistics

F32 = {"INFERENCE_PRECISION_HINT": "f32"}


def samples_for(model: ov.Model, n: int = 6) -> list[dict[str, np.ndarray]]:
    return [models.random_inputs(model, seed=10 + i, low=-1.0, high=1.0) for i in range(n)]


def outputs(model: ov.Model, samples) -> list[np.ndarray]:
    compiled = ov.Core().compile_model(model, "CPU", F32)
    return [np.array(compiled(s)[0]) for s in samples]


def align(model: ov.Model, samples, **kw):
    """Run the two-phase API in place; returns (aligner, records)."""
    aligner = ActivationChannelAlignment(**kw)
    requests = aligner.statistic_requests(model)
    stats = collect_statistics(model, requests, enumerate(samples), len(samples))
    return aligner, aligner.apply(model, stats)


def channel_ranges(model: ov.Model, consumer: str, axis: int, samples) -> tuple[np.ndarray, np.ndarray]:
    """Averaged per-sample per-channel (min, max) of ``consumer``'s data input."""
    node = next(o for o in model.get_ops() if o.get_friendly_name() == consumer)
    tensor = node.input(0).get_source_output()
    stats = collect_statistics(model, [StatisticRequest(tensor, Reduction.MEAN_MIN_PER_CHANNEL, axis),
                                       StatisticRequest(tensor, Reduction.MEAN_MAX_PER_CHANNEL, axis)],
                               enumerate(samples), len(samples))
    return (stats.get(tensor, Reduction.MEAN_MIN_PER_CHANNEL, axis)[0],
            stats.get(tensor, Reduction.MEAN_MAX_PER_CHANNEL, axis)[0])


@pytest.mark.parametrize("build, pairs, axis", [
    (models.alignable_convs, [("conv1", "conv2", ["MaxPool"], True), ("conv2", "conv3", [], False)], 1),
    (models.alignable_depthwise, [("dwconv", "pw", [], True)], 1),
    (models.alignable_matmuls, [("fc1", "fc2", [], True)], 2),
], ids=["convs", "depthwise", "matmuls"])
def test_alignment_keeps_the_float_output_and_centres_the_tensor(build, pairs, axis):
    model = build()
    samples = samples_for(model)
    reference = outputs(model, samples)
    first = pairs[0][1]
    lo0, hi0 = channel_ranges(model, first, axis, samples)

    aligner, records = align(model, samples)
    assert [(r.producer, r.consumer, r.path, r.shifted) for r in records] == pairs
    assert all(r.scaled for r in records)

    # the float model computes the same (within 1e-4 of the output's magnitude)
    for ref, out in zip(reference, outputs(model, samples)):
        assert np.max(np.abs(out - ref)) <= 1e-4 * np.max(np.abs(ref)), np.max(np.abs(out - ref))

    # the first pair's tensor: every channel centred on zero, each width moved half-way (log
    # scale) to the median width
    lo1, hi1 = channel_ranges(model, first, axis, samples)
    width0, width1 = hi0 - lo0, hi1 - lo1
    np.testing.assert_allclose((lo1 + hi1) / 2, 0.0, atol=1e-4 * width1.max())
    ratio = np.clip(width0 / np.median(width0), 1e-2, 1e2)
    np.testing.assert_allclose(width1, width0 / ratio ** SCALE_POWER, rtol=1e-4)
    assert width1.max() / width1.min() < width0.max() / width0.min()
    rec = records[0]
    np.testing.assert_allclose(rec.range_before, [lo0.min(), hi0.max()], rtol=1e-5)
    np.testing.assert_allclose(rec.range_after, [lo1.min(), hi1.max()], rtol=1e-3, atol=1e-4 * width1.max())
    np.testing.assert_allclose(rec.max_shift, np.abs((lo0 + hi0) / 2).max(), rtol=1e-5)


def test_pair_without_consumer_bias_is_scaled_not_shifted():
    model = models.alignable_convs()
    samples = samples_for(model)
    lo0, hi0 = channel_ranges(model, "conv3", 1, samples)
    _, records = align(model, samples)
    rec = next(r for r in records if r.consumer == "conv3")
    assert not rec.shifted and rec.scaled and rec.max_shift == 0.0
    lo1, hi1 = channel_ranges(model, "conv3", 1, samples)
    ratio = np.clip((hi0 - lo0) / np.median(hi0 - lo0), 1e-2, 1e2)
    # centres are only divided by the scales, not moved to zero
    np.testing.assert_allclose((lo1 + hi1) / 2, (lo0 + hi0) / 2 / ratio ** SCALE_POWER, rtol=1e-4, atol=1e-4)


def test_shift_only_leaves_widths_and_weights_of_producer_alone():
    model = models.alignable_depthwise()
    samples = samples_for(model)
    w_before = next(o for o in model.get_ops() if o.get_friendly_name() == "dwconv/weights").get_data().copy()
    lo0, hi0 = channel_ranges(model, "pw", 1, samples)
    _, records = align(model, samples, align_scales=False)
    assert [(r.shifted, r.scaled) for r in records] == [(True, False)]
    dw = next(o for o in model.get_ops() if o.get_friendly_name() == "dwconv")
    np.testing.assert_array_equal(dw.input_value(1).get_node().get_data(), w_before)
    lo1, hi1 = channel_ranges(model, "pw", 1, samples)
    np.testing.assert_allclose(hi1 - lo1, hi0 - lo0, rtol=1e-4)
    np.testing.assert_allclose((lo1 + hi1) / 2, 0.0, atol=1e-4 * (hi0 - lo0).max())


def _variant(kind: str) -> ov.Model:
    """``x -> conv1 -> bias1 -> [between] -> conv2 -> bias2`` where one detail prevents alignment."""
    rng = np.random.default_rng(0)
    x = models.param("x", [1, 3, 8, 8], layout="NCHW")
    y = models.add_bias(models.conv(x, models.conv_weights(rng, 4, 3), "conv1"), models.bias_values(rng, 4), "bias1")
    outs = []
    if kind == "relu_between":  # ReLU does not commute with a shift
        y = ops.relu(y)
    if kind == "two_consumers":  # the tensor also feeds a model output
        outs.append(y)
    pad = 1 if kind == "padded_consumer" else 0  # padded zeros are not shifted
    k = 3 if kind == "padded_consumer" else 1
    if kind == "grouped_consumer":
        w = rng.standard_normal((4, 1, 1, 1, 1)).astype(np.float32)
        z = ops.group_convolution(y, models.const(w, "conv2/weights"), [1, 1], [0, 0], [0, 0], [1, 1])
        z.set_friendly_name("conv2")
    else:
        z = models.conv(y, models.conv_weights(rng, 5, 4, k=k), "conv2", pad=pad)
    z = models.add_bias(z, models.bias_values(rng, z.get_output_partial_shape(0)[1].get_length()), "bias2")
    return ov.Model([ops.result(o) for o in [z] + outs], [x], kind)


@pytest.mark.parametrize("kind", ["relu_between", "two_consumers", "padded_consumer", "grouped_consumer"])
def test_patterns_that_cannot_be_aligned_exactly_are_left_alone(kind):
    assert ActivationChannelAlignment().plan(_variant(kind)) == []


def test_ignored_scope_and_the_aligned_baseline():
    assert [p.consumer.get_friendly_name() for p in ActivationChannelAlignment().plan(_variant("aligned"))] == ["conv2"]
    assert ActivationChannelAlignment(ignored_scope=("conv2",)).plan(_variant("aligned")) == []
    assert ActivationChannelAlignment(ignored_types=("Convolution",)).plan(_variant("aligned")) == []


def test_mean_min_and_mean_max_per_channel_are_averages_of_per_sample_extremes():
    x = models.param("x", [1, 2, 3])
    model = ov.Model([ops.result(ops.relu(x))], [x], "identity")
    samples = [{"x": np.array([[[1, 5, 3], [-2, 0, 2]]], np.float32)},
               {"x": np.array([[[3, 3, 9], [-6, 4, 0]]], np.float32)}]
    reqs = [StatisticRequest(x.output(0), Reduction.MEAN_MIN_PER_CHANNEL, 1),
            StatisticRequest(x.output(0), Reduction.MEAN_MAX_PER_CHANNEL, 1)]
    stats = collect_statistics(model, reqs, enumerate(samples), 2)
    np.testing.assert_allclose(stats.get(x.output(0), Reduction.MEAN_MIN_PER_CHANNEL, 1), [[2.0, -4.0]])
    np.testing.assert_allclose(stats.get(x.output(0), Reduction.MEAN_MAX_PER_CHANNEL, 1), [[7.0, 3.0]])


# -- in the pipeline ----------------------------------------------------------------------------

@pytest.fixture
def alignable_ir(tmp_path):
    xml, _ = models.save_ir(models.alignable_convs(), tmp_path / "model", "alignable")
    models.write_images(tmp_path / "images", 8, (12, 12, 3), seed=1)
    return xml, tmp_path / "images"


def _run_config(tmp_path, xml, images, algorithms, name="run"):
    config = tmp_path / f"{name}.json"
    config.write_text(json.dumps({"model": {"model": str(xml)}, "engine": {"data_source": str(images)},
                                  "compression": {"algorithms": algorithms}}))
    result = CliRunner().invoke(main, ["-c", str(config), "--output-dir", str(tmp_path / name), "-d"],
                                catch_exceptions=False)
    return result, tmp_path / name / "optimized"


def _fq_names(xml) -> list[str]:
    model = ov.Core().read_model(str(xml))
    return sorted(o.get_friendly_name() for o in model.get_ops() if o.get_type_name() == "FakeQuantize")


def test_standalone_alignment_writes_an_aligned_float_model(tmp_path, alignable_ir):
    xml, images = alignable_ir
    result, out = _run_config(tmp_path, xml, images, [{"name": "ActivationChannelAlignment"}])
    assert result.exit_code == 0, result.stderr
    assert "ActivationChannelAlignment: 2 of 2 layer pair(s) aligned" in result.stderr
    assert "no layer was quantized" not in result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["aligned_layers"] == 2
    assert [(p["producer"], p["consumer"]) for p in report["channel_alignment"]["pairs"]] == [
        ("conv1", "conv2"), ("conv2", "conv3")]
    assert report["samples"]["used"] == 8
    assert _fq_names(out / "alignable.xml") == []
    original = ov.Core().read_model(str(xml))
    sample = models.random_inputs(original, seed=3, low=0, high=255)
    ref = outputs(original, [sample])[0]
    aligned = outputs(ov.Core().read_model(str(out / "alignable.xml")), [sample])[0]
    assert np.max(np.abs(aligned - ref)) <= 1e-4 * np.max(np.abs(ref))


def test_default_quantization_aligns_first_and_min_max_only_when_asked(tmp_path, alignable_ir):
    xml, images = alignable_ir
    default, out = _run_config(tmp_path, xml, images, [{"name": "DefaultQuantization"}], "default")
    assert default.exit_code == 0, default.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["aligned_layers"] == 2
    assert "channel_alignment_s" in report["time_s"]
    # conv2's quantizer moved in front of the MaxPool that feeds it
    assert _fq_names(out / "alignable.xml") == ["conv1/fq_input_0", "conv3/fq_input_0", "pool/fq_input_0"]

    min_max, out = _run_config(tmp_path, xml, images, [{"name": "MinMaxQuantization"}], "minmax")
    assert min_max.exit_code == 0, min_max.stderr
    assert "aligned_layers" not in json.loads((out / "report.json").read_text())["summary"]

    both, out = _run_config(tmp_path, xml, images, [{"name": "ActivationChannelAlignment"},
                                                    {"name": "MinMaxQuantization"}], "both")
    assert both.exit_code == 0, both.stderr
    assert json.loads((out / "report.json").read_text())["summary"]["aligned_layers"] == 2


def test_alignment_after_quantization_is_refused_naming_the_list(tmp_path, alignable_ir):
    xml, images = alignable_ir
    result, out = _run_config(tmp_path, xml, images, [{"name": "DefaultQuantization"},
                                                      {"name": "ActivationChannelAlignment"}], "wrong")
    assert result.exit_code == 2
    assert ("compression.algorithms[1].name: ActivationChannelAlignment after DefaultQuantization: it aligns a "
            "float model; expected it before the quantization algorithm") in result.stderr
    assert not out.exists()


def test_unknown_ignored_scope_name_is_a_config_error(tmp_path, alignable_ir):
    xml, images = alignable_ir
    result, out = _run_config(tmp_path, xml, images, [{"name": "ActivationChannelAlignment",
                                                       "params": {"ignored": {"scope": ["conv22"]}}}], "typo")
    assert result.exit_code == 2
    assert "ignored.scope: no node named 'conv22' in the model" in result.stderr
    assert not out.exists()
