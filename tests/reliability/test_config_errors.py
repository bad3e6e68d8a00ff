"""Case 1: bad configurations end in exit code 2 with the file, the key path and the allowed values.

The loader's own unit tests (``tests/config/test_loader.py``) pin each message in detail; here the
same kinds of mistakes go through the ``pot`` command and the reliability contract is checked:
exit 2, one line per problem, no traceback, inputs unchanged, nothing written.

Case 7 (property-based) lives in ``tests/config/test_loader.py``:
``test_any_json_gives_config_or_config_error`` (any JSON-like value) and
``test_mutated_valid_config_gives_config_or_config_error`` (a valid config with one key deleted or
replaced) run the loader under hypothesis and accept only a valid config or a ConfigError;
:func:`test_property_based_loader_tests_exist` below guards that they stay there.
"""
from __future__ import annotations

import json

import pytest

from reliability.helpers import assert_failed_cleanly, pot, snapshot


def _config(ws, **params) -> dict:
    return {"model": {"model_name": "tiny", "model": str(ws.xml)},
            "engine": {"type": "simplified", "data_source": str(ws.images)},
            "compression": {"target_device": "ANY",
                            "algorithms": [{"name": "DefaultQuantization", "params": params}]}}


CASES = {
    # name: (file name, content as text or a function ws -> dict, expected fragments)
    "malformed_json": ("bad.json", lambda ws: '{"model": {"model": "m.xml",}\n  "engine" {}\n}\n',
                       ["bad.json: line 2, column 3: Expecting ',' delimiter"]),
    "malformed_yaml": ("bad.yml", lambda ws: "model:\n  model: m.xml\n  weights: [m.bin\nengine: {type: simplified}\n",
                       ["bad.yml: line 4, column 7: expected ',' or ']', but got ':'"]),
    "unknown_key": ("c.json", lambda ws: _config(ws, stat_subset_sise=10),
                    ["c.json: compression.algorithms[0].params.stat_subset_sise: unknown key",
                     "did you mean 'stat_subset_size'?", "expected one of: activations,"]),
    "wrong_type": ("c.json", lambda ws: _config(ws, stat_subset_size="300"),
                   ["c.json: compression.algorithms[0].params.stat_subset_size: wrong type: got string \"300\"; "
                    "expected integer"]),
    "stat_subset_size_zero": ("c.yaml", lambda ws: _config(ws, stat_subset_size=0),
                              ["c.yaml: compression.algorithms[0].params.stat_subset_size: value 0 is out of range; "
                               "expected >= 1"]),
    "stat_subset_size_negative": ("c.json", lambda ws: _config(ws, stat_subset_size=-5),
                                  ["compression.algorithms[0].params.stat_subset_size: value -5 is out of range; "
                                   "expected >= 1"]),
    "unknown_preset": ("c.json", lambda ws: _config(ws, preset="fast"),
                       ["c.json: compression.algorithms[0].params.preset: invalid value \"fast\"; "
                        "expected one of: performance, mixed, accuracy"]),
    "unknown_target_device": ("c.json", lambda ws: {**_config(ws), "compression": {
        "target_device": "TPU", "algorithms": [{"name": "DefaultQuantization"}]}},
        ["c.json: compression.target_device: invalid value \"TPU\"", "expected one of: ANY, CPU, CPU_SPR, GPU"]),
    "unknown_algorithm": ("c.json", lambda ws: {**_config(ws), "compression": {
        "algorithms": [{"name": "DefaultQuantisation"}]}},
        ["c.json: compression.algorithms[0].name: invalid value \"DefaultQuantisation\"",
         "did you mean 'DefaultQuantization'?", "expected one of: DefaultQuantization, MinMaxQuantization"]),
    "missing_model": ("c.json", lambda ws: {**_config(ws), "model": {"model": str(ws.root / "nope.xml")}},
                      ["c.json: model.model: file not found: ", "nope.xml"]),
    "missing_weights": ("c.json", lambda ws: {**_config(ws), "model": {
        "model": str(ws.xml), "weights": str(ws.root / "nope.bin")}},
        ["c.json: model.weights: file not found: ", "nope.bin"]),
    "weights_not_a_bin": ("c.json", lambda ws: {**_config(ws), "model": {"model": str(ws.xml), "weights": str(ws.xml)}},
                          ["c.json: model.weights: not a .bin file: ", "tiny.xml; expected a path ending in .bin"]),
    "model_not_an_xml": ("c.json", lambda ws: {**_config(ws), "model": {"model": str(ws.bin)}},
                         ["c.json: model.model: not a .xml file: ", "tiny.bin; expected a path ending in .xml"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_config_exits_2_naming_file_key_and_allowed_values(ws, case):
    name, content, fragments = CASES[case]
    config = ws.inputs / name
    body = content(ws)
    config.write_text(body if isinstance(body, str) else json.dumps(body, indent=2), encoding="utf-8")
    before = ws.before()
    result = pot("-c", config, "--output-dir", ws.out)
    line = assert_failed_cleanly(result.exit_code, result.stderr, 2, fragments, ws.out, before)
    assert line.startswith(str(config)), line
    assert not ws.out.exists(), "nothing may be created for an invalid config"


def test_several_problems_are_reported_at_once_one_line_each(ws):
    config = ws.inputs / "c.json"
    raw = _config(ws, preset="fast", stat_subset_size=0)
    raw["compression"]["target_device"] = "TPU"
    config.write_text(json.dumps(raw))
    before = ws.before()
    result = pot("-c", config, "--output-dir", ws.out)
    assert result.exit_code == 2
    assert "Traceback" not in result.stderr
    body = result.stderr.split("ERROR: ", 1)[1].strip().splitlines()
    assert len(body) == 3 and all(ln.startswith(f"{config}: compression.") for ln in body), body
    assert snapshot(ws.inputs) == before and not ws.out.exists()


def test_property_based_loader_tests_exist():
    """Case 7 is covered by tests/config/test_loader.py (hypothesis); see the module docstring."""
    from config import test_loader

    for name in ("test_any_json_gives_config_or_config_error",
                 "test_mutated_valid_config_gives_config_or_config_error"):
        assert getattr(getattr(test_loader, name), "is_hypothesis_test", False), name


@pytest.mark.parametrize("flag,value,allowed", [
    ("--preset", "fast", "'performance', 'mixed'"),
    ("--target-device", "TPU", "'any', 'cpu', 'cpu_spr', 'gpu', 'npu'"),
])
def test_bad_flag_value_exits_2_with_the_allowed_values(ws, flag, value, allowed):
    before = ws.before()
    result = pot("-q", "default", "-m", ws.xml, "--data-source", ws.images, "--output-dir", ws.out, flag, value)
    assert result.exit_code == 2
    assert f"Error: Invalid value for '{flag}': '{value}' is not one of {allowed}" in result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(ws.inputs) == before and not ws.out.exists()
