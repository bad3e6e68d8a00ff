"""Typed, frozen configuration objects built once from a validated POT config.

Nothing downstream of :mod:`pot_cli.config.loader` sees the raw dictionary: every section of a
POT configuration file becomes one of the frozen dataclasses below, with the defaults of the
original Post-Training Optimization Tool applied. Sequences are tuples and free-form mappings are
read-only (:class:`types.MappingProxyType`, nested lists as tuples); :func:`thaw` turns them back
into plain JSON values.

The layout follows the POT file format::

    {"model": {...}, "engine": {...}, "compression": {"target_device": ..., "algorithms": [...]}}
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, Mapping

#: Values accepted for ``compression.target_device`` after normalisation (``VPU`` becomes ``NPU``).
TARGET_DEVICES = ("ANY", "CPU", "CPU_SPR", "GPU", "NPU", "GNA", "GNA3", "GNA3.5")
#: Algorithm names accepted in ``compression.algorithms[*].name`` (POT's registry keys).
ALGORITHM_NAMES = (
    "DefaultQuantization",
    "MinMaxQuantization",
    "AccuracyAwareQuantization",
    "FastBiasCorrection",
    "BiasCorrection",
    "ActivationChannelAlignment",
    "QuantNoiseEstimator",
)

TargetDevice = Literal["ANY", "CPU", "CPU_SPR", "GPU", "NPU", "GNA", "GNA3", "GNA3.5"]
EngineType = Literal["simplified", "accuracy_checker", "data_free"]
Preset = Literal["performance", "mixed"]
Mode = Literal["symmetric", "asymmetric"]
Granularity = Literal["pertensor", "perchannel"]
SaturationFix = Literal["first_layer", "all", "no"]
DropType = Literal["absolute", "relative"]
EstimatorType = Literal["min", "max", "abs_max", "quantile", "abs_quantile"]
Aggregator = Literal[
    "mean", "max", "min", "median", "mean_no_outliers", "median_no_outliers", "hl_estimator"
]
RangePreset = Literal["default", "quantile"]

#: A JSON value made read-only: mappings are ``MappingProxyType``, arrays are tuples.
FrozenJson = Any


def freeze(value: Any) -> FrozenJson:
    """Return a read-only deep copy of a JSON-like value.

    :param value: dicts, lists, tuples and scalars.
    :return: the same structure with dicts as :class:`types.MappingProxyType` and lists as tuples.
    """
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: FrozenJson) -> Any:
    """Return a plain, JSON-serialisable deep copy of a value made by :func:`freeze`.

    :param value: a frozen (or plain) JSON-like value.
    :return: the same structure with plain dicts and lists.
    """
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class ModelConfig:
    """The ``model`` section: one OpenVINO IR.

    :param model_name: name used in logs and output file names; defaults to the stem of ``model``.
    :param model: absolute path of the IR ``.xml`` (checked to exist).
    :param weights: absolute path of the ``.bin``; defaults to the ``.bin`` beside the ``.xml``.
    :param cascade: for a cascade (``model.cascade``): its sub-models in order; ``model`` and
        ``weights`` are then those of the first one.
    """

    model_name: str
    model: Path
    weights: Path
    cascade: tuple["CascadeEntry", ...] = ()


@dataclass(frozen=True)
class CascadeEntry:
    """One sub-model of ``model.cascade``.

    :param name: sub-model name (output files ``<model_name>_<name>.xml``; ignored scopes are keyed by it).
    :param model: absolute path of its ``.xml``.
    :param weights: absolute path of its ``.bin``.
    """

    name: str
    model: Path
    weights: Path


@dataclass(frozen=True)
class EngineConfig:
    """The ``engine`` section: how calibration and evaluation data are fed to the model.

    :param type: ``simplified`` (a folder or glob of inputs, no annotations) or
        ``accuracy_checker`` (an Accuracy Checker config, with metrics). When the section has no
        ``type``, it is ``simplified`` if ``data_source`` is given, else ``accuracy_checker``
        (POT's default).
    :param data_source: simplified engine: absolute path of a directory, a file, or a Unix glob.
    :param layout: input layout such as ``"NCHW"``, or a mapping input name -> layout.
    :param shape: static input shape (our extension for dynamic models), or a mapping input name
        -> shape.
    :param device: OpenVINO device used for calibration and evaluation (default ``"CPU"``).
    :param stat_requests_number: parallel infer requests while collecting statistics
        (``None``: let the engine choose).
    :param eval_requests_number: parallel infer requests while evaluating (``None``: engine
        default).
    :param ac_config: absolute path of an Accuracy Checker YAML (``engine.config``), if any.
    :param ac_inline: inline Accuracy Checker content (the ``name``, ``models``, ``datasets``,
        ``launchers`` keys of the section, read-only), or ``None``.
    :param generate_data: ``data_free``: generate synthetic images into ``data_source`` when it
        holds none (default True); False: use the images already there.
    :param data_type: ``data_free``: the kind of generated data; only ``"image"``.

    ``type: data_free`` (the 2022.x original's data-free mode, :mod:`pot_cli.engines.data_free`)
    calibrates on synthetic images cached in ``data_source`` (``None``: a folder per input size
    under the user's cache directory), as many as the largest ``stat_subset_size``.
    """

    type: EngineType
    data_source: str | None = None
    layout: str | Mapping[str, str] | None = None
    shape: tuple[int, ...] | Mapping[str, tuple[int, ...]] | None = None
    device: str = "CPU"
    stat_requests_number: int | None = None
    eval_requests_number: int | None = None
    ac_config: Path | None = None
    ac_inline: Mapping[str, FrozenJson] | None = None
    generate_data: bool = True
    data_type: str = "image"


@dataclass(frozen=True)
class StatisticSpec:
    """How one border (``min`` or ``max``) of a quantization range is estimated.

    ``None`` fields mean "the algorithm's default for this preset".

    :param type: per-sample estimator: ``min``, ``max``, ``abs_max``, ``quantile``,
        ``abs_quantile``.
    :param aggregator: reduction over the calibration samples (activations only): ``mean``,
        ``max``, ``min``, ``median``, ``mean_no_outliers``, ``median_no_outliers``,
        ``hl_estimator``.
    :param outlier_prob: probability mass cut by the quantile estimators, in [0, 1].
    :param clipping_value: clip the estimated border to this value (min: lower bound, max: upper
        bound), in the tensor's units.
    :param granularity: ``pertensor`` or ``perchannel`` statistics (POT accepted it here too).
    """

    type: EstimatorType | None = None
    aggregator: Aggregator | None = None
    outlier_prob: float | None = None
    clipping_value: float | None = None
    granularity: Granularity | None = None


@dataclass(frozen=True)
class RangeEstimator:
    """A ``range_estimator``: of a quantizer override, or the top-level one of ``params``.

    :param preset: ``default`` (min/max) or ``quantile`` for both borders; ``None`` if not given.
    :param min: estimator of the low border, or ``None``.
    :param max: estimator of the high border, or ``None``.
    """

    preset: RangePreset | None = None
    min: StatisticSpec | None = None
    max: StatisticSpec | None = None


@dataclass(frozen=True)
class QuantizerOverrides:
    """User overrides of the quantization scheme for ``weights`` or ``activations``.

    Every field is optional: ``None`` means "take it from the hardware config and the preset".
    When ``level_low``/``level_high`` are absent the levels follow from ``bits`` and the sign of
    the range: ``[0, 2**bits - 1]`` unsigned, ``[-2**(bits-1), 2**(bits-1) - 1]`` signed.

    :param bits: bit width, 1..32.
    :param mode: ``symmetric`` or ``asymmetric``.
    :param granularity: ``pertensor`` or ``perchannel``.
    :param level_low: lowest integer level.
    :param level_high: highest integer level.
    :param range_estimator: how the float range is estimated, or ``None``.
    """

    bits: int | None = None
    mode: Mode | None = None
    granularity: Granularity | None = None
    level_low: int | None = None
    level_high: int | None = None
    range_estimator: RangeEstimator | None = None


@dataclass(frozen=True)
class IgnoredOperation:
    """One entry of ``ignored.operations``: skip every node of ``type`` whose attributes match.

    :param type: OpenVINO operation type, e.g. ``"Convolution"``.
    :param attributes: read-only mapping attribute name -> scalar value; empty matches any node.
    """

    type: str
    attributes: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class IgnoredScope:
    """The ``ignored`` parameter: nodes excluded from quantization.

    :param scope: node friendly names.
    :param operations: operation types (optionally with attribute values).
    :param skip_model: leave the whole (sub-)model in floating point.
    :param models: for a cascade: sub-model name -> its own ignored scope (scope names without a
        sub-model prefix); a sub-model not named here has nothing ignored.
    """

    scope: tuple[str, ...] = ()
    operations: tuple[IgnoredOperation, ...] = ()
    skip_model: bool = False
    models: Mapping[str, "IgnoredScope"] = field(default_factory=lambda: MappingProxyType({}))

    def for_model(self, name: str) -> "IgnoredScope":
        """The ignored scope of the cascade's sub-model ``name`` (empty when it is not named;
        a top-level ``skip_model`` skips every sub-model)."""
        sub = self.models.get(name, IgnoredScope())
        return dataclasses.replace(sub, skip_model=True) if self.skip_model else sub


@dataclass(frozen=True)
class MetricSpec:
    """One entry of AccuracyAwareQuantization ``metrics``.

    :param name: metric name as defined by the engine.
    :param baseline_value: metric of the FP32 model if known (skips its evaluation).
    """

    name: str
    baseline_value: float | None = None


@dataclass(frozen=True)
class QuantizationParams:
    """The ``params`` of one algorithm, POT defaults applied.

    One class serves every algorithm; an algorithm reads the fields it understands. The schema
    accepts per algorithm only POT's keys for it (for example ``preset`` is rejected for
    ``FastBiasCorrection``). The last four "compression" fields are copied from the
    ``compression`` section, as POT did, so an algorithm needs nothing else. The
    AccuracyAwareQuantization fields at the end are meaningful only for that algorithm.

    ``threshold`` defaults to 2.0 for both bias corrections (POT used 1000.0 for ``BiasCorrection`` and for
    DefaultQuantization/AccuracyAwareQuantization with ``use_fast_bias: false``).
    The POT preset ``accuracy`` is accepted and read as ``mixed`` (what POT did for ANY/CPU/GPU).
    ``speed_check`` (our extension, DefaultQuantization and MinMaxQuantization) measures each
    quantized layer on the calibration device and keeps in floating point those slower in INT8
    (:mod:`pot_cli.algorithms.speed_check`); ``None`` means on for CPU and CPU_SPR, off for ANY.
    ``smooth_quant_alpha`` (our extension, after NNCF) is SmoothQuant's migration strength for
    the FullyConnected layers of transformers (:mod:`pot_cli.algorithms.smooth_quant`); ``None``
    lets a simulation on a few calibration samples choose it per tensor (0.5, 0.75, 0.95 or no
    smoothing), a value in [0, 1] is used for every tensor, a negative value turns SmoothQuant off.
    ``saturation_fix`` ``None`` means the device's default: ``first_layer`` for ANY, CPU and
    CPU_SPR, ``no`` for the others; a value given in the config applies to any device.
    ``quantize_recurrent`` (not a POT or NNCF key: neither had a switch, both quantized
    LSTMSequence/GRUSequence where the hardware config lists them) opts in to quantizing
    recurrent ops; by default they stay in floating point.

    ``range_estimator`` at the top of ``params`` (POT allowed it there as a global default) is
    already merged into ``activations`` and ``weights`` by the loader, so an algorithm reads only
    ``activations.range_estimator`` and ``weights.range_estimator``; the field keeps what was
    written, for the record. The merge, per quantizer (activations, then weights separately):

    - no top-level ``range_estimator``: the quantizer's own, unchanged;
    - the quantizer has no ``range_estimator`` (or no ``activations``/``weights`` section at
      all): it gets the top-level one (an override with only ``range_estimator`` set, every other
      field ``None``);
    - both: key by key, the quantizer's own wins: its ``preset`` if given, else the top-level
      ``preset``; ``min`` and ``max`` each merged field by field (``type``, ``aggregator``,
      ``outlier_prob``, ``clipping_value``, ``granularity``): the quantizer's field if given, else
      the top-level one. (POT's ``get_range_estimator_config`` instead ignored the top-level
      estimator entirely once the quantizer had its own; the results differ only when both
      are given.)
    - for weights the top-level ``aggregator`` (activations only) is dropped; a top-level
      ``min``/``max`` left empty by that is omitted, and nothing left at all means no override.
    """

    preset: Preset = "performance"
    stat_subset_size: int = 300
    stat_batch_size: int = 1
    shuffle_data: bool = False
    seed: int = 0
    use_fast_bias: bool = True
    use_layerwise_tuning: bool = False
    saturation_fix: SaturationFix | None = None
    speed_check: bool | None = None
    smooth_quant_alpha: float | None = None
    quantize_recurrent: bool = False
    threshold: float = 2.0
    apply_for_all_nodes: bool = False
    ignored: IgnoredScope = field(default_factory=IgnoredScope)
    weights: QuantizerOverrides | None = None
    activations: QuantizerOverrides | None = None
    range_estimator: RangeEstimator | None = None
    # copied from the compression section
    target_device: TargetDevice = "ANY"
    model_type: Literal["transformer"] | None = None
    inplace_statistics: bool = True
    dump_intermediate_model: bool = False
    # AccuracyAwareQuantization
    maximal_drop: float = 0.01
    drop_type: DropType = "absolute"
    base_algorithm: Literal["DefaultQuantization", "MinMaxQuantization"] = "DefaultQuantization"
    ranking_subset_size: int = 300
    max_iter_num: int | None = None
    metric_subset_ratio: float = 0.5
    use_prev_if_drop_increase: bool = True
    convert_to_mixed_preset: bool = False
    metrics: tuple[MetricSpec, ...] = ()
    annotation_free: bool = False
    annotation_conf_threshold: float = 0.6
    tune_hyperparams: bool = False
    # QuantNoiseEstimator (POT's keys: mode, type, results_dump_filename, eps)
    mode: Literal["full_fq_noise", "layerwise_fq_noise", "simplified"] = "full_fq_noise"
    type: Literal["sqnr"] = "sqnr"
    results_dump_filename: str | None = None
    eps: float = 1e-15


@dataclass(frozen=True)
class AlgorithmConfig:
    """One entry of ``compression.algorithms``.

    :param name: POT algorithm name (see :data:`ALGORITHM_NAMES`).
    :param params: its typed parameters.
    """

    name: str
    params: QuantizationParams


@dataclass(frozen=True)
class CompressionConfig:
    """The ``compression`` section.

    :param target_device: device whose hardware config drives quantization (``VPU`` is read as
        ``NPU``); default ``ANY`` (the CPU rules).
    :param model_type: ``None`` or ``"transformer"`` (extra ignored patterns); POT's string
        ``"None"`` is read as ``None``.
    :param dump_intermediate_model: save the model after each algorithm.
    :param inplace_statistics: compute reductions inside the model (less memory).
    :param algorithms: algorithms in the order they run.
    :param analyze: our extension: after quantization, the per-layer sensitivity analysis and the
        recommendation (:mod:`pot_cli.algorithms.analysis`): ``True`` (target output cosine 0.99)
        or the target output cosine; ``None``: none.
    :param output_check: our extension: after quantization, the output model against FP32
        (:func:`pot_cli.algorithms.analysis.check_output`): ``{"samples": n, "target": t, "expected": {...}}``
        (keys optional; ``true`` in the file is ``{}``); ``None``: none.
    """

    target_device: TargetDevice = "ANY"
    model_type: Literal["transformer"] | None = None
    dump_intermediate_model: bool = False
    inplace_statistics: bool = True
    algorithms: tuple[AlgorithmConfig, ...] = ()
    analyze: bool | float | None = None
    output_check: dict | None = None


@dataclass(frozen=True)
class PotConfig:
    """A whole validated configuration.

    :param model: the model section.
    :param engine: the engine section.
    :param compression: the compression section.
    :param source: where it came from: a file path or ``"<command line>"``.
    :param raw: the configuration as used (paths absolute, defaults filled, aliases normalised),
        a plain JSON-serialisable dict for the report; a private copy, not read by anything else.
    """

    model: ModelConfig
    engine: EngineConfig
    compression: CompressionConfig
    source: str
    raw: dict = field(compare=False, hash=False)

