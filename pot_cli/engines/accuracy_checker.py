"""The Accuracy-Checker-style engine: annotated datasets with preprocessing and metrics.

Reads the Accuracy Checker configuration used with the original POT (``engine.config: ac.yml``)
or the same content inline in the POT config's ``engine`` section::

    models:
      - name: fmnist_cnn
        launchers: [{framework: openvino, device: CPU, adapter: classification}]
        datasets:
          - name: fashion_mnist
            data_source: val
            annotation_conversion: {converter: imagenet, annotation_file: val.txt}
            reader: {type: opencv_imread, reading_flag: gray}
            preprocessing: [{type: resize, size: 28}]
            metrics: [{type: accuracy, top_k: 1}]
            subsample_size: 1000

``datasets`` may also be a mapping of tagged datasets, ``{optimization: {...}, evaluation:
{...}}`` (POT's dataset tags): statistics are collected on ``optimization`` (which may have no
annotation, e.g. a calibration folder) and metrics on ``evaluation``. A list means its first
dataset serves both.

The YAML is read as Open Model Zoo's quantizer gave it to POT (launcher selection across
``models[]``, datasets completed from a definitions file, ``DATA_DIR`` roots:
:mod:`pot_cli.engines.ac.config_reader`). Supported types (anything else is a
:class:`~pot_cli.errors.ConfigError` naming the key and listing what is supported): launchers
``framework: dlsdk | openvino``; the adapters ``classification`` and ``regression`` (the raw
output is the prediction, read by :mod:`pot_cli.engines.metrics`) and every adapter, converter,
postprocessing step and metric registered in :mod:`pot_cli.engines.ac.base` (detection and
segmentation: ``docs/accuracy_checker_types.md`` lists them); readers and preprocessing of
:mod:`pot_cli.engines.preprocessing`; ``CONST_INPUT`` launcher inputs; ``subsample_size`` (a
count or ``"N%"``, seeded by ``subsample_seed``, default 666).

Images are decoded (OpenCV: BGR; ``pillow_imread``: RGB), preprocessed in ``H x W x C`` order, then laid out for the
model input (its ``layout``: the launcher's ``inputs``, ``engine.layout``, the IR, or inferred
from the shape) with batch 1. Unlike the simplified engine nothing is resized or converted
implicitly: a size or channel mismatch is an error that names the step to add.
"""
from __future__ import annotations

import collections
import concurrent.futures
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import cv2
import numpy as np
import openvino as ov

from pot_cli.config.loader import did_you_mean, resolve_path
from pot_cli.config.model import EngineConfig, thaw
from pot_cli.engines.ac import base as ac_base
from pot_cli.engines.ac.classification import list_files as _list_files
from pot_cli.engines.ac.classification import read_array as _read_array
from pot_cli.engines.ac.config_reader import (Roots, load_definitions, prepare_dataset, read_yaml,
                                              select_model_entry)
from pot_cli.engines.ac.representations import DatasetMeta, SampleMeta
from pot_cli.engines.image_io import (IMAGE_EXTENSIONS, ImageInput, create_image_input, infer_image_layout,
                                      parse_layout)
from pot_cli.engines.metrics import create_metrics
from pot_cli.engines.preprocessing import (_READ_FLAGS, IMAGE_READERS, Problems, Reader, Step, parse_reader,
                                           parse_step, positive_int, read_pillow)
from pot_cli.errors import ConfigError, DatasetError, NotSupportedError

log = logging.getLogger("pot")

FRAMEWORKS = ("dlsdk", "openvino")
#: adapters whose prediction is the raw output array, read by the classification and regression metrics
RAW_ADAPTERS = ("classification", "regression")
#: common keys of every metric entry that do not change its value
METRIC_COMMON_KEYS = ("type", "name", "reference", "threshold", "abs_threshold", "rel_threshold", "presenter")


def adapters() -> tuple[str, ...]:
    """Every supported ``adapter`` name."""
    _load_types()
    return RAW_ADAPTERS + tuple(sorted(ac_base.ADAPTERS))


def converters() -> tuple[str, ...]:
    """Every supported ``annotation_conversion.converter`` name."""
    _load_types()
    return tuple(sorted(ac_base.CONVERTERS))


def _load_types() -> None:
    """Import the modules that register the detection and segmentation types."""
    import importlib

    for module in ("classification", "converters", "detection", "postprocessing", "detection_metrics",
                   "segmentation"):
        try:
            importlib.import_module(f"pot_cli.engines.ac.{module}")
        except ModuleNotFoundError as e:  # pragma: no cover - only while a module is absent
            if e.name != f"pot_cli.engines.ac.{module}":
                raise
#: keys of each section that are read (launcher keys such as model, weights, batch are accepted and unused:
#: the POT config names the model)
_KEYS = {
    "model": ("name", "launchers", "datasets"),
    "launcher": ("framework", "device", "adapter", "inputs", "batch", "model", "weights", "allow_reshape_input",
                 "cpu_extensions", "tags", "_model_is_blob"),
    "dataset": ("name", "data_source", "annotation_conversion", "annotation", "dataset_meta", "reader",
                "preprocessing", "postprocessing", "metrics", "subsample_size", "subsample_seed", "shuffle",
                "batch", "segmentation_masks_source"),
}


# --- launcher, reader, preprocessing --------------------------------------------------------------

@dataclass(frozen=True)
class Launcher:
    """The launcher entry: how the model runs and how its outputs become predictions.

    :param framework: ``dlsdk`` or ``openvino`` (both mean the OpenVINO runtime).
    :param device: ``device`` of the launcher, or None (then ``engine.device``).
    :param adapter: the adapter's name (``classification``, ``ssd``, ``segmentation``, ...).
    :param output: ``classification``/``regression``: the adapter's ``output_blob`` (an output
        tensor or node name), or None for the model's first output.
    :param layouts: input name -> layout from the launcher's ``inputs`` entries.
    :param decoder: the adapter object for the other adapters (it reads every output), or None.
    :param const_inputs: ``CONST_INPUT`` entries: input name -> value (fed to every sample).
    """

    framework: str
    device: str | None
    adapter: str
    output: str | None = None
    layouts: Mapping[str, str] = field(default_factory=dict)
    decoder: Any = None
    const_inputs: Mapping[str, np.ndarray] = field(default_factory=dict)


_INPUT_TYPES = ("INPUT", "CONST_INPUT", "IMAGE_INFO", "ORIG_IMAGE_INFO", "LSTM_INPUT", "IGNORE_INPUT",
                "SCALE_FACTOR")


def _parse_inputs(inputs: Any, at: str, problems: Problems) -> tuple[dict, dict]:
    layouts, consts = {}, {}
    if inputs is None:
        return layouts, consts
    if not isinstance(inputs, (list, tuple)):
        problems.add(f"{at}.inputs", "expected a list of {name, type} entries")
        return layouts, consts
    for j, inp in enumerate(inputs):
        where = f"{at}.inputs[{j}]"
        if not isinstance(inp, Mapping) or not inp.get("name"):
            problems.add(where, "expected a mapping with name, type and layout")
            continue
        problems.keys(inp, ("name", "type", "value", "layout", "precision", "shape"), where)
        kind = inp.get("type", "INPUT")
        if kind not in ("INPUT", "CONST_INPUT"):
            problems.add(f"{where}.type", f"{kind!r} is not supported{did_you_mean(kind, _INPUT_TYPES)}; "
                                          "expected one of: INPUT, CONST_INPUT")
            continue
        if inp.get("layout"):
            layouts[str(inp["name"])] = str(inp["layout"])
        if kind == "CONST_INPUT":
            try:
                value = np.asarray(inp.get("value"), dtype=np.float64)
                if value.dtype == object or inp.get("value") is None:
                    raise ValueError
            except (TypeError, ValueError):
                problems.add(f"{where}.value", f"{inp.get('value')!r} is not a number or a nested list of "
                                               "numbers; expected e.g. [[600, 1024, 1]]")
                continue
            consts[str(inp["name"])] = value
        elif inp.get("value") is not None:
            problems.add(f"{where}.value", "INPUT values (name patterns) are not supported; expected the input "
                                           "name in 'name'")
    return layouts, consts


def _parse_adapter(adapter: Any, at: str, problems: Problems, source: str) -> tuple[str, str | None, Any]:
    params = dict(adapter) if isinstance(adapter, Mapping) else {"type": adapter}
    name = params.get("type")
    if name in RAW_ADAPTERS:
        for key in params:
            if key not in ("type", "output_blob"):
                problems.add(f"{at}.adapter.{key}", "unknown key; expected one of: type, output_blob")
        return name, params.get("output_blob"), None
    _load_types()
    if name not in ac_base.ADAPTERS:
        known = adapters()
        problems.add(f"{at}.adapter" + (".type" if isinstance(adapter, Mapping) else ""),
                     f"{name!r} is not supported{did_you_mean(name, known)}; expected one of: {', '.join(known)}")
        return "classification", None, None
    reg = ac_base.ADAPTERS[name]
    problems.keys(params, ("type",) + reg.keys, f"{at}.adapter")
    ctx = ac_base.Context(problems, f"{at}.adapter", Path(source).parent)
    return name, None, reg.cls(params, ctx)


def _parse_launcher(launchers: Any, where: str, problems: Problems, index: int | None = None,
                    source: str = ".") -> Launcher:
    if not isinstance(launchers, (list, tuple)) or not launchers:
        problems.add(where, "expected a non-empty list of launchers such as [{framework: openvino, "
                            "adapter: classification}]")
        return Launcher("openvino", None, "classification")
    usable = [(k, l) for k, l in enumerate(launchers) if isinstance(l, Mapping) and l.get("framework") in FRAMEWORKS]
    if index is not None:
        usable = [(index, launchers[index])]
    if not usable:
        found = ", ".join(repr(l.get("framework")) for l in launchers if isinstance(l, Mapping)) or "none"
        problems.add(where, f"no launcher with a supported framework (found {found}); expected framework "
                            f"one of: {', '.join(FRAMEWORKS)}")
        return Launcher("openvino", None, "classification")
    k, l = usable[0]
    at = f"{where}[{k}]"
    problems.keys(l, _KEYS["launcher"], at)
    adapter, output, decoder = _parse_adapter(l.get("adapter", "classification"), at, problems, source)
    layouts, consts = _parse_inputs(l.get("inputs"), at, problems)
    device = l.get("device")
    return Launcher(l["framework"], str(device).upper() if device else None, adapter, output, layouts, decoder,
                    consts)


# --- annotations ----------------------------------------------------------------------------------

def _read_list(path: Path) -> list[Path]:
    """Files of a ``.txt`` list (one per line, or ``<file> <label>``), relative to its folder."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except OSError as e:
        raise DatasetError(f"{path}: cannot read the file list ({e.strerror or e})") from e
    files = []
    for line in lines:
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        name = " ".join(parts[:-1]) if len(parts) > 1 and parts[-1].isdigit() else " ".join(parts)
        f = path.parent / name
        if not f.is_file():
            raise DatasetError(f"{path}: listed file not found: {f}")
        files.append(f)
    return files


# --- datasets -------------------------------------------------------------------------------------

@dataclass
class _Binding:
    name: str
    dtype: np.dtype
    rank: int | None
    batch_axis: int | None
    image: ImageInput | None


class ACDataset:
    """One dataset of the Accuracy Checker config: sample files, annotations, reader,
    preprocessing, postprocessing and metrics. Bound to a model by :meth:`bind` before samples
    are read.

    :ivar name: the dataset's ``name``.
    :ivar where: ``<file>: <key.path>`` of the dataset, for messages.
    :ivar files: one file per sample (after ``subsample_size``).
    :ivar annotations: one per sample (int labels, float32 reference arrays, or the records of
        :mod:`pot_cli.engines.ac.representations`), or None.
    :ivar annotation_kind: ``label``, ``regression``, ``detection``, ``segmentation`` or None.
    :ivar label_names: class names from ``labels_file`` or the class folders, or None.
    :ivar metrics: the dataset's metrics (possibly empty for an optimization dataset).
    :ivar postprocessing: the ``postprocessing`` steps, in order.
    :ivar dataset_meta: the converter's label map and background label.
    :ivar metas: index -> :class:`SampleMeta` of the samples read so far.
    """

    def __init__(self, name: str, where: str, files: Sequence[Path], annotations: Sequence | None,
                 annotation_kind: str | None, label_names, reader: Reader, steps: Sequence[Step],
                 metrics: Sequence, postprocessing: Sequence = (), dataset_meta: DatasetMeta | None = None,
                 root: Path | None = None):
        self.name = name
        self.where = where
        self.files = list(files)
        self.annotations = None if annotations is None else list(annotations)
        self.annotation_kind = annotation_kind
        self.label_names = label_names
        self.reader = reader
        self.steps = tuple(steps)
        self.metrics = tuple(metrics)
        self.postprocessing = tuple(postprocessing)
        self.dataset_meta = dataset_meta or DatasetMeta()
        self.root = root
        self.metas: dict[int, SampleMeta] = {}
        self._inputs: list[_Binding] = []
        self._consts: dict[str, np.ndarray] = {}
        self._model_hw: tuple[int, int] | None = None

    def identifier(self, index: int) -> str:
        """The sample's identifier: its file relative to ``data_source`` (else the file name)."""
        path = self.files[index]
        if self.root is not None:
            try:
                return path.relative_to(self.root).as_posix()
            except ValueError:
                pass
        return path.name

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        return f"ACDataset({self.name!r}, {len(self)} samples)"

    # -- model binding

    def bind(self, model: ov.Model, layout: str | Mapping[str, str] | None = None,
             launcher_layouts: Mapping[str, str] | None = None,
             const_inputs: Mapping[str, np.ndarray] | None = None) -> None:
        """Fit samples to ``model``'s inputs.

        :param model: the model whose inputs are fed (only its parameters are read).
        :param layout: ``engine.layout`` (a string for one input, or input name -> layout).
        :param launcher_layouts: layouts from the launcher's ``inputs``.
        :param const_inputs: ``CONST_INPUT`` values by input name (fed to every sample).
        :raises DatasetError: when images meet a model that has several non-constant or non-image
            inputs, or the layout cannot be told.
        """
        self._inputs = []
        self._consts = {}
        consts = dict(const_inputs or {})
        port_names = [set(p.get_names()) | {p.get_node().get_friendly_name()} for p in model.inputs]
        unknown = [k for k in consts if not any(k in names for names in port_names)]
        if unknown:
            raise DatasetError(f"{self.where}: CONST_INPUT {', '.join(unknown)}: the model has no such input; "
                               f"expected one of: {', '.join(sorted(n for p in model.inputs for n in p.get_names()))}")
        for port in model.inputs:
            names = port.get_names()
            name = port.get_any_name() if names else port.get_node().get_friendly_name()
            given_const = next((k for k in consts if k in names or k == name), None)
            if given_const is not None:
                et = port.get_element_type()
                dtype = np.float32 if et in (ov.Type.dynamic, ov.Type.bf16) else et.to_dtype()
                value = consts.pop(given_const).astype(dtype)
                rank = port.get_partial_shape().rank
                if rank.is_static and value.ndim < rank.get_length():
                    value = value.reshape((1,) * (rank.get_length() - value.ndim) + value.shape)
                self._consts[name] = value
                continue
            et = port.get_element_type()
            dtype = np.dtype(np.float32) if et in (ov.Type.dynamic, ov.Type.bf16) else np.dtype(et.to_dtype())
            pshape = port.get_partial_shape()
            rank = pshape.rank.get_length() if pshape.rank.is_static else None
            given = None
            if isinstance(layout, Mapping):
                given = next((v for k, v in layout.items() if k in names or k == name), None)
            elif layout is not None:
                given = layout
            given = given or next((v for k, v in (launcher_layouts or {}).items() if k in names or k == name), None)
            axes = parse_layout(given) if given else None
            if axes is None and not port.get_node().get_layout().empty:
                axes = parse_layout(port.get_node().get_layout().to_string())
            dims = [d.get_length() if d.is_static else None for d in pshape] if rank is not None else []
            if axes is None and rank is not None:
                inferred = infer_image_layout(dims)
                axes = tuple(inferred) if inferred else None
            batch = axes.index("N") if axes and "N" in axes else (0 if rank and rank >= 2 else None)
            self._inputs.append(_Binding(name, dtype, rank, batch, None))
            if self.reader.type in IMAGE_READERS:
                what = f"input '{name}' {pshape}"
                if len(model.inputs) - len(const_inputs or {}) != 1:
                    raise DatasetError(f"{self.where}: images feed one input, but the model has "
                                       f"{len(model.inputs)}; give the others as launcher inputs of type "
                                       "CONST_INPUT, or use numpy_reader with .npz files")
                if rank not in (3, 4):
                    raise DatasetError(f"{self.where}: images need an input of rank 3 or 4; {what} is not one")
                self._inputs[-1].image = create_image_input(what, dims, axes, dtype)
                spec = self._inputs[-1].image
                self._model_hw = (spec.height, spec.width) if spec.height and spec.width else None
        if self.steps and self.reader.type not in IMAGE_READERS:
            raise ConfigError(f"{self.where}.preprocessing: applies to images only; expected no "
                              f"preprocessing with reader {self.reader.type}")

    # -- samples

    def load(self, index: int) -> dict[str, np.ndarray]:
        """Read, preprocess and lay out sample ``index`` for the bound model.

        :return: input name -> array with batch 1 (e.g. ``(1, 1, 28, 28)`` float32 for NCHW).
        :raises DatasetError: when the file does not decode or does not fit the input.
        """
        path = self.files[index]
        if self.reader.type in IMAGE_READERS:
            return {self._inputs[0].name: self._image(path, index), **self._consts}
        if self.reader.type == "numpy_txt_reader" or path.suffix.lower() != ".npz":
            arrays = {None: _read_array(path)}
        else:
            try:
                with np.load(path, allow_pickle=False) as npz:
                    arrays = {k: npz[k] for k in npz.files}
            except (OSError, ValueError) as e:
                raise DatasetError(f"{path}: cannot read the arrays ({e})") from e
        sample = {}
        for k, inp in enumerate(self._inputs):
            key = self.reader.keys[k] if k < len(self.reader.keys) else inp.name
            if None in arrays and len(self._inputs) == 1:
                arr = arrays[None]
            elif key in arrays:
                arr = arrays[key]
            elif len(arrays) == 1 and len(self._inputs) == 1:
                arr = next(iter(arrays.values()))
            else:
                raise DatasetError(f"{path}: no array for input '{inp.name}' (keys: "
                                   f"{', '.join(str(a) for a in arrays)}); expected a key per input name")
            if inp.rank is not None and arr.ndim == inp.rank - 1:
                arr = np.expand_dims(arr, inp.batch_axis or 0)
            if inp.rank is not None and arr.ndim != inp.rank:
                raise DatasetError(f"{path}: array of shape {list(arr.shape)} does not fit input '{inp.name}' "
                                   f"of rank {inp.rank}")
            sample[inp.name] = np.asarray(arr.astype(inp.dtype, copy=False), order="C")
        return sample

    def _decode(self, path: Path) -> np.ndarray:
        if self.reader.type == "pillow_imread":
            return read_pillow(path, self.reader.to_rgb)
        try:
            data = np.fromfile(path, dtype=np.uint8)
            image = cv2.imdecode(data, _READ_FLAGS[self.reader.flag]) if data.size else None
        except (OSError, cv2.error) as e:
            raise DatasetError(f"{path}: cannot read the image ({e})") from e
        if image is None:
            raise DatasetError(f"{path}: corrupt or unsupported image; OpenCV cannot decode it")
        return image

    def _image(self, path: Path, index: int) -> np.ndarray:
        image = self._decode(path)
        if image.ndim == 2:
            image = image[:, :, None]
        meta = SampleMeta(self.identifier(index), tuple(int(v) for v in image.shape))
        if self._model_hw is not None:
            meta.extra["model_input_size"] = self._model_hw
        meta.extra["input_layout"] = self._inputs[0].image.layout
        for step in self.steps:
            image = step.apply(image, path, meta)
        spec = self._inputs[0].image
        h, w, c = image.shape
        meta.input_size = (h, w)
        self.metas[index] = meta
        if c != spec.channels:
            flag = "gray" if spec.channels == 1 else "color"
            raise DatasetError(f"{path}: the image has {c} channel(s) after preprocessing; input "
                               f"'{self._inputs[0].name}' expects {spec.channels}; expected reader "
                               f"reading_flag: {flag}")
        if (spec.height or h, spec.width or w) != (h, w):
            raise DatasetError(f"{path}: the image is {w}x{h} after preprocessing; input '{self._inputs[0].name}' "
                               f"expects {spec.width}x{spec.height}; expected a resize (or crop) step to that size")
        image = image.astype(spec.dtype, copy=False)
        src = "HWC"
        if "N" in spec.layout:
            image, src = image[..., None], "HWCN"
        return np.ascontiguousarray(image.transpose([src.index(a) for a in spec.layout]))

    def iter_samples(self, indices: Iterable[int], workers: int | None = None
                     ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """Yield ``(index, sample)`` in the order of ``indices``, decoding ahead in threads
        (OpenCV releases the GIL); about ``2 * workers`` samples are in memory at a time."""
        workers = workers or min(4, os.cpu_count() or 1)
        it = iter(indices)
        with concurrent.futures.ThreadPoolExecutor(workers, "pot-ac") as pool:
            pending: collections.deque = collections.deque()
            for i in it:
                pending.append((i, pool.submit(self.load, i)))
                if len(pending) >= 2 * workers:
                    break
            while pending:
                i, future = pending.popleft()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append((nxt, pool.submit(self.load, nxt)))
                yield i, future.result()


def _subsample(n: int, size: Any, seed: int, shuffle: bool, where: str) -> list[int]:
    if isinstance(size, str) and size.endswith("%"):
        try:
            count = int(n * float(size[:-1]) / 100.0)
        except ValueError:
            raise ConfigError(f"{where}: {size!r} is not a percentage; expected e.g. '50%' or a count") from None
    elif positive_int(size):
        count = size
    else:
        raise ConfigError(f"{where}: {size!r} is not a sample count; expected a positive integer or 'N%'")
    count = max(1, min(count, n))
    if not shuffle:
        return list(range(count))
    return sorted(np.random.default_rng(seed).permutation(n)[:count].tolist())


def _convert(conv: Any, at: str, root: Path | None, base: Path, exts, problems: Problems,
             masks: Path | None = None):
    """``(files, annotations, label names, annotation kind, dataset meta)`` of ``annotation_conversion``
    (empty, with the problems recorded, when the entry or its files are wrong)."""
    converter = conv.get("converter") if isinstance(conv, Mapping) else None
    known = converters()
    empty = ([], None, None, None, DatasetMeta())
    if converter not in ac_base.CONVERTERS:
        problems.add(f"{at}.converter", f"{converter!r} is not supported{did_you_mean(converter, known)}; "
                                        f"expected one of: {', '.join(known)}")
        return empty
    reg = ac_base.CONVERTERS[converter]
    problems.keys(conv, ("converter",) + reg.keys, at)
    ctx = ac_base.Context(problems, at, base, root, segmentation_masks_source=masks, extensions=tuple(exts))
    before = len(problems.lines)
    instance = reg.cls(conv, ctx)
    if len(problems.lines) > before:
        return empty
    converted = instance.convert()
    if len(problems.lines) > before:
        return empty
    names = [converted.meta.label_map[k] for k in sorted(converted.meta.label_map)] or None
    return converted.files, converted.annotations, names, reg.cls.annotation_kind, converted.meta


def _build_metrics(entries: Any, at: str, base: Path, root: Path | None, meta: DatasetMeta,
                   problems: Problems) -> list:
    if not isinstance(entries, (list, tuple)) or not entries:
        problems.add(at, "expected a non-empty list of metrics such as [{type: accuracy, top_k: 1}]")
        return []
    _load_types()
    from pot_cli.engines.metrics import METRIC_KEYS

    metrics, raw = [], []
    for k, entry in enumerate(entries):
        entry = {"type": entry} if isinstance(entry, str) else entry
        kind = entry.get("type") if isinstance(entry, Mapping) else None
        if kind in ac_base.METRICS:
            reg = ac_base.METRICS[kind]
            problems.keys(entry, METRIC_COMMON_KEYS + reg.keys, f"{at}[{k}]")
            metrics.append((k, reg.cls(entry, ac_base.Context(problems, f"{at}[{k}]", base, root, meta))))
        elif kind in METRIC_KEYS or not isinstance(entry, Mapping):
            raw.append((k, entry))
        else:
            known = tuple(METRIC_KEYS) + tuple(sorted(ac_base.METRICS))
            problems.add(f"{at}[{k}].type", f"{kind!r} is not supported{did_you_mean(kind, known)}; expected one "
                                             f"of: {', '.join(known)}")
    if raw:
        try:
            built = create_metrics([e for _, e in raw], f"{problems.source}: {at}")
            metrics += [(k, m) for (k, _), m in zip(raw, built)]
        except ConfigError as e:
            problems.lines.extend(e.problems)
    metrics.sort(key=lambda km: km[0])
    names = [m.name for _, m in metrics]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.add(at, f"two metrics are named '{name}'; give each a distinct 'name'")
    return [m for _, m in metrics]


def _build_postprocessing(entries: Any, at: str, base: Path, root: Path | None, meta: DatasetMeta,
                          problems: Problems) -> list:
    if not entries:
        return []
    if not isinstance(entries, (list, tuple)):
        problems.add(at, "expected a list of postprocessing steps")
        return []
    _load_types()
    steps = []
    for k, entry in enumerate(entries):
        entry = {"type": entry} if isinstance(entry, str) else entry
        kind = entry.get("type") if isinstance(entry, Mapping) else None
        if kind not in ac_base.POSTPROCESSING:
            known = sorted(ac_base.POSTPROCESSING)
            problems.add(f"{at}[{k}].type", f"{kind!r} is not supported{did_you_mean(kind, known)}; expected one "
                                             f"of: {', '.join(known)}")
            continue
        reg = ac_base.POSTPROCESSING[kind]
        problems.keys(entry, ("type", "apply_to") + reg.keys, f"{at}[{k}]")
        steps.append(reg.cls(entry, ac_base.Context(problems, f"{at}[{k}]", base, root, meta)))
    return steps


def _link_coco_metrics(metrics: Sequence, conv: Any, subsampled: bool) -> None:
    """Accuracy Checker's and POT's ties between the COCO metrics of a dataset: ``coco_orig_*``
    score against the original COCO JSON when the converter read one and the dataset is not
    subsampled (``metrics/coco_orig_metrics.py``), and take their per-sample values from a metric
    named ``coco_precision`` when there is one (POT's ``METRIC2PROXY_METRIC``)."""
    orig = [m for m in metrics if hasattr(m, "use_original_annotation")]
    if not orig:
        return
    proxy = next((m for m in metrics if m.name == "coco_precision" and m.type == "coco_precision"), None)
    source = conv.get("annotation_file") if isinstance(conv, Mapping) else None
    original = (not subsampled and conv.get("converter") in ("mscoco_detection", "mscoco_mask_rcnn")
                and source is not None and str(source).lower().endswith(".json") and Path(str(source)).is_file())
    for m in orig:
        if proxy is not None:
            m.use_proxy(proxy)
        if original:
            m.use_original_annotation(Path(str(source)), bool(conv.get("has_background", False)),
                                      bool(conv.get("use_full_label_map", False)))


_ROOTS_HINT = ("relative paths resolve against --data-dir / DATA_DIR when set, else the working directory or the "
               "folder of the file that holds them")


def _paths_exist(d: Mapping, root: Path | None, where: str, problems: Problems) -> bool:
    """Check that ``data_source`` and every ``annotation_conversion`` file or folder exists
    (a problem per missing path, naming its key); False when one is missing."""
    ok = True
    if root is not None and not root.exists():
        problems.add(f"{where}.data_source", f"no such file or folder: {root}; {_ROOTS_HINT}")
        ok = False
    conv = d.get("annotation_conversion")
    for key, value in (conv.items() if isinstance(conv, Mapping) else ()):
        if (key.endswith("file") or key.endswith("dir")) and isinstance(value, (str, os.PathLike)):
            path = Path(value)
            if not path.exists():
                what = "file" if key.endswith("file") else "folder"
                problems.add(f"{where}.annotation_conversion.{key}", f"no such {what}: {path}; {_ROOTS_HINT}")
                ok = False
    return ok


def _parse_dataset(d: Any, where: str, base: Path, problems: Problems) -> ACDataset | None:
    if not isinstance(d, Mapping):
        problems.add(where, "expected a mapping with name, data_source, annotation_conversion, metrics")
        return None
    problems.keys(d, _KEYS["dataset"], where)
    for key in ("annotation", "dataset_meta"):
        if key in d:
            raise NotSupportedError(f"{problems.source}: {where}.{key}: Accuracy Checker's pre-converted annotation "
                                    "files (pickles) cannot be read; expected annotation_conversion")
    root = resolve_path(str(d["data_source"]), base) if d.get("data_source") else None
    reader = parse_reader(d.get("reader"), f"{where}.reader", problems)
    exts = IMAGE_EXTENSIONS if reader.type in IMAGE_READERS else \
        (".npy", ".npz") if reader.type == "numpy_reader" else (".txt", ".csv")
    steps = []
    pre = d.get("preprocessing") or []
    if not isinstance(pre, (list, tuple)):
        problems.add(f"{where}.preprocessing", "expected a list of steps")
        pre = []
    for k, s in enumerate(pre):
        step = parse_step(s, f"{where}.preprocessing[{k}]", problems)
        if step is not None:
            steps.append(step)
    conv = d.get("annotation_conversion")
    files, annotations, names, kind, meta = [], None, None, None, DatasetMeta()
    if not _paths_exist(d, root, where, problems):
        return None
    if conv is not None:
        masks = resolve_path(str(d["segmentation_masks_source"]), base) if d.get("segmentation_masks_source") else None
        files, annotations, names, kind, meta = _convert(conv, f"{where}.annotation_conversion", root, base, exts,
                                                         problems, masks)
        if annotations is None and kind is None and problems.lines:
            return None
    elif root is None:
        problems.add(f"{where}.data_source", "missing required key; expected the folder of the samples")
        return None
    elif root.is_dir():
        files = _list_files(root, exts)
    elif root.is_file() and root.suffix.lower() == ".txt" and ".txt" not in exts:
        files = _read_list(root)
    elif root.is_file():
        files = [root]
    metrics = [] if d.get("metrics") is None else _build_metrics(d["metrics"], f"{where}.metrics", base, root, meta,
                                                                problems)
    post = _build_postprocessing(d.get("postprocessing"), f"{where}.postprocessing", base, root, meta, problems)
    _link_coco_metrics(metrics, conv, d.get("subsample_size") is not None)
    if kind is not None:
        for k, m in enumerate(metrics):
            if m.annotation_kind != kind:
                problems.add(f"{where}.metrics[{k}].type", f"'{m.type}' needs {m.annotation_kind} annotations, "
                                                           f"but converter '{conv.get('converter')}' gives {kind} "
                                                           "annotations")
    if not files and not problems.lines:
        raise DatasetError(f"{problems.source}: {where}: no samples found"
                           f"{f' in {root}' if root else ''}; expected files ending in {', '.join(sorted(exts)[:6])}")
    if d.get("subsample_size") is not None and files:
        keep = _subsample(len(files), d["subsample_size"], int(d.get("subsample_seed", 666)),
                          bool(d.get("shuffle", True)), f"{problems.source}: {where}.subsample_size")
        files = [files[i] for i in keep]
        annotations = None if annotations is None else [annotations[i] for i in keep]
    name = str(d.get("name") or (root.name if root else "dataset"))
    return ACDataset(name, f"{problems.source}: {where}", files, annotations, kind, names, reader, steps, metrics,
                     post, meta, root)


# --- engine ---------------------------------------------------------------------------------------

@dataclass
class ACEngine:
    """A parsed Accuracy Checker configuration.

    :param name: the model entry's ``name``.
    :param source: the YAML file, or ``<pot config>: engine`` for inline content.
    :param launcher: the first launcher with a supported framework.
    :param optimization: the dataset statistics are collected on.
    :param evaluation: the dataset metrics are computed on (the same object when untagged).
    """

    name: str
    source: str
    launcher: Launcher
    optimization: ACDataset
    evaluation: ACDataset

    def bind(self, model: ov.Model, layout: str | Mapping[str, str] | None = None) -> None:
        """Bind both datasets to ``model`` (see :meth:`ACDataset.bind`)."""
        for d in {id(self.optimization): self.optimization, id(self.evaluation): self.evaluation}.values():
            d.bind(model, layout, self.launcher.layouts, self.launcher.const_inputs)

    def require_metrics(self, why: str) -> None:
        """Check that the evaluation dataset has annotations and metrics.

        :param why: what needs them, for the message (``"AccuracyAwareQuantization"``, ``"-e"``).
        :raises ConfigError: when it has none.
        """
        d = self.evaluation
        if d.annotations is None:
            raise ConfigError(f"{d.where}.annotation_conversion: missing; {why} needs an annotated dataset; "
                              f"expected e.g. {{converter: imagenet, annotation_file: val.txt}}")
        if not d.metrics:
            raise ConfigError(f"{d.where}.metrics: missing; {why} needs metrics; expected e.g. "
                              "[{type: accuracy, top_k: 1}]")


def load_ac_document(engine: EngineConfig, config_source: str) -> tuple[dict, str, Path]:
    """The Accuracy Checker content of ``engine``: the YAML of ``engine.config``, else the inline keys.

    :param engine: the validated engine section (type ``accuracy_checker``).
    :param config_source: the POT config file (relative inline paths resolve against its folder).
    :return: ``(document, source for messages, base folder for relative paths)``.
    :raises ConfigError: when the YAML cannot be read or is not a mapping.
    """
    if engine.ac_config is not None:
        path = Path(engine.ac_config)
        doc = read_yaml(path, "Accuracy Checker config")
        if not isinstance(doc, dict):
            raise ConfigError(f"{path}: top level is not a mapping; expected 'models: [...]'")
        return doc, str(path), path.parent
    base = Path(config_source).parent if os.path.isfile(config_source) else Path.cwd()
    return thaw(engine.ac_inline or {}), f"{config_source}: engine", base


def create_ac_engine(engine: EngineConfig, config_source: str, roots: Roots | None = None) -> ACEngine:
    """Parse the Accuracy Checker configuration of ``engine`` (annotations converted, no image decoded).

    :param engine: the engine section.
    :param config_source: the POT config file or ``<command line>``.
    :param roots: the definitions file and path roots (default: from ``DEFINITIONS_FILE``,
        ``DATA_DIR``, ``ANNOTATIONS_DIR``).
    :return: the engine description; call :meth:`ACEngine.bind` with the model before reading.
    :raises ConfigError: every problem of the configuration at once.
    :raises NotSupportedError: custom evaluators (``evaluations``: a cascade's engine,
        :mod:`pot_cli.engines.cascade`), pre-converted annotations only.
    :raises DatasetError: unreadable or incomplete annotation files, no samples.
    """
    doc, source, base = load_ac_document(engine, config_source)
    roots = roots if roots is not None else Roots.from_env()
    problems = Problems(source)
    if "evaluations" in doc and "models" not in doc:
        raise NotSupportedError(f"{source}: evaluations: a custom evaluator runs a cascade of models; expected "
                                "model.cascade in the POT config (see configs/examples/mtcnn_cascade.json), or "
                                "'models' for one model")
    definitions = load_definitions(doc, source, base, roots)
    launcher_index = None
    if "models" in doc:
        entry, prefix, launcher_index = select_model_entry(doc["models"], source, engine.device or "CPU")
        problems.keys(entry, _KEYS["model"], prefix)
        for key in doc:
            if key not in ("models", "global_definitions"):
                problems.add(key, "unknown key; expected one of: models, global_definitions")
    else:
        entry, prefix = doc, ""
        for key in doc:
            if key not in _KEYS["model"] + ("global_definitions",):
                problems.add(key, f"unknown key{did_you_mean(key, _KEYS['model'] + ('models',))}; expected one of: "
                                  "models, name, launchers, datasets")
    at = (lambda key: f"{prefix}.{key}" if prefix else key)
    launcher = _parse_launcher(entry.get("launchers", [{"framework": "openvino"}]), at("launchers"), problems,
                               launcher_index, source)
    prep = (lambda d, where: prepare_dataset(d, where, source, base, roots, definitions))
    datasets = entry.get("datasets")
    if isinstance(datasets, Mapping):
        tags = ("optimization", "evaluation")
        for tag in datasets:
            if tag not in tags:
                problems.add(f"{at('datasets')}.{tag}", f"unknown dataset tag{did_you_mean(tag, tags)}; "
                                                        "expected optimization and/or evaluation")
        parsed = {t: _parse_dataset(prep(datasets[t], f"{at('datasets')}.{t}"), f"{at('datasets')}.{t}", base,
                                    problems) for t in tags if t in datasets}
        if not parsed:
            problems.add(at("datasets"), "no dataset; expected optimization and/or evaluation")
        problems.raise_if_any()
        optimization = parsed.get("optimization") or parsed["evaluation"]
        evaluation = parsed.get("evaluation") or optimization
    else:
        if not isinstance(datasets, list) or not datasets:
            problems.add(at("datasets"), "expected a non-empty list of datasets (or optimization/evaluation tags)")
            problems.raise_if_any()
        if len(datasets) > 1:
            log.warning("%s: %s: %d datasets; using the first", source, at("datasets"), len(datasets))
        where = f"{at('datasets')}[0]"
        optimization = evaluation = _parse_dataset(prep(datasets[0], where), where, base, problems)
    problems.raise_if_any()
    if launcher.decoder is None and evaluation.annotation_kind in ("detection", "segmentation"):
        raise ConfigError(f"{source}: {at('launchers')}: adapter '{launcher.adapter}' gives raw scores, but the "
                          f"dataset has {evaluation.annotation_kind} annotations; expected a "
                          f"{evaluation.annotation_kind} adapter (e.g. "
                          f"{'ssd' if evaluation.annotation_kind == 'detection' else 'segmentation'})")
    return ACEngine(str(entry.get("name") or "model"), source, launcher, optimization, evaluation)
