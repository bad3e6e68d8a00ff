"""Config files -> validated frozen dataclasses: every invalid sample pins its exact message."""
from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pot_cli.config import (
    PotConfig,
    QuantizationParams,
    load_config,
    load_config_file,
    strip_json_comments,
    validate_config,
)
from pot_cli.errors import ConfigError

CLI = "<command line>"



def minimal(xml: Path, **compression) -> dict:
    """The smallest valid config, as the CLI builds it from flags."""
    return {
        "model": {"model": str(xml)},
        "engine": {"type": "simplified", "data_source": str(xml.parent)},
        "compression": {"algorithms": [{"name": "DefaultQuantization", "params": {}}],
                        **compression},
    }


def with_params(xml: Path, params: dict, name: str = "DefaultQuantization") -> dict:
    raw = minimal(xml)
    raw["compression"]["algorithms"][0] = {"name": name, "params": params}
    return raw


def error_of(raw, source: str = CLI) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        validate_config(raw, source)
    return info.value


# --- reading files ----------------------------------------------------------------------------

def test_json_with_comments_and_trailing_commas_parses(tmp_path, ir):
    text = """/* POT-style header
    spanning lines */
{
    "model": {"model": "m.xml", // line comment
              "model_name": "net"},
    "engine": {"type": "simplified", "data_source": "http://x//y/*z*/"},
    "compression": {"algorithms": [{"name": "DefaultQuantization", "params": {},},],},
}
"""
    path = tmp_path / "c.json"
    path.write_text(text)
    raw = load_config_file(path)
    assert raw["engine"]["data_source"] == "http://x//y/*z*/"
    assert raw["model"] == {"model": "m.xml", "model_name": "net"}


def test_comment_stripping_keeps_every_position():
    text = '{"a": "//not", /* x\n y */ "b": 1, // c\n}'
    out = strip_json_comments(text)
    assert len(out) == len(text)
    assert [i for i, c in enumerate(out) if c == "\n"] == [i for i, c in enumerate(text)
                                                           if c == "\n"]
    assert json.loads(out) == {"a": "//not", "b": 1}


def test_escaped_quote_inside_string_does_not_end_it():
    assert json.loads(strip_json_comments(r'{"a": "x\" // y"}')) == {"a": 'x" // y'}


def test_malformed_json_reports_line_and_column(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{\n  "model": {"model": "m.xml"}\n  "engine": {}\n}\n')
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    assert str(info.value) == f"{path}: line 3, column 3: Expecting ',' delimiter"
    assert info.value.exit_code == 2


def test_json_error_position_counts_comment_text(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{ /* comment */ "a": 1,\n  // x\n  "b": tru }\n')
    with pytest.raises(ConfigError, match=r"c\.json: line 3, column 8: Expecting value$"):
        load_config_file(path)


def test_unterminated_block_comment(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"a": 1}\n  /* open')
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    assert str(info.value) == (f"{path}: line 2, column 3: unterminated /* comment; "
                               "expected a closing */")


def test_malformed_yaml_reports_line_and_column(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  model: m.xml\n engine: x\n")
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    assert str(info.value) == (f"{path}: line 3, column 2: expected <block end>, "
                               "but found '<block mapping start>'")


def test_yaml_config_loads(tmp_path, ir):
    path = tmp_path / "c.yml"
    path.write_text("model:\n  model: m.xml\nengine:\n  data_source: .\ncompression:\n"
                    "  algorithms:\n    - name: DefaultQuantization\n")
    assert load_config(path).model.model == ir


def test_missing_file(tmp_path):
    path = tmp_path / "nope.json"
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    assert str(info.value) == f"{path}: file not found"


def test_unsupported_extension(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("")
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    assert str(info.value) == f"{path}: unsupported file type '.toml'; expected one of: " \
                              ".json, .yaml, .yml"


def test_top_level_must_be_an_object(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    assert str(info.value) == (f"{path}: top level is array; expected an object with model, "
                               "engine and compression")


def test_duplicate_json_key(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"model": {}, "model": {}}')
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    assert str(info.value) == f'{path}: duplicate key "model"; expected each key once'


# --- schema messages --------------------------------------------------------------------------

def test_unknown_key_with_did_you_mean(ir):
    err = error_of(with_params(ir, {"presett": "mixed"}))
    assert str(err) == (
        "<command line>: compression.algorithms[0].params.presett: unknown key (did you mean "
        "'preset'?); expected one of: activations, apply_for_all_nodes, dump_intermediate_model, "
        "ignored, inplace_statistics, model_type, preset, quantize_recurrent, range_estimator, "
        "saturation_fix, seed, "
        "shuffle_data, smooth_quant_alpha, speed_check, stat_batch_size, stat_subset_size, target_device, threshold, "
        "use_fast_bias, use_layerwise_tuning, weights")


@pytest.mark.parametrize("where", ["compression", "params", "both"])
def test_model_type_and_target_device_in_algorithm_params(ir, where):
    # POT's docs list target_device and model_type among an algorithm's params; compression's win
    raw = minimal(ir)
    params = raw["compression"]["algorithms"][0].setdefault("params", {})
    if where in ("compression", "both"):
        raw["compression"].update(model_type="transformer", target_device="CPU")
    if where in ("params", "both"):
        params.update(model_type="transformer" if where == "params" else None,
                      target_device="GPU" if where == "both" else "CPU")
    cfg = validate_config(raw, "<command line>")
    assert cfg.compression.target_device == "CPU"
    assert cfg.compression.model_type == "transformer"
    assert cfg.compression.algorithms[0].params.model_type == "transformer"
    assert cfg.compression.algorithms[0].params.target_device == "CPU"


def test_unknown_top_level_section(ir):
    raw = minimal(ir)
    raw["compresion"] = raw.pop("compression")
    assert error_of(raw).problems == [
        "<command line>: compresion: unknown key (did you mean 'compression'?); expected one "
        "of: compression, engine, model",
        "<command line>: compression: missing required key",
    ]


def test_key_of_another_algorithm_is_rejected(ir):
    err = error_of(with_params(ir, {"preset": "mixed"}, name="FastBiasCorrection"))
    assert str(err) == (
        "<command line>: compression.algorithms[0].params.preset: unknown key; expected one "
        "of: apply_for_all_nodes, dump_intermediate_model, ignored, inplace_statistics, "
        "model_type, seed, shuffle_data, stat_batch_size, stat_subset_size, target_device, threshold")


def test_wrong_type(ir):
    err = error_of(with_params(ir, {"stat_subset_size": "300"}))
    assert str(err) == ('<command line>: compression.algorithms[0].params.stat_subset_size: '
                        'wrong type: got string "300"; expected integer')


def test_bad_enum_lists_allowed_values(ir):
    err = error_of(with_params(ir, {"preset": "perf"}))
    assert str(err) == ('<command line>: compression.algorithms[0].params.preset: invalid value '
                        '"perf" (did you mean \'performance\'?); expected one of: performance, '
                        'mixed, accuracy')


def test_bad_target_device_case(ir):
    err = error_of(minimal(ir, target_device="cpu"))
    assert str(err) == ('<command line>: compression.target_device: invalid value "cpu" (did '
                        "you mean 'CPU'?); expected one of: ANY, CPU, CPU_SPR, GPU, NPU, VPU, "
                        "GNA, GNA3, GNA3.5")


def test_stat_subset_size_zero_is_out_of_range(ir):
    err = error_of(with_params(ir, {"stat_subset_size": 0}))
    assert str(err) == ("<command line>: compression.algorithms[0].params.stat_subset_size: "
                        "value 0 is out of range; expected >= 1")


def test_missing_required_key(ir):
    raw = minimal(ir)
    del raw["model"]["model"]
    assert str(error_of(raw)) == "<command line>: model.model: missing required key"


def test_non_finite_number(ir):
    err = error_of(with_params(ir, {"threshold": math.inf}))
    assert str(err) == ("<command line>: compression.algorithms[0].params.threshold: value "
                        "Infinity is not a finite number; expected a number")


def test_several_errors_reported_at_once_sorted(tmp_path, ir):
    path = tmp_path / "c.json"
    raw = with_params(ir, {"stat_subset_size": 0, "seed": -1, "preset": "fast",
                           "weights": {"mode": "sym", "bitz": 8}})
    raw["compression"]["target_device"] = "CPUU"
    raw["engine"]["devise"] = "CPU"
    path.write_text(json.dumps(raw))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    p = f"{path}: compression.algorithms[0].params"
    expected = [
        f"{path}: compression.algorithms[0].params.preset: invalid value \"fast\"; expected one "
        "of: performance, mixed, accuracy",
        f"{p}.seed: value -1 is out of range; expected >= 0",
        f"{p}.stat_subset_size: value 0 is out of range; expected >= 1",
        f"{p}.weights.bitz: unknown key (did you mean 'bits'?); expected one of: bits, "
        "granularity, level_high, level_low, mode, range_estimator",
        f"{p}.weights.mode: invalid value \"sym\" (did you mean 'symmetric'?); expected one of: "
        "symmetric, asymmetric",
        f"{path}: compression.target_device: invalid value \"CPUU\" (did you mean 'CPU'?); "
        "expected one of: ANY, CPU, CPU_SPR, GPU, NPU, VPU, GNA, GNA3, GNA3.5",
        f"{path}: engine.devise: unknown key (did you mean 'device'?); expected one of: config, "
        "data_source, data_type, datasets, device, eval_requests_number, generate_data, launchers, layout, "
        "models, name, shape, stat_requests_number, type",
    ]
    assert info.value.problems == expected
    assert str(info.value) == "\n".join(expected)


def test_nested_range_estimator_paths(ir):
    params = {"activations": {"range_estimator": {"max": {"aggregator": "meen",
                                                          "outlier_prob": 2}}},
              "weights": {"range_estimator": {"min": {"aggregator": "mean"}}}}
    err = error_of(with_params(ir, params))
    p = "<command line>: compression.algorithms[0].params"
    assert err.problems == [
        f"{p}.activations.range_estimator.max.aggregator: invalid value \"meen\" (did you mean "
        "'mean'?); expected one of: mean, max, min, median, mean_no_outliers, "
        "median_no_outliers, hl_estimator",
        f"{p}.activations.range_estimator.max.outlier_prob: value 2 is out of range; "
        "expected <= 1",
        f"{p}.weights.range_estimator.min.aggregator: unknown key; expected one of: "
        "clipping_value, granularity, outlier_prob, type",
    ]


def test_top_level_not_an_object():
    assert str(error_of([1])) == ("<command line>: (top level): wrong type: got array; "
                                  "expected object")


# --- semantic checks --------------------------------------------------------------------------

def test_missing_model_file(tmp_path):
    raw = minimal(tmp_path / "absent.xml")
    # the .bin implied beside a missing .xml is not a second problem
    assert error_of(raw).problems == [f"<command line>: model.model: file not found: {tmp_path / 'absent.xml'}"]


def test_missing_weights_file(tmp_path, ir):
    raw = minimal(ir)
    raw["model"]["weights"] = str(tmp_path / "other.bin")
    assert str(error_of(raw)) == (f"<command line>: model.weights: file not found: "
                                  f"{tmp_path / 'other.bin'}")


def test_model_must_be_xml(tmp_path, ir):
    raw = minimal(ir)
    raw["model"]["model"] = str(tmp_path / "m.onnx")
    raw["model"]["weights"] = str(tmp_path / "m.bin")
    assert str(error_of(raw)) == (f"<command line>: model.model: not a .xml file: "
                                  f"{tmp_path / 'm.onnx'}; expected a path ending in .xml")


def test_simplified_engine_needs_data_source(ir):
    raw = minimal(ir)
    del raw["engine"]["data_source"]
    assert str(error_of(raw)) == ("<command line>: engine.data_source: missing required key; "
                                  "expected a directory or glob of inputs for engine type "
                                  "'simplified'")


def test_accuracy_checker_engine_needs_config(ir):
    raw = minimal(ir)
    raw["engine"] = {"type": "accuracy_checker"}
    assert str(error_of(raw)) == (
        "<command line>: engine.config: missing required key; expected an Accuracy Checker "
        "config (or inline datasets) for engine type 'accuracy_checker'")


def test_accuracy_checker_config_must_exist(tmp_path, ir):
    raw = minimal(ir)
    raw["engine"] = {"config": str(tmp_path / "ac.yml")}
    assert str(error_of(raw)) == (f"<command line>: engine.config: file not found: "
                                  f"{tmp_path / 'ac.yml'}")


def test_accuracy_aware_needs_accuracy_checker_engine(ir):
    err = error_of(with_params(ir, {"maximal_drop": 0.02}, name="AccuracyAwareQuantization"))
    assert str(err) == ("<command line>: compression.algorithms[0].name: "
                        "AccuracyAwareQuantization needs an engine with metrics; expected "
                        "engine type 'accuracy_checker'")


def test_levels_must_be_ordered(ir):
    err = error_of(with_params(ir, {"weights": {"level_low": 5, "level_high": 5}}))
    assert str(err) == ("<command line>: compression.algorithms[0].params.weights.level_high: "
                        "value 5 is not above level_low 5; expected level_high > level_low")


@pytest.mark.parametrize("levels,message", [
    ({"level_low": 1, "level_high": 255}, "level_low: value 1 is above 0"),
    ({"level_high": -1}, "level_high: value -1 is not above 0"),
])
def test_levels_must_contain_zero(ir, levels, message):
    err = error_of(with_params(ir, {"activations": levels}))
    assert str(err) == (f"<command line>: compression.algorithms[0].params.activations.{message}; "
                        "expected level_low <= 0 < level_high (zero must be one of the levels)")


# --- dataclasses, defaults, normalisation ------------------------------------------------------

def test_defaults_applied(ir):
    cfg = validate_config(minimal(ir), CLI)
    assert cfg.model.model_name == "m"
    assert cfg.model.weights == ir.with_suffix(".bin")
    assert cfg.engine.type == "simplified" and cfg.engine.device == "CPU"
    c = cfg.compression
    assert (c.target_device, c.model_type, c.dump_intermediate_model, c.inplace_statistics) == \
        ("ANY", None, False, True)
    assert c.algorithms[0].params == QuantizationParams()
    p = c.algorithms[0].params
    assert (p.preset, p.stat_subset_size, p.stat_batch_size, p.shuffle_data, p.seed) == \
        ("performance", 300, 1, False, 0)
    assert (p.use_fast_bias, p.saturation_fix, p.threshold, p.maximal_drop) == \
        (True, None, 2.0, 0.01)  # saturation_fix None: the device's default


def test_engine_type_defaults(tmp_path, ir):
    raw = minimal(ir)
    del raw["engine"]["type"]
    assert validate_config(raw, CLI).engine.type == "simplified"
    (tmp_path / "ac.yml").touch()
    raw["engine"] = {"config": str(tmp_path / "ac.yml"), "stat_requests_number": 4}
    engine = validate_config(raw, CLI).engine
    assert (engine.type, engine.ac_config, engine.stat_requests_number) == \
        ("accuracy_checker", tmp_path / "ac.yml", 4)


def test_inline_accuracy_checker_is_read_only(ir):
    raw = minimal(ir)
    raw["engine"] = {"datasets": [{"name": "d", "preprocessing": [{"type": "resize"}]}]}
    inline = validate_config(raw, CLI).engine.ac_inline
    assert inline["datasets"][0]["preprocessing"][0]["type"] == "resize"
    with pytest.raises(TypeError):
        inline["datasets"] = ()


def test_bias_correction_threshold_default(ir):
    cfg = validate_config(with_params(ir, {}, name="BiasCorrection"), CLI)
    assert cfg.compression.algorithms[0].params.threshold == 2.0
    cfg = validate_config(with_params(ir, {"use_fast_bias": False}), CLI)
    assert cfg.compression.algorithms[0].params.threshold == 2.0
    cfg = validate_config(with_params(ir, {"use_fast_bias": False, "threshold": 1000}), CLI)
    assert cfg.compression.algorithms[0].params.threshold == 1000.0


def test_vpu_normalised_to_npu_and_aliases(ir):
    raw = with_params(ir, {"preset": "accuracy"})
    raw["compression"].update(target_device="VPU", model_type="None")
    cfg = validate_config(raw, CLI)
    assert cfg.compression.target_device == "NPU"
    assert cfg.compression.model_type is None
    params = cfg.compression.algorithms[0].params
    assert (params.preset, params.target_device) == ("mixed", "NPU")
    assert cfg.raw["compression"]["target_device"] == "NPU"


def test_typed_overrides_and_ignored(ir):
    params = {"ignored": {"scope": ["conv1"], "operations": [{"type": "Add",
                                                              "attributes": {"axis": 1}}]},
              "activations": {"bits": 8, "mode": "asymmetric", "range_estimator": {
                  "preset": "quantile", "max": {"type": "quantile", "outlier_prob": 1e-4,
                                                "aggregator": "mean", "clipping_value": 6}}},
              "stat_subset_size": 10.0}
    p = validate_config(with_params(ir, params), CLI).compression.algorithms[0].params
    assert p.ignored.scope == ("conv1",)
    assert p.ignored.operations[0].type == "Add"
    assert dict(p.ignored.operations[0].attributes) == {"axis": 1}
    re = p.activations.range_estimator
    assert (re.preset, re.max.type, re.max.outlier_prob, re.max.clipping_value, re.min) == \
        ("quantile", "quantile", 1e-4, 6.0, None)
    assert p.stat_subset_size == 10 and isinstance(p.stat_subset_size, int)


def test_config_is_frozen(ir):
    cfg = validate_config(minimal(ir), CLI)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model.model_name = "x"  # type: ignore[misc]


def test_raw_as_used_is_json_and_revalidates(ir):
    raw = with_params(ir, {"preset": "mixed"})
    original = copy.deepcopy(raw)
    cfg = validate_config(raw, CLI)
    assert raw == original, "the input must not be mutated"
    again = validate_config(json.loads(json.dumps(cfg.raw)), CLI)
    assert (again.model, again.engine, again.compression) == \
        (cfg.model, cfg.engine, cfg.compression)
    assert cfg.raw["compression"]["algorithms"][0]["params"]["stat_subset_size"] == 300


# --- paths ------------------------------------------------------------------------------------

def test_paths_relative_to_config_dir(tmp_path, monkeypatch):
    conf_dir = tmp_path / "conf"
    (conf_dir / "models").mkdir(parents=True)
    (conf_dir / "models" / "net.xml").touch()
    (conf_dir / "models" / "net.bin").touch()
    (conf_dir / "images").mkdir()
    path = conf_dir / "c.json"
    path.write_text(json.dumps({
        "model": {"model": "models/net.xml"},
        "engine": {"data_source": "images"},
        "compression": {"algorithms": [{"name": "DefaultQuantization"}]}}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(Path("../conf/c.json"))
    assert cfg.model.model == conf_dir / "models" / "net.xml"
    assert cfg.model.weights == conf_dir / "models" / "net.bin"
    assert cfg.model.model_name == "net"
    assert cfg.engine.data_source == str(conf_dir / "images")


def test_existing_path_in_cwd_wins(tmp_path, monkeypatch):
    for d in ("conf", "work"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "m.xml").touch()
        (tmp_path / d / "m.bin").touch()
    path = tmp_path / "conf" / "c.yaml"
    path.write_text("model: {model: m.xml}\nengine: {data_source: '*.xml'}\n"
                    "compression: {algorithms: [{name: MinMaxQuantization}]}\n")
    monkeypatch.chdir(tmp_path / "work")
    cfg = load_config(path)
    assert cfg.model.model == tmp_path / "work" / "m.xml"
    assert cfg.engine.data_source == str(tmp_path / "work" / "*.xml")


def test_home_is_expanded(tmp_path, monkeypatch, ir):
    monkeypatch.setenv("HOME", str(tmp_path))
    raw = minimal(ir)
    raw["model"]["model"] = "~/m.xml"
    assert validate_config(raw, CLI).model.model == ir


def test_command_line_source_resolves_against_cwd(tmp_path, monkeypatch, ir):
    monkeypatch.chdir(tmp_path)
    raw = {"model": {"model_name": "net", "model": "m.xml", "weights": "m.bin"},
           "engine": {"type": "simplified", "data_source": "."},
           "compression": {"target_device": "ANY", "algorithms": [
               {"name": "DefaultQuantization",
                "params": {"preset": "performance", "stat_subset_size": 300}}]}}
    cfg = validate_config(raw, source=CLI)
    assert isinstance(cfg, PotConfig)
    assert (cfg.model.model, cfg.model.weights, cfg.engine.data_source, cfg.source) == \
        (ir, tmp_path / "m.bin", str(tmp_path), CLI)


def test_pot_spec_style_config_runs_unchanged(tmp_path, ir):
    (tmp_path / "ac.yml").touch()
    path = tmp_path / "aa.json"
    path.write_text("""{
    /* Model parameters */
    "model": {"model_name": "model_name", "model": "m.xml", "weights": "m.bin"},
    "engine": {"stat_requests_number": 8, "eval_requests_number": 8, "config": "ac.yml"},
    "compression": {
        "target_device": "ANY",
        "inplace_statistics": true,
        "model_type": "None", // optional
        "algorithms": [{
            "name": "AccuracyAwareQuantization",
            "params": {
                "ranking_subset_size": 300, "max_iter_num": 20, "maximal_drop": 0.005,
                "drop_type": "absolute", "use_prev_if_drop_increase": false,
                "base_algorithm": "DefaultQuantization", "annotation_free": false,
                "annotation_conf_threshold": 0.6, "convert_to_mixed_preset": false,
                "metrics": [{"name": "accuracy", "baseline_value": 0.72}],
                "metric_subset_ratio": 0.5, "tune_hyperparams": false,
                "ignored": {"scope": ["<NODE_NAME>"], "operations": [
                    {"type": "<NODE_TYPE>", "attributes": {"<NAME>": "<VALUE>"}},
                    {"type": "<NODE_TYPE>"}]},
                "preset": "mixed", "stat_subset_size": 100,
                "weights": {"bits": 8, "mode": "symmetric", "granularity": "perchannel",
                            "level_low": -127, "level_high": 127,
                            "range_estimator": {"max": {"type": "quantile", "outlier_prob": 0.0001}}},
                "activations": {"bits": 8, "mode": "asymmetric", "granularity": "pertensor",
                                "range_estimator": {"preset": "quantile",
                                    "min": {"aggregator": "mean", "type": "quantile", "outlier_prob": 0.0001},
                                    "max": {"aggregator": "mean", "type": "quantile", "outlier_prob": 0.0001}}}
            }
        }]
    }
}""")
    params = load_config(path).compression.algorithms[0].params
    assert (params.maximal_drop, params.max_iter_num, params.metrics[0].baseline_value) == \
        (0.005, 20, 0.72)
    assert params.use_prev_if_drop_increase is False


# --- property: only PotConfig or ConfigError ---------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 400) | st.floats(allow_nan=True)
    | st.text(max_size=12) | st.sampled_from(["performance", "CPU", "VPU", "m.xml", "mean"]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10) | st.sampled_from(
        ["model", "engine", "compression", "algorithms", "name", "params", "preset", "type",
         "data_source", "weights", "activations", "range_estimator", "ignored"]),
        children, max_size=4),
    max_leaves=20,
)


plausible = st.sampled_from([True, False, 0, 1, 8, 300, 0.5, -127, 127, "mixed", "performance",
                             "symmetric", "asymmetric", "perchannel", "quantile", "max", "mean",
                             "GPU", "VPU", "None", None, {}, [], ["a"], "NCHW", [1, 3, 4, 4]])


def _check(raw) -> None:
    try:
        result = validate_config(raw, CLI)
    except ConfigError as e:
        assert e.problems and str(e) == "\n".join(e.problems)
    else:
        assert isinstance(result, PotConfig)
        json.dumps(result.raw)


@settings(max_examples=100, deadline=None, database=None)
@given(json_values)
def test_any_json_gives_config_or_config_error(raw):
    _check(raw)


@pytest.fixture(scope="module")
def module_ir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("ir")
    (d / "m.xml").touch()
    (d / "m.bin").touch()
    return d / "m.xml"


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


@settings(max_examples=100, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_valid_config_gives_config_or_config_error(module_ir, data):
    raw = with_params(module_ir, {"preset": "mixed", "weights": {"bits": 8, "range_estimator": {
        "max": {"type": "quantile", "outlier_prob": 0.001}}}, "ignored": {"scope": ["a"]}})
    paths = [p for p in _paths(raw) if p]
    path = data.draw(st.sampled_from(paths))
    node = raw
    for part in path[:-1]:
        node = node[part]
    if isinstance(node, dict) and data.draw(st.booleans()):
        del node[path[-1]]
    else:
        node[path[-1]] = data.draw(plausible | json_values)
    _check(raw)
