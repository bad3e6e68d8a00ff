"""Hardware configs: shipped files validate; levels and schemes per device; bad files are named."""
from __future__ import annotations

import json
from importlib import resources

import pytest

from pot_cli.config import (
    DEVICE_FILES,
    TARGET_DEVICES,
    HardwareConfig,
    QuantizerSpec,
    load_hardware_config,
    parse_hardware_config,
)
from pot_cli.errors import ConfigError


@pytest.mark.parametrize("device", sorted(DEVICE_FILES))
def test_each_device_file_loads_and_validates(device):
    hw = load_hardware_config(device)
    assert isinstance(hw, HardwareConfig)
    assert hw.target_device == ("NPU" if device == "VPU" else device)
    assert hw.operations and hw.quantizable_types()
    conv = hw.op_spec("Convolution")
    assert conv is not None and conv.activations and conv.weights


def test_every_target_device_has_a_file():
    assert set(TARGET_DEVICES) <= set(DEVICE_FILES)
    shipped = {p.name for p in resources.files("pot_cli").joinpath("hw_configs").iterdir()}
    assert set(DEVICE_FILES.values()) <= shipped


def test_cpu_convolution_schemes():
    conv = load_hardware_config("CPU").op_spec("Convolution")
    act = conv.activations[0]
    assert (act.bits, act.mode, act.granularity, act.levels) == (8, "symmetric", "pertensor", 256)
    assert [a.mode for a in conv.activations] == ["symmetric", "asymmetric"]
    w = conv.weights[0]
    assert (w.bits, w.mode, w.granularity, w.level_low, w.level_high, w.levels) == \
        (8, "symmetric", "perchannel", -127, 127, 255)
    assert conv.weights[1].mode == "asymmetric" and conv.weights[1].levels == 256


def test_any_uses_cpu_rules():
    any_hw, cpu = load_hardware_config("ANY"), load_hardware_config("CPU")
    assert any_hw.operations == cpu.operations
    assert any_hw.target_device == "ANY"


def test_cpu_unified_scales_and_agnostic_ops():
    hw = load_hardware_config("CPU")
    assert {"Concat", "LSTMSequence", "GRUSequence"} <= hw.unified_scale_types()
    assert hw.op_spec("Concat").unified_scales == "all"
    assert hw.op_spec("LSTMSequence").unified_scales == ((0, 1), (4, 5))
    assert {"MaxPool", "Reshape", "Concat"} <= hw.agnostic_types()
    assert "MaxPool" not in hw.quantizable_types()
    assert hw.op_spec("Softmax") is None


def test_gna_activations_are_16_bit():
    hw = load_hardware_config("GNA")
    assert hw.primary_bitwidth == 16
    conv = hw.op_spec("Convolution")
    assert (conv.activations[0].bits, conv.activations[0].levels) == (16, 65536)
    assert conv.outputs[0].bits == 32
    assert load_hardware_config("GNA3.5").op_spec("Convolution").activations[0].bits == 8
    assert load_hardware_config("GNA3.5").input_priority_types == ("Convolution",)


def test_npu_activations_asymmetric():
    hw = load_hardware_config("VPU")
    assert hw.target_device == "NPU"
    assert [s.mode for s in hw.op_spec("MatMul").activations] == ["asymmetric"]


def test_levels_without_fixed_range():
    assert QuantizerSpec(bits=4, mode="asymmetric", granularity="pertensor").levels == 16


def test_unknown_device():
    with pytest.raises(ConfigError) as info:
        load_hardware_config("cpu")
    assert str(info.value) == ("compression.target_device: unknown device 'cpu' (did you mean "
                               "'CPU'?); expected one of: ANY, CPU, CPU_SPR, GPU, NPU, VPU, GNA, "
                               "GNA3, GNA3.5")


def _doc(**changes):
    doc = {
        "target_device": "CPU",
        "config": {"quantization": {
            "q8_a": {"bits": 8, "mode": ["symmetric", "asymmetric"],
                     "granularity": ["pertensor", "perchannel"]}}},
        "operations": [{"type": "Convolution", "quantization": {
            "activations": "q8_a",
            "weights": [{"bits": 4, "mode": "symmetric", "granularity": "perchannel"}]}}],
    }
    doc.update(changes)
    return doc


def test_custom_file_with_comments_and_inline_quantizers(tmp_path):
    path = tmp_path / "hw.json"
    path.write_text("// custom device\n" + json.dumps(_doc()))
    hw = load_hardware_config("CPU", path=path)
    conv = hw.op_spec("Convolution")
    assert [(s.mode, s.granularity) for s in conv.activations] == [
        ("symmetric", "pertensor"), ("symmetric", "perchannel"),
        ("asymmetric", "pertensor"), ("asymmetric", "perchannel")]
    assert conv.weights == (QuantizerSpec(bits=4, mode="symmetric", granularity="perchannel"),)
    assert len(hw.quantizers["q8_a"]) == 4


def test_unknown_quantizer_reference():
    doc = _doc(operations=[{"type": "MatMul", "quantization": {"activations": "q8_x"}}])
    with pytest.raises(ConfigError) as info:
        parse_hardware_config(doc, "hw.json")
    assert str(info.value) == ("hw.json: operations[0].quantization.activations: unknown "
                               "quantizer 'q8_x'; expected one of: q8_a")


def test_schema_errors_in_hw_file():
    doc = _doc(operations=[{"type": "Add", "quantisation": {}}, {"type": "Add"}])
    doc["config"]["quantization"]["q8_a"]["mode"] = "sym"
    with pytest.raises(ConfigError) as info:
        parse_hardware_config(doc, "hw.json")
    assert info.value.problems == [
        "hw.json: config.quantization.q8_a.mode: invalid value \"sym\"; expected symmetric or "
        "asymmetric, or a list of them",
        "hw.json: operations[0].quantisation: unknown key (did you mean 'quantization'?); "
        "expected one of: attributes, quantization, type",
    ]


def test_duplicate_operation_type_and_bad_levels():
    doc = _doc(operations=[{"type": "Add"}, {"type": "Add"}])
    doc["config"]["quantization"]["q8_a"].update(level_low=3, level_high=-3)
    with pytest.raises(ConfigError) as info:
        parse_hardware_config(doc, "hw.json")
    assert info.value.problems == [
        "hw.json: config.quantization.q8_a.level_high: value -3 is not above level_low 3; "
        "expected level_high > level_low",
        "hw.json: operations[1].type: duplicate type 'Add'; expected each operation type once",
    ]


def test_malformed_custom_file(tmp_path):
    path = tmp_path / "hw.json"
    path.write_text('{"target_device": "CPU",,}')
    with pytest.raises(ConfigError) as info:
        load_hardware_config("CPU", path=path)
    assert str(info.value) == f"{path}: line 1, column 25: Expecting property name enclosed " \
                              "in double quotes"
