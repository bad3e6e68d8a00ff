"""configs/examples/pot/: copies of the original POT example configs, re-pointed to ../shared.

Each copy keeps every algorithm and params key of the original and names it in a leading
``/* from ... */`` comment. Parsing and the schema are checked with a stand-in IR; loading the
files as they are needs ``../shared`` (skipped when it is absent).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from pot_cli.config import (
    RangeEstimator,
    load_config,
    load_config_file,
    strip_json_comments,
    validate_config,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "configs" / "examples" / "pot"
ORIGINAL_DIR = "tools/pot/configs/examples/quantization/"

#: file -> (original path under ORIGINAL_DIR, the algorithms as in the original)
EXPECTED = {
    "se_resnet50_pytorch_int8.json": ("classification/se_resnet50_pytorch_int8.json", [
        {"name": "MinMaxQuantization", "params": {
            "target_device": "CPU", "preset": "mixed", "stat_subset_size": 1000,
            # the original's 32 se_resnet50 node names match no mobilenet_v2 node: emptied
            "ignored": {"scope": []},
            "weights": {"bits": 8, "mode": "symmetric", "granularity": "perchannel"},
            "activations": {"bits": 8, "mode": "symmetric", "granularity": "pertensor"}}},
        {"name": "FastBiasCorrection", "params": {"stat_subset_size": 1000}},
    ]),
    "mobilenetV2_tf_int8_sqnr.json": ("classification/mobilenetV2_tf_int8_sqnr.json", [
        {"name": "DefaultQuantization", "params": {"preset": "performance", "stat_subset_size": 300}},
        {"name": "QuantNoiseEstimator", "params": {
            "stat_subset_size": 100, "mode": "full_fq_noise", "type": "sqnr",
            "results_dump_filename": "./mobilenetv2_sqnr_data.csv"}},
    ]),
    "ssd_mobilenetv1_int8.json": ("object_detection/ssd_mobilenetv1_int8.json", [
        {"name": "MinMaxQuantization", "params": {
            "preset": "mixed", "range_estimator": {"preset": "quantile"},
            "stat_subset_size": 1000}},
    ]),
}


def test_every_example_is_listed():
    assert sorted(p.name for p in EXAMPLES.glob("*.json")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_header_names_the_original(name):
    first = (EXAMPLES / name).read_text(encoding="utf-8").splitlines()[0]
    match = re.fullmatch(r"/\* from openvinotoolkit/openvino: (\S+) \(commit [0-9a-f]{40}\) \*/",
                         first)
    assert match, first
    assert match.group(1) == ORIGINAL_DIR + EXPECTED[name][0]
    assert strip_json_comments(first).strip() == ""


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_algorithms_kept_and_schema_valid(tmp_path, name):
    raw = load_config_file(EXAMPLES / name)
    assert raw["compression"]["algorithms"] == EXPECTED[name][1]
    assert raw["engine"] == {"type": "simplified",
                             "data_source": "../../../../shared/data/images"}
    assert raw["model"]["model"] == "../../../../shared/models/mobilenet_v2/mobilenet_v2.xml"
    # stand-in IR, so this part runs without ../shared
    (tmp_path / "m.xml").touch()
    (tmp_path / "m.bin").touch()
    raw["model"].update(model=str(tmp_path / "m.xml"), weights=str(tmp_path / "m.bin"))
    raw["engine"]["data_source"] = str(tmp_path)
    cfg = validate_config(raw, name)
    assert [a.name for a in cfg.compression.algorithms] == \
        [a["name"] for a in EXPECTED[name][1]]


def test_chain_example_typed_params(tmp_path):
    raw = load_config_file(EXAMPLES / "se_resnet50_pytorch_int8.json")
    (tmp_path / "m.xml").touch()
    (tmp_path / "m.bin").touch()
    raw["model"].update(model=str(tmp_path / "m.xml"), weights=str(tmp_path / "m.bin"))
    mm, fbc = validate_config(raw, "c.json").compression.algorithms
    assert (mm.params.preset, mm.params.stat_subset_size, mm.params.weights.granularity,
            mm.params.activations.mode) == ("mixed", 1000, "perchannel", "symmetric")
    assert (fbc.name, fbc.params.stat_subset_size, fbc.params.threshold) == \
        ("FastBiasCorrection", 1000, 2.0)
    assert fbc.params.target_device == "CPU"  # from the MinMax params, as POT read it


def test_top_level_range_estimator_example_typed_params(tmp_path):
    raw = load_config_file(EXAMPLES / "ssd_mobilenetv1_int8.json")
    (tmp_path / "m.xml").touch()
    (tmp_path / "m.bin").touch()
    raw["model"].update(model=str(tmp_path / "m.xml"), weights=str(tmp_path / "m.bin"))
    [mm] = validate_config(raw, "c.json").compression.algorithms
    assert mm.params.activations.range_estimator == RangeEstimator(preset="quantile")
    assert mm.params.weights.range_estimator == RangeEstimator(preset="quantile")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_loads_from_any_directory(shared_dir, tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)  # paths fall back to the file's folder
    cfg = load_config(EXAMPLES / name)
    shared = shared_dir.resolve()
    assert cfg.model.model == shared / "models" / "mobilenet_v2" / "mobilenet_v2.xml"
    assert cfg.model.weights == shared / "models" / "mobilenet_v2" / "mobilenet_v2.bin"
    assert cfg.engine.data_source == str(shared / "data" / "images")
    assert [a.name for a in cfg.compression.algorithms] == [a["name"] for a in EXPECTED[name][1]]
