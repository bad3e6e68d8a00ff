"""Annotation and prediction records of the Accuracy-Checker-style engine, and the per-sample
metadata that links them to the image.

Every record holds NumPy arrays with fixed dtypes so that converters, adapters, postprocessing
and metrics agree without further checks:

* boxes: float64 ``(N, 4)`` as ``x_min, y_min, x_max, y_max`` in pixels of the *original* image
  (after adapters that give normalized or input-pixel boxes, ``resize_prediction_boxes`` and
  ``faster_rcnn_postprocessing_resize`` bring them there, as in Accuracy Checker);
* labels: int64 ``(N,)``; scores: float64 ``(N,)``;
* ``difficult``: bool ``(N,)``, Accuracy Checker's ``metadata['difficult_boxes']`` (VOC
  ``difficult``, CVAT ``occluded``, boxes marked by the ``filter`` postprocessing); the
  detection metrics neither count nor penalise them;
* masks: ``(H, W)`` int64 class ids (annotations), ``(C, H, W)`` float32 scores or ``(H, W)``
  int64 ids (predictions), in the layout of Accuracy Checker's segmentation representations.

Field names follow Accuracy Checker (``x_mins`` etc. become one ``boxes`` array).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _boxes(value: Any) -> np.ndarray:
    return np.asarray(value, dtype=np.float64).reshape(-1, 4)


def _vector(value: Any, dtype, n: int, default) -> np.ndarray:
    if value is None:
        return np.full(n, default, dtype=dtype)
    return np.asarray(value, dtype=dtype).reshape(-1)


@dataclass
class SampleMeta:
    """What Accuracy Checker keeps as ``image_metadata`` for one sample.

    :param identifier: the sample's identifier (file name relative to ``data_source``).
    :param image_size: ``(height, width, channels)`` of the image as read, before preprocessing.
    :param input_size: ``(height, width)`` of the image fed to the model, after preprocessing.
    :param geometric_operations: the geometric preprocessing steps in order, each a dict with
        ``type`` (``resize``, ``crop``, ``padding``, ``auto_resize``) and its numbers
        (``scale_x``, ``scale_y`` for a resize; ``pad`` = ``[top, left, bottom, right]`` pixels for
        a padding; ``top``, ``left`` for a crop; ``dst_height``/``dst_width`` after the step).
    :param extra: anything else (e.g. ``image_info`` for ``CONST_INPUT``).
    """

    identifier: str
    image_size: tuple[int, int, int]
    input_size: tuple[int, int] | None = None
    geometric_operations: list[dict] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


@dataclass
class DetectionAnnotation:
    """Ground-truth boxes of one image (Accuracy Checker's ``DetectionAnnotation``).

    :param identifier: sample identifier (image file name).
    :param labels: int64 ``(N,)`` class ids (after ``has_background`` shifts).
    :param boxes: float64 ``(N, 4)`` ``x_min, y_min, x_max, y_max`` in original-image pixels.
    :param difficult: bool ``(N,)``; True boxes are ignored by the metrics.
    :param crowd: bool ``(N,)``, COCO ``iscrowd``.
    :param masks: per-box COCO RLE dicts (``mscoco_mask_rcnn``), or None.
    :param image_size: ``(height, width)`` from the annotation file when it gives one, else None.
    """

    identifier: str
    labels: np.ndarray
    boxes: np.ndarray
    difficult: np.ndarray | None = None
    crowd: np.ndarray | None = None
    masks: list | None = None
    image_size: tuple[int, int] | None = None

    def __post_init__(self):
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.boxes = _boxes(self.boxes)
        n = self.labels.size
        self.difficult = _vector(self.difficult, bool, n, False)
        self.crowd = _vector(self.crowd, bool, n, False)

    def __len__(self) -> int:
        return int(self.labels.size)

    def select(self, keep: np.ndarray) -> "DetectionAnnotation":
        """A copy with only the boxes where the bool mask ``keep`` (N,) is True."""
        masks = None if self.masks is None else [m for m, k in zip(self.masks, keep) if k]
        return DetectionAnnotation(self.identifier, self.labels[keep], self.boxes[keep], self.difficult[keep],
                                   self.crowd[keep], masks, self.image_size)


@dataclass
class DetectionPrediction:
    """Detected boxes of one image (Accuracy Checker's ``DetectionPrediction``).

    :param identifier: sample identifier.
    :param labels: int64 ``(N,)`` class ids.
    :param scores: float64 ``(N,)`` confidences.
    :param boxes: float64 ``(N, 4)`` ``x_min, y_min, x_max, y_max``; normalized [0, 1], input
        pixels or original pixels depending on the adapter and the postprocessing applied so far.
    :param difficult: bool ``(N,)``; boxes marked by ``filter`` (ignored by the metrics).
    :param masks: per-box COCO RLE dicts (``mask_rcnn``), or None.
    """

    identifier: str
    labels: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    difficult: np.ndarray | None = None
    masks: list | None = None

    def __post_init__(self):
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        self.boxes = _boxes(self.boxes)
        self.difficult = _vector(self.difficult, bool, self.labels.size, False)

    def __len__(self) -> int:
        return int(self.labels.size)

    def select(self, keep: np.ndarray) -> "DetectionPrediction":
        """A copy with only the boxes where ``keep`` (bool ``(N,)`` or int indices) selects."""
        keep = np.asarray(keep)
        if keep.dtype == bool:
            idx = np.flatnonzero(keep)
        else:
            idx = keep.astype(np.int64)
        masks = None if self.masks is None else [self.masks[i] for i in idx]
        return DetectionPrediction(self.identifier, self.labels[idx], self.scores[idx], self.boxes[idx],
                                   self.difficult[idx], masks)


@dataclass
class SegmentationAnnotation:
    """Ground-truth class map of one image.

    :param identifier: sample identifier.
    :param mask: int64 ``(H, W)`` class ids in original-image pixels (255 or any id outside the
        label map is ignored by the metrics), or, for ``encode_segmentation_mask``, a
        ``(H, W, 3)`` uint8 colour image until that step maps colours to ids.
    :param mask_path: the mask file (for messages).
    """

    identifier: str
    mask: np.ndarray
    mask_path: str | None = None


@dataclass
class SegmentationPrediction:
    """Predicted class scores or class ids of one image.

    :param identifier: sample identifier.
    :param mask: float32 ``(C, H, W)`` class scores, or int64 ``(H, W)`` class ids after
        ``make_argmax``.
    """

    identifier: str
    mask: np.ndarray


@dataclass
class DatasetMeta:
    """Accuracy Checker's ``dataset_meta``.

    :param label_map: class id -> name.
    :param background_label: the background class id, or None.
    :param segmentation_colors: per class id an ``(r, g, b)`` colour, for colour-coded masks.
    """

    label_map: dict[int, str] = field(default_factory=dict)
    background_label: int | None = None
    segmentation_colors: list[tuple[int, int, int]] | None = None
