"""Reading Accuracy Checker YAMLs as Open Model Zoo's quantizer gave them to POT: launcher
selection across ``models[]``, datasets named in a definitions file, DATA_DIR/ANNOTATIONS_DIR
roots, AC pickles, and the published OMZ mobilenet-v2 YAML end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pot_cli.config.model import EngineConfig
from pot_cli.engines.ac.config_reader import Roots
from pot_cli.engines.accuracy_checker import create_ac_engine
from pot_cli.errors import ConfigError, DatasetError, NotSupportedError

ROOT = Path(__file__).resolve().parents[2]
OMZ = ROOT / "examples" / "omz"
SHARED = ROOT.parent / "shared"
MOBILENET = SHARED / "models" / "mobilenet_v2" / "mobilenet_v2.xml"


def _write(path: Path, doc) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _images(folder: Path, n: int = 3) -> None:
    import cv2
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        cv2.imwrite(str(folder / f"img_{k}.png"), np.full((8, 8, 3), 40 * k, np.uint8))
    (folder.parent / "val.txt").write_text("".join(f"img_{k}.png {k % 2}\n" for k in range(n)))


def _engine(yml: Path, roots: Roots | None = None):
    return create_ac_engine(EngineConfig(type="accuracy_checker", ac_config=yml), "<command line>", roots or Roots())


def _omz_style(name="toy"):
    return {"models": [
        {"name": "toy-tf", "launchers": [{"framework": "tf", "model": "x.pb", "adapter": "classification"}],
         "datasets": [{"name": name, "preprocessing": [{"type": "bgr_to_rgb"}], "metrics": [{"type": "accuracy"}]}]},
        {"name": "toy", "launchers": [{"framework": "dlsdk", "adapter": "classification"}],
         "datasets": [{"name": name, "preprocessing": [{"type": "resize", "size": 8}],
                       "metrics": [{"name": "top1", "type": "accuracy", "top_k": 1, "reference": 0.5}]}]}]}


def test_the_first_openvino_entry_is_used_and_its_dataset_comes_from_the_definitions(tmp_path):
    _images(tmp_path / "data" / "imgs")
    defs = _write(tmp_path / "defs" / "dataset_definitions.yml", {"datasets": [{
        "name": "toy", "data_source": "imgs",
        "annotation_conversion": {"converter": "imagenet", "annotation_file": "val.txt"},
        "annotation": "toy.pickle", "dataset_meta": "toy.json"}]})
    yml = _write(tmp_path / "model" / "accuracy-check.yml", _omz_style())
    eng = _engine(yml, Roots(definitions=defs, data_dir=tmp_path / "data"))
    assert eng.name == "toy"
    assert eng.launcher.framework == "dlsdk"
    ds = eng.evaluation
    assert [m.name for m in ds.metrics] == ["top1"]
    assert [s.type for s in ds.steps] == ["resize"]  # the model entry's keys replace the definition's
    assert ds.annotations == [0, 1, 0]
    assert ds.files[0] == tmp_path / "data" / "imgs" / "img_0.png"
    assert not list(tmp_path.rglob("*.pickle"))  # AC's pickle is neither read nor written


def test_relative_paths_without_a_root_resolve_against_the_definitions_file(tmp_path):
    _images(tmp_path / "defs" / "imgs")
    defs = _write(tmp_path / "defs" / "d.yml", {"datasets": [{
        "name": "toy", "data_source": "imgs", "annotation_conversion": {"converter": "imagenet",
                                                                       "annotation_file": "val.txt"}}]})
    yml = _write(tmp_path / "model" / "ac.yml", _omz_style())
    assert len(_engine(yml, Roots(definitions=defs)).evaluation) == 3


def test_environment_variables_set_the_roots(tmp_path, monkeypatch):
    _images(tmp_path / "data" / "imgs")
    defs = _write(tmp_path / "d.yml", {"datasets": [{
        "name": "toy", "data_source": "imgs", "annotation_conversion": {"converter": "imagenet",
                                                                       "annotation_file": "val.txt"}}]})
    monkeypatch.setenv("DEFINITIONS_FILE", str(defs))
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    roots = Roots.from_env()
    assert roots == Roots(defs, tmp_path / "data", None)
    yml = _write(tmp_path / "m" / "ac.yml", _omz_style())
    eng = create_ac_engine(EngineConfig(type="accuracy_checker", ac_config=yml), "<command line>")
    assert len(eng.evaluation) == 3


def test_global_definitions_key_is_relative_to_the_yaml(tmp_path):
    _images(tmp_path / "m" / "imgs")
    _write(tmp_path / "m" / "defs.yml", {"datasets": [{
        "name": "toy", "data_source": "imgs", "annotation_conversion": {"converter": "imagenet",
                                                                       "annotation_file": "val.txt"}}]})
    yml = _write(tmp_path / "m" / "ac.yml", {**_omz_style(), "global_definitions": "defs.yml"})
    assert len(_engine(yml).evaluation) == 3


def test_a_named_dataset_without_definitions_says_how_to_give_them(tmp_path):
    yml = _write(tmp_path / "ac.yml", _omz_style())
    with pytest.raises(ConfigError, match=r"models\[1\]\.datasets\[0\]\.name: dataset 'toy' is defined by name "
                                          r"only; expected a definitions file .*--definitions FILE or the "
                                          "DEFINITIONS_FILE environment variable"):
        _engine(yml)
    defs = _write(tmp_path / "d.yml", {"datasets": [{"name": "other", "data_source": "x"}]})
    with pytest.raises(ConfigError, match=r"dataset 'toy' is not in .*d\.yml; expected one of: other"):
        _engine(yml, Roots(definitions=defs))


def test_a_pickle_only_dataset_is_refused_naming_the_key(tmp_path):
    defs = _write(tmp_path / "d.yml", {"datasets": [{"name": "toy", "data_source": "imgs",
                                                     "annotation": "toy.pickle"}]})
    yml = _write(tmp_path / "ac.yml", _omz_style())
    with pytest.raises(NotSupportedError, match=r"models\[1\]\.datasets\[0\]\.annotation: Accuracy Checker's "
                                                r"pre-converted annotation files \(pickles\) cannot be read"):
        _engine(yml, Roots(definitions=defs))


def test_launchers_for_another_device_are_skipped(tmp_path):
    _images(tmp_path / "imgs")
    doc = _omz_style()
    doc["models"].insert(1, {"name": "gpu-only", "launchers": [{"framework": "openvino", "device": "GPU",
                                                                "adapter": "classification"}],
                             "datasets": doc["models"][1]["datasets"]})
    for m in doc["models"]:
        m["datasets"][0].update(data_source="imgs", annotation_conversion={"converter": "imagenet",
                                                                           "annotation_file": "val.txt"})
    yml = _write(tmp_path / "ac.yml", doc)
    assert _engine(yml).name == "toy"
    doc["models"] = doc["models"][:2]
    with pytest.raises(ConfigError, match=r"no launcher with framework dlsdk or openvino for device CPU \(found "
                                          r"models\[0\]\.launchers\[0\]: tf; models\[1\]\.launchers\[0\]: openvino "
                                          r"on GPU\)"):
        _engine(_write(tmp_path / "ac.yml", doc))


@pytest.mark.skipif(not MOBILENET.is_file(), reason="needs ../shared/models/mobilenet_v2")
def test_published_omz_classification_yaml_runs_unchanged(tmp_path):
    """Open Model Zoo's mobilenet-v2-1.0-224 accuracy-check.yml, as published, with a definitions
    file naming a local ImageNet-format folder, through ``DEFINITIONS_FILE=... pot -e``."""
    env = dict(os.environ, DEFINITIONS_FILE=str(OMZ / "dataset_definitions.yml"))
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "pot_cli", "-q", "default", "-m", str(MOBILENET),
                          "--ac-config", str(OMZ / "mobilenet-v2-1.0-224.accuracy-check.yml"), "-e",
                          "--output-dir", str(out), "-d"], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    printed = dict(line.split(": ") for line in run.stdout.splitlines() if line.startswith("accuracy@"))
    assert set(printed) == {"accuracy@top1", "accuracy@top5"}
    report = json.loads(next(out.rglob("*.json")).read_text())
    assert report["evaluation"]["metrics"]["accuracy@top5"] == pytest.approx(float(printed["accuracy@top5"]))
    # 5 hand-labelled photos: FP32 (f32) has 4 right at top-1 (the clock is taken for a spotlight), 5 at top-5
    assert float(printed["accuracy@top1"]) >= 0.6 and float(printed["accuracy@top5"]) >= 0.8


def test_const_input_feeds_every_sample(tmp_path):
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    _images(tmp_path / "imgs")
    x = ops.parameter([1, 3, 8, 8], np.float32, name="x")
    info = ops.parameter([1, 3], np.float32, name="image_info")
    x.output(0).get_tensor().set_names({"x"})
    info.output(0).get_tensor().set_names({"image_info"})
    out = ops.add(ops.reduce_sum(x, [1, 2, 3]), ops.reduce_sum(info, [1]))
    model = ov.Model([ops.result(out)], [x, info], "two_inputs")
    doc = {"models": [{"name": "m", "launchers": [{"framework": "openvino", "adapter": "classification", "inputs": [
        {"name": "image_info", "type": "CONST_INPUT", "value": [[8, 8, 1]]}]}],
        "datasets": [{"data_source": "imgs", "annotation_conversion": {"converter": "imagenet",
                                                                       "annotation_file": "val.txt"},
                      "metrics": [{"type": "accuracy"}]}]}]}
    eng = _engine(_write(tmp_path / "ac.yml", doc))
    eng.bind(model)
    sample = eng.evaluation.load(1)
    assert sample["x"].shape == (1, 3, 8, 8)
    assert sample["image_info"].tolist() == [[8.0, 8.0, 1.0]] and sample["image_info"].dtype == np.float32
    meta = eng.evaluation.metas[1]
    assert meta.image_size == (8, 8, 3) and meta.input_size == (8, 8) and meta.identifier == "img_1.png"
    doc["models"][0]["launchers"][0]["inputs"][0]["name"] = "missing"
    eng = _engine(_write(tmp_path / "ac.yml", doc))
    with pytest.raises(DatasetError, match=r"CONST_INPUT missing: the model has no such input; expected one of: "
                                           "image_info, x"):
        eng.bind(model)


def test_missing_data_paths_name_their_key_and_the_roots(tmp_path):
    doc = {"models": [{"name": "m", "launchers": [{"framework": "openvino", "adapter": "classification"}],
                       "datasets": [{"data_source": "nowhere", "annotation_conversion": {
                           "converter": "imagenet", "annotation_file": "missing.txt"},
                           "metrics": [{"type": "accuracy"}]}]}]}
    yml = _write(tmp_path / "ac.yml", doc)
    with pytest.raises(ConfigError) as e:
        _engine(yml, Roots(data_dir=tmp_path / "data"))
    src = f"{yml}: models[0].datasets[0]"
    assert e.value.problems == [
        f"{src}.annotation_conversion.annotation_file: no such file: {tmp_path / 'data' / 'missing.txt'}; relative "
        "paths resolve against --data-dir / DATA_DIR when set, else the working directory or the folder of the file "
        "that holds them",
        f"{src}.data_source: no such file or folder: {tmp_path / 'data' / 'nowhere'}; relative paths resolve against "
        "--data-dir / DATA_DIR when set, else the working directory or the folder of the file that holds them"]
    assert e.value.exit_code == 2


def test_a_missing_definitions_file_says_where_it_was_given(tmp_path):
    yml = _write(tmp_path / "ac.yml", _omz_style())
    with pytest.raises(ConfigError, match=r"nope\.yml: no such dataset definitions file \(given by --definitions or "
                                          r"the DEFINITIONS_FILE environment variable\)"):
        _engine(yml, Roots(definitions=tmp_path / "nope.yml"))
