"""MTCNN face detection (Zhang et al. 2016, "Joint Face Detection and Alignment using Multi-task Cascaded
Convolutional Networks") as a custom POT ``Engine`` over a cascade of three models.

The cascade, with facenet-pytorch's parameters (minimum face 20 px, pyramid factor 0.709, score
thresholds 0.6 / 0.7 / 0.7):

1. P-Net over an image pyramid (scales ``12/20 * 0.709^k`` while the short side stays >= 12 px): a
   12x12 window with stride 2 gives a face probability and a box regression per cell; cells above
   0.6 become boxes, NMS 0.5 per scale, NMS 0.7 over all scales, box regression, boxes made square;
2. R-Net on 24x24 crops of those boxes (one batch per image): score > 0.7, NMS 0.7, regression, square;
3. O-Net on 48x48 crops: score > 0.7, regression, NMS 0.7 on the intersection over the smaller box.

The models are the IRs of ``../shared/models/mtcnn_{pnet,rnet,onet}``: they take BGR float32 0..255 in
NCHW and normalise inside, so crops are fed as read by OpenCV.

``MTCNNEngine`` implements the original POT API's engine contract for a cascade: ``set_model`` takes the
cascade ``CompressedModel`` (``model.models`` = ``[{'name': 'pnet', 'model': ov.Model}, ...]``) and
``predict(stats_layout, sampler, ...)`` runs the three stages on each image. Statistics keys name a
sub-model's tensor as ``<sub-model>_<node>`` (:func:`pot_cli.api.output_key` with ``model_name``), so
``append_stats`` records each stage's tensors from that stage's outputs only: P-Net tensors once per
pyramid level, R-Net and O-Net tensors once per image (the batch of that image's crops), as the
original sample did. When only some stages' tensors are asked for, the later stages are not run.

The same class serves the ``pot`` command: an Accuracy Checker YAML ``evaluations`` entry named
``mtcnn`` whose ``module`` is ``mtcnn_engine.MTCNNEngine`` (``configs/examples/mtcnn.yaml``) is built with
:meth:`MTCNNEngine.from_evaluation_config`.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import openvino as ov

from pot_cli.api import BatchSampler, DataLoader, Engine, Metric, append_stats, output_key, process_accumulated_stats
from pot_cli.errors import ConfigError, DatasetError

#: facenet-pytorch's MTCNN parameters
MIN_FACE = 20
FACTOR = 0.709
THRESHOLDS = (0.6, 0.7, 0.7)
STAGES = ("pnet", "rnet", "onet")
#: input side of each stage's crops (P-Net takes whole pyramid levels)
CROP_SIZES = (None, 24, 48)


# ------------------------------------------------------------------------------------------- dataset


def read_wider_annotations(path) -> list[tuple[str, np.ndarray]]:
    """Parse a WIDER FACE ground-truth text: per image a file-name line, a count line, then one
    ``x y w h [...]`` line per face (a count of 0 is followed by one dummy line).

    :param path: the annotation file.
    :return: ``[(file name, boxes)]``, boxes float32 ``(N, 4)`` ``[x1, y1, x2, y2]`` in pixels
        (``x2 = x + w``).
    :raises DatasetError: on a malformed file (names the line).
    """
    lines = [ln.strip() for ln in Path(path).read_text().splitlines()]
    out, k = [], 0
    while k < len(lines):
        if not lines[k]:
            k += 1
            continue
        name = lines[k]
        try:
            count = int(lines[k + 1])
            rows = [list(map(float, lines[k + 2 + j].split()[:4])) for j in range(max(count, 1))]
        except (IndexError, ValueError) as e:
            raise DatasetError(f"{path}:{k + 2}: expected a face count and {{count}} 'x y w h' lines after "
                               f"'{name}'") from e
        boxes = np.array(rows[:count], np.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        out.append((name, boxes))
        k += 2 + max(count, 1)
    return out


class WiderFaceLoader(DataLoader):
    """Images and face boxes of a WIDER-style annotation file.

    :param images: folder of the images (the annotation's file names are relative to it).
    :param annotation_file: WIDER FACE ground-truth text (:func:`read_wider_annotations`).
    :param subset: only the first ``subset`` images (0: all).

    Items: ``(image, {'boxes': (N, 4) float32 [x1, y1, x2, y2]})``, the image BGR uint8 ``(H, W, 3)``.
    """

    def __init__(self, images, annotation_file, subset: int = 0):
        super().__init__({})
        self.images = Path(images)
        self.items = read_wider_annotations(annotation_file)[:subset or None]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        name, boxes = self.items[index]
        image = cv2.imread(str(self.images / name), cv2.IMREAD_COLOR)
        if image is None:
            raise DatasetError(f"{self.images / name}: cannot read the image")
        return image, {"boxes": boxes}


# ------------------------------------------------------------------------------------------- boxes


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, method: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression (boxes ``(N, 4)`` ``[x1, y1, x2, y2]``, inclusive pixels: +1 in
    widths, as the MTCNN reference code).

    :param method: ``union`` (IoU) or ``min`` (intersection over the smaller box).
    :return: indices kept, by decreasing score.
    """
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    x1, y1, x2, y2 = boxes.T
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        denom = np.minimum(area[i], area[rest]) if method == "min" else area[i] + area[rest] - inter
        order = rest[inter / denom <= threshold]
    return np.array(keep, np.int64)


def square(boxes: np.ndarray) -> np.ndarray:
    """Boxes made square around their centres (side = the longer side)."""
    out = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    out[:, 2:4] = out[:, :2] + side[:, None]
    return out


def regress(boxes: np.ndarray, reg: np.ndarray, plus_one: bool = True) -> np.ndarray:
    """Apply box regression ``reg`` ``(N, 4)`` (offsets as fractions of the box size)."""
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0] + (1 if plus_one else 0)
    h = boxes[:, 3] - boxes[:, 1] + (1 if plus_one else 0)
    out[:, :4] = boxes[:, :4] + reg * np.stack([w, h, w, h], axis=1)
    return out


def crops(image: np.ndarray, boxes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``size`` x ``size`` crops of ``boxes`` (clipped to the image), NCHW float32 BGR 0..255.

    :return: ``(batch (K, 3, size, size), indices of the boxes cropped)``.
    """
    h, w = image.shape[:2]
    b = np.trunc(boxes[:, :4]).astype(np.int64)
    x1, y1 = np.maximum(b[:, 0], 1), np.maximum(b[:, 1], 1)
    x2, y2 = np.minimum(b[:, 2], w), np.minimum(b[:, 3], h)
    out, kept = [], []
    for k in range(len(b)):
        if x2[k] > x1[k] - 1 and y2[k] > y1[k] - 1:
            patch = image[y1[k] - 1:y2[k], x1[k] - 1:x2[k]]
            out.append(cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA).transpose(2, 0, 1))
            kept.append(k)
    if not out:
        return np.zeros((0, 3, size, size), np.float32), np.zeros(0, np.int64)
    return np.stack(out).astype(np.float32), np.array(kept, np.int64)


def pyramid_scales(height: int, width: int, min_face: float = MIN_FACE, factor: float = FACTOR) -> list[float]:
    """Scales of the image pyramid: ``12 / min_face * factor^k`` while the short side stays >= 12 px."""
    scale, short = 12.0 / min_face, min(height, width) * 12.0 / min_face
    scales = []
    while short >= 12:
        scales.append(scale)
        scale *= factor
        short *= factor
    return scales


def pnet_boxes(reg: np.ndarray, prob: np.ndarray, scale: float, threshold: float) -> np.ndarray:
    """Boxes of the P-Net cells whose face probability is >= ``threshold``.

    :param reg: ``(4, h, w)`` box regression; :param prob: ``(h, w)`` face probability.
    :return: ``(N, 9)``: ``x1, y1, x2, y2`` in image pixels, score, 4 regression values.
    """
    ys, xs = np.nonzero(prob >= threshold)
    cells = np.stack([xs, ys], axis=1).astype(np.float32)
    q1 = np.floor((2 * cells + 1) / scale)
    q2 = np.floor((2 * cells + 12) / scale)
    return np.concatenate([q1, q2, prob[ys, xs][:, None], reg[:, ys, xs].T], axis=1).astype(np.float32)


# ------------------------------------------------------------------------------------------- metric


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one ``[x1, y1, x2, y2]`` box with ``(N, 4)`` boxes (continuous coordinates)."""
    w = np.maximum(0.0, np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]))
    h = np.maximum(0.0, np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]))
    inter = w * h
    union = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    return inter / np.maximum(union, 1e-9)


def detection_scores(images: list[tuple[np.ndarray, np.ndarray]], iou_threshold: float = 0.5) -> dict[str, float]:
    """Recall, precision and average precision of face detections at one IoU threshold.

    Detections of every image are taken by decreasing score; each one matches the unmatched ground
    truth box of its image with the highest IoU, if that IoU is >= ``iou_threshold`` (greedy
    matching, as the VOC devkit). AP is the area under the precision-recall curve with precision
    made monotonic (VOC 2010+ all-point interpolation).

    :param images: per image ``(detections (N, 5) [x1, y1, x2, y2, score], ground truth (M, 4))``.
    :return: ``{'recall', 'precision', 'AP'}`` in [0, 1] (recall and precision of all detections).
    """
    records, n_gt = [], 0
    for k, (det, gt) in enumerate(images):
        n_gt += len(gt)
        records += [(float(d[4]), k, d[:4]) for d in det]
    records.sort(key=lambda r: -r[0])
    matched = [np.zeros(len(gt), bool) for _, gt in images]
    tp = np.zeros(len(records))
    for j, (_, k, box) in enumerate(records):
        gt = images[k][1]
        if len(gt):
            overlaps = np.where(matched[k], -1.0, iou(box, gt))
            best = int(np.argmax(overlaps))
            if overlaps[best] >= iou_threshold:
                matched[k][best] = True
                tp[j] = 1
    if not records:
        return {"recall": 0.0, "precision": 0.0, "AP": 0.0}
    ctp = np.cumsum(tp)
    recall = ctp / max(n_gt, 1)
    precision = ctp / np.arange(1, len(records) + 1)
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    ap = float(np.sum((r[1:] - r[:-1]) * p[1:]))
    return {"recall": float(recall[-1]), "precision": float(precision[-1]), "AP": ap}


class FaceDetectionMetric(Metric):
    """Recall, precision and AP at IoU 0.5 over the images seen since :meth:`reset`
    (:func:`detection_scores`). ``update(output, target)``: ``output[0]`` the ``(N, 5)`` detections
    of one image, ``target[0]`` its annotation ``{'boxes': (M, 4)}``."""

    def __init__(self, iou_threshold: float = 0.5):
        self.iou_threshold = iou_threshold
        super().__init__()

    @property
    def avg_value(self):
        s = detection_scores(self._images, self.iou_threshold)
        return {"recall": s["recall"], "precision": s["precision"], "AP": s["AP"]}

    def update(self, output, target):
        self._images.append((np.asarray(output[0]).reshape(-1, 5), np.asarray(target[0]["boxes"]).reshape(-1, 4)))

    def reset(self):
        self._images = []

    def get_attributes(self):
        return {name: {"direction": "higher-better", "type": name} for name in ("recall", "precision", "AP")}


# ------------------------------------------------------------------------------------------- engine


class MTCNNEngine(Engine):
    """Runs the MTCNN cascade P-Net -> R-Net -> O-Net (see the module docstring).

    :param config: ``device`` (default ``CPU``), ``stages`` (sub-model names in cascade order,
        default ``['pnet', 'rnet', 'onet']``), ``min_face`` (px, default 20), ``factor`` (pyramid
        factor, default 0.709), ``thresholds`` (default ``[0.6, 0.7, 0.7]``).
    :param data_loader: items ``(BGR uint8 image (H, W, 3), annotation)`` (:class:`WiderFaceLoader`).
    :param metric: e.g. :class:`FaceDetectionMetric`; ``update([detections (N, 5)], [annotation])``.
    """

    def __init__(self, config=None, data_loader=None, metric=None):
        super().__init__(config, data_loader, metric)
        self.stages = tuple(self.config.get("stages") or STAGES)
        self.min_face = float(self.config.get("min_face") or MIN_FACE)
        self.factor = float(self.config.get("factor") or FACTOR)
        self.thresholds = tuple(self.config.get("thresholds") or THRESHOLDS)
        self._core = ov.Core()

    @classmethod
    def from_evaluation_config(cls, module_config: dict, base_dir: Path, device: str = "CPU"):
        """The engine of an Accuracy Checker ``evaluations`` entry (``configs/examples/mtcnn.yaml``):
        ``module_config.datasets[0]`` gives ``data_source`` (the images) and
        ``annotation_conversion`` (``converter: wider``, ``annotation_file``), paths relative to
        ``base_dir``; ``network_info.pnet.preprocessing`` may give the ``pyramid`` ``min_size`` and
        ``factor``; ``thresholds`` optional.

        :raises ConfigError: naming the missing or unsupported key.
        """
        datasets = module_config.get("datasets") or []
        if not datasets:
            raise ConfigError("module_config.datasets: missing; expected one dataset with data_source and "
                              "annotation_conversion")
        ds = datasets[0]
        conversion = ds.get("annotation_conversion") or {}
        if conversion.get("converter") != "wider":
            raise ConfigError(f"module_config.datasets[0].annotation_conversion.converter: "
                              f"{conversion.get('converter')!r}; expected 'wider'")
        for key, value in (("data_source", ds.get("data_source")), ("annotation_conversion.annotation_file",
                                                                      conversion.get("annotation_file"))):
            if not value:
                raise ConfigError(f"module_config.datasets[0].{key}: missing")
        images = Path(base_dir, os.path.expandvars(ds["data_source"]))
        annotation = Path(base_dir, os.path.expandvars(conversion["annotation_file"]))
        for key, path in (("data_source", images), ("annotation_conversion.annotation_file", annotation)):
            if not path.exists():
                raise ConfigError(f"module_config.datasets[0].{key}: not found: {path}")
        config = {"device": device, "thresholds": module_config.get("thresholds")}
        pnet = ((module_config.get("network_info") or {}).get("pnet") or {})
        for step in pnet.get("preprocessing") or []:
            if step.get("type") == "pyramid":
                config.update(min_face=step.get("min_size"), factor=step.get("factor"))
        return cls(config, WiderFaceLoader(images, annotation, int(ds.get("subsample_size") or 0)),
                   FaceDetectionMetric())

    # -- running the stages

    def _compile(self, name: str, stage: int, model: ov.Model):
        """``(infer request, output keys)`` of one stage; keys are those of ``model``'s own outputs
        (a clone names unnamed nodes anew, so they are read before cloning)."""
        keys = [output_key(o, name) for o in model.outputs]
        size = CROP_SIZES[stage]
        if size:  # R-Net / O-Net: a batch of crops per image, so a copy with a dynamic batch
            model = model.clone()
            model.reshape({model.inputs[0]: ov.PartialShape([-1, 3, size, size])})
        # f32: statistics and the FP32 reference must not be computed in bf16
        compiled = self._core.compile_model(model, self.device, {"INFERENCE_PRECISION_HINT": "f32"})
        return compiled.create_infer_request(), keys

    @staticmethod
    def _run(runner, data, stats, accumulated, index) -> list[np.ndarray]:
        request, keys = runner
        request.infer({0: data})
        values = [request.get_output_tensor(k).data.copy() for k in range(len(keys))]
        if stats:
            append_stats(accumulated, stats, dict(zip(keys, values)), index)
        return values

    def detect(self, image: np.ndarray, runners: dict, stats=None, accumulated=None, index: int = 0,
               last: int = 2) -> np.ndarray:
        """Faces in one BGR image: ``(N, 5)`` float32 ``[x1, y1, x2, y2, score]``.

        :param runners: ``{stage: (infer request, output keys)}``.
        :param last: the last stage to run (0, 1 or 2; earlier stages give their boxes).
        """
        p, r, o = self.stages
        h, w = image.shape[:2]
        found = []
        for scale in pyramid_scales(h, w, self.min_face, self.factor):
            size = (int(w * scale + 1), int(h * scale + 1))
            level = cv2.resize(image, size, interpolation=cv2.INTER_AREA).transpose(2, 0, 1)[None].astype(np.float32)
            reg, prob = self._run(runners[p], level, stats, accumulated, index)[:2]
            boxes = pnet_boxes(reg[0], prob[0, 1], scale, self.thresholds[0])
            found.append(boxes[nms(boxes[:, :4], boxes[:, 4], 0.5)])
        boxes = np.concatenate(found) if found else np.zeros((0, 9), np.float32)
        boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)]
        boxes = square(regress(boxes[:, :5], boxes[:, 5:9], plus_one=False))
        for k, stage in ((1, r), (2, o)):
            if k > last or not len(boxes):
                break
            batch, kept = crops(image, boxes, CROP_SIZES[k])
            if not len(kept):
                boxes = boxes[:0]
                break
            outs = self._run(runners[stage], batch, stats, accumulated, index)
            # the IRs' own outputs come first (statistics outputs follow): R-Net (box regression,
            # face probability), O-Net (box regression, landmarks, face probability)
            reg, prob = outs[0], outs[k]
            boxes = boxes[kept]
            keep = prob[:, 1] > self.thresholds[k]
            boxes = np.concatenate([boxes[keep, :4], prob[keep, 1:2]], axis=1)
            reg = reg[keep]
            if k == 1:
                pick = nms(boxes[:, :4], boxes[:, 4], 0.7)
                boxes = square(regress(boxes[pick], reg[pick]))
            else:
                boxes = regress(boxes, reg)
                boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7, "min")]
        return boxes[:, :5].astype(np.float32)

    def predict(self, stats_layout=None, sampler=None, stat_aliases=None, metric_per_sample=False,
                print_progress=False):
        """Run the cascade on ``sampler``'s images (all by default); the original's contract.

        :param stats_layout: ``{'<sub-model>_<node>': {statistic: fn}}``; only the stages up to the
            last one named there run when statistics are collected.
        :return: ``(metrics or None, statistics)``; metrics are the metric's ``avg_value`` when the
            engine has a metric and no statistics are collected.
        """
        models = {m["name"]: m["model"] for m in self._model.models}
        missing = [s for s in self.stages if s not in models]
        if missing:
            raise ConfigError(f"MTCNNEngine: the cascade has no sub-model {', '.join(missing)}; expected "
                              f"sub-models named {', '.join(self.stages)} (it has {', '.join(models)})")
        evaluate = self._metric is not None and not stats_layout
        last = 2
        if stats_layout and not evaluate:
            named = [k for k, s in enumerate(self.stages) if any(key.startswith(s + "_") for key in stats_layout)]
            last = max(named, default=2)
        runners = {s: self._compile(s, k, models[s]) for k, s in enumerate(self.stages[:last + 1])}
        sampler = sampler or BatchSampler(self.data_loader)
        accumulated: dict = {}
        if evaluate:
            self._metric.reset()
        for index in sampler.subset_indices:
            image, annotation = self.data_loader[index]
            faces = self.detect(image, runners, stats_layout, accumulated, index, last)
            if evaluate:
                self._metric.update([faces], [annotation])
        metrics = self._metric.avg_value if evaluate else None
        return metrics, process_accumulated_stats(accumulated)
