"""DefaultQuantization: MinMaxQuantization followed by FastBiasCorrection, as the original POT.

The original POT's DefaultQuantization started with ActivationChannelAlignment; here the pipeline
runs it first (:mod:`pot_cli.algorithms.channel_alignment`, its own statistics pass) and hands
the aligned model to this class.

Flow (one statistics pass, then edits):

1. plan FakeQuantize placement on the float model (:class:`MinMaxQuantization`), and for
   recurrent ops when ``quantize_recurrent`` is on (:class:`RecurrentQuantization`);
2. plan bias correction for weighted layers with a bias Add (:class:`FastBiasCorrection`);
3. collect every requested statistic in one inference pass (the pipeline does it);
4. compute activation ranges (one range for a recurrent op's X and H), weight codes (GNA: then
   OverflowCorrection, :mod:`pot_cli.algorithms.overflow_correction`) and bias shifts;
5. edit the graph: biases, activation FakeQuantize, INT8 weights (or weight FakeQuantize).
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

import numpy as np
import openvino as ov

from pot_cli.algorithms.bias_correction import BiasCorrection
from pot_cli.algorithms.fast_bias_correction import BiasCorrectionRecord, FastBiasCorrection
from pot_cli.algorithms.min_max import MinMaxQuantization, MinMaxSettings
from pot_cli.algorithms.overflow_correction import OverflowCorrection, OverflowRecord
from pot_cli.algorithms.recurrent import RecurrentQuantization
from pot_cli.graph.insertion import (insert_compressed_weights, insert_fake_quantize, insert_weight_fake_quantize,
                                     replace_constant_input)
from pot_cli.statistics.collector import StatisticRequest, Statistics

log = logging.getLogger("pot")


@dataclass
class QuantizerRecord:
    """One row of the report: a FakeQuantize on an activation, or one quantized weight.

    :param name: friendly name of the FakeQuantize (``<node>/fq_input_<port>``, ``<node>/fq_weights_<port>``).
    :param kind: ``activation`` or ``weights``.
    :param tensor: ``<producer friendly name>:<output port>``.
    :param consumers: ``<node friendly name>:<input port>`` of every consumer.
    :param levels: number of levels.
    :param input_low: per tensor: the bound; per channel: the smallest bound over channels.
    :param input_high: per tensor: the bound; per channel: the largest bound over channels.
    :param channels: 1 per tensor, else number of channels.
    :param observed: aggregated (min, max) statistics of an activation, None for weights.
    """

    name: str
    kind: str
    tensor: str
    consumers: list[str]
    levels: int
    input_low: float
    input_high: float
    channels: int
    observed: tuple[float, float] | None = None


@dataclass
class DefaultQuantizationResult:
    """What DefaultQuantization did: report rows and bias-correction records."""

    quantizers: list[QuantizerRecord] = field(default_factory=list)
    bias_corrections: list[BiasCorrectionRecord] = field(default_factory=list)
    overflow_corrections: list[OverflowRecord] = field(default_factory=list)

    def without(self, reverted: set[str] | frozenset[str], model: ov.Model | None = None) -> "DefaultQuantizationResult":
        """The records after the layer groups ``reverted`` (friendly names) went back to floating
        point: their consumer entries and bias corrections are dropped, and so are quantizers
        left with no consumer or, given the edited ``model``, activation FakeQuantize ops no
        longer in it (bypassed in front of an agnostic op)."""
        def kept(consumer: str) -> bool:
            return consumer.rsplit(":", 1)[0] not in reverted

        present = None if model is None else {op.get_friendly_name() for op in model.get_ops()
                                              if op.get_type_name() == "FakeQuantize"}
        return DefaultQuantizationResult(
            [dataclasses.replace(q, consumers=[c for c in q.consumers if kept(c)])
             for q in self.quantizers if any(kept(c) for c in q.consumers)
             and (present is None or q.kind != "activation" or q.name in present)],
            [b for b in self.bias_corrections if b.layer not in reverted],
            [o for o in self.overflow_corrections if o.layer not in reverted])


def _tensor_name(output: ov.Output) -> str:
    return f"{output.get_node().get_friendly_name()}:{output.get_index()}"


class DefaultQuantization:
    """MinMax placement and ranges, FastBiasCorrection, INT8 weight storage.

    :param settings: MinMaxQuantization settings.
    :param use_fast_bias: run FastBiasCorrection (POT's default: on).
    :param full_bias_correction: run BiasCorrection instead (POT's ``use_fast_bias: false``); it
        needs ``collect`` for its second pass, and falls back to FastBiasCorrection without it.
    :param bias_threshold: the bias corrections' ``threshold``.
    :param compress_weights: store weights as INT8 constants (False keeps float weights behind
        a FakeQuantize, ``--keep-uncompressed-weights``).
    :param collect: ``collect(model, requests) -> Statistics`` runs a calibration pass; needed by
        BiasCorrection's second pass on the quantized model.
    """

    def __init__(self, settings: MinMaxSettings, use_fast_bias: bool = True, bias_threshold: float = 2.0,
                 compress_weights: bool = True, full_bias_correction: bool = False, collect=None):
        self.min_max = MinMaxQuantization(settings)
        self.recurrent = RecurrentQuantization(self.min_max)
        if full_bias_correction and collect is not None:
            self.bias = BiasCorrection(bias_threshold)
        elif use_fast_bias or full_bias_correction:
            self.bias = FastBiasCorrection(bias_threshold)
        else:
            self.bias = None
        self.compress_weights = compress_weights
        self.collect = collect
        #: OverflowCorrection after the weights are computed (GNA, ``settings.overflow_correction``)
        self.overflow = OverflowCorrection(self.min_max) if settings.overflow_correction else None

    def statistic_requests(self, model: ov.Model) -> list[StatisticRequest]:
        """Plan on ``model`` and return every statistic needed (one pass collects them all)."""
        self.min_max.plan(model)
        self.recurrent.plan(model)
        reqs = self.min_max.statistic_requests()
        if self.bias is not None:
            self.bias.plan(self.min_max.weights, self.min_max.is_constant)
            reqs += self.bias.statistic_requests()
        if self.overflow is not None:
            reqs += [r for r in self.overflow.statistic_requests() if r not in reqs]
        return reqs

    def apply(self, model: ov.Model, stats: Statistics) -> DefaultQuantizationResult:
        """Quantize ``model`` in place from ``stats``.

        :param model: the model planned by :meth:`statistic_requests`.
        :param stats: the collected statistics.
        :return: report records.
        """
        result = DefaultQuantizationResult()
        mm = self.min_max
        mm.compute_ranges(stats)
        self.recurrent.unify_ranges()
        mm.compute_weights()
        self.recurrent.unify_weights()
        if self.overflow is not None:
            result.overflow_corrections = self.overflow.apply(stats)
        full_bias = isinstance(self.bias, BiasCorrection)
        if self.bias is not None and not full_bias:
            self.bias.compute(stats)
            result.bias_corrections = self.bias.apply(replace_constant_input)
        for q in mm.activations:
            consumers = [f"{i.get_node().get_friendly_name()}:{i.get_index()}" for i in q.consumers]
            insert_fake_quantize(q.output, q.consumers, q.params, q.name)
            result.quantizers.append(QuantizerRecord(
                q.name, "activation", _tensor_name(q.output), consumers, q.params.levels,
                float(np.min(q.params.input_low)), float(np.max(q.params.input_high)), int(q.params.scale.size), q.stats))
        done: dict[tuple[ov.Output, tuple[int, ...]], ov.Output] = {}
        for w in mm.weights:
            target = w.node.input(w.port)
            name = f"{w.node.get_friendly_name()}/fq_weights_{w.port}"
            key = (w.source, w.keep_axes)
            tensor = _tensor_name(w.source)
            if key in done:  # shared weights: one quantized copy for all consumers
                target.replace_source_output(done[key])
            elif self.compress_weights:
                done[key] = insert_compressed_weights(target, w.codes, w.params, name)
            else:
                done[key] = insert_weight_fake_quantize(target, w.value, w.params, name)
            result.quantizers.append(QuantizerRecord(
                name, "weights", tensor, [f"{w.node.get_friendly_name()}:{w.port}"], w.params.levels,
                float(np.min(w.params.input_low)), float(np.max(w.params.input_high)), int(w.params.scale.size)))
        model.validate_nodes_and_infer_types()
        if full_bias:
            self.bias.compute(self.collect(model, self.bias.followup_requests()))
            result.bias_corrections = self.bias.apply(replace_constant_input)
            model.validate_nodes_and_infer_types()
        return result
