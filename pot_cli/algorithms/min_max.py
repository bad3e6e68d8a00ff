"""MinMaxQuantization: where FakeQuantize ops go, and their ranges from min/max statistics.

Placement: activation inputs of weighted ops (Convolution, GroupConvolution,
ConvolutionBackpropData, GroupConvolutionBackpropData, MatMul) and of the element-wise ops the
hardware config lists whose inputs are all activations (a residual Add). Weights (a constant
sub-graph on port 1) are quantized per output channel. One quantizer per tensor, shared by all
its quantized consumers; integer tensors and constant or shape sub-graphs are never quantized.

Ranges: per-tensor activation ranges from per-sample minima and maxima aggregated across samples
(mean by default, as POT's ``default`` range-estimator preset and NNCF's MEAN_MINMAX), or from
per-sample quantiles computed in the graph (POT's ``quantile`` preset, ``outlier_prob``); weights
from their exact per-channel ``max|W|`` (Krishnamoorthi, 2018, "Quantizing deep convolutional
networks for efficient inference: A whitepaper", section 2) or POT's weight range estimators.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import openvino as ov

from pot_cli.algorithms.fake_quantize import (QuantizerParams, WeightRangeEstimator, compute_activation_params,
                                              compute_weight_params, dequantize, narrow_levels, quantize_to_int)
from pot_cli.algorithms.propagation import propagate
from pot_cli.errors import NotSupportedError
from pot_cli.graph.model import check_ignored_scope, evaluate_constants, is_constant_subgraph, reads_state_only
from pot_cli.graph.patterns import (ATTENTION_OPS, LAYOUT_OPS, WEIGHTED_OPS, find_se_blocks, is_depthwise, is_float,
                                    weight_channel_axes)
from pot_cli.statistics.branches import if_conditions
from pot_cli.statistics.collector import Reduction, StatisticRequest, Statistics

log = logging.getLogger("pot")


def _trimmed(values: np.ndarray, keep_low: float, keep_high: float) -> np.ndarray:
    lo, hi = np.quantile(values, [keep_low, keep_high])
    inside = values[(values >= lo) & (values <= hi)]
    return inside if inside.size else values


def _hodges_lehmann(values: np.ndarray) -> float:
    # median of the Walsh averages (x_i + x_j) / 2, i <= j; O(n^2) memory is fine for n <= ~3000
    i, j = np.triu_indices(values.size)
    return float(np.median((values[i] + values[j]) / 2.0))


#: how per-sample values (shape ``(n_samples,)``) become one number; names as in POT configs
AGGREGATORS: dict[str, Callable[[np.ndarray, float], float]] = {
    "mean": lambda v, p: float(np.mean(v)),
    "max": lambda v, p: float(np.max(v)),
    "min": lambda v, p: float(np.min(v)),
    "median": lambda v, p: float(np.median(v)),
    "mean_no_outliers": lambda v, p: float(np.mean(_trimmed(v, p, 1.0 - p))),
    "median_no_outliers": lambda v, p: float(np.median(_trimmed(v, p, 1.0 - p))),
    "hl_estimator": lambda v, p: _hodges_lehmann(v),
}


#: ops through which a per-tensor FakeQuantize may be moved (data on input 0, other inputs
#: constant or integer, one output); Pad only when it pads with zero
AGNOSTIC_OPS = frozenset({"MaxPool", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "StridedSlice", "Slice", "Pad",
                          "DepthToSpace", "SpaceToDepth", "ShuffleChannels", "Tile", "Broadcast", "Gather",
                          "ReduceMax", "Crop", "Flatten"})

def carries_quantized(node: ov.Node) -> bool:
    """Agnostic ops and Concat only carry quantized data to the layers after them."""
    return node.get_type_name() in AGNOSTIC_OPS or node.get_type_name() == "Concat"


#: single-input ops that may run on INT8 data between two quantized layers (see
#: ``MinMaxSettings.requantized_op_types``)
REQUANTIZED_OPS = frozenset({"AvgPool", "ReduceMean", "Interpolate"})

#: statistic -> (per-tensor reduction, per-channel reduction) read by ``MinMaxQuantization._estimate``
_STATISTICS = {
    "min": (Reduction.MIN, Reduction.MIN_PER_CHANNEL),
    "max": (Reduction.MAX, Reduction.MAX_PER_CHANNEL),
    "quantile_low": (Reduction.QUANTILE_LOW, Reduction.QUANTILE_LOW_PER_CHANNEL),
    "quantile_high": (Reduction.QUANTILE_HIGH, Reduction.QUANTILE_HIGH_PER_CHANNEL),
    "abs_quantile": (Reduction.ABS_QUANTILE, Reduction.ABS_QUANTILE_PER_CHANNEL),
}

#: per-sample statistics a range bound can be estimated from (POT's ``range_estimator`` types)
ESTIMATOR_TYPES = ("min", "max", "abs_max", "quantile", "abs_quantile")


@dataclass(frozen=True)
class RangeSpec:
    """How to turn activation statistics into a range (POT's ``range_estimator``).

    Each bound is a per-sample statistic (``*_type``) aggregated across the samples
    (``*_aggregator``). Per-sample statistics of a tensor ``x`` (all its elements):
    ``min``/``max``: ``min(x)``/``max(x)``; ``abs_max``: ``max|x|``; ``quantile``:
    ``np.quantile(x, p)`` for the lower bound and ``np.quantile(x, 1 - p)`` for the upper one;
    ``abs_quantile``: ``np.quantile(|x|, 1 - p)``, with ``p`` the bound's outlier probability. The
    quantiles are NumPy's default linear interpolation (as POT's ``np.quantile``), computed
    exactly inside the graph (see :mod:`pot_cli.statistics.collector`). An ``abs_*`` lower bound is
    ``-value`` when the tensor has a negative minimum in some sample, else 0.

    Per-channel quantizers fold the per-sample, per-channel statistics with the minimum (lower
    bound) and maximum (upper bound) over samples, POT's ``perchannel`` presets; the aggregators
    apply to per-tensor quantizers.

    :param min_type: lower-bound statistic, one of :data:`ESTIMATOR_TYPES`.
    :param min_aggregator: key of :data:`AGGREGATORS`.
    :param max_type: upper-bound statistic, one of :data:`ESTIMATOR_TYPES`.
    :param max_aggregator: key of :data:`AGGREGATORS`.
    :param outlier_prob: ``p`` of the upper bound's quantiles, and the fraction trimmed at each end
        by the upper bound's ``*_no_outliers`` aggregator; in [0, 1].
    :param clipping_value: optional upper clip of the resulting upper bound (POT's
        ``max.clipping_value``); for a symmetric quantizer it bounds ``max|x|``.
    :param min_outlier_prob: the same for the lower bound.
    :param min_clipping_value: optional lower clip of the lower bound (``min.clipping_value``).
    :param symmetric_max_type: upper-bound statistic used instead of ``max_type`` by the
        quantizers that end up symmetric (POT's ``quantile`` preset: ``abs_quantile`` for
        symmetric quantizers, ``quantile`` for asymmetric ones); None: ``max_type`` for all.
    """

    min_type: str = "min"
    min_aggregator: str = "mean"
    max_type: str = "max"
    max_aggregator: str = "mean"
    outlier_prob: float = 1e-4
    clipping_value: float | None = None
    min_outlier_prob: float = 1e-4
    min_clipping_value: float | None = None
    symmetric_max_type: str | None = None


#: POT's ``range_estimator.preset: quantile`` for activations (per tensor; ``outlier_prob`` 1e-4)
QUANTILE_PRESET = RangeSpec(min_type="quantile", min_aggregator="mean", max_type="quantile", max_aggregator="mean",
                            outlier_prob=1e-4, symmetric_max_type="abs_quantile")


@dataclass(frozen=True)
class MinMaxSettings:
    """Typed parameters of MinMaxQuantization.

    :param activation_op_types: ops whose activation inputs are quantized (from the hardware config).
        A ScaledDotProductAttention gets symmetric quantizers on its query and key (ports 0, 1).
    :param eltwise_op_types: of those, the ones without weights, quantized only when every input
        is an activation (for example a residual Add).
    :param activation_mode: ``symmetric`` (preset performance) or ``asymmetric`` (preset mixed).
    :param activation_bits: 8, or 16 for GNA.
    :param weight_mode: ``symmetric`` or ``asymmetric``.
    :param weight_bits: 8 (or 16).
    :param weight_per_channel: per output channel (True) or per tensor.
    :param ranges: the activation range estimator.
    :param activation_levels: explicit integer grid ``(level_low, level_high)`` of the activation
        quantizers (POT's ``activations.level_low``/``level_high``; ``levels = level_high -
        level_low + 1``), or None for the grid of ``activation_bits``.
    :param weight_levels: explicit grid of the weight quantizers, or None.
    :param weight_ranges: the weights' range estimator (POT's ``weights.range_estimator``).
    :param activation_per_channel: every activation quantizer per channel along axis 1 (POT's
        ``activations.granularity: perchannel``); needs a static axis 1.
    :param config_source: config key path prefix used in error messages.
    :param depthwise_per_channel: quantize the input of a depthwise convolution per channel
        (the hardware config's ``DepthWiseConvolution`` with a per-channel activation quantizer);
        its range is the global min/max over samples (NNCF's MINMAX for per-channel activations).
    :param saturation_fix: ``first_layer`` (default), ``all`` or ``no``. CPUs without VNNI
        multiply u8 activations by i8 weights with ``vpmaddubsw``, which sums products in pairs
        into int16 and saturates when both are large (the original POT's ``saturation_fix``,
        NNCF's ``OverflowFix``). The fix stores the affected weights in 7 bits (``[-63, 63]``).
        ``first_layer`` applies it to the first convolutions (no weighted op upstream) and,
        beyond POT, to every convolution (and, outside transformers, every FullyConnected) whose
        activation input is signed or has a zero point, also through MaxPool, Concat and the other
        ops a quantizer moves across: the runtime shifts those inputs into u8 around 128, so their
        codes are large as in a first layer (measured here: mobilenet_v2 top-1 agreement 0.885 ->
        0.893, and preset ``mixed`` stops losing accuracy). ``all``: every weighted layer, and the
        second operand of every MatMul of two activations gets 7 bits (128 levels), which makes
        the CPU plugin run that MatMul in f32 (measured); ``no``: none. With ``first_layer`` that
        operand keeps 8 bits, as NNCF places it: the plugin runs the MatMul in INT8, exact on
        VNNI/AMX CPUs; on AVX2 CPUs without VNNI its pair sums can saturate (measured here on
        full-range uniform operands: 18% relative error for i8 x i8, 10% for u8 x i8; output
        cosine within 0.0002 of the 7-bit placement on small ViT/BERT/GPT-like models), and
        ``all`` is the safe choice there. Measured on random-weight CNNs with the FakeQuantize
        ops computed in float (what a VNNI CPU computes), the wider fix changed the output
        cosine by at most 0.0003 (U-Net, EfficientNet-B0, ConvNeXt, MobileNetV3), while on this
        AVX2 CPU it raised it from 0.971/0.974/0.954/0.936 to 0.997/0.992/0.9996/0.952.
    :param model_type: ``"transformer"``, or None to detect it (:func:`looks_like_transformer`).
        Transformers keep element-wise ops (residual Add, LayerNorm inputs) in floating point, as
        the original POT's transformer ignored patterns and NNCF's ``ModelType.TRANSFORMER``.
    :param transformer_activation_mode: activation mode used for transformers (``asymmetric``,
        NNCF's default preset for them: skewed GELU/LayerNorm outputs waste half of a symmetric
        grid; minilm_l6_v2 output cosine 0.960 -> 0.980 here); None keeps ``activation_mode``.
    :param compress_embeddings: store large embedding tables (a Gather along axis 0 from a
        constant float table of at least :data:`EMBEDDING_MIN_ELEMENTS` values) as INT8 rows,
        one scale per row; Gather has no activation quantizer, so this only shrinks the model
        (minilm_l6_v2 word embeddings: 11.7M values).
    :param skewed_asymmetric: with symmetric activations, a signed tensor whose smaller side is
        below this fraction of its larger side (``min(-lo, hi) < r * max(-lo, hi)``) gets an
        asymmetric quantizer instead: a symmetric grid would spend half its levels on values that
        never occur (beyond POT: measured here, mp_face_detection_short's tensor in [-135, 8] left
        ~8 levels for its positive side; output cosine 0.977 -> 0.980, ppocrv4_det mask F1
        0.906 -> 0.928). 0 disables it; only used where the device allows asymmetric activations.
    :param recurrent_ops: recurrent op types to quantize, each with its hardware config's
        ``unified_scales`` port groups (``quantize_recurrent: true``; see
        :mod:`pot_cli.algorithms.recurrent`); None (the default): recurrent ops stay in floating
        point.
    :param ignored_scope: node friendly names left in floating point.
    :param ignored_types: op types left in floating point.
    :param ignored_operations: ``(type, ((attribute, value), ...))``: ops of that type whose
        attributes (``node.get_attributes()``) equal every listed value are left in floating
        point (POT's ``ignored.operations`` with ``attributes``).
    :param agnostic_op_types: ops a per-tensor FakeQuantize moves up through (the hardware
        config's operations listed without quantization, within :data:`AGNOSTIC_OPS`): a
        quantizer after ``MaxPool``/``Reshape``/``Pad``... goes before it when every consumer of
        the tensor is quantized by it, so one FakeQuantize serves several consumers and the op
        runs on INT8 data. ``FQ(maxpool(x)) == maxpool(FQ(x))`` for any monotonic FQ, and
        layout ops only move values, so the float result of the quantized model is unchanged;
        only the statistics are taken on the op's input (POT's and NNCF's quantizer propagation).
    :param unified_scale_types: ops whose quantized inputs share one range (the hardware
        config's ``unified_scales``; ``Concat`` on CPU): a quantizer after a ``Concat`` moves to
        each of its inputs, and those quantizers get the union of their ranges, so the Concat
        joins INT8 tensors without requantization.
    :param requantized_op_types: single-input ops that the device runs on INT8 data and whose
        output is quantized again (the hardware config quantizes their activations, within
        :data:`REQUANTIZED_OPS`: AvgPool, ReduceMean, nearest-mode Interpolate): when the op's output is
        quantized for all its consumers, its input gets a quantizer too (its own range), so that
        the op runs in INT8 between two INT8 layers, as NNCF places them. Not when the input also
        feeds a consumer in floating point (a FakeQuantize there would run on its own).
    :param ignore_se_blocks: leave squeeze-and-excitation blocks in floating point (the original
        POT's and NNCF's ``se_block`` ignored pattern, :func:`pot_cli.graph.patterns.find_se_blocks`):
        their convolutions run on 1x1 pooled tensors, where INT8 saves nothing.
    :param weight_specs_by_type: ``(op type, bits, per channel)`` of the weights of the op types
        whose hardware-config weight scheme differs from ``weight_bits``/``weight_per_channel``
        (GNA: Convolution weights are always 16-bit per tensor, MatMul weights 8-bit per channel
        with preset ``performance`` and 16-bit per tensor with ``accuracy``, as the original
        POT's per-op choice: first scheme for ``performance``, last otherwise). Symmetric, on
        the narrow grid ``[-(2^(b-1)-1), 2^(b-1)-1]``; explicit ``weights`` overrides leave it empty.
    :param overflow_correction: run OverflowCorrection after the weights are computed
        (:mod:`pot_cli.algorithms.overflow_correction`; on for GNA, as the original POT).
    """

    activation_op_types: frozenset[str] = WEIGHTED_OPS | ATTENTION_OPS
    eltwise_op_types: frozenset[str] = frozenset()
    activation_mode: str = "symmetric"
    activation_bits: int = 8
    weight_mode: str = "symmetric"
    weight_bits: int = 8
    weight_per_channel: bool = True
    ranges: RangeSpec = RangeSpec()
    activation_levels: tuple[int, int] | None = None
    weight_levels: tuple[int, int] | None = None
    weight_ranges: WeightRangeEstimator = WeightRangeEstimator()
    activation_per_channel: bool = False
    config_source: str = "compression.algorithms[0].params"
    depthwise_per_channel: bool = True
    saturation_fix: str = "first_layer"
    model_type: str | None = None
    transformer_activation_mode: str | None = "asymmetric"
    compress_embeddings: bool = True
    skewed_asymmetric: float = 0.1
    recurrent_ops: tuple[tuple[str, tuple[tuple[int, ...], ...]], ...] | None = None
    ignored_scope: tuple[str, ...] = ()
    ignored_types: tuple[str, ...] = ()
    ignored_operations: tuple[tuple[str, tuple[tuple[str, object], ...]], ...] = ()
    agnostic_op_types: frozenset[str] = frozenset(AGNOSTIC_OPS)
    unified_scale_types: frozenset[str] = frozenset({"Concat"})
    ignore_se_blocks: bool = True
    requantized_op_types: frozenset[str] = frozenset(REQUANTIZED_OPS)
    weight_specs_by_type: tuple[tuple[str, int, bool], ...] = ()
    overflow_correction: bool = False


@dataclass
class ActivationQuantizer:
    """A FakeQuantize to insert on tensor ``output``, feeding ``consumers``.

    :param output: the quantized tensor (a node output).
    :param consumers: the inputs that will read the FakeQuantize instead of ``output``.
    :param name: friendly name of the FakeQuantize, ``<first consumer>/fq_input_<port>``.
    :param channel_axis: None per tensor, else the channel axis of a per-channel quantizer.
    :param params: parameters, set by :meth:`MinMaxQuantization.compute_ranges`.
    :param stats: the aggregated (min, max), per tensor; per channel the extreme values.
    """

    output: ov.Output
    consumers: list[ov.Input] = field(default_factory=list)
    name: str = ""
    channel_axis: int | None = None
    params: QuantizerParams | None = None
    stats: tuple[float, float] | None = None


@dataclass
class WeightQuantizer:
    """Quantization of the constant weight input ``port`` of ``node``.

    :param node: the weighted op.
    :param port: its weight input port (1, or 0 for a MatMul with constant first input).
    :param source: the constant sub-graph output feeding that port.
    :param keep_axes: output-channel axes kept per channel (``()`` per tensor).
    :param value: the evaluated float32 weights, shape of the port (e.g. ``(C_out, C_in, kH, kW)``).
    :param params: the quantizer, arrays with ``value.ndim`` dims.
    :param codes: integer codes, same shape as ``value`` (int8 for 8 bits).
    :param dequantized: ``scale * (codes - zero_point)`` as float32, what the runtime will use.
    """

    node: ov.Node
    port: int
    source: ov.Output
    keep_axes: tuple[int, ...]
    value: np.ndarray | None = None
    params: QuantizerParams | None = None
    codes: np.ndarray | None = None
    dequantized: np.ndarray | None = None


#: smallest embedding table (values) stored as INT8 rows
EMBEDDING_MIN_ELEMENTS = 65536

_CONV_TYPES = frozenset({"Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData"})
_ATTENTION_MARKERS = frozenset({"MVN", "Softmax", "ScaledDotProductAttention"})


def _attributes_match(node: ov.Node, attributes) -> bool:
    """Whether every ``(name, value)`` equals the node's attribute (lists compared as lists,
    strings case-insensitively, as IR attributes are lower-case)."""
    actual = node.get_attributes()
    for name, value in attributes:
        if name not in actual:
            return False
        have = actual[name]
        if isinstance(value, (list, tuple)):
            if list(have) != list(value):
                return False
        elif isinstance(value, str):
            if str(have).lower() != value.lower():
                return False
        elif have != value:
            return False
    return True


def _reads_softmax(inp: ov.Input) -> bool:
    """Whether ``inp`` reads a Softmax output, directly or through layout ops."""
    node = inp.get_source_output().get_node()
    while node.get_type_name() in LAYOUT_OPS or node.get_type_name() == "Convert":
        node = node.input_value(0).get_node()
    return node.get_type_name() in ("Softmax", "LogSoftmax")


def looks_like_transformer(model: ov.Model) -> bool:
    """Whether ``model`` is a transformer, to quantize it as ``model_type: transformer``.

    True for a model with MatMuls and LayerNorm/attention ops (MVN, Softmax,
    ScaledDotProductAttention) and no convolution, the shape of BERT-like encoders; and for a
    model with attention (a ScaledDotProductAttention, or a MatMul of two activations beside a
    Softmax) whose MatMuls with constant weights are at least as many as its convolutions: a
    transformer behind a convolution stem (ViT patch embedding, Whisper's Conv1d front end).
    Measured on a ViT-tiny with ScaledDotProductAttention (100 held-out images, ANY): logits
    cosine to FP32 0.829 quantized as a CNN, 0.9985 as a transformer (NNCF's TRANSFORMER 0.9989).
    A CNN with an attention block keeps the CNN scheme (its convolutions outnumber its MatMuls).

    :param model: the model.
    """
    cache: dict = {}
    types: set[str] = set()
    convolutions = weighted_matmuls = 0
    activation_matmul = False
    for op in model.get_ops():
        kind = op.get_type_name()
        types.add(kind)
        if kind in _CONV_TYPES:
            convolutions += 1
        elif kind == "MatMul":
            if any(is_constant_subgraph(op.input_value(i), cache) for i in range(2)):
                weighted_matmuls += 1
            else:
                activation_matmul = True
    if not convolutions:
        return "MatMul" in types and bool(types & _ATTENTION_MARKERS)
    attention = "ScaledDotProductAttention" in types or (activation_matmul and "Softmax" in types)
    return attention and weighted_matmuls >= convolutions


class MinMaxQuantization:
    """Plans FakeQuantize placement on a model and computes ranges from statistics.

    Two-phase contract: :meth:`plan` then :meth:`statistic_requests`; after the statistics are
    collected, :meth:`compute_ranges`. Graph edits are done by :mod:`pot_cli.graph.insertion`.

    :param settings: typed parameters.
    """

    def __init__(self, settings: MinMaxSettings):
        self.settings = settings
        self.activations: list[ActivationQuantizer] = []
        self.weights: list[WeightQuantizer] = []
        self._constant_cache: dict = {}
        self._second_operands: set[ov.Output] = set()  # port-1 inputs of activation x activation MatMuls
        self._symmetric_outputs: set[ov.Output] = set()  # tensors quantized symmetrically whatever the preset
        self.transformer = False
        self.activation_mode = settings.activation_mode
        self._pattern_ignored: set[int] = set()  # instance ids of ops inside ignored patterns
        self._branch_conditions: dict[int, ov.Output] = {}  # If instance id -> its condition
        self._branch_deps: dict[ov.Output, frozenset[int]] = {}  # tensor -> the Ifs upstream of it
        self.unified: list[list[ActivationQuantizer]] = []  # quantizers that share one range
        self.state_only: list[str] = []  # layers left in float: an input reads only the model's state

    def is_constant(self, output: ov.Output) -> bool:
        """Whether ``output`` comes from a constant sub-graph (memoised per model)."""
        return is_constant_subgraph(output, self._constant_cache)

    def _ignored(self, node: ov.Node) -> bool:
        """Whether ``node`` is in the ignored scope, types, operations or an ignored pattern."""
        return (node.get_instance_id() in self._pattern_ignored
                or node.get_friendly_name() in self.settings.ignored_scope
                or node.get_type_name() in self.settings.ignored_types
                or any(node.get_type_name() == t and _attributes_match(node, attrs)
                       for t, attrs in self.settings.ignored_operations))

    def plan(self, model: ov.Model, quiet: bool = False) -> None:
        """Decide which tensors and weights get quantizers (fills ``activations``, ``weights``).

        :param model: the floating-point model (not modified).
        :param quiet: do not log the transformer detection (a plan made only to look ahead).
        :raises ConfigError: when an ignored scope name matches no node.
        """
        check_ignored_scope(model, self.settings.ignored_scope)  # a name in an If body is valid too
        self._pattern_ignored = set()
        if self.settings.ignore_se_blocks:
            for block in find_se_blocks(model):
                self._pattern_ignored.update(op.get_instance_id() for op in block)
        by_output: dict[ov.Output, ActivationQuantizer] = {}
        self.transformer = (self.settings.model_type == "transformer" or
                            (self.settings.model_type is None and looks_like_transformer(model)))
        self.activation_mode = self.settings.activation_mode
        eltwise = self.settings.eltwise_op_types
        if self.transformer:
            eltwise = frozenset()
            self.activation_mode = self.settings.transformer_activation_mode or self.activation_mode
            if not quiet:
                log.info("model_type: transformer%s: element-wise ops stay in floating point, %s activations",
                         "" if self.settings.model_type else " (detected)", self.activation_mode)
        s = self.settings

        per_channel: dict[ov.Output, bool] = {}

        def add_activation(inp: ov.Input, channel_wise: bool = False) -> None:
            src = inp.get_source_output()
            if not is_float(src) or self.is_constant(src):
                return
            q = by_output.get(src)
            if q is None:
                q = by_output[src] = ActivationQuantizer(
                    src, name=f"{inp.get_node().get_friendly_name()}/fq_input_{inp.get_index()}")
            q.consumers.append(inp)
            # one quantizer per tensor: per channel only if every quantized consumer wants it
            per_channel[src] = per_channel.get(src, True) and channel_wise

        ordered = model.get_ordered_ops()
        self._branch_conditions = {node.get_instance_id(): cond for node, cond in if_conditions(model)}
        self._branch_deps = self._if_dependencies(ordered) if self._branch_conditions else {}
        feeding = self._feeding_weighted_ops(ordered) if eltwise else set()
        state_cache: dict | None = {} if model.get_variables() else None
        self.state_only = []
        for node in ordered:
            t = node.get_type_name()
            if self._ignored(node):
                continue
            if state_cache is not None and t in s.activation_op_types and any(
                    reads_state_only(i.get_source_output(), state_cache) for i in node.inputs()):
                # every calibration sample starts from the state's initial value: no range to calibrate
                self.state_only.append(node.get_friendly_name())
                continue
            if t == "Gather" and s.compress_embeddings:
                self._add_embedding(node)
                continue
            if t not in s.activation_op_types:
                continue
            if t in WEIGHTED_OPS:
                data, weights = node.input(0), node.input(1)
                const0, const1 = self.is_constant(data.get_source_output()), self.is_constant(weights.get_source_output())
                if const0 and const1:
                    continue
                if const1:
                    add_activation(data, s.depthwise_per_channel and is_depthwise(node))
                    self._add_weights(node, 1)
                elif const0 and t == "MatMul":
                    add_activation(weights)
                    self._add_weights(node, 0)
                elif t == "MatMul":  # both inputs are activations (attention scores)
                    if self.transformer and any(_reads_softmax(i) for i in (data, weights)):
                        # softmax(Q.K^T).V stays in floating point (NNCF's transformer ignored
                        # patterns): probabilities near 1/T vanish on an 8-bit grid. Measured on a
                        # 2-layer Whisper-like encoder: output cosine 0.9953 -> 0.9961
                        continue
                    add_activation(data)
                    add_activation(weights)
                    # the CPU plugin runs it in INT8 only with a signed 8-bit second operand
                    # (measured: an asymmetric or 7-bit one keeps the MatMul in f32)
                    self._symmetric_outputs.add(weights.get_source_output())
                    self._second_operands.add(weights.get_source_output())
                    if self.transformer:  # the original POT's transformer scheme: symmetric operands
                        self._symmetric_outputs.add(data.get_source_output())
                else:  # a convolution with run-time weights: quantize the data input only
                    add_activation(data)
            elif t in ATTENTION_OPS:
                # query and key, the operands of Q.K^T (NNCF's hardware setups: q8_a_sym on ports 0, 1);
                # value, mask and scale stay in floating point
                query, key = node.input(0), node.input(1)
                if all(is_float(i.get_source_output()) and not self.is_constant(i.get_source_output())
                       for i in (query, key)):
                    add_activation(query)
                    add_activation(key)  # 256 levels: the CPU plugin keeps Q.K^T in FP32 with a 7-bit key
                    self._symmetric_outputs.update((query.get_source_output(), key.get_source_output()))
            elif t in eltwise:
                srcs = [i.get_source_output() for i in node.inputs()]
                if all(is_float(o) and not self.is_constant(o) for o in srcs) and node.get_instance_id() in feeding:
                    for inp in node.inputs():
                        add_activation(inp)
        for src, q in by_output.items():
            if per_channel[src]:
                q.channel_axis = 1
        # a linear/cubic Interpolate stays in f32 on the CPU plugin (measured: linear_onnx), so a
        # quantizer in front of it would only add a conversion
        requantized = [n for n in reversed(ordered)
                       if n.get_type_name() in s.requantized_op_types and not self._ignored(n)
                       and (n.get_type_name() != "Interpolate" or n.get_attributes().get("mode") == "nearest")]
        propagate(self, by_output, requantized)
        self.activations = list(by_output.values())
        if self.state_only and not quiet:
            log.warning("%d layer(s) have an input that reads only the model's state (ReadValue) and stay in "
                        "floating point: each calibration sample starts from the state's initial value, so that "
                        "input's range cannot be calibrated: %s", len(self.state_only),
                        ", ".join(self.state_only[:5]) + (", ..." if len(self.state_only) > 5 else ""))
        self.unified = [g for g in self.unified if len(g) > 1]

    @staticmethod
    def _feeding_weighted_ops(ordered: list[ov.Node]) -> set[int]:
        """Instance ids of the ops with a weighted op downstream, in one reverse topological pass
        (an element-wise op in a post-processing tail, such as box decoding after the last
        layer, gains nothing from INT8)."""
        feeding: set[int] = set()
        for node in reversed(ordered):
            if any((t.get_node().get_type_name() in WEIGHTED_OPS and t.get_index() in (0, 1))
                   or t.get_node().get_instance_id() in feeding
                   for out in node.outputs() for t in out.get_target_inputs()):
                feeding.add(node.get_instance_id())
        return feeding

    def _add_embedding(self, node: ov.Node) -> None:
        """A Gather from a large constant float table along axis 0 (an embedding): INT8 rows."""
        table, axis = node.input(0).get_source_output(), node.input(2).get_source_output()
        shape = table.get_partial_shape()
        if not (is_float(table) and shape.is_static and len(shape) == 2 and self.is_constant(table)):
            return
        if int(np.prod([d.get_length() for d in shape])) < EMBEDDING_MIN_ELEMENTS:
            return
        axis_node = axis.get_node()
        if axis_node.get_type_name() != "Constant" or int(np.asarray(axis_node.get_data()).reshape(-1)[0]) != 0:
            return
        self.weights.append(WeightQuantizer(node, 0, table, (0,)))

    def _add_weights(self, node: ov.Node, port: int) -> None:
        src = node.input(port).get_source_output()
        rank = src.get_partial_shape().rank.get_length()
        per_channel = self.weight_spec(node)[1]
        axes = weight_channel_axes(node, rank) if (port == 1 and per_channel) else ()
        self.weights.append(WeightQuantizer(node, port, src, axes))

    def weight_spec(self, node: ov.Node) -> tuple[int, bool]:
        """``(bits, per channel)`` of ``node``'s weights: its type's entry of
        ``weight_specs_by_type`` (GNA), else ``weight_bits``/``weight_per_channel``."""
        for t, bits, per_channel in self.settings.weight_specs_by_type:
            if t == node.get_type_name():
                return bits, per_channel
        return self.settings.weight_bits, self.settings.weight_per_channel

    def statistic_requests(self) -> list[StatisticRequest]:
        """The per-sample statistics every activation quantizer needs for its range.

        ``min``/``max``/``abs_max`` bounds need MIN and MAX (per channel for per-channel
        quantizers), ``quantile`` bounds QUANTILE_LOW or QUANTILE_HIGH at the bound's
        ``outlier_prob``, ``abs_quantile`` bounds ABS_QUANTILE (and MIN for the sign of a lower
        bound); all are reduced in the graph (see :class:`RangeSpec`). With
        ``activation_per_channel`` every quantizer is made per channel here (axis 1).

        :raises NotSupportedError: on an unknown estimator type or aggregator, or a per-channel
            quantizer on a tensor whose axis 1 is dynamic (names the config key).
        """
        self._check_ranges()
        self._apply_granularity()
        reqs: list[StatisticRequest] = []
        for q in self.activations:
            for kind, low, prob in self._bounds(q):
                reqs.extend(self._requests(q, kind, low, prob))
            if q.channel_axis is None:  # the branch each sample took, for ranges behind an If
                reqs.extend(StatisticRequest(self._branch_conditions[i], Reduction.MAX)
                            for i in sorted(self._branch_deps.get(q.output, ())))
        return list(dict.fromkeys(reqs))

    def _if_dependencies(self, ordered: list[ov.Node]) -> dict[ov.Output, frozenset[int]]:
        """For every tensor computed after a top-level If with an input-dependent condition, the
        instance ids of those Ifs (its value depends on the branch each sample took)."""
        deps: dict[ov.Output, frozenset[int]] = {}
        for node in ordered:
            up = frozenset().union(*(deps.get(i.get_source_output(), frozenset()) for i in node.inputs()))
            if node.get_instance_id() in self._branch_conditions:
                up |= {node.get_instance_id()}
            if up:
                deps.update((o, up) for o in node.outputs())
        return deps

    def _sample_groups(self, stats: Statistics, output: ov.Output) -> np.ndarray | None:
        """The calibration samples of ``output`` grouped by the branches they took in the Ifs
        upstream of it: one group label per sample, or None when they all took the same ones."""
        columns = []
        for i in sorted(self._branch_deps.get(output, ())):
            cond = self._branch_conditions[i]
            if (cond, Reduction.MAX, None) in stats:
                columns.append(np.asarray(stats.get(cond, Reduction.MAX)).reshape(-1) != 0)
        if not columns or any(c.size != stats.n_samples for c in columns):
            return None
        _, groups = np.unique(np.stack(columns, axis=1), axis=0, return_inverse=True)
        groups = groups.reshape(-1)
        return groups if groups.max() > 0 else None

    def _bounds(self, q: ActivationQuantizer) -> list[tuple[str, bool, float]]:
        """``(type, is lower bound, outlier_prob)`` of every statistic the range estimator reads
        for ``q``: a quantizer that may be symmetric (the preset's mode, or an attention operand,
        symmetric whatever the preset) also reads ``symmetric_max_type``."""
        r = self.settings.ranges
        bounds = [(r.min_type, True, r.min_outlier_prob), (r.max_type, False, r.outlier_prob)]
        if r.symmetric_max_type and (self.activation_mode == "symmetric" or q.output in self._symmetric_outputs):
            bounds.append((r.symmetric_max_type, False, r.outlier_prob))
        return bounds

    def _check_ranges(self) -> None:
        r = self.settings.ranges
        key = f"{self.settings.config_source}.activations.range_estimator"
        for side, kind in (("min", r.min_type), ("max", r.max_type), ("max", r.symmetric_max_type)):
            if kind is not None and kind not in ESTIMATOR_TYPES:
                raise NotSupportedError(f"{key}.{side}.type: '{kind}' is not supported; "
                                        f"expected one of {', '.join(ESTIMATOR_TYPES)}")
        for side, name in (("min", r.min_aggregator), ("max", r.max_aggregator)):
            if name not in AGGREGATORS:
                raise NotSupportedError(f"{key}.{side}.aggregator: '{name}' is not supported; "
                                        f"expected one of {', '.join(AGGREGATORS)}")

    def _apply_granularity(self) -> None:
        """``activation_per_channel``: make every activation quantizer per channel (axis 1)."""
        if not self.settings.activation_per_channel:
            return
        for q in self.activations:
            if q.channel_axis is not None:
                continue
            shape = q.output.get_partial_shape()
            if shape.rank.is_dynamic or shape.rank.get_length() < 2 or shape[1].is_dynamic:
                raise NotSupportedError(
                    f"{self.settings.config_source}.activations.granularity: 'perchannel' needs a static channel "
                    f"dimension (axis 1); tensor '{q.output.get_node().get_friendly_name()}' has shape {shape}; "
                    "expected 'pertensor' for this model")
            q.channel_axis = 1

    @staticmethod
    def _requests(q: ActivationQuantizer, kind: str, low: bool, prob: float) -> list[StatisticRequest]:
        ax = q.channel_axis
        pc = ax is not None
        lo_r = Reduction.MIN_PER_CHANNEL if pc else Reduction.MIN
        hi_r = Reduction.MAX_PER_CHANNEL if pc else Reduction.MAX
        if kind == "min":
            return [StatisticRequest(q.output, lo_r, ax)]
        if kind == "max":
            return [StatisticRequest(q.output, hi_r, ax)]
        if kind == "abs_max":
            return [StatisticRequest(q.output, lo_r, ax), StatisticRequest(q.output, hi_r, ax)]
        if kind == "quantile":
            if low:
                return [StatisticRequest(q.output, Reduction.QUANTILE_LOW_PER_CHANNEL if pc else Reduction.QUANTILE_LOW,
                                         ax, prob)]
            return [StatisticRequest(q.output, Reduction.QUANTILE_HIGH_PER_CHANNEL if pc else Reduction.QUANTILE_HIGH,
                                     ax, prob)]
        # abs_quantile; a lower bound also needs the sign of the tensor
        reqs = [StatisticRequest(q.output, Reduction.ABS_QUANTILE_PER_CHANNEL if pc else Reduction.ABS_QUANTILE,
                                 ax, prob)]
        return reqs + ([StatisticRequest(q.output, lo_r, ax)] if low else [])

    def _first_layers(self) -> set[int]:
        """Instance ids of weighted ops with no quantized weighted op upstream of their data input."""
        weighted = {w.node.get_instance_id() for w in self.weights}
        first = set()
        for w in self.weights:
            stack, seen, found = [w.node.input(w.port ^ 1).get_source_output().get_node()], set(), False
            while stack and not found:
                node = stack.pop()
                key = node.get_instance_id()
                if key in seen:
                    continue
                seen.add(key)
                if key in weighted:
                    found = True
                    break
                stack.extend(i.get_source_output().get_node() for i in node.inputs())
            if not found:
                first.add(w.node.get_instance_id())
        return first

    def _signed_input_layers(self) -> set[int]:
        """Instance ids of weighted ops whose activation quantizer is signed or has a zero point
        (the runtime shifts such inputs into u8, so typical input codes are large)."""
        out = set()
        for q in self.activations:
            if q.params is not None and (q.params.signed or np.any(q.params.zero_point != 0)):
                # a quantizer moved up through MaxPool, Transpose, Concat... feeds the layers after them
                stack, seen = [i.get_node() for i in q.consumers], set()
                while stack:
                    node = stack.pop()
                    if node.get_instance_id() in seen:
                        continue
                    seen.add(node.get_instance_id())
                    out.add(node.get_instance_id())
                    if carries_quantized(node):
                        stack.extend(t.get_node() for o in node.outputs() for t in o.get_target_inputs())
        return out

    def compute_weights(self) -> None:
        """Evaluate the weight sub-graphs and compute per-channel quantizers and integer codes.

        Needs :meth:`compute_ranges` first (the saturation fix looks at activation signedness).
        A weight tensor shared by several ops is quantized once, with the narrowest bit width any
        of its consumers needs, so every consumer and the bias correction see the same values.
        """
        s = self.settings
        fix: set[int] = set()
        if s.saturation_fix == "all":
            fix = {w.node.get_instance_id() for w in self.weights}
        elif s.saturation_fix == "first_layer":
            # convolutions, and the MatMuls (FullyConnected) of models other than transformers:
            # the CPU plugin's int8 FullyConnected saturates too (measured: 17% relative error on
            # full-range signed operands; a random-weight EfficientNet-B0's classifier, top-1
            # agreement 0.30 -> 0.94 with the fix), but on a transformer's LayerNorm outputs the
            # 7-bit weights cost more than they save (minilm_l6_v2 output cosine 0.981 without the
            # fix on its MatMuls, 0.950 with it)
            fixed_types = _CONV_TYPES if self.transformer else _CONV_TYPES | {"MatMul"}
            fix = {i for i in self._first_layers() | self._signed_input_layers()
                   if i in {w.node.get_instance_id() for w in self.weights if w.node.get_type_name() in fixed_types}}
        groups: dict[tuple[ov.Output, tuple[int, ...]], list[WeightQuantizer]] = {}
        for w in self.weights:
            groups.setdefault((w.source, w.keep_axes), []).append(w)
        values = evaluate_constants([key[0] for key in groups])
        for (_, keep_axes), members, value in zip(groups.keys(), groups.values(), values):
            # a weight shared by ops of different schemes takes the narrowest one
            weight_bits = min(self.weight_spec(m.node)[0] for m in members)
            narrow = weight_bits == 8 and any(m.node.get_instance_id() in fix for m in members)
            value = value.astype(np.float32)
            levels = s.weight_levels
            if narrow and levels:
                levels = narrow_levels(*levels)
            params = compute_weight_params(value, keep_axes, mode=s.weight_mode,
                                           bits=weight_bits - 1 if narrow else weight_bits, narrow_range=True,
                                           level_low=levels[0] if levels else None,
                                           level_high=levels[1] if levels else None, estimator=s.weight_ranges)
            codes = quantize_to_int(value, params)
            dequantized = dequantize(codes, params)
            for m in members:
                m.value, m.params, m.codes, m.dequantized = value, params, codes, dequantized

    def compute_ranges(self, stats: Statistics) -> None:
        """Set ``params`` of every activation quantizer from the collected statistics.

        Per tensor: the lower and upper bounds are estimated (:class:`RangeSpec`), clipped by the
        clipping values, then the mode is chosen (:meth:`_mode_for`); a symmetric quantizer takes
        its upper bound from ``symmetric_max_type`` when set, and ``clipping_value`` bounds its
        ``max|x|``. Per channel: the same with arrays ``(1, C, 1, ...)`` and the settings' mode.
        The grid is ``activation_levels`` when set (halved for the narrowed second input of an
        activation x activation MatMul), else that of ``activation_bits``. A per-tensor range
        computed after a top-level If aggregates the samples of each combination of branches
        apart (the lowest lower bound and the highest upper bound of the groups win).

        :param stats: the statistics requested by :meth:`statistic_requests`.
        :raises NotSupportedError: on a range-estimator type or aggregator that is not available.
        """
        r = self.settings.ranges
        self._check_ranges()
        for q in self.activations:
            lo = self._estimate(stats, q, r.min_type, r.min_aggregator, True, r.min_outlier_prob)
            hi = self._estimate(stats, q, r.max_type, r.max_aggregator, False, r.outlier_prob)
            lo, hi = self._clip(lo, hi)
            mode = self._mode_for(lo, hi, q.output) if q.channel_axis is None else self.activation_mode
            if mode == "symmetric":
                if r.symmetric_max_type:
                    hi = self._estimate(stats, q, r.symmetric_max_type, r.max_aggregator, False, r.outlier_prob)
                    lo, hi = self._clip(lo, hi)
                if r.clipping_value is not None:  # bounds max|x| of a symmetric range
                    lo = np.maximum(lo, -abs(r.clipping_value))
            bits, levels = self.settings.activation_bits, self.settings.activation_levels
            if bits == 8 and self.settings.saturation_fix == "all" and q.output in self._second_operands:
                bits = 7
                levels = narrow_levels(*levels) if levels else None
            if q.channel_axis is None:
                q.stats = (float(lo), float(hi))
            else:
                q.stats = (float(np.min(lo)), float(np.max(hi)))
            q.params = compute_activation_params(lo, hi, mode, bits, *(levels or (None, None)))
        self._unify_ranges()

    def _unify_ranges(self) -> None:
        """Give every per-tensor quantizer of a unified group (the inputs of one Concat) the union
        of the group's ranges, on the narrowest grid any member needs."""
        s = self.settings
        for members in self.unified:
            members = [m for m in members if m.channel_axis is None]
            if len(members) < 2:
                continue
            lo = min(m.stats[0] for m in members)
            hi = max(m.stats[1] for m in members)
            bits, levels = s.activation_bits, s.activation_levels
            if bits == 8 and s.saturation_fix == "all" and any(m.output in self._second_operands for m in members):
                bits = 7
                levels = narrow_levels(*levels) if levels else None
            symmetric = any(m.output in self._symmetric_outputs for m in members)
            mode = "symmetric" if symmetric else self._mode_for(lo, hi)
            params = compute_activation_params(lo, hi, mode, bits, *(levels or (None, None)))
            for m in members:
                m.params = params

    def _clip(self, lo, hi):
        """Apply ``min_clipping_value`` (raises ``lo``) and ``clipping_value`` (lowers ``hi``)."""
        r = self.settings.ranges
        if r.min_clipping_value is not None:
            lo = np.maximum(lo, r.min_clipping_value) if np.ndim(lo) else max(lo, r.min_clipping_value)
        if r.clipping_value is not None:
            hi = np.minimum(hi, r.clipping_value) if np.ndim(hi) else min(hi, r.clipping_value)
        return lo, hi

    def _mode_for(self, lo: float, hi: float, output: ov.Output | None = None) -> str:
        """The activation mode of one per-tensor quantizer (see ``MinMaxSettings.skewed_asymmetric``);
        always symmetric for the operands of an attention product (``output`` in ``_symmetric_outputs``)."""
        if output is not None and output in self._symmetric_outputs:
            return "symmetric"
        ratio = self.settings.skewed_asymmetric
        if (self.activation_mode == "symmetric" and ratio and lo < 0 < hi
                and min(-lo, hi) < ratio * max(-lo, hi)):
            return "asymmetric"
        return self.activation_mode

    def _estimate(self, stats: Statistics, q: ActivationQuantizer, kind: str, aggregator: str, low: bool,
                  prob: float):
        """One bound of ``q``'s range from the statistics (see :class:`RangeSpec`).

        :param kind: the per-sample statistic, one of :data:`ESTIMATOR_TYPES`.
        :param aggregator: key of :data:`AGGREGATORS` (per-tensor quantizers only).
        :param low: the lower bound (True) or the upper one.
        :param prob: the bound's ``outlier_prob``.
        :return: a float per tensor; per channel a float64 array ``(1, C, 1, ...)`` (rank of the tensor).
        """
        out, ax = q.output, q.channel_axis

        def get(statistic: str, p: float | None = None):
            """Per tensor: one value per sample; per channel: folded over the samples (min for
            the lower statistics, max for the upper ones)."""
            per_tensor, per_channel = _STATISTICS[statistic]
            if ax is None:
                return stats.get(out, per_tensor, None, p)
            row = stats.get(out, per_channel, ax, p)
            return row.min(axis=0) if statistic in ("min", "quantile_low") else row.max(axis=0)

        if kind == "abs_max":
            values = np.maximum(np.abs(get("min")), np.abs(get("max")))
        elif kind == "quantile":
            values = get("quantile_low" if low else "quantile_high", prob)
        elif kind == "abs_quantile":
            values = get("abs_quantile", prob)
        else:
            values = get(kind)
        abs_low = kind.startswith("abs_") and low  # -value where the tensor goes negative, else 0
        if ax is None:
            groups = self._sample_groups(stats, out) if self._branch_deps else None
            if groups is None:
                value = AGGREGATORS[aggregator](values, prob)
            else:
                # samples that took different If branches come from different distributions: each
                # group's range is aggregated apart and the range covers them all (a mean over
                # both clipped the wider branch: cosine 0.855 -> 0.98 on a 2-branch model)
                per_group = [AGGREGATORS[aggregator](values[groups == g], prob) for g in np.unique(groups)]
                value = min(per_group) if low else max(per_group)
            return (-value if float(np.min(get("min"))) < 0 else 0.0) if abs_low else value
        if abs_low:
            values = np.where(get("min") < 0, -values, 0.0)
        view = [1] * out.get_partial_shape().rank.get_length()
        view[ax] = -1
        return values.reshape(view)
