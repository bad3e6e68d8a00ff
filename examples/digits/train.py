"""Train the bundled ``digits_cnn`` example model and write its IR and images.

Everything comes from scikit-learn's bundled 8x8 digits dataset
(:func:`sklearn.datasets.load_digits`, 1,797 images, no network access), so the
example can be rebuilt on any machine::

    pip install scikit-learn   # dev-only: the pot_cli package does not need it
    python examples/digits/train.py

What it does, deterministically (fixed seeds, plain numpy, no deep-learning framework):

1. Upscale every 8x8 digit (values 0..16) to a 28x28 grayscale uint8 image
   (``clip(x * 16, 0, 255)``, ``cv2.resize`` with ``INTER_LINEAR``).
2. Hold out a stratified split of 300 images for validation; train on the rest.
3. Train a small CNN with a hand-written forward/backward pass (im2col convolutions):

   conv1 1->16 3x3 pad 1, ReLU, MaxPool 2 -> conv2 16->32 3x3 pad 1, ReLU, MaxPool 2
   -> conv3 32->32 3x3, ReLU -> global average pool -> fc 32->10 (logits)

4. Build the OpenVINO IR with ``openvino.opset13`` from the numpy weights: input
   ``input`` f32 ``[?,1,28,28]`` with layout ``NCHW``, and the normalisation embedded
   (Subtract mean, Multiply by 1/std, added with ``PrePostProcessor`` exactly like the
   shared models; ``save_model`` folds that Multiply into the conv1 weights), so a tool
   feeds raw 0..255 pixels. Saved as FP32 to
   ``model/digits_cnn.xml`` + ``.bin``.
5. Write 300 calibration PNGs (from the training split) to ``images/calibration/`` and
   the 300 validation PNGs to ``images/val/`` with ``images/val.txt`` (``<file> <label>``).
6. Read the validation PNGs back from disk and print the FP32 top-1 accuracy of the IR
   measured with OpenVINO CPU (``INFERENCE_PRECISION_HINT=f32``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
SEED = 0
IMAGE_SIZE = 28
NUM_VAL = 300
NUM_CALIBRATION = 300


# --------------------------------------------------------------------------- data


def load_images() -> tuple[np.ndarray, np.ndarray]:
    """Load the digits and upscale them to 28x28 grayscale.

    :return: ``(images, labels)``; images ``(N, 28, 28)`` uint8 in 0..255, labels ``(N,)`` int64
        in 0..9, with ``N = 1797``.
    """
    from sklearn.datasets import load_digits  # dev-only dependency of this script

    digits = load_digits()
    images = np.empty((len(digits.images), IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    for i, small in enumerate(digits.images):
        scaled = np.clip(small.astype(np.float32) * 16.0, 0.0, 255.0)
        big = cv2.resize(scaled, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_LINEAR)
        images[i] = np.clip(np.rint(big), 0, 255).astype(np.uint8)
    return images, digits.target.astype(np.int64)


def split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/validation split with a fixed seed.

    :return: ``(train_idx, val_idx)`` index arrays; ``len(val_idx) == NUM_VAL``.
    """
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    train_idx, val_idx = train_test_split(
        idx, test_size=NUM_VAL, stratify=labels, random_state=SEED, shuffle=True
    )
    return np.sort(train_idx), np.sort(val_idx)


def augment(batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Randomly shift each image by up to 2 pixels (zero fill).

    :param batch: ``(B, 1, H, W)`` float32.
    :return: array of the same shape and dtype.
    """
    out = np.zeros_like(batch)
    h, w = batch.shape[2:]
    for k, (dy, dx) in enumerate(rng.integers(-2, 3, size=(len(batch), 2))):
        ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
        xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
        out[k, :, yd, xd] = batch[k, :, ys, xs]
    return out


# --------------------------------------------------------------------------- layers (numpy)


def conv_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, pad: int):
    """2-D convolution, stride 1, via im2col.

    :param x: ``(N, C, H, W)`` float32.
    :param w: ``(F, C, kH, kW)`` float32.
    :param b: ``(F,)`` float32.
    :param pad: zero padding on each side.
    :return: ``(y, cache)``; y ``(N, F, Ho, Wo)`` with ``Ho = H + 2*pad - kH + 1``.
    """
    n, c, _, _ = x.shape
    f, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else x
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))  # N,C,Ho,Wo,kh,kw
    ho, wo = win.shape[2:4]
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * kh * kw)
    y = cols @ w.reshape(f, -1).T + b
    y = y.reshape(n, ho, wo, f).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(y), (xp.shape, cols, w, pad)


def conv_backward(dy: np.ndarray, cache):
    """Gradients of :func:`conv_forward`.

    :param dy: ``(N, F, Ho, Wo)`` upstream gradient.
    :return: ``(dx, dw, db)`` with the shapes of ``x``, ``w``, ``b``.
    """
    xp_shape, cols, w, pad = cache
    n, c, hp, wp = xp_shape
    f, _, kh, kw = w.shape
    ho, wo = dy.shape[2:]
    dy2 = dy.transpose(0, 2, 3, 1).reshape(-1, f)
    dw = (dy2.T @ cols).reshape(w.shape)
    db = dy2.sum(axis=0)
    dcols = (dy2 @ w.reshape(f, -1)).reshape(n, ho, wo, c, kh, kw)
    dxp = np.zeros(xp_shape, dtype=dy.dtype)
    for i in range(kh):
        for j in range(kw):
            dxp[:, :, i:i + ho, j:j + wo] += dcols[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    dx = dxp[:, :, pad:hp - pad, pad:wp - pad] if pad else dxp
    return dx, dw, db


def maxpool_forward(x: np.ndarray):
    """2x2 max pooling, stride 2 (H and W even).

    :param x: ``(N, C, H, W)``.
    :return: ``(y, cache)``; y ``(N, C, H/2, W/2)``.
    """
    quads = [x[:, :, i::2, j::2] for i in (0, 1) for j in (0, 1)]
    y = np.maximum(np.maximum(quads[0], quads[1]), np.maximum(quads[2], quads[3]))
    # route the gradient to the first maximum of each window (as PyTorch does)
    masks, taken = [], np.zeros(y.shape, bool)
    for q in quads:
        m = (q == y) & ~taken
        taken |= m
        masks.append(m)
    return y, (masks, x.shape)


def maxpool_backward(dy: np.ndarray, cache) -> np.ndarray:
    masks, shape = cache
    dx = np.zeros(shape, dtype=dy.dtype)
    for (i, j), m in zip([(0, 0), (0, 1), (1, 0), (1, 1)], masks):
        dx[:, :, i::2, j::2] = dy * m
    return dx


def init_params(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """He-initialised weights; biases zero. All float32."""

    def he(shape):
        fan_in = int(np.prod(shape[1:]))
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    return {
        "conv1.w": he((16, 1, 3, 3)), "conv1.b": np.zeros(16, np.float32),
        "conv2.w": he((32, 16, 3, 3)), "conv2.b": np.zeros(32, np.float32),
        "conv3.w": he((32, 32, 3, 3)), "conv3.b": np.zeros(32, np.float32),
        "fc.w": (rng.standard_normal((10, 32)) * np.sqrt(1.0 / 32)).astype(np.float32),
        "fc.b": np.zeros(10, np.float32),
    }


def forward(p: dict[str, np.ndarray], x: np.ndarray):
    """Network forward pass on normalised input.

    :param x: ``(N, 1, 28, 28)`` float32, already ``(pixel - mean) / std``.
    :return: ``(logits, caches)``; logits ``(N, 10)`` float32.
    """
    c1, k1 = conv_forward(x, p["conv1.w"], p["conv1.b"], pad=1)
    r1 = np.maximum(c1, 0)
    m1, q1 = maxpool_forward(r1)
    c2, k2 = conv_forward(m1, p["conv2.w"], p["conv2.b"], pad=1)
    r2 = np.maximum(c2, 0)
    m2, q2 = maxpool_forward(r2)
    c3, k3 = conv_forward(m2, p["conv3.w"], p["conv3.b"], pad=0)
    r3 = np.maximum(c3, 0)
    g = r3.mean(axis=(2, 3))
    logits = g @ p["fc.w"].T + p["fc.b"]
    return logits, (k1, c1, q1, k2, c2, q2, k3, c3, g)


def backward(p, caches, dlogits):
    """Gradients of every parameter given ``dL/dlogits`` ``(N, 10)``."""
    k1, c1, q1, k2, c2, q2, k3, c3, g = caches
    grads = {"fc.w": dlogits.T @ g, "fc.b": dlogits.sum(axis=0)}
    dg = dlogits @ p["fc.w"]
    hw = c3.shape[2] * c3.shape[3]
    dr3 = np.broadcast_to(dg[:, :, None, None] / hw, c3.shape)
    dc3 = dr3 * (c3 > 0)
    dm2, grads["conv3.w"], grads["conv3.b"] = conv_backward(dc3, k3)
    dc2 = maxpool_backward(dm2, q2) * (c2 > 0)
    dm1, grads["conv2.w"], grads["conv2.b"] = conv_backward(dc2, k2)
    dc1 = maxpool_backward(dm1, q1) * (c1 > 0)
    _, grads["conv1.w"], grads["conv1.b"] = conv_backward(dc1, k1)
    return grads


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray):
    """Mean cross-entropy and its gradient w.r.t. the logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    prob = np.exp(z)
    prob /= prob.sum(axis=1, keepdims=True)
    n = len(labels)
    loss = -np.log(prob[np.arange(n), labels] + 1e-12).mean()
    dlogits = prob
    dlogits[np.arange(n), labels] -= 1.0
    return float(loss), (dlogits / n).astype(np.float32)


def predict(p, x: np.ndarray, batch: int = 256) -> np.ndarray:
    return np.concatenate([forward(p, x[i:i + batch])[0].argmax(1) for i in range(0, len(x), batch)])


def train(x: np.ndarray, y: np.ndarray, epochs: int, seed: int = SEED) -> dict[str, np.ndarray]:
    """Adam, batch 32, cosine learning-rate decay, random-shift augmentation.

    :param x: ``(N, 1, 28, 28)`` float32 normalised training images.
    :param y: ``(N,)`` int64 labels.
    """
    rng = np.random.default_rng(seed)
    params = init_params(rng)
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(v) for k, v in params.items()}
    beta1, beta2, eps, base_lr, batch = 0.9, 0.999, 1e-8, 3e-3, 32
    steps_per_epoch = (len(x) + batch - 1) // batch
    total, step = epochs * steps_per_epoch, 0
    for epoch in range(epochs):
        order = rng.permutation(len(x))
        losses, hits = [], 0
        for s in range(steps_per_epoch):
            idx = order[s * batch:(s + 1) * batch]
            xb = augment(x[idx], rng)
            logits, caches = forward(params, xb)
            loss, dlogits = softmax_cross_entropy(logits, y[idx])
            grads = backward(params, caches, dlogits)
            step += 1
            lr = base_lr * 0.5 * (1.0 + np.cos(np.pi * (step - 1) / total))
            for k in params:
                gk = grads[k].astype(np.float32)
                m[k] = beta1 * m[k] + (1 - beta1) * gk
                v[k] = beta2 * v[k] + (1 - beta2) * gk * gk
                mh = m[k] / (1 - beta1 ** step)
                vh = v[k] / (1 - beta2 ** step)
                params[k] = (params[k] - lr * mh / (np.sqrt(vh) + eps)).astype(np.float32)
            losses.append(loss)
            hits += int((logits.argmax(1) == y[idx]).sum())
        print(f"epoch {epoch + 1:2d}/{epochs}: loss {np.mean(losses):.4f}, "
              f"train acc (augmented batches) {hits / len(x):.4f}")
    return params


# --------------------------------------------------------------------------- IR


def build_ir(p: dict[str, np.ndarray], mean: float, std: float):
    """Build the OpenVINO model from the trained weights with ``openvino.opset13``.

    Input ``input`` f32 ``[?,1,28,28]`` NCHW, raw pixels 0..255; output ``logits`` ``[?,10]``.
    The normalisation ``(x - mean) * (1 / std)`` is added with ``PrePostProcessor``, which
    inserts Subtract + Multiply marked as preprocessing, as in the shared models (on saving,
    OpenVINO folds the Multiply into the ``conv1`` weights, as it did for ``fmnist_cnn``).
    """
    import openvino as ov
    import openvino.opset13 as ops

    def named(node, name):
        node.set_friendly_name(name)
        return node

    def const(value, name):
        return named(ops.constant(np.ascontiguousarray(value, dtype=np.float32)), name)

    def conv(x, layer, pad):
        w, b = p[f"{layer}.w"], p[f"{layer}.b"]
        c = named(ops.convolution(x, const(w, f"{layer}/weights"), [1, 1], [pad, pad], [pad, pad],
                                  [1, 1]), layer)
        return named(ops.add(c, const(b.reshape(1, -1, 1, 1), f"{layer}/bias_value")),
                     f"{layer}/bias")

    def pool(x, name):
        return named(ops.max_pool(x, [2, 2], [1, 1], [0, 0], [0, 0], [2, 2]), name).output(0)

    param = ops.parameter([-1, 1, IMAGE_SIZE, IMAGE_SIZE], np.float32, name="input")
    param.output(0).set_names({"input"})
    param.set_layout(ov.Layout("NCHW"))

    x = pool(named(ops.relu(conv(param, "conv1", 1)), "relu1"), "pool1")
    x = pool(named(ops.relu(conv(x, "conv2", 1)), "relu2"), "pool2")
    x = named(ops.relu(conv(x, "conv3", 0)), "relu3")
    axes = named(ops.constant(np.array([2, 3], np.int64)), "gap/axes")
    x = named(ops.reduce_mean(x, axes, keep_dims=False), "gap")
    x = named(ops.matmul(x, const(p["fc.w"], "fc/weights"), transpose_a=False, transpose_b=True),
              "fc")
    x = named(ops.add(x, const(p["fc.b"].reshape(1, -1), "fc/bias_value")), "fc/bias")
    x.output(0).set_names({"logits"})
    result = named(ops.result(x), "logits/sink_port_0")
    model = ov.Model([result], [param], "digits_cnn")

    ppp = ov.preprocess.PrePostProcessor(model)
    ppp.input("input").preprocess().mean(float(mean)).scale(float(std))
    model = ppp.build()
    # give the preprocessing ops readable names
    for node in model.get_ordered_ops():
        if node.get_type_name() == "Subtract":
            named(node, "preprocess/mean")
        elif node.get_type_name() == "Multiply":
            named(node, "preprocess/scale")
    return model


# --------------------------------------------------------------------------- files


def write_images(folder: Path, images: np.ndarray, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    for img, name in zip(images, names):
        if not cv2.imwrite(str(folder / name), img):
            raise OSError(f"cannot write {folder / name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    np.random.seed(SEED)

    images, labels = load_images()
    train_idx, val_idx = split(labels)
    x_train_u8, y_train = images[train_idx], labels[train_idx]
    x_val_u8, y_val = images[val_idx], labels[val_idx]
    mean = round(float(x_train_u8.mean()), 2)
    std = round(float(x_train_u8.std()), 2)
    print(f"{len(train_idx)} training / {len(val_idx)} validation images; "
          f"pixel mean {mean}, std {std}")

    def normalise(u8):
        return ((u8[:, None].astype(np.float32) - mean) / std).astype(np.float32)

    start = time.perf_counter()
    params = train(normalise(x_train_u8), y_train, epochs=args.epochs)
    elapsed = time.perf_counter() - start
    numpy_acc = (predict(params, normalise(x_val_u8)) == y_val).mean()
    print(f"training took {elapsed:.1f} s; numpy validation accuracy {numpy_acc:.4f}")

    import openvino as ov

    model_dir = HERE / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    xml = model_dir / "digits_cnn.xml"
    ov.save_model(build_ir(params, mean, std), str(xml), compress_to_fp16=False)
    print(f"saved {xml.relative_to(HERE.parent.parent)}")

    # calibration: a fixed, class-balanced-ish random subset of the training split
    rng = np.random.default_rng(SEED)
    calib = np.sort(rng.choice(len(train_idx), size=NUM_CALIBRATION, replace=False))
    write_images(HERE / "images" / "calibration", x_train_u8[calib],
                 [f"train_{i:04d}.png" for i in train_idx[calib]])
    val_names = [f"val_{i:04d}.png" for i in val_idx]
    write_images(HERE / "images" / "val", x_val_u8, val_names)
    (HERE / "images" / "val.txt").write_text(
        "".join(f"{name} {label}\n" for name, label in zip(val_names, y_val)))

    from evaluate import evaluate  # same folder; read the PNGs back from disk

    acc, correct, total = evaluate(xml)
    print(f"FP32 IR top-1 accuracy on images/val (OpenVINO CPU, f32): {acc:.4f} "
          f"({correct}/{total})")


if __name__ == "__main__":
    main()
