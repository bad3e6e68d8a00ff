"""Detection annotation converters of the Accuracy-Checker-style engine.

Each converter reads one annotation format into :class:`DetectionAnnotation` records (boxes in
original-image pixels, float64 ``x_min, y_min, x_max, y_max``) plus the dataset's label map, with
the semantics of Accuracy Checker 2023.3 ``annotation_converters/{ms_coco,pascal_voc,wider,
cvat_object_detection}.py`` (ids, label numbering, box arithmetic and sample order match).

Registered types (``annotation_conversion.converter``) and their params (default):

* ``mscoco_detection``: ``annotation_file`` (COCO instances JSON, required), ``has_background``
  (false: labels 0..K-1 in ``categories`` file order; true: 1..K and ``0: background``),
  ``use_full_label_map`` (false; true keeps the raw ``category_id``), ``sort_annotations``
  (true), ``sort_key`` (``image_id`` | ``image_size``), ``images_dir``, ``dataset_meta_file``,
  ``convert_COCO_to_VOC_labels`` (false; only acts with a ``dataset_meta_file`` label map, as in
  Accuracy Checker). Boxes ``[x, y, w, h]`` become ``x, y, x + w, y + h``; ``iscrowd`` -> ``crowd``.
* ``mscoco_mask_rcnn``: the same params; also one COCO RLE mask per box (polygons and
  uncompressed RLE encoded with pycocotools against the image's ``height``/``width``).
* ``voc_detection``: ``imageset_file`` (ids, required), ``annotations_dir`` (``<id>.xml``,
  required), ``images_dir``, ``has_background`` (true), ``dataset_meta_file``. The 20 Pascal VOC
  classes unless ``dataset_meta_file`` gives ``label_map`` or ``labels``; coordinates minus 1;
  ``difficult`` 1 -> difficult. An object whose class is not in the label map is a
  :class:`DatasetError` (Accuracy Checker stops with a ``KeyError``).
* ``wider``: ``annotation_file`` (WIDER FACE ground-truth text, required), ``label_start`` (1),
  ``images_dir``, ``dataset_meta_file``. Label map ``{0: __background__, label_start: face}``
  (``{0: face}`` without background when ``label_start`` is 0).
* ``cvat_object_detection``: ``annotation_file`` (CVAT for images 1.1 XML, required),
  ``has_background`` (true: ``0: background`` then the ``<meta>`` labels in order),
  ``labels_file`` (JSON ``{"labels": {name: id}}``), ``images_dir``, ``dataset_meta_file``.
  ``<box>`` elements with a known label; ``occluded="1"`` -> difficult.

``dataset_meta_file`` is a JSON object with ``label_map`` (``{id: name}``) and/or ``labels``
(names in id order), read the way each Accuracy Checker converter reads it.

Image files: ``<folder>/<identifier>`` where the folder is the dataset's ``data_source`` (what
Accuracy Checker's reader opens); without one, ``images_dir``; without that, Accuracy Checker's
content-check default (the annotation file's folder; ``JPEGImages`` of the VOC devkit).
Identifiers are Accuracy Checker's: COCO ``file_name``, VOC ``<filename>``, the WIDER file-name
line, the base name of CVAT's ``<image name>``.
"""
from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from pot_cli.engines.ac.base import (Context, Converted, Converter, read_bool, read_choice, read_number,
                                     register_converter)
from pot_cli.engines.ac.representations import DatasetMeta, DetectionAnnotation
from pot_cli.errors import DatasetError

#: Pascal VOC detection classes, in their id order (1..20 with a background at 0)
VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
#: COCO category id of each VOC class above (``convert_COCO_to_VOC_labels``): COCO id -> VOC id 1..20
COCO_TO_VOC = dict(zip((5, 2, 16, 9, 44, 6, 3, 17, 62, 21, 67, 18, 19, 4, 1, 64, 20, 63, 7, 72), range(1, 21)))

_COCO_KEYS = ("converter", "annotation_file", "has_background", "use_full_label_map", "sort_annotations",
              "sort_key", "images_dir", "dataset_meta_file", "convert_COCO_to_VOC_labels")


# --- helpers --------------------------------------------------------------------------------------

def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read the {what} ({getattr(e, 'strerror', None) or e})") from e


def _read_json(path: Path, what: str) -> Any:
    text = _read_text(path, what)
    try:
        return json.loads(text)
    except ValueError as e:
        raise DatasetError(f"{path}: the {what} is not valid JSON ({e})") from e


def _read_xml(path: Path, what: str) -> ET.Element:
    try:
        return ET.parse(path).getroot()
    except OSError as e:
        raise DatasetError(f"{path}: cannot read the {what} ({e.strerror or e})") from e
    except ET.ParseError as e:
        raise DatasetError(f"{path}: the {what} is not valid XML ({e})") from e


def _int_label_map(label_map: Any, source: Path) -> dict[int, str]:
    """``{id: name}`` with integer ids (JSON keys are strings)."""
    if not isinstance(label_map, Mapping):
        raise DatasetError(f"{source}: label_map is {type(label_map).__name__}; expected a mapping of id to name")
    out = {}
    for key, name in label_map.items():
        try:
            out[int(key)] = name
        except (TypeError, ValueError):
            raise DatasetError(f"{source}: label_map key {key!r} is not an integer; expected integer class ids")
    return out


def _missing_images(source: Path, root: Path, identifiers: Sequence[str]) -> list[Path]:
    """The image paths ``root / identifier``.

    :raises DatasetError: when some do not exist (naming up to 5 of them).
    """
    files = [root / ident for ident in identifiers]
    missing = [ident for ident, f in zip(identifiers, files) if not f.is_file()]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DatasetError(f"{source}: {len(missing)} image file(s) not found in {root}: "
                           f"{', '.join(missing[:5])}{more}")
    return files


class _FileConverter(Converter):
    """Shared param handling: required paths, ``images_dir``, ``dataset_meta_file``."""

    annotation_kind = "detection"

    def _path(self, key: str, expected: str, required: bool = False) -> Path | None:
        value = self.params.get(key)
        if value is None:
            if required:
                self.ctx.add(key, f"missing required key; expected {expected}")
            return None
        if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
            self.ctx.add(key, f"{value!r} is not a path; expected {expected}")
            return None
        return self.ctx.path(value)

    def _setup_images(self, default: Path | None) -> None:
        self.images_dir = self._path("images_dir", "the folder of the images")
        self.meta_file = self._path("dataset_meta_file", "a JSON file with label_map or labels")
        self.image_root = self.ctx.data_source or self.images_dir or default

    def _meta(self) -> dict | None:
        """The ``dataset_meta_file`` JSON object, or None without one.

        :raises DatasetError: when it is not a JSON object.
        """
        if self.meta_file is None:
            return None
        meta = _read_json(self.meta_file, "dataset_meta_file")
        if not isinstance(meta, dict):
            raise DatasetError(f"{self.meta_file}: dataset_meta_file holds a {type(meta).__name__}; "
                               "expected a JSON object with label_map or labels")
        return meta

    def _files(self, source: Path, identifiers: Sequence[str]) -> list[Path]:
        if self.image_root is None:
            raise DatasetError(f"{source}: no image folder; expected the dataset's data_source or images_dir")
        return _missing_images(source, self.image_root, identifiers)


# --- MS COCO --------------------------------------------------------------------------------------

@register_converter("mscoco_detection", keys=_COCO_KEYS)
class MSCocoDetectionConverter(_FileConverter):
    """COCO instances JSON -> one :class:`DetectionAnnotation` per ``images`` entry.

    Accuracy Checker 2023.3 ``annotation_converters/ms_coco.py`` ``MSCocoDetectionConverter``
    semantics: images in ``id`` order (stable sort; ``sort_key: image_size`` sorts by
    ``(height, width)``; ``sort_annotations: false`` keeps file order), each image's annotations
    in file order; boxes float64 ``(N, 4)`` pixels ``x, y, x + w, y + h`` (no -1); labels int64
    ``(N,)`` as described in the module docstring; ``crowd`` from ``iscrowd``; ``image_size``
    ``(height, width)`` from the ``images`` entry. Images without annotations are kept (empty).

    Deviations (Accuracy Checker stops with ``KeyError`` on these): annotations without
    ``segmentation`` are accepted (not needed for boxes), a missing ``iscrowd`` counts as 0, images
    without ``height``/``width`` get ``image_size`` None.

    :raises DatasetError: unreadable JSON, entries without ``id``/``file_name``/``bbox``/
        ``category_id``, a ``category_id`` outside the label map, missing image files.
    """

    masks = False

    def __init__(self, params: Mapping, ctx: Context):
        super().__init__(params, ctx)
        self.annotation_file = self._path("annotation_file", "a COCO instances JSON file", required=True)
        self.has_background = read_bool(params, "has_background", False, ctx)
        self.use_full_label_map = read_bool(params, "use_full_label_map", False, ctx)
        self.sort_annotations = read_bool(params, "sort_annotations", True, ctx)
        self.sort_key = read_choice(params, "sort_key", "image_id", ("image_id", "image_size"), ctx)
        self.to_voc = read_bool(params, "convert_COCO_to_VOC_labels", False, ctx)
        self._setup_images(self.annotation_file.parent if self.annotation_file else None)

    def _labels(self, data: Mapping) -> tuple[dict[int, str], dict]:
        """``(label_map, category_id -> label)``."""
        offset = int(self.has_background)
        meta = self._meta()
        if meta:
            label_map = meta.get("label_map")
            if not label_map and meta.get("labels"):
                label_map = {k + offset: name for k, name in enumerate(meta["labels"])}
            if label_map:
                label_map = _int_label_map(label_map, self.meta_file)
                if self.to_voc:
                    unknown = [i for i in label_map if i not in COCO_TO_VOC]
                    if unknown:
                        raise DatasetError(f"{self.meta_file}: label_map ids {unknown[:5]} have no Pascal VOC "
                                           "class; expected COCO ids of the 20 VOC classes with "
                                           "convert_COCO_to_VOC_labels")
                    return label_map, {i: COCO_TO_VOC[i] for i in label_map}
                return label_map, {i: i for i in label_map}
        cats = data.get("categories")
        if not isinstance(cats, list) or not all(isinstance(c, Mapping) and "id" in c and "name" in c for c in cats):
            raise DatasetError(f"{self.annotation_file}: 'categories' is missing or malformed; expected a list "
                               "of {id, name} objects")
        if self.use_full_label_map:
            return {c["id"]: c["name"] for c in cats}, {c["id"]: c["id"] for c in cats}
        return ({k + offset: c["name"] for k, c in enumerate(cats)},
                {c["id"]: k + offset for k, c in enumerate(cats)})

    def _images(self, data: Mapping) -> list[tuple[Any, str, tuple[int, int] | None]]:
        """``(id, file_name, (height, width) or None)`` in Accuracy Checker's order."""
        src = self.annotation_file
        images = data.get("images")
        if not isinstance(images, list):
            raise DatasetError(f"{src}: 'images' is missing; expected a list of {{id, file_name, height, width}}")
        out = []
        for k, im in enumerate(images):
            if not isinstance(im, Mapping) or "id" not in im or not isinstance(im.get("file_name"), str):
                raise DatasetError(f"{src}: images[{k}]: expected an object with id and file_name")
            size = None
            if "height" in im and "width" in im:
                try:
                    size = (int(im["height"]), int(im["width"]))
                except (TypeError, ValueError):
                    raise DatasetError(f"{src}: images[{k}]: height/width {im['height']!r}/{im['width']!r}; "
                                       "expected integers")
            out.append((im["id"], im["file_name"], size))
        if self.sort_annotations:
            if self.sort_key == "image_size":
                unsized = [name for _, name, size in out if size is None]
                if unsized:
                    raise DatasetError(f"{src}: image {unsized[0]} has no height/width; expected both with "
                                       "sort_key: image_size")
                out.sort(key=lambda e: e[2])
            else:
                try:
                    out.sort(key=lambda e: e[0])
                except TypeError:
                    raise DatasetError(f"{src}: image ids mix types; expected comparable ids (all integers)")
        return out

    def convert(self) -> Converted:
        src = self.annotation_file
        data = _read_json(src, "annotation file")
        if not isinstance(data, Mapping):
            raise DatasetError(f"{src}: holds a {type(data).__name__}; expected a COCO JSON object")
        label_map, to_label = self._labels(data)
        images = self._images(data)
        anns = data.get("annotations", [])
        if not isinstance(anns, list):
            raise DatasetError(f"{src}: 'annotations' is a {type(anns).__name__}; expected a list")
        by_image: dict[Any, list[tuple[int, Mapping]]] = {}
        for k, a in enumerate(anns):
            if not isinstance(a, Mapping) or not all(key in a for key in ("image_id", "category_id", "bbox")):
                raise DatasetError(f"{src}: annotations[{k}]: expected an object with image_id, category_id, bbox")
            try:
                by_image.setdefault(a["image_id"], []).append((k, a))
            except TypeError:
                raise DatasetError(f"{src}: annotations[{k}]: image_id {a['image_id']!r} is not an id")
        annotations = [self._annotation(name, size, by_image.get(image_id, []), to_label)
                       for image_id, name, size in images]
        files = self._files(src, [name for _, name, _ in images])
        background = None
        if self.has_background:
            label_map[0] = "background"
            background = 0
        return Converted(files, annotations, DatasetMeta(label_map, background))

    def _annotation(self, name: str, size, entries: list[tuple[int, Mapping]], to_label: dict):
        src = self.annotation_file
        labels = []
        for k, a in entries:
            if a["category_id"] not in to_label:
                raise DatasetError(f"{src}: annotations[{k}]: category_id {a['category_id']!r} is not in the label "
                                   f"map; expected one of: {', '.join(map(str, list(to_label)[:20]))}")
            labels.append(to_label[a["category_id"]])
        for k, a in entries:
            bbox = a["bbox"]
            if not isinstance(bbox, list) or len(bbox) != 4 or \
                    not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
                raise DatasetError(f"{src}: annotations[{k}]: bbox {bbox!r} is not 4 numbers; expected "
                                   "[x, y, width, height]")
        boxes = np.array([a["bbox"] for _, a in entries], dtype=np.float64).reshape(len(entries), 4)
        boxes[:, 2:] += boxes[:, :2]
        crowd = [bool(a.get("iscrowd", 0)) for _, a in entries]
        masks = self._masks(name, size, entries) if self.masks else None
        return DetectionAnnotation(name, labels, boxes, crowd=crowd, masks=masks, image_size=size)

    def _masks(self, name, size, entries) -> list:
        return []


@register_converter("mscoco_mask_rcnn", keys=_COCO_KEYS)
class MSCocoMaskRCNNConverter(MSCocoDetectionConverter):
    """COCO instances JSON -> :class:`DetectionAnnotation` with one COCO RLE mask per box.

    Boxes, labels, order and label map as ``mscoco_detection``; ``masks`` holds per box a dict
    ``{"size": [height, width], "counts": bytes}`` (compressed RLE): a polygon list is encoded
    with ``pycocotools.mask.frPyObjects`` against the image's ``height``/``width`` and its parts
    merged (union); an uncompressed RLE (``counts`` a list) is compressed the same way; a
    compressed RLE is kept (``counts`` as bytes). Accuracy Checker 2023.3 ``ms_coco.py``
    ``MSCocoMaskRCNNConverter`` and ``CoCoInstanceSegmentationAnnotation`` semantics.

    :raises DatasetError: as ``mscoco_detection``, and for an annotation without
        ``segmentation``, an image without ``height``/``width``, or a malformed segmentation.
    """

    masks = True

    def _masks(self, name, size, entries) -> list:
        from pycocotools import mask as mask_utils

        src = self.annotation_file
        out = []
        for k, a in entries:
            seg = a.get("segmentation")
            if seg is None:
                raise DatasetError(f"{src}: annotations[{k}]: no 'segmentation'; expected polygons or RLE "
                                   "for mscoco_mask_rcnn")
            try:
                if isinstance(seg, list) or isinstance(seg.get("counts"), list):
                    if size is None:
                        raise DatasetError(f"{src}: image {name} has no height/width; expected both to "
                                           "encode its masks")
                    if isinstance(seg, list) and not seg:
                        rle = mask_utils.encode(np.zeros((size[0], size[1], 1), dtype=np.uint8, order="F"))[0]
                    elif isinstance(seg, list):
                        rle = mask_utils.merge(mask_utils.frPyObjects(seg, size[0], size[1]))
                    else:
                        rle = mask_utils.frPyObjects(seg, size[0], size[1])
                else:
                    counts = seg["counts"]
                    rle = {"size": list(seg["size"]), "counts": counts.encode() if isinstance(counts, str) else counts}
            except DatasetError:
                raise
            except (AttributeError, KeyError, TypeError, ValueError, IndexError) as e:
                raise DatasetError(f"{src}: annotations[{k}]: malformed segmentation ({e}); expected polygons "
                                   "[[x1, y1, ...], ...] or an RLE {size, counts}") from e
            out.append({"size": [int(v) for v in rle["size"]], "counts": rle["counts"]})
        return out


# --- Pascal VOC -----------------------------------------------------------------------------------

@register_converter("voc_detection", keys=("converter", "imageset_file", "annotations_dir", "images_dir",
                                           "has_background", "dataset_meta_file"))
class VOCDetectionConverter(_FileConverter):
    """Pascal VOC devkit XML -> one :class:`DetectionAnnotation` per id of ``imageset_file``.

    Accuracy Checker 2023.3 ``annotation_converters/pascal_voc.py`` ``PascalVOCDetectionConverter``
    semantics: ids are the whitespace-separated tokens of ``imageset_file``; each reads
    ``annotations_dir/<id>.xml``; the identifier is its ``<filename>``; every top-level element
    whose tag starts with ``object`` gives a box ``bndbox`` minus 1 (float64 pixels, 0-based) and
    ``difficult`` when ``<difficult>`` is 1. ``image_size`` ``(height, width)`` from ``<size>``.

    Label map: ``dataset_meta_file`` ``label_map`` (name -> id through the inverted map; the last
    id of a repeated name wins), else its ``labels`` (ids from 1 with ``has_background``, else 0),
    else the 20 VOC classes; ``has_background`` adds ``__background__`` 0 (not for a given
    ``label_map``) and sets the background label 0.

    Deviations (Accuracy Checker stops on these): a missing ``<difficult>`` counts as 0; class
    names are compared after stripping white space.

    :raises DatasetError: unreadable list or XML, no ``<filename>``/``<name>``/``<bndbox>``, a
        class name not in the label map (naming the file and the name), missing image files.
    """

    def __init__(self, params: Mapping, ctx: Context):
        super().__init__(params, ctx)
        self.imageset_file = self._path("imageset_file", "the devkit's ImageSets/Main/<set>.txt", required=True)
        self.annotations_dir = self._path("annotations_dir", "the devkit's Annotations folder", required=True)
        self.has_background = read_bool(params, "has_background", True, ctx)
        devkit = self.imageset_file.parents[2] if self.imageset_file and len(self.imageset_file.parents) > 2 \
            else None
        self._setup_images(devkit / "JPEGImages" if devkit else None)

    def _name_to_id(self) -> dict[str, int]:
        shift = int(self.has_background)
        meta = self._meta() or {}
        if "label_map" in meta:
            return {name: i for i, name in _int_label_map(meta["label_map"], self.meta_file).items()}
        names = VOC_CLASSES
        if "labels" in meta:
            names = meta["labels"]
            if not isinstance(names, list):
                raise DatasetError(f"{self.meta_file}: labels is a {type(names).__name__}; expected a list of names")
        out = {name: k + shift for k, name in enumerate(names)}
        if self.has_background:
            out["__background__"] = 0
        return out

    def convert(self) -> Converted:
        name_to_id = self._name_to_id()
        label_map = {i: name for name, i in name_to_id.items()}
        ids = _read_text(self.imageset_file, "image set file").split()
        annotations = [self._read(self.annotations_dir / f"{i}.xml", name_to_id) for i in ids]
        files = self._files(self.imageset_file, [a.identifier for a in annotations])
        return Converted(files, annotations, DatasetMeta(label_map, 0 if self.has_background else None))

    @staticmethod
    def _read(path: Path, name_to_id: Mapping[str, int]) -> DetectionAnnotation:
        root = _read_xml(path, "annotation file")
        fname = root.find(".//filename")
        if fname is None or not (fname.text or "").strip():
            raise DatasetError(f"{path}: no <filename>; expected the image file name")
        size = None
        node = root.find("size")
        if node is not None:
            try:
                size = (int(node.findtext("height")), int(node.findtext("width")))
            except (TypeError, ValueError):
                size = None
        labels, coords, difficult = [], [], []
        for k, obj in enumerate(e for e in root if e.tag.startswith("object")):
            name = (obj.findtext("name") or "").strip()
            if name not in name_to_id:
                known = ", ".join(n for n in name_to_id if n != "__background__")
                raise DatasetError(f"{path}: object {k}: class {name!r} is not in the label map; expected one of: "
                                   f"{known} (give dataset_meta_file with labels or label_map for other classes)")
            box = obj.find("bndbox")
            try:
                coords.append([float(box.findtext(t)) - 1 for t in ("xmin", "ymin", "xmax", "ymax")])
            except (AttributeError, TypeError, ValueError):
                raise DatasetError(f"{path}: object {k}: <bndbox> needs numeric xmin, ymin, xmax, ymax")
            flag = (obj.findtext("difficult") or "0").strip()
            try:
                difficult.append(int(flag) == 1)
            except ValueError:
                raise DatasetError(f"{path}: object {k}: <difficult> is {flag!r}; expected 0 or 1")
            labels.append(name_to_id[name])
        return DetectionAnnotation(fname.text.strip(), labels, coords, difficult=difficult, image_size=size)


# --- WIDER FACE -----------------------------------------------------------------------------------

@register_converter("wider", keys=("converter", "annotation_file", "label_start", "images_dir", "dataset_meta_file"))
class WiderConverter(_FileConverter):
    """WIDER FACE ground-truth text -> one :class:`DetectionAnnotation` per image.

    The file holds, per image, a file-name line, a count line and ``count`` lines ``x y w h ...``
    (pixels, 0-based; an image with count 0 may be followed by one dummy line ``0 0 0 0``). Boxes
    become ``x, y, x + w, y + h`` float64; every box gets the face label. Blank lines are skipped.
    Accuracy Checker 2023.3 ``annotation_converters/wider.py`` semantics, including its
    ``dataset_meta_file`` handling: ``labels`` number from ``label_start`` (a ``background`` or
    ``__background__`` name gets 0), ``background_label`` (default -1, i.e. none) is added as
    ``__background__``, a given ``label_map`` wins, and the face label becomes the smallest id that
    is not the background.

    Deviation: the file is read entry by entry, so image names without ``.jpg`` are kept (Accuracy
    Checker finds images by the substring ``.jpg`` and drops others).

    :raises DatasetError: a count or box line that is not numbers (naming the line), missing
        image files.
    """

    def __init__(self, params: Mapping, ctx: Context):
        super().__init__(params, ctx)
        self.annotation_file = self._path("annotation_file", "a WIDER FACE ground-truth .txt file", required=True)
        self.label_start = read_number(params, "label_start", 1, ctx, integer=True)
        self._setup_images(self.annotation_file.parent if self.annotation_file else None)

    def _label_map(self) -> tuple[dict[int, str], int | None, int]:
        """``(label_map, background label or None, face label)``."""
        start = self.label_start
        meta = self._meta()
        if meta is None:
            if start != 0:
                return {0: "__background__", start: "face"}, 0, start
            return {start: "face"}, None, start
        background = meta.get("background_label", -1)
        if isinstance(background, bool) or not isinstance(background, int):
            raise DatasetError(f"{self.meta_file}: background_label is {background!r}; expected an integer")
        label_map: Any = {0: "__background__", start: "face"}
        labels = meta.get("labels")
        if labels:
            label_map = {0 if name in ("background", "__background__") else k + start: name
                         for k, name in enumerate(labels)}
            label_map[background] = "__background__"
        label_map = _int_label_map(meta.get("label_map", label_map), self.meta_file)
        valid = sorted(k for k in label_map if k != background)
        if not valid:
            raise DatasetError(f"{self.meta_file}: the label map has no class besides the background; expected a "
                               "face class")
        return label_map, None if background == -1 else background, valid[0]

    def convert(self) -> Converted:
        src = self.annotation_file
        label_map, background, face = self._label_map()
        lines = [(n, line.strip()) for n, line in enumerate(_read_text(src, "annotation file").splitlines(), 1)
                 if line.strip()]
        annotations, pos = [], 0
        while pos < len(lines):
            _, name = lines[pos]
            if pos + 1 >= len(lines) or not lines[pos + 1][1].isdigit():
                n, text = lines[pos + 1] if pos + 1 < len(lines) else (lines[pos][0] + 1, "<end of file>")
                raise DatasetError(f"{src}: line {n}: {text!r}; expected the box count of {name}")
            count = int(lines[pos + 1][1])
            rows = lines[pos + 2: pos + 2 + count]
            if len(rows) < count:
                raise DatasetError(f"{src}: {name}: {len(rows)} box line(s) for a count of {count}")
            boxes = np.zeros((count, 4), dtype=np.float64)
            for r, (n, text) in enumerate(rows):
                parts = text.split()
                try:
                    boxes[r] = [float(v) for v in parts[:4]]
                except ValueError:
                    raise DatasetError(f"{src}: line {n}: {text!r}; expected 'x y w h' numbers")
                if len(parts) < 4:
                    raise DatasetError(f"{src}: line {n}: {text!r}; expected 'x y w h' numbers")
            boxes[:, 2:] += boxes[:, :2]
            pos += 2 + count
            if count == 0 and pos < len(lines) and _is_numbers(lines[pos][1]):
                pos += 1  # the dummy "0 0 0 0" line of an image without faces
            annotations.append(DetectionAnnotation(name, np.full(count, face), boxes))
        files = self._files(src, [a.identifier for a in annotations])
        return Converted(files, annotations, DatasetMeta(label_map, background))


def _is_numbers(text: str) -> bool:
    try:
        [float(v) for v in text.split()]
    except ValueError:
        return False
    return True


# --- CVAT -----------------------------------------------------------------------------------------

@register_converter("cvat_object_detection", keys=("converter", "annotation_file", "images_dir", "has_background",
                                                   "labels_file", "dataset_meta_file"))
class CVATObjectDetectionConverter(_FileConverter):
    """CVAT for images 1.1 XML -> one :class:`DetectionAnnotation` per ``<image>``.

    Accuracy Checker 2023.3 ``annotation_converters/cvat_object_detection.py`` semantics: the
    identifier is the base name of ``<image name>``; each child element with a ``label`` in the
    label map gives a box ``xtl, ytl, xbr, ybr`` (float64 pixels, unchanged) and ``difficult`` when
    ``occluded`` is non-zero; children without a known label are skipped. ``image_size``
    ``(height, width)`` from the ``<image>`` attributes.

    Label map: ``labels_file`` JSON ``{"labels": {name: id}}`` (no background label), else the
    ``<meta>`` ``<label><name>`` list in order, after ``background`` 0 with ``has_background``.
    ``dataset_meta_file``: ``label_map`` (``{id: name}``, ``background_label`` read too) or
    ``labels`` (ids from 1 with ``has_background`` and ``0: background``, else from 0).

    Deviations: Accuracy Checker keeps ``dataset_meta_file`` label ids as strings and fails on a
    ``labels``-only file; here ids are integers and ``labels`` works as described. A labelled
    non-box shape stops both (here with a :class:`DatasetError`).

    :raises DatasetError: unreadable XML, no labels, a labelled element without ``xtl``/``ytl``/
        ``xbr``/``ybr`` (polygons, points, tags), missing image files.
    """

    def __init__(self, params: Mapping, ctx: Context):
        super().__init__(params, ctx)
        self.annotation_file = self._path("annotation_file", "a CVAT for images 1.1 XML file", required=True)
        self.has_background = read_bool(params, "has_background", True, ctx)
        self.labels_file = self._path("labels_file", 'a JSON file {"labels": {name: id}}')
        self._setup_images(self.annotation_file.parent if self.annotation_file else None)

    def _labels(self, root: ET.Element) -> tuple[dict[str, int], dict[int, str], int | None]:
        """``(name -> id, label_map, background label or None)``."""
        meta = self._meta()
        if meta is not None:
            if "label_map" in meta:
                label_map = _int_label_map(meta["label_map"], self.meta_file)
                background = meta.get("background_label")
            elif isinstance(meta.get("labels"), list) and meta["labels"]:
                shift = int(self.has_background)
                label_map = {k + shift: name for k, name in enumerate(meta["labels"])}
                background = None
                if self.has_background:
                    label_map[0], background = "background", 0
            else:
                raise DatasetError(f"{self.meta_file}: no labels or label_map; expected one of them")
            return {name: i for i, name in label_map.items()}, label_map, background
        if self.labels_file is not None:
            name_to_id = _read_json(self.labels_file, "labels_file")
            name_to_id = name_to_id.get("labels") if isinstance(name_to_id, dict) else None
            if not isinstance(name_to_id, dict) or not name_to_id or \
                    not all(isinstance(v, int) and not isinstance(v, bool) for v in name_to_id.values()):
                raise DatasetError(f"{self.labels_file}: no 'labels' mapping; expected {{\"labels\": {{name: id}}}}")
            return name_to_id, {i: name for name, i in name_to_id.items()}, None
        head = root.find("meta")
        names = [] if head is None else [lab.findtext("name") for lab in head.iter("label")]
        names = [n for n in names if n]
        if not names:
            raise DatasetError(f"{self.annotation_file}: no <meta> <label> names; expected the task labels, or "
                               "labels_file")
        background = None
        if self.has_background:
            names, background = ["background"] + names, 0
        name_to_id = {name: k for k, name in enumerate(names)}
        return name_to_id, {i: name for name, i in name_to_id.items()}, background

    def convert(self) -> Converted:
        src = self.annotation_file
        root = _read_xml(src, "annotation file")
        name_to_id, label_map, background = self._labels(root)
        annotations = []
        for image in root.iter("image"):
            full = image.get("name")
            if not full:
                raise DatasetError(f"{src}: an <image> has no name; expected <image name=...>")
            try:
                size = (int(image.get("height")), int(image.get("width")))
            except (TypeError, ValueError):
                size = None
            labels, coords, difficult = [], [], []
            for shape in image:
                label = shape.get("label")
                if label is None or label not in name_to_id:
                    continue
                try:
                    coords.append([float(shape.get(k)) for k in ("xtl", "ytl", "xbr", "ybr")])
                    difficult.append(int(shape.get("occluded", "0")) != 0)
                except (TypeError, ValueError):
                    raise DatasetError(f"{src}: image {full}: <{shape.tag} label={label!r}> is not a box; expected "
                                       "<box> with numeric xtl, ytl, xbr, ybr (and occluded 0/1)")
                labels.append(name_to_id[label])
            annotations.append(DetectionAnnotation(full.split("/")[-1], labels, coords, difficult=difficult,
                                                   image_size=size))
        files = self._files(src, [a.identifier for a in annotations])
        return Converted(files, annotations, DatasetMeta(label_map, background))
