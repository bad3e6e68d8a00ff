"""AccuracyAwareQuantization: the fastest model whose metric drop stays within ``maximal_drop``.

As the original POT:

1. the FP32 baseline is evaluated once (or taken from ``metrics[*].baseline_value``), and its
   outputs are kept for the per-sample comparisons;
2. the model is quantized with the base algorithm (DefaultQuantization or MinMaxQuantization)
   and evaluated on the whole evaluation set; if the drop holds, that model is the result;
3. optionally (``convert_to_mixed_preset``) the mixed preset is tried, and (``tune_hyperparams``)
   a few activation range estimators are compared on the ranking subset;
4. otherwise quantized *layer groups* (a weighted op or residual Add together with the
   FakeQuantize ops on its inputs and its INT8 weights) are ranked: the ranking subset is the
   ``ranking_subset_size`` samples where the current model is most degraded against FP32 (per-
   sample metric difference, then output distance); each group is reverted alone, and the
   candidate is scored by the metric on that subset (ties: the normalised squared distance of its
   outputs to FP32's, ``sum (y - y_fp)^2 / sum y_fp^2``);
5. the most harmful group is reverted and the model evaluated on the whole set; a revert that
   makes the drop larger is rolled back (``use_prev_if_drop_increase``) and the next group of the
   ranking is tried; after a kept revert that lowered the drop the same ranking goes on, after
   one that did not the remaining groups are ranked again on the new model (as the original POT
   re-ranked). The loop stops when the drop holds, after ``max_iter_num`` iterations (revert
   attempts), or when nothing is left to revert; when the target is not met the best model
   found (smallest drop, then fewest reverted groups) is returned.

Reverting a group edits a clone of the current quantized model (:func:`revert_group`), as the
original POT removed FakeQuantize ops: the group's input FakeQuantize ops are bypassed for it,
its INT8 weights are replaced by the FP32 ones and a bias changed by bias correction is restored.
A candidate then costs one graph edit, one compilation and its inference; re-running the base
algorithm with the group in ``ignored_scope`` would give the same model but cost three more
compilations (weights, biases, bias shifts) per candidate. The statistics are collected once and
looked up by node for the other base-algorithm variants (mixed preset, tuned ranges).

GNA (``target_device`` GNA, GNA3, GNA3.5; the original POT's AccuracyAwareGNA): a layer is not
put back in floating point but *switched* from 8 to 16 bits. The groups are the weighted layers
whose weights are 8-bit in the ``performance`` preset model (GNA: MatMul; GNA3/GNA3.5 also
Convolution, whose input FakeQuantize is switched to 16 bits with its weights, as GNA3 runs
convolutions 8x8 or 16x16); the 16-bit ``accuracy`` preset model (every weighted layer with
16-bit per-tensor weights, 16-bit inputs) is quantized once from the same statistics, and a
switch copies that model's weights, bias (bias correction for the 16-bit weights) and input
FakeQuantize into the layer (:func:`switch_group`). The baseline the drop is measured against is
that 16-bit model's metric, as the original's (the FP32 metric is reported beside it as
``fp32_metrics``), and the per-sample ranking compares against the 16-bit model's outputs. Only
preset ``performance`` is accepted (``mixed``, or POT's ``accuracy``, has nothing 8-bit to
switch); ``convert_to_mixed_preset`` and ``annotation_free`` are not used, as in the original.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from pot_cli.algorithms.default import DefaultQuantization, DefaultQuantizationResult
from pot_cli.algorithms.min_max import MinMaxSettings, carries_quantized
from pot_cli.algorithms.settings import GNA_DEVICES
from pot_cli.config.model import QuantizationParams
from pot_cli.engines.evaluator import Evaluation, Evaluator
from pot_cli.engines.metrics import Metric
from pot_cli.errors import ConfigError, NotSupportedError
from pot_cli.graph.model import is_constant_subgraph
from pot_cli.statistics.collector import StatisticRequest, Statistics

log = logging.getLogger("pot")

#: collects ``requests`` on ``model`` over the calibration subset
CollectFn = Callable[[ov.Model, list[StatisticRequest]], Statistics]


@dataclass
class Variant:
    """One quantized model: the base algorithm with ``reverted`` groups kept in floating point."""

    reverted: frozenset[str]
    settings_name: str
    model: ov.Model
    result: DefaultQuantizationResult
    groups: tuple[str, ...]
    compiled: ov.CompiledModel | None = None
    outputs: dict[int, np.ndarray] = field(default_factory=dict)
    evaluation: Evaluation | None = None
    drop: dict[str, float] = field(default_factory=dict)


@dataclass
class AccuracyAwareResult:
    """What AccuracyAwareQuantization found.

    :param model: the model to save (target met: the first that met it; else the best found).
    :param quantization: the base algorithm's records for that model (report rows).
    :param target_met: whether every metric's drop is within its limit.
    :param reverted: layer groups (node friendly names) kept in floating point by the search, in
        the order they were reverted (the user's ``ignored`` scope is not listed).
    :param evaluation: the final model's evaluation on the whole evaluation set.
    :param report: the ``accuracy_aware`` section of ``report.json``.
    :param switched: GNA: the layers switched from 8-bit to 16-bit quantization, in order
        (``reverted`` is then empty).
    """

    model: ov.Model
    quantization: DefaultQuantizationResult
    target_met: bool
    reverted: list[str]
    evaluation: Evaluation
    report: dict
    switched: list[str] = field(default_factory=list)


def _flat(output) -> np.ndarray:
    """One sample's output as a float64 vector: an array, or every array of a
    ``{output name: array}`` dict (the API engine's outputs) one after the other."""
    if hasattr(output, "arrays"):  # every output of a decoding adapter (engines.ac.base.Outputs)
        return np.concatenate([np.asarray(v, np.float64).ravel() for v in output.arrays])
    if isinstance(output, dict):
        return np.concatenate([np.asarray(v, np.float64).ravel() for v in output.values()])
    return np.asarray(output, np.float64).ravel()


def _nmse(y, ref) -> float:
    """``sum (y - ref)^2 / sum ref^2`` over one sample's output (0 for identical outputs)."""
    y, ref = _flat(y), _flat(ref)
    return float(np.sum((y - ref) ** 2) / max(float(np.sum(ref * ref)), 1e-12))


def _reconnect(inp: ov.Input, source: ov.Output) -> None:
    """The default ``connect`` of :func:`revert_group`: ``inp`` reads ``source``."""
    inp.replace_source_output(source)


def _bypass_fake_quantize(inp: ov.Input, connect: Callable[[ov.Input, ov.Output], None] = _reconnect) -> None:
    """Make ``inp`` read float data: bypass the FakeQuantize feeding it, or, when quantization was
    moved up through agnostic ops (MaxPool, Reshape, Concat...) that only ``inp`` reads, the
    FakeQuantize ops in front of those ops (``connect(input, float source)`` makes each edit)."""
    src = inp.get_source_output()
    node = src.get_node()
    t = node.get_type_name()
    if t == "FakeQuantize":
        connect(inp, node.input_value(0))
    elif carries_quantized(node) and len(src.get_target_inputs()) == 1 and not any(
            node.output(k).get_target_inputs() for k in range(node.get_output_size()) if k != src.get_index()):
        for upstream in (node.inputs() if t == "Concat" else [node.input(0)]):
            _bypass_fake_quantize(upstream, connect)


def _groups(model: ov.Model, result: DefaultQuantizationResult) -> tuple[str, ...]:
    """Friendly names of the quantized layers, in topological order: the ops that read a
    quantizer, or read it through agnostic ops and Concat (a quantizer moved in front of a
    MaxPool or Transpose belongs to the layer after it)."""
    names = {c.rsplit(":", 1)[0] for q in result.quantizers if q.kind == "activation" for c in q.consumers}
    ordered = model.get_ordered_ops()
    # weighted layers are groups; an embedding table stored as INT8 (a Gather) is not a layer
    found: set[str] = {c.rsplit(":", 1)[0] for q in result.quantizers if q.kind == "weights" for c in q.consumers}
    found -= {op.get_friendly_name() for op in ordered if op.get_type_name() == "Gather"}
    stack = [op for op in ordered if op.get_friendly_name() in names]
    seen: set[int] = set()
    while stack:
        op = stack.pop()
        if op.get_instance_id() in seen:
            continue
        seen.add(op.get_instance_id())
        if op.get_type_name() == "Result":
            continue
        if not carries_quantized(op):
            found.add(op.get_friendly_name())
            continue
        stack.extend(t.get_node() for out in op.outputs() for t in out.get_target_inputs())
    return tuple(op.get_friendly_name() for op in ordered if op.get_friendly_name() in found)


def group_ops(model: ov.Model, result: DefaultQuantizationResult) -> dict[str, ov.Node]:
    """Friendly name -> op of the ops that read a quantizer, in topological order."""
    names = set(_groups(model, result))
    return {op.get_friendly_name(): op for op in model.get_ordered_ops() if op.get_friendly_name() in names}


def revert_group(model: ov.Model, group: str, fp_ops: dict[str, ov.Node],
                 is_fp_constant: Callable[[ov.Output], bool],
                 connect: Callable[[ov.Input, ov.Output], None] = _reconnect,
                 ops_by_name: dict[str, ov.Node] | None = None) -> None:
    """Put layer group ``group`` of a quantized ``model`` back in floating point, in place.

    The FakeQuantize ops on the group's activation inputs are bypassed for this op only (another
    consumer of a shared FakeQuantize keeps it), its weight input reads the FP32 model's weight
    sub-graph again, and a bias changed by bias correction reads the FP32 bias again (those
    constant nodes are shared with the FP32 model, which is never edited: later edits work on
    clones). The original POT reverted a group the same way (removing its FakeQuantize ops).

    :param model: a model quantized from the FP32 model whose ops are ``fp_ops``.
    :param group: friendly name of a quantized op (Convolution, MatMul, residual Add...).
    :param fp_ops: friendly name -> op of the FP32 model.
    :param is_fp_constant: predicate on an FP32 output: a constant sub-graph (weights, bias).
    :param connect: makes each edit, ``connect(input, float source)``; default: the input reads
        the float source (the sensitivity analysis puts a switch between both instead).
    :param ops_by_name: friendly name -> op of ``model``, when several groups are reverted in a
        row: each call then neither scans nor re-validates the model (the caller validates once
        after the last; 81 groups of ppocrv4_det took 0.9 s the other way).
    """
    if ops_by_name is None:
        node = next(op for op in model.get_ops() if op.get_friendly_name() == group)
    else:
        node = ops_by_name[group]
    fp = fp_ops[group]
    for port in range(node.get_input_size()):
        inp, fp_src = node.input(port), fp.input(port).get_source_output()
        src = inp.get_source_output()
        if is_fp_constant(fp_src):
            if src.get_node().get_friendly_name() != fp_src.get_node().get_friendly_name():
                connect(inp, fp_src)
        else:
            _bypass_fake_quantize(inp, connect)
    for target in node.output(0).get_target_inputs():
        add = target.get_node()
        fp_add = fp_ops.get(add.get_friendly_name())
        if add.get_type_name() != "Add" or fp_add is None or fp_add.get_type_name() != "Add":
            continue
        other = 1 - target.get_index()
        fp_bias = fp_add.input(other).get_source_output()
        if is_fp_constant(fp_bias) and \
                add.input(other).get_source_output().get_node().get_friendly_name() != fp_bias.get_node().get_friendly_name():
            connect(add.input(other), fp_bias)
    if ops_by_name is None:
        model.validate_nodes_and_infer_types()


def check_gna_preset(params: QuantizationParams, source: str = "compression.algorithms[0].params") -> None:
    """GNA targets need preset ``performance`` (the original's AccuracyAwareGNA).

    :raises ConfigError: naming the key, for ``mixed`` (POT's ``accuracy`` is read as ``mixed``).
    """
    if params.target_device in GNA_DEVICES and params.preset != "performance":
        raise ConfigError(
            f"{source}.preset: '{params.preset}' is not supported by AccuracyAwareQuantization with target_device "
            f"{params.target_device} (POT's 'accuracy' preset reads as 'mixed'): it switches layers from 8-bit to "
            "16-bit quantization, so it starts from the 8-bit preset; expected preset 'performance'")


#: weighted ops whose input FakeQuantize switches to 16 bits with their weights on GNA3/GNA3.5
_GNA3_CONVOLUTIONS = frozenset({"Convolution", "GroupConvolution"})


def switchable_groups(model: ov.Model, result: DefaultQuantizationResult) -> tuple[str, ...]:
    """GNA: friendly names of the weighted ops whose weights are quantized with at most 8 bits
    (256 levels), in topological order."""
    eight = {c.rsplit(":", 1)[0] for q in result.quantizers if q.kind == "weights" and q.levels <= 256
             for c in q.consumers}
    return tuple(op.get_friendly_name() for op in model.get_ordered_ops()
                 if op.get_friendly_name() in eight and op.get_type_name() != "Gather")


def switch_group(model: ov.Model, group: str, wide_ops: dict[str, ov.Node], target_device: str,
                 is_wide_constant: Callable[[ov.Output], bool]) -> list[str]:
    """Switch layer group ``group`` of a quantized ``model`` from 8-bit to 16-bit quantization, in place.

    The op's constant inputs (its weights: INT16 constant, Convert, scale Multiply, or a
    65535-level FakeQuantize with ``--keep-uncompressed-weights``) and a bias Add's constant are
    read from the 16-bit ``accuracy`` preset model instead (those nodes are shared with it; it is
    never edited). On GNA3/GNA3.5 a Convolution's data input gets its own FakeQuantize with that
    model's 16-bit bounds and levels (a FakeQuantize shared with other consumers keeps serving
    them); a quantizer moved in front of a MaxPool or Reshape is left 8-bit (logged).

    :param model: a model quantized with preset ``performance`` from the float model the
        ``accuracy`` preset model was quantized from.
    :param group: friendly name of a weighted op with 8-bit weights.
    :param wide_ops: friendly name -> op of the 16-bit (``accuracy`` preset) model.
    :param target_device: GNA, GNA3 or GNA3.5.
    :param is_wide_constant: predicate on an output of the 16-bit model: a constant sub-graph.
    :return: names of the new input FakeQuantize ops (GNA3/GNA3.5 convolutions), else empty.
    """
    node = next(op for op in model.get_ops() if op.get_friendly_name() == group)
    wide = wide_ops[group]
    added = []
    for port in range(node.get_input_size()):
        inp, wide_src = node.input(port), wide.input(port).get_source_output()
        if is_wide_constant(wide_src):
            inp.replace_source_output(wide_src)
            continue
        if target_device == "GNA" or node.get_type_name() not in _GNA3_CONVOLUTIONS:
            continue
        fq, wide_fq = inp.get_source_output().get_node(), wide_src.get_node()
        if fq.get_type_name() != "FakeQuantize" or wide_fq.get_type_name() != "FakeQuantize":
            log.info("%s: its input quantizer is not right in front of it; the input stays 8-bit", group)
            continue
        new = ops.fake_quantize(fq.input_value(0), *(wide_fq.input_value(k) for k in range(1, 5)),
                                wide_fq.get_attributes()["levels"])
        name = f"{group}/fq_input_{port}_16bit"
        new.set_friendly_name(name)
        inp.replace_source_output(new.output(0))
        added.append(name)
    for target in node.output(0).get_target_inputs():
        add = target.get_node()
        wide_add = wide_ops.get(add.get_friendly_name())
        if add.get_type_name() != "Add" or wide_add is None or wide_add.get_type_name() != "Add":
            continue
        other = 1 - target.get_index()
        wide_bias = wide_add.input(other).get_source_output()
        if is_wide_constant(wide_bias):
            add.input(other).replace_source_output(wide_bias)
    model.validate_nodes_and_infer_types()
    return added


class AccuracyAwareQuantization:
    """Greedy reverting of quantized layer groups until ``maximal_drop`` holds.

    :param params: the algorithm's params (``maximal_drop``, ``drop_type``, ``base_algorithm``,
        ``ranking_subset_size``, ``max_iter_num``, ``metric_subset_ratio``,
        ``use_prev_if_drop_increase``, ``convert_to_mixed_preset``, ``metrics``,
        ``annotation_free``, ``annotation_conf_threshold``, ``tune_hyperparams``, plus the base
        algorithm's).
    :param settings: MinMaxQuantization settings of the base algorithm (the preset's).
    :param evaluator: evaluates models on the evaluation dataset.
    :param collect: collects statistics on the calibration subset (called once, and again only
        when a scope change needs a statistic not collected yet).
    :param mixed_settings: the settings of the ``mixed`` preset (``convert_to_mixed_preset``).
    :param compress_weights: store weights as INT8 constants (as the saved model will).
    :param progress: show a tqdm bar over the iterations (``stream``: one line per update).
    :param accuracy_settings: GNA targets: the settings of the 16-bit ``accuracy`` preset (the
        baseline model and the source of switched layers); default: made from the hardware config.
    :raises ConfigError: a GNA target with a preset other than ``performance``.
    """

    def __init__(self, params: QuantizationParams, settings: MinMaxSettings, evaluator: Evaluator,
                 collect: CollectFn, mixed_settings: MinMaxSettings | None = None, compress_weights: bool = True,
                 progress: bool = False, stream: bool = False, accuracy_settings: MinMaxSettings | None = None):
        self.params = params
        self.settings = {"base": settings}
        #: GNA: layers switch from 8 to 16 bits instead of going back to floating point
        self.gna = params.target_device in GNA_DEVICES
        if self.gna:
            check_gna_preset(params)
            if accuracy_settings is None:
                from pot_cli.algorithms.settings import create_min_max_settings
                from pot_cli.config import load_hardware_config

                accuracy_settings = dataclasses.replace(
                    create_min_max_settings(dataclasses.replace(params, preset="mixed"),
                                            load_hardware_config(params.target_device), settings.config_source),
                    ignored_scope=settings.ignored_scope)
            self.settings["accuracy"] = accuracy_settings
        elif mixed_settings is not None and params.convert_to_mixed_preset and settings.activation_mode == "symmetric":
            self.settings["mixed"] = mixed_settings
        self.evaluator = evaluator
        self.collect = collect
        self.compress_weights = compress_weights
        self.progress, self.stream = progress, stream
        self._fp: ov.Model | None = None
        self._stats: dict[tuple, np.ndarray] = {}
        self._n_samples = 0
        self._variants: dict[tuple[frozenset[str], str], Variant] = {}
        self.report: dict = {}

    # -- base algorithm on a clone, statistics by node

    def _algorithm(self, settings: MinMaxSettings) -> DefaultQuantization:
        return DefaultQuantization(settings,
                                   use_fast_bias=self.params.use_fast_bias
                                   and self.params.base_algorithm == "DefaultQuantization",
                                   bias_threshold=self.params.threshold, compress_weights=self.compress_weights)

    @staticmethod
    def _keys(model: ov.Model, requests: list[StatisticRequest]) -> list[tuple]:
        """A clone-independent key per request: (position of the producer in topological order,
        its friendly name, output index, reduction, channel axis, outlier probability)."""
        position = {op.get_instance_id(): k for k, op in enumerate(model.get_ordered_ops())}
        return [(position[r.output.get_node().get_instance_id()], r.output.get_node().get_friendly_name(),
                 r.output.get_index(), r.reduction, r.channel_axis, r.outlier_prob) for r in requests]

    def statistic_requests(self, model: ov.Model) -> list[StatisticRequest]:
        """Every statistic the fully quantized model needs (planned on ``model``, not modified)."""
        self._fp = model
        self._requests = self._algorithm(self.settings["base"]).statistic_requests(model)
        if self.gna:  # the 16-bit model's (its OverflowCorrection reads more layer outputs)
            more = self._algorithm(self.settings["accuracy"]).statistic_requests(model)
            self._requests += [r for r in more if r not in self._requests]
        return list(self._requests)

    def _statistics(self, model: ov.Model, requests: list[StatisticRequest]) -> Statistics:
        keys = self._keys(model, requests)
        missing = [r for r, k in zip(requests, keys) if k not in self._stats]
        if missing:
            log.info("Collecting %d more statistic(s) for the changed quantization scope", len(missing))
            fresh = self.collect(model, missing)
            for r, k in zip(missing, self._keys(model, missing)):
                self._stats[k] = fresh.get(r.output, r.reduction, r.channel_axis, r.outlier_prob)
            self._n_samples = self._n_samples or fresh.n_samples
        values = {(r.output, r.reduction, r.channel_axis, r.outlier_prob): self._stats[k]
                  for r, k in zip(requests, keys)}
        return Statistics(values, self._n_samples)

    def _variant(self, settings_name: str) -> Variant:
        """The base algorithm with the settings ``settings_name`` on a clone of the FP32 model."""
        key = (frozenset(), settings_name)
        if key in self._variants:
            return self._variants[key]
        model = self._fp.clone()
        algorithm = self._algorithm(self.settings[settings_name])
        requests = algorithm.statistic_requests(model)
        result = algorithm.apply(model, self._statistics(model, requests))
        groups = switchable_groups(model, result) if self.gna else _groups(model, result)
        variant = Variant(frozenset(), settings_name, model, result, groups)
        self._variants[key] = variant
        return variant

    def _child(self, parent: Variant, group: str) -> Variant:
        """``parent`` with ``group`` reverted to floating point (a clone of ``parent`` edited)."""
        key = (parent.reverted | {group}, parent.settings_name)
        if key in self._variants:
            return self._variants[key]
        model = parent.model.clone()
        reverted = parent.reverted | {group}
        if self.gna:
            added = switch_group(model, group, self._wide_ops, self.params.target_device, self._wide_constant)
            result = self._switched_result(parent.result, group, added)
        else:
            revert_group(model, group, self._fp_ops, self._fp_constant)
            result = parent.result.without(reverted, model)
        variant = Variant(reverted, parent.settings_name, model, result,
                          tuple(g for g in parent.groups if g != group))
        self._variants[key] = variant
        return variant

    def _switched_result(self, result: DefaultQuantizationResult, group: str,
                         added: list[str]) -> DefaultQuantizationResult:
        """The report records after ``group`` switched to 16 bits: its weight rows and bias
        correction come from the 16-bit model, and a new input FakeQuantize gets its row."""
        wide = self._wide.result
        mine = lambda c: c.rsplit(":", 1)[0] == group  # noqa: E731
        rows = []
        for q in result.quantizers:
            if q.kind == "weights" and any(mine(c) for c in q.consumers):
                continue
            if q.kind == "activation" and added and any(mine(c) for c in q.consumers):
                q = dataclasses.replace(q, consumers=[c for c in q.consumers if not mine(c)])
                if not q.consumers:
                    continue
            rows.append(q)
        rows += [q for q in wide.quantizers if q.kind == "weights" and any(mine(c) for c in q.consumers)]
        for name in added:
            port = name.rsplit("fq_input_", 1)[1].split("_", 1)[0]
            src = next((q for q in wide.quantizers if q.kind == "activation" and f"{group}:{port}" in q.consumers), None)
            if src is not None:
                rows.append(dataclasses.replace(src, name=name, consumers=[f"{group}:{port}"]))
        biases = [b for b in result.bias_corrections if b.layer != group] + \
            [b for b in wide.bias_corrections if b.layer == group]
        overflow = [o for o in result.overflow_corrections if o.layer != group] + \
            [o for o in wide.overflow_corrections if o.layer == group]
        return DefaultQuantizationResult(rows, biases, overflow)

    def _forget(self, keep: list[Variant]) -> None:
        """Drop cached variants (models, compiled models, outputs) other than ``keep``."""
        ids = {id(v) for v in keep}
        self._variants = {k: v for k, v in self._variants.items() if id(v) in ids}

    # -- evaluation

    def _infer(self, variant: Variant, indices: list[int], evaluator: Evaluator) -> dict[int, np.ndarray]:
        if variant.compiled is None:
            variant.compiled = evaluator.compile(variant.model)
        todo = [i for i in indices if i not in variant.outputs]
        if todo:
            variant.outputs.update(evaluator.infer(variant.compiled, todo))
        return variant.outputs

    def _evaluate(self, variant: Variant) -> Variant:
        if variant.evaluation is None:
            t = time.perf_counter()
            outputs = self._infer(variant, self._eval_indices, self._ev)
            variant.evaluation = self._ev.score(outputs, self._eval_indices)
            variant.evaluation.time_s = time.perf_counter() - t
            variant.drop = {m.name: m.drop(self.baseline[m.name], variant.evaluation.metrics[m.name])
                            for m in self.metrics}
        return variant

    def _met(self, variant: Variant) -> bool:
        return all(variant.drop[m.name] <= self.max_drop[m.name] + 1e-12 for m in self.metrics)

    def _excess(self, variant: Variant, metric: Metric) -> float:
        scale = abs(self.baseline[metric.name]) or 1.0
        return (variant.drop[metric.name] - self.max_drop[metric.name]) / scale

    def _worst_metric(self, variant: Variant) -> Metric:
        return max(self.metrics, key=lambda m: self._excess(variant, m))

    def _badness(self, variant: Variant) -> tuple[float, int]:
        return (sum(max(0.0, self._excess(variant, m)) for m in self.metrics)
                + 1e-9 * sum(self._excess(variant, m) for m in self.metrics), len(variant.reverted))

    # -- ranking

    def _ranking_subset(self, variant: Variant, metric: Metric) -> list[int]:
        idx = self._diff_indices
        q = variant.evaluation
        pos = {i: k for k, i in enumerate(q.indices)}
        q_ps = np.array([q.per_sample[metric.name][pos[i]] for i in idx])
        # NaN where the metric gives no per-sample value (then only the output distance ranks)
        degradation = np.nan_to_num(np.array([metric.drop(f, v) for f, v in
                                              zip(self._fp_per_sample[metric.name], q_ps)], dtype=np.float64))
        distance = np.array([_nmse(variant.outputs[i], self._fp_outputs[i]) for i in idx])
        order = np.lexsort((-distance, -degradation))  # most degraded first, then farthest from FP32
        size = min(self.params.ranking_subset_size, len(idx))
        return sorted(idx[k] for k in order[:size])

    def _rank(self, current: Variant, metric: Metric, exclude: set[str], iteration: int) -> list[str]:
        """Groups of ``current`` by the harm they do, most harmful first."""
        candidates = [g for g in current.groups if g not in exclude]
        if not candidates:
            return []
        subset = self._ranking_subset(current, metric)
        t = time.perf_counter()
        rows, best = [], None
        for g in candidates:
            cand = self._child(current, g)
            outputs = self._infer(cand, subset, self._ev)
            value = self._ev.score(outputs, subset, per_sample=False).metrics[metric.name]
            distance = float(np.mean([_nmse(outputs[i], self._fp_outputs[i]) for i in subset]))
            rows.append({"layer": g, "type": self._types.get(g, ""), metric.name: value, "distance": distance})
            key = (value if metric.higher_better else -value, -distance)
            if best is None or key > best[0]:
                best = (key, cand)
            self._forget([current, best[1], *self._keep])  # keep the likely next step for reuse
        rows.sort(key=lambda r: (-(r[metric.name] if metric.higher_better else -r[metric.name]), r["distance"],
                                 r["layer"]))
        self.report["rankings"].append({"iteration": iteration, "metric": metric.name, "subset_size": len(subset),
                                        "time_s": round(time.perf_counter() - t, 3), "scores": rows})
        log.info("Ranked %d layer group(s) on %d samples: %s", len(rows), len(subset),
                 ", ".join(r["layer"] for r in rows[:5]) + (" ..." if len(rows) > 5 else ""))
        return [r["layer"] for r in rows]

    # -- baseline

    def _baseline(self) -> None:
        p = self.params
        ev = self.evaluator
        available = {m.name: m for m in ev.metrics}
        if p.metrics:
            unknown = [m.name for m in p.metrics if m.name not in available]
            if unknown:
                raise ConfigError(f"AccuracyAwareQuantization metrics: {', '.join(unknown)} not computed by the "
                                  f"engine; expected one of: {', '.join(available)}")
            self.metrics = [available[m.name] for m in p.metrics]
        else:
            self.metrics = list(ev.metrics)
        n = len(ev.dataset)
        given = {m.name: m.baseline_value for m in p.metrics if m.baseline_value is not None}
        use_given = bool(p.metrics) and len(given) == len(self.metrics) and not p.annotation_free
        if use_given:
            size = int(n * p.metric_subset_ratio)
            rng = np.random.default_rng(p.seed)
            self._diff_indices = sorted(rng.permutation(n)[:size].tolist()) if 0 < size < n else list(range(n))
        else:
            self._diff_indices = list(range(n))
        t = time.perf_counter()
        fp = ev.compile(self._fp)
        self._fp_outputs = ev.infer(fp, self._diff_indices)
        self._eval_indices = list(range(n))
        self._ev = ev
        if p.annotation_free and self.gna:
            log.warning("annotation_free is not used with target_device %s (as in the original POT): the "
                        "baseline is the 16-bit model's metric on the annotated data", p.target_device)
        elif p.annotation_free:
            if not getattr(ev, "supports_annotation_free", True):
                raise NotSupportedError(f"{type(ev).__name__}: annotation_free needs the accuracy_checker engine; "
                                        "expected annotation_free: false with an API engine")
            self._annotation_free()
        fp_eval = self._ev.score(self._fp_outputs, self._diff_indices)
        self._fp_per_sample = {m.name: fp_eval.per_sample[m.name] for m in self.metrics}
        measured = {m.name: fp_eval.metrics[m.name] for m in self.metrics}
        if self.gna:
            # the original's AccuracyAwareGNA: the reference is the 16-bit 'accuracy' preset model
            self.report["fp32_metrics"] = dict(measured)
            log.info("FP32 metrics: %s", _fmt(measured))
            self._wide = self._variant("accuracy")
            self._wide_ops = {op.get_friendly_name(): op for op in self._wide.model.get_ops()}
            wide_cache: dict = {}
            self._wide_constant = lambda output: is_constant_subgraph(output, wide_cache)
            outputs = self._infer(self._wide, self._diff_indices, self._ev)
            wide_eval = self._ev.score(outputs, self._diff_indices)
            self._fp_outputs = {i: outputs[i] for i in self._diff_indices}
            self._fp_per_sample = {m.name: wide_eval.per_sample[m.name] for m in self.metrics}
            measured = {m.name: wide_eval.metrics[m.name] for m in self.metrics}
        self.baseline = dict(given) if use_given else measured
        scale = {m.name: abs(self.baseline[m.name]) if p.drop_type == "relative" else 1.0 for m in self.metrics}
        self.max_drop = {m.name: p.maximal_drop * scale[m.name] for m in self.metrics}
        self.report.update(baseline=self.baseline,
                           baseline_source="config" if use_given else
                           "measured: 16-bit accuracy preset model" if self.gna else "measured",
                           max_drop=self.max_drop, evaluation_samples=len(self._eval_indices),
                           per_sample_subset=len(self._diff_indices), baseline_time_s=round(time.perf_counter() - t, 3))
        log.info("Baseline (%s) metrics: %s", "16-bit accuracy preset model" if self.gna else "FP32",
                 _fmt(self.baseline))

    def _annotation_free(self) -> None:
        """Annotations from the FP32 model: its top-1 class where softmax confidence reaches
        ``annotation_conf_threshold`` (other samples are left out), its outputs for regression."""
        kinds = {m.annotation_kind for m in self.metrics} - {"label", "regression"}
        if kinds:
            raise NotSupportedError(f"annotation_free: metrics of {', '.join(sorted(kinds))} annotations are not "
                                    "supported; expected annotation_free: false with annotated data")
        labels: list = [None] * len(self.evaluator.dataset)
        keep = []
        for i in self._diff_indices:
            y = np.asarray(self._fp_outputs[i], np.float64).ravel()
            if all(m.annotation_kind == "regression" for m in self.metrics):
                labels[i] = y
                keep.append(i)
                continue
            e = np.exp(y - y.max())
            conf = e / e.sum()
            if conf.max() >= self.params.annotation_conf_threshold:
                labels[i] = int(np.argmax(y))
                keep.append(i)
        if not keep:
            raise ConfigError(f"annotation_conf_threshold {self.params.annotation_conf_threshold}: no sample "
                              "reaches it; expected a lower threshold")
        log.info("Annotation-free: %d of %d samples labelled by the FP32 model", len(keep), len(self._diff_indices))
        self._ev = self.evaluator.with_annotations(labels)
        self._eval_indices = self._diff_indices = keep

    # -- the search

    def apply(self, model: ov.Model, stats: Statistics) -> AccuracyAwareResult:
        """Run the search.

        :param model: the FP32 model given to :meth:`statistic_requests` (not modified).
        :param stats: the statistics collected for the requests it returned.
        :return: the result (the model to save is a new, quantized model).
        """
        self._fp = model
        self._n_samples = stats.n_samples
        for r, k in zip(self._requests, self._keys(model, self._requests)):
            self._stats[k] = stats.get(r.output, r.reduction, r.channel_axis, r.outlier_prob)
        p = self.params
        self.report = {"maximal_drop": p.maximal_drop, "drop_type": p.drop_type, "base_algorithm": p.base_algorithm,
                       "steps": [], "rankings": []}
        self._keep: list[Variant] = []
        self._order: list[str] = []
        t0 = time.perf_counter()
        ev = self.evaluator
        inferred0, scored0, score0 = (getattr(ev, k, 0) for k in ("inferred_samples", "scored_samples", "score_time_s"))
        self._baseline()
        self._types = {op.get_friendly_name(): op.get_type_name() for op in model.get_ops()}
        self._fp_ops = {op.get_friendly_name(): op for op in model.get_ops()}
        cache: dict = {}
        self._fp_constant = lambda output: is_constant_subgraph(output, cache)

        t = time.perf_counter()
        current = self._evaluate(self._variant("base"))
        self._step(0, "quantize", [], current, True, time.perf_counter() - t)
        self.report["fully_quantized"] = {"metrics": current.evaluation.metrics, "drop": current.drop,
                                          "layer_groups": len(current.groups)}
        log.info("Fully quantized metrics: %s; drop %s (limit %s)", _fmt(current.evaluation.metrics),
                 _fmt(current.drop), _fmt(self.max_drop))
        best = current
        stop = "target met"
        if not self._met(current) and "mixed" in self.settings:
            t = time.perf_counter()
            mixed = self._evaluate(self._variant("mixed"))
            better = self._badness(mixed) <= self._badness(current)
            self._step(0, "convert_to_mixed_preset", [], mixed, better, time.perf_counter() - t)
            log.info("Mixed preset: %s; drop %s", _fmt(mixed.evaluation.metrics), _fmt(mixed.drop))
            if better:
                current = best = mixed
        if not self._met(current) and p.tune_hyperparams:
            current = best = self._tune(current)
        if not self._met(current):
            current, best, stop = self._search(current)
        final = current if self._met(current) else best
        met = self._met(final)
        if not met and stop == "target met":
            stop = "target not met"
        reverted = [g for g in self._order if g in final.reverted]
        switched: list[str] = []
        if self.gna:
            switched, reverted = reverted, []
            self.report["switched_to_16_bit"] = [{"name": g, "type": self._types.get(g, "")} for g in switched]
            self.report["overflow_corrections"] = [dataclasses.asdict(o) for o in final.result.overflow_corrections]
        self.report.update(
            target_met=met, stop_reason=stop,
            quantization=final.settings_name.replace("base", p.preset),  # e.g. "performance", "mixed:min/max"
            final={"metrics": final.evaluation.metrics, "drop": final.drop},
            reverted_layers=[{"name": g, "type": self._types.get(g, "")} for g in reverted],
            ignored_scope=list(p.ignored.scope),
            time_s=round(time.perf_counter() - t0, 3),
            evaluated_samples=self._counter("inferred_samples") - inferred0,
            scored_samples=self._counter("scored_samples") - scored0,
            metric_time_s=round(self._counter("score_time_s") - score0, 3))
        if self.gna:
            log.log(logging.INFO if met else logging.WARNING,
                    "AccuracyAwareQuantization (%s): %s with %d of %d 8-bit layer(s) switched to 16 bits%s",
                    p.target_device, "target met" if met else f"could not reach the required drop {_fmt(self.max_drop)} "
                    f"({stop}); the best model found (drop {_fmt(final.drop)}) is written",
                    len(switched), self.report["fully_quantized"]["layer_groups"],
                    f": {', '.join(switched)}" if switched else "")
        elif met:
            log.info("AccuracyAwareQuantization: target met with %d of %d layer group(s) reverted to floating point%s",
                     len(reverted), self.report["fully_quantized"]["layer_groups"],
                     f": {', '.join(reverted)}" if reverted else "")
        else:
            log.warning("AccuracyAwareQuantization could not reach the required drop %s (%s); the best model found "
                        "(drop %s, %d layer group(s) reverted) is written", _fmt(self.max_drop), stop,
                        _fmt(final.drop), len(reverted))
        return AccuracyAwareResult(final.model, final.result, met, reverted, final.evaluation, self.report, switched)

    def _counter(self, name: str) -> float:
        """An evaluator counter summed over the engine's evaluator and the annotation-free sibling."""
        value = getattr(self.evaluator, name, 0)
        return value + (getattr(self._ev, name, 0) if self._ev is not self.evaluator else 0)

    def _step(self, iteration: int, action: str, layers: list[str], v: Variant, accepted: bool, seconds: float):
        self.report["steps"].append({"iteration": iteration, "action": action, "layers": layers,
                                     "metrics": dict(v.evaluation.metrics), "drop": dict(v.drop),
                                     "accepted": accepted, "reverted_total": len(v.reverted),
                                     "time_s": round(seconds, 3)})

    def _tune(self, current: Variant) -> Variant:
        """``tune_hyperparams``: try a few activation range estimators (same statistics), keep the best."""
        base = self.settings[current.settings_name]
        metric = self._worst_metric(current)
        subset = self._ranking_subset(current, metric)
        tried = []
        for lo, hi in (("min", "max"), ("median", "median"), ("mean_no_outliers", "mean_no_outliers")):
            ranges = dataclasses.replace(base.ranges, min_aggregator=lo, max_aggregator=hi)
            if ranges == base.ranges:
                continue
            name = f"{current.settings_name}:{lo}/{hi}"
            self.settings[name] = dataclasses.replace(base, ranges=ranges)
            v = self._variant(name)
            outputs = self._infer(v, subset, self._ev)
            value = self._ev.score(outputs, subset, per_sample=False).metrics[metric.name]
            tried.append(((value if metric.higher_better else -value), name, v))
        if not tried:
            return current
        _, name, v = max(tried, key=lambda x: x[0])
        t = time.perf_counter()
        self._evaluate(v)
        better = self._badness(v) < self._badness(current)
        self._step(0, f"tune_hyperparams ({name.split(':', 1)[1]})", [], v, better, time.perf_counter() - t)
        log.info("Tuned activation ranges %s: drop %s (%s)", name.split(":", 1)[1], _fmt(v.drop),
                 "kept" if better else "not better; discarded")
        return v if better else current

    def _search(self, current: Variant) -> tuple[Variant, Variant, str]:
        """Revert the most harmful group, re-evaluate, keep or roll back.

        As the original POT, one ranking serves while its reverts pay: after a kept revert that
        lowered the drop, the next group of the same ranking is tried (the groups rolled back on
        the previous model are tried again, in their rank order); a kept revert that did not lower
        the drop, or a change of the metric furthest above its limit, has the remaining groups
        ranked again. When every remaining group has been rolled back on the current model, the
        rest are reverted in ranking order and kept, until the drop holds. A ranking costs
        ``ranking_subset_size`` inferences per group, a revert one pass over the evaluation set:
        ranking again after every revert made a random-weight EfficientNet-B0 spend 95% of 15
        minutes ranking. A rolled-back group is skipped until the model changes.
        """
        p = self.params
        best = current
        metric = self._worst_metric(current)
        failed: set[str] = set()
        ranking: list[str] | None = None  # every group of the last ranking, most harmful first
        in_order = False  # every group is reverted in ranking order, none rolled back
        bar = self._bar(len(current.groups))
        iteration, stop = 0, "nothing left to revert"
        try:
            while p.max_iter_num is None or iteration < p.max_iter_num:
                if ranking is None:
                    ranking = self._rank(current, metric, failed, iteration + 1)
                importance = [g for g in ranking if g in current.groups and (in_order or g not in failed)]
                if not importance and failed and not in_order:
                    # each remaining group alone made the drop larger (on a small evaluation set a
                    # step is often within its noise): go down the ranking keeping every step, so
                    # that the target is met, at worst with everything in floating point (NNCF's
                    # accuracy control reverts so, without roll-backs)
                    in_order = True
                    log.info("Every remaining layer group made the drop larger on its own; reverting them in "
                             "ranking order until the drop holds")
                    continue
                if not importance:
                    stop = "nothing left to revert"
                    break
                g = importance[0]
                iteration += 1
                t = time.perf_counter()
                cand = self._evaluate(self._child(current, g))
                worse = cand.drop[metric.name] > current.drop[metric.name] + 1e-12
                accept = self._met(cand) or not worse or not p.use_prev_if_drop_increase or in_order
                self._step(iteration, "switch_to_16_bit" if self.gna else "revert", [g], cand, accept,
                           time.perf_counter() - t)
                if self._badness(cand) < self._badness(best):
                    best = cand
                self._keep = [best]
                if bar is not None:
                    if bar.n >= bar.total:
                        bar.total += 1
                    bar.set_postfix_str(f"{metric.name} drop {cand.drop[metric.name]:.4g}", refresh=False)
                    bar.update(1)
                log.info("Iteration %d: %s %s%s: %s; drop %s%s", iteration,
                         "switched to 16 bits" if self.gna else "reverted", g,
                         f" ({self._types[g]})" if self._types.get(g) else "", _fmt(cand.evaluation.metrics),
                         _fmt(cand.drop), "" if accept else "; the drop increased, rolled back")
                if accept:
                    improved = cand.drop[metric.name] < current.drop[metric.name] - 1e-12
                    current = cand
                    self._order.append(g)
                    failed.clear()
                    if self._met(current):
                        stop = "target met"
                        break
                    if not current.groups:
                        stop = "every layer group reverted"
                        break
                    previous, metric = metric, self._worst_metric(current)
                    if (not improved or metric.name != previous.name) and not in_order:
                        ranking = None
                else:
                    failed.add(g)
                self._forget([current, best])
            else:
                stop = f"max_iter_num {p.max_iter_num} reached"
        finally:
            if bar is not None:
                bar.close()
        return current, best, stop

    def _bar(self, total: int):
        if not (self.progress or self.stream):
            return None
        from tqdm import tqdm

        if self.stream:
            return tqdm(total=total, desc="accuracy-aware", unit="iter", file=sys.stdout, ascii=True, mininterval=1.0,
                        bar_format="{desc}: {n_fmt}/{total_fmt} iterations [{elapsed}<{remaining}]{postfix}\n")
        return tqdm(total=total, desc="accuracy-aware", unit="iter", file=sys.stderr)


def _fmt(values: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.5g}" if isinstance(v, float) and math.isfinite(v) else f"{k} {v}"
                     for k, v in values.items())
