"""From ``DataLoader`` items to inference feeds (the data contracts of POT's ``IEEngine``).

:func:`parse_item` splits an item into data, annotation and metadata; :class:`InputFeeder` fits
the data to a model's inputs as ``{input name: array}``, keyed as
:mod:`pot_cli.engines.data_source` keys its samples (``port.get_any_name()``, else the friendly
name), so a feed goes straight to :func:`pot_cli.statistics.collector.start_sample`. Unlike POT,
which ``np.reshape``-d arrays to the IR shape (HWC images into an NCHW input became garbage), an
array is only given or stripped of size-1 dims where the other dims keep their order, or
transposed between channels-last and channels-first; anything else is a ``DatasetError``.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import openvino as ov

from pot_cli.engines.image_io import layout_text, parse_layout
from pot_cli.errors import ConfigError, DatasetError

logger = logging.getLogger("pot")

_FORMS = "a tuple (data, annotation), (data, annotation, metadata) or ((index, annotation), data[, metadata])"
_DATA = "an ndarray or a dict {input name: ndarray}"
_CHANNELS = (1, 3)


@dataclass(frozen=True)
class LoaderItem:
    """One ``DataLoader`` item, split.

    :ivar data: an ndarray (or anything ``np.asarray`` takes) or a dict ``{input name: array}``,
        as the loader returned it (not copied).
    :ivar annotation: the annotation, ``None`` when there is none.
    :ivar metadata: the metadata (``{}`` when the item has none), for ``postprocess_output``.
    :ivar has_annotation: True when the item carries an annotation that is not ``None``, i.e. the
        metric can be updated with it (False for every ``simplified`` item).
    """

    data: Any
    annotation: Any
    metadata: Any
    has_annotation: bool


def parse_item(item: Any, index: int, simplified: bool = False) -> LoaderItem:
    """Split one ``DataLoader`` item.

    Accepted forms (tuples only, as POT): ``(data, annotation[, metadata])`` (2022.1+),
    ``((img_id, annotation), data[, metadata])`` (every release; told apart by
    ``isinstance(item[0], tuple)`` as POT does) and ``({img_id: annotation}, data[, metadata])``
    (2021.4; a one-entry dict with an integer key). With ``simplified=True`` (POT's
    SimplifiedEngine) the item is the bare data and the annotation is ``None``.

    :param item: what ``DataLoader.__getitem__(index)`` returned.
    :param index: the dataset index, for messages.
    :param simplified: True for bare-data items.
    :return: the parts; ``img_id`` of the old forms is dropped (the caller has ``index``).
    :raises DatasetError: on any other form, naming the index and the accepted forms.
    """
    where = f"DataLoader item {index}"
    if simplified:
        if isinstance(item, tuple) or not _is_data(item):
            raise DatasetError(f"{where}: {_what(item)}; expected bare data ({_DATA}) for the simplified engine")
        return LoaderItem(item, None, {}, False)
    if not isinstance(item, tuple) or len(item) not in (2, 3):
        raise DatasetError(f"{where}: {_what(item)}; expected {_FORMS}")
    first, data, annotation = item[0], item[1], item[1]
    if isinstance(first, tuple):
        if len(first) != 2:
            raise DatasetError(f"{where}: a tuple whose first element is {_what(first)}; expected {_FORMS}")
        annotation = first[1]
    elif isinstance(first, dict) and len(first) == 1 and type(next(iter(first))) is not bool \
            and isinstance(next(iter(first)), (int, np.integer)):
        annotation = next(iter(first.values()))
    else:
        data = first
    if not _is_data(data):
        raise DatasetError(f"{where}: data is {_what(data)}; expected {_DATA}")
    metadata = item[2] if len(item) == 3 else {}
    return LoaderItem(data, annotation, metadata, annotation is not None)


@dataclass
class _Port:
    name: str  # the feed key
    names: frozenset[str]  # the key, the friendly name and the tensor names
    shape: ov.PartialShape
    dtype: np.dtype | None  # None: dynamic element type, keep the data's
    rank: int | None = None
    dims: list[int | None] | None = None  # None for a dynamic dim
    layout: tuple[str, ...] | None = None
    batch_axis: int = 0

    def describe(self) -> str:
        return f"'{self.name}' {self.shape}" + (f" ({layout_text(self.layout)})" if self.layout else "")


class InputFeeder:
    """Fits ``DataLoader`` data to the inputs of one model.

    Layout of each input: the ``layout`` argument, else the IR's (``ov.layout_helpers.get_layout``),
    else inferred for rank 3/4 inputs (``NCHW``/``CHW`` when dim 1 (0) is 1 or 3 and the last is
    not; ``NHWC``/``HWC`` the other way round).

    image_info rule (two-input model, exactly one input 2-D, data not a dict): the array feeds the
    other input and image_info gets one row ``[H, W, 1, ..., 1]`` per image of the fitted batch
    (``H``, ``W`` read through the image input's layout, NCHW when unknown; row length: the
    input's last dim, 3 when dynamic). POT wrote ``[H, W, C]`` from the first item's raw shape,
    which puts the channel count where Faster R-CNN's Proposal reads the image scale; here the
    scale is 1, the image being fed at its own size.

    :param model: the model whose inputs are fed.
    :param layout: None, one layout such as ``"NCHW"`` (for every input of that rank), or
        ``{input name: layout}`` (friendly or tensor names).
    :ivar input_names: the feed keys, in model input order.
    :raises ConfigError: when ``layout`` is not a layout, does not match an input's rank or names
        an unknown input.
    """

    def __init__(self, model: ov.Model, layout: str | Mapping[str, str] | None = None):
        self._ports: list[_Port] = []
        for port in model.inputs:
            try:
                name = port.get_any_name()
            except RuntimeError:
                name = port.get_node().get_friendly_name()
            names = frozenset(port.get_names()) | {name, port.get_node().get_friendly_name()}
            shape = port.get_partial_shape()
            dims = [d.get_length() if d.is_static else None for d in shape] if shape.rank.is_static else None
            self._ports.append(_Port(name, names, shape, _np_dtype(port.get_element_type()),
                                     None if dims is None else len(dims), dims))
        self._lookup = {n: p for p in self._ports for n in p.names}
        self.input_names: tuple[str, ...] = tuple(p.name for p in self._ports)
        given = self._given_layouts(layout)
        for p, port in zip(self._ports, model.inputs):
            ir = _parse(ov.layout_helpers.get_layout(port).to_string())
            p.layout = given.get(p.name) or (ir if ir and len(ir) == p.rank else None) or _infer_layout(p.dims)
            p.batch_axis = p.layout.index("N") if p.layout and "N" in p.layout else 0
        self._logged_transpose = False

    def _given_layouts(self, layout) -> dict[str, tuple[str, ...]]:
        if layout is None:
            return {}
        if isinstance(layout, Mapping):
            unknown = [k for k in layout if k not in self._lookup]
            if unknown:
                raise ConfigError(f"layout: unknown input(s) {', '.join(map(str, unknown))}; "
                                  f"expected {', '.join(self.input_names)}")
            items = [(self._lookup[k], v) for k, v in layout.items()]
        else:
            items = [(p, layout) for p in self._ports]
        result = {}
        for p, text in items:
            names = _parse(str(text))
            if names is not None and len(names) == p.rank:
                result[p.name] = names
            elif isinstance(layout, Mapping) or len(self._ports) == 1:
                raise ConfigError(f"layout {text!r} for input {p.describe()}: expected {p.rank or 'some'} axis letters "
                                  "such as NCHW or NHWC")
        if not result:
            raise ConfigError(f"layout {layout!r}: no input of the model ({', '.join(self.input_names)}) has "
                              "that rank; expected a layout such as NCHW or a dict {input name: layout}")
        return result

    def feed(self, data: Any, index: int) -> dict[str, np.ndarray]:
        """Fit one item's data to the model inputs.

        Per input: an array of the input's rank is taken as is (a dynamic batch may exceed 1);
        one of rank - 1 gets a batch dim of 1; size-1 dims are added or dropped where the order
        of the other dims stays (grayscale ``(28, 28)`` for ``[?,1,28,28]``); ``(H, W, C)`` is
        transposed to ``(C, H, W)`` for an NCHW input and the other way for NHWC (logged once per
        feeder); rank-0 inputs take any one-element array. Values are cast to the input's element
        type (float -> integer only for whole numbers in range).

        :param data: an array-like (one-input model, or two-input image_info model) or a dict
            ``{friendly or tensor name: array-like}`` holding every input.
        :param index: the dataset index, for messages.
        :return: ``{input name: array}`` for every input, C-contiguous copies of the input's dtype
            and a shape that fits its partial shape.
        :raises DatasetError: on missing or unknown keys, a shape or dtype that does not fit, or
            non-dict data for a model with 3+ inputs (or 2 inputs without one 2-D image_info).
        """
        where = f"DataLoader item {index}"
        if isinstance(data, Mapping):
            arrays: dict[str, Any] = {}
            for key, value in data.items():
                port = self._lookup.get(key) if isinstance(key, str) else None
                if port is None or port.name in arrays:
                    problem = "unknown key" if port is None else "second key for input"
                    raise DatasetError(f"{where}: {problem} {key!r}; expected one array per model input: "
                                       f"{', '.join(self.input_names)}")
                arrays[port.name] = value
            missing = [n for n in self.input_names if n not in arrays]
            if missing:
                raise DatasetError(f"{where}: no array for input(s) {', '.join(missing)}; expected a dict with "
                                   f"one array per model input: {', '.join(self.input_names)}")
            return {p.name: self._fit(arrays[p.name], p, where) for p in self._ports}
        if len(self._ports) == 1:
            return {self._ports[0].name: self._fit(data, self._ports[0], where)}
        info = [p for p in self._ports if p.rank == 2]
        if len(self._ports) != 2 or len(info) != 1:
            raise DatasetError(f"{where}: {_what(data)} for a model with {len(self._ports)} inputs "
                               f"({', '.join(self.input_names)}); expected a dict {{input name: array}} (an array "
                               "alone feeds a one-input model or the image of an image + 2-D image_info model)")
        image_port = next(p for p in self._ports if p is not info[0])
        image = self._fit(data, image_port, where)
        return {p.name: image if p is image_port else self._image_info(image, image_port, p, where)
                for p in self._ports}

    def _image_info(self, image: np.ndarray, image_port: _Port, port: _Port, where: str) -> np.ndarray:
        layout = image_port.layout or ("NCHW" if image.ndim == 4 else "CHW")
        if image.ndim != len(layout) or "H" not in layout or "W" not in layout:
            raise DatasetError(f"{where}: cannot tell H and W of input {image_port.describe()} for image_info "
                               f"input {port.describe()}; expected a dict {{input name: array}}")
        rows = image.shape[layout.index("N")] if "N" in layout else 1
        width = port.dims[1] or 3
        row = [image.shape[layout.index("H")], image.shape[layout.index("W")]] + [1] * (width - 2)
        info = np.array([row] * rows, dtype=np.float64)
        if width < 2 or not _fits(info.shape, port.dims):
            raise DatasetError(f"{where}: image_info rows {list(info.shape)} for {rows} image(s) do not fit input "
                               f"{port.describe()}; expected a dict {{input name: array}}")
        return self._fit(info, port, where)

    def _fit(self, value: Any, port: _Port, where: str) -> np.ndarray:
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError) as e:
            raise DatasetError(f"{where}: data for input {port.describe()} is not an array ({e}); "
                               f"expected {_DATA}") from e
        if arr.dtype.kind not in "biuf":
            raise DatasetError(f"{where}: data for input {port.describe()} has dtype {arr.dtype}; "
                               f"expected numbers ({port.dtype or 'any numeric dtype'})")
        dims, rank = port.dims, port.rank
        if rank is None:
            fitted = arr
        elif rank == 0:
            fitted = arr.reshape(()) if arr.size == 1 else None
        elif arr.ndim == rank and _fits(arr.shape, dims):
            fitted = arr
        elif arr.ndim == rank - 1 and _fits(_insert(arr.shape, port.batch_axis, 1), dims):
            fitted = np.expand_dims(arr, port.batch_axis)
        else:
            fitted = _squeeze_fit(arr, dims, port.batch_axis)
            fitted = self._transpose_fit(arr, port) if fitted is None else fitted
        if fitted is None:
            alt = _alt_layout(port.layout)
            note = f" ({layout_text(alt[1])} data is transposed to {layout_text(alt[0])})" if alt else ""
            no_batch = ov.PartialShape([d for k, d in enumerate(port.shape) if k != port.batch_axis])
            expected = (f"{port.shape}, or {no_batch} without the batch dim{note}" if rank
                        else "a single value (the input is rank 0)")
            raise DatasetError(f"{where}: data shape {arr.shape} does not fit input {port.describe()}; "
                               f"expected {expected}")
        return _cast(fitted, port, where)

    def _transpose_fit(self, arr: np.ndarray, port: _Port) -> np.ndarray | None:
        alt = _alt_layout(port.layout)
        if alt is None:
            return None
        target, source = alt  # without N
        has_n = "N" in port.layout
        if arr.ndim == len(target):
            moved = arr.transpose([source.index(a) for a in target])
            moved = np.expand_dims(moved, port.batch_axis) if has_n else moved
        elif has_n and arr.ndim == len(port.layout):
            source = tuple(_insert(source, port.batch_axis, "N"))  # the data's N where the input has it
            moved = arr.transpose([source.index(a) for a in port.layout])
        else:
            return None
        if not _fits(moved.shape, port.dims):
            return None
        if not self._logged_transpose:
            self._logged_transpose = True
            logger.info("DataLoader data for input %s is %s; transposing it to %s (the original POT reshaped "
                        "it without a transpose)", port.describe(), layout_text(source), layout_text(target))
        return moved


def _cast(arr: np.ndarray, port: _Port, where: str) -> np.ndarray:
    """A C-contiguous copy of ``arr`` in ``port``'s dtype; integer and bool targets get range checks."""
    dtype = port.dtype or arr.dtype
    if dtype.kind in "iub" and arr.dtype != dtype and arr.size:
        low, high = (0, 1) if dtype.kind == "b" else (np.iinfo(dtype).min, np.iinfo(dtype).max)
        lo, hi = arr.min(), arr.max()
        whole = arr.dtype.kind != "f" or bool(np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)))
        if not whole or lo < low or hi > high:
            raise DatasetError(f"{where}: data for input {port.describe()} has {arr.dtype} values in "
                               f"[{lo}, {hi}]{'' if whole else ' (not whole numbers)'}; expected {dtype} "
                               f"values in [{low}, {high}]")
    return np.array(arr, dtype=dtype, order="C", copy=True)


def _fits(shape, dims: list[int | None]) -> bool:
    return len(shape) == len(dims) and all(d is None or d == s for s, d in zip(shape, dims))


def _insert(seq, pos: int, value) -> list:
    seq = list(seq)
    return seq[:pos] + [value] + seq[pos:]


def _squeeze_fit(arr: np.ndarray, dims: list[int | None], batch_axis: int) -> np.ndarray | None:
    """Add or drop size-1 dims where the other dims keep their order: first with a dynamic batch
    taken as 1, then with it free when every other dim is static."""
    data = [s for s in arr.shape if s != 1]
    variants = [[1 if k == batch_axis and d is None else d for k, d in enumerate(dims)]]
    if dims[batch_axis] is None and all(d is not None for k, d in enumerate(dims) if k != batch_axis):
        variants.append(dims)
    for target in variants:
        free = [d for d in target if d != 1]
        if len(free) == len(data) and all(d is None or d == s for d, s in zip(free, data)):
            it = iter(data)
            return arr.reshape([1 if d == 1 else next(it) for d in target])
    return None


def _alt_layout(layout) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """``(input axes, data axes)`` without N, the data's channels at the other end (CHW <-> HWC)."""
    if not layout or "C" not in layout or len(set(layout)) != len(layout):
        return None
    rest = tuple(a for a in layout if a != "N")
    if len(rest) < 3:
        return None
    if rest[0] == "C":
        return rest, rest[1:] + ("C",)
    if rest[-1] == "C":
        return rest, ("C",) + rest[:-1]
    return None


def _infer_layout(dims: list[int | None] | None) -> tuple[str, ...] | None:
    if dims is None or len(dims) not in (3, 4):
        return None
    first, last = dims[len(dims) - 3], dims[-1]
    if first in _CHANNELS and last not in _CHANNELS:
        return tuple("NCHW"[4 - len(dims):])
    if last in _CHANNELS and first not in _CHANNELS:
        return tuple("NHWC"[4 - len(dims):])
    return None


def _np_dtype(et: ov.Type) -> np.dtype | None:
    """The numpy dtype fed to an input of element type ``et`` (bf16 is fed as float32); None when
    dynamic or without a numpy counterpart (the data's dtype is kept)."""
    if et == ov.Type.bf16:
        return np.dtype(np.float32)
    try:
        return None if et == ov.Type.dynamic else np.dtype(et.to_dtype())
    except (TypeError, RuntimeError):
        return None


def _parse(text: str) -> tuple[str, ...] | None:
    try:
        return parse_layout(text)
    except ValueError:
        return None


def _is_data(x: Any) -> bool:
    return x is not None and not isinstance(x, (str, bytes))


def _what(x: Any) -> str:
    if x is None:
        return "None"
    if isinstance(x, tuple):
        return f"a tuple of {len(x)} element{'' if len(x) == 1 else 's'}"
    if isinstance(x, np.ndarray):
        return f"an ndarray of shape {x.shape}"
    name = type(x).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"
