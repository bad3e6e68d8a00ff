"""Build a small lesion-segmentation network for the phantoms of make_phantoms.py, as an OpenVINO IR.

The network (input ``x`` [1, 1, 128, 128] float32 intensity, output ``prob`` [1, 1, 128, 128] lesion
probability) is a three-layer convolutional net:

1. a fixed 9x9 filter bank of 8 channels (Gaussian smoothing at three scales, differences of
   Gaussians (center-surround contrast, the classic blob detector) and their negatives, and a
   "brighter than its surround by 25 %" filter) + ReLU;
2. a 1x1 convolution 8 -> 16 + ReLU and
3. a 1x1 convolution 16 -> 1 + sigmoid: a one-hidden-layer perceptron per pixel on the 8
   features, fitted here in NumPy (Adam, cross-entropy, 1:15 lesion/background pixel sampling)
   on the training cases.

Layers 2-3 are learned from the phantoms' known masks; nothing else is. The IR is written with
``ov.save_model(..., compress_to_fp16=False)``.

    python examples/medical/build_model.py DATA_DIR --out MODEL_DIR [--train 32]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import openvino as ov
import openvino.opset13 as ops

K = 9  # spatial size of the filter bank


HIDDEN = 16


def _gaussian(sigma: float) -> np.ndarray:
    g = cv2.getGaussianKernel(K, sigma).astype(np.float32)
    return g @ g.T


def filter_bank() -> np.ndarray:
    """Layer 1 weights: float32 (8, 1, 9, 9), scaled for intensities of ~100-1000."""
    g1, g2, g3 = _gaussian(1.0), _gaussian(2.0), _gaussian(3.0)
    bank = np.stack([g1, g2, g3, g1 - g2, g2 - g1, g2 - g3, g3 - g2, g1 - 1.25 * g3]) / 100.0
    return bank[:, None].astype(np.float32)


def features(image: np.ndarray) -> np.ndarray:
    """Layer 1 in OpenCV: float32 (8, H, W) from a float32 (H, W) slice (zero padding, as the IR)."""
    return np.stack([np.maximum(cv2.filter2D(image, cv2.CV_32F, k[0], borderType=cv2.BORDER_CONSTANT), 0)
                     for k in filter_bank()])


def fit_head(data_dir: Path, cases: list[str], steps: int = 3000, seed: int = 0) -> list[np.ndarray]:
    """Layers 2-3 by Adam on sampled pixels: ``[w1 (8, 16), b1 (16,), w2 (16,), b2 (1,)]`` float32,
    the input standardisation folded into ``w1``/``b1``."""
    xs, ys = [], []
    for case in cases:
        xs.append(features(np.load(data_dir / "slices" / f"{case}.npy")).reshape(8, -1).T)
        ys.append(np.load(data_dir / "masks" / f"{case}.npy").reshape(-1))
    x_all, y_all = np.concatenate(xs), np.concatenate(ys).astype(np.float32)
    mean, std = x_all.mean(0), x_all.std(0) + 1e-6
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y_all > 0), np.flatnonzero(y_all == 0)
    params = [rng.normal(0, 0.5, (8, HIDDEN)).astype(np.float32), np.zeros(HIDDEN, np.float32),
              rng.normal(0, 0.5, HIDDEN).astype(np.float32), np.zeros(1, np.float32)]
    m1 = [np.zeros_like(p) for p in params]
    m2 = [np.zeros_like(p) for p in params]
    for it in range(1, steps + 1):
        idx = np.concatenate([rng.choice(pos, 64), rng.choice(neg, 960)])
        x, y = (x_all[idx] - mean) / std, y_all[idx]
        h = np.maximum(x @ params[0] + params[1], 0)
        p = 1 / (1 + np.exp(-(h @ params[2] + params[3][0])))
        gz = (p - y) / len(y)
        gh = np.outer(gz, params[2]) * (h > 0)
        grads = [x.T @ gh, gh.sum(0), h.T @ gz, np.array([gz.sum()], np.float32)]
        for k, g in enumerate(grads):
            m1[k] = 0.9 * m1[k] + 0.1 * g
            m2[k] = 0.999 * m2[k] + 0.001 * g * g
            params[k] -= 0.01 * (m1[k] / (1 - 0.9 ** it)) / (np.sqrt(m2[k] / (1 - 0.999 ** it)) + 1e-8)
    w1 = params[0] / std[:, None]
    b1 = params[1] - (mean / std) @ params[0]
    return [w1.astype(np.float32), b1.astype(np.float32), params[2].astype(np.float32), params[3].astype(np.float32)]


def build(head: list[np.ndarray]) -> ov.Model:
    """The IR: conv 9x9 (8) + ReLU, conv 1x1 (16) + ReLU, conv 1x1 (1) + sigmoid."""
    w1, b1, w2, b2 = head
    x = ops.parameter([1, 1, 128, 128], np.float32, name="x")
    x.output(0).get_tensor().set_names({"x"})
    pad = [K // 2, K // 2]
    y = ops.relu(ops.convolution(x, ops.constant(filter_bank()), [1, 1], pad, pad, [1, 1]))
    y = ops.convolution(y, ops.constant(w1.T.reshape(HIDDEN, 8, 1, 1)), [1, 1], [0, 0], [0, 0], [1, 1])
    y = ops.relu(ops.add(y, ops.constant(b1.reshape(1, HIDDEN, 1, 1))))
    y = ops.convolution(y, ops.constant(w2.reshape(1, HIDDEN, 1, 1)), [1, 1], [0, 0], [0, 0], [1, 1])
    y = ops.sigmoid(ops.add(y, ops.constant(b2.reshape(1, 1, 1, 1))))
    result = ops.result(y)
    result.output(0).get_tensor().set_names({"prob"})
    return ov.Model([result], [x], "lesion_seg")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--train", type=int, default=32, help="first N cases fit the head (default 32)")
    args = parser.parse_args(argv)
    cases = (args.data_dir / "cases.txt").read_text().split()
    if not 0 < args.train < len(cases):
        parser.error(f"--train must be in 1..{len(cases) - 1} ({len(cases)} cases)")
    head = fit_head(args.data_dir, cases[:args.train])
    args.out.mkdir(parents=True, exist_ok=True)
    ov.save_model(build(head), args.out / "lesion_seg.xml", compress_to_fp16=False)
    print(args.out / "lesion_seg.xml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
