"""Converters for classification and regression datasets (Accuracy Checker 2023.3 names).

* ``imagenet``: ``annotation_file`` of ``<file> <label>`` lines (ILSVRC ``val.txt`` style; the
  file name may contain spaces, the label is the last field, an int >= 0), ``labels_file`` (one
  class name per line), ``has_background`` (default false: with true every label is shifted by
  +1 and class 0 is ``background``, for 1001-class models), ``images_dir`` (default: the
  dataset's ``data_source``). Annotations are int labels.
* ``cls_dataset_folder``: ``data_dir`` (default ``data_source``) with one sub-folder per class,
  sorted by name; the class id is the folder's position. AC takes every file of a class folder
  (non-recursive); we take the files the reader reads, recursively.
* ``features_regression``: ``input_dir`` (default ``data_source``), ``reference_dir``,
  ``input_suffix``/``reference_suffix`` (default ``.txt``): one reference array per input file,
  float32, for the ``mae``/``mse``/``rmse`` metrics (our converter; AC's regression converters
  are dataset-specific).

Source: Accuracy Checker 2023.3 ``annotation_converters/imagenet.py`` and
``annotation_converters/dataset_folder.py``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np

from pot_cli.config.loader import resolve_path
from pot_cli.engines.ac.base import Converted, Converter, register_converter
from pot_cli.engines.ac.representations import DatasetMeta
from pot_cli.errors import DatasetError


def list_files(root: Path, extensions: Iterable[str]) -> list[Path]:
    """Files under ``root`` (recursive, hidden entries skipped) whose suffix is in ``extensions``
    (case-insensitive), sorted by their path relative to ``root``."""
    exts = {e.lower() for e in extensions}
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(Path(dirpath, f) for f in filenames if not f.startswith(".") and Path(f).suffix.lower() in exts)
    return sorted(out, key=lambda p: p.relative_to(root).parts)


def read_array(path: Path) -> np.ndarray:
    """A ``.npy`` array, or the numbers of a text file (``numpy.loadtxt``, at least 1-D).

    :raises DatasetError: the file cannot be read or parsed.
    """
    try:
        return np.load(path, allow_pickle=False) if path.suffix.lower() == ".npy" else np.loadtxt(path, ndmin=1)
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: cannot read the array ({e})") from e


def _meta(names: list[str] | None) -> DatasetMeta:
    return DatasetMeta(dict(enumerate(names)) if names else {})


@register_converter("imagenet", keys=("annotation_file", "labels_file", "has_background", "images_dir"))
class ImagenetConverter(Converter):
    """``<file> <label>`` lines to int labels (see the module docstring).

    :raises DatasetError: from :meth:`convert`: unreadable files, a malformed line (naming its
        number), listed images that do not exist (up to 5 named).
    """

    annotation_kind = "label"

    def convert(self) -> Converted:
        conv, ctx = self.params, self.ctx
        if "annotation_file" not in conv:
            ctx.add("annotation_file", "missing required key; expected a file of '<file> <label>' lines")
            return Converted([], [])
        ann = resolve_path(str(conv["annotation_file"]), ctx.base)
        images = resolve_path(str(conv["images_dir"]), ctx.base) if conv.get("images_dir") else ctx.data_source
        if images is None:
            ctx.add(None, "needs the dataset's data_source (or images_dir) for the image files")
            return Converted([], [])
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
            path = resolve_path(str(conv["labels_file"]), ctx.base)
            try:
                names = [l.strip() for l in path.read_text(encoding="utf-8-sig").splitlines() if l.strip()]
            except OSError as e:
                raise DatasetError(f"{path}: cannot read the labels file ({e.strerror or e})") from e
            names = (["background"] if shift else []) + names
        return Converted(files, labels, _meta(names))


@register_converter("cls_dataset_folder", keys=("data_dir",))
class ClassFolderConverter(Converter):
    """One sub-folder per class (sorted) to int labels; files with the reader's extensions."""

    annotation_kind = "label"

    def convert(self) -> Converted:
        conv, ctx = self.params, self.ctx
        data_dir = resolve_path(str(conv["data_dir"]), ctx.base) if conv.get("data_dir") else ctx.data_source
        if data_dir is None or not data_dir.is_dir():
            ctx.add("data_dir", f"not a folder: {data_dir}; expected one sub-folder per class")
            return Converted([], [])
        classes = sorted(d.name for d in data_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
        files, labels = [], []
        for label, name in enumerate(classes):
            found = list_files(data_dir / name, ctx.extensions)
            files += found
            labels += [label] * len(found)
        return Converted(files, labels, _meta(classes))


@register_converter("features_regression",
                    keys=("input_dir", "reference_dir", "input_suffix", "reference_suffix"))
class FeaturesRegressionConverter(Converter):
    """A float32 reference array per input file (matched by name with the suffixes swapped).

    :raises DatasetError: from :meth:`convert` when a reference is missing or unreadable.
    """

    annotation_kind = "regression"

    def convert(self) -> Converted:
        conv, ctx = self.params, self.ctx
        inputs = resolve_path(str(conv["input_dir"]), ctx.base) if conv.get("input_dir") else ctx.data_source
        if "reference_dir" not in conv:
            ctx.add("reference_dir", "missing required key; expected the folder of reference arrays")
            return Converted([], [])
        refs = resolve_path(str(conv["reference_dir"]), ctx.base)
        in_suffix, ref_suffix = conv.get("input_suffix", ".txt"), conv.get("reference_suffix", ".txt")
        if inputs is None or not inputs.is_dir():
            ctx.add("input_dir", f"not a folder: {inputs}")
            return Converted([], [])
        files = list_files(inputs, [in_suffix])
        references = []
        for f in files:
            ref = refs / (f.name[: -len(in_suffix)] + ref_suffix)
            if not ref.is_file():
                raise DatasetError(f"{ref}: reference for {f.name} not found; expected one per input file")
            references.append(read_array(ref).astype(np.float32))
        return Converted(files, references, DatasetMeta())
