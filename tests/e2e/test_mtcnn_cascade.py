"""The MTCNN cascade end to end on ../shared (10 images): the API example's engine, ``pot -c`` with
the cascade config and the corrected ``configs/examples/mtcnn.yaml``, the published YAML refused."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import openvino as ov
import yaml
from click.testing import CliRunner

from pot_cli.cli import main

SUBSET = 10


def pot(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def convolution_precisions(xml: Path) -> set[str]:
    """Execution precisions of the convolutions of ``xml`` compiled for CPU (the runtime graph)."""
    runtime = ov.Core().compile_model(str(xml), "CPU").get_runtime_model()
    return {op.get_rt_info()["runtimePrecision"].astype(str) for op in runtime.get_ops()
            if op.get_rt_info()["layerType"].astype(str) == "Convolution"}


def _cascade_config(tmp_path: Path, repo_root: Path, shared_dir: Path, ac_config: Path) -> Path:
    config = {"model": {"model_name": "mtcnn", "cascade": [
        {"name": s, "model": str(shared_dir / "models" / f"mtcnn_{s}" / f"mtcnn_{s}.xml")} for s in ("pnet", "rnet", "onet")]},
        "engine": {"type": "accuracy_checker", "config": str(ac_config)},
        "compression": {"algorithms": [{"name": "DefaultQuantization", "params": {"stat_subset_size": 300}}]}}
    path = tmp_path / "cascade.json"
    path.write_text(json.dumps(config))
    return path


def _small_yaml(tmp_path: Path, repo_root: Path, shared_dir: Path) -> Path:
    """configs/examples/mtcnn.yaml with absolute paths and only the first images."""
    doc = yaml.safe_load((repo_root / "configs" / "examples" / "mtcnn.yaml").read_text())
    entry = doc["evaluations"][0]
    entry["python_path"] = str(repo_root / "examples" / "face_detection")
    ds = entry["module_config"]["datasets"][0]
    ds["data_source"] = str(shared_dir / "data" / "faces" / "VOC" / "JPEGImages")
    ds["annotation_conversion"]["annotation_file"] = str(shared_dir / "data" / "faces" / "wider_face_annotations.txt")
    ds["subsample_size"] = SUBSET
    path = tmp_path / "mtcnn.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_published_mtcnn_yaml_is_refused_with_line_and_column(tmp_path, repo_root, shared_dir):
    published = repo_root / "tests" / "data" / "mtcnn" / "mtcnn_published.yaml"
    result = pot("-c", _cascade_config(tmp_path, repo_root, shared_dir, published), "--output-dir", tmp_path / "out")
    assert result.exit_code != 0
    assert f"{published}: line 49, column 34: mapping values are not allowed here" in result.output
    assert "Traceback" not in result.output
    # the shipped corrected file parses, and names the evaluation the original's YAML meant
    doc = yaml.safe_load((repo_root / "configs" / "examples" / "mtcnn.yaml").read_text())
    entry = doc["evaluations"][0]
    assert entry["name"] == "mtcnn" and "annotation_conversion" in entry["module_config"]["datasets"][0]


def test_original_evaluator_module_is_refused_clearly(tmp_path, repo_root, shared_dir):
    fixed = (repo_root / "tests" / "data" / "mtcnn" / "mtcnn_published.yaml").read_text().replace(
        "          data_source: <PATH_TO_DATASET>/WIDER_val/images\n            annotation_conversion:",
        "          data_source: <PATH_TO_DATASET>/WIDER_val/images\n          annotation_conversion:")
    ac = tmp_path / "mtcnn_original_module.yaml"
    ac.write_text(fixed)
    result = pot("-c", _cascade_config(tmp_path, repo_root, shared_dir, ac), "--output-dir", tmp_path / "out")
    assert result.exit_code != 0
    assert "evaluations[0].module: cannot import 'custom_evaluators.mtcnn_evaluator'" in result.output
    assert "mtcnn_engine.MTCNNEngine" in result.output


def test_cli_quantizes_the_cascade_with_the_corrected_yaml(tmp_path, repo_root, shared_dir):
    config = _cascade_config(tmp_path, repo_root, shared_dir, _small_yaml(tmp_path, repo_root, shared_dir))
    result = pot("-c", config, "-e", "-d", "--output-dir", tmp_path / "out")
    assert result.exit_code == 0, result.output
    out = tmp_path / "out" / "optimized"
    xmls = [out / f"mtcnn_{s}.xml" for s in ("pnet", "rnet", "onet")]
    assert [str(x) for x in xmls] == result.stdout.strip().splitlines()[-3:]
    for xml in xmls:  # every stage runs its convolutions in INT8 on the CPU
        assert convolution_precisions(xml) <= {"i8", "u8"}
    report = json.loads((out / "report.json").read_text())
    assert [m["name"] for m in report["models"]] == ["pnet", "rnet", "onet"]
    assert {row["model"] for row in report["quantizers"]} == {"pnet", "rnet", "onet"}
    assert all(m["summary"]["weight_quantizers"] > 0 for m in report["models"])
    metrics = report["evaluation"]["metrics"]
    assert set(metrics) == {"recall", "precision", "AP"} and metrics["recall"] > 0.8


def test_api_example_runs_on_ten_images(tmp_path, repo_root, shared_dir):
    script = repo_root / "examples" / "face_detection" / "face_detection_example.py"
    faces = shared_dir / "data" / "faces"
    run = subprocess.run([sys.executable, str(script), "--subset", str(SUBSET), "-o", str(tmp_path / "out"),
                          "-d", str(faces / "VOC" / "JPEGImages"), "-a", str(faces / "wider_face_annotations.txt")],
                         capture_output=True, text=True, cwd=repo_root, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = dict(line.split(":", 1) for line in run.stdout.splitlines() if ":" in line)
    fp32, int8 = float(lines["FP32 recall                "]), float(lines["INT8 recall                "])
    assert fp32 > 0.9 and int8 >= fp32 - 0.1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "mtcnn_onet.bin", "mtcnn_onet.xml", "mtcnn_pnet.bin", "mtcnn_pnet.xml", "mtcnn_rnet.bin", "mtcnn_rnet.xml"]
