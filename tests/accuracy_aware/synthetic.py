"""Synthetic models and Accuracy Checker datasets for the AccuracyAwareQuantization tests.

:func:`outlier_chain` builds ``x [1,3,8,8] -> conv1 -> relu1 -> conv2 -> relu2 -> conv3 -> relu3
-> conv4 -> relu4 -> ReduceMean(H, W) -> fc (MatMul) -> logits [1, 10]`` where the input tensor
of chosen convolutions has one *outlier channel*: channel 0 of the producing convolution (weights
and bias) is multiplied by a factor ``f`` and the consuming convolution's weights on input
channel 0 are divided by ``f``. ReLU is positively homogeneous, so the FP32 function does not
change, but a per-tensor INT8 quantizer on that tensor gets a range ``f`` times too wide and
crushes every other channel to a few levels: the consuming layer breaks under INT8, the more the
larger ``f``.

:func:`write_dataset` writes random 8x8 BGR PNGs, ``val.txt`` labelled with the FP32 model's own
top-1 class (so FP32 accuracy is exactly 1.0) and an Accuracy Checker YAML in the original format.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import openvino as ov
import openvino.opset13 as ops
import yaml

import models


def outlier_chain(outliers: dict[str, float] | None = None, seed: int = 0, classes: int = 10) -> ov.Model:
    """The chain above; ``outliers`` maps ``conv2``/``conv3``/``conv4`` to the factor of the
    outlier channel of its input (absent: no outlier)."""
    outliers = outliers or {}
    rng = np.random.default_rng(seed)
    widths = [3, 8, 8, 8, 8]
    weights = [rng.standard_normal((widths[k + 1], widths[k], 3, 3)).astype(np.float32) / np.sqrt(9 * widths[k])
               for k in range(4)]
    weights[0] = weights[0] / np.float32(128.0)  # inputs are raw pixels 0..255
    biases = [rng.uniform(0.05, 0.3, widths[k + 1]).astype(np.float32) for k in range(4)]
    for k in range(1, 4):
        f = outliers.get(f"conv{k + 1}")
        if f:
            weights[k - 1][0] *= f
            biases[k - 1][0] *= f
            weights[k][:, 0] /= f
    weights = [w.astype(np.float32) for w in weights]
    x = models.param("x", [1, 3, 8, 8], layout="NCHW")
    y = x
    for k in range(4):
        y = models.conv(y, weights[k], f"conv{k + 1}")
        y = models.add_bias(y, biases[k], f"bias{k + 1}")
        y = models._named(ops.relu(y), f"relu{k + 1}")
    pool = models._named(ops.reduce_mean(y, ops.constant(np.array([2, 3], dtype=np.int64)), False), "pool")
    # standardise the pooled features over typical images so that the class depends on the image
    probe = ov.Model([ops.result(pool)], [x], "probe")
    feats = fp32_outputs(probe, make_images(64, seed=1234))
    mean, std = feats.mean(axis=0), feats.std(axis=0) + 1e-6
    y = models._named(ops.subtract(pool, models.const(mean.astype(np.float32)[None], "center/value")), "center")
    w = (rng.standard_normal((classes, 8)) / std[None, :]).astype(np.float32)
    y = models._named(ops.matmul(y, models.const(w, "fc/weights"), False, True), "fc")
    return ov.Model([ops.result(y)], [x], "outlier_chain")


def make_images(n: int, seed: int) -> list[np.ndarray]:
    """``n`` BGR uint8 images ``(8, 8, 3)``: a random colour, a random gradient and noise each."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        base = rng.uniform(0, 255, 3)[None, None, :]
        ramp = np.linspace(-1, 1, 8)[None, :, None] * rng.uniform(-80, 80, 3)[None, None, :]
        images.append(np.clip(base + ramp + rng.normal(0, 20, (8, 8, 3)), 0, 255).astype(np.uint8))
    return images


def fp32_outputs(model: ov.Model, images: list[np.ndarray]) -> np.ndarray:
    """FP32 outputs ``(N, ...)`` of HWC uint8 BGR images, compiled with f32 precision."""
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return np.concatenate([compiled(img.transpose(2, 0, 1)[None].astype(np.float32))[0] for img in images])


def write_dataset(root: Path, model: ov.Model, n: int = 120, seed: int = 1, metrics=None,
                  extra: dict | None = None) -> Path:
    """Images, ``val.txt`` (FP32 top-1 labels) and ``ac.yml`` under ``root``; returns ``ac.yml``."""
    (root / "val").mkdir(parents=True, exist_ok=True)
    images = make_images(n, seed)
    paths = [root / "val" / f"img_{i:03d}.png" for i in range(n)]
    for img, path in zip(images, paths):
        cv2.imwrite(str(path), img)
    labels = fp32_outputs(model, images).argmax(axis=1)
    (root / "val.txt").write_text("".join(f"{p.name} {int(l)}\n" for p, l in zip(paths, labels)))
    dataset = {"name": "synthetic", "data_source": "val",
               "annotation_conversion": {"converter": "imagenet", "annotation_file": "val.txt"},
               "reader": "opencv_imread", "metrics": metrics or [{"type": "accuracy", "top_k": 1}]}
    dataset.update(extra or {})
    doc = {"models": [{"name": "outlier_chain",
                       "launchers": [{"framework": "dlsdk", "device": "CPU", "adapter": "classification"}],
                       "datasets": [dataset]}]}
    path = root / "ac.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path
