"""Build the speech-like example: synthetic utterances, a frame classifier fitted in numpy, its IR.

    python examples/speech/build.py [--out examples/speech] [--val-frames 600] [--calib-frames 300]
                                    [--train-frames 6000] [--steps 400]

Writes under ``--out``:

* ``data/calibration/*.npy`` and ``data/val/*.npy``: one spliced feature frame each, float32
  ``(440,)`` = 11 frames (the frame and 5 on each side, edge frames repeated, as Kaldi's
  splicing) x 40 log-mel-like bins; ``data/val.txt``: ``<file> <class>`` per validation frame;
* ``model/speech_dnn.xml``/``.bin``: FP32 IR, input ``feats`` ``[1, 440]``, output ``logits``
  ``[1, 10]``.

Data (seeded, classes known by construction): 10 "phone" classes, each a spectral template over
the 40 bins (two Gaussian formant-like bumps at class-specific bins, plus a spectral tilt).
An utterance is a sequence of segments of 4 to 12 frames of a random class; a frame is its
class template times a random gain, plus a slowly varying channel offset and white noise. Bin 0
of every frame is a log-energy-like feature: constant 1.0 plus tiny noise (1e-4).

Model (``openvino.opset13``): ``fc1`` 440->128 MatMul + bias Add + ReLU, ``fc2`` 128->64 +
ReLU, ``fc3`` 64->10, the layers of a small Kaldi-style DNN acoustic model. Fitted with Adam
(softmax cross-entropy, full batch, 400 steps, float32) on 6000 training frames from other utterances.
After fitting, each ``fc1`` row gets a large weight ``K = +-40`` on the centre frame's energy
feature and its bias the opposite offset ``-K * 1.0``: the float function is unchanged (the
feature is constant up to 1e-4), but each row's ``max|w|`` is now K, so 8-bit per-channel
weights (step K/127) are too coarse for the row's other weights while 16-bit ones (step
K/32767) are not. Un-normalised energy or DC features give such rows in real acoustic models;
here the construction makes ``fc1`` the layer that must stay 16-bit on GNA.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as ops

BINS, CONTEXT, CLASSES = 40, 5, 10
SPLICED = BINS * (2 * CONTEXT + 1)
ENERGY_WEIGHT = 64.0


def templates(rng: np.random.Generator) -> np.ndarray:
    """``(CLASSES, BINS)`` spectral templates (two bumps and a tilt each); bin 0 is left 0."""
    b = np.arange(BINS)
    out = np.zeros((CLASSES, BINS))
    for c in range(CLASSES):
        f1, f2 = rng.uniform(3, 18), rng.uniform(18, 38)
        out[c] = (1.2 * np.exp(-0.5 * ((b - f1) / 2.0) ** 2) + 0.9 * np.exp(-0.5 * ((b - f2) / 3.0) ** 2)
                  + rng.uniform(-0.4, 0.4) * (b / BINS))
    out[:, 0] = 0.0
    return out


def utterance(rng: np.random.Generator, tmpl: np.ndarray, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Features ``(frames, BINS)`` float32 and frame labels ``(frames,)``."""
    labels = []
    while len(labels) < frames:
        labels += [int(rng.integers(CLASSES))] * int(rng.integers(4, 13))
    labels = np.array(labels[:frames])
    gain = rng.uniform(0.6, 1.4, frames)[:, None]
    channel = np.cumsum(rng.normal(0, 0.02, (frames, BINS)), axis=0) + rng.normal(0, 0.2, BINS)
    x = tmpl[labels] * gain + channel + rng.normal(0, 0.45, (frames, BINS))
    x[:, 0] = 1.0 + rng.normal(0, 1e-4, frames)  # log-energy-like: constant
    return x.astype(np.float32), labels


def splice(x: np.ndarray) -> np.ndarray:
    """``(frames, SPLICED)``: each frame with CONTEXT frames each side (edges repeated)."""
    padded = np.concatenate([np.repeat(x[:1], CONTEXT, 0), x, np.repeat(x[-1:], CONTEXT, 0)])
    return np.stack([padded[t:t + 2 * CONTEXT + 1].reshape(-1) for t in range(len(x))]).astype(np.float32)


def frames(rng: np.random.Generator, tmpl: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``n`` spliced frames from 60-frame utterances, labels, and names ``utt<k>_f<t>``."""
    xs, ys, names, k = [], [], [], 0
    while sum(len(y) for y in ys) < n:
        x, y = utterance(rng, tmpl, 60)
        xs.append(splice(x))
        ys.append(y)
        names += [f"utt{k:03d}_f{t:02d}" for t in range(60)]
        k += 1
    return np.concatenate(xs)[:n], np.concatenate(ys)[:n], names[:n]


def fit(x: np.ndarray, y: np.ndarray, seed: int = 0, steps: int = 400) -> list[np.ndarray]:
    """Weights ``[w1 (440,128), b1, w2 (128,64), b2, w3 (64,10), b3]`` by Adam on softmax
    cross-entropy over standardised inputs, the standardisation then folded into ``fc1``."""
    rng = np.random.default_rng(seed)
    x = x.astype(np.float64)
    mu, sd = x.mean(0), np.maximum(x.std(0), 0.1)
    z = ((x - mu) / sd).astype(np.float32)  # float32 arithmetic: twice as fast as float64 here
    sizes = [SPLICED, 128, 64, CLASSES]
    params = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        params += [rng.normal(0, np.sqrt(2.0 / a), (a, b)).astype(np.float32), np.zeros(b, np.float32)]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    onehot = np.eye(CLASSES, dtype=np.float32)[y]
    for step in range(1, steps + 1):
        h1 = np.maximum(z @ params[0] + params[1], 0)
        h2 = np.maximum(h1 @ params[2] + params[3], 0)
        logits = h2 @ params[4] + params[5]
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        dz = (p - onehot) / len(z)
        dh2 = (dz @ params[4].T) * (h2 > 0)
        dh1 = (dh2 @ params[2].T) * (h1 > 0)
        grads = [z.T @ dh1, dh1.sum(0), h1.T @ dh2, dh2.sum(0), h2.T @ dz, dz.sum(0)]
        lr = 3e-3 * 0.5 * (1 + np.cos(np.pi * step / steps))
        for k, g in enumerate(grads):
            m[k] = 0.9 * m[k] + 0.1 * g
            v[k] = 0.999 * v[k] + 0.001 * g * g
            params[k] -= lr * (m[k] / (1 - 0.9 ** step)) / (np.sqrt(v[k] / (1 - 0.999 ** step)) + 1e-8)
    params = [p.astype(np.float64) for p in params]
    params[1] = params[1] - (mu / sd) @ params[0]
    params[0] = params[0] / sd[:, None]
    return [p.astype(np.float32) for p in params]


def forward(params: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    """Float64 logits of the numpy model."""
    h1 = np.maximum(x @ params[0] + params[1], 0)
    h2 = np.maximum(h1 @ params[2] + params[3], 0)
    return h2 @ params[4] + params[5]


def add_energy_rows(params: list[np.ndarray], seed: int = 1) -> list[np.ndarray]:
    """``fc1`` rows get ``+-ENERGY_WEIGHT`` on the centre frame's energy feature and the
    opposite bias offset (the feature is 1.0): the same function, a wide per-row weight range."""
    rng = np.random.default_rng(seed)
    w1, b1 = params[0].copy(), params[1].copy()
    k = ENERGY_WEIGHT * rng.choice([-1.0, 1.0], w1.shape[1])
    w1[CONTEXT * BINS + 0] += k
    b1 -= k * 1.0
    return [w1, b1] + params[2:]


def build_model(params: list[np.ndarray]) -> ov.Model:
    """The IR: three MatMul + bias Add layers, ReLU between them."""
    x = ops.parameter([1, SPLICED], np.float32, name="feats")
    h = x
    for k in range(3):
        w = ops.constant(params[2 * k])
        w.set_friendly_name(f"fc{k + 1}/weights")
        mm = ops.matmul(h, w, False, False)
        mm.set_friendly_name(f"fc{k + 1}")
        b = ops.constant(params[2 * k + 1][None])
        b.set_friendly_name(f"fc{k + 1}/bias")
        h = ops.add(mm, b)
        h.set_friendly_name(f"fc{k + 1}/add")
        if k < 2:
            h = ops.relu(h)
            h.set_friendly_name(f"relu{k + 1}")
    h.output(0).get_tensor().set_names({"logits"})
    x.output(0).get_tensor().set_names({"feats"})
    return ov.Model([ops.result(h)], [x], "speech_dnn")


def write_frames(folder: Path, x: np.ndarray, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for row, name in zip(x, names):
        np.save(folder / f"{name}.npy", row)


def build(out: Path, val_frames: int = 600, calib_frames: int = 300, train_frames: int = 6000,
          steps: int = 400) -> dict:
    """Write data and IR under ``out``; return the numpy model's frame accuracies."""
    rng = np.random.default_rng(2024)
    tmpl = templates(rng)
    xt, yt, _ = frames(np.random.default_rng(1), tmpl, train_frames)
    params = add_energy_rows(fit(xt, yt, steps=steps))
    xv, yv, nv = frames(np.random.default_rng(2), tmpl, val_frames)
    xc, _, nc = frames(np.random.default_rng(3), tmpl, calib_frames)
    write_frames(out / "data" / "val", xv, nv)
    write_frames(out / "data" / "calibration", xc, nc)
    (out / "data" / "val.txt").write_text("".join(f"{n}.npy {int(c)}\n" for n, c in zip(nv, yv)))
    (out / "model").mkdir(parents=True, exist_ok=True)
    ov.save_model(build_model(params), str(out / "model" / "speech_dnn.xml"), compress_to_fp16=False)
    return {"train_accuracy": float(np.mean(forward(params, xt).argmax(1) == yt)),
            "val_accuracy": float(np.mean(forward(params, xv).argmax(1) == yv))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    ap.add_argument("--val-frames", type=int, default=600)
    ap.add_argument("--calib-frames", type=int, default=300)
    ap.add_argument("--train-frames", type=int, default=6000)
    ap.add_argument("--steps", type=int, default=400, help="Adam steps")
    a = ap.parse_args()
    print(build(a.out, a.val_frames, a.calib_frames, a.train_frames, a.steps))


if __name__ == "__main__":
    main()
