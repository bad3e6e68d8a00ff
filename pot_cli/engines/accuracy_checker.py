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

Supported (anything else is a :class:`~pot_cli.errors.ConfigError` naming the key and listing
what is supported): launchers ``framework: dlsdk | openvino`` with adapters ``classification``
and ``regression``; converters ``imagenet`` (``<file> <label>`` lines; ``labels_file``,
``has_background``), ``cls_dataset_folder`` (one sub-folder per class, sorted) and
``features_regression`` (a reference array per input file); readers ``opencv_imread``
(``reading_flag`` color, gray, unchanged), ``numpy_reader`` (``.npy``/``.npz``) and
``numpy_txt_reader``; preprocessing ``resize``, ``crop``, ``bgr_to_rgb``, ``rgb_to_bgr``,
``bgr_to_gray``, ``normalization``; metrics from :mod:`pot_cli.engines.metrics`;
``subsample_size`` (a count or ``"N%"``, seeded by ``subsample_seed``, default 666).

Images are decoded with OpenCV (BGR), preprocessed in ``H x W x C`` order, then laid out for the
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
import yaml

from pot_cli.config.loader import did_you_mean, resolve_path
from pot_cli.config.model import EngineConfig, thaw
from pot_cli.engines.image_io import (IMAGE_EXTENSIONS, ImageInput, create_image_input, infer_image_layout,
                                      parse_layout)
from pot_cli.engines.metrics import Metric, create_metrics
from pot_cli.engines.preprocessing import (_READ_FLAGS, Problems, Reader, Step, parse_reader, parse_step,
                                           positive_int)
from pot_cli.errors import ConfigError, DatasetError, NotSupportedError

log = logging.getLogger("pot")

FRAMEWORKS = ("dlsdk", "openvino")
ADAPTERS = ("classification", "regression")
CONVERTERS = ("imagenet", "cls_dataset_folder", "features_regression")
#: keys of each section that are read (launcher keys such as model, weights, batch are accepted and unused:
#: the POT config names the model)
_KEYS = {
    "model": ("name", "launchers", "datasets"),
    "launcher": ("framework", "device", "adapter", "inputs", "batch", "model", "weights", "allow_reshape_input",
                 "cpu_extensions", "tags", "_model_is_blob"),
    "dataset": ("name", "data_source", "annotation_conversion", "annotation", "dataset_meta", "reader",
                "preprocessing", "postprocessing", "metrics", "subsample_size", "subsample_seed", "shuffle",
                "batch"),
    "imagenet": ("converter", "annotation_file", "labels_file", "has_background", "images_dir"),
    "cls_dataset_folder": ("converter", "data_dir"),
    "features_regression": ("converter", "input_dir", "reference_dir", "input_suffix", "reference_suffix"),
}


# --- launcher, reader, preprocessing --------------------------------------------------------------

@dataclass(frozen=True)
class Launcher:
    """The launcher entry: how the model runs and which output the metrics read.

    :param framework: ``dlsdk`` or ``openvino`` (both mean the OpenVINO runtime).
    :param device: ``device`` of the launcher, or None (then ``engine.device``).
    :param adapter: ``classification`` (scores per class) or ``regression`` (raw values).
    :param output: the adapter's ``output_blob`` (an output tensor or node name), or None for
        the model's first output.
    :param layouts: input name -> layout from the launcher's ``inputs`` entries.
    """

    framework: str
    device: str | None
    adapter: str
    output: str | None = None
    layouts: Mapping[str, str] = field(default_factory=dict)


def _parse_launcher(launchers: Any, where: str, problems: Problems) -> Launcher:
    if not isinstance(launchers, (list, tuple)) or not launchers:
        problems.add(where, "expected a non-empty list of launchers such as [{framework: openvino, "
                            "adapter: classification}]")
        return Launcher("openvino", None, "classification")
    usable = [(k, l) for k, l in enumerate(launchers) if isinstance(l, Mapping) and l.get("framework") in FRAMEWORKS]
    if not usable:
        found = ", ".join(repr(l.get("framework")) for l in launchers if isinstance(l, Mapping)) or "none"
        problems.add(where, f"no launcher with a supported framework (found {found}); expected framework "
                            f"one of: {', '.join(FRAMEWORKS)}")
        return Launcher("openvino", None, "classification")
    k, l = usable[0]
    at = f"{where}[{k}]"
    problems.keys(l, _KEYS["launcher"], at)
    adapter = l.get("adapter", "classification")
    output = None
    if isinstance(adapter, Mapping):
        for key in adapter:
            if key not in ("type", "output_blob"):
                problems.add(f"{at}.adapter.{key}", "unknown key; expected one of: type, output_blob")
        output = adapter.get("output_blob")
        adapter = adapter.get("type")
    if adapter not in ADAPTERS:
        problems.add(f"{at}.adapter", f"{adapter!r} is not supported{did_you_mean(adapter, ADAPTERS)}; "
                                      f"expected one of: {', '.join(ADAPTERS)}")
        adapter = "classification"
    layouts = {}
    for j, inp in enumerate(l.get("inputs") or ()):
        if isinstance(inp, Mapping) and inp.get("name") and inp.get("layout"):
            layouts[str(inp["name"])] = str(inp["layout"])
        elif not isinstance(inp, Mapping):
            problems.add(f"{at}.inputs[{j}]", "expected a mapping with name, type and layout")
    device = l.get("device")
    return Launcher(l["framework"], str(device).upper() if device else None, adapter, output, layouts)


# --- annotations ----------------------------------------------------------------------------------

def _list_files(root: Path, extensions: Iterable[str]) -> list[Path]:
    exts = {e.lower() for e in extensions}
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(Path(dirpath, f) for f in filenames if not f.startswith(".") and Path(f).suffix.lower() in exts)
    return sorted(out, key=lambda p: p.relative_to(root).parts)


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


def _read_array(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False) if path.suffix.lower() == ".npy" else np.loadtxt(path, ndmin=1)
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: cannot read the array ({e})") from e


def _imagenet(conv: Mapping, root: Path | None, base: Path, where: str, problems: Problems):
    if "annotation_file" not in conv:
        problems.add(f"{where}.annotation_file", "missing required key; expected a file of '<file> <label>' lines")
        return [], [], None
    ann = resolve_path(str(conv["annotation_file"]), base)
    images = resolve_path(str(conv["images_dir"]), base) if conv.get("images_dir") else root
    if images is None:
        problems.add(where, "needs the dataset's data_source (or images_dir) for the image files")
        return [], [], None
    try:
        lines = ann.read_text(encoding="utf-8-sig").splitlines()
    except OSError as e:
        raise DatasetError(f"{ann}: cannot read the annotation file ({e.strerror or e})") from e
    shift = 1 if conv.get("has_background", False) else 0
    files, labels, missing = [], [], []
    for n, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2 or not parts[-1].lstrip("-").isdigit() or int(parts[-1]) < 0:
            raise DatasetError(f"{ann}: line {n}: {line.strip()!r}; expected '<file> <label>' with a label >= 0")
        path = images / " ".join(parts[:-1])
        if not path.is_file():
            missing.append(path.name)
        files.append(path)
        labels.append(int(parts[-1]) + shift)
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DatasetError(f"{ann}: {len(missing)} listed file(s) not found in {images}: "
                           f"{', '.join(missing[:5])}{more}")
    names = None
    if conv.get("labels_file"):
        path = resolve_path(str(conv["labels_file"]), base)
        try:
            names = [l.strip() for l in path.read_text(encoding="utf-8-sig").splitlines() if l.strip()]
        except OSError as e:
            raise DatasetError(f"{path}: cannot read the labels file ({e.strerror or e})") from e
        names = (["background"] if shift else []) + names
    return files, labels, names


def _class_folders(conv: Mapping, root: Path | None, base: Path, exts, where: str, problems: Problems):
    data_dir = resolve_path(str(conv["data_dir"]), base) if conv.get("data_dir") else root
    if data_dir is None or not data_dir.is_dir():
        problems.add(f"{where}.data_dir", f"not a folder: {data_dir}; expected one sub-folder per class")
        return [], [], None
    classes = sorted(d.name for d in data_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    files, labels = [], []
    for label, name in enumerate(classes):
        found = _list_files(data_dir / name, exts)
        files += found
        labels += [label] * len(found)
    return files, labels, classes


def _features_regression(conv: Mapping, root: Path | None, base: Path, where: str, problems: Problems):
    inputs = resolve_path(str(conv["input_dir"]), base) if conv.get("input_dir") else root
    if "reference_dir" not in conv:
        problems.add(f"{where}.reference_dir", "missing required key; expected the folder of reference arrays")
        return [], [], None
    refs = resolve_path(str(conv["reference_dir"]), base)
    in_suffix, ref_suffix = conv.get("input_suffix", ".txt"), conv.get("reference_suffix", ".txt")
    if inputs is None or not inputs.is_dir():
        problems.add(f"{where}.input_dir", f"not a folder: {inputs}")
        return [], [], None
    files = _list_files(inputs, [in_suffix])
    references = []
    for f in files:
        ref = refs / (f.name[: -len(in_suffix)] + ref_suffix)
        if not ref.is_file():
            raise DatasetError(f"{ref}: reference for {f.name} not found; expected one per input file")
        references.append(_read_array(ref).astype(np.float32))
    return files, references, None


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
    preprocessing and metrics. Bound to a model by :meth:`bind` before samples are read.

    :ivar name: the dataset's ``name``.
    :ivar where: ``<file>: <key.path>`` of the dataset, for messages.
    :ivar files: one file per sample (after ``subsample_size``).
    :ivar annotations: one per sample (int labels, or float32 reference arrays), or None.
    :ivar annotation_kind: ``label``, ``regression`` or None.
    :ivar label_names: class names from ``labels_file`` or the class folders, or None.
    :ivar metrics: the dataset's metrics (possibly empty for an optimization dataset).
    """

    def __init__(self, name: str, where: str, files: Sequence[Path], annotations: Sequence | None,
                 annotation_kind: str | None, label_names, reader: Reader, steps: Sequence[Step],
                 metrics: Sequence[Metric]):
        self.name = name
        self.where = where
        self.files = list(files)
        self.annotations = None if annotations is None else list(annotations)
        self.annotation_kind = annotation_kind
        self.label_names = label_names
        self.reader = reader
        self.steps = tuple(steps)
        self.metrics = tuple(metrics)
        self._inputs: list[_Binding] = []

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        return f"ACDataset({self.name!r}, {len(self)} samples)"

    # -- model binding

    def bind(self, model: ov.Model, layout: str | Mapping[str, str] | None = None,
             launcher_layouts: Mapping[str, str] | None = None) -> None:
        """Fit samples to ``model``'s inputs.

        :param model: the model whose inputs are fed (only its parameters are read).
        :param layout: ``engine.layout`` (a string for one input, or input name -> layout).
        :param launcher_layouts: layouts from the launcher's ``inputs``.
        :raises DatasetError: when images meet a model that has several or non-image inputs,
            or the layout cannot be told.
        """
        self._inputs = []
        for port in model.inputs:
            names = port.get_names()
            name = port.get_any_name() if names else port.get_node().get_friendly_name()
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
            if self.reader.type == "opencv_imread":
                what = f"input '{name}' {pshape}"
                if len(model.inputs) != 1:
                    raise DatasetError(f"{self.where}: images feed one input, but the model has "
                                       f"{len(model.inputs)}; use numpy_reader with .npz files")
                if rank not in (3, 4):
                    raise DatasetError(f"{self.where}: images need an input of rank 3 or 4; {what} is not one")
                self._inputs[-1].image = create_image_input(what, dims, axes, dtype)
        if self.steps and self.reader.type != "opencv_imread":
            raise ConfigError(f"{self.where}.preprocessing: applies to images only; expected no "
                              f"preprocessing with reader {self.reader.type}")

    # -- samples

    def load(self, index: int) -> dict[str, np.ndarray]:
        """Read, preprocess and lay out sample ``index`` for the bound model.

        :return: input name -> array with batch 1 (e.g. ``(1, 1, 28, 28)`` float32 for NCHW).
        :raises DatasetError: when the file does not decode or does not fit the input.
        """
        path = self.files[index]
        if self.reader.type == "opencv_imread":
            return {self._inputs[0].name: self._image(path)}
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

    def _image(self, path: Path) -> np.ndarray:
        try:
            data = np.fromfile(path, dtype=np.uint8)
            image = cv2.imdecode(data, _READ_FLAGS[self.reader.flag]) if data.size else None
        except (OSError, cv2.error) as e:
            raise DatasetError(f"{path}: cannot read the image ({e})") from e
        if image is None:
            raise DatasetError(f"{path}: corrupt or unsupported image; OpenCV cannot decode it")
        if image.ndim == 2:
            image = image[:, :, None]
        for step in self.steps:
            image = step.apply(image, path)
        spec = self._inputs[0].image
        h, w, c = image.shape
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


def _parse_dataset(d: Any, where: str, base: Path, problems: Problems) -> ACDataset | None:
    if not isinstance(d, Mapping):
        problems.add(where, "expected a mapping with name, data_source, annotation_conversion, metrics")
        return None
    problems.keys(d, _KEYS["dataset"], where)
    for key in ("annotation", "dataset_meta"):
        if key in d:
            raise NotSupportedError(f"{problems.source}: {where}.{key}: pre-converted annotations are not "
                                    "supported yet; expected annotation_conversion")
    if d.get("postprocessing"):
        raise NotSupportedError(f"{problems.source}: {where}.postprocessing: not supported yet; expected none")
    root = resolve_path(str(d["data_source"]), base) if d.get("data_source") else None
    reader = parse_reader(d.get("reader"), f"{where}.reader", problems)
    exts = IMAGE_EXTENSIONS if reader.type == "opencv_imread" else \
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
    metrics: tuple[Metric, ...] = ()
    if d.get("metrics") is not None:
        try:
            metrics = create_metrics(d["metrics"], f"{problems.source}: {where}.metrics")
        except ConfigError as e:
            problems.lines.extend(e.problems)
    conv = d.get("annotation_conversion")
    files, annotations, names, kind = [], None, None, None
    if conv is not None:
        at = f"{where}.annotation_conversion"
        converter = conv.get("converter") if isinstance(conv, Mapping) else None
        if converter not in CONVERTERS:
            problems.add(f"{at}.converter", f"{converter!r} is not supported{did_you_mean(converter, CONVERTERS)}; "
                                            f"expected one of: {', '.join(CONVERTERS)}")
            return None
        problems.keys(conv, _KEYS[converter], at)
        if converter == "imagenet":
            files, annotations, names = _imagenet(conv, root, base, at, problems)
        elif converter == "cls_dataset_folder":
            files, annotations, names = _class_folders(conv, root, base, exts, at, problems)
        else:
            files, annotations, names = _features_regression(conv, root, base, at, problems)
        kind = "regression" if converter == "features_regression" else "label"
        for k, m in enumerate(metrics):
            if m.annotation_kind != kind:
                problems.add(f"{where}.metrics[{k}].type", f"'{m.type}' needs {m.annotation_kind} annotations, "
                                                           f"but converter '{converter}' gives {kind} annotations")
    elif root is None:
        problems.add(f"{where}.data_source", "missing required key; expected the folder of the samples")
        return None
    elif root.is_dir():
        files = _list_files(root, exts)
    elif root.is_file() and root.suffix.lower() == ".txt" and ".txt" not in exts:
        files = _read_list(root)
    elif root.is_file():
        files = [root]
    else:
        raise DatasetError(f"{problems.source}: {where}.data_source: no such folder: {root}")
    if not files and not problems.lines:
        raise DatasetError(f"{problems.source}: {where}: no samples found"
                           f"{f' in {root}' if root else ''}; expected files ending in {', '.join(sorted(exts)[:6])}")
    if d.get("subsample_size") is not None and files:
        keep = _subsample(len(files), d["subsample_size"], int(d.get("subsample_seed", 666)),
                          bool(d.get("shuffle", True)), f"{problems.source}: {where}.subsample_size")
        files = [files[i] for i in keep]
        annotations = None if annotations is None else [annotations[i] for i in keep]
    name = str(d.get("name") or (root.name if root else "dataset"))
    return ACDataset(name, f"{problems.source}: {where}", files, annotations, kind, names, reader, steps, metrics)


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
            d.bind(model, layout, self.launcher.layouts)

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
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise ConfigError(f"{path}: cannot read the Accuracy Checker config: {e.strerror or e}") from e
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            raise ConfigError(f"{path}: {at}{e.problem or e.context or 'malformed YAML'}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: {e}") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"{path}: top level is not a mapping; expected 'models: [...]'")
        return doc, str(path), path.parent
    base = Path(config_source).parent if os.path.isfile(config_source) else Path.cwd()
    return thaw(engine.ac_inline or {}), f"{config_source}: engine", base


def create_ac_engine(engine: EngineConfig, config_source: str) -> ACEngine:
    """Parse the Accuracy Checker configuration of ``engine`` (files listed, nothing decoded).

    :param engine: the engine section.
    :param config_source: the POT config file or ``<command line>``.
    :return: the engine description; call :meth:`ACEngine.bind` with the model before reading.
    :raises ConfigError: every problem of the configuration at once.
    :raises NotSupportedError: composite models (``evaluations``), pre-converted annotations.
    :raises DatasetError: unreadable or incomplete annotation files, no samples.
    """
    doc, source, base = load_ac_document(engine, config_source)
    problems = Problems(source)
    if "evaluations" in doc and "models" not in doc:
        raise NotSupportedError(f"{source}: evaluations: composite models are not supported yet; expected 'models'")
    if "models" in doc:
        models = doc["models"]
        if not isinstance(models, list) or not models or not isinstance(models[0], Mapping):
            raise ConfigError(f"{source}: models: expected a non-empty list of model entries")
        if len(models) > 1:
            log.warning("%s: models: %d entries; using the first, '%s'", source, len(models), models[0].get("name"))
        entry, prefix = models[0], "models[0]"
        problems.keys(entry, _KEYS["model"], prefix)
    else:
        entry, prefix = doc, ""
        for key in doc:
            if key not in _KEYS["model"]:
                problems.add(key, f"unknown key{did_you_mean(key, _KEYS['model'] + ('models',))}; expected one of: "
                                  "models, name, launchers, datasets")
    at = (lambda key: f"{prefix}.{key}" if prefix else key)
    launcher = _parse_launcher(entry.get("launchers", [{"framework": "openvino"}]), at("launchers"), problems)
    datasets = entry.get("datasets")
    if isinstance(datasets, Mapping):
        tags = ("optimization", "evaluation")
        for tag in datasets:
            if tag not in tags:
                problems.add(f"{at('datasets')}.{tag}", f"unknown dataset tag{did_you_mean(tag, tags)}; "
                                                        "expected optimization and/or evaluation")
        parsed = {t: _parse_dataset(datasets[t], f"{at('datasets')}.{t}", base, problems) for t in tags if t in datasets}
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
        optimization = evaluation = _parse_dataset(datasets[0], f"{at('datasets')}[0]", base, problems)
    problems.raise_if_any()
    return ACEngine(str(entry.get("name") or "model"), source, launcher, optimization, evaluation)
