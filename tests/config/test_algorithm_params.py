"""Algorithm params beyond one algorithm: the top-level ``range_estimator`` merged into the
typed ``activations``/``weights`` overrides, and POT algorithm chains
(ActivationChannelAlignment -> MinMaxQuantization -> FastBiasCorrection/BiasCorrection)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from pot_cli.config import (
    QuantizationParams,
    QuantizerOverrides,
    RangeEstimator,
    StatisticSpec,
    validate_config,
)
from pot_cli.config.loader import merge_range_estimators
from pot_cli.errors import ConfigError

CLI = "<command line>"
P = "<command line>: compression.algorithms[0].params"



def config(xml: Path, *algorithms: dict) -> dict:
    return {"model": {"model": str(xml)},
            "engine": {"type": "simplified", "data_source": str(xml.parent)},
            "compression": {"algorithms": list(algorithms)}}


def params_of(xml: Path, params: dict, name: str = "MinMaxQuantization") -> QuantizationParams:
    return validate_config(config(xml, {"name": name, "params": params}), CLI) \
        .compression.algorithms[0].params


def problems_of(raw: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        validate_config(raw, CLI)
    return info.value.problems


# --- top-level range_estimator: both sides get it ---------------------------------------------

@pytest.mark.parametrize("name", ["MinMaxQuantization", "DefaultQuantization"])
def test_top_level_range_estimator_reaches_both_sides(ir, name):
    top = {"preset": "quantile", "min": {"type": "quantile", "outlier_prob": 1e-3},
           "max": {"type": "abs_quantile", "outlier_prob": 1e-3, "clipping_value": 6}}
    p = params_of(ir, {"preset": "mixed", "range_estimator": top}, name)
    expected = RangeEstimator(
        preset="quantile", min=StatisticSpec(type="quantile", outlier_prob=1e-3),
        max=StatisticSpec(type="abs_quantile", outlier_prob=1e-3, clipping_value=6.0))
    # ordinary overrides with nothing else set, so the settings code needs no change
    assert p.activations == QuantizerOverrides(range_estimator=expected)
    assert p.weights == QuantizerOverrides(range_estimator=expected)
    assert p.range_estimator == expected  # kept as written, for the record


def test_top_level_range_estimator_in_accuracy_aware(tmp_path, ir):
    (tmp_path / "ac.yml").touch()
    raw = config(ir, {"name": "AccuracyAwareQuantization", "params": {
        "maximal_drop": 0.01, "range_estimator": {"preset": "default"}}})
    raw["engine"] = {"config": str(tmp_path / "ac.yml")}
    p = validate_config(raw, CLI).compression.algorithms[0].params
    assert p.activations.range_estimator == p.weights.range_estimator == RangeEstimator(
        preset="default")


def test_top_level_preset_only_sets_both_presets(ir):
    p = params_of(ir, {"range_estimator": {"preset": "quantile"}})
    assert p.activations.range_estimator == p.weights.range_estimator == RangeEstimator(
        preset="quantile")


def test_without_top_level_range_estimator_nothing_changes(ir):
    p = params_of(ir, {"activations": {"mode": "asymmetric"}})
    assert p.range_estimator is None and p.weights is None
    assert p.activations == QuantizerOverrides(mode="asymmetric")


# --- precedence: the quantizer's own keys win, key by key -------------------------------------

def test_own_range_estimator_wins_key_by_key(ir):
    top = {"preset": "quantile",
           "min": {"type": "quantile", "outlier_prob": 1e-3, "aggregator": "median"},
           "max": {"type": "quantile", "outlier_prob": 1e-3, "aggregator": "mean"}}
    p = params_of(ir, {
        "range_estimator": top,
        "activations": {"bits": 8, "mode": "asymmetric", "range_estimator": {
            "preset": "default", "max": {"type": "max", "aggregator": "max"}}},
        "weights": {"granularity": "perchannel", "range_estimator": {
            "min": {"outlier_prob": 1e-2}}},
    })
    a, w = p.activations, p.weights
    # the quantizer's other keys stay
    assert (a.bits, a.mode, w.granularity) == (8, "asymmetric", "perchannel")
    # own preset wins; own max fields win, the top-level ones fill the rest; min from the top
    assert a.range_estimator == RangeEstimator(
        preset="default",
        min=StatisticSpec(type="quantile", outlier_prob=1e-3, aggregator="median"),
        max=StatisticSpec(type="max", outlier_prob=1e-3, aggregator="max"))
    # no own preset: the top-level one; own min.outlier_prob over the top-level one;
    # the activations-only aggregator dropped from both borders
    assert w.range_estimator == RangeEstimator(
        preset="quantile",
        min=StatisticSpec(type="quantile", outlier_prob=1e-2),
        max=StatisticSpec(type="quantile", outlier_prob=1e-3))


def test_own_empty_range_estimator_takes_the_top_level_one(ir):
    p = params_of(ir, {"range_estimator": {"max": {"type": "abs_max"}},
                       "activations": {"range_estimator": {}}})
    assert p.activations.range_estimator == RangeEstimator(max=StatisticSpec(type="abs_max"))


def test_merge_function_rule():
    top = {"preset": "quantile", "min": {"aggregator": "min"},
           "max": {"aggregator": "max", "type": "abs_max", "granularity": "pertensor"}}
    own = {"max": {"type": "max"}}
    assert merge_range_estimators(top, own, "activations") == {
        "preset": "quantile", "min": {"aggregator": "min"},
        "max": {"aggregator": "max", "type": "max", "granularity": "pertensor"}}
    # weights: aggregator dropped, a border left empty omitted
    assert merge_range_estimators(top, own, "weights") == {
        "preset": "quantile", "max": {"type": "max", "granularity": "pertensor"}}
    assert merge_range_estimators(None, own, "weights") is own
    assert merge_range_estimators(top, None, "activations") == {
        "preset": "quantile", "min": {"aggregator": "min"},
        "max": {"aggregator": "max", "type": "abs_max", "granularity": "pertensor"}}
    assert merge_range_estimators({}, None, "activations") is None


# --- weights ignore the activations-only aggregator -------------------------------------------

def test_weights_ignore_aggregator(ir):
    p = params_of(ir, {"range_estimator": {"max": {"aggregator": "max", "type": "abs_max"}}})
    assert p.activations.range_estimator.max == StatisticSpec(type="abs_max", aggregator="max")
    assert p.weights.range_estimator.max == StatisticSpec(type="abs_max")


def test_aggregator_only_gives_weights_no_override(ir):
    p = params_of(ir, {"range_estimator": {"max": {"aggregator": "max"}},
                       "weights": {"bits": 8}})
    assert p.activations == QuantizerOverrides(
        range_estimator=RangeEstimator(max=StatisticSpec(aggregator="max")))
    assert p.weights == QuantizerOverrides(bits=8)
    assert params_of(ir, {"range_estimator": {"min": {"aggregator": "min"}}}).weights is None


def test_weights_own_aggregator_is_still_an_error(ir):
    # the merge drops only the top-level aggregator; in weights.range_estimator it stays unknown
    raw = config(ir, {"name": "MinMaxQuantization", "params": {
        "range_estimator": {"max": {"aggregator": "max"}},
        "weights": {"range_estimator": {"max": {"aggregator": "max"}}}}})
    assert problems_of(raw) == [
        f"{P}.weights.range_estimator.max.aggregator: unknown key; expected one of: "
        "clipping_value, granularity, outlier_prob, type"]


# --- misspelled keys stay errors --------------------------------------------------------------

def test_misspelled_top_level_range_estimator_keys(ir):
    raw = config(ir, {"name": "MinMaxQuantization", "params": {
        "range_estimater": {"preset": "quantile"}}})
    assert problems_of(raw) == [
        f"{P}.range_estimater: unknown key (did you mean 'range_estimator'?); expected one of: "
        "activations, dump_intermediate_model, ignored, inplace_statistics, model_type, preset, "
        "quantize_recurrent, range_estimator, saturation_fix, seed, shuffle_data, "
        "smooth_quant_alpha, speed_check, stat_batch_size, stat_subset_size, target_device, "
        "weights"]
    raw = config(ir, {"name": "MinMaxQuantization", "params": {"range_estimator": {
        "presett": "quantile", "max": {"agregator": "max", "type": "abs_maxx"}}}})
    assert problems_of(raw) == [
        f"{P}.range_estimator.max.agregator: unknown key (did you mean 'aggregator'?); expected "
        "one of: aggregator, clipping_value, granularity, outlier_prob, type",
        f"{P}.range_estimator.max.type: invalid value \"abs_maxx\" (did you mean 'abs_max'?); "
        "expected one of: min, max, abs_max, quantile, abs_quantile",
        f"{P}.range_estimator.presett: unknown key (did you mean 'preset'?); expected one of: "
        "max, min, preset",
    ]


@pytest.mark.parametrize("name", ["FastBiasCorrection", "BiasCorrection",
                                  "ActivationChannelAlignment"])
def test_top_level_range_estimator_only_for_quantization_algorithms(ir, name):
    # as in POT's allow-list: bias corrections and channel alignment have no range_estimator
    raw = config(ir, {"name": name, "params": {"range_estimator": {"preset": "quantile"}}})
    [problem] = problems_of(raw)
    assert problem.startswith(f"{P}.range_estimator: unknown key; expected one of: ")


def test_merge_does_not_mutate_input_and_report_revalidates(ir):
    raw = config(ir, {"name": "MinMaxQuantization", "params": {
        "range_estimator": {"preset": "quantile", "max": {"aggregator": "max"}},
        "weights": {"range_estimator": {"max": {"type": "abs_max"}}}}})
    original = copy.deepcopy(raw)
    cfg = validate_config(raw, CLI)
    assert raw == original
    assert cfg.raw["compression"]["algorithms"][0]["params"]["range_estimator"] == \
        original["compression"]["algorithms"][0]["params"]["range_estimator"]
    again = validate_config(json.loads(json.dumps(cfg.raw)), CLI)
    assert again.compression == cfg.compression


# --- algorithm chains -------------------------------------------------------------------------

ACA = {"name": "ActivationChannelAlignment",
       "params": {"stat_subset_size": 200, "shuffle_data": True, "seed": 3,
                  "ignored": {"scope": ["conv0"]}}}
MIN_MAX = {"name": "MinMaxQuantization", "params": {
    "preset": "mixed", "stat_subset_size": 200, "shuffle_data": True, "seed": 3,
    "range_estimator": {"preset": "quantile"},
    "weights": {"bits": 8, "mode": "symmetric", "granularity": "perchannel",
                "level_low": -127, "level_high": 127},
    "activations": {"bits": 8, "mode": "asymmetric", "granularity": "pertensor",
                    "range_estimator": {"max": {"aggregator": "max", "type": "max"}}},
    "saturation_fix": "all", "ignored": {"scope": ["conv0"], "operations": [{"type": "Add"}]},
    "target_device": "CPU"}}
BIAS_PARAMS = {"stat_subset_size": 100, "shuffle_data": True, "seed": 5, "threshold": 1.5,
               "apply_for_all_nodes": True}


@pytest.mark.parametrize("bias", ["FastBiasCorrection", "BiasCorrection"])
@pytest.mark.parametrize("with_alignment", [False, True])
def test_chain_validates(ir, bias, with_alignment):
    chain = ([ACA] if with_alignment else []) + [MIN_MAX, {"name": bias, "params": BIAS_PARAMS}]
    cfg = validate_config(config(ir, *chain), CLI)
    algos = cfg.compression.algorithms
    assert [a.name for a in algos] == [a["name"] for a in chain]
    assert all(isinstance(a.params, QuantizationParams) for a in algos)
    if with_alignment:
        aca = algos[0].params
        assert (aca.stat_subset_size, aca.shuffle_data, aca.seed, aca.ignored.scope) == \
            (200, True, 3, ("conv0",))
    mm, bc = algos[-2].params, algos[-1].params
    assert (mm.preset, mm.stat_subset_size, mm.saturation_fix, mm.target_device) == \
        ("mixed", 200, "all", "CPU")
    assert mm.weights.range_estimator == RangeEstimator(preset="quantile")
    assert mm.activations.range_estimator == RangeEstimator(
        preset="quantile", max=StatisticSpec(type="max", aggregator="max"))
    assert (bc.stat_subset_size, bc.shuffle_data, bc.seed, bc.threshold,
            bc.apply_for_all_nodes) == (100, True, 5, 1.5, True)
    # target_device given in one algorithm's params applies to the whole chain, as in POT
    assert cfg.compression.target_device == bc.target_device == "CPU"


@pytest.mark.parametrize("bias", ["FastBiasCorrection", "BiasCorrection"])
def test_chain_bias_correction_defaults(ir, bias):
    cfg = validate_config(config(ir, {"name": "MinMaxQuantization"}, {"name": bias}), CLI)
    p = cfg.compression.algorithms[1].params
    assert (p.threshold, p.apply_for_all_nodes, p.stat_subset_size) == (2.0, False, 300)


def test_chain_errors_name_the_algorithm_index(ir):
    raw = config(ir, MIN_MAX, {"name": "FastBiasCorrection",
                               "params": {"preset": "mixed", "treshold": 2}})
    problems = problems_of(raw)
    prefix = "<command line>: compression.algorithms[1].params."
    assert [p.split(": ")[1] for p in problems] == [
        "compression.algorithms[1].params.preset", "compression.algorithms[1].params.treshold"]
    assert problems[1].startswith(f"{prefix}treshold: unknown key (did you mean 'threshold'?)")
