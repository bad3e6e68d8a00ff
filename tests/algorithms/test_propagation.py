"""Quantizer propagation through agnostic ops, ignored patterns (SE block, swish, tails), and
reverting a layer whose quantizer was propagated."""
from __future__ import annotations

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

import models
from models import _model, _named, _rng, add_bias, bias_values, conv, conv_weights, param
from pot_cli.algorithms.accuracy_aware import group_ops, revert_group
from pot_cli.config import QuantizationParams
from pot_cli.graph.model import is_constant_subgraph
from pot_cli.graph.patterns import find_se_blocks

from test_placement import F32, _cpu_has_vnni, consumers, fqs, op, quantize, run, source


def _maxpool(y, name):
    """MaxPool-8 (two outputs: values and unused indices); returns the values output."""
    return _named(ops.max_pool(y, [2, 2], [1, 1], [0, 0], [0, 0], [2, 2]), name).output(0)


def maxpool_model(extra_output: bool = False, branch: bool = False) -> ov.Model:
    """``x -> conv1 -> relu1 -> maxpool -> conv2``; ``branch``: relu1 also feeds conv3;
    ``extra_output``: the MaxPool output is also a model output."""
    rng = _rng(0)
    x = param("x", [1, 3, 8, 8], layout="NCHW")
    r = _named(ops.relu(conv(x, conv_weights(rng, 8, 3), "conv1")), "relu1")
    p = _maxpool(r, "maxpool")
    outs = [conv(p, conv_weights(rng, 4, 8), "conv2")]
    if branch:
        outs.append(conv(r, conv_weights(rng, 4, 8), "conv3"))
    if extra_output:
        outs.append(p)
    return _model(outs, [x], "maxpool")


def test_quantizer_moves_up_through_maxpool_and_maxpool_runs_in_int8():
    model = maxpool_model()
    ref_in = models.random_inputs(model, seed=5)
    q = fqs(model := _quantized(model))
    assert set(q) == {"conv1/fq_input_0", "maxpool/fq_input_0"}
    fq = q["maxpool/fq_input_0"]
    assert source(fq, 0).get_friendly_name() == "relu1"
    assert consumers(fq) == {("MaxPool", "maxpool", 0)}
    assert source(op(model, "conv2"), 0).get_friendly_name() == "maxpool"
    compiled = ov.Core().compile_model(model, "CPU")
    precision = {o.get_rt_info()["layerType"].astype(str): o.get_rt_info()["runtimePrecision"].astype(str)
                 for o in compiled.get_runtime_model().get_ops()}
    assert precision["Pooling"] in ("u8", "i8")
    assert np.isfinite(run(model, ref_in)).all()


def _quantized(model):
    quantize(model)
    return model


def test_one_quantizer_serves_a_maxpool_branch_and_a_direct_consumer():
    model = _quantized(maxpool_model(branch=True))
    q = fqs(model)
    shared = [fq for fq in q.values() if source(fq, 0).get_friendly_name() == "relu1"]
    assert len(shared) == 1
    assert consumers(shared[0]) == {("MaxPool", "maxpool", 0), ("Convolution", "conv3", 0)}
    assert len(q) == 2


def test_no_move_when_a_consumer_of_the_tensor_is_not_quantized():
    model = _quantized(maxpool_model(extra_output=True))
    fq = fqs(model)["conv2/fq_input_0"]
    assert source(fq, 0).get_friendly_name() == "maxpool"
    # the model output reads the float MaxPool result
    result = [o for o in model.get_results()
              if o.input_value(0).get_node().get_friendly_name() == "maxpool"]
    assert len(result) == 1


def pad_model(value: float) -> ov.Model:
    rng = _rng(1)
    x = param("x", [1, 3, 8, 8], layout="NCHW")
    r = _named(ops.relu(conv(x, conv_weights(rng, 4, 3), "conv1")), "relu1")
    p = _named(ops.pad(r, ops.constant(np.array([0, 0, 1, 1], np.int64)), ops.constant(np.array([0, 0, 1, 1], np.int64)),
                       "constant", ops.constant(np.float32(value))), "pad")
    return _model([conv(p, conv_weights(rng, 4, 4), "conv2")], [x], "pad")


def test_quantizer_moves_through_a_zero_pad_but_not_a_nonzero_one():
    zero = fqs(_quantized(pad_model(0.0)))
    assert source(zero["pad/fq_input_0"], 0).get_friendly_name() == "relu1"
    other = fqs(_quantized(pad_model(-3.0)))
    assert source(other["conv2/fq_input_0"], 0).get_friendly_name() == "pad"


def se_model(gate: str = "sigmoid") -> ov.Model:
    """``x -> conv0 -> relu0 -> SE(ReduceMean -> se_conv1 -> bias -> relu -> se_conv2 -> bias -> gate)
    -> Multiply(relu0, gate) -> conv_out``."""
    rng = _rng(2)
    x = param("x", [1, 3, 8, 8], layout="NCHW")
    r = _named(ops.relu(add_bias(conv(x, conv_weights(rng, 8, 3), "conv0"), bias_values(rng, 8), "bias0")), "relu0")
    s = _named(ops.reduce_mean(r, ops.constant(np.array([2, 3], np.int64)), keep_dims=True), "squeeze")
    s = ops.relu(add_bias(conv(s, conv_weights(rng, 2, 8, 1), "se_conv1", pad=0), bias_values(rng, 2), "se_bias1"))
    s = add_bias(conv(s, conv_weights(rng, 8, 2, 1), "se_conv2", pad=0), bias_values(rng, 8), "se_bias2")
    s = _named({"sigmoid": ops.sigmoid, "hsigmoid": ops.hsigmoid,
                "hard_sigmoid": lambda v: ops.hard_sigmoid(v, ops.constant(np.float32(0.2)), ops.constant(np.float32(0.5)))
                }[gate](s), "gate")
    m = _named(ops.multiply(r, s), "excite")
    return _model([conv(m, conv_weights(rng, 4, 8), "conv_out")], [x], "se")


def test_se_block_with_a_hard_sigmoid_gate_is_quantized_as_nncf_does():
    model = se_model("hard_sigmoid")
    assert find_se_blocks(model) == []
    quantize(model)
    assert {"se_conv1/fq_input_0", "se_conv2/fq_input_0"} <= set(fqs(model))


@pytest.mark.parametrize("gate", ["sigmoid", "hsigmoid"])
def test_se_block_is_found_and_stays_in_float(gate):
    model = se_model(gate)
    blocks = find_se_blocks(model)
    assert len(blocks) == 1
    assert {n.get_friendly_name() for n in blocks[0]} >= {"se_conv1", "se_conv2", "gate", "excite"}
    quantize(model)
    q = fqs(model)
    assert set(q) == {"conv0/fq_input_0", "conv_out/fq_input_0"}
    assert source(q["conv_out/fq_input_0"], 0).get_friendly_name() == "excite"
    for name in ("se_conv1", "se_conv2"):
        conv_op = op(model, name)
        assert source(conv_op, 0).get_type_name() != "FakeQuantize"
        assert conv_op.input_value(1).get_node().get_type_name() == "Constant"
        assert conv_op.input_value(1).get_element_type() == ov.Type.f32


def test_swish_multiply_is_not_quantized():
    rng = _rng(3)
    x = param("x", [1, 3, 8, 8], layout="NCHW")
    c = conv(x, conv_weights(rng, 8, 3), "conv0")
    sw = _named(ops.multiply(c, _named(ops.sigmoid(c), "sigmoid")), "swish")
    model = _model([conv(sw, conv_weights(rng, 4, 8), "conv1")], [x], "swish")
    quantize(model)
    q = fqs(model)
    assert set(q) == {"conv0/fq_input_0", "conv1/fq_input_0"}
    assert source(q["conv1/fq_input_0"], 0).get_friendly_name() == "swish"
    assert {source(op(model, "swish"), k).get_type_name() for k in range(2)} == {"Convolution", "Sigmoid"}


def test_reverting_a_layer_bypasses_the_quantizer_moved_in_front_of_its_maxpool():
    fp = maxpool_model()
    model = fp.clone()
    result = quantize(model)
    groups = group_ops(model, result)
    assert list(groups) == ["conv1", "conv2"]  # the MaxPool only carries INT8 data
    fp_ops = {o.get_friendly_name(): o for o in fp.get_ops()}
    cache: dict = {}
    revert_group(model, "conv2", fp_ops, lambda o: is_constant_subgraph(o, cache))
    assert set(fqs(model)) == {"conv1/fq_input_0"}
    assert source(op(model, "maxpool"), 0).get_friendly_name() == "relu1"
    remaining = result.without({"conv2"}, model)
    assert {r.name for r in remaining.quantizers if r.kind == "activation"} == {"conv1/fq_input_0"}
    x = models.random_inputs(fp, seed=2)
    assert run(model, x, F32).shape == run(fp, x, F32).shape


def test_nested_concats_share_one_range_over_all_their_inputs():
    rng = _rng(4)
    x = param("x", [1, 3, 8, 8], layout="NCHW")
    a, b, c = (conv(x, conv_weights(rng, 2, 3), n) for n in ("conv_a", "conv_b", "conv_c"))
    inner = _named(ops.concat([a, b], 1), "inner")
    outer = _named(ops.concat([inner, c], 1), "outer")
    model = _model([conv(outer, conv_weights(rng, 4, 6), "conv_out")], [x], "nested")
    quantize(model)
    q = fqs(model)
    on_branches = [fq for fq in q.values() if source(fq, 0).get_friendly_name() in ("conv_a", "conv_b", "conv_c")]
    assert len(on_branches) == 3
    for port in range(1, 5):
        values = [np.array(source(fq, port).get_data()) for fq in on_branches]
        assert all(np.array_equal(values[0], v) for v in values[1:])
    assert source(op(model, "conv_out"), 0).get_friendly_name() == "outer"


def test_second_matmul_operand_stays_symmetric_after_moving_through_a_transpose():
    qx = param("q", [1, 4, 8])
    kx = param("k", [1, 4, 8])
    kt = _named(ops.transpose(ops.tanh(kx), ops.constant(np.array([0, 2, 1], np.int64))), "k_t")
    mm = _named(ops.matmul(ops.relu(qx), kt, False, False), "scores")
    model = _model([mm], [qx, kx], "attention")
    # the mixed preset would give a signed tensor an asymmetric (u8) grid
    result = quantize(model, params=QuantizationParams(preset="mixed"))
    assert list(group_ops(model, result)) == ["scores"]  # the Transpose only carries INT8 data
    q = fqs(model)
    moved = q["k_t/fq_input_0"]
    assert source(moved, 0).get_type_name() == "Tanh"
    # 256 symmetric levels: the only second operand the CPU plugin multiplies in INT8 (i8)
    assert moved.get_attributes()["levels"] == 256
    lo, hi = (float(np.array(source(moved, k).get_data())) for k in (1, 2))
    assert lo < 0 < hi and lo == pytest.approx(-hi * 128 / 127)
    assert q["scores/fq_input_0"].get_attributes()["levels"] == 256


def attention_model(seq: int = 16, heads: int = 2, head_dim: int = 8) -> ov.Model:
    """``x -> {query, key, value} linear -> Reshape -> Transpose -> ScaledDotProductAttention ->
    Transpose -> Reshape -> out linear``: one BERT-like self-attention block (opset13)."""
    rng = _rng(3)
    hidden = heads * head_dim
    x = param("x", [1, seq, hidden])

    def linear(y, name):
        w = ops.constant((rng.standard_normal((hidden, hidden)) * 0.3).astype(np.float32))
        mm = _named(ops.matmul(y, w, False, True), name)
        return _named(ops.add(mm, ops.constant(rng.standard_normal(hidden).astype(np.float32) * 0.1)), name + "/bias")

    def split_heads(y, name):
        r = _named(ops.reshape(y, ops.constant(np.array([1, seq, heads, head_dim], np.int64)), False), name + "/reshape")
        return _named(ops.transpose(r, ops.constant(np.array([0, 2, 1, 3], np.int64))), name + "/transpose")

    q, k, v = (split_heads(linear(x, n), n) for n in ("query", "key", "value"))
    att = _named(ops.scaled_dot_product_attention(q, k, v, causal=False), "sdpa")
    merged = ops.reshape(ops.transpose(att, ops.constant(np.array([0, 2, 1, 3], np.int64))),
                         ops.constant(np.array([1, seq, hidden], np.int64)), False)
    return _model([linear(merged, "out")], [x], "attention_block")


#: the attention tests compile with 2 threads: the CPU plugin fuses an attention into one Snippets
#: ``Subgraph`` only when batch x heads (here 2), or a split of its 16 query rows, gives every thread
#: work, so with more threads per stream (a large server) the form would depend on the machine size
ATTENTION_THREADS = {"INFERENCE_NUM_THREADS": 2}


def fused_attention(runtime_ops, name: str = "sdpa") -> list:
    """The runtime ``Subgraph`` nodes that execute the attention op ``name`` as a whole (the CPU
    plugin's Snippets MHA: Q.K^T, scale, Softmax and .V in one kernel)."""
    return [o for o in runtime_ops if o.get_rt_info()["layerType"].astype(str) == "Subgraph"
            and name in o.get_rt_info()["originalLayersNames"].astype(str).split(",")]


def test_attention_query_and_key_get_symmetric_quantizers_and_qk_runs_in_int8():
    model = attention_model()
    ref_in = models.random_inputs(model, seed=2)
    ref = run(model.clone(), ref_in)
    quantize(model)
    q = fqs(model)
    sdpa = op(model, "sdpa")
    # query and key are quantized (moved up through Transpose/Reshape to the bias Adds); value is not
    on_qk = [fq for fq in q.values() if source(fq, 0).get_friendly_name() in ("query/bias", "key/bias")]
    assert len(on_qk) == 2
    for fq in on_qk:
        lo, hi = (float(np.asarray(source(fq, p).get_data()).ravel()[0]) for p in (1, 2))
        assert fq.get_attributes()["levels"] == 256
        assert lo < 0 < hi and abs(hi / lo) == pytest.approx(127 / 128, rel=1e-4)  # symmetric signed grid
    assert source(source(source(sdpa, 2), 0), 0).get_friendly_name() == "value/bias"
    compiled = ov.Core().compile_model(model, "CPU", ATTENTION_THREADS)
    runtime = compiled.get_runtime_model().get_ops()
    if _cpu_has_vnni():
        # VNNI/AMX CPUs: the plugin's Snippets MHA takes an i8 Q.K^T only with an INT8 brgemm (VNNI or
        # AMX), and then runs the decomposed attention (Q.K^T, scale, Softmax, .V and the output
        # FakeQuantize) as one Subgraph whose Q.K^T reads the i8 query and key
        fused = fused_attention(runtime)
        assert len(fused) == 1, "the CPU plugin runs the INT8 attention as one Snippets Subgraph"
        assert fused[0].get_rt_info()["runtimePrecision"].astype(str) == "i8"
        assert not [o for o in runtime if o.get_rt_info()["layerType"].astype(str) in ("MatMul", "Softmax")]

        def branch(port):  # the projection a Subgraph input comes from, through layout ops
            node = fused[0].input_value(port).get_node()
            while node.get_rt_info()["layerType"].astype(str) in ("Reshape", "Transpose"):
                node = node.input_value(0).get_node()
            return node.get_friendly_name().split("/")[0]

        precision = {branch(p): fused[0].get_input_element_type(p) for p in range(fused[0].get_input_size())}
        assert precision["query"] == precision["key"] == ov.Type.i8, "the CPU plugin runs Q.K^T in INT8"
        assert not precision["value"].is_integral()
    else:  # AVX2: the decomposed Q.K^T is a MatMul of its own
        int8_products = [o for o in runtime
                         if o.get_rt_info()["layerType"].astype(str) == "MatMul"
                         and o.get_rt_info()["runtimePrecision"].astype(str) in ("i8", "u8")]
        assert int8_products, "the CPU plugin runs Q.K^T in INT8"
    out = run(model, ref_in)
    cos = float(np.dot(out.ravel(), ref.ravel()) / np.linalg.norm(out) / np.linalg.norm(ref))
    assert cos > 0.96  # 0.9727, the same as with the attention left in float (random weights, 4 samples)


def test_reverting_an_attention_group_bypasses_its_query_and_key_quantizers():
    fp = attention_model()
    model = fp.clone()
    result = quantize(model)
    groups = group_ops(model, result)
    assert "sdpa" in groups
    fp_ops = {o.get_friendly_name(): o for o in fp.get_ops()}
    cache: dict = {}
    revert_group(model, "sdpa", fp_ops, lambda o: is_constant_subgraph(o, cache))
    sdpa = op(model, "sdpa")
    for port in (0, 1):  # Transpose <- Reshape <- bias Add, no FakeQuantize on the way any more
        node = source(sdpa, port)
        while node.get_type_name() in ("Transpose", "Reshape"):
            node = source(node, 0)
        assert node.get_type_name() == "Add"
    # the linear layers keep theirs
    assert any(c[0] == "MatMul" for fq in fqs(model).values() for c in consumers(fq))
    x = models.random_inputs(fp, seed=4)
    assert np.isfinite(run(model, x)).all()


def interpolate_model(float_branch: bool = False) -> ov.Model:
    """``x -> conv1 -> relu1 -> Interpolate (x2) -> conv2``; ``float_branch``: relu1 is also a
    model output (a consumer in floating point)."""
    rng = _rng(1)
    x = param("x", [1, 3, 8, 8], layout="NCHW")
    r = _named(ops.relu(conv(x, conv_weights(rng, 8, 3), "conv1")), "relu1")
    up = _named(ops.interpolate(r, ops.constant(np.array([16, 16], np.int64)), "nearest", "sizes",
                                axes=ops.constant(np.array([2, 3], np.int64))), "up")
    outs = [conv(up, conv_weights(rng, 4, 8), "conv2")] + ([r] if float_branch else [])
    return _model(outs, [x], "interpolate")


def test_interpolate_between_quantized_layers_gets_an_input_quantizer_and_runs_in_int8():
    model = interpolate_model()
    x = models.random_inputs(model, seed=3)
    quantize(model)
    q = fqs(model)
    assert {("Interpolate", "up", 0)} in [consumers(fq) for fq in q.values()]
    assert {("Convolution", "conv2", 0)} in [consumers(fq) for fq in q.values()]
    compiled = ov.Core().compile_model(model, "CPU")
    precision = {o.get_rt_info()["layerType"].astype(str): o.get_rt_info()["runtimePrecision"].astype(str)
                 for o in compiled.get_runtime_model().get_ops()}
    assert precision["Interpolate"] in ("u8", "i8")
    assert np.isfinite(run(model, x)).all()


def test_interpolate_input_read_in_float_elsewhere_gets_no_quantizer():
    model = interpolate_model(float_branch=True)
    quantize(model)
    assert all(("Interpolate", "up", 0) not in consumers(fq) for fq in fqs(model).values())


def test_linear_interpolate_gets_no_input_quantizer():
    """The CPU plugin runs a linear Interpolate in f32: a quantizer before it would only convert."""
    model = interpolate_model()
    up = op(model, "up")
    linear = ops.interpolate(up.input_value(0), up.input_value(1), "linear_onnx", "sizes", axes=up.input_value(2))
    up.output(0).replace(linear.output(0))
    quantize(model)
    assert all(c[0] != "Interpolate" for fq in fqs(model).values() for c in consumers(fq))
