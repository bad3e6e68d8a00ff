"""Quantization of recurrent operations (opt-in: ``quantize_recurrent: true``).

LSTMSequence, GRUSequence, RNNSequence and the LSTMCell, GRUCell, RNNCell ops stay in floating
point by default. With the opt-in, each of them that the device's hardware config lists with a
quantization scheme (``cpu.json``: LSTMSequence, GRUSequence) gets:

* one FakeQuantize on its input ``X`` (port 0) and one on its hidden state ``H`` (port 1), with a
  single range covering both (the hardware config's ``unified_scales``: the CPU runs the cell on
  u8 data with one scale and zero point for ``X`` and ``H``, oneDNN's ``rnn_data_qparams``); the
  cell state ``C`` stays in floating point;
* INT8 weights ``W`` and ``R`` per output channel (axis ``4 * hidden`` of ``(D, 4 * hidden, I)``),
  with one scale per channel shared by ``W`` and ``R`` (``unified_scales`` again; oneDNN's
  ``rnn_weights_qparams``), stored as ``Constant(i8) -> Convert -> Multiply``.

With ``saturation_fix`` (CPUs without VNNI), ``W``/``R`` are stored in 7 bits when the data
quantizer is signed or has a zero point, as for convolutions: measured on an LSTMSequence here
(16 inputs, 32 hidden, AVX2), the largest output error against FP32 fell from 0.62 to 0.21.

The CPU's INT8 LSTM also rounds the hidden state it carries from step to step to the data grid,
so its outputs differ from FP32 more than a FakeQuantize simulation would (mean absolute error
0.024 against 0.003 in the same measurement): the reason this is not the default.

Port layouts (OpenVINO opset5/opset4): LSTMSequence ``X, H, C, seq_lengths, W, R, B``;
GRUSequence and RNNSequence ``X, H, seq_lengths, W, R, B``; LSTMCell ``X, H, C, W, R, B``;
GRUCell and RNNCell ``X, H, W, R, B``. A GRU with ``linear_before_reset`` stays in floating point:
the CPU plugin cannot compile it with quantized inputs.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import openvino as ov

from pot_cli.algorithms.fake_quantize import (compute_activation_params, compute_weight_params, dequantize,
                                              quantize_to_int)
from pot_cli.algorithms.min_max import ActivationQuantizer, MinMaxQuantization, WeightQuantizer
from pot_cli.graph.patterns import is_float

log = logging.getLogger("pot")

#: op type -> (data ports X, H; weight ports W, R)
RECURRENT_PORTS: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "LSTMSequence": ((0, 1), (4, 5)),
    "GRUSequence": ((0, 1), (3, 4)),
    "RNNSequence": ((0, 1), (3, 4)),
    "LSTMCell": ((0, 1), (3, 4)),
    "GRUCell": ((0, 1), (2, 3)),
    "RNNCell": ((0, 1), (2, 3)),
}
RECURRENT_OPS = frozenset(RECURRENT_PORTS)


def recurrent_op_settings(hw) -> tuple[tuple[str, tuple[tuple[int, ...], ...]], ...]:
    """The recurrent op types the hardware config quantizes, with their ``unified_scales`` port
    groups (for ``MinMaxSettings.recurrent_ops``).

    :param hw: a :class:`pot_cli.config.hardware.HardwareConfig`.
    :return: ``((type, ((0, 1), (4, 5))), ...)`` sorted by type; an op without ``unified_scales``
        gets ``()``.
    """
    out = []
    for t in sorted(RECURRENT_OPS & set(hw.quantizable_types())):
        groups = hw.op_spec(t).unified_scales
        groups = tuple(tuple(int(p) for p in g) for g in groups) if isinstance(groups, (list, tuple)) else ()
        out.append((t, groups))
    return tuple(out)


@dataclass
class _Cell:
    node: ov.Node
    data: list[ActivationQuantizer] = field(default_factory=list)
    weights: list[WeightQuantizer] = field(default_factory=list)
    unify_data: bool = True
    unify_weights: bool = True


class RecurrentQuantization:
    """Adds the quantizers of recurrent ops to a planned :class:`MinMaxQuantization` and unifies
    their ranges once computed.

    Use: ``plan(model)`` after ``MinMaxQuantization.plan``; after ``compute_ranges``,
    :meth:`unify_ranges`; after ``compute_weights``, :meth:`unify_weights`.

    :param min_max: the planned MinMaxQuantization (its ``activations`` and ``weights`` lists are
        extended).
    """

    def __init__(self, min_max: MinMaxQuantization):
        self.min_max = min_max
        self.cells: list[_Cell] = []

    def plan(self, model: ov.Model) -> None:
        """Plan the quantizers of every recurrent op the settings allow; log the others once.

        :param model: the model MinMaxQuantization planned on (not modified).
        """
        mm = self.min_max
        allowed = dict(mm.settings.recurrent_ops or ())
        self.cells = []
        kept: dict[str, int] = {}
        for node in model.get_ordered_ops():
            t = node.get_type_name()
            if t not in RECURRENT_OPS:
                continue
            if t not in allowed or mm._ignored(node):
                if not mm._ignored(node):
                    kept[t] = kept.get(t, 0) + 1
                continue
            if node.get_attributes().get("linear_before_reset"):
                # the CPU plugin cannot compile it quantized ("could not create a primitive
                # descriptor for the LBR GRU"); NNCF leaves these out too
                log.info("%s '%s' has linear_before_reset: it stays in floating point (no INT8 kernel on CPU)",
                         t, node.get_friendly_name())
                continue
            cell = self._plan_cell(node, allowed[t])
            if cell is not None:
                self.cells.append(cell)
        if kept:
            what = ", ".join(f"{n} {t}" for t, n in sorted(kept.items()))
            if mm.settings.recurrent_ops is not None:
                log.info("Recurrent ops the hardware config does not quantize stay in floating point: %s", what)
            else:
                log.info("Recurrent ops stay in floating point (%s); set \"quantize_recurrent\": true in the "
                         "algorithm params to quantize them", what)

    def _plan_cell(self, node: ov.Node, groups) -> _Cell | None:
        mm = self.min_max
        data_ports, weight_ports = RECURRENT_PORTS[node.get_type_name()]
        by_output = {q.output: q for q in mm.activations}
        cell = _Cell(node, unify_data=tuple(data_ports) in groups, unify_weights=tuple(weight_ports) in groups)
        for port in weight_ports:
            src = node.input(port).get_source_output()
            shape = src.get_partial_shape()
            if not is_float(src) or not mm.is_constant(src) or shape.is_dynamic:
                log.debug("%s '%s': weights on port %d are not constant; it stays in floating point",
                          node.get_type_name(), node.get_friendly_name(), port)
                return None
        new: list[ActivationQuantizer] = []
        links: list[tuple[ActivationQuantizer, ov.Input]] = []
        for port in data_ports:
            inp = node.input(port)
            src = inp.get_source_output()
            if not is_float(src) or mm.is_constant(src):
                continue
            q = by_output.get(src)
            if q is not None and q.channel_axis is not None:
                log.debug("%s '%s': input %d is quantized per channel elsewhere; it stays in floating point",
                          node.get_type_name(), node.get_friendly_name(), port)
                return None
            if q is None:
                q = ActivationQuantizer(src, name=f"{node.get_friendly_name()}/fq_input_{port}")
                new.append(q)
                by_output[src] = q
            links.append((q, inp))
        if not links:
            return None
        for q, inp in links:
            q.consumers.append(inp)
            if all(q is not d for d in cell.data):
                cell.data.append(q)
        mm.activations.extend(new)
        for port in weight_ports:
            src = node.input(port).get_source_output()
            rank = src.get_partial_shape().rank.get_length()
            keep = tuple(range(rank - 1)) if mm.settings.weight_per_channel else ()
            w = WeightQuantizer(node, port, src, keep)
            mm.weights.append(w)
            cell.weights.append(w)
        return cell

    def unify_ranges(self) -> None:
        """Give ``X`` and ``H`` of each cell one range covering both (after ``compute_ranges``)."""
        mm = self.min_max
        for cell in self.cells:
            if not cell.unify_data or len(cell.data) < 2 or any(q.stats is None for q in cell.data):
                continue
            lo = min(q.stats[0] for q in cell.data)
            hi = max(q.stats[1] for q in cell.data)
            params = compute_activation_params(lo, hi, mm._mode_for(lo, hi), mm.settings.activation_bits)
            for q in cell.data:
                q.stats, q.params = (lo, hi), params

    def unify_weights(self) -> None:
        """Recompute ``W`` and ``R`` of each cell with one scale per output channel for both
        (after ``compute_weights``), in 7 bits where the saturation fix asks for it."""
        s = self.min_max.settings
        for cell in self.cells:
            w, r = cell.weights
            if w.value is None or r.value is None:
                continue
            signed = any(q.params is not None and (q.params.signed or np.any(q.params.zero_point != 0))
                         for q in cell.data)
            narrow = s.weight_bits == 8 and (s.saturation_fix == "all"
                                             or (s.saturation_fix == "first_layer" and signed))
            bits = s.weight_bits - 1 if narrow else s.weight_bits
            if cell.unify_weights and w.keep_axes == r.keep_axes and w.value.shape[:-1] == r.value.shape[:-1]:
                params = compute_weight_params(np.concatenate([w.value, r.value], axis=-1), w.keep_axes,
                                               mode=s.weight_mode, bits=bits, narrow_range=True)
                pairs = [(w, params), (r, params)]
            else:
                pairs = [(q, compute_weight_params(q.value, q.keep_axes, mode=s.weight_mode, bits=bits,
                                                   narrow_range=True)) for q in (w, r)]
            for q, params in pairs:
                q.params = params
                q.codes = quantize_to_int(q.value, params)
                q.dequantized = dequantize(q.codes, params)
