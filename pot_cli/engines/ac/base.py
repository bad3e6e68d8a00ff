"""Registries and protocols of the Accuracy-Checker-style engine's plug-in types.

Each Accuracy Checker section type (converter, adapter, postprocessing, metric) is a class
registered under its Accuracy Checker name with the config keys it reads::

    @register_adapter("ssd", keys=())
    class SSDAdapter(Adapter):
        def process(self, outputs, meta): ...

A config entry is validated when the class is built (``cls(params, ctx)``): unknown keys and
bad values go to ``ctx.add(key, message)`` and are reported together before anything runs.

The flow of one evaluation sample is Accuracy Checker's: the converter gives its annotation,
the reader and preprocessing give the input and a :class:`SampleMeta`, the adapter turns the
raw outputs into a prediction, each postprocessing step maps ``(annotation, prediction)`` to new
records (steps never change their inputs in place), and each metric reads the pair.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from pot_cli.engines.ac.representations import DatasetMeta, SampleMeta
from pot_cli.errors import EngineError

# --- parsing context ------------------------------------------------------------------------------


@dataclass
class Context:
    """Where a config entry sits and how its paths resolve.

    :param problems: the collector of ``<file>: <key.path>: <message>`` lines
        (:class:`pot_cli.engines.preprocessing.Problems`).
    :param where: key path of the entry, e.g. ``models[0].datasets[0].metrics[1]``.
    :param base: folder relative paths resolve against (the YAML's folder). Path keys the engine
        knows (``*_file``, ``*_dir``, ``data_source``) arrive absolute already, with the
        ``DATA_DIR``/``ANNOTATIONS_DIR`` roots applied (:mod:`pot_cli.engines.ac.config_reader`).
    :param data_source: the dataset's ``data_source`` folder, or None.
    :param dataset_meta: the converter's label map etc. (metrics and postprocessing read it).
    :param segmentation_masks_source: the dataset's ``segmentation_masks_source`` folder, or None.
    :param extensions: file suffixes the dataset's reader takes (``.png``, ``.npy``...), for
        converters that list folders.
    """

    problems: Any
    where: str
    base: Path = Path(".")
    data_source: Path | None = None
    dataset_meta: DatasetMeta = field(default_factory=DatasetMeta)
    segmentation_masks_source: Path | None = None
    extensions: tuple[str, ...] = ()

    def add(self, key: str | None, message: str) -> None:
        """Record a problem at ``<where>.<key>`` (or at ``where`` when ``key`` is None)."""
        self.problems.add(f"{self.where}.{key}" if key else self.where, message)

    def path(self, value: Any) -> Path:
        """The path of a config value: absolute as given, else relative to ``base``."""
        p = Path(str(value)).expanduser()
        return p if p.is_absolute() else self.base / p

    def at(self, key: str | int) -> "Context":
        """The context of a nested entry (``key`` a name or a list index)."""
        where = f"{self.where}[{key}]" if isinstance(key, int) else f"{self.where}.{key}"
        return Context(self.problems, where, self.base, self.data_source, self.dataset_meta,
                       self.segmentation_masks_source, self.extensions)


# --- typed parameter readers (report through ctx, return a usable default) ------------------------

def read_number(params: Mapping, key: str, default: float, ctx: Context, *, low: float | None = None,
                high: float | None = None, integer: bool = False) -> float:
    """``params[key]`` as a number in ``[low, high]`` (default when absent); a problem otherwise."""
    value = params.get(key, default)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not (
        integer and not float(value).is_integer())
    if isinstance(value, str):
        try:
            value, ok = float(value), not integer
        except ValueError:
            ok = False
    if not ok or (low is not None and value < low) or (high is not None and value > high):
        rng = f" in [{low}, {high}]" if low is not None or high is not None else ""
        ctx.add(key, f"{params.get(key)!r} is not {'an integer' if integer else 'a number'}{rng}")
        return default
    return int(value) if integer else float(value)


def read_bool(params: Mapping, key: str, default: bool, ctx: Context) -> bool:
    """``params[key]`` as a bool (``true``/``false``, also the strings ``"True"``/``"False"``)."""
    value = params.get(key, default)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not isinstance(value, bool):
        ctx.add(key, f"{value!r} is not a boolean; expected true or false")
        return default
    return value


def read_choice(params: Mapping, key: str, default: str | None, choices: Sequence[str], ctx: Context) -> str | None:
    """``params[key]`` as one of ``choices``."""
    value = params.get(key, default)
    if value is not None and value not in choices:
        ctx.add(key, f"{value!r} is not supported; expected one of: {', '.join(map(str, choices))}")
        return default
    return value


# --- registries -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Registered:
    """One registered type: its Accuracy Checker ``name``, the class and the config keys it reads."""

    name: str
    cls: type
    keys: tuple[str, ...]


CONVERTERS: dict[str, Registered] = {}
ADAPTERS: dict[str, Registered] = {}
POSTPROCESSING: dict[str, Registered] = {}
METRICS: dict[str, Registered] = {}


def _register(table: dict, name: str, keys: Sequence[str]):
    def deco(cls):
        table[name] = Registered(name, cls, tuple(keys))
        cls.type_name = name
        return cls
    return deco


def register_converter(name: str, keys: Sequence[str]):
    """Class decorator: a :class:`Converter` under ``annotation_conversion.converter: name``."""
    return _register(CONVERTERS, name, keys)


def register_adapter(name: str, keys: Sequence[str]):
    """Class decorator: an :class:`Adapter` under ``launchers[].adapter: name``."""
    return _register(ADAPTERS, name, keys)


def register_postprocessing(name: str, keys: Sequence[str]):
    """Class decorator: a :class:`Postprocessor` under ``postprocessing[].type: name``."""
    return _register(POSTPROCESSING, name, keys)


def register_metric(name: str, keys: Sequence[str]):
    """Class decorator: an :class:`ACMetric` under ``metrics[].type: name``."""
    return _register(METRICS, name, keys)


# --- protocols ------------------------------------------------------------------------------------

@dataclass
class Converted:
    """What a converter gives: one entry per sample, in dataset order.

    :param files: the input file of each sample (image paths), absolute.
    :param annotations: one annotation record per sample (see :mod:`.representations`).
    :param meta: the dataset's label map, background label and segmentation colours.
    """

    files: list[Path]
    annotations: list
    meta: DatasetMeta = field(default_factory=DatasetMeta)


class Converter:
    """Reads an annotation format (``annotation_conversion``). Built with the entry's params
    (validated into ``ctx``); :meth:`convert` reads the files.

    :raises DatasetError: from :meth:`convert` when a file is missing or malformed (naming the
        file and line or element).
    """

    type_name = ""
    #: the record kind of its annotations: ``label``, ``regression``, ``detection`` or ``segmentation``
    annotation_kind = "label"

    def __init__(self, params: Mapping, ctx: Context):
        self.params = params
        self.ctx = ctx

    def convert(self) -> Converted:
        raise NotImplementedError


class Outputs(Mapping):
    """The raw outputs of one inference, batch 1, reachable by any of each output's names
    (tensor names and the producing node's friendly name), in model order by index.

    :param arrays: one array per model output, in model order.
    :param names: the names of each output (same order).
    """

    def __init__(self, arrays: Sequence[np.ndarray], names: Sequence[Sequence[str]]):
        self.arrays = list(arrays)
        self.names = [tuple(n) for n in names]

    def __getitem__(self, name: str) -> np.ndarray:
        for arr, names in zip(self.arrays, self.names):
            if name in names:
                return arr
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(n[0] if n else f"output{k}" for k, n in enumerate(self.names))

    def __len__(self) -> int:
        return len(self.arrays)

    def find(self, name: str | None, what: str) -> np.ndarray:
        """The output ``name`` (the first output when None).

        :param what: the config key asking, for the message (``adapter.output_blob``).
        :raises EngineError: when the model has no such output.
        """
        if name is None:
            return self.arrays[0]
        for arr, names in zip(self.arrays, self.names):
            if name in names or any(n.startswith(name + ":") or n.startswith(name + "/") for n in names):
                return arr
        found = ", ".join(n[0] for n in self.names if n) or "(unnamed)"
        raise EngineError(f"{what}: the model has no output '{name}'; expected one of: {found}")


class Adapter:
    """Turns raw outputs into a prediction record (``launchers[].adapter``).

    Subclasses implement :meth:`process`. ``ctx.add`` reports bad params at build time.
    """

    type_name = ""

    def __init__(self, params: Mapping, ctx: Context):
        self.params = params
        self.ctx = ctx

    def process(self, outputs: Outputs, meta: SampleMeta):
        """The prediction of one sample.

        :param outputs: the raw outputs of the sample (batch 1).
        :param meta: the sample's image metadata.
        :raises EngineError: when an output does not have the expected shape (naming it).
        """
        raise NotImplementedError


class Postprocessor:
    """A ``postprocessing`` step, applied to annotations and/or predictions by ``apply_to``
    (``all`` default, ``annotation``, ``prediction``) as Accuracy Checker does.

    Subclasses implement :meth:`process_annotation` and/or :meth:`process_prediction`; each returns
    a new record (the input must stay unchanged: the same annotation is scored many times).
    """

    type_name = ""
    #: record classes the step applies to (others pass through unchanged)
    applies_to: tuple[type, ...] = ()

    def __init__(self, params: Mapping, ctx: Context):
        self.params = params
        self.ctx = ctx
        self.apply_to = read_choice(params, "apply_to", "all", ("all", "annotation", "prediction"), ctx)

    def process_annotation(self, annotation, meta: SampleMeta, dataset_meta: DatasetMeta):
        return annotation

    def process_prediction(self, prediction, meta: SampleMeta, dataset_meta: DatasetMeta):
        return prediction

    def __call__(self, annotation, prediction, meta: SampleMeta, dataset_meta: DatasetMeta):
        """``(annotation, prediction)`` after the step (either may be None, then left as is)."""
        if annotation is not None and self.apply_to in ("all", "annotation") and \
                (not self.applies_to or isinstance(annotation, self.applies_to)):
            annotation = self.process_annotation(annotation, meta, dataset_meta)
        if prediction is not None and self.apply_to in ("all", "prediction") and \
                (not self.applies_to or isinstance(prediction, self.applies_to)):
            prediction = self.process_prediction(prediction, meta, dataset_meta)
        return annotation, prediction


class ACMetric:
    """A metric over (prediction, annotation) records (``metrics[]``).

    :ivar name: the metric's ``name`` (default its type).
    :ivar higher_better: True when a larger value is better.
    :ivar annotation_kind: the annotation record kind it needs: ``detection``,
        ``segmentation``, ``label`` or ``regression``.

    Subclasses implement :meth:`evaluate` (the dataset value, as Accuracy Checker reports it:
    the mean of a vector result) and :meth:`per_sample` (one float per sample for
    AccuracyAwareQuantization's ranking; may be NaN when the sample carries no information).
    """

    type_name = ""
    higher_better = True
    annotation_kind = "detection"

    def __init__(self, params: Mapping, ctx: Context):
        self.params = params
        self.ctx = ctx
        self.name = str(params.get("name") or self.type_name)
        self.type = self.type_name

    def per_sample(self, prediction, annotation) -> float:
        raise NotImplementedError

    def evaluate(self, predictions: Sequence, annotations: Sequence) -> float:
        raise NotImplementedError

    def drop(self, baseline: float, value: float) -> float:
        """How much worse ``value`` is than ``baseline`` (negative: better)."""
        return baseline - value if self.higher_better else value - baseline


def nanmean(values) -> float:
    """Mean of the non-NaN entries (NaN when there are none), without NumPy's warning."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else math.nan
