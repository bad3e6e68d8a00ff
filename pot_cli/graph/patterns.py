"""Read-only structural knowledge about OpenVINO ops: which inputs carry weights, where the
output channels are, which ops have a bias Add after them."""
from __future__ import annotations

import openvino as ov

from pot_cli.graph.model import is_constant_subgraph

#: ops with a weight input on port 1 (quantized per output channel) and a data input on port 0
WEIGHTED_OPS = frozenset({"Convolution", "GroupConvolution", "ConvolutionBackpropData",
                          "GroupConvolutionBackpropData", "MatMul"})

#: ops with an internal product of two activations whose operands get quantizers: the query and
#: key inputs (ports 0, 1) of ScaledDotProductAttention (opset13), as in NNCF's hardware setups
ATTENTION_OPS = frozenset({"ScaledDotProductAttention"})

#: ops that only move or reshape data (walked through to find the producer of a tensor)
LAYOUT_OPS = frozenset({"Reshape", "Transpose", "Squeeze", "Unsqueeze"})

FLOAT_TYPES = frozenset({ov.Type.f32, ov.Type.f16, ov.Type.bf16, ov.Type.f64})


def is_float(output: ov.Output) -> bool:
    """True for a floating-point tensor (integer and boolean tensors are never quantized)."""
    return output.get_element_type() in FLOAT_TYPES


def is_depthwise(node: ov.Node) -> bool:
    """True for a GroupConvolution with one input and one output channel per group
    (weights ``(C, 1, 1, k...)``), the depthwise convolution of MobileNet-like models."""
    if node.get_type_name() != "GroupConvolution":
        return False
    shape = node.get_input_partial_shape(1)
    return shape.rank.is_static and shape[1].is_static and shape[2].is_static and \
        shape[1].get_length() == 1 and shape[2].get_length() == 1


def weight_channel_axes(node: ov.Node, weight_rank: int) -> tuple[int, ...]:
    """Output-channel axes of the weights on port 1 of a weighted op (kept by per-channel ranges).

    * Convolution ``(C_out, C_in, k...)`` -> ``(0,)``
    * GroupConvolution ``(G, C_out/G, C_in/G, k...)`` -> ``(0, 1)``
    * ConvolutionBackpropData ``(C_in, C_out, k...)`` -> ``(1,)``
    * GroupConvolutionBackpropData ``(G, C_in/G, C_out/G, k...)`` -> ``(0, 2)``
    * MatMul with 2-D weights: ``(N, K)`` with ``transpose_b`` -> ``(0,)``, ``(K, N)`` -> ``(1,)``;
      other ranks -> ``()`` (per tensor).

    :param node: the weighted op.
    :param weight_rank: rank of its weight input.
    """
    t = node.get_type_name()
    if t == "Convolution":
        return (0,)
    if t == "GroupConvolution":
        return (0, 1)
    if t == "ConvolutionBackpropData":
        return (1,)
    if t == "GroupConvolutionBackpropData":
        return (0, 2)
    if t == "MatMul" and weight_rank == 2:
        return (0,) if node.get_attributes().get("transpose_b") else (1,)
    return ()


def output_channel_axis(node: ov.Node) -> int:
    """Channel axis of a weighted op's output: 1 for convolutions, -1 for MatMul."""
    return -1 if node.get_type_name() == "MatMul" else 1


def input_channel_axis(node: ov.Node) -> int:
    """Channel axis of a weighted op's data input (port 0): 1 for convolutions; for MatMul the
    reduction axis K (-1, or -2 with ``transpose_a``)."""
    if node.get_type_name() == "MatMul":
        return -2 if node.get_attributes().get("transpose_a") else -1
    return 1


def find_bias_add(node: ov.Node, constant: callable) -> ov.Node | None:
    """The ``Add`` that adds a per-output-channel constant bias right after ``node``, if any.

    :param node: a weighted op.
    :param constant: predicate on an output: is it a constant sub-graph.
    :return: the Add node, whose port 1 (or 0) holds the bias, or None.
    """
    targets = list(node.output(0).get_target_inputs())
    if len(targets) != 1:
        return None
    add = targets[0].get_node()
    if add.get_type_name() != "Add":
        return None
    other = add.input(1 - targets[0].get_index()).get_source_output()
    if not constant(other):
        return None
    out_shape = node.get_output_partial_shape(0)
    bias_shape = other.get_partial_shape()
    if out_shape.rank.is_dynamic or bias_shape.is_dynamic:
        return None
    rank = out_shape.rank.get_length()
    axis = output_channel_axis(node) % rank
    channels = out_shape[axis]
    dims = [d.get_length() for d in bias_shape]
    if len(dims) > rank or channels.is_dynamic:
        return None
    padded = [1] * (rank - len(dims)) + dims
    if any(d != 1 for i, d in enumerate(padded) if i != axis) or padded[axis] != channels.get_length():
        return None
    return add


def bias_port(add: ov.Node, producer: ov.Node) -> int:
    """Port of ``add`` that holds the bias (the one not fed by ``producer``)."""
    return 1 if add.input(0).get_source_output().get_node().get_instance_id() == producer.get_instance_id() else 0


#: ops that pool a feature map to one value per channel (the squeeze of an SE block)
_SQUEEZE_OPS = frozenset({"ReduceMean", "ReduceMax", "AvgPool", "AdaptiveAvgPool"})
#: the excitation gate and the other ops of the pattern (NNCF's ``SE_BLOCK``: Sigmoid or
#: HSigmoid gates, ReLU/PReLU/Swish inside; HardSigmoid is not in it, and NNCF quantizes such blocks)
_SE_GATES = frozenset({"Sigmoid", "HSigmoid"})
_SE_INNER = frozenset({"Convolution", "MatMul", "Add", "Relu", "PRelu", "Swish", "HSwish", "Reshape", "Squeeze",
                       "Unsqueeze"})
#: at most this many ops between the squeeze and the excitation Multiply
_SE_MAX_LENGTH = 12


def find_se_blocks(model: ov.Model) -> list[list[ov.Node]]:
    """Squeeze-and-excitation blocks (Hu et al., 2018, "Squeeze-and-Excitation Networks"):
    ``x -> pool to 1x1 -> Conv/MatMul -> [bias] -> act -> Conv/MatMul -> [bias] -> gate -> Multiply(x, .)``.

    The path from the Multiply's gate input back to the pooling op must consist of single-data-
    input ops (other inputs constant, e.g. biases or reshape targets), hold exactly two weighted
    ops, and the pooling op must read the same tensor as the Multiply's other input. The gate is
    Sigmoid or HSigmoid, the other ops weighted ops, bias Adds, ReLU/PReLU/Swish/HSwish and
    reshapes. The original POT and NNCF leave these blocks in floating point (their ``se_block``
    ignored pattern).

    :param model: the model (not modified).
    :return: one list per block: the two weighted ops, the ops between them, the gate and the
        Multiply (the pooling op and ``x`` are not included).
    """
    cache: dict = {}
    blocks = []
    for mul in model.get_ops():
        if mul.get_type_name() != "Multiply":
            continue
        for gate_port in (0, 1):
            x = mul.input(1 - gate_port).get_source_output()
            node = mul.input(gate_port).get_source_output().get_node()
            path: list[ov.Node] = []
            found = False
            while len(path) < _SE_MAX_LENGTH:
                if node.get_type_name() in _SQUEEZE_OPS and node.input(0).get_source_output() == x:
                    found = True
                    break
                data = [i for i in node.inputs() if not is_constant_subgraph(i.get_source_output(), cache)]
                if len(data) != 1 or node.get_type_name() in ("Parameter", "Constant"):
                    break
                path.append(node)
                node = data[0].get_source_output().get_node()
            weighted = [n for n in path if n.get_type_name() in ("Convolution", "MatMul")]
            if found and len(weighted) == 2 and path[0].get_type_name() in _SE_GATES and all(
                    n.get_type_name() in _SE_INNER for n in path[1:]):
                blocks.append(path + [mul])
                break
    return blocks
