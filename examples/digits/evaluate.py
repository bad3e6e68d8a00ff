"""Top-1 accuracy of an IR on the bundled digits validation set.

Usage (compare FP32 with INT8)::

    python examples/digits/evaluate.py examples/digits/model/digits_cnn.xml path/to/int8/digits_cnn.xml

Images are read from ``images/val/`` with labels from ``images/val.txt`` (``<file> <label>``
per line), both next to this script unless ``--images``/``--annotation`` say otherwise. Each
image is fed as raw grayscale pixels, float32 0..255, shape ``(1, 1, 28, 28)``; the
normalisation lives inside the IR. Inference runs on OpenVINO CPU with
``INFERENCE_PRECISION_HINT=f32`` so FP32 is not silently run in bf16/f16.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_IMAGES = HERE / "images" / "val"
DEFAULT_ANNOTATION = HERE / "images" / "val.txt"


def load_annotation(path: Path) -> list[tuple[str, int]]:
    """Parse ``<file> <label>`` lines; blank lines are skipped."""
    items = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{path}:{lineno}: expected '<file> <label>', got {line!r}")
        items.append((parts[0], int(parts[1])))
    return items


def evaluate(model_xml: Path | str, images: Path = DEFAULT_IMAGES,
             annotation: Path = DEFAULT_ANNOTATION) -> tuple[float, int, int]:
    """Compute top-1 accuracy of one IR.

    :param model_xml: path to the ``.xml`` (the ``.bin`` next to it is used).
    :param images: folder of the validation PNGs.
    :param annotation: ``val.txt`` with one ``<file> <label>`` line per image.
    :return: ``(accuracy, correct, total)``.
    """
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(model_xml)), "CPU",
                                  {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    items = load_annotation(Path(annotation))
    correct = 0
    for name, label in items:
        img = cv2.imread(str(Path(images) / name), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise FileNotFoundError(f"cannot read image {Path(images) / name}")
        x = img.astype(np.float32)[None, None]  # (1, 1, H, W), 0..255
        logits = request.infer({0: x})[compiled.output(0)]
        correct += int(np.argmax(logits.reshape(-1)) == label)
    return correct / len(items), correct, len(items)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Top-1 accuracy on the digits validation set.")
    parser.add_argument("models", nargs="+", type=Path, help="IR .xml file(s)")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--annotation", type=Path, default=DEFAULT_ANNOTATION)
    args = parser.parse_args(argv)
    for model in args.models:
        if not model.is_file():
            print(f"error: {model}: no such file", file=sys.stderr)
            return 2
        acc, correct, total = evaluate(model, args.images, args.annotation)
        print(f"{model}: top-1 {acc:.4f} ({correct}/{total})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
