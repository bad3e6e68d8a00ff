"""Reverting a layer group in a quantized graph (``revert_group``)."""
from __future__ import annotations

import numpy as np
import openvino as ov
import pytest

import models
from pot_cli.algorithms.accuracy_aware import revert_group
from pot_cli.algorithms.default import DefaultQuantization
from pot_cli.algorithms.min_max import MinMaxSettings
from pot_cli.graph.model import is_constant_subgraph
from pot_cli.statistics.collector import collect_statistics


def quantized(fp: ov.Model, compress: bool = True) -> ov.Model:
    model = fp.clone()
    algorithm = DefaultQuantization(MinMaxSettings(), compress_weights=compress)
    requests = algorithm.statistic_requests(model)
    samples = [(k, models.random_inputs(model, seed=k)) for k in range(8)]
    algorithm.apply(model, collect_statistics(model, requests, iter(samples), len(samples)))
    return model


def run(model: ov.Model, inputs: dict) -> np.ndarray:
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return compiled(inputs)[0]


def source(model: ov.Model, node: str, port: int) -> ov.Node:
    op = next(o for o in model.get_ops() if o.get_friendly_name() == node)
    return op.input(port).get_source_output().get_node()


def fp_ops(fp: ov.Model):
    cache: dict = {}
    return {o.get_friendly_name(): o for o in fp.get_ops()}, (lambda out: is_constant_subgraph(out, cache))


def test_a_shared_fake_quantize_stays_for_the_other_consumer():
    fp = models.concat_branches()
    q = quantized(fp)
    assert source(q, "conv_a", 0).get_type_name() == source(q, "conv_b", 0).get_type_name() == "FakeQuantize"
    revert_group(q, "conv_a", *fp_ops(fp))
    assert source(q, "conv_a", 0).get_friendly_name() == "relu"
    assert source(q, "conv_a", 1).get_friendly_name() == "conv_a/weights"
    assert source(q, "conv_b", 0).get_type_name() == "FakeQuantize"
    assert source(q, "conv_b", 1).get_friendly_name() == "conv_b/fq_weights_1/dequantize"


@pytest.mark.parametrize("compress", [True, False])
def test_reverting_every_group_gives_the_fp32_model_back(compress):
    fp = models.conv_chain()
    q = quantized(fp, compress)
    assert source(q, "bias1", 1).get_friendly_name() == "conv1/bias_corrected"
    x = models.random_inputs(fp, seed=99)
    assert not np.array_equal(run(q, x), run(fp, x))
    for group in ("conv1", "conv2"):
        revert_group(q, group, *fp_ops(fp))
    assert source(q, "bias1", 1).get_friendly_name() == "bias1/value"
    assert not any(o.get_type_name() == "FakeQuantize" for o in q.get_ops())
    np.testing.assert_array_equal(run(q, x), run(fp, x))
