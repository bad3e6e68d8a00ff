"""Detection metrics of the Accuracy-Checker-style engine: VOC mAP, Accuracy Checker's own COCO AP and
the pycocotools COCO AP, with the numbers of Accuracy Checker 2023.3 (``metrics/detection.py``,
``metrics/coco_metrics.py``, ``metrics/coco_orig_metrics.py``, ``metrics/overlap.py``).

Registered types (every one also takes the common metric keys ``type``, ``name``, ``reference``,
``abs_threshold``, ``rel_threshold``, ``presenter``; ``threshold`` is the deprecated reference
threshold for ``map`` and the IoU threshold list for the COCO types):

``map``
    VOC average precision per class, reported as the mean over classes.
    ``overlap_threshold`` (0.5, in [0, 1]), ``ignore_difficult`` (true), ``include_boundaries`` (true:
    box width = x_max - x_min + 1 pixel), ``distinct_conf`` (false), ``allow_multiple_matches_per_ignored``
    (false), ``overlap_method`` (``iou`` | ``ioa``), ``use_filtered_tp`` (false), ``integral``
    (``max`` | ``11point``), ``label_map`` (only ``label_map``, the dataset meta's label map, exists here).
``coco_precision``
    Accuracy Checker's own COCO-style AP: per image and class the top ``max_detections`` (20) detections,
    greedy matching at each IoU of ``threshold`` (``.50:.05:.95``; also ``0.5``, ``0.75``, any single
    number as a string or a number, or a list of numbers), IoU without the +1 pixel, difficult and crowd
    ground truth ignored, 101-point interpolated precision averaged over thresholds.
``coco_orig_precision`` / ``coco_orig_segm_precision``
    ``stats[0]`` of pycocotools ``COCOeval`` (``bbox`` / ``segm``) on a ground-truth JSON synthesised from
    the annotations as Accuracy Checker does (image id = the part of the file name after the last ``_``
    and before ``.jpg``; category id = label; box ``[x, y, w, h]`` with ``w = x_max - x_min + 1`` when
    ``include_boundaries`` (true), for ground truth and detections alike; area = w * h; ``iscrowd`` from
    the annotation; difficult flags are not used). ``threshold`` as for ``coco_precision`` replaces
    ``iouThrs``. The segm variant reads COCO RLE dicts (``{'size': [h, w], 'counts': bytes}``) from
    ``DetectionAnnotation.masks`` / ``DetectionPrediction.masks``. After
    :meth:`CocoOrigPrecision.use_original_annotation` the original COCO instances JSON is the ground
    truth instead (Accuracy Checker's mode when ``annotation_conversion.annotation_file`` is a ``.json``
    and there is no ``subsample_size``): image ids by file name, label ids mapped to COCO category ids by
    name (or by the fixed 80/90-class offsets with ``use_full_label_map``); ground-truth boxes are then
    not widened but detections are.

Classes are the keys of ``ctx.dataset_meta.label_map`` without ``background_label``. Accuracy Checker
refuses an empty label map; here an empty one means the labels seen in the annotations and predictions
being scored (background excluded). This gives the same values whenever every label lies in the label
map, because classes seen nowhere are NaN (``map``, ``coco_precision``) or absent (pycocotools) anyway.

Dataset values (:meth:`evaluate`) are Accuracy Checker's: the mean of the per-class vector with NaN
classes dropped. ``map`` gives NaN to classes without any detection and 0 to classes detected but
absent from the ground truth; if every class is NaN the value is 0 (Accuracy Checker's "No detections"
fallback). ``coco_precision`` gives NaN to classes without counted ground truth; if all are NaN the value
is NaN. ``coco_orig_*`` give 0 when there is no detection at all and -1 when pycocotools finds no
ground truth. ``map`` at dataset level is not the mean of its per-image values.

Per-sample values (:meth:`per_sample`, for AccuracyAwareQuantization's ranking) are the NaN-mean of
Accuracy Checker's per-image ``update`` vector: ``map`` and ``coco_precision`` their own;
``coco_orig_precision`` that of ``coco_precision`` at its defaults (POT's proxy metric);
``coco_orig_segm_precision`` that of Accuracy Checker's ``coco_segm_precision`` at its defaults (the same
matching on pycocotools mask IoU, crowd ground truth by intersection over detection area).
**No-information rule:** when the per-image vector is all NaN (for ``map``: no detection of a scored
class; for the COCO types: no counted ground truth), the value is 0.0 if the image has at least one
counted ground-truth box (a box of a scored class that the metric does not ignore: not difficult when
``ignore_difficult``, for the COCO types neither difficult nor crowd) -- every object was missed -- and
1.0 otherwise -- nothing to find, nothing found. POT took ``np.nanmean`` there, got NaN and, through its
reversed ``argsort``, ranked such images first; the rule makes the choice explicit.

Besides :meth:`evaluate` and :meth:`per_sample`, every type has ``per_image_vector(prediction,
annotation)`` (Accuracy Checker's per-image ``update`` vector, float64 ``(C,)``; the proxy's for
``coco_orig_*``) and ``map``/``coco_precision`` have ``evaluate_vector`` (the per-class dataset vector,
NaN kept). Every type reads ``ctx.dataset_meta`` through its ``dataset_meta`` attribute, which the
engine may replace after building. ``map`` and ``coco_precision`` are vectorised over images (2,000
images of 20 boxes evaluate in about 0.1-0.2 s); ``coco_orig_*`` take what pycocotools takes.

Deviations from Accuracy Checker, all on inputs it does not define well: images are told apart by
position, not by identifier (Accuracy Checker's ``map`` shares matching state between images with equal
identifiers); ``map`` orders detections of equal score with the same NumPy default ``argsort`` call as
Accuracy Checker, so ties follow the platform's sort as there (that sort is not stable, and NumPy 1.26 and
2.x can order long runs of equal scores differently; the values only change when tied detections differ
in outcome); in the original-JSON mode a detection whose label has no COCO category is dropped (Accuracy
Checker raises ``KeyError``); config values are checked with the engine's readers (numeric strings
accepted, ``null`` refused, where Accuracy Checker does the opposite).
"""
from __future__ import annotations

import contextlib
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from pot_cli.engines.ac.base import ACMetric, Context, nanmean, read_bool, read_choice, read_number, \
    register_metric
from pot_cli.engines.ac.representations import DatasetMeta, DetectionAnnotation, DetectionPrediction
from pot_cli.errors import DatasetError, EngineError

__all__ = ["DetectionMAP", "CocoPrecision", "CocoOrigPrecision", "CocoOrigSegmPrecision",
           "parse_iou_thresholds", "COCO_IOU_RANGE"]

COMMON_KEYS = ("type", "name", "reference", "abs_threshold", "rel_threshold", "threshold", "presenter")
PRESENTERS = ("print_scalar", "print_vector")

#: IoU thresholds .50:.05:.95 (the same ``linspace`` call as Accuracy Checker and pycocotools)
COCO_IOU_RANGE = np.linspace(.5, 0.95, int(np.round((0.95 - .5) / .05)) + 1, endpoint=True)
#: recall points of the 101-point interpolation
_RECALL_POINTS = np.linspace(.0, 1.00, int(np.round((1.00 - .0) / .01)) + 1, endpoint=True)
#: recall points of the VOC2007 11-point interpolation (``arange`` values, e.g. 0.30000000000000004)
_VOC07_POINTS = np.arange(0., 1.1, 0.1)
_EPS = np.finfo(float).eps


# --- config helpers -------------------------------------------------------------------------------

def _check_common(params: Mapping, ctx: Context, *, threshold_is_reference: bool) -> None:
    """Validate the keys every Accuracy Checker metric accepts (values only; unknown keys are the
    engine's job)."""
    if "name" in params and not isinstance(params["name"], str):
        ctx.add("name", f"{params['name']!r} is not a string; expected a metric name")
    for key in ("abs_threshold", "rel_threshold"):
        if key in params:
            read_number(params, key, 0.0, ctx, low=0.0)
    if threshold_is_reference and "threshold" in params:
        read_number(params, "threshold", 0.0, ctx)
    read_choice(params, "presenter", None, PRESENTERS, ctx)


def parse_iou_thresholds(value) -> np.ndarray | None:
    """IoU thresholds from a COCO metric's ``threshold`` value, as Accuracy Checker reads them.

    Accepted: a number; a string holding one number (``'0.5'``, ``'.75'``); the range string
    ``.50:.05:.95`` in any float spelling (``'0.5:0.05:0.95'``, ``'.5:.05:.95'``); a non-empty list of
    numbers. Every threshold must lie in [0, 1].

    :returns: float64 ``(T,)`` thresholds (a fraction of overlap), or None when the value is not
        accepted (Accuracy Checker raises on other strings, e.g. comma lists, and cannot use other types).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        values = [float(value)]
    elif isinstance(value, str):
        parts = value.split(":")
        try:
            normalized = ":".join(str(float(p)) for p in parts)
        except ValueError:
            return None
        if normalized == "0.5:0.05:0.95":
            return COCO_IOU_RANGE.copy()
        if len(parts) != 1:
            return None
        values = [float(normalized)]
    elif isinstance(value, (list, tuple)) and value and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        values = [float(v) for v in value]
    else:
        return None
    arr = np.asarray(values, dtype=np.float64)
    if not np.all((arr >= 0.0) & (arr <= 1.0)):
        return None
    return arr


def _read_iou_thresholds(params: Mapping, ctx: Context) -> np.ndarray:
    value = params.get("threshold", ".50:.05:.95")
    parsed = parse_iou_thresholds(value)
    if parsed is None:
        ctx.add("threshold", f"{value!r} is not an IoU threshold list; expected a number in [0, 1], "
                             "'0.5', '0.75', '.50:.05:.95' or a list of numbers in [0, 1]")
        return COCO_IOU_RANGE.copy()
    return parsed


# --- flattened records ----------------------------------------------------------------------------

@dataclass
class _Boxes:
    """The boxes of many images in one set of arrays, in image order then record order.

    img int64 (K,): image position; labels int64 (K,);
    boxes float64 (K, 4) pixels; scores float64 (K,) (None for ground truth); difficult bool (K,);
    crowd bool (K,); masks: list of K RLE dicts or None.
    """

    img: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray | None
    difficult: np.ndarray
    crowd: np.ndarray
    masks: list | None = None


def _check_records(metric: str, predictions: Sequence, annotations: Sequence) -> None:
    if len(predictions) != len(annotations):
        raise EngineError(f"metric {metric}: {len(predictions)} predictions for {len(annotations)} "
                          "annotations; expected one prediction per annotation")
    for k, (p, a) in enumerate(zip(predictions, annotations)):
        if not isinstance(a, DetectionAnnotation):
            raise DatasetError(f"metric {metric}: sample {k}: the annotation is a {type(a).__name__}; "
                               "expected a detection annotation (DetectionAnnotation)")
        if not isinstance(p, DetectionPrediction):
            raise EngineError(f"metric {metric}: sample {k} ({a.identifier}): the prediction is a "
                              f"{type(p).__name__}; expected a detection prediction (DetectionPrediction)")


def _validate_masks(metric: str, predictions: Sequence, annotations: Sequence) -> None:
    """Every box has a COCO RLE dict (``size``, ``counts``) and the masks of one image share a size.

    :raises DatasetError: for an annotation without proper masks.
    :raises EngineError: for a prediction without proper masks or with masks of another size.
    """
    for prediction, annotation in zip(predictions, annotations):
        sizes = {}
        for record, kind, error in ((annotation, "annotation", DatasetError),
                                    (prediction, "prediction", EngineError)):
            n = len(record.labels)
            masks = record.masks
            if n and (masks is None or len(masks) != n):
                have = "no masks" if masks is None else f"{len(masks)} masks"
                raise error(f"metric {metric}: {record.identifier}: the {kind} has {have} for {n} boxes; "
                            "expected one COCO RLE mask per box")
            for mask in (masks or [])[:n]:
                if not isinstance(mask, Mapping) or "size" not in mask or "counts" not in mask:
                    raise error(f"metric {metric}: {record.identifier}: a {kind} mask is {type(mask).__name__}; "
                                "expected a COCO RLE dict with 'size' and 'counts'")
                sizes.setdefault(tuple(int(v) for v in mask["size"]), kind)
        if len(sizes) > 1:
            raise EngineError(f"metric {metric}: {annotation.identifier}: masks of sizes "
                              f"{', '.join(f'{h}x{w} ({k})' for (h, w), k in sizes.items())}; expected the "
                              "prediction masks at the annotation's image size")


def _flatten(records: Sequence, *, with_scores: bool, with_masks: bool = False) -> _Boxes:
    sizes = np.fromiter((len(r.labels) for r in records), dtype=np.int64, count=len(records))
    total = int(sizes.sum())
    img = np.repeat(np.arange(len(records), dtype=np.int64), sizes)
    if total:
        labels = np.concatenate([r.labels for r in records])
        boxes = np.concatenate([r.boxes for r in records])
        difficult = np.concatenate([r.difficult for r in records])
        crowd = np.concatenate([r.crowd for r in records]) if not with_scores else np.zeros(total, bool)
        scores = np.concatenate([r.scores for r in records]) if with_scores else None
    else:
        labels, boxes = np.zeros(0, np.int64), np.zeros((0, 4))
        difficult, crowd = np.zeros(0, bool), np.zeros(0, bool)
        scores = np.zeros(0) if with_scores else None
    masks = None
    if with_masks:
        masks = [m for r in records for m in (r.masks or [])[:len(r.labels)]]
    return _Boxes(img, labels.astype(np.int64, copy=False), boxes, scores,
                  difficult.astype(bool, copy=False), crowd.astype(bool, copy=False), masks)


def _scored_classes(meta: DatasetMeta, predictions: Sequence, annotations: Sequence) -> np.ndarray:
    """The class ids a metric scores, in label-map order (int64 ``(C,)``)."""
    background = meta.background_label
    if meta.label_map:
        keys = [int(k) for k in meta.label_map]
    else:
        seen = [r.labels for r in annotations] + [r.labels for r in predictions]
        keys = np.unique(np.concatenate(seen)).tolist() if seen else []
    return np.asarray([k for k in keys if background is None or k != int(background)], dtype=np.int64)


def _class_index(labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Position of each label in ``classes`` (-1 when not scored)."""
    if not classes.size:
        return np.full(labels.shape, -1, dtype=np.int64)
    order = np.argsort(classes, kind="stable")
    sorted_classes = classes[order]
    at = np.clip(np.searchsorted(sorted_classes, labels), 0, classes.size - 1)
    return np.where(sorted_classes[at] == labels, order[at], -1).astype(np.int64)


# --- overlaps (Accuracy Checker's arithmetic, elementwise over pairs) ------------------------------

def _areas(boxes: np.ndarray, boundary: float) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0] + boundary) * (boxes[:, 3] - boxes[:, 1] + boundary)


def _intersections(det: np.ndarray, gt: np.ndarray, boundary: float) -> np.ndarray:
    x0 = np.maximum(gt[:, 0], det[:, 0])
    y0 = np.maximum(gt[:, 1], det[:, 1])
    x1 = np.maximum(x0, np.minimum(gt[:, 2], det[:, 2]))
    y1 = np.maximum(y0, np.minimum(gt[:, 3], det[:, 3]))
    return (x1 - x0 + boundary) * (y1 - y0 + boundary)


def pair_overlap(det: np.ndarray, gt: np.ndarray, boundary: float, method: str = "iou") -> np.ndarray:
    """Overlap of box pairs, Accuracy Checker ``metrics/overlap.py`` arithmetic.

    :param det: float64 ``(P, 4)`` detected boxes ``x_min, y_min, x_max, y_max`` (pixels).
    :param gt: float64 ``(P, 4)`` ground-truth boxes, paired row by row with ``det``.
    :param boundary: 1.0 to count boxes inclusive of their last pixel (``include_boundaries``), else 0.0.
    :param method: ``iou`` (intersection over union) or ``ioa`` (intersection over the detection's area).
    :returns: float64 ``(P,)`` overlaps as a fraction; 0 where the denominator is 0.
    """
    inter = _intersections(det, gt, boundary)
    if method == "ioa":
        denominator = _areas(det, boundary)
    else:
        denominator = _areas(det, boundary) + _areas(gt, boundary) - inter
    return np.divide(inter, denominator, out=np.zeros_like(inter), where=denominator != 0)


def _segments(counts: np.ndarray) -> np.ndarray:
    """Start offsets of consecutive segments of the given (positive) lengths."""
    return np.cumsum(counts) - counts


# --- map (VOC) ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _MapOptions:
    overlap_threshold: float = 0.5
    ignore_difficult: bool = True
    include_boundaries: bool = True
    distinct_conf: bool = False
    allow_multiple: bool = False
    method: str = "iou"
    use_filtered_tp: bool = False
    integral: str = "max"


def average_precision(precision: np.ndarray, recall: np.ndarray, integral: str) -> float:
    """Area under a precision/recall curve, Accuracy Checker ``average_precision`` semantics.

    :param precision: float64 ``(N,)`` precision at each detection count, fractions.
    :param recall: float64 ``(N,)`` recall at the same points, non-decreasing fractions.
    :param integral: ``max`` (VOC2010+: all points under the monotone precision envelope, with sentinel
        points (0, 0) and (1, 0)) or ``11point`` (VOC2007: mean of the best precision at recall >= 0,
        0.1, ..., 1).
    :returns: the AP as a fraction.
    """
    if integral == "11point":
        result = 0.
        for point in _VOC07_POINTS:
            reached = recall >= point
            result = result + (np.max(precision[reached]) if reached.any() else 0) / 11.
        return float(result)
    rec = np.concatenate(([0.], recall, [1.]))
    prec = np.concatenate(([0.], precision, [0.]))
    prec = np.maximum.accumulate(prec[::-1])[::-1]
    change = np.flatnonzero(rec[1:] != rec[:-1])
    return float(np.sum((rec[change + 1] - rec[change]) * prec[change + 1]))


def _map_sequential(ov: np.ndarray, gt_difficult: np.ndarray, det_difficult: bool, used: np.ndarray,
                    opts: _MapOptions) -> tuple[int, int]:
    """One detection against its image's boxes of the class, in score order (the general case, used
    when several boxes share the best overlap). ``used`` (bool, per box) is updated in place.

    :returns: ``(tp, fp)`` of the detection, each 0 or 1.
    """
    not_ignored = ov[~gt_difficult]
    best = not_ignored.max() if not_ignored.size else -np.inf
    if best < opts.overlap_threshold and gt_difficult.any():
        best = ov[gt_difficult].max()
    penalise = int(not det_difficult)
    if best < opts.overlap_threshold:
        return 0, penalise
    hit = ov == best
    if not gt_difficult[hit].any():
        if used[hit].any():
            return 0, penalise
        if opts.use_filtered_tp or not det_difficult:
            used[hit] = True
            return 1, 0
        return 0, 0
    if opts.allow_multiple:
        return 0, 0
    was_used = used[hit].any()
    used[hit] = True
    return 0, penalise if was_used else 0


def _map_one_class(dets: _Boxes, gts: _Boxes, n_images: int, label: int, opts: _MapOptions) -> float:
    """AP of one class over the given images (NaN when the class has no detection)."""
    dsel = np.flatnonzero(dets.labels == label)
    if not dsel.size:
        return math.nan
    conf = dets.scores[dsel]
    order = np.argsort(-conf)  # Accuracy Checker's (default, unstable) sort: ties resolved like there
    dsel, conf = dsel[order], conf[order]
    nd = dsel.size
    d_img, d_box = dets.img[dsel], dets.boxes[dsel]
    d_diff = dets.difficult[dsel] if opts.ignore_difficult else np.zeros(nd, bool)

    gsel = np.flatnonzero(gts.labels == label)
    g_img, g_box = gts.img[gsel], gts.boxes[gsel]
    g_diff = gts.difficult[gsel] if opts.ignore_difficult else np.zeros(gsel.size, bool)
    n_gt = int(gsel.size - np.count_nonzero(g_diff))
    g_count = np.bincount(g_img, minlength=n_images)
    g_start = _segments(g_count)

    tp = np.zeros(nd, np.int64)
    fp = np.zeros(nd, np.int64)
    cnt = g_count[d_img]
    fp[cnt == 0] = 1  # no box of the class in the image: a false positive, even when difficult
    di = np.flatnonzero(cnt)
    if di.size:
        c = cnt[di]
        seg = _segments(c)
        n_pairs = int(c.sum())
        pair_det = np.repeat(di, c)
        pair_gt = np.repeat(g_start[d_img[di]], c) + (np.arange(n_pairs) - np.repeat(seg, c))
        boundary = 1.0 if opts.include_boundaries else 0.0
        ov = pair_overlap(d_box[pair_det], g_box[pair_gt], boundary, opts.method)
        p_diff = g_diff[pair_gt]
        if opts.ignore_difficult and opts.allow_multiple and p_diff.any():
            ov[p_diff] = pair_overlap(d_box[pair_det[p_diff]], g_box[pair_gt[p_diff]], boundary, "ioa")
        non_max = np.maximum.reduceat(np.where(p_diff, -np.inf, ov), seg)
        ign_max = np.maximum.reduceat(np.where(p_diff, ov, -np.inf), seg)
        has_ign = np.logical_or.reduceat(p_diff, seg)
        best = np.where((non_max < opts.overlap_threshold) & has_ign, ign_max, non_max)
        at_best = ov == np.repeat(best, c)
        n_best = np.add.reduceat(at_best.astype(np.int64), seg)
        target = pair_gt[np.maximum.reduceat(np.where(at_best, np.arange(n_pairs), -1), seg)]
        below = best < opts.overlap_threshold
        fp[di[below]] = ~d_diff[di[below]]
        # several boxes at the best overlap (or a NaN overlap): resolve those images one by one
        tied_images = np.unique(d_img[di[~below & (n_best != 1)]])
        in_tied = np.isin(d_img[di], tied_images) if tied_images.size else np.zeros(di.size, bool)
        matched = ~below & ~in_tied
        # dets are in score order, so the first occurrence of a target is the earliest detection on it
        md, mt = di[matched], target[matched]
        t_diff = g_diff[mt]
        if (~t_diff).any():
            rd, rt = md[~t_diff], mt[~t_diff]
            eligible = opts.use_filtered_tp | ~d_diff[rd]
            first = np.full(gsel.size, nd, np.int64)
            targets, at = np.unique(rt[eligible], return_index=True)
            first[targets] = rd[eligible][at]
            tp[rd] = eligible & (rd == first[rt])
            fp[rd] = (rd > first[rt]) & ~d_diff[rd]
        if t_diff.any() and not opts.allow_multiple:
            rd, rt = md[t_diff], mt[t_diff]
            first = np.full(gsel.size, nd, np.int64)
            targets, at = np.unique(rt, return_index=True)
            first[targets] = rd[at]
            fp[rd] = (rd > first[rt]) & ~d_diff[rd]
        for image in tied_images.tolist():
            used = np.zeros(int(g_count[image]), bool)
            lo, hi = g_start[image], g_start[image] + g_count[image]
            for k in np.flatnonzero(in_tied & (d_img[di] == image)).tolist():
                row = ov[seg[k]:seg[k] + c[k]]
                tp[di[k]], fp[di[k]] = _map_sequential(row, g_diff[lo:hi], bool(d_diff[di[k]]), used, opts)

    if opts.distinct_conf:
        keep = np.concatenate((np.flatnonzero(np.diff(conf)), [nd - 1]))
    else:
        keep = np.arange(nd)
    tp_cum, fp_cum = np.cumsum(tp)[keep], np.cumsum(fp)[keep]
    precision = tp_cum / np.maximum(tp_cum + fp_cum, _EPS)
    recall = tp_cum / np.maximum(n_gt, _EPS)
    return average_precision(precision, recall, opts.integral)


def map_vector(predictions: Sequence[DetectionPrediction], annotations: Sequence[DetectionAnnotation],
               classes: np.ndarray, opts: _MapOptions) -> np.ndarray:
    """Per-class VOC AP over the given images (Accuracy Checker ``DetectionMAP._calculate_map``).

    :param predictions: one prediction per image, boxes in the annotation's pixels.
    :param annotations: the images' ground truth, in the same order.
    :param classes: int64 ``(C,)`` class ids to score.
    :returns: float64 ``(C,)`` AP fractions; NaN for classes without any detection.
    """
    dets = _flatten(predictions, with_scores=True)
    gts = _flatten(annotations, with_scores=False)
    present = set(np.unique(dets.labels).tolist())
    out = np.full(classes.size, np.nan)
    for ci, label in enumerate(classes.tolist()):
        if label in present:
            out[ci] = _map_one_class(dets, gts, len(annotations), label, opts)
    return out


@register_metric("map", keys=COMMON_KEYS + (
    "overlap_threshold", "ignore_difficult", "include_boundaries", "distinct_conf",
    "allow_multiple_matches_per_ignored", "overlap_method", "use_filtered_tp", "label_map", "integral"))
class DetectionMAP(ACMetric):
    """VOC mean average precision, Accuracy Checker 2023.3 ``metrics/detection.py`` ``DetectionMAP``.

    A detection matches the box of its class with the highest overlap in its image (``iou``, or ``ioa``
    = intersection over the detection's area) if that overlap reaches ``overlap_threshold``; detections
    are taken in descending score over the whole dataset (ties in NumPy's default ``argsort`` order, as
    there) and a box matches once; a later detection whose best box is taken is a false positive (it does
    not fall back to its second-best box). Difficult boxes (with ``ignore_difficult``) are not counted; the
    first detection on one is neither a true nor a false positive, later ones are false positives (with
    ``allow_multiple_matches_per_ignored`` difficult boxes are matched by IoA and absorb any number of
    detections). Difficult detections (``filter`` marks) are not penalised and are true positives only
    with ``use_filtered_tp``; a detection in an image without any box of its class is a false positive
    even when difficult. ``distinct_conf`` keeps one precision/recall point per distinct score. AP uses
    recall = true positives / counted boxes and precision = true positives / detections so far
    (fractions), integrated by ``integral`` (:func:`average_precision`).
    """

    annotation_kind = "detection"

    def __init__(self, params: Mapping, ctx: Context):
        super().__init__(params, ctx)
        _check_common(params, ctx, threshold_is_reference=True)
        self.options = _MapOptions(
            overlap_threshold=read_number(params, "overlap_threshold", 0.5, ctx, low=0.0, high=1.0),
            ignore_difficult=read_bool(params, "ignore_difficult", True, ctx),
            include_boundaries=read_bool(params, "include_boundaries", True, ctx),
            distinct_conf=read_bool(params, "distinct_conf", False, ctx),
            allow_multiple=read_bool(params, "allow_multiple_matches_per_ignored", False, ctx),
            method=read_choice(params, "overlap_method", "iou", ("iou", "ioa"), ctx),
            use_filtered_tp=read_bool(params, "use_filtered_tp", False, ctx),
            integral=read_choice(params, "integral", "max", ("max", "11point"), ctx),
        )
        label_map = params.get("label_map", "label_map")
        if label_map != "label_map":
            ctx.add("label_map", f"{label_map!r} is not available: the dataset meta has only its label "
                                 "map; expected label_map")
        self.dataset_meta = ctx.dataset_meta

    def per_image_vector(self, prediction: DetectionPrediction, annotation: DetectionAnnotation) -> np.ndarray:
        """Accuracy Checker's ``update`` for one image: float64 ``(C,)`` per-class AP (NaN for classes
        without a detection in the image), classes in label-map order.

        :raises EngineError, DatasetError: when the records are not detection records.
        """
        _check_records(self.name, [prediction], [annotation])
        classes = _scored_classes(self.dataset_meta, [prediction], [annotation])
        return map_vector([prediction], [annotation], classes, self.options)

    def per_sample(self, prediction: DetectionPrediction, annotation: DetectionAnnotation) -> float:
        """NaN-mean of :meth:`per_image_vector`, or the no-information rule of the module docstring."""
        vector = self.per_image_vector(prediction, annotation)
        if np.isnan(vector).all():
            classes = _scored_classes(self.dataset_meta, [prediction], [annotation])
            counted = np.isin(annotation.labels, classes)
            if self.options.ignore_difficult:
                counted &= ~annotation.difficult
            return 0.0 if counted.any() else 1.0
        return nanmean(vector)

    def evaluate_vector(self, predictions: Sequence, annotations: Sequence) -> np.ndarray:
        """Per-class AP over the dataset, float64 ``(C,)``, NaN for classes never detected.

        :raises EngineError, DatasetError: when the records are not paired detection records.
        """
        _check_records(self.name, predictions, annotations)
        classes = _scored_classes(self.dataset_meta, predictions, annotations)
        return map_vector(predictions, annotations, classes, self.options)

    def evaluate(self, predictions: Sequence, annotations: Sequence) -> float:
        """mAP: the mean of :meth:`evaluate_vector` over non-NaN classes (0.0 when all are NaN)."""
        vector = self.evaluate_vector(predictions, annotations)
        vector = vector[~np.isnan(vector)]
        return float(np.mean(vector)) if vector.size else 0.0


# --- coco_precision (Accuracy Checker's own COCO AP) ----------------------------------------------

def _mask_pair_iou(dets: _Boxes, gts: _Boxes, pair_det: np.ndarray, pair_gt: np.ndarray,
                   det_rows: np.ndarray, gt_rows: np.ndarray) -> np.ndarray:
    """pycocotools mask IoU of (det, gt) pairs; ``det_rows``/``gt_rows`` map pair indices to the flat
    records. Computed per run of pairs sharing one detection (crowd boxes: intersection over the
    detection's area, as pycocotools)."""
    from pycocotools import mask as mask_utils

    out = np.zeros(pair_det.size)
    if not pair_det.size:
        return out
    starts = np.flatnonzero(np.r_[True, pair_det[1:] != pair_det[:-1]])
    ends = np.r_[starts[1:], pair_det.size]
    for s, e in zip(starts.tolist(), ends.tolist()):
        det_mask = dets.masks[det_rows[pair_det[s]]]
        rows = gt_rows[pair_gt[s:e]]
        gt_masks = [gts.masks[r] for r in rows.tolist()]
        iou = mask_utils.iou([det_mask], gt_masks, gts.crowd[rows].astype(np.uint8).tolist())
        out[s:e] = np.asarray(iou, dtype=np.float64).reshape(-1)
    return out


def coco_vector(predictions: Sequence[DetectionPrediction], annotations: Sequence[DetectionAnnotation],
                classes: np.ndarray, max_detections: int, thresholds: np.ndarray, use_masks: bool = False,
                metric: str = "coco_precision") -> np.ndarray:
    """Per-class AP of Accuracy Checker's ``coco_precision`` (``metrics/coco_metrics.py``
    ``MSCOCOAveragePrecision``: ``update`` per image, then ``compute_precision_recall``).

    Per image and class the detections are sorted by score (stable) and cut at ``max_detections``;
    ground truth is ordered not-ignored first (ignored = difficult or crowd). At each threshold every
    detection, in order, takes the available box with the highest IoU >= threshold (the last such box
    on equal IoU; ignored boxes only when no counted box qualifies); crowd boxes stay available, other
    boxes stay available while only the image's top detection has matched them (Accuracy Checker stores
    the matching detection's index and tests it for > 0). Box IoU has no +1 pixel and is rounded to
    float32; mask IoU (``use_masks``) is pycocotools' float64. Detections on ignored boxes and difficult
    detections are ignored. Precision is interpolated at 101 recall points and averaged over points and
    thresholds.

    :param thresholds: float64 ``(T,)`` IoU thresholds.
    :returns: float64 ``(C,)`` AP fractions; NaN for classes without counted ground truth.
    :raises EngineError, DatasetError: with ``use_masks``, when masks are missing or malformed
        (:func:`_validate_masks`).
    """
    if use_masks:
        _validate_masks(metric, predictions, annotations)
    dets = _flatten(predictions, with_scores=True, with_masks=use_masks)
    gts = _flatten(annotations, with_scores=False, with_masks=use_masks)
    n_classes = classes.size
    out = np.full(n_classes, np.nan)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    n_thr = thresholds.size

    # ground truth of scored classes, by (image, class, ignored) keeping record order
    g_cls = _class_index(gts.labels, classes)
    g_rows = np.flatnonzero(g_cls >= 0)
    g_ign_all = gts.difficult[g_rows] | gts.crowd[g_rows]
    g_order = np.lexsort((g_ign_all, g_cls[g_rows], gts.img[g_rows]))
    g_rows = g_rows[g_order]
    g_ign = g_ign_all[g_order]
    g_crowd = gts.crowd[g_rows]
    g_key = gts.img[g_rows] * n_classes + g_cls[g_rows]
    npig = np.bincount(g_cls[g_rows][~g_ign], minlength=n_classes)

    # detections of scored classes, by (image, class, score desc) keeping record order on ties
    d_cls = _class_index(dets.labels, classes)
    d_rows = np.flatnonzero(d_cls >= 0)
    d_order = np.lexsort((-dets.scores[d_rows], d_cls[d_rows], dets.img[d_rows]))
    d_rows = d_rows[d_order]
    d_key = dets.img[d_rows] * n_classes + d_cls[d_rows]
    new_group = np.r_[True, d_key[1:] != d_key[:-1]] if d_rows.size else np.zeros(0, bool)
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(d_rows.size), 0)) if d_rows.size \
        else np.zeros(0, np.int64)
    rank = np.arange(d_rows.size) - group_start
    keep = rank < max_detections
    d_rows, d_key, rank = d_rows[keep], d_key[keep], rank[keep]
    nd = d_rows.size

    dt_matched = np.zeros((n_thr, nd), bool)
    dt_ignored = np.zeros((n_thr, nd), bool)
    if nd and g_rows.size:
        lo = np.searchsorted(g_key, d_key, "left")
        cnt = np.searchsorted(g_key, d_key, "right") - lo
        has = np.flatnonzero(cnt)
        c = cnt[has]
        n_pairs = int(c.sum())
        pair_det = np.repeat(has, c)
        pair_gt = np.repeat(lo[has], c) + (np.arange(n_pairs) - np.repeat(_segments(c), c))
        if use_masks:
            iou = _mask_pair_iou(dets, gts, pair_det, pair_gt, d_rows, g_rows)
        else:
            iou = pair_overlap(dets.boxes[d_rows[pair_det]], gts.boxes[g_rows[pair_gt]], 0.0)
            iou = iou.astype(np.float32).astype(np.float64)
        t_eff = np.minimum(thresholds, 1 - 1e-10)[:, None]
        unavailable = np.zeros((n_thr, g_rows.size), bool)
        # process detections rank by rank; within a rank, all (image, class) groups at once
        by_rank = np.argsort(rank[pair_det], kind="stable")
        pair_rank = rank[pair_det][by_rank]
        bounds = np.searchsorted(pair_rank, np.arange(int(rank.max()) + 2 if rank.size else 1))
        for k in range(bounds.size - 1):
            sel = by_rank[bounds[k]:bounds[k + 1]]
            if not sel.size:
                continue
            pd, pg, pio = pair_det[sel], pair_gt[sel], iou[sel]
            p_ign = g_ign[pg]
            seg = np.flatnonzero(np.r_[True, pd[1:] != pd[:-1]])
            seg_len = np.diff(np.r_[seg, pd.size])
            ok = ~unavailable[:, pg] & (pio[None, :] >= t_eff)
            index = np.arange(pd.size)
            chosen = np.full((n_thr, seg.size), -1, np.int64)
            for ignored in (False, True):
                cand = ok & (p_ign == ignored)[None, :]
                best = np.maximum.reduceat(np.where(cand, pio[None, :], -np.inf), seg, axis=1)
                at = cand & (pio[None, :] == np.repeat(best, seg_len, axis=1))
                last = np.maximum.reduceat(np.where(at, index[None, :], -1), seg, axis=1)
                chosen = np.where(chosen >= 0, chosen, last)
            hit = chosen >= 0
            det_of_seg = np.broadcast_to(pd[seg][None, :], chosen.shape)
            ti, si = np.nonzero(hit)
            gt_hit = pg[chosen[ti, si]]
            dt_matched[ti, det_of_seg[ti, si]] = True
            dt_ignored[ti, det_of_seg[ti, si]] = g_ign[gt_hit]
            if k > 0:
                lock = ~g_crowd[gt_hit]
                unavailable[ti[lock], gt_hit[lock]] = True
    dt_ignored |= dets.difficult[d_rows][None, :]

    d_cls_kept = d_cls[d_rows]
    d_img_kept = dets.img[d_rows]
    d_score_kept = dets.scores[d_rows]
    for ci in np.flatnonzero(npig).tolist():
        sel = np.flatnonzero(d_cls_kept == ci)
        sel = sel[np.lexsort((rank[sel], d_img_kept[sel], -d_score_kept[sel]))]
        if not sel.size:
            out[ci] = 0.0
            continue
        m, ig = dt_matched[:, sel], dt_ignored[:, sel]
        tp = np.cumsum(m & ~ig, axis=1).astype(float)
        fp = np.cumsum(~m & ~ig, axis=1).astype(float)
        rc = tp / npig[ci]
        pr = tp / (fp + tp + np.spacing(1))
        pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
        q = np.zeros((n_thr, _RECALL_POINTS.size))
        for t in range(n_thr):
            at = np.searchsorted(rc[t], _RECALL_POINTS, side="left")
            inside = at < sel.size
            q[t, inside] = pr[t, at[inside]]
        flat = q[q > -1]
        out[ci] = float(np.mean(flat)) if flat.size else 0.0
    return out


def _counted_coco(annotation: DetectionAnnotation, classes: np.ndarray) -> bool:
    return bool((np.isin(annotation.labels, classes) & ~annotation.difficult & ~annotation.crowd).any())


class _CocoPerImage:
    """Per-image ``coco_precision`` (or ``coco_segm_precision`` with masks) values."""

    def __init__(self, meta_owner, max_detections: int, thresholds: np.ndarray, use_masks: bool, name: str):
        self.owner = meta_owner
        self.max_detections = max_detections
        self.thresholds = thresholds
        self.use_masks = use_masks
        self.name = name

    def vector(self, prediction, annotation) -> np.ndarray:
        _check_records(self.name, [prediction], [annotation])
        classes = _scored_classes(self.owner.dataset_meta, [prediction], [annotation])
        return coco_vector([prediction], [annotation], classes, self.max_detections, self.thresholds,
                           self.use_masks, self.name)

    def value(self, prediction, annotation) -> float:
        vector = self.vector(prediction, annotation)
        if np.isnan(vector).all():
            classes = _scored_classes(self.owner.dataset_meta, [prediction], [annotation])
            return 0.0 if _counted_coco(annotation, classes) else 1.0
        return nanmean(vector)


@register_metric("coco_precision", keys=COMMON_KEYS + ("max_detections",))
class CocoPrecision(ACMetric):
    """Accuracy Checker 2023.3's own COCO average precision (``metrics/coco_metrics.py``
    ``MSCOCOAveragePrecision``; see :func:`coco_vector`). No area ranges, no +1 pixel, no crowd IoA.

    :ivar max_detections: detections kept per image and class (``max_detections``, default 20).
    :ivar thresholds: float64 ``(T,)`` IoU thresholds (``threshold``, default .50:.05:.95).
    """

    annotation_kind = "detection"

    def __init__(self, params: Mapping, ctx: Context):
        super().__init__(params, ctx)
        _check_common(params, ctx, threshold_is_reference=False)
        self.max_detections = read_number(params, "max_detections", 20, ctx, low=0, integer=True)
        self.thresholds = _read_iou_thresholds(params, ctx)
        self.dataset_meta = ctx.dataset_meta
        self._per_image = _CocoPerImage(self, self.max_detections, self.thresholds, False, self.name)

    def per_image_vector(self, prediction: DetectionPrediction, annotation: DetectionAnnotation) -> np.ndarray:
        """Accuracy Checker's ``update`` for one image: float64 ``(C,)`` AP per class (NaN for classes
        without counted ground truth in the image).

        :raises EngineError, DatasetError: when the records are not detection records.
        """
        return self._per_image.vector(prediction, annotation)

    def per_sample(self, prediction: DetectionPrediction, annotation: DetectionAnnotation) -> float:
        """NaN-mean of :meth:`per_image_vector`, or the no-information rule of the module docstring."""
        return self._per_image.value(prediction, annotation)

    def evaluate_vector(self, predictions: Sequence, annotations: Sequence) -> np.ndarray:
        """Per-class AP over the dataset, float64 ``(C,)``, NaN for classes without counted ground truth.

        :raises EngineError, DatasetError: when the records are not paired detection records.
        """
        _check_records(self.name, predictions, annotations)
        classes = _scored_classes(self.dataset_meta, predictions, annotations)
        return coco_vector(predictions, annotations, classes, self.max_detections, self.thresholds,
                           False, self.name)

    def evaluate(self, predictions: Sequence, annotations: Sequence) -> float:
        """The mean of :meth:`evaluate_vector` over non-NaN classes (NaN when all are NaN)."""
        return nanmean(self.evaluate_vector(predictions, annotations))


# --- coco_orig_* (pycocotools) --------------------------------------------------------------------

def coco_image_id(identifier: str) -> str:
    """Accuracy Checker's synthesised COCO image id: the file name's part before ``.jpg``, after its
    last ``_`` (``COCO_val2014_000000000042.jpg`` -> ``000000000042``). A string, as there."""
    name = Path(str(identifier)).name
    return name.split(".jpg")[0].split("_")[-1]


def _rle_for_json(rle: Mapping) -> dict:
    counts = rle["counts"]
    return {"size": list(rle["size"]), "counts": counts.decode("utf-8") if isinstance(counts, bytes) else counts}


@contextlib.contextmanager
def _quiet():
    with contextlib.redirect_stdout(io.StringIO()):
        yield


@register_metric("coco_orig_precision", keys=COMMON_KEYS + ("include_boundaries",))
class CocoOrigPrecision(ACMetric):
    """COCO AP@[.5:.95] (``stats[0]``: all areas, 100 detections per image) by pycocotools ``COCOeval``,
    Accuracy Checker 2023.3 ``metrics/coco_orig_metrics.py`` ``MSCOCOorigAveragePrecision``.

    The ground truth is synthesised from the annotations (see the module docstring) unless
    :meth:`use_original_annotation` names the original COCO JSON.

    :ivar thresholds: float64 ``(T,)`` IoU thresholds given to ``COCOeval.params.iouThrs``.
    :ivar box_side_delta: 1 with ``include_boundaries`` (pixels added to box width and height), else 0.
    """

    annotation_kind = "detection"
    iou_type = "bbox"
    proxy_uses_masks = False

    def __init__(self, params: Mapping, ctx: Context):
        super().__init__(params, ctx)
        _check_common(params, ctx, threshold_is_reference=False)
        self.thresholds = _read_iou_thresholds(params, ctx)
        self.box_side_delta = int(read_bool(params, "include_boundaries", True, ctx))
        self.dataset_meta = ctx.dataset_meta
        self.original_annotation_file: Path | None = None
        self.has_background = False
        self.use_full_label_map = False
        self._original_cache = None
        # POT's per-sample proxy: coco_precision (coco_segm_precision) at its defaults
        self._proxy = _CocoPerImage(self, 20, COCO_IOU_RANGE.copy(), self.proxy_uses_masks, self.name)

    def use_original_annotation(self, annotation_file: str | os.PathLike, has_background: bool = False,
                                use_full_label_map: bool = False) -> None:
        """Score against the original COCO instances JSON (``annotation_conversion.annotation_file`` of
        ``mscoco_detection``/``mscoco_mask_rcnn``), with that converter's ``has_background`` and
        ``use_full_label_map``. Accuracy Checker does this when the file is a ``.json`` and the dataset
        has no ``subsample_size``; the engine decides. All images of the JSON are scored, so images not
        evaluated count as misses, as in Accuracy Checker."""
        self.original_annotation_file = Path(annotation_file)
        self.has_background = bool(has_background)
        self.use_full_label_map = bool(use_full_label_map)
        self._original_cache = None

    def use_proxy(self, metric: "CocoPrecision") -> None:
        """Take the per-sample values from ``metric`` (its ``max_detections`` and thresholds), as
        POT 2023.3 did when the dataset already had a metric named ``coco_precision`` (box proxy
        only: the segm type keeps its mask proxy)."""
        if not self.proxy_uses_masks:
            self._proxy = _CocoPerImage(self, metric.max_detections, metric.thresholds, False, self.name)

    def per_sample(self, prediction: DetectionPrediction, annotation: DetectionAnnotation) -> float:
        """POT's proxy: the per-image ``coco_precision`` value (``coco_segm_precision`` for the segm
        type), at its defaults or those of the dataset's ``coco_precision`` metric
        (:meth:`use_proxy`), with the no-information rule of the module docstring."""
        return self._proxy.value(prediction, annotation)

    def per_image_vector(self, prediction: DetectionPrediction, annotation: DetectionAnnotation) -> np.ndarray:
        """The proxy's per-class vector for one image (see :meth:`per_sample`)."""
        return self._proxy.vector(prediction, annotation)

    # -- record conversion
    def _geometry(self, record, k: int) -> dict:
        x0, y0, x1, y1 = (float(v) for v in record.boxes[k])
        w, h = x1 - x0 + self.box_side_delta, y1 - y0 + self.box_side_delta
        return {"bbox": [x0, y0, w, h], "area": w * h}

    def _gt_geometry(self, record, k: int) -> dict:
        return self._geometry(record, k)

    def _categories(self, predictions, annotations) -> list[dict]:
        classes = _scored_classes(self.dataset_meta, predictions, annotations)
        names = self.dataset_meta.label_map
        return [{"id": int(c), "name": str(names.get(c, c)) if names else str(c)} for c in classes.tolist()]

    def _synthesised_gt(self, predictions, annotations):
        from pycocotools.coco import COCO

        images, anns = {}, []
        for record in annotations:
            image_id = coco_image_id(record.identifier)
            for k in range(len(record.labels)):
                entry = {"id": len(anns) + 1, "image_id": image_id, "category_id": int(record.labels[k]),
                         "iscrowd": int(record.crowd[k])}
                entry.update(self._gt_geometry(record, k))
                anns.append(entry)
            h, w = record.image_size if record.image_size else (0, 0)
            images[image_id] = {"id": image_id, "file_name": Path(str(record.identifier)).name,
                                "width": int(w), "height": int(h)}
        coco = COCO()
        coco.dataset = {"info": {}, "images": list(images.values()), "annotations": anns, "licenses": [],
                        "categories": self._categories(predictions, annotations)}
        with _quiet():
            coco.createIndex()
        return coco, coco_image_id, {int(c["id"]): int(c["id"]) for c in coco.dataset["categories"]}, False

    def _original_gt(self):
        if self._original_cache is not None:
            return self._original_cache
        from pycocotools.coco import COCO

        path = self.original_annotation_file
        try:
            with _quiet():
                coco = COCO(str(path))
        except (OSError, ValueError, KeyError, AssertionError) as err:
            raise DatasetError(f"{path}: cannot read the COCO annotation JSON ({err}); expected a COCO "
                               "instances file") from None
        name_to_cat = {v["name"]: k for k, v in coco.cats.items()}
        meta = self.dataset_meta
        background = meta.background_label
        if self.has_background and background is not None and background in meta.label_map:
            name_to_cat.setdefault(meta.label_map[background], background)
        if self.use_full_label_map:
            shift = 0 if self.has_background else 1
            label_to_cat = {i: i + shift for i in range(0, 90 - shift + 1)}
        else:
            missing = [v for v in meta.label_map.values() if v not in name_to_cat]
            if missing:
                raise DatasetError(f"{path}: the label map's classes {missing[:5]} are not categories of the "
                                   "COCO file; expected the categories the annotation was converted from")
            label_to_cat = {int(k): name_to_cat[v] for k, v in meta.label_map.items()}
        by_name = {os.path.basename(v["file_name"]): v["id"] for v in coco.dataset["images"]}

        def image_id(identifier: str):
            name = Path(str(identifier)).name
            if name not in by_name:
                raise DatasetError(f"{path}: image {name} is not in the COCO file; expected the images the "
                                   "annotation was converted from")
            return by_name[name]

        self._original_cache = (coco, image_id, label_to_cat, True)
        return self._original_cache

    def _results(self, predictions, image_id, label_to_cat, skip_unknown: bool) -> list[dict]:
        results = []
        for record in predictions:
            if not len(record.labels):
                continue
            img = image_id(record.identifier)
            for k in range(len(record.labels)):
                label = int(record.labels[k])
                if label not in label_to_cat:
                    if skip_unknown:
                        continue
                    category = label
                else:
                    category = label_to_cat[label]
                entry = {"image_id": img, "score": float(record.scores[k]), "category_id": int(category)}
                entry.update(self._geometry(record, k))
                results.append(entry)
        return results

    def evaluate(self, predictions: Sequence, annotations: Sequence) -> float:
        """``stats[0]`` of pycocotools ``COCOeval``: a fraction, 0.0 when there is no detection at all,
        -1.0 when pycocotools finds no ground truth to score.

        :raises EngineError, DatasetError: for unpaired or non-detection records, missing masks (segm),
            an unreadable original JSON or an image or class it lacks.
        """
        from pycocotools.cocoeval import COCOeval

        _check_records(self.name, predictions, annotations)
        self._check_masks(predictions, annotations)
        if self.original_annotation_file is not None:
            coco, image_id, label_to_cat, skip_unknown = self._original_gt()
        else:
            coco, image_id, label_to_cat, skip_unknown = self._synthesised_gt(predictions, annotations)
        results = self._results(predictions, image_id, label_to_cat, skip_unknown)
        if not results:
            return 0.0
        with _quiet():
            detections = coco.loadRes(results)
            evaluator = COCOeval(coco, detections, iouType=self.iou_type)
            evaluator.params.iouThrs = np.asarray(self.thresholds, dtype=np.float64)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        return float(evaluator.stats[0])

    def _check_masks(self, predictions, annotations) -> None:
        pass


@register_metric("coco_orig_segm_precision", keys=COMMON_KEYS + ("include_boundaries",))
class CocoOrigSegmPrecision(CocoOrigPrecision):
    """``coco_orig_segm_precision``: pycocotools mask AP (``iouType='segm'``), Accuracy Checker 2023.3
    ``MSCOCOOrigSegmAveragePrecision``. Ground-truth area is the mask area; ``include_boundaries`` has no
    effect on masks. Per-sample values use mask IoU (Accuracy Checker's ``coco_segm_precision``)."""

    iou_type = "segm"
    proxy_uses_masks = True

    def _geometry(self, record, k: int) -> dict:
        return {"segmentation": _rle_for_json(record.masks[k])}

    def _gt_geometry(self, record, k: int) -> dict:
        from pycocotools import mask as mask_utils

        rle = _rle_for_json(record.masks[k])
        return {"segmentation": rle, "area": float(mask_utils.area(dict(rle, counts=rle["counts"].encode())))}

    def _check_masks(self, predictions, annotations) -> None:
        _validate_masks(self.name, predictions, annotations)
