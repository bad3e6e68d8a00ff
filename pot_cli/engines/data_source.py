"""Calibration data for the simplified engine: a folder, glob pattern or list of files.

This is the original POT's "simplified" engine mode (``engine.type: simplified`` with
``engine.data_source``): no annotations, no metric, just model inputs.

- **Images** (``.jpg .png .bmp ...``) for a model with one image input (rank 3 or 4, float):
  decoded with OpenCV, converted to the input's channel count, resized to its ``H x W``, laid
  out per its layout; BGR, values 0..255, no normalization (the IR carries its preprocessing).
  See :mod:`pot_cli.engines.image_io`.
- **Arrays**: ``.npy`` (one array, single-input models) or ``.npz`` (one array per input,
  keyed by input name) for any model.

Files are listed and checked cheaply up front (extension, image signature, array headers and
``.npz`` keys); samples are decoded lazily, one at a time, so a data source never holds all
samples. Use :meth:`DataSource.iter_samples` to stream them into asynchronous inference.
"""
from __future__ import annotations

import collections
import concurrent.futures
import glob
import logging
import os
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import openvino as ov

from pot_cli.engines.image_io import (
    IMAGE_EXTENSIONS,
    IMAGE_EXTENSIONS_TEXT,
    ImageInput,
    create_image_input,
    layout_text,
    parse_layout,
    prepare_image,
    read_image,
    sniff_image,
)
from pot_cli.errors import ConfigError, DatasetError

logger = logging.getLogger("pot")

_GLOB_CHARS = ("*", "?", "[")
_MAX_NAMES = 5
_EXPECTED = f"expected images ({IMAGE_EXTENSIONS_TEXT}) or .npy/.npz files"
_IMAGE_TYPES = (ov.Type.f32, ov.Type.f16, ov.Type.f64, ov.Type.u8)

# reasons a file is skipped, in the order they are reported
_NOT_DATA = "not images or .npy/.npz"
_CORRUPT = "unreadable or corrupt"
_MISSING = "listed but missing"
_IMAGES_UNUSABLE = "images, but the model has no image input"
_NPY_UNUSABLE = ".npy, but the model has several inputs (use .npz)"


class SampleReadError(DatasetError):
    """One sample file cannot be read or decoded (corrupt, truncated, vanished)."""


@dataclass
class _Input:
    """One model input and how samples are fitted to it."""

    name: str
    names: frozenset[str]
    shape: ov.PartialShape  # the model's
    dtype: np.dtype | None  # None: dynamic element type, keep the sample's
    layout: tuple[str, ...] | None  # from the argument or the IR; None: unknown
    shaped: ov.PartialShape  # the model's with the `shape` argument applied
    shape_arg: list[int] | None
    target: ov.PartialShape  # the shape for calibration (batch 1, `shape` argument applied)
    batch_axis: int | None
    image: ImageInput | None = None


class DataSource:
    """Samples of a folder, glob pattern or file list, fitted to a model's inputs.

    Built by :func:`create_data_source`. Indices ``0 .. len-1`` address :attr:`paths`; they are
    stable, also when a file turns out corrupt at read time.

    :ivar paths: the sample files, in order (folders: sorted by relative path; lists: as
        listed); each is an image, ``.npy`` or ``.npz`` file that passed the cheap checks.
    :ivar input_names: the model's input names (``input.get_any_name()``), in model order.
    :ivar input_shapes: input name -> the shape the model should be reshaped to for
        calibration: batch 1, ``H x W`` fixed when known, the ``shape`` argument applied.
    :ivar layouts: input name -> layout such as ``"NCHW"`` or ``"NHWC"``; ``""`` when unknown.
    :ivar skipped: files that were skipped (not data, missing, corrupt); grows when
        :meth:`iter_samples` meets a file that does not decode.
    :ivar source: the ``data_source`` as given.
    :cvar cache_limit_bytes: decoded samples are kept (read-only) up to this many bytes, so that
        the later passes over the calibration set (channel alignment, statistics, bias correction,
        the speed check) decode each file once; samples beyond it are decoded again each time.
    """

    cache_limit_bytes = 64 * 2**20

    def __init__(self, source: str, paths: Sequence[Path], kinds: Sequence[str],
                 inputs: Sequence[_Input], skipped: list[Path], source_key: str):
        self.source = source
        self.paths: tuple[Path, ...] = tuple(paths)
        self.input_names: tuple[str, ...] = tuple(i.name for i in inputs)
        self.input_shapes: dict[str, ov.PartialShape] = {i.name: i.target for i in inputs}
        self.layouts: dict[str, str] = {i.name: layout_text(i.layout) for i in inputs}
        self.skipped: list[Path] = skipped
        self._kinds = tuple(kinds)
        self._inputs = tuple(inputs)
        self._source_key = source_key
        self._bad: set[int] = set()
        self._warned_subset = False
        self._cache: dict[int, dict[str, np.ndarray]] = {}
        self._cache_bytes = 0
        self._cache_lock = threading.Lock()

    def __len__(self) -> int:
        """Number of samples (files that passed the cheap checks)."""
        return len(self.paths)

    def __repr__(self) -> str:
        return f"DataSource({self.source!r}, {len(self)} samples, inputs={self.input_names})"

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        """Read and prepare one sample.

        :param index: ``0 <= index < len(self)`` (negative indices count from the end).
        :return: input name -> array shaped for that input with batch 1, for example
            ``(1, 3, H, W)`` float32 (images, NCHW) or ``(1, T)`` int64 (token ids), in the
            input's element type.
        :raises SampleReadError: when the file does not read or decode (it is then added to
            :attr:`skipped`).
        :raises DatasetError: when an array does not fit its input (keys, rank, dims, dtype).
        :raises IndexError: when the index is out of range.
        """
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample index {index} out of range for {len(self)} samples")
        index %= len(self)
        try:
            return self._cached_load(index)
        except SampleReadError:
            self._mark_bad(index)
            raise

    def iter_samples(self, indices: Iterable[int] | None = None, *,
                     workers: int = 1) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """Yield samples in the order of ``indices``, skipping files that do not decode.

        Files that fail are added to :attr:`skipped` and reported in one warning when the
        iteration ends; later iterations skip them silently. Besides the cache (see
        :attr:`cache_limit_bytes`), about ``2 * workers`` samples are in memory at a time.

        :param indices: sample indices (for example from :meth:`select_subset`); all by default.
        :param workers: threads decoding ahead (OpenCV releases the GIL); 1 decodes in the
            caller's thread.
        :return: an iterator of ``(index, {input name: array})``, arrays as in
            :meth:`__getitem__`.
        :raises DatasetError: when an array does not fit its input, or when none of the
            requested samples can be read (a model calibrated on nothing would be wrong).
        """
        order = list(range(len(self)) if indices is None else indices)
        yielded = 0
        for item in self._iter_samples(order, workers):
            yielded += 1
            yield item
        if order and not yielded:
            bad = [self.paths[i] for i in dict.fromkeys(order)]
            raise DatasetError(f"{self._source_key}: {self.source}: no usable samples: all {len(bad)} "
                               f"selected file(s) are unreadable or corrupt ({_name_list(bad, self._root())}); "
                               f"{_EXPECTED}")

    def _iter_samples(self, order: list[int], workers: int) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        failed: list[tuple[int, SampleReadError]] = []
        executor = None
        try:
            if workers <= 1:
                for i in order:
                    self._check_index(i)
                    if i in self._bad:
                        continue
                    try:
                        sample = self._cached_load(i)
                    except SampleReadError as e:
                        failed.append((i, e))
                        self._mark_bad(i)
                        continue
                    yield i, sample
                return
            executor = concurrent.futures.ThreadPoolExecutor(workers, "pot-data")
            pending: collections.deque = collections.deque()
            it = iter(order)

            def submit_next() -> None:
                for j in it:
                    self._check_index(j)
                    if j not in self._bad:
                        pending.append((j, executor.submit(self._cached_load, j)))
                        return

            for _ in range(2 * workers):
                submit_next()
            while pending:
                i, future = pending.popleft()
                submit_next()
                try:
                    sample = future.result()
                except SampleReadError as e:
                    failed.append((i, e))
                    self._mark_bad(i)
                    continue
                yield i, sample
        finally:
            if executor is not None:
                executor.shutdown(wait=True, cancel_futures=True)
            if failed:
                names = _name_list([self.paths[i] for i, _ in failed], self._root())
                logger.warning("%s: skipped %d unreadable or corrupt file(s) in %s: %s (%s)",
                               self._source_key, len(failed), self.source, names,
                               failed[0][1].message)

    def select_subset(self, stat_subset_size: int | None, shuffle: bool = False,
                      seed: int = 0) -> list[int]:
        """Pick the calibration subset; see :func:`select_subset`. Warns once per data source.

        :param stat_subset_size: how many samples; None for all.
        :param shuffle: take a seeded random subset instead of the first ones.
        :param seed: seed of ``numpy.random.default_rng``.
        :return: sample indices.
        """
        indices, clipped = _select(len(self), stat_subset_size, shuffle, seed)
        if clipped and not self._warned_subset:
            self._warned_subset = True
            _warn_subset(stat_subset_size, len(self), self.source)
        return indices

    # -- internals ---------------------------------------------------------------------------

    def _check_index(self, i: int) -> None:
        if not 0 <= i < len(self):
            raise IndexError(f"sample index {i} out of range for {len(self)} samples")

    def _mark_bad(self, i: int) -> None:
        if i not in self._bad:
            self._bad.add(i)
            self.skipped.append(self.paths[i])

    def _root(self) -> Path | None:
        p = Path(self.source).expanduser().absolute()
        return p if p.is_dir() else p.parent if p.is_file() else None

    def _cached_load(self, i: int) -> dict[str, np.ndarray]:
        """:meth:`_load` through the cache (see :attr:`cache_limit_bytes`)."""
        sample = self._cache.get(i)
        if sample is not None:
            return sample
        sample = self._load(i)
        size = sum(a.nbytes for a in sample.values())
        with self._cache_lock:
            if self._cache_bytes + size <= self.cache_limit_bytes:
                for a in sample.values():
                    a.flags.writeable = False
                self._cache[i] = sample
                self._cache_bytes += size
        return sample

    def _load(self, i: int) -> dict[str, np.ndarray]:
        path, kind = self.paths[i], self._kinds[i]
        if kind == "image":
            inp = self._inputs[0]
            try:
                spec = inp.image
                image = read_image(path, keep_alpha=spec.channels == 4, gray=spec.channels == 1,
                                   target=(spec.height, spec.width) if spec.height and spec.width else None)
            except DatasetError as e:
                raise SampleReadError(e.message) from e
            return {inp.name: prepare_image(image, inp.image)}
        try:
            if kind == "npy":
                arrays = {None: np.load(path, allow_pickle=False)}
            else:
                with np.load(path, allow_pickle=False) as npz:
                    arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise SampleReadError(f"{path}: cannot read the arrays ({e})") from e
        sample = {}
        for key, name in _match_keys(arrays, self._inputs, path).items():
            inp = next(x for x in self._inputs if x.name == name)
            arr = arrays[key]
            expand = _check_array(arr.shape, arr.dtype, inp, f"{path}: {key or 'array'}")
            if expand:
                arr = np.expand_dims(arr, inp.batch_axis or 0)
            if inp.dtype is not None and arr.dtype != inp.dtype:
                arr = arr.astype(inp.dtype)
            sample[name] = np.asarray(arr, order="C")  # (ascontiguousarray makes a 0-d array 1-d)
        return {name: sample[name] for name in self.input_names}


def create_data_source(data_source: str | os.PathLike, model: ov.Model,
                       layout: str | Mapping[str, str] | None = None,
                       shape: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
                       source_key: str = "engine.data_source") -> DataSource:
    """List and check the calibration files of ``data_source`` for ``model``.

    :param data_source: a folder (searched recursively; hidden files and folders ignored), a
        glob pattern (``imgs/*.jpg``, ``data/**/*.png``), a ``.txt`` file listing one path per
        line (relative to the list's folder; blank lines and ``#`` comments skipped; a line
        ``<file> <label>`` is read as ``<file>``), or a single sample file.
    :param model: the model the samples are for; only its inputs are read.
    :param layout: input layout, ``"NCHW"``, ``"NHWC"``, ``"CHW"``, ``"HWC"`` (or OpenVINO's
        ``"[N,C,H,W]"``): a string for a single-input model, else a dict input name -> layout.
        Default: the IR's layout metadata, else inferred from the shape.
    :param shape: the shape to calibrate with (for dynamic ``H``/``W``): a list for a
        single-input model, else a dict input name -> list; ``-1`` keeps the model's dim.
        The batch dim must be 1 or -1.
    :param source_key: the config key of ``data_source``, used in messages.
    :return: the data source; nothing decoded yet.
    :raises DatasetError: when the path does not exist, no file is usable, the files do not
        suit the model (images for a multi-input model, ``.npz`` keys, array shapes or dtypes),
        or ``layout``/``shape`` do not fit the model's inputs.
    """
    source = os.fspath(data_source)
    inputs = _read_inputs(model, layout, shape)
    files, missing, root = _collect_files(source, source_key)
    image_model = len(inputs) == 1 and _image_capable(inputs[0])

    skips: dict[str, list[Path]] = {r: [] for r in
                                    (_NOT_DATA, _CORRUPT, _MISSING, _IMAGES_UNUSABLE, _NPY_UNUSABLE)}
    skips[_MISSING] = list(missing)
    kinds: list[str | None] = []
    for p in files:
        ext = p.suffix.lower()
        if ext in IMAGE_EXTENSIONS:
            kinds.append("image" if image_model else None)
            if not image_model:
                skips[_IMAGES_UNUSABLE].append(p)
        elif ext == ".npy":
            kinds.append("npy" if len(inputs) == 1 else None)
            if len(inputs) != 1:
                skips[_NPY_UNUSABLE].append(p)
        elif ext == ".npz":
            kinds.append("npz")
        else:
            kinds.append(None)
            skips[_NOT_DATA].append(p)
    if "image" in kinds:
        _resolve_image_input(inputs[0])
    for inp in inputs:
        _check_shape_batch(inp)

    paths, used_kinds = [], []
    ignored_keys: dict[str, int] = collections.Counter()
    for p, kind in zip(files, kinds):
        if kind is None:
            continue
        try:
            if kind == "image":
                ok = sniff_image(p)
            else:
                ok, extra = _check_array_file(p, kind, inputs)
                ignored_keys.update(extra)
        except OSError:
            ok = False
        if ok:
            paths.append(p)
            used_kinds.append(kind)
        else:
            skips[_CORRUPT].append(p)

    if ignored_keys:
        logger.warning("%s: arrays that feed no model input are ignored: %s (model inputs: %s)", source_key,
                       ", ".join(f"'{k}' in {n} file(s)" for k, n in sorted(ignored_keys.items())),
                       ", ".join(i.name for i in inputs))
    skipped = [p for ps in skips.values() for p in ps]
    if not paths:
        raise _no_samples_error(source, files, skips, inputs, root)
    if skipped:
        details = "; ".join(f"{len(ps)} {reason}: {_name_list(ps, root)}"
                            for reason, ps in skips.items() if ps)
        logger.warning("%s: skipped %d of %d files in %s (%s)", source_key, len(skipped),
                       len(files) + len(missing), source, details)
    return DataSource(source, paths, used_kinds, inputs, skipped, source_key)


def select_subset(n_total: int, stat_subset_size: int | None, shuffle: bool, seed: int, *,
                  source: str | None = None) -> list[int]:
    """Pick the calibration subset: the first ``stat_subset_size`` samples, or with ``shuffle``
    the first ones of a seeded random permutation (``numpy.random.default_rng(seed)``).

    When ``stat_subset_size`` exceeds ``n_total``, logs one warning and returns all.

    :param n_total: number of samples in the data source.
    :param stat_subset_size: how many samples; None for all.
    :param shuffle: take a random subset; the same ``seed`` gives the same subset.
    :param seed: the random seed.
    :param source: the data source, named in the warning.
    :return: ``min(stat_subset_size, n_total)`` distinct indices in ``0 .. n_total-1``.
    :raises ConfigError: when ``stat_subset_size`` is below 1.
    """
    indices, clipped = _select(n_total, stat_subset_size, shuffle, seed)
    if clipped:
        _warn_subset(stat_subset_size, n_total, source)
    return indices


# -- subset -------------------------------------------------------------------------------------

def _select(n_total: int, size: int | None, shuffle: bool, seed: int) -> tuple[list[int], bool]:
    if size is not None and (isinstance(size, bool) or size < 1):
        raise ConfigError(f"stat_subset_size: {size!r} is not a number of samples; "
                          "expected an integer >= 1")
    clipped = size is not None and size > n_total
    n = n_total if size is None or clipped else size
    if shuffle:
        return np.random.default_rng(seed).permutation(n_total)[:n].tolist(), clipped
    return list(range(n)), clipped


_WARNED_SUBSETS: set[tuple] = set()


def _warn_subset(size: int | None, n_total: int, source: str | None) -> None:
    """A warning when ``stat_subset_size`` was set above the data; an info line at its default.
    Once per (size, data) in a process: the subset is computed again by later stages (the
    analysis), and the line was logged twice."""
    from pot_cli.config.model import QuantizationParams

    if (size, n_total, source) in _WARNED_SUBSETS:
        return
    _WARNED_SUBSETS.add((size, n_total, source))

    level = logging.INFO if size == QuantizationParams.stat_subset_size else logging.WARNING
    logger.log(level, "stat_subset_size %s is larger than the %d samples in %s; using all %d",
               size, n_total, source or "the data source", n_total)


# -- files --------------------------------------------------------------------------------------

def _collect_files(source: str, source_key: str) -> tuple[list[Path], list[Path], Path | None]:
    """Return (files, missing list entries, root for display names)."""
    p = Path(source).expanduser()
    if p.is_dir():
        root = p.absolute()
        return _walk(root), [], root
    if p.is_file():
        if p.suffix.lower() == ".txt":
            return _read_list(p.absolute(), source_key)
        return [p.absolute()], [], p.absolute().parent
    if any(c in source for c in _GLOB_CHARS):
        matches = [Path(m).absolute() for m in glob.glob(os.path.expanduser(source), recursive=True)
                   if os.path.isfile(m)]
        if not matches:
            raise DatasetError(f"{source_key}: {source}: no file matches the pattern",
                               hint="a folder, a glob pattern or a .txt list of files")
        return sorted(set(matches), key=lambda m: m.parts), [], None
    # a path that does not exist is a configuration error (exit 2), as a missing model path
    raise ConfigError(f"{source_key}: {source}: no such file or folder; expected a folder, "
                      "a glob pattern or a .txt list of files")


def _walk(root: Path) -> list[Path]:
    """All non-hidden regular files under ``root``, sorted by relative path; symlink loops cut."""
    files: list[Path] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        # regular files only: reading a FIFO or a device would block or never end
        files.extend(Path(dirpath, f) for f in filenames
                     if not f.startswith(".") and os.path.isfile(os.path.join(dirpath, f)))
    return sorted(files, key=lambda f: f.relative_to(root).parts)


def _read_list(txt: Path, source_key: str) -> tuple[list[Path], list[Path], Path]:
    try:
        lines = txt.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{source_key}: {txt}: cannot read the file list ({e})") from e
    base = txt.parent
    files: list[Path] = []
    missing: list[Path] = []
    for line in lines:
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        # "<file>", or "<file> <label>" as in ImageNet-style annotation files
        candidates = [entry] + ([entry.split()[0], entry.rsplit(None, 1)[0]]
                                if len(entry.split()) > 1 else [])
        for c in candidates:
            cp = Path(c).expanduser()
            cp = cp if cp.is_absolute() else base / cp
            if cp.is_file():
                files.append(cp)
                break
            if cp.is_dir():
                files.extend(_walk(cp))
                break
        else:
            missing.append(base / entry)
    return files, missing, base


def _name_list(paths: Sequence[Path], root: Path | None) -> str:
    """``"a.jpg, sub/b.png, ... and 7 more"``: the first few names, relative to ``root``."""
    def name(p: Path) -> str:
        for base in (root, Path.cwd()):
            if base is not None:
                try:
                    return p.relative_to(base).as_posix()
                except ValueError:
                    pass
        return str(p)

    names = ", ".join(name(p) for p in paths[:_MAX_NAMES])
    return names + (f" and {len(paths) - _MAX_NAMES} more" if len(paths) > _MAX_NAMES else "")


def _no_samples_error(source: str, files: list[Path], skips: dict[str, list[Path]],
                      inputs: Sequence[_Input], root: Path | None) -> DatasetError:
    names = ", ".join(i.name for i in inputs)
    if skips[_IMAGES_UNUSABLE] and len(inputs) > 1:
        return DatasetError(f"{source}: holds images, but the model has {len(inputs)} inputs "
                            f"({names}); use .npz files with the keys {names}, one array each")
    if skips[_IMAGES_UNUSABLE]:
        i = inputs[0]
        return DatasetError(f"{source}: holds images, but input '{i.name}' {i.shape} "
                            f"{i.dtype or 'dynamic type'} is not an image input (rank 3 or 4, "
                            "float); use .npy or .npz files")
    if skips[_NPY_UNUSABLE]:
        return DatasetError(f"{source}: holds .npy files, but the model has {len(inputs)} "
                            f"inputs ({names}); use .npz files with the keys {names}")
    if not files and not skips[_MISSING]:
        why = "no files found"
    else:
        why = "; ".join(f"{len(ps)} {reason}: {_name_list(ps, root)}"
                        for reason, ps in skips.items() if ps)
    return DatasetError(f"{source}: no usable samples ({why}); {_EXPECTED}")


# -- model inputs -------------------------------------------------------------------------------

def _read_inputs(model: ov.Model, layout, shape) -> list[_Input]:
    ports = list(model.inputs)
    if not ports:
        raise DatasetError("the model has no inputs; nothing to calibrate")
    base = []
    for port in ports:
        try:
            name = port.get_any_name()
        except RuntimeError:
            name = port.get_node().get_friendly_name()
        base.append((name, frozenset(port.get_names()) | {name}, port))
    layouts = _per_input(layout, base, "layout")
    shapes = _per_input(shape, base, "shape")

    inputs = []
    for name, names, port in base:
        pshape = port.get_partial_shape()
        rank = pshape.rank.get_length() if pshape.rank.is_static else None
        names_layout = _input_layout(name, layouts.get(name), port, rank)
        shaped, shape_arg = pshape, None
        if name in shapes:
            shaped = _apply_shape(name, shapes[name], pshape, rank)
            shape_arg = [int(d) for d in shapes[name]]
            rank = len(shaped)
        # the batch axis: N of the layout; unknown layout: the first of rank >= 2
        if names_layout is not None:
            batch_axis = names_layout.index("N") if "N" in names_layout else None
        else:
            batch_axis = 0 if rank is not None and rank >= 2 else None
        target = shaped
        if batch_axis is not None and target[batch_axis].is_dynamic:
            dims = list(target)
            dims[batch_axis] = ov.Dimension(1)
            target = ov.PartialShape(dims)
        inputs.append(_Input(name, names, pshape, _np_dtype(port.get_element_type()),
                             names_layout, shaped, shape_arg, target, batch_axis))
    return inputs


def _check_shape_batch(inp: _Input) -> None:
    if inp.shape_arg is not None and inp.batch_axis is not None:
        b = inp.shape_arg[inp.batch_axis]
        if b not in (1, -1):
            raise ConfigError(f"engine.shape {inp.shape_arg} for input '{inp.name}': batch dim {b}; "
                              "expected 1 (samples are fed one at a time)")


def _per_input(value, base, what: str) -> dict:
    """Map a ``layout``/``shape`` argument to input name -> value.

    :raises ConfigError: naming ``engine.<what>`` (a value the user gave: exit code 2).
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        if len(base) != 1:
            raise ConfigError(f"engine.{what} {value!r}: the model has {len(base)} inputs "
                              f"({', '.join(b[0] for b in base)}); give a dict input name -> {what}")
        return {base[0][0]: value}
    lookup = {n: b[0] for b in base for n in b[1]}
    unknown = [k for k in value if k not in lookup]
    if unknown:
        raise ConfigError(f"engine.{what}: unknown input(s) {', '.join(map(str, unknown))}; "
                          f"expected {', '.join(b[0] for b in base)}")
    return {lookup[k]: v for k, v in value.items()}


def _ir_layout(port) -> tuple[str, ...] | None:
    ir_layout = port.get_node().get_layout()
    if ir_layout.empty:
        return None
    try:
        return parse_layout(ir_layout.to_string())
    except ValueError:
        return None


def _input_layout(name, given, port, rank) -> tuple[str, ...] | None:
    ir = _ir_layout(port)
    ir = ir if ir is not None and (rank is None or len(ir) == rank) else None
    if given is not None:
        try:
            names = parse_layout(str(given))
        except ValueError:
            names = None
        if names is None or (rank is not None and len(names) != rank):
            raise ConfigError(f"engine.layout {given!r} for input '{name}' {port.get_partial_shape()}: "
                              f"expected {rank or 'some'} axis letters such as "
                              f"{'NCHW or NHWC' if rank == 4 else 'CHW or HWC' if rank == 3 else 'NC'}")
        if ir is not None and tuple(ir) != tuple(names):
            logger.warning("engine.layout %s for input '%s' %s overrides the IR's layout %s", "".join(names), name,
                           port.get_partial_shape(), "".join(ir))
        return names
    return ir


def _apply_shape(name, given, pshape, rank) -> ov.PartialShape:
    if (not isinstance(given, (list, tuple)) or not given
            or any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or (d < 1 and d != -1)
                   for d in given)):
        raise ConfigError(f"engine.shape {given!r} for input '{name}': expected a list of positive "
                          "integers (-1 keeps the model's dim)")
    if rank is not None and len(given) != rank:
        raise ConfigError(f"engine.shape {list(given)} for input '{name}' {pshape}: "
                          f"expected {rank} dims")
    dims = []
    for k, d in enumerate(given):
        dims.append(pshape[k] if d == -1 and rank is not None else ov.Dimension(int(d)))
    return ov.PartialShape(dims)


def _np_dtype(et: ov.Type) -> np.dtype | None:
    if et == ov.Type.dynamic:
        return None
    if et == ov.Type.bf16:
        return np.dtype(np.float32)
    try:
        return np.dtype(et.to_dtype())
    except (TypeError, RuntimeError):
        return None


def _image_capable(inp: _Input) -> bool:
    rank = inp.shape.rank
    return (rank.is_static and rank.get_length() in (3, 4)
            and (inp.dtype is None or inp.dtype in (np.float32, np.float16, np.float64, np.uint8)))


def _resolve_image_input(inp: _Input) -> None:
    """Fix the image layout, channels and ``H x W`` of the single input; updates ``inp``."""
    dims = [d.get_length() if d.is_static else None for d in inp.shaped]
    spec = create_image_input(f"input '{inp.name}' {inp.shaped}", dims, inp.layout, inp.dtype)
    size = {"N": 1, "C": spec.channels, "H": spec.height or -1, "W": spec.width or -1}
    inp.layout = tuple(spec.layout)
    inp.batch_axis = spec.layout.find("N") if "N" in spec.layout else None
    inp.target = ov.PartialShape([size[a] for a in spec.layout])
    inp.image = spec


# -- arrays -------------------------------------------------------------------------------------

def _npy_header(f) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        shape, _, dtype = np.lib.format._read_array_header(f, version)  # noqa: SLF001
    return shape, dtype


def _check_array_file(path: Path, kind: str, inputs: Sequence[_Input]) -> tuple[bool, list[str]]:
    """Check an array file's headers against the inputs without reading its data.

    :return: False when the file is corrupt, and the ``.npz`` keys that feed no input (ignored).
    :raises DatasetError: when the file is readable but does not fit the model.
    """
    headers: dict[str | None, tuple] = {}
    try:
        if kind == "npy":
            with open(path, "rb") as f:
                headers[None] = _npy_header(f)
        else:
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                    with zf.open(info) as f:
                        headers[key] = _npy_header(f)
    except (ValueError, EOFError, zipfile.BadZipFile, KeyError):
        return False, []
    mapping = _match_keys(headers, inputs, path)
    for key, name in mapping.items():
        inp = next(x for x in inputs if x.name == name)
        shape, dtype = headers[key]
        _check_array(shape, dtype, inp, f"{path}: {key or 'array'}")
    return True, [str(k) for k in headers if k not in mapping]


def _match_keys(keys: Iterable[str | None], inputs: Sequence[_Input], path: Path) -> dict:
    """Map array keys (None for a ``.npy`` file) to input names; all inputs must be given. Other
    keys (a label stored beside the inputs) are left out of the mapping when every input has its
    key; when one is missing, they are named in the error (a misspelt input name)."""
    keys = list(keys)
    if keys == [None] or (len(inputs) == 1 and keys == ["arr_0"]):
        return {keys[0]: inputs[0].name}
    lookup = {n: i.name for i in inputs for n in i.names}
    mapping = {k: lookup[k] for k in keys if k in lookup}
    unexpected = [k for k in keys if k not in lookup]
    missing = [i.name for i in inputs if i.name not in mapping.values()]
    if missing:
        problems = ([f"missing {', '.join(missing)}"] if missing else []) + \
                   ([f"unexpected {', '.join(map(str, unexpected))}"] if unexpected else [])
        raise DatasetError(f"{path}: keys do not match the model inputs ({'; '.join(problems)}); "
                           f"expected one array per input: {', '.join(i.name for i in inputs)}")
    if len(set(mapping.values())) != len(mapping):
        raise DatasetError(f"{path}: several keys name the same input ({', '.join(keys)}); "
                           f"expected one array per input: {', '.join(i.name for i in inputs)}")
    return mapping


def _check_array(shape: tuple[int, ...], dtype: np.dtype, inp: _Input, where: str) -> bool:
    """Check one array against its input.

    :return: True when a batch axis of 1 must be added (array rank one below the input's).
    :raises DatasetError: on a rank, dim or dtype mismatch.
    """
    if dtype.kind not in "biuf":
        raise DatasetError(f"{where}: dtype {dtype} is not numeric; expected {inp.dtype or 'numbers'}")
    if inp.dtype is not None and not np.can_cast(dtype, inp.dtype, "same_kind"):
        raise DatasetError(f"{where}: dtype {dtype} cannot be converted to the input's "
                           f"{inp.dtype} without losing values")
    if inp.target.rank.is_dynamic:
        return False
    rank = inp.target.rank.get_length()
    expand = len(shape) == rank - 1
    fitted = tuple(shape)
    if expand:
        axis = inp.batch_axis or 0
        fitted = fitted[:axis] + (1,) + fitted[axis:]
    # a batch of several samples in one array is fed as it is where the model's batch is dynamic
    free_batch = inp.batch_axis is not None and inp.shaped.rank.is_static and inp.shaped[inp.batch_axis].is_dynamic
    if len(fitted) != rank or any(t.is_static and t.get_length() != d and not (free_batch and k == inp.batch_axis)
                                  for k, (d, t) in enumerate(zip(fitted, inp.target))):
        raise DatasetError(f"{where}: shape {list(shape)} does not fit input '{inp.name}'; "
                           f"expected {inp.target} (batch dim 1 may be left out"
                           f"{'; any batch is fed as it is' if free_batch else ''})")
    return expand
