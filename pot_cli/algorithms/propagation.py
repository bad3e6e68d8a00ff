"""Quantizer propagation: moving a planned FakeQuantize up through quantization-agnostic ops and
onto the inputs of a Concat (unified scales).

A per-tensor quantizer after ``MaxPool``/``Reshape``/``Transpose``/zero ``Pad``... moves in front
of the op when every consumer of the tensor reads that quantizer, so one FakeQuantize serves
several consumers and the op runs on INT8 data; ``FQ(maxpool(x)) == maxpool(FQ(x))`` for any
monotonic FQ and layout ops only move values, so the quantized model computes the same thing.
A quantizer after a ``Concat`` moves onto each of its inputs, and those quantizers share one range
(the hardware config's ``unified_scales``). The original POT and NNCF propagate quantizers the same
way; see :class:`pot_cli.algorithms.min_max.MinMaxSettings` (``agnostic_op_types``,
``unified_scale_types``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import openvino as ov

from pot_cli.graph.model import evaluate_constants
from pot_cli.graph.patterns import is_float

if TYPE_CHECKING:
    from pot_cli.algorithms.min_max import MinMaxQuantization


def commutes(mm: "MinMaxQuantization", node: ov.Node) -> bool:
    """Whether a per-tensor FakeQuantize may move from the output of ``node`` to its input 0:
    an agnostic op of the settings, not ignored, whose other inputs are constant or integer, whose
    other outputs are unused, and, for a constant-mode Pad, whose pad value is zero."""
    t = node.get_type_name()
    if t not in mm.settings.agnostic_op_types or mm._ignored(node) or any(
            node.output(k).get_target_inputs() for k in range(1, node.get_output_size())):
        return False  # a second output in use (MaxPool-8 indices) would not be quantized
    for inp in list(node.inputs())[1:]:
        src = inp.get_source_output()
        if is_float(src) and not mm.is_constant(src):
            return False
    if t == "Pad" and node.get_attributes().get("pad_mode", "constant") == "constant" and node.get_input_size() > 3:
        value = evaluate_constants([node.input(3).get_source_output()])[0]
        if np.any(np.asarray(value) != 0):
            return False
    return True


def propagate(mm: "MinMaxQuantization", by_output: dict, requantized_ops: Sequence[ov.Node] = ()) -> None:
    """Move per-tensor quantizers up through agnostic ops and onto Concat inputs (see
    ``MinMaxSettings.agnostic_op_types`` and ``unified_scale_types``); once nothing moves, give
    the ops of ``requantized_ops`` an input quantizer where ``requantized_op_types`` says so, and
    move those too.

    :param mm: the planning MinMaxQuantization (its settings, ignored scope, constant test and
        7-bit MatMul operands, which follow a moved quantizer).
    :param by_output: tensor -> :class:`ActivationQuantizer` as planned; updated in place.
        ``mm.unified`` receives the groups of quantizers that share one range.
    :param requantized_ops: AvgPool/ReduceMean/nearest Interpolate ops that may get an input
        quantizer (``MinMaxSettings.requantized_op_types``), downstream first.
    """
    from pot_cli.algorithms.min_max import ActivationQuantizer
    group: dict[int, list[ActivationQuantizer]] = {}

    def join(members: list[ActivationQuantizer]) -> None:
        merged: list[ActivationQuantizer] = []
        for m in members:
            for x in group.get(id(m), [m]):
                if all(x is not y for y in merged):
                    merged.append(x)
        for m in merged:
            group[id(m)] = merged

    def replace(old: ActivationQuantizer, new: ActivationQuantizer) -> None:
        members = group.pop(id(old), None)
        if members is None:
            return
        members[:] = [m for m in members if m is not old]  # the list is shared by the group
        if members:
            join(members + [new])

    def carry(old: ActivationQuantizer, src: ov.Output) -> None:
        if old.output in mm._second_operands:  # a 7-bit MatMul operand stays 7-bit
            mm._second_operands.add(src)
        if old.output in mm._symmetric_outputs:  # so does a symmetric MatMul or attention operand
            mm._symmetric_outputs.add(src)

    def all_consumers_quantized(out: ov.Output, q: ActivationQuantizer) -> bool:
        wanted = {(i.get_node().get_instance_id(), i.get_index()) for i in q.consumers}
        targets = {(i.get_node().get_instance_id(), i.get_index()) for i in out.get_target_inputs()}
        return targets == wanted

    def attach(src: ov.Output, inp: ov.Input) -> ActivationQuantizer | None:
        existing = by_output.get(src)
        if existing is not None:
            if existing.channel_axis is not None:
                return None
            existing.consumers.append(inp)
            return existing
        q = by_output[src] = ActivationQuantizer(
            src, [inp], name=f"{inp.get_node().get_friendly_name()}/fq_input_{inp.get_index()}")
        return q

    requantized: set[int] = set()

    def requantize() -> list[ov.Output]:
        """Input quantizers for the ops of ``requantized_op_types`` whose output is quantized for
        every consumer, when every other consumer of that input reads a quantizer too."""
        added = []
        for node in requantized_ops:
            if node.get_instance_id() in requantized:
                continue
            q_out = by_output.get(node.output(0))
            if q_out is None or not all_consumers_quantized(node.output(0), q_out):
                continue
            src = node.input(0).get_source_output()
            if not is_float(src) or mm.is_constant(src):
                continue
            q_in = by_output.get(src)
            read = {(i.get_node().get_instance_id(), i.get_index()) for i in (q_in.consumers if q_in else [])}
            if all((t.get_node().get_instance_id(), t.get_index()) in read for t in src.get_target_inputs()
                   if t.get_node().get_instance_id() != node.get_instance_id()):
                requantized.add(node.get_instance_id())
                if attach(src, node.input(0)) is not None:
                    added.append(src)
        return added

    work = list(by_output)
    while work or (work := requantize()):
        out = work.pop()
        q = by_output.get(out)
        if q is None or q.channel_axis is not None or not all_consumers_quantized(out, q):
            continue
        node = out.get_node()
        if node.get_type_name() in mm.settings.unified_scale_types and not mm._ignored(node):
            srcs = [i.get_source_output() for i in node.inputs()]
            if not srcs or any(not is_float(s) or mm.is_constant(s) for s in srcs) or any(
                    s in by_output and by_output[s].channel_axis is not None for s in srcs):
                continue
            del by_output[out]
            for s in srcs:
                carry(q, s)
            members = [attach(s, i) for s, i in zip(srcs, node.inputs())]
            join(members)
            replace(q, members[0])
            work.extend(srcs)
        elif commutes(mm, node):
            src = node.input(0).get_source_output()
            if not is_float(src) or mm.is_constant(src) or (
                    src in by_output and by_output[src].channel_axis is not None):
                continue
            del by_output[out]
            carry(q, src)
            if src in by_output:
                target = attach(src, node.input(0))
                replace(q, target)
            else:
                q.output, q.consumers = src, [node.input(0)]
                q.name = f"{node.get_friendly_name()}/fq_input_0"
                by_output[src] = q
            work.append(src)
    alive = {id(q) for q in by_output.values()}
    seen: set[int] = set()
    mm.unified = []
    for members in group.values():
        if id(members) not in seen:
            seen.add(id(members))
            mm.unified.append([m for m in members if id(m) in alive])
