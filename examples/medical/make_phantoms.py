"""Make MRI-like 2D phantoms with lesions whose masks are known by construction.

Each slice is 128x128 float32 "intensity" (0..~1000, arbitrary MRI-like units): a soft-edged
ellipse of tissue with low-frequency bias field and fine texture on a dark background, and 1 to
3 brighter elliptical lesions (soft edges, contrast 25-60 % over tissue) inside it, plus Rician-like
noise. The label mask (uint8, 1 = lesion) is each lesion's ellipse, thresholded at half of its
soft edge: it comes only from the drawing.

    python examples/medical/make_phantoms.py OUT_DIR [--count 64] [--seed 7]

writes ``OUT_DIR/slices/case_NNN.npy`` (float32 (128, 128)), ``OUT_DIR/masks/case_NNN.npy``
(uint8 (128, 128)) and ``OUT_DIR/cases.txt`` (one case id per line). Deterministic for a seed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

SIZE = 128


def _ellipse_field(shape: tuple[int, int], cy: float, cx: float, ry: float, rx: float, angle: float) -> np.ndarray:
    """Normalized elliptical radius: < 1 inside the ellipse, float32 ``shape``."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    c, s = np.cos(angle), np.sin(angle)
    dy, dx = yy - cy, xx - cx
    u, v = (dx * c + dy * s) / rx, (-dx * s + dy * c) / ry
    return np.sqrt(u * u + v * v)


def _soft(radius: np.ndarray, edge: float) -> np.ndarray:
    """1 inside, 0 outside, a linear ramp of width ``edge`` (in radius units) around radius 1."""
    return np.clip((1.0 + edge / 2 - radius) / edge, 0.0, 1.0)


def make_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One ``(slice float32 (128, 128), mask uint8 (128, 128))`` pair."""
    tissue_r = _ellipse_field((SIZE, SIZE), SIZE / 2 + rng.uniform(-6, 6), SIZE / 2 + rng.uniform(-6, 6),
                              rng.uniform(44, 58), rng.uniform(40, 56), rng.uniform(0, np.pi))
    tissue = _soft(tissue_r, 0.08)
    bias = cv2.GaussianBlur(rng.normal(0, 1, (SIZE, SIZE)).astype(np.float32), (0, 0), 24)
    bias = 1.0 + 0.15 * bias / (np.abs(bias).max() + 1e-6)
    texture = cv2.GaussianBlur(rng.normal(0, 1, (SIZE, SIZE)).astype(np.float32), (0, 0), 1.2)
    base = rng.uniform(380, 520)
    image = tissue * base * bias * (1.0 + 0.06 * texture)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        for _attempt in range(20):
            cy, cx = rng.uniform(30, SIZE - 30, 2)
            if tissue_r[int(cy), int(cx)] < 0.7:
                break
        r = _ellipse_field((SIZE, SIZE), cy, cx, rng.uniform(4, 12), rng.uniform(4, 12), rng.uniform(0, np.pi))
        lesion = _soft(r, 0.3)
        image = image + lesion * tissue * base * rng.uniform(0.25, 0.6)
        mask |= (lesion >= 0.5).astype(np.uint8) & (tissue > 0.5).astype(np.uint8)
    noise = rng.normal(0, 18, (2, SIZE, SIZE)).astype(np.float32)
    image = np.sqrt((image + noise[0]) ** 2 + noise[1] ** 2)  # Rician magnitude noise, as in MRI
    return image.astype(np.float32), mask


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    (args.out_dir / "slices").mkdir(parents=True, exist_ok=True)
    (args.out_dir / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    ids = []
    for k in range(args.count):
        image, mask = make_case(rng)
        case = f"case_{k:03d}"
        np.save(args.out_dir / "slices" / f"{case}.npy", image)
        np.save(args.out_dir / "masks" / f"{case}.npy", mask)
        ids.append(case)
    (args.out_dir / "cases.txt").write_text("".join(f"{c}\n" for c in ids))
    print(f"{args.out_dir}: {len(ids)} slices")
    return 0


if __name__ == "__main__":
    sys.exit(main())
