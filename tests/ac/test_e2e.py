"""The real CLI on real models with detection and segmentation Accuracy Checker YAMLs:
the YOLOv8-style detector of ../shared on ../shared/data/faces (yolo_v8 adapter, mscoco_detection,
map / coco_precision / coco_orig_precision) and PP-OCRv4's DB map as two-class segmentation on
text masks made by examples/segmentation/make_text_dataset.py (segmentation adapter, mean_iou)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
NUDENET = SHARED / "models" / "nudenet_320n" / "nudenet_320n.xml"
PPOCR = SHARED / "models" / "ppocrv4_det" / "ppocrv4_det.xml"
needs_shared = pytest.mark.skipif(not (NUDENET.is_file() and PPOCR.is_file()), reason="needs ../shared models")


def pot(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pot_cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=900)


def report_of(out: Path) -> dict:
    return json.loads(next(out.rglob("report.json")).read_text())


def accuracy_aware(report: dict) -> dict:
    return report["accuracy_aware"]


@needs_shared
def test_detection_yaml_reports_map_and_coco_precision(tmp_path):
    run = pot("-q", "default", "-m", NUDENET, "--ac-config", ROOT / "examples/detection/nudenet_faces.yml", "-e",
              "--output-dir", tmp_path / "out", "-d", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    printed = dict(line.split(": ") for line in run.stdout.splitlines() if ": " in line)
    # FP32 (f32) gives map 0.729 and coco_precision 0.377 on the 62 images; INT8 stays close
    assert 0.6 < float(printed["map"]) < 0.85
    assert 0.25 < float(printed["coco_precision"]) < 0.5


@needs_shared
def test_accuracy_aware_holds_the_drop_of_coco_orig_precision_and_reports_reverted_layers(tmp_path):
    config = {"model": {"model_name": "nudenet", "model": str(NUDENET), "weights": str(NUDENET.with_suffix(".bin"))},
              "engine": {"config": str(ROOT / "examples/detection/nudenet_faces_coco_orig.yml")},
              "compression": {"target_device": "ANY", "algorithms": [{
                  "name": "AccuracyAwareQuantization",
                  "params": {"preset": "performance", "stat_subset_size": 300, "maximal_drop": 0.01,
                             "ranking_subset_size": 8}}]}}
    (tmp_path / "aa.json").write_text(json.dumps(config))
    run = pot("-c", tmp_path / "aa.json", "--output-dir", tmp_path / "out", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    aa = accuracy_aware(report_of(tmp_path / "out"))
    assert 0.3 < aa["baseline"]["coco_orig_precision"] < 0.45  # FP32: 0.375
    assert aa["target_met"] and aa["final"]["drop"]["coco_orig_precision"] <= 0.01 + 1e-9
    reverted = [layer["name"] for layer in aa["reverted_layers"]]
    if aa["fully_quantized"]["drop"]["coco_orig_precision"] > 0.01:
        assert reverted, "the fully quantized model missed the target, so some layer must be reverted"
    log = (next((tmp_path / "out").rglob("log.txt"))).read_text()
    assert all(name in log for name in reverted)
    assert aa["evaluated_samples"] >= 62 and aa["metric_time_s"] >= 0.0


@needs_shared
def test_segmentation_yaml_accuracy_aware_on_generated_text_masks(tmp_path):
    data = tmp_path / "data"
    made = subprocess.run([sys.executable, str(ROOT / "examples/segmentation/make_text_dataset.py"),
                           str(data / "text_seg"), "--count", "24"], capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-2000:]
    run = pot("-q", "accuracy_aware", "-m", PPOCR, "--ac-config", ROOT / "examples/segmentation/ppocr_text_segmentation.yml",
              "--data-dir", data, "--max-drop", "0.01", "--output-dir", tmp_path / "out", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    aa = accuracy_aware(report_of(tmp_path / "out"))
    assert 0.75 < aa["baseline"]["mean_iou"] < 0.92  # FP32: 0.826 on the 60-image set
    assert aa["final"]["drop"]["mean_iou"] <= 0.01 + 1e-9
