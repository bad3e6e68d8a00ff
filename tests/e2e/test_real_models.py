"""End to end on a real model from ``../shared``: the CLI in a subprocess, then INT8 execution,
size and accuracy against the FP32 model."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import openvino as ov
import pytest

VAL_IMAGES = 500


def read_val(data_dir: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` lines of ``val.txt``: images ``(n, 1, 28, 28)`` float32 in 0..255 (the IR
    normalises), labels ``(n,)``."""
    images, labels = [], []
    for line in (data_dir / "val.txt").read_text().splitlines()[:n]:
        name, label = line.split()
        img = cv2.imread(str(data_dir / "val" / name), cv2.IMREAD_GRAYSCALE)
        assert img is not None and img.shape == (28, 28), name
        images.append(img)
        labels.append(int(label))
    return np.stack(images)[:, None].astype(np.float32), np.array(labels)


def top1(xml: Path, images: np.ndarray, labels: np.ndarray) -> float:
    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    logits = np.array(compiled(images)[0])
    assert logits.shape == (len(labels), 10)
    return float(np.mean(logits.argmax(axis=1) == labels))


def test_fmnist_cnn_default_quantization(shared_dir, tmp_path):
    model_dir = shared_dir / "models" / "fmnist_cnn"
    data_dir = shared_dir / "data" / "fashion_mnist"
    xml = model_dir / "fmnist_cnn.xml"
    if not xml.is_file() or not (data_dir / "val.txt").is_file():
        pytest.skip(f"fmnist_cnn or its data not found under {shared_dir}")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "pot_cli", "-q", "default", "-m", str(xml),
                           "--data-source", str(data_dir / "calibration"), "--output-dir", str(out), "-d"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    q_xml = out / "optimized" / "fmnist_cnn.xml"
    assert proc.stdout.strip() == str(q_xml)

    # every Convolution / FullyConnected runs in INT8 on the CPU plugin
    compiled = ov.Core().compile_model(str(q_xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    layers = {}
    for node in compiled.get_runtime_model().get_ops():
        rt = node.get_rt_info()
        if rt["layerType"].astype(str) in ("Convolution", "FullyConnected"):
            layers[node.get_friendly_name()] = rt["runtimePrecision"].astype(str)
    assert len(layers) >= 4, layers
    assert set(layers.values()) <= {"u8", "i8"}, layers

    ratio = q_xml.with_suffix(".bin").stat().st_size / (model_dir / "fmnist_cnn.bin").stat().st_size
    assert ratio <= 0.30, f".bin is {ratio:.2f}x the original"

    images, labels = read_val(data_dir, VAL_IMAGES)
    fp32, int8 = top1(xml, images, labels), top1(q_xml, images, labels)
    assert fp32 > 0.8, f"FP32 top-1 {fp32:.3f}: the validation data or preprocessing is off"
    assert abs(int8 - fp32) <= 0.01, f"top-1 FP32 {fp32:.3f} vs INT8 {int8:.3f}"
