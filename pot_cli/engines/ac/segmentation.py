"""Semantic segmentation types of the Accuracy-Checker-style engine.

Semantics are those of Accuracy Checker 2023.3 (``metrics/semantic_segmentation.py``,
``adapters/segmentation.py``, ``annotation_converters/{pascal_voc,cityscapes,camvid,
common_semantic_segmentation}.py``, ``postprocessor/{resize_segmentation_mask,
encode_segmentation_mask}.py``); the code is our own.

Registered types and their params (default in brackets):

Metrics (``metrics[].type``; all also read ``name``, ``reference``, ``abs_threshold``,
``rel_threshold``, ``threshold``, ``presenter``; higher is better):

* ``mean_iou``: mean over classes of the intersection over union of the confusion matrix
  accumulated over the dataset; classes with an empty union are left out.
* ``mean_accuracy``: mean over classes of the per-class pixel recall (classes without ground-truth
  pixels are left out).
* ``segmentation_accuracy``: pixel accuracy, trace / sum of the confusion matrix.

  Params: ``use_argmax`` [true] (the prediction holds class scores ``(C, H, W)``; false: it holds
  class ids ``(H, W)``), ``ignore_label`` [none] (a class id whose confusion row and column are
  zeroed). The number of classes is ``len(dataset_meta.label_map)``; pixel ids outside
  ``[0, classes)`` in either mask (e.g. the 255 border) are not counted.

Adapters (``launchers[].adapter``):

* ``segmentation``: ``make_argmax`` [false]; ``output_blob`` / ``segmentation_out`` [the first
  output]. A ``(1, C, H, W)``, ``(1, H, W, C)`` or ``(1, H*W, C)`` output becomes class scores
  ``(C, H, W)`` or, with ``make_argmax``, class ids ``(H, W)``.
* ``segmentation_one_class``: ``threshold`` [0.5], ``output_blob``; ids ``score >= threshold``.

Converters (``annotation_conversion.converter``), each also reading ``dataset_meta_file`` (a JSON
object with ``label_map``/``labels``, ``segmentation_colors``, ``background_label``):

* ``voc_segmentation``: ``imageset_file`` (required), ``images_dir`` [devkit ``JPEGImages``],
  ``mask_dir`` [devkit ``SegmentationClass``], ``labelmap_file`` (Datumaro ``labelmap.txt``).
  Masks are read as colour images (palette PNGs expanded to RGB, as Accuracy Checker's ``scipy``
  loader does) for ``encode_segmentation_mask``.
* ``cityscapes``: ``dataset_root_dir`` (required), ``images_subfolder``
  [``imgsFine/leftImg8bit/val``], ``masks_subfolder`` [``gtFine/val``], ``images_suffix``
  [``_leftImg8bit``], ``masks_suffix`` [``_gtFine_labelTrainIds``], ``use_full_label_map`` [false].
* ``camvid``: ``annotation_file`` (required; ``<image> <mask>`` lines).
* ``common_semantic_segmentation``: ``images_dir``, ``masks_dir`` (required), ``image_prefix`` [''],
  ``image_postfix`` [``.png``], ``mask_prefix`` [''], ``mask_postfix`` [``.png``], ``mask_loader``
  [``pillow``; also ``pillow_convert_to_rgb``, ``scipy``, ``opencv``, ``opencv_unchanged``,
  ``opencv_gray``, ``numpy``].

Postprocessing (``postprocessing[].type``, each with ``apply_to`` [all]):

* ``resize_segmentation_mask``: ``size`` or ``dst_width`` + ``dst_height`` [the original image
  size], ``to_dst_image_size`` [false]. Nearest neighbour exactly as Pillow's ``NEAREST`` resize,
  after Accuracy Checker's per-channel byte scaling of score masks.
* ``encode_segmentation_mask``: colour annotation masks to class ids through
  ``segmentation_colors``; class-id predictions through ``prediction_to_gt_labels`` (Cityscapes
  full label map).

Masks are read from disk when a step reads ``SegmentationAnnotation.mask``, with Pillow / OpenCV /
NumPy exactly as Accuracy Checker's mask loaders (:func:`read_mask`), through a process-wide LRU
cache of the decoded uint8 masks (:data:`MASK_CACHE`, 256 MiB; a larger dataset is re-read as
entries are evicted).
"""
from __future__ import annotations

import io
import json
import math
import os
import threading
import weakref
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np
from PIL import Image

from pot_cli.engines.ac.base import (ACMetric, Adapter, Context, Converted, Converter, Outputs, Postprocessor,
                                     read_bool, read_choice, read_number, register_adapter, register_converter,
                                     register_metric, register_postprocessing)
from pot_cli.engines.ac.representations import (DatasetMeta, SampleMeta, SegmentationAnnotation,
                                                SegmentationPrediction)
from pot_cli.errors import ConfigError, DatasetError, EngineError

# --- label maps (Accuracy Checker 2023.3 converter defaults) ----------------------------------------

#: Pascal VOC segmentation classes, ids 0..20
VOC_SEGMENTATION_CLASSES = (
    "__background__", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
#: Pascal VOC palette colours (RGB) of ids 0..20
VOC_SEGMENTATION_COLORS = (
    (0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128), (0, 128, 128),
    (128, 128, 128), (64, 0, 0), (192, 0, 0), (64, 128, 0), (192, 128, 0), (64, 0, 128), (192, 0, 128),
    (64, 128, 128), (192, 128, 128), (0, 64, 0), (128, 64, 0), (0, 192, 0), (128, 192, 0), (0, 64, 128))

#: Cityscapes train ids 0..18 plus background 19
CITYSCAPES_TRAIN_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle", "background")
CITYSCAPES_TRAIN_COLORS = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0),
    (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32), (255, 255, 255))
#: Cityscapes raw label ids 0..33 (in this order), then -1 (license plate)
CITYSCAPES_FULL_CLASSES = (
    "unlabeled", "ego vehicle", "rectification border", "out of roi", "static", "dynamic", "ground", "road",
    "sidewalk", "parking", "rail track", "building", "wall", "fence", "guard rail", "bridge", "tunnel", "pole",
    "polegroup", "traffic light", "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
    "truck", "bus", "caravan", "trailer", "train", "motorcycle", "bicycle")
CITYSCAPES_FULL_COLORS = (
    (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (111, 74, 0), (81, 0, 81), (128, 64, 128),
    (244, 35, 232), (250, 170, 160), (230, 150, 140), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (180, 165, 180), (150, 100, 100), (150, 120, 90), (153, 153, 153), (153, 153, 153), (250, 170, 30),
    (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142),
    (0, 0, 70), (0, 60, 100), (0, 0, 90), (0, 0, 110), (0, 80, 100), (0, 0, 230), (119, 11, 32))
#: train id -> raw label id (the full label map's ``prediction_to_gt_labels``)
CITYSCAPES_TRAIN_TO_FULL = dict(enumerate((7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)))

#: CamVid 11 classes plus ``Unlabelled`` (11, the background)
CAMVID_CLASSES = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
                  "Pedestrian", "Bicyclist", "Unlabelled")
CAMVID_COLORS = ((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
                 (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192), (0, 0, 0))


@dataclass
class SegmentationDatasetMeta(DatasetMeta):
    """:class:`DatasetMeta` plus the Cityscapes full-label-map field.

    :param prediction_to_gt_labels: model class id -> ground-truth class id, read by
        ``encode_segmentation_mask`` for predictions (None when the dataset has none).
    """

    prediction_to_gt_labels: dict[int, int] | None = None


# --- mask files -----------------------------------------------------------------------------------

#: ``mask_loader`` names (Accuracy Checker's ``LOADERS_MAPPING``) we read; ``nifti*`` are not supported
MASK_LOADERS = ("pillow", "pillow_convert_to_rgb", "scipy", "opencv", "opencv_unchanged", "opencv_gray", "numpy")

_CV2_FLAGS = {"opencv": cv2.IMREAD_COLOR, "opencv_gray": cv2.IMREAD_GRAYSCALE, "opencv_unchanged": cv2.IMREAD_UNCHANGED}
#: what Pillow / OpenCV / NumPy raise on a file they cannot decode (unknown format, truncated or corrupt
#: data, too many pixels, a bad ``.npz`` archive)
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError, zipfile.BadZipFile,
                  cv2.error)


def _decode_pillow(data: bytes, loader: str) -> np.ndarray:
    """The array Accuracy Checker 2023.3's Pillow-based readers give (``data_readers/image_readers.py``:
    ``pillow_imread`` without / with ``convert('RGB')``, ``scipy_imread`` expanding palette images)."""
    with Image.open(io.BytesIO(data)) as image:
        if loader == "pillow_convert_to_rgb":
            return np.array(image.convert("RGB"))
        if loader == "scipy" and image.mode == "P":
            return np.array(image.convert("RGBA" if "transparency" in image.info else "RGB"))
        return np.array(image)


def _decode_numpy(data: bytes) -> np.ndarray:
    """A ``.npy`` array, or the first array of a ``.npz`` (Accuracy Checker's ``numpy_reader``)."""
    loaded = np.load(io.BytesIO(data), allow_pickle=False)
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            return loaded[loaded.files[0]] if loaded.files else np.zeros((0, 0))
    return np.asarray(loaded)


def read_mask(path: Path, loader: str = "pillow") -> np.ndarray:
    """A mask file as Accuracy Checker 2023.3's ``SegmentationAnnotation`` mask loaders give it
    (``representation/segmentation_representation.py`` ``GTMaskLoader``), cast to uint8. Not
    cached: see :data:`MASK_CACHE` for the cached read.

    :param path: the mask file.
    :param loader: one of :data:`MASK_LOADERS`:

        * ``pillow``: ``np.array(PIL.Image.open(path))``: palette images give palette indices
          ``(H, W)``, grey images ``(H, W)`` (bilevel ones 0/1), colour images RGB(A)
          ``(H, W, 3|4)``;
        * ``pillow_convert_to_rgb``: Pillow's ``convert("RGB")``, ``(H, W, 3)``;
        * ``scipy``: as ``pillow``, but palette images expanded to RGB ``(H, W, 3)`` (RGBA
          ``(H, W, 4)`` when the file has a transparency entry);
        * ``opencv`` / ``opencv_gray`` / ``opencv_unchanged``: ``cv2.imread`` with
          ``IMREAD_COLOR`` (BGR ``(H, W, 3)``), ``IMREAD_GRAYSCALE`` (``(H, W)``) or
          ``IMREAD_UNCHANGED`` (as stored, BGR order);
        * ``numpy``: a ``.npy`` array or the first array of a ``.npz``.
    :returns: uint8 ``(H, W)`` or ``(H, W, C)``; values are cast as Accuracy Checker's
        ``astype(np.uint8)`` (16-bit and out-of-range values wrap).
    :raises DatasetError: when the file is missing or cannot be decoded.
    :raises ValueError: for a loader name not in :data:`MASK_LOADERS`.
    """
    if loader not in MASK_LOADERS:
        raise ValueError(f"unknown mask loader {loader!r}; expected one of {', '.join(MASK_LOADERS)}")
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise DatasetError(f"{path}: cannot read the mask ({e.strerror or e})") from e
    try:
        if loader == "numpy":
            return _decode_numpy(data).astype(np.uint8)
        if loader in _CV2_FLAGS:
            image = cv2.imdecode(np.frombuffer(data, np.uint8), _CV2_FLAGS[loader]) if data else None
            if image is None:
                raise ValueError("OpenCV cannot decode it")
            return image.astype(np.uint8)
        return _decode_pillow(data, loader).astype(np.uint8)
    except _DECODE_ERRORS as e:
        raise DatasetError(f"{path}: corrupt or unsupported mask file for mask_loader {loader!r} ({e}); "
                           f"expected an image Pillow / OpenCV reads (a .npy / .npz array for 'numpy')") from e


class MaskCache:
    """A process-wide, thread-safe LRU cache of decoded mask files (:func:`read_mask` results).

    Entries are keyed by the file path and loader and remember the file's modification time (ns)
    and size: a file changed on disk is decoded again. Arrays are kept as decoded (uint8, read-only)
    and their bytes are bounded by ``max_bytes`` (least recently used entries are evicted first; a
    mask larger than the budget is not kept). A dataset whose masks fit is decoded once however
    often it is scored; a larger one still works, evicted masks are read again.

    :param max_bytes: the byte budget (default 256 MiB).
    """

    def __init__(self, max_bytes: int = 256 << 20):
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[tuple[str, str], tuple[int, int, np.ndarray]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, path: Path | str, loader: str = "pillow") -> np.ndarray:
        """The read-only uint8 mask of ``path`` (see :func:`read_mask`), decoded at most once while
        the file is unchanged and the entry is not evicted.

        :raises DatasetError: when the file is missing or cannot be decoded.
        """
        name = os.fspath(path)
        try:
            st = os.stat(name)
        except OSError as e:
            raise DatasetError(f"{path}: cannot read the mask ({e.strerror or e})") from e
        key, stamp = (name, loader), (st.st_mtime_ns, st.st_size)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[:2] == stamp:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry[2]
            self.misses += 1
        mask = read_mask(Path(name), loader)  # decoded outside the lock
        mask.setflags(write=False)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[2].nbytes
            if mask.nbytes <= self.max_bytes:
                while self._entries and self._bytes + mask.nbytes > self.max_bytes:
                    self._bytes -= self._entries.popitem(last=False)[1][2].nbytes
                self._entries[key] = (*stamp, mask)
                self._bytes += mask.nbytes
        return mask

    def clear(self) -> None:
        """Drops every entry and resets the hit / miss counters."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0
            self.hits = self.misses = 0

    def info(self) -> dict[str, int]:
        """``entries``, ``bytes`` (held), ``max_bytes``, ``hits`` and ``misses``."""
        with self._lock:
            return {"entries": len(self._entries), "bytes": self._bytes, "max_bytes": self.max_bytes,
                    "hits": self.hits, "misses": self.misses}


#: the cache :class:`MaskFileAnnotation` reads through
MASK_CACHE = MaskCache()


def _annotation_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[:, :, 0]
    return mask.astype(np.int64) if mask.ndim == 2 else mask


class MaskFileAnnotation(SegmentationAnnotation):
    """A :class:`SegmentationAnnotation` whose mask is read from ``mask_path`` whenever ``mask`` is
    read (until a mask is assigned), through :data:`MASK_CACHE` (decoded once while it fits).

    :param identifier: sample identifier.
    :param mask: an explicit mask, or None to read the file.
    :param mask_path: the mask file.
    :param loader: the :func:`read_mask` loader.

    ``mask`` gives a new array on each read: int64 ``(H, W)`` class ids for single-channel files,
    the uint8 ``(H, W, C)`` image for colour files (to be mapped by ``encode_segmentation_mask``).
    :raises DatasetError: from ``mask`` when the file cannot be read.
    """

    def __init__(self, identifier: str, mask: np.ndarray | None = None, mask_path: str | None = None,
                 loader: str = "pillow"):
        self.identifier = identifier
        self.mask_path = mask_path
        self.loader = loader
        self._mask = mask

    @property
    def mask(self) -> np.ndarray:  # type: ignore[override]
        if self._mask is not None:
            return self._mask
        mask = _annotation_mask(MASK_CACHE.get(self.mask_path, self.loader))
        return mask.copy() if mask.dtype == np.uint8 else mask  # never the cached array itself

    @mask.setter
    def mask(self, value: np.ndarray) -> None:
        self._mask = value

    def __repr__(self) -> str:
        return f"MaskFileAnnotation({self.identifier!r}, mask_path={self.mask_path!r}, loader={self.loader!r})"


# --- converters -----------------------------------------------------------------------------------

def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read the {what} ({getattr(e, 'strerror', None) or e})") from e


def _lines(path: Path, what: str) -> list[tuple[int, str]]:
    """Non-blank stripped lines with their 1-based numbers."""
    return [(n, line.strip()) for n, line in enumerate(_read_text(path, what).splitlines(), 1) if line.strip()]


def _int_keys(label_map: Mapping, source: Path) -> dict[int, str]:
    out = {}
    for key, name in label_map.items():
        try:
            out[int(key)] = str(name)
        except (TypeError, ValueError):
            raise DatasetError(f"{source}: label_map key {key!r} is not an integer; expected integer class ids") \
                from None
    return out


def _colors(value: Any, source: Path) -> list[tuple[int, int, int]]:
    try:
        return [tuple(int(round(float(c))) for c in color) for color in value]
    except (TypeError, ValueError):
        raise DatasetError(f"{source}: segmentation_colors must be a list of [r, g, b] triples") from None


def _meta_from_json(path: Path) -> dict:
    """``label_map`` / ``segmentation_colors`` / ``background_label`` of a ``dataset_meta_file``."""
    try:
        data = json.loads(_read_text(path, "dataset meta file"))
    except ValueError as e:
        raise DatasetError(f"{path}: the dataset meta file is not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: the dataset meta file must hold a JSON object")
    out: dict = {}
    if isinstance(data.get("label_map"), dict):
        out["label_map"] = _int_keys(data["label_map"], path)
    elif isinstance(data.get("labels"), list):
        out["label_map"] = {i: str(name) for i, name in enumerate(data["labels"])}
    if data.get("segmentation_colors") is not None:
        out["segmentation_colors"] = _colors(data["segmentation_colors"], path)
    if "background_label" in data:
        out["background_label"] = data["background_label"]
    if "prediction_to_gt_labels" in data and isinstance(data["prediction_to_gt_labels"], dict):
        out["prediction_to_gt_labels"] = {int(k): int(v) for k, v in data["prediction_to_gt_labels"].items()}
    return out


class _SegmentationConverter(Converter):
    """Shared parameter reading of the segmentation converters."""

    annotation_kind = "segmentation"

    loader = "pillow"

    def _path(self, key: str, expected: str, required: bool = False) -> Path | None:
        value = self.params.get(key)
        if value is None:
            if required:
                self.ctx.add(key, f"is required; expected {expected}")
            return None
        if not isinstance(value, (str, Path)) or not str(value):
            self.ctx.add(key, f"{value!r} is not a path; expected {expected}")
            return None
        return Path(self.ctx.path(value))

    def _string(self, key: str, default: str) -> str:
        value = self.params.get(key, default)
        if not isinstance(value, str):
            self.ctx.add(key, f"{value!r} is not a string; expected a text value")
            return default
        return value

    def _masks_root(self, default: Path | None) -> Path | None:
        """Where mask paths are relative to: the dataset's ``segmentation_masks_source`` when the
        engine passes one (Accuracy Checker's rule), else the converter's mask folder."""
        source = getattr(self.ctx, "segmentation_masks_source", None)
        return Path(source) if source else default

    def _image_files(self, identifiers: Sequence[str], default_root: Path | None) -> list[Path]:
        root = self.ctx.data_source if self.ctx.data_source is not None else default_root
        root = Path(root) if root is not None else Path(".")
        return [(root / ident).absolute() for ident in identifiers]

    def _annotation(self, identifier: str, mask_root: Path | None, mask_file: str) -> MaskFileAnnotation:
        path = (mask_root / mask_file) if mask_root is not None else Path(mask_file)
        return MaskFileAnnotation(identifier, None, str(path.absolute()), self.loader)

    def _json_meta(self) -> dict:
        path = self._meta_file
        return _meta_from_json(path) if path is not None else {}

    @staticmethod
    def _check_masks(annotations: Sequence[MaskFileAnnotation], source: Path | str) -> None:
        missing = [a.mask_path for a in annotations if not Path(a.mask_path).is_file()]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise DatasetError(f"{source}: mask file {missing[0]} does not exist{more}; expected one mask per image")


@register_converter("voc_segmentation", keys=("converter", "imageset_file", "images_dir", "mask_dir",
                                              "dataset_meta_file", "labelmap_file"))
class VOCSegmentationConverter(_SegmentationConverter):
    """Pascal VOC segmentation devkit (Accuracy Checker 2023.3 ``pascal_voc.py``
    ``PascalVOCSegmentationConverter``).

    ``imageset_file`` lists image ids (``ImageSets/Segmentation/val.txt``); the image is
    ``images_dir/<id>.*`` (the first match in name order, else ``<id>.jpg``), the mask
    ``mask_dir/<id>.*`` (else ``<id>.png``); an id ``sub/x`` looks in ``sub`` of both folders.
    Without ``images_dir``/``mask_dir`` the devkit's ``JPEGImages``/``SegmentationClass`` next to
    ``ImageSets`` are used. Masks load with the ``scipy`` loader: palette PNGs become RGB
    ``(H, W, 3)`` uint8, so configs add ``encode_segmentation_mask`` (the 255 border colour matches
    no class and becomes 0, as in Accuracy Checker).

    Label map: ``dataset_meta_file`` ``label_map``/``labels``, then ``labelmap_file``
    (``name:r,g,b:...`` lines; ``#`` comments), else the 21 VOC classes; background 0.
    :raises DatasetError: when the image set or a mask is missing.
    """

    loader = "scipy"

    def __init__(self, params: Mapping, ctx: Context):
        super().__init__(params, ctx)
        self.imageset = self._path("imageset_file", "the image-set list (ImageSets/Segmentation/val.txt)", True)
        self.images_dir = self._path("images_dir", "a folder of images")
        self.mask_dir = self._path("mask_dir", "a folder of masks")
        self._meta_file = self._path("dataset_meta_file", "a JSON file")
        self.labelmap = self._path("labelmap_file", "a Datumaro labelmap.txt")
        self._listings: dict[Path, dict[str, list[str]]] = {}

    def _devkit(self) -> Path:
        parts = self.imageset.parts
        if "ImageSets" in parts:
            idx = len(parts) - 1 - parts[::-1].index("ImageSets")
            return Path(*parts[:idx])
        return self.imageset.parent

    @staticmethod
    def _read_labelmap(path: Path) -> dict:
        label_map, colors = {}, []
        for n, line in _lines(path, "labelmap file"):
            if line.startswith("#"):
                continue
            fields = line.split(":")
            if len(fields) < 2:
                raise DatasetError(f"{path}:{n}: expected 'name:r,g,b' (Datumaro labelmap), got {line!r}")
            try:
                color = tuple(int(round(float(c))) for c in fields[1].replace(" ", "").strip("()").split(",") if c)
            except ValueError:
                raise DatasetError(f"{path}:{n}: colour {fields[1]!r} is not 'r,g,b'") from None
            label_map[len(label_map)] = fields[0]
            colors.append(color)
        return {"label_map": label_map, "segmentation_colors": colors}

    def _find(self, root: Path, name: str, default_ext: str) -> str:
        """``<name>.*`` in ``root`` (the first in name order), else ``<name><default_ext>``."""
        sub, _, base = name.rpartition("/")
        folder = root / sub if sub else root
        index = self._listings.get(folder)
        if index is None:  # one directory listing per folder: prefix before each dot -> names
            index = {}
            names = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
            for file in names:
                for k, ch in enumerate(file):
                    if ch == ".":
                        index.setdefault(file[:k], []).append(file)
            self._listings[folder] = index
        found = index.get(base)
        file = found[0] if found else f"{base}{default_ext}"
        return f"{sub}/{file}" if sub else file

    def meta(self) -> SegmentationDatasetMeta:
        """The dataset meta (label map, background 0, colours)."""
        data = self._json_meta()
        if self.labelmap is not None:
            data.update(self._read_labelmap(self.labelmap))
        label_map = data.get("label_map") or dict(enumerate(VOC_SEGMENTATION_CLASSES))
        colors = data.get("segmentation_colors") or [tuple(c) for c in VOC_SEGMENTATION_COLORS]
        return SegmentationDatasetMeta(label_map, 0, list(colors))

    def convert(self) -> Converted:
        devkit = self._devkit()
        images_dir = self.images_dir or devkit / "JPEGImages"
        mask_dir = self.mask_dir or devkit / "SegmentationClass"
        masks_root = self._masks_root(mask_dir)
        ids = [line for _, line in _lines(self.imageset, "image-set file")]
        identifiers, annotations = [], []
        for image_id in ids:
            identifier = self._find(images_dir, image_id, ".jpg")
            identifiers.append(identifier)
            annotations.append(self._annotation(identifier, masks_root, self._find(mask_dir, image_id, ".png")))
        self._check_masks(annotations, self.imageset)
        return Converted(self._image_files(identifiers, images_dir), annotations, self.meta())


@register_converter("cityscapes", keys=("converter", "dataset_root_dir", "images_subfolder", "masks_subfolder",
                                        "masks_suffix", "images_suffix", "use_full_label_map", "dataset_meta_file"))
class CityscapesConverter(_SegmentationConverter):
    """Cityscapes (Accuracy Checker 2023.3 ``cityscapes.py``).

    Images are ``<dataset_root_dir>/**/<images_subfolder>/<city>/*<images_suffix>.png`` (sorted by
    path; Accuracy Checker keeps the file-system order); identifier
    ``<images_subfolder>/<city>/<file>``; the mask is
    ``<masks_subfolder>/<city>/<file with images_suffix replaced by masks_suffix>``, relative to the
    dataset root, read as grey ids (``labelTrainIds``: 0..18, 255 void).

    Label map: the 19 train ids plus ``19: background`` (background 19), or with
    ``use_full_label_map`` the 34 raw ids plus ``-1: license plate`` with
    ``prediction_to_gt_labels`` (train id -> raw id); a ``dataset_meta_file`` replaces either.
    :raises DatasetError: when no image is found or a mask is missing.
    """

    def __init__(self, params: Mapping, ctx: Context):
        super().__init__(params, ctx)
        self.root = self._path("dataset_root_dir", "the Cityscapes root folder", True)
        self.images_subfolder = self._string("images_subfolder", "imgsFine/leftImg8bit/val")
        self.masks_subfolder = self._string("masks_subfolder", "gtFine/val")
        self.masks_suffix = self._string("masks_suffix", "_gtFine_labelTrainIds")
        self.images_suffix = self._string("images_suffix", "_leftImg8bit")
        if not self.images_suffix:
            ctx.add("images_suffix", "is empty; expected the part of the image name the mask name replaces")
            self.images_suffix = "_leftImg8bit"
        self.full = read_bool(params, "use_full_label_map", False, ctx)
        self._meta_file = self._path("dataset_meta_file", "a JSON file")

    def meta(self) -> SegmentationDatasetMeta:
        """The dataset meta (train or full label map, or the ``dataset_meta_file``)."""
        if self._meta_file is not None:
            data = self._json_meta()
            return SegmentationDatasetMeta(data.get("label_map", {}), data.get("background_label"),
                                           data.get("segmentation_colors"), data.get("prediction_to_gt_labels"))
        if self.full:
            label_map = dict(enumerate(CITYSCAPES_FULL_CLASSES))
            label_map[-1] = "license plate"
            return SegmentationDatasetMeta(label_map, None, [tuple(c) for c in CITYSCAPES_FULL_COLORS],
                                           dict(CITYSCAPES_TRAIN_TO_FULL))
        return SegmentationDatasetMeta(dict(enumerate(CITYSCAPES_TRAIN_CLASSES)), 19,
                                       [tuple(c) for c in CITYSCAPES_TRAIN_COLORS])

    def convert(self) -> Converted:
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: dataset_root_dir is not a folder; expected the Cityscapes root")
        pattern = f"**/{self.images_subfolder.strip('/')}/*/*{self.images_suffix}.png"
        images = sorted(self.root.glob(pattern))
        if not images:
            raise DatasetError(f"{self.root}: no image matches {pattern}; expected Cityscapes images there")
        identifiers, annotations = [], []
        masks_root = self._masks_root(self.root)
        for image in images:
            city, name = image.parts[-2:]
            identifier = str(Path(self.images_subfolder, city, name).as_posix())
            mask = Path(self.masks_subfolder, city, self.masks_suffix.join(name.split(self.images_suffix)))
            identifiers.append(identifier)
            annotations.append(self._annotation(identifier, masks_root, mask.as_posix()))
        self._check_masks(annotations, self.root)
        return Converted(self._image_files(identifiers, self.root), annotations, self.meta())


@register_converter("camvid", keys=("converter", "annotation_file", "dataset_meta_file"))
class CamVidConverter(_SegmentationConverter):
    """CamVid (Accuracy Checker 2023.3 ``camvid.py`` ``CamVidConverter``).

    ``annotation_file`` has one ``<image path> <mask path>`` line per sample; the identifier is the
    last two components of the image path, the mask the last two of the mask path, both relative
    to the dataset's ``data_source`` (or the annotation file's folder without one). Masks are grey
    ids. Label map: the 11 CamVid classes plus ``11: Unlabelled`` (background 11) with their
    colours, or the ``dataset_meta_file``.
    :raises DatasetError: on a line without exactly two paths, or a missing mask.
    """

    def __init__(self, params: Mapping, ctx: Context):
        super().__init__(params, ctx)
        self.annotation_file = self._path("annotation_file", "the CamVid list of '<image> <mask>' lines", True)
        self._meta_file = self._path("dataset_meta_file", "a JSON file")

    def meta(self) -> SegmentationDatasetMeta:
        """The dataset meta (CamVid classes, or the ``dataset_meta_file``)."""
        if self._meta_file is not None:
            data = self._json_meta()
            return SegmentationDatasetMeta(data.get("label_map", {}), data.get("background_label"),
                                           data.get("segmentation_colors"))
        return SegmentationDatasetMeta(dict(enumerate(CAMVID_CLASSES)), 11, [tuple(c) for c in CAMVID_COLORS])

    def convert(self) -> Converted:
        root = Path(self.ctx.data_source) if self.ctx.data_source is not None else self.annotation_file.parent
        masks_root = self._masks_root(root)
        identifiers, annotations = [], []
        for n, line in _lines(self.annotation_file, "CamVid annotation file"):
            fields = line.split(" ")
            if len(fields) != 2:
                raise DatasetError(f"{self.annotation_file}:{n}: expected '<image> <mask>' (two paths separated "
                                   f"by one space), got {line!r}")
            identifier = "/".join(fields[0].split("/")[-2:])
            identifiers.append(identifier)
            annotations.append(self._annotation(identifier, masks_root, "/".join(fields[1].split("/")[-2:])))
        self._check_masks(annotations, self.annotation_file)
        return Converted(self._image_files(identifiers, root), annotations, self.meta())


@register_converter("common_semantic_segmentation", keys=(
    "converter", "images_dir", "masks_dir", "image_prefix", "mask_prefix", "image_postfix", "mask_postfix",
    "mask_loader", "dataset_meta_file"))
class CommonSemanticSegmentationConverter(_SegmentationConverter):
    """Image and mask folders (Accuracy Checker 2023.3 ``common_semantic_segmentation.py``).

    Images are ``images_dir/<image_prefix>*<image_postfix>`` (sorted by name; Accuracy Checker keeps
    the file-system order), identified by file name; the mask of ``<image_prefix>B<image_postfix>``
    is ``masks_dir/<mask_prefix>B<mask_postfix>``, read with ``mask_loader``. The label map comes
    only from ``dataset_meta_file`` (as in Accuracy Checker; without one the metrics stop with a
    configuration error).
    :raises DatasetError: when no image matches or a mask is missing.
    """

    def __init__(self, params: Mapping, ctx: Context):
        super().__init__(params, ctx)
        self.images_dir = self._path("images_dir", "a folder of images", True)
        self.masks_dir = self._path("masks_dir", "a folder of masks", True)
        self.image_prefix = self._string("image_prefix", "")
        self.mask_prefix = self._string("mask_prefix", "")
        self.image_postfix = self._string("image_postfix", ".png")
        self.mask_postfix = self._string("mask_postfix", ".png")
        self.loader = read_choice(params, "mask_loader", "pillow", MASK_LOADERS, ctx) or "pillow"
        self._meta_file = self._path("dataset_meta_file", "a JSON file")

    def meta(self) -> SegmentationDatasetMeta:
        """The dataset meta from ``dataset_meta_file`` (empty without one)."""
        data = self._json_meta()
        return SegmentationDatasetMeta(data.get("label_map", {}), data.get("background_label"),
                                       data.get("segmentation_colors"), data.get("prediction_to_gt_labels"))

    def convert(self) -> Converted:
        if not self.images_dir.is_dir():
            raise DatasetError(f"{self.images_dir}: images_dir is not a folder; expected the image folder")
        images = sorted(p for p in self.images_dir.glob(f"{self.image_prefix}*{self.image_postfix}"))
        if not images:
            raise DatasetError(f"{self.images_dir}: no file matches '{self.image_prefix}*{self.image_postfix}'; "
                               f"expected the images there (check image_prefix / image_postfix)")
        masks_root = self._masks_root(self.masks_dir)
        identifiers, annotations = [], []
        for image in images:
            base = image.name
            if self.image_prefix:
                base = base.split(self.image_prefix)[-1]
            if self.image_postfix:
                base = base.split(self.image_postfix)[0]
            identifiers.append(image.name)
            annotations.append(self._annotation(image.name, masks_root, f"{self.mask_prefix}{base}{self.mask_postfix}"))
        self._check_masks(annotations, self.masks_dir)
        return Converted(self._image_files(identifiers, self.images_dir), annotations, self.meta())


# --- adapters -------------------------------------------------------------------------------------

def _output_name(outputs: Outputs, name: str | None) -> str:
    if name is not None:
        return name
    return outputs.names[0][0] if outputs.names and outputs.names[0] else "output0"


def _input_layout(meta: SampleMeta, sample: np.ndarray) -> tuple[bool, tuple[int, int] | None]:
    """``(is_chw, (in_h, in_w))`` for the adapter. Accuracy Checker decides by the model input
    shape (channels-first when its dim 1 is <= 4); the engine may pass it as
    ``meta.extra['input_shape']`` or ``meta.extra['input_layout']``. Without either, the output
    shape decides: channels-last when its last dim is smaller than both others (classes fewer than
    rows and columns)."""
    shape = meta.extra.get("input_shape")
    if isinstance(shape, Mapping):
        shape = next(iter(shape.values()), None)
    hw = tuple(meta.input_size) if meta.input_size else None
    if shape is not None and len(shape) == 4:
        chw = int(shape[1]) <= 4
        return chw, (int(shape[2]), int(shape[3])) if chw else (int(shape[1]), int(shape[2]))
    layout = meta.extra.get("input_layout")
    if isinstance(layout, str) and "C" in layout.upper() and "H" in layout.upper():
        text = layout.upper()
        return text.index("C") < text.index("H"), hw
    if sample.ndim == 3:
        return not (sample.shape[2] < sample.shape[0] and sample.shape[2] < sample.shape[1]), hw
    return True, hw


@register_adapter("segmentation", keys=("type", "make_argmax", "output_blob", "segmentation_out"))
class SegmentationAdapter(Adapter):
    """Semantic segmentation output to a :class:`SegmentationPrediction` (Accuracy Checker 2023.3
    ``adapters/segmentation.py`` ``SegmentationAdapter``).

    The output (``output_blob`` or ``segmentation_out``, default the first; Accuracy Checker always
    takes the first) is ``[1, C, H, W]``, ``[1, H, W, C]`` (channels-last when the model input is),
    ``[1, H*W, C]`` (reshaped to the input's ``H x W``) or ``[1, H, W]``. Without ``make_argmax`` the
    prediction is float32 ``(C, H, W)`` scores (a ``[1, H, W]`` output: int64 ids ``(H, W)``); with
    it int64 ``(H, W)`` ids, the argmax over classes.

    Extension: with ``make_argmax`` a single-channel output (``C == 1``, or a float ``[1, H, W]``
    map), e.g. a text or foreground probability, gives id 1 where the score is > 0.5, else 0
    (Accuracy Checker's argmax over one channel is all zeros).
    :raises EngineError: when the output has another rank, or ``make_argmax`` is set on an output
        that already holds integer ids.
    """

    def __init__(self, params: Mapping, ctx: Context):
        super().__init__(params, ctx)
        self.make_argmax = read_bool(params, "make_argmax", False, ctx)
        self.output = None
        for key in ("output_blob", "segmentation_out"):
            value = params.get(key)
            if value is not None and not isinstance(value, str):
                ctx.add(key, f"{value!r} is not an output name; expected a string")
            elif value is not None:
                self.output = value

    def process(self, outputs: Outputs, meta: SampleMeta) -> SegmentationPrediction:
        name = _output_name(outputs, self.output)
        raw = np.asarray(outputs.find(self.output, f"adapter.{'output_blob' if self.output else 'segmentation'}"))
        sample = raw[0] if raw.ndim >= 1 and raw.shape[0] == 1 else raw
        if sample.ndim not in (2, 3):
            raise EngineError(f"adapter segmentation: output '{name}' has shape {list(raw.shape)}; expected "
                              f"[1, C, H, W], [1, H, W, C], [1, H*W, C] or [1, H, W]")
        chw, hw = _input_layout(meta, sample)
        if sample.ndim == 2 and hw is not None and sample.shape[0] == hw[0] * hw[1]:
            sample, chw = sample.reshape(hw[0], hw[1], sample.shape[1]), False
        if sample.ndim == 2:
            if not self.make_argmax:
                return SegmentationPrediction(meta.identifier, sample.astype(np.int64))
            if not np.issubdtype(sample.dtype, np.floating):
                raise EngineError(f"adapter segmentation: output '{name}' already holds class ids "
                                  f"{list(raw.shape)}; expected make_argmax: false")
            return SegmentationPrediction(meta.identifier, (sample > 0.5).astype(np.int64))
        axis = 0 if chw else 2
        if self.make_argmax:
            if sample.shape[axis] == 1:
                ids = (np.take(sample, 0, axis=axis) > 0.5).astype(np.int64)
            else:
                ids = np.argmax(sample, axis=axis).astype(np.int64)
            return SegmentationPrediction(meta.identifier, ids)
        scores = sample if chw else np.transpose(sample, (2, 0, 1))
        return SegmentationPrediction(meta.identifier, np.ascontiguousarray(scores, dtype=np.float32))


@register_adapter("segmentation_one_class", keys=("type", "threshold", "output_blob"))
class SegmentationOneClassAdapter(Adapter):
    """A one-class probability map to class ids (Accuracy Checker 2023.3
    ``adapters/segmentation.py`` ``SegmentationOneClassAdapter``): id 1 where the score is
    ``>= threshold`` [0.5], else 0.

    The output (``output_blob``, default the first) is ``[1, 1, H, W]`` or ``[1, H, W]``; the
    prediction is int64 ``(H, W)`` ids (a ``[1, C, H, W]`` output with C > 1 gives float32
    ``(C, H, W)`` 0/1 maps, as Accuracy Checker keeps every channel).
    :raises EngineError: when the output has another rank.
    """

    def __init__(self, params: Mapping, ctx: Context):
        super().__init__(params, ctx)
        self.threshold = read_number(params, "threshold", 0.5, ctx, low=0.0)
        self.output = params.get("output_blob")
        if self.output is not None and not isinstance(self.output, str):
            ctx.add("output_blob", f"{self.output!r} is not an output name; expected a string")
            self.output = None

    def process(self, outputs: Outputs, meta: SampleMeta) -> SegmentationPrediction:
        name = _output_name(outputs, self.output)
        raw = np.asarray(outputs.find(self.output, "adapter.output_blob"))
        if raw.ndim not in (3, 4):
            raise EngineError(f"adapter segmentation_one_class: output '{name}' has shape {list(raw.shape)}; "
                              f"expected [1, 1, H, W] or [1, H, W]")
        mask = raw[0] >= self.threshold
        if mask.ndim == 3 and mask.shape[0] == 1:
            mask = mask[0]
        dtype = np.int64 if mask.ndim == 2 else np.float32
        return SegmentationPrediction(meta.identifier, mask.astype(dtype))


# --- metrics --------------------------------------------------------------------------------------

_METRIC_KEYS = ("type", "name", "reference", "abs_threshold", "rel_threshold", "threshold", "presenter",
                "use_argmax", "ignore_label")


#: bytes of per-sample confusion matrices a metric remembers between ``per_sample`` and ``evaluate``
_MEMO_BYTES = 16 << 20


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _mean_or_nan(values: Sequence[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


class _SegmentationMetric(ACMetric):
    """Confusion-matrix metrics over class-id maps (Accuracy Checker 2023.3
    ``metrics/semantic_segmentation.py`` ``SegmentationMetric``).

    The confusion matrix of a sample is int64 ``(K, K)`` (K = number of label-map entries), rows
    ground truth, columns prediction, counting the pixels whose both ids are in ``[0, K)``; with
    ``ignore_label`` its row and column are zeroed.

    The matrices :meth:`per_sample` computes are remembered (by the identity of the prediction and
    annotation objects, held weakly, and of their mask attributes; at most about 16 MiB of
    matrices) and reused by the next :meth:`evaluate` over the same objects, which then forgets
    them all: the evaluator's per-sample pass followed by the dataset value counts each pair once.
    Masks edited in place between the two calls are not noticed.
    """

    annotation_kind = "segmentation"
    higher_better = True

    def __init__(self, params: Mapping, ctx: Context):
        super().__init__(params, ctx)
        self._memo: OrderedDict[tuple[int, int], tuple] = OrderedDict()
        self._memo_lock = threading.Lock()
        self.use_argmax = read_bool(params, "use_argmax", True, ctx)
        self.ignore_label = None
        if params.get("ignore_label") is not None:
            value = read_number(params, "ignore_label", -1, ctx, low=0, integer=True)
            self.ignore_label = None if value < 0 else int(value)
        labels = ctx.dataset_meta.label_map if ctx.dataset_meta is not None else {}
        if labels and self.ignore_label is not None and self.ignore_label >= len(labels):
            ctx.add("ignore_label", f"{self.ignore_label} is not a class index; expected 0..{len(labels) - 1} "
                                    f"(the label map has {len(labels)} classes)")
            self.ignore_label = None

    # the label map is read when scoring: the engine fills ctx.dataset_meta after conversion
    def _label_ids(self) -> list[int]:
        labels = self.ctx.dataset_meta.label_map if self.ctx.dataset_meta is not None else {}
        if not labels:
            raise ConfigError(f"{self.ctx.where}: {self.type_name} needs the dataset's label map; expected a "
                              f"converter that gives one (or its dataset_meta_file)")
        if self.ignore_label is not None and self.ignore_label >= len(labels):
            raise ConfigError(f"{self.ctx.where}.ignore_label: {self.ignore_label} is not a class index; "
                              f"expected 0..{len(labels) - 1}")
        return list(labels)

    def _ids(self, prediction: SegmentationPrediction, annotation: SegmentationAnnotation) -> tuple:
        gt = np.asarray(annotation.mask)
        if gt.ndim == 3 and gt.shape[2] == 1:
            gt = gt[:, :, 0]
        if gt.ndim != 2:
            raise ConfigError(f"{self.ctx.where}: the annotation mask of '{annotation.identifier}' is a colour "
                              f"image {list(gt.shape)}; expected class ids (add an encode_segmentation_mask "
                              f"postprocessing step with apply_to: annotation)")
        pred = np.asarray(prediction.mask)
        if self.use_argmax:
            if pred.ndim != 3:
                raise ConfigError(f"{self.ctx.where}.use_argmax: the prediction of '{prediction.identifier}' holds "
                                  f"class ids {list(pred.shape)}, not scores; expected use_argmax: false")
            pred = np.argmax(pred, axis=0)
        elif pred.ndim == 3 and pred.shape[0] != 1:
            raise ConfigError(f"{self.ctx.where}.use_argmax: the prediction of '{prediction.identifier}' holds "
                              f"{pred.shape[0]} class score maps; expected use_argmax: true (or make_argmax: "
                              f"true in the adapter)")
        pred = pred.reshape(pred.shape[-2:]) if pred.ndim == 3 else pred
        if pred.shape != gt.shape:
            raise EngineError(f"{self.ctx.where}: the prediction of '{prediction.identifier}' is "
                              f"{pred.shape[1]}x{pred.shape[0]} but its annotation mask is {gt.shape[1]}x"
                              f"{gt.shape[0]}; expected equal sizes (add a resize_segmentation_mask "
                              f"postprocessing step)")
        return gt.astype(np.int64, copy=False).ravel(), pred.astype(np.int64, copy=False).ravel()

    def confusion_matrix(self, prediction: SegmentationPrediction, annotation: SegmentationAnnotation) -> np.ndarray:
        """The int64 ``(K, K)`` confusion matrix of one sample.

        :raises ConfigError: when the masks do not fit ``use_argmax`` or the label map is missing.
        :raises EngineError: when the two masks differ in size.
        """
        n = len(self._label_ids())
        gt, pred = self._ids(prediction, annotation)
        # int64 seen as uint64: negative ids become huge, so one comparison finds ids outside [0, n)
        outside = (gt.view(np.uint64) >= n) | (pred.view(np.uint64) >= n)
        cells = gt * n
        cells += pred
        cells[outside] = n * n  # an extra bin, dropped
        cm = np.bincount(cells, minlength=n * n + 1)[:n * n].reshape(n, n)
        if self.ignore_label is not None:
            cm[self.ignore_label, :] = 0
            cm[:, self.ignore_label] = 0
        return cm

    def _kept(self, values: np.ndarray, names: int) -> list[float]:
        """Accuracy Checker's ``finalize_metric_result``: values paired with ``names`` class names
        (the shorter wins), NaN entries dropped."""
        return [float(v) for v in values[:names] if not math.isnan(v)]

    def _names_without_ignored(self) -> int:
        return sum(1 for k in self._label_ids() if k != self.ignore_label)

    def _sample_value(self, cm: np.ndarray):
        raise NotImplementedError

    def _dataset_value(self, cm: np.ndarray) -> float:
        raise NotImplementedError

    def update(self, prediction: SegmentationPrediction, annotation: SegmentationAnnotation):
        """Accuracy Checker's per-sample ``update`` value (a list of per-class values, or a float)."""
        return self._sample_value(self.confusion_matrix(prediction, annotation))

    def per_sample(self, prediction, annotation) -> float:
        """``nanmean`` of :meth:`update` (POT's per-sample reduction); NaN when nothing is counted.
        The sample's confusion matrix is remembered for the next :meth:`evaluate`."""
        cm = self.confusion_matrix(prediction, annotation)
        self._remember(prediction, annotation, cm)
        value = self._sample_value(cm)
        return _mean_or_nan(value) if isinstance(value, list) else float(value)

    def evaluate(self, predictions: Sequence, annotations: Sequence) -> float:
        """The dataset value from the confusion matrices summed over all samples (NaN when no
        class has a value). Matrices remembered by :meth:`per_sample` for the same objects are
        reused; the memory is emptied.

        :raises ConfigError: see :meth:`confusion_matrix`.
        :raises EngineError: see :meth:`confusion_matrix`.
        """
        try:
            n = len(self._label_ids())
            total = np.zeros((n, n), np.int64)
            for prediction, annotation in zip(predictions, annotations):
                cm = self._recall(prediction, annotation, n)
                total += cm if cm is not None else self.confusion_matrix(prediction, annotation)
            return self._dataset_value(total)
        finally:
            with self._memo_lock:
                self._memo.clear()

    @staticmethod
    def _mask_token(record) -> int:
        """Identity of the mask a record holds (its ``mask`` attribute, or a file-backed
        annotation's assigned ``_mask``), without reading a mask file."""
        stored = vars(record)
        return id(stored["mask"] if "mask" in stored else stored.get("_mask"))

    def _remember(self, prediction, annotation, cm: np.ndarray) -> None:
        try:
            refs = (weakref.ref(prediction), weakref.ref(annotation))
            tokens = (self._mask_token(prediction), self._mask_token(annotation))
        except TypeError:  # not weak-referenceable, or no attribute dictionary: not remembered
            return
        key = (id(prediction), id(annotation))
        limit = max(64, _MEMO_BYTES // (cm.nbytes + 256))
        with self._memo_lock:
            self._memo[key] = (refs, tokens, cm)
            self._memo.move_to_end(key)
            while len(self._memo) > limit:
                self._memo.popitem(last=False)

    def _recall(self, prediction, annotation, n: int) -> np.ndarray | None:
        with self._memo_lock:
            entry = self._memo.pop((id(prediction), id(annotation)), None)
        if entry is None:
            return None
        (pred_ref, ann_ref), tokens, cm = entry
        if pred_ref() is not prediction or ann_ref() is not annotation or cm.shape != (n, n):
            return None
        try:
            same = tokens == (self._mask_token(prediction), self._mask_token(annotation))
        except TypeError:
            return None
        return cm if same else None


@register_metric("mean_iou", keys=_METRIC_KEYS)
class MeanIoU(_SegmentationMetric):
    """Mean intersection over union (Accuracy Checker 2023.3 ``SegmentationIOU``).

    Per class: ``cm[c, c] / (row_c + col_c - cm[c, c])``; classes with an empty union are left out,
    the ``ignore_label`` class is removed. Value in [0, 1].
    """

    def _iou(self, cm: np.ndarray) -> np.ndarray:
        diag = np.diag(cm)
        iou = _safe_divide(diag, cm.sum(axis=1) + cm.sum(axis=0) - diag)
        return np.delete(iou, self.ignore_label) if self.ignore_label is not None else iou

    def _sample_value(self, cm: np.ndarray) -> list[float]:
        return self._kept(self._iou(cm), self._names_without_ignored())

    def _dataset_value(self, cm: np.ndarray) -> float:
        return _mean_or_nan(self._kept(self._iou(cm), self._names_without_ignored()))


@register_metric("mean_accuracy", keys=_METRIC_KEYS)
class MeanAccuracy(_SegmentationMetric):
    """Mean per-class pixel accuracy (recall) (Accuracy Checker 2023.3 ``SegmentationMeanAccuracy``).

    Per class: ``cm[c, c] / row_c``; classes without ground-truth pixels are left out. As in
    Accuracy Checker, the per-sample value with ``ignore_label`` also leaves out the last class (its
    class-name list is one shorter than the value list). Value in [0, 1].
    """

    def _sample_value(self, cm: np.ndarray) -> list[float]:
        return self._kept(_safe_divide(np.diag(cm), cm.sum(axis=1)), self._names_without_ignored())

    def _dataset_value(self, cm: np.ndarray) -> float:
        return _mean_or_nan(self._kept(_safe_divide(np.diag(cm), cm.sum(axis=1)), len(self._label_ids())))


@register_metric("segmentation_accuracy", keys=_METRIC_KEYS)
class SegmentationAccuracy(_SegmentationMetric):
    """Pixel accuracy, ``trace(cm) / sum(cm)`` (Accuracy Checker 2023.3 ``SegmentationAccuracy``);
    NaN when no pixel is counted. Value in [0, 1]."""

    def _sample_value(self, cm: np.ndarray) -> float:
        total = cm.sum()
        return float(np.trace(cm) / total) if total else math.nan

    def _dataset_value(self, cm: np.ndarray) -> float:
        return self._sample_value(cm)


# --- postprocessing -------------------------------------------------------------------------------

def byte_scale(data: np.ndarray) -> np.ndarray:
    """An array as the uint8 image Accuracy Checker's ``resize_segmentation_mask`` builds from it
    (the ``scipy.misc.bytescale`` rule): uint8 as is; integers within [0, 255] cast; anything else
    (floats, other integers) mapped linearly from [min, max] to [0, 255] and rounded half up.
    Floating data is scaled in its own precision, with the scale factor rounded to it, as NumPy 1.x
    does for Accuracy Checker.

    :param data: any real array.
    :returns: uint8 array of the same shape.
    """
    data = np.asarray(data)
    if data.dtype == np.uint8:
        return data
    if data.dtype == bool:
        return data.astype(np.uint8)
    low, high = data.min(), data.max()
    floating = np.issubdtype(data.dtype, np.floating)
    if low >= 0 and high <= 255 and not floating:
        return data.astype(np.uint8)
    work = data.dtype if floating else np.float64
    span = (high - low) if floating else float(high) - float(low)
    span = span if span != 0 else 1
    scale = np.asarray(255.0 / float(span)).astype(work)
    scaled = (data - low).astype(work, copy=False) * scale
    return (np.clip(scaled, 0, 255) + np.asarray(0.5, work)).astype(np.uint8)


def _nearest_indices(size_in: int, size_out: int) -> np.ndarray:
    """Source index of each output pixel of Pillow's ``NEAREST`` resize: ``int((i + 0.5) * in / out)``
    accumulated step by step in float64 as Pillow's ``ImagingScaleAffine`` does."""
    step = size_in / size_out
    steps = np.full(size_out, step)
    steps[0] = step * 0.5
    return np.minimum(np.add.accumulate(steps).astype(np.int64), size_in - 1)


def resize_nearest(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pillow ``Image.resize((width, height), NEAREST)`` of an ``(H, W)`` or ``(H, W, C)`` array."""
    rows = _nearest_indices(image.shape[0], height)
    cols = _nearest_indices(image.shape[1], width)
    return image[rows[:, None], cols[None, :]]


@register_postprocessing("resize_segmentation_mask", keys=("type", "apply_to", "dst_width", "dst_height", "size",
                                                           "to_dst_image_size"))
class ResizeSegmentationMask(Postprocessor):
    """Resizes masks (Accuracy Checker 2023.3 ``postprocessor/resize_segmentation_mask.py``).

    Target: ``size`` (both sides), else ``dst_height`` x ``dst_width``, else the original image
    (``SampleMeta.image_size``; with ``to_dst_image_size``, ``meta.extra['image_info']`` when given).
    Each mask (each class map of a score mask) is byte-scaled (:func:`byte_scale`) then resized by
    Pillow's nearest-neighbour rule (:func:`resize_nearest`). Results: annotation ids int64
    ``(h, w)`` (colour masks uint8 ``(h, w, 3|4)``), prediction ids int64 ``(h, w)``, prediction
    scores float32 ``(C, h, w)`` holding the 0..255 byte values (so the argmax is Accuracy
    Checker's).
    :raises ConfigError: for a colour mask with other than 3 or 4 channels.
    """

    applies_to = (SegmentationAnnotation, SegmentationPrediction)

    def __init__(self, params: Mapping, ctx: Context):
        super().__init__(params, ctx)
        self.size = None
        if params.get("size") is not None:
            side = read_number(params, "size", 0, ctx, low=1, integer=True)
            self.size = (side, side) if side else None
        elif params.get("dst_width") is not None or params.get("dst_height") is not None:
            if params.get("dst_width") is None or params.get("dst_height") is None:
                missing = "dst_height" if params.get("dst_height") is None else "dst_width"
                ctx.add(missing, "is missing; expected both dst_width and dst_height (or size)")
            else:
                h = read_number(params, "dst_height", 0, ctx, low=1, integer=True)
                w = read_number(params, "dst_width", 0, ctx, low=1, integer=True)
                self.size = (h, w) if h and w else None
        self.to_dst_image_size = read_bool(params, "to_dst_image_size", False, ctx)

    def _target(self, meta: SampleMeta) -> tuple[int, int]:
        if self.size is not None:
            return self.size
        info = meta.extra.get("image_info") if self.to_dst_image_size else None
        if info is not None:
            flat = np.ravel(np.asarray(info, dtype=np.float64))
            return int(flat[0]), int(flat[1])
        return int(meta.image_size[0]), int(meta.image_size[1])

    def _resize2d(self, mask: np.ndarray, h: int, w: int, where: str) -> np.ndarray:
        if mask.ndim == 3 and mask.shape[2] not in (3, 4):
            raise ConfigError(f"{self.ctx.where}: the {where} mask has shape {list(mask.shape)}; expected "
                              f"(H, W) ids or an (H, W, 3|4) colour image")
        scaled = byte_scale(mask)
        if scaled.shape[:2] == (h, w):
            return scaled.copy()
        return resize_nearest(scaled, h, w)

    def process_annotation(self, annotation, meta: SampleMeta, dataset_meta: DatasetMeta):
        h, w = self._target(meta)
        mask = np.asarray(annotation.mask)
        out = self._resize2d(mask, h, w, f"annotation '{annotation.identifier}'")
        return SegmentationAnnotation(annotation.identifier, _annotation_mask(out), annotation.mask_path)

    def process_prediction(self, prediction, meta: SampleMeta, dataset_meta: DatasetMeta):
        h, w = self._target(meta)
        mask = np.asarray(prediction.mask)
        where = f"prediction '{prediction.identifier}'"
        if mask.ndim == 2:
            return SegmentationPrediction(prediction.identifier, self._resize2d(mask, h, w, where).astype(np.int64))
        channels = [self._resize2d(channel, h, w, where) for channel in mask]
        return SegmentationPrediction(prediction.identifier, np.stack(channels).astype(np.float32))


@register_postprocessing("encode_segmentation_mask", keys=("type", "apply_to"))
class EncodeSegmentationMask(Postprocessor):
    """Colour masks to class ids (Accuracy Checker 2023.3
    ``postprocessor/encode_segmentation_mask.py``).

    Annotation: each pixel of an ``(H, W, 3)`` colour mask whose RGB equals
    ``segmentation_colors[k]`` gets id ``k`` (the last such ``k`` when colours repeat); other
    colours get 0. Result int64 ``(H, W)``; a mask that already holds ids passes unchanged
    (Accuracy Checker fails on it). Accuracy Checker stores the ids as int8, so ids above 127 wrap
    there; here they do not.

    Prediction (needs the dataset's ``prediction_to_gt_labels``, the Cityscapes full label map):
    class scores are argmax-ed, each model id is mapped to its ground-truth id and ids past the
    mapping become -1 (Accuracy Checker's 255 stored as int8). Result int64 ``(H, W)``.
    :raises ConfigError: when the dataset has no ``segmentation_colors`` (annotations) or no
        ``prediction_to_gt_labels`` (predictions).
    """

    applies_to = (SegmentationAnnotation, SegmentationPrediction)

    def __init__(self, params: Mapping, ctx: Context):
        super().__init__(params, ctx)
        meta = ctx.dataset_meta
        if meta is not None and meta.label_map and self.apply_to in ("all", "prediction") and \
                not getattr(meta, "prediction_to_gt_labels", None):
            ctx.add("apply_to", f"{self.apply_to!r} also encodes predictions, which needs the dataset's "
                                f"prediction_to_gt_labels (only cityscapes use_full_label_map has them); "
                                f"expected apply_to: annotation")

    def process_annotation(self, annotation, meta: SampleMeta, dataset_meta: DatasetMeta):
        colors = dataset_meta.segmentation_colors if dataset_meta is not None else None
        if not colors:
            raise ConfigError(f"{self.ctx.where}: the dataset has no segmentation_colors; expected a converter "
                              f"(or dataset_meta_file) that gives them")
        mask = np.asarray(annotation.mask)
        if mask.ndim == 2:
            return SegmentationAnnotation(annotation.identifier, mask.astype(np.int64), annotation.mask_path)
        if mask.ndim != 3 or mask.shape[2] < 3:
            raise ConfigError(f"{self.ctx.where}: the annotation mask of '{annotation.identifier}' has shape "
                              f"{list(mask.shape)}; expected an (H, W, 3) colour image")
        rgb = mask[:, :, :3].astype(np.int64)
        key = (rgb[:, :, 0] << 16) | (rgb[:, :, 1] << 8) | rgb[:, :, 2]
        table: dict[int, int] = {}
        for label, color in enumerate(colors):
            r, g, b = (int(c) for c in color[:3])
            table[(r << 16) | (g << 8) | b] = label
        keys = np.fromiter(table.keys(), np.int64, len(table))
        labels = np.fromiter(table.values(), np.int64, len(table))
        order = np.argsort(keys)
        keys, labels = keys[order], labels[order]
        pos = np.clip(np.searchsorted(keys, key), 0, len(keys) - 1)
        ids = np.where(keys[pos] == key, labels[pos], 0)
        return SegmentationAnnotation(annotation.identifier, ids.astype(np.int64), annotation.mask_path)

    def process_prediction(self, prediction, meta: SampleMeta, dataset_meta: DatasetMeta):
        mapping = getattr(dataset_meta, "prediction_to_gt_labels", None)
        if not mapping:
            raise ConfigError(f"{self.ctx.where}.apply_to: encoding predictions needs the dataset's "
                              f"prediction_to_gt_labels; expected apply_to: annotation")
        mask = np.asarray(prediction.mask)
        if mask.ndim == 3 and mask.shape[0] != 1:
            mask = np.argmax(mask, axis=0)
        elif mask.ndim == 3:
            mask = mask[0]
        ids = mask.astype(np.int64)
        out = ids.copy()
        for pred_label, gt_label in mapping.items():
            out[ids == int(pred_label)] = int(gt_label)
        out[ids >= len(mapping)] = -1
        return SegmentationPrediction(prediction.identifier, out)
