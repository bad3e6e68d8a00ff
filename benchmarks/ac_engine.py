"""AccuracyAwareQuantization through the accuracy_checker engine on real models: detection and
segmentation YAMLs against the classification reference, per evaluated image.

Runs, in one process and on one machine:

* ``nudenet_faces.yml`` (YOLOv8n faces, ``map`` + ``coco_precision``) and
  ``nudenet_faces_coco_orig.yml`` (``coco_orig_precision``) with ``--max-drop 0.01``;
* ``ppocr_text_segmentation.yml`` (PP-OCRv4 DB map, ``mean_iou``) on data made by
  ``examples/segmentation/make_text_dataset.py``, ``--max-drop 0.01``;
* ``configs/examples/fmnist_ac.yml`` (``accuracy``), ``--max-drop 0.002``: the reference;
* the plain inference and scoring cost per image of each model through the engine's evaluator,
  and the dataset-level metric time on 2,000 synthetic images x 20 boxes.

Writes ``docs/ac_benchmarks.md`` (and prints it). Usage: ``python benchmarks/ac_engine.py``.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MODELS = SHARED / "models"
DOC = ROOT / "docs" / "ac_benchmarks.md"


def _cpu() -> str:
    flags = set()
    name = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16") if f in flags]
    return f"{name}, {os.cpu_count()} logical cores; flags: {', '.join(isa)}"


def _accuracy_aware(name: str, xml: Path, yml: Path, max_drop: float, out: Path, extra=()) -> dict:
    t = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "pot_cli", "-q", "accuracy_aware", "-m", str(xml), "--ac-config",
                          str(yml), "--max-drop", str(max_drop), "--output-dir", str(out / name), "-d", *extra],
                         capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t
    if run.returncode not in (0, 3):
        raise SystemExit(f"{name}: pot failed ({run.returncode}): {run.stderr[-2000:]}")
    aa = json.loads((out / name / "optimized" / "report.json").read_text())["accuracy_aware"]
    return {"name": name, "wall_s": wall, "aa_s": aa["time_s"], "evaluated": aa["evaluated_samples"],
            "scored": aa["scored_samples"], "metric_s": aa["metric_time_s"], "baseline": aa["baseline"],
            "final": aa["final"]["metrics"], "drop": aa["final"]["drop"], "target_met": aa["target_met"],
            "reverted": [r["name"] for r in aa["reverted_layers"]], "max_drop": max_drop}


def _inference_cost(yml: Path, xml: Path, env: dict) -> tuple[float, float, int]:
    """ms per image of inference and of scoring (decode, postprocessing, metrics) through the evaluator."""
    import openvino as ov

    from pot_cli.config.model import EngineConfig
    from pot_cli.engines.ac.config_reader import Roots
    from pot_cli.engines.accuracy_checker import create_ac_engine
    from pot_cli.engines.evaluator import Evaluator

    roots = Roots(data_dir=Path(env["DATA_DIR"])) if "DATA_DIR" in env else Roots()
    eng = create_ac_engine(EngineConfig(type="accuracy_checker", ac_config=yml), "<benchmark>", roots)
    model = ov.Core().read_model(xml)
    eng.bind(model)
    ev = Evaluator(eng.evaluation, decoder=eng.launcher.decoder)
    idx = list(range(len(eng.evaluation)))
    compiled = ev.compile(model)
    ev.infer(compiled, idx)  # decode the images once
    t = time.perf_counter()
    outputs = ev.infer(compiled, idx)
    infer = time.perf_counter() - t
    t = time.perf_counter()
    ev.score(outputs, idx)
    score = time.perf_counter() - t
    return 1000 * infer / len(idx), 1000 * score / len(idx), len(idx)


def _synthetic_metric_time() -> list[tuple[str, float]]:
    from pot_cli.engines.ac.base import METRICS, Context
    from pot_cli.engines.ac.representations import DatasetMeta, DetectionAnnotation, DetectionPrediction
    from pot_cli.engines.accuracy_checker import _load_types
    from pot_cli.engines.preprocessing import Problems

    _load_types()
    rng = np.random.default_rng(0)
    anns, preds = [], []
    for i in range(2000):
        xy = rng.uniform(0, 400, (20, 2))
        boxes = np.c_[xy, xy + rng.uniform(10, 100, (20, 2))]
        labels = rng.integers(1, 21, 20)
        anns.append(DetectionAnnotation(f"{i}.jpg", labels, boxes, rng.random(20) < 0.1))
        preds.append(DetectionPrediction(f"{i}.jpg", labels, rng.random(20), boxes + rng.normal(0, 5, boxes.shape)))
    meta = DatasetMeta({k: str(k) for k in range(21)}, 0)
    rows = []
    for kind in ("map", "coco_precision", "coco_orig_precision"):
        metric = METRICS[kind].cls({"type": kind}, Context(Problems("bench"), "m", dataset_meta=meta))
        t = time.perf_counter()
        metric.evaluate(preds, anns)
        rows.append((kind, time.perf_counter() - t))
    return rows


def main() -> int:
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        seg = out / "seg"
        subprocess.run([sys.executable, str(ROOT / "examples/segmentation/make_text_dataset.py"),
                        str(seg / "text_seg")], check=True, capture_output=True)
        runs = [
            (_accuracy_aware("fmnist_accuracy", MODELS / "fmnist_cnn/fmnist_cnn.xml",
                             ROOT / "configs/examples/fmnist_ac.yml", 0.002, out), {}),
            (_accuracy_aware("nudenet_map_coco_precision", MODELS / "nudenet_320n/nudenet_320n.xml",
                             ROOT / "examples/detection/nudenet_faces.yml", 0.01, out), {}),
            (_accuracy_aware("nudenet_coco_orig_precision", MODELS / "nudenet_320n/nudenet_320n.xml",
                             ROOT / "examples/detection/nudenet_faces_coco_orig.yml", 0.01, out), {}),
            (_accuracy_aware("ppocr_mean_iou", MODELS / "ppocrv4_det/ppocrv4_det.xml",
                             ROOT / "examples/segmentation/ppocr_text_segmentation.yml", 0.01, out,
                             ("--data-dir", str(seg))), {"DATA_DIR": str(seg)}),
        ]
        ymls = {"fmnist_accuracy": ("configs/examples/fmnist_ac.yml", "fmnist_cnn/fmnist_cnn.xml"),
                "nudenet_map_coco_precision": ("examples/detection/nudenet_faces.yml", "nudenet_320n/nudenet_320n.xml"),
                "nudenet_coco_orig_precision": ("examples/detection/nudenet_faces_coco_orig.yml",
                                                "nudenet_320n/nudenet_320n.xml"),
                "ppocr_mean_iou": ("examples/segmentation/ppocr_text_segmentation.yml", "ppocrv4_det/ppocrv4_det.xml")}
        os.chdir(ROOT)
        costs = {r["name"]: _inference_cost(ROOT / ymls[r["name"]][0], MODELS / ymls[r["name"]][1], env)
                 for r, env in runs}
    synthetic = _synthetic_metric_time()
    ref = runs[0][0]
    ref_per_image = ref["aa_s"] / ref["evaluated"]
    lines = ["# AccuracyAwareQuantization through the accuracy_checker engine", "",
             "Generated by `python benchmarks/ac_engine.py`; do not edit by hand.", "",
             f"- CPU: {_cpu()}", f"- Date: {time.strftime('%Y-%m-%dT%H:%M:%S%z')}",
             f"- Python {platform.python_version()}",
             f"- Load average (1/5/15 min) at start {[round(v, 2) for v in load_start]}, at the end "
             f"{[round(v, 2) for v in os.getloadavg()]} (other jobs slow every run; the ratios of one run "
             "are what compare)", "",
             "## Runs (`pot -q accuracy_aware ... --max-drop X`)", "",
             "| run | max drop | FP32 | final | drop | reverted | AA s | images evaluated | ms per evaluated "
             "image | x fmnist | metric share of AA time | metric ms per scored image |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    fmt = (lambda d: ", ".join(f"{k} {v:.4f}" for k, v in d.items()))
    for r, _ in runs:
        per_image = r["aa_s"] / r["evaluated"]
        lines.append(f"| {r['name']} | {r['max_drop']} | {fmt(r['baseline'])} | {fmt(r['final'])} | {fmt(r['drop'])} "
                     f"| {', '.join(r['reverted']) or 'none'} | {r['aa_s']:.1f} | {r['evaluated']} | "
                     f"{1000 * per_image:.2f} | {per_image / ref_per_image:.1f} | "
                     f"{r['metric_s'] / r['aa_s']:.1%} | {1000 * r['metric_s'] / max(1, r['scored']):.3f} |")
    lines += ["", "## Cost per image through the evaluator (inference vs. decode + postprocessing + metrics)", "",
              "| run | images | inference ms/image | scoring ms/image | AA ms per evaluated image / inference "
              "ms per image |", "|---|---|---|---|---|"]
    for r, _ in runs:
        infer, score, n = costs[r["name"]]
        lines.append(f"| {r['name']} | {n} | {infer:.3f} | {score:.3f} | "
                     f"{1000 * r['aa_s'] / r['evaluated'] / infer:.2f} |")
    lines += ["", "## Dataset-level metric time, 2,000 synthetic images x 20 boxes, 20 classes", "",
              "| metric | seconds |", "|---|---|"]
    lines += [f"| `{k}` | {v:.3f} |" for k, v in synthetic]
    lines.append("")
    text = "\n".join(lines)
    DOC.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
