"""Tiny deterministic OpenVINO models built in memory with ``openvino.opset13``.

Every builder returns a fresh :class:`openvino.Model` whose weights come from a seeded numpy
generator, so two calls give identical graphs. Nodes that tests look at have fixed friendly
names (``conv``, ``conv1``, ``fc``...), and every Parameter has a tensor name equal to its
friendly name so samples can be fed as ``{name: array}``.

Also :func:`save_ir` (write an IR without FP16 compression) and :func:`write_images` (small
random PNGs for the simplified engine).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import openvino as ov
import openvino.opset13 as ops


# -- helpers -------------------------------------------------------------------------------------

def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _named(node, name: str):
    node.set_friendly_name(name)
    return node


def param(name: str, shape, et=ov.Type.f32, layout: str | None = None) -> ov.Node:
    """A Parameter whose friendly name and tensor name are both ``name``."""
    p = ops.parameter(shape, et, name=name)
    p.output(0).set_names({name})
    if layout:
        p.set_layout(ov.Layout(layout))
    return p


def const(value: np.ndarray, name: str) -> ov.Node:
    return _named(ops.constant(value), name)


def conv_weights(rng, c_out: int, c_in: int, k: int = 3) -> np.ndarray:
    """Convolution weights ``(C_out, C_in, k, k)`` float32; channel ``c`` scaled by ``1 + c`` so that
    per-channel scales differ from the per-tensor one."""
    w = rng.standard_normal((c_out, c_in, k, k)).astype(np.float32) * 0.3
    return (w * (1.0 + np.arange(c_out, dtype=np.float32))[:, None, None, None]).astype(np.float32)


def bias_values(rng, c: int) -> np.ndarray:
    """Biases bounded away from zero (so FastBiasCorrection's threshold lets them be corrected)."""
    return (rng.uniform(0.5, 1.5, c) * rng.choice([-1.0, 1.0], c)).astype(np.float32)


def conv(x, w: np.ndarray, name: str, pad: int = 1) -> ov.Node:
    """A 2-D Convolution with stride 1 and symmetric padding ``pad``, weights a Constant ``<name>/weights``."""
    wc = w if isinstance(w, (ov.Node, ov.Output)) else const(w, f"{name}/weights")
    return _named(ops.convolution(x, wc, [1, 1], [pad, pad], [pad, pad], [1, 1]), name)


def add_bias(x, b: np.ndarray, name: str) -> ov.Node:
    """Add a per-channel bias of shape ``(1, C, 1, 1)``."""
    return _named(ops.add(x, const(b.reshape(1, -1, 1, 1), f"{name}/value")), name)


def _model(outputs, params, name: str) -> ov.Model:
    return ov.Model([ops.result(o) for o in outputs], list(params), name)


# -- builders ------------------------------------------------------------------------------------

def conv_bias_relu(c_in: int = 3, c_out: int = 8, hw: int = 8, seed: int = 0, bias: bool = True,
                   relu: bool = True, batch=1) -> ov.Model:
    """``x [batch, c_in, hw, hw] -> conv -> bias (Add) -> relu``."""
    rng = _rng(seed)
    x = param("x", [batch, c_in, hw, hw], layout="NCHW")
    y = conv(x, conv_weights(rng, c_out, c_in), "conv")
    if bias:
        y = add_bias(y, bias_values(rng, c_out), "bias")
    if relu:
        y = _named(ops.relu(y), "relu")
    return _model([y], [x], "conv_bias_relu")


def conv_only(c_in: int = 1, c_out: int = 4, hw: int = 6, seed: int = 0) -> ov.Model:
    """``x [1, c_in, hw, hw] -> conv`` (no bias, no activation)."""
    x = param("x", [1, c_in, hw, hw], layout="NCHW")
    return _model([conv(x, conv_weights(_rng(seed), c_out, c_in), "conv")], [x], "conv_only")


def conv_chain(seed: int = 0) -> ov.Model:
    """Two layers: ``x [1,3,8,8] -> conv1 -> bias1 -> relu1 -> conv2 -> bias2 -> relu2``."""
    rng = _rng(seed)
    x = param("x", [1, 3, 8, 8], layout="NCHW")
    y = _named(ops.relu(add_bias(conv(x, conv_weights(rng, 8, 3), "conv1"), bias_values(rng, 8), "bias1")), "relu1")
    y = _named(ops.relu(add_bias(conv(y, conv_weights(rng, 6, 8), "conv2"), bias_values(rng, 6), "bias2")), "relu2")
    return _model([y], [x], "conv_chain")


def depthwise_conv(c: int = 4, hw: int = 8, seed: int = 0) -> ov.Model:
    """``x [1,C,hw,hw] -> dwconv`` (GroupConvolution, weights ``(C, 1, 1, 3, 3)``) ``-> relu``."""
    rng = _rng(seed)
    x = param("x", [1, c, hw, hw], layout="NCHW")
    w = (rng.standard_normal((c, 1, 1, 3, 3)) * (1.0 + np.arange(c))[:, None, None, None, None]).astype(np.float32)
    y = _named(ops.group_convolution(x, const(w, "dwconv/weights"), [1, 1], [1, 1], [1, 1], [1, 1]), "dwconv")
    return _model([_named(ops.relu(y), "relu")], [x], "depthwise_conv")


def matmul_bias(transpose_b: bool, k: int = 16, n: int = 8, seed: int = 0) -> ov.Model:
    """A fully connected layer: ``x [1, K] -> fc (MatMul) -> bias (Add, (N,))``; weights ``(N, K)``
    with ``transpose_b``, else ``(K, N)``."""
    rng = _rng(seed)
    x = param("x", [1, k])
    w = (rng.standard_normal((n, k)) * (1.0 + np.arange(n))[:, None] * 0.2).astype(np.float32)
    if not transpose_b:
        w = np.ascontiguousarray(w.T)
    y = _named(ops.matmul(x, const(w, "fc/weights"), False, transpose_b), "fc")
    y = _named(ops.add(y, const(bias_values(rng, n), "bias/value")), "bias")
    return _model([y], [x], f"matmul_bias_tb{int(transpose_b)}")


def concat_branches(seed: int = 0) -> ov.Model:
    """``x [1,3,8,8] -> relu -> {conv_a, conv_b} -> concat (axis 1) -> conv_c``: the ReLU output
    feeds two convolutions (one shared FakeQuantize expected)."""
    rng = _rng(seed)
    x = param("x", [1, 3, 8, 8], layout="NCHW")
    r = _named(ops.relu(x), "relu")
    a = conv(r, conv_weights(rng, 4, 3), "conv_a")
    b = conv(r, conv_weights(rng, 4, 3), "conv_b")
    c = _named(ops.concat([a, b], 1), "concat")
    y = conv(c, conv_weights(rng, 4, 8), "conv_c")
    return _model([y], [x], "concat_branches")


def shared_weights(seed: int = 0) -> ov.Model:
    """One weight Constant ``(4, 4, 3, 3)`` feeding two Convolutions: ``x -> conv1 -> relu -> conv2``."""
    rng = _rng(seed)
    x = param("x", [1, 4, 8, 8], layout="NCHW")
    w = const(conv_weights(rng, 4, 4), "shared/weights")
    y = conv(x, w, "conv1")
    y = _named(ops.relu(y), "relu")
    y = conv(y, w, "conv2")
    return _model([y], [x], "shared_weights")


def residual_add(seed: int = 0, tail: bool = False) -> ov.Model:
    """Two convolution branches of one input added: ``x -> {conv_a, conv_b} -> add -> relu -> conv_c``;
    with ``tail`` the model ends at ``relu`` (the Add is then a post-processing tail)."""
    rng = _rng(seed)
    x = param("x", [1, 4, 8, 8], layout="NCHW")
    a = conv(x, conv_weights(rng, 4, 4), "conv_a")
    b = conv(x, conv_weights(rng, 4, 4), "conv_b")
    y = _named(ops.relu(_named(ops.add(a, b), "add")), "relu")
    if not tail:
        y = conv(y, conv_weights(rng, 4, 4), "conv_c")
    return _model([y], [x], "residual_add")


def matmul_two_activations(seed: int = 0) -> ov.Model:
    """``a [1,4,8] @ b [1,8,6]`` (both inputs are activations, like attention scores)."""
    a = param("a", [1, 4, 8])
    b = param("b", [1, 8, 6])
    return _model([_named(ops.matmul(a, b, False, False), "matmul")], [a, b], "matmul_two_activations")


def conv_f16_weights(seed: int = 0) -> ov.Model:
    """Weights stored as f16: ``Constant(f16) -> Convert(f32) -> conv``; ``x [1,3,8,8]``."""
    rng = _rng(seed)
    x = param("x", [1, 3, 8, 8], layout="NCHW")
    w16 = const(conv_weights(rng, 8, 3).astype(np.float16), "conv/weights_f16")
    w = _named(ops.convert(w16, ov.Type.f32), "conv/weights_convert")
    y = add_bias(conv(x, w, "conv"), bias_values(rng, 8), "bias")
    return _model([_named(ops.relu(y), "relu")], [x], "conv_f16_weights")


def multi_input(seed: int = 0) -> ov.Model:
    """Two inputs ``x1``, ``x2`` ``[1,3,8,8]``, one convolution each, outputs added."""
    rng = _rng(seed)
    x1 = param("x1", [1, 3, 8, 8], layout="NCHW")
    x2 = param("x2", [1, 3, 8, 8], layout="NCHW")
    a = conv(x1, conv_weights(rng, 4, 3), "conv1")
    b = conv(x2, conv_weights(rng, 4, 3), "conv2")
    return _model([_named(ops.add(a, b), "add")], [x1, x2], "multi_input")


def gather_int64(vocab: int = 10, dim: int = 8, n: int = 6, seed: int = 0) -> ov.Model:
    """``ids [1, 5] int64 -> Gather(table (vocab, dim)) -> fc (MatMul, weights (n, dim), transpose_b)``,
    plus ``ShapeOf(ids)`` (an integer shape sub-graph) reshaping the output to ``[1, 5, n]``."""
    rng = _rng(seed)
    ids = param("ids", [1, 5], ov.Type.i64)
    table = const(rng.standard_normal((vocab, dim)).astype(np.float32), "embedding/table")
    emb = _named(ops.gather(table, ids, ops.constant(np.int64(0))), "embedding")  # [1, 5, dim]
    w = const(rng.standard_normal((n, dim)).astype(np.float32), "fc/weights")
    y = _named(ops.matmul(emb, w, False, True), "fc")  # [1, 5, n]
    shape = _named(ops.shape_of(ids, output_type="i64"), "ids_shape")
    target = _named(ops.concat([shape, ops.constant(np.array([n], dtype=np.int64))], 0), "target_shape")
    y = _named(ops.reshape(y, target, False), "reshape")
    return _model([y], [ids], "gather_int64")


def dynamic_batch_conv(seed: int = 0) -> ov.Model:
    """``x [?,3,8,8] -> conv -> bias -> relu`` (dynamic batch)."""
    return conv_bias_relu(seed=seed, batch=-1)


def _skewed_bias(rng, c: int) -> np.ndarray:
    """Per-channel biases with very different centres and magnitudes (something to align)."""
    return (rng.uniform(-1.0, 1.0, c) * 4.0 + np.linspace(-6.0, 10.0, c)).astype(np.float32)


def alignable_convs(seed: int = 0) -> ov.Model:
    """Two alignable pairs for ActivationChannelAlignment::

        x [1,3,12,12] -> conv1 (8, 3x3, pad 1) -> bias1 -> pool (MaxPool 3x3, stride 1, pad 1)
          -> conv2 (6, 1x1, stride 2, no padding) -> bias2 -> conv3 (4, 1x1, no bias) -> relu

    ``(conv1, conv2)``: shift and scale, through the MaxPool; ``(conv2, conv3)``: scale only
    (``conv3`` has no bias to absorb a shift).
    """
    rng = _rng(seed)
    x = param("x", [1, 3, 12, 12], layout="NCHW")
    w1 = conv_weights(rng, 8, 3) * np.geomspace(0.05, 3.0, 8, dtype=np.float32)[:, None, None, None]
    y = add_bias(conv(x, w1, "conv1"), _skewed_bias(rng, 8), "bias1")
    y = _named(ops.max_pool(y, [1, 1], [1, 1], [1, 1], [1, 1], [3, 3]), "pool")
    w2 = const(conv_weights(rng, 6, 8, k=1), "conv2/weights")
    y = _named(ops.convolution(y.output(0), w2, [2, 2], [0, 0], [0, 0], [1, 1]), "conv2")
    y = add_bias(y, _skewed_bias(rng, 6), "bias2")
    y = conv(y, conv_weights(rng, 4, 6, k=1), "conv3", pad=0)
    return _model([_named(ops.relu(y), "relu")], [x], "alignable_convs")


def alignable_depthwise(seed: int = 0) -> ov.Model:
    """``x [1,4,8,8] -> dwconv (GroupConvolution 3x3, pad 1) -> dwbias -> pw (1x1 conv) -> pwbias``:
    a depthwise producer feeding a pointwise consumer (the MobileNet/BlazeFace block)."""
    rng = _rng(seed)
    x = param("x", [1, 4, 8, 8], layout="NCHW")
    w = (rng.standard_normal((4, 1, 1, 3, 3)) * np.geomspace(0.1, 2.0, 4)[:, None, None, None, None]).astype(np.float32)
    y = _named(ops.group_convolution(x, const(w, "dwconv/weights"), [1, 1], [1, 1], [1, 1], [1, 1]), "dwconv")
    y = add_bias(y, _skewed_bias(rng, 4), "dwbias")
    y = add_bias(conv(y, conv_weights(rng, 6, 4, k=1), "pw", pad=0), bias_values(rng, 6), "pwbias")
    return _model([y], [x], "alignable_depthwise")


def alignable_matmuls(seed: int = 0) -> ov.Model:
    """``x [1,5,16] -> fc1 (MatMul, weights (16, 12)) -> bias1 -> fc2 (MatMul, weights (8, 12),
    transpose_b) -> bias2``: a MatMul pair over the last axis."""
    rng = _rng(seed)
    x = param("x", [1, 5, 16])
    w1 = (rng.standard_normal((16, 12)) * np.geomspace(0.05, 1.0, 12)[None, :]).astype(np.float32)
    y = _named(ops.matmul(x, const(w1, "fc1/weights"), False, False), "fc1")
    y = _named(ops.add(y, const(_skewed_bias(rng, 12), "bias1/value")), "bias1")
    w2 = rng.standard_normal((8, 12)).astype(np.float32)
    y = _named(ops.matmul(y, const(w2, "fc2/weights"), False, True), "fc2")
    y = _named(ops.add(y, const(bias_values(rng, 8), "bias2/value")), "bias2")
    return _model([y], [x], "alignable_matmuls")


def lstm_sequence(seed: int = 0, steps: int = 6, inputs: int = 16, hidden: int = 32) -> ov.Model:
    """``x [1, steps, inputs], h0 [1, 1, hidden], c0 [1, 1, hidden] -> lstm (LSTMSequence, forward)``;
    constant ``W (1, 4*hidden, inputs)``, ``R (1, 4*hidden, hidden)``, ``B (1, 4*hidden)``; output
    ``Y [1, 1, steps, hidden]``."""
    rng = _rng(seed)
    x = param("x", [1, steps, inputs])
    h0 = param("h0", [1, 1, hidden])
    c0 = param("c0", [1, 1, hidden])
    w = const(rng.normal(0, 0.3, (1, 4 * hidden, inputs)).astype(np.float32), "lstm/W")
    r = const(rng.normal(0, 0.3, (1, 4 * hidden, hidden)).astype(np.float32), "lstm/R")
    b = const(rng.normal(0, 0.1, (1, 4 * hidden)).astype(np.float32), "lstm/B")
    lengths = const(np.array([steps], dtype=np.int32), "lstm/lengths")
    y = _named(ops.lstm_sequence(x, h0, c0, lengths, w, r, b, hidden, "forward"), "lstm")
    return _model([y.output(0)], [x, h0, c0], "lstm_sequence")


def gru_sequence(seed: int = 0, steps: int = 6, inputs: int = 16, hidden: int = 32,
                 linear_before_reset: bool = False) -> ov.Model:
    """``x [1, steps, inputs], h0 [1, 1, hidden] -> gru (GRUSequence, forward)``; constant
    ``W (1, 3*hidden, inputs)``, ``R (1, 3*hidden, hidden)``; output ``Y [1, 1, steps, hidden]``."""
    rng = _rng(seed)
    x = param("x", [1, steps, inputs])
    h0 = param("h0", [1, 1, hidden])
    w = const(rng.normal(0, 0.3, (1, 3 * hidden, inputs)).astype(np.float32), "gru/W")
    r = const(rng.normal(0, 0.3, (1, 3 * hidden, hidden)).astype(np.float32), "gru/R")
    b = const(rng.normal(0, 0.1, (1, (4 if linear_before_reset else 3) * hidden)).astype(np.float32), "gru/B")
    lengths = const(np.array([steps], dtype=np.int32), "gru/lengths")
    y = _named(ops.gru_sequence(x, h0, lengths, w, r, b, hidden, "forward",
                                linear_before_reset=linear_before_reset), "gru")
    return _model([y.output(0)], [x, h0], "gru_sequence")


def vit_like(seed: int = 0, convs: int = 1, dim: int = 16) -> ov.Model:
    """A ViT-like encoder block behind ``convs`` convolutions: ``x [1,3,16,16]`` -> 4x4/4 patch
    convolution (plus ``convs - 1`` 1x1 convolutions) -> tokens [1,16,dim] -> MVN -> q/k/v linear
    -> ``softmax(q @ k^T) @ v`` -> out linear -> residual Add -> MVN -> head linear."""
    rng = _rng(seed)
    x = param("x", [1, 3, 16, 16], layout="NCHW")
    y = _named(ops.convolution(x, const(rng.standard_normal((dim, 3, 4, 4)).astype(np.float32) * 0.2, "patch/w"),
                               [4, 4], [0, 0], [0, 0], [1, 1]), "patch")
    for i in range(1, convs):
        y = ops.relu(conv(y, conv_weights(rng, dim, dim, 1), f"conv{i}", pad=0))
    tokens = _named(ops.transpose(ops.reshape(y, ops.constant(np.array([1, dim, 16], np.int64)), False),
                                  ops.constant(np.array([0, 2, 1], np.int64))), "tokens")

    def linear(t, name, n=dim):
        w = const((rng.standard_normal((n, t.get_output_partial_shape(0)[2].get_length())) * 0.3).astype(np.float32),
                  name + "/w")
        return _named(ops.add(_named(ops.matmul(t, w, False, True), name),
                              ops.constant(bias_values(rng, n))), name + "/bias")

    norm = _named(ops.mvn(tokens, ops.constant(np.array([2], np.int64)), True, 1e-5, "inside_sqrt"), "ln1")
    q, k, v = (linear(norm, n) for n in ("q", "k", "v"))
    scores = _named(ops.matmul(q, k, False, True), "scores")
    probs = _named(ops.softmax(ops.multiply(scores, ops.constant(np.float32(dim ** -0.5))), 2), "probs")
    context = _named(ops.matmul(probs, v, False, False), "context")
    res = _named(ops.add(tokens, linear(context, "o")), "residual")
    head = linear(_named(ops.mvn(res, ops.constant(np.array([2], np.int64)), True, 1e-5, "inside_sqrt"), "ln2"),
                  "head", 10)
    return _model([head], [x], f"vit_like_{convs}")


#: name -> builder with default arguments, for parametrised tests
BUILDERS = {
    "conv_bias_relu": conv_bias_relu,
    "conv_chain": conv_chain,
    "depthwise_conv": depthwise_conv,
    "matmul_bias_tb0": lambda: matmul_bias(False),
    "matmul_bias_tb1": lambda: matmul_bias(True),
    "concat_branches": concat_branches,
    "shared_weights": shared_weights,
    "residual_add": residual_add,
    "matmul_two_activations": matmul_two_activations,
    "conv_f16_weights": conv_f16_weights,
    "multi_input": multi_input,
    "gather_int64": gather_int64,
    "dynamic_batch_conv": dynamic_batch_conv,
}


# -- samples and files ---------------------------------------------------------------------------

_NP = {ov.Type.f32: np.float32, ov.Type.i64: np.int64, ov.Type.i32: np.int32}


def random_inputs(model: ov.Model, seed: int = 0, low: float = -1.0, high: float = 1.0) -> dict[str, np.ndarray]:
    """One random sample for ``model``: float inputs uniform in ``[low, high)``, integer inputs in
    ``[0, 10)``; dynamic dims become 1."""
    rng = _rng(seed)
    out = {}
    for p in model.get_parameters():
        shape = [d.get_length() if d.is_static else 1 for d in p.get_partial_shape()]
        et = p.get_element_type()
        if et.is_integral():
            out[p.get_friendly_name()] = rng.integers(0, 10, shape).astype(_NP[et])
        else:
            out[p.get_friendly_name()] = rng.uniform(low, high, shape).astype(np.float32)
    return out


def save_ir(model: ov.Model, directory, name: str | None = None) -> tuple[Path, Path]:
    """Save ``model`` as ``<directory>/<name>.xml|.bin`` without FP16 compression.

    :return: ``(xml, bin)`` paths.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    xml = directory / f"{name or model.get_friendly_name()}.xml"
    ov.save_model(model, str(xml), compress_to_fp16=False)
    return xml, xml.with_suffix(".bin")


def write_images(directory, n: int, shape=(8, 8, 3), seed: int = 0) -> list[Path]:
    """Write ``n`` random uint8 PNGs of ``shape`` (``(H, W)`` gray or ``(H, W, 3)`` BGR) named
    ``img_000.png``...; returns their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = _rng(seed)
    paths = []
    for i in range(n):
        path = directory / f"img_{i:03d}.png"
        if not cv2.imwrite(str(path), rng.integers(0, 256, tuple(shape), dtype=np.uint8)):
            raise OSError(f"cannot write {path}")
        paths.append(path)
    return paths
