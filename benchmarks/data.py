"""Sample building shared by the NNCF quantization script and the benchmark evaluation.

Calibration samples are built the way ``pot`` feeds a model from ``--data-source``:

* images: ``cv2.imread`` (BGR), resized with ``cv2.resize`` (bilinear) straight to the model's
  ``H x W`` (no aspect-ratio preservation, no normalization: each IR carries its own mean/scale),
  float32 values 0..255, laid out NCHW or NHWC per the IR layout, batch 1; 1-channel models read
  the file as grayscale;
* ``.npz`` files: a dict ``{input_name: array}`` with the arrays as stored (int64 ``(1, T)``).

Files are taken in sorted order; the calibration subset is the first ``subset`` of them.

Evaluation inputs (``*_eval_*``) are deliberately *different* from the calibration inputs: random
square crops (fixed seed) of the photos, the labelled Fashion-MNIST validation split, and token
sequences derived from the text samples (truncated, shuffled, concatenated).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}

# Photos of /work/shared/data/images that contain text (checked visually), for the text detector.
TEXT_IMAGES = (
    "skimage_text.jpg",            # handwritten formulas
    "skimage_page.jpg",            # scanned book page
    "opencv_text_defocus.jpg",     # printed text, defocus blur
    "opencv_text_motion.jpg",      # printed text, motion blur
    "opencv_licenseplate_motion.jpg",  # licence plate, motion blur
    "opencv_LinuxLogo.jpg",        # the word "Linux" + small print
    "opencv_right.jpg",            # book covers with titles
)

CLS_ID, SEP_ID, PAD_ID = 101, 102, 0  # BERT uncased WordPiece special tokens


@dataclass(frozen=True)
class ImageInputSpec:
    """What an image model expects on its (single) input.

    :param name: input tensor name.
    :param layout: ``"NCHW"`` or ``"NHWC"``.
    :param height: H in pixels.
    :param width: W in pixels.
    :param channels: C, 1 (grayscale) or 3 (BGR).
    """

    name: str
    layout: str
    height: int
    width: int
    channels: int


def detect_image_input(model) -> ImageInputSpec:
    """Read the layout and size of a single-input image model from the IR.

    The layout comes from the IR's ``layout`` metadata when present, else from the shape
    (a 1- or 3-sized dim 1 means NCHW, a 1- or 3-sized last dim means NHWC).

    :param model: ``openvino.Model`` with one 4D input (batch may be dynamic).
    :return: the input spec.
    :raises ValueError: if the input is not a 4D image tensor with static C, H, W.
    """
    if len(model.inputs) != 1:
        raise ValueError(f"expected 1 image input, got {len(model.inputs)}")
    port = model.inputs[0]
    pshape = port.get_partial_shape()
    if pshape.rank.is_dynamic or pshape.rank.get_length() != 4:
        raise ValueError(f"expected a 4D image input, got {pshape}")
    dims = [d.get_length() if d.is_static else -1 for d in pshape]
    layout = ""
    try:
        layout_obj = port.get_node().get_layout()
        if not layout_obj.empty:
            layout = layout_obj.to_string().strip("[]").replace(",", "").upper()
    except Exception:  # noqa: BLE001 - older API / no layout
        layout = ""
    if layout not in ("NCHW", "NHWC"):
        if dims[1] in (1, 3):
            layout = "NCHW"
        elif dims[3] in (1, 3):
            layout = "NHWC"
        else:
            raise ValueError(f"cannot tell the layout of input shape {pshape}")
    if layout == "NCHW":
        c, h, w = dims[1], dims[2], dims[3]
    else:
        h, w, c = dims[1], dims[2], dims[3]
    if min(c, h, w) <= 0:
        raise ValueError(f"expected static C, H, W, got {pshape}")
    return ImageInputSpec(port.get_any_name(), layout, h, w, c)


def list_files(data_dir: Path | str, extensions: Iterable[str]) -> list[Path]:
    """Sorted files of ``data_dir`` whose suffix (lower case) is in ``extensions``."""
    exts = {e.lower() for e in extensions}
    return sorted(p for p in Path(data_dir).iterdir() if p.is_file() and p.suffix.lower() in exts)


def read_image(path: Path | str, channels: int) -> np.ndarray:
    """Read an image as uint8 ``(H, W, 3)`` BGR, or ``(H, W)`` grayscale when ``channels == 1``."""
    flag = cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR
    img = cv2.imread(str(path), flag)
    if img is None:
        raise ValueError(f"{path}: cannot be read as an image")
    return img


def image_to_input(img: np.ndarray, spec: ImageInputSpec) -> np.ndarray:
    """Resize an image to the model input and lay it out.

    :param img: uint8 ``(h, w, 3)`` BGR or ``(h, w)`` grayscale, any size.
    :param spec: the model's input spec.
    :return: float32 values 0..255, ``(1, C, H, W)`` or ``(1, H, W, C)``.
    """
    if spec.channels == 1 and img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    if img.shape[0] != spec.height or img.shape[1] != spec.width:
        img = cv2.resize(img, (spec.width, spec.height))
    x = img.astype(np.float32)
    if x.ndim == 2:
        x = x[:, :, None]
    if spec.layout == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x[None])


def load_npz(path: Path | str) -> dict[str, np.ndarray]:
    """Read one ``.npz`` sample as ``{input_name: array}``."""
    with np.load(str(path)) as z:
        return {k: np.ascontiguousarray(z[k]) for k in z.files}


def is_npz_dir(data_dir: Path | str) -> bool:
    """True when the folder holds ``.npz`` samples (and no images)."""
    return bool(list_files(data_dir, {".npz"})) and not list_files(data_dir, IMAGE_EXTENSIONS)


def load_calibration_samples(model, data_dir: Path | str, subset: int | None = None) -> list:
    """Build the calibration samples ``pot --data-source data_dir`` feeds the model.

    :param model: ``openvino.Model``.
    :param data_dir: folder of images or of ``.npz`` samples.
    :param subset: keep the first ``subset`` files (sorted by name); ``None`` keeps all.
    :return: one entry per file: a float32 array (single-input image models) or a dict
        ``{input_name: array}`` (``.npz`` samples).
    """
    if is_npz_dir(data_dir):
        files = list_files(data_dir, {".npz"})[: subset or None]
        names = {p.get_any_name() for p in model.inputs}
        samples = []
        for f in files:
            s = load_npz(f)
            missing = names - set(s)
            if missing:
                raise ValueError(f"{f}: missing model inputs {sorted(missing)}")
            samples.append({k: s[k] for k in names})
        return samples
    spec = detect_image_input(model)
    files = list_files(data_dir, IMAGE_EXTENSIONS)[: subset or None]
    return [image_to_input(read_image(f, spec.channels), spec) for f in files]


# ----------------------------------------------------------------------------- evaluation inputs


def random_square_crops(img: np.ndarray, n: int, rng: np.random.Generator,
                        min_frac: float = 0.4, max_frac: float = 1.0) -> list[np.ndarray]:
    """``n`` random square crops, side ``U(min_frac, max_frac) * min(h, w)``, uniform position."""
    h, w = img.shape[:2]
    short = min(h, w)
    crops = []
    for _ in range(n):
        side = max(8, int(round(rng.uniform(min_frac, max_frac) * short)))
        y0 = int(rng.integers(0, h - side + 1))
        x0 = int(rng.integers(0, w - side + 1))
        crops.append(img[y0:y0 + side, x0:x0 + side])
    return crops


def crop_eval_inputs(model, images_dir: Path | str, crops_per_image: int = 5, seed: int = 0,
                     names: Iterable[str] | None = None, include_full: bool = False,
                     min_frac: float = 0.4) -> tuple[list[np.ndarray], list[str]]:
    """Random-crop evaluation inputs of the photos for an image model.

    :param model: ``openvino.Model`` (single image input).
    :param images_dir: photo folder.
    :param crops_per_image: random crops per photo.
    :param seed: ``numpy`` generator seed (one generator for the whole set, files sorted).
    :param names: restrict to these file names (default: every image in the folder).
    :param include_full: also add the whole photo resized (aspect not kept) per photo.
    :param min_frac: smallest crop side as a fraction of the photo's short side.
    :return: (inputs, the source file name of each input).
    """
    spec = detect_image_input(model)
    files = list_files(images_dir, IMAGE_EXTENSIONS)
    if names is not None:
        wanted = set(names)
        files = [f for f in files if f.name in wanted]
    rng = np.random.default_rng(seed)
    inputs, sources = [], []
    for f in files:
        img = read_image(f, spec.channels)
        views = ([img] if include_full else []) + random_square_crops(img, crops_per_image, rng, min_frac)
        for v in views:
            inputs.append(image_to_input(v, spec))
            sources.append(f.name)
    return inputs, sources


def fmnist_eval_set(model, val_dir: Path | str, annotation: Path | str,
                    limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The labelled Fashion-MNIST validation split.

    :param annotation: ``val.txt`` with ``<file> <label>`` lines.
    :return: (inputs float32 ``(N, 1, 28, 28)`` (or the model's layout), labels int64 ``(N,)``).
    """
    spec = detect_image_input(model)
    xs, ys = [], []
    for line in Path(annotation).read_text().splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        xs.append(image_to_input(read_image(Path(val_dir) / parts[0], spec.channels), spec)[0])
        ys.append(int(parts[1]))
        if limit and len(xs) >= limit:
            break
    return np.stack(xs), np.asarray(ys, dtype=np.int64)


def text_samples(data_dir: Path | str) -> list[dict[str, np.ndarray]]:
    """All ``.npz`` text samples (sorted by name)."""
    return [load_npz(f) for f in list_files(data_dir, {".npz"})]


def _content_tokens(sample: dict[str, np.ndarray]) -> np.ndarray:
    """Token ids between ``[CLS]`` and ``[SEP]`` of an unpadded sample."""
    ids = sample["input_ids"][0]
    n = int(sample["attention_mask"][0].sum())
    ids = ids[:n]
    if n and ids[0] == CLS_ID:
        ids = ids[1:]
    if len(ids) and ids[-1] == SEP_ID:
        ids = ids[:-1]
    return ids


def _make_text_input(content: np.ndarray, pad_to: int | None) -> dict[str, np.ndarray]:
    ids = np.concatenate([[CLS_ID], content, [SEP_ID]]).astype(np.int64)
    if pad_to is not None:
        ids = ids[:pad_to]
        if ids[-1] != SEP_ID:
            ids[-1] = SEP_ID
    n = len(ids)
    total = pad_to if pad_to is not None else n
    out_ids = np.full((1, total), PAD_ID, dtype=np.int64)
    out_ids[0, :n] = ids
    mask = np.zeros((1, total), dtype=np.int64)
    mask[0, :n] = 1
    return {"input_ids": out_ids, "attention_mask": mask,
            "token_type_ids": np.zeros((1, total), dtype=np.int64)}


def text_eval_inputs(data_dir: Path | str, seed: int = 0) -> tuple[list[dict], list[str]]:
    """Token sequences derived from the text samples, none equal to a calibration sample.

    Per sample ``i`` (content = the tokens between ``[CLS]`` and ``[SEP]``):

    * ``truncated``: the first half of the content, unpadded (``T`` = its length + 2, so the
      dynamic sequence dim varies);
    * ``shuffled``: the content tokens in a random order, unpadded;
    * ``concat``: content of sample ``i`` followed by content of sample ``i+1``, cut and padded
      to 128 with ``attention_mask`` 0 (the calibration padding convention).

    :return: (inputs, the kind of each input).
    """
    samples = text_samples(data_dir)
    rng = np.random.default_rng(seed)
    inputs, kinds = [], []
    for i, s in enumerate(samples):
        c = _content_tokens(s)
        if len(c) >= 2:
            inputs.append(_make_text_input(c[: max(1, len(c) // 2)], None))
            kinds.append("truncated")
            inputs.append(_make_text_input(rng.permutation(c), None))
            kinds.append("shuffled")
        nxt = _content_tokens(samples[(i + 1) % len(samples)])
        inputs.append(_make_text_input(np.concatenate([c, nxt]), 128))
        kinds.append("concat")
    return inputs, kinds


def text_speed_input(data_dir: Path | str, seq_len: int = 128) -> dict[str, np.ndarray]:
    """One fixed-length ``(1, seq_len)`` text input (the first sample, padded with mask 0)."""
    return _make_text_input(_content_tokens(text_samples(data_dir)[0]), seq_len)
