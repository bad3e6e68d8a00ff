"""Every target_device yields an IR that compiles and runs on CPU, with the bits and levels its
hardware config (hw_configs/*.json) gives."""
from __future__ import annotations

import numpy as np
import openvino as ov
import pytest

import models
from pot_cli.algorithms.default import DefaultQuantization
from pot_cli.config import load_hardware_config
from pot_cli.config.model import QuantizationParams
from pot_cli.algorithms.settings import create_min_max_settings
from pot_cli.statistics.collector import collect_statistics

DEVICES = ["ANY", "CPU", "CPU_SPR", "GPU", "NPU", "VPU", "GNA", "GNA3", "GNA3.5"]


def _expected(device: str):
    """(activation levels, activation mode, weight integer dtype) from the device's Convolution spec."""
    hw = load_hardware_config(device)
    conv = hw.op_spec("Convolution")
    act = next((q for q in conv.activations if q.mode == "symmetric"), conv.activations[0])
    weight = conv.weights[0]
    return 2 ** act.bits, act.mode, np.int8 if weight.bits == 8 else np.int16


@pytest.mark.parametrize("device", DEVICES)
def test_device_ir_compiles_on_cpu_with_the_hardware_config_levels(device, tmp_path):
    model = models.conv_chain()
    sample = models.random_inputs(model, seed=7)
    settings = create_min_max_settings(QuantizationParams(), load_hardware_config(device))
    algo = DefaultQuantization(settings)
    requests = algo.statistic_requests(model)
    calibration = [models.random_inputs(model, seed=i) for i in range(4)]
    algo.apply(model, collect_statistics(model, requests, enumerate(calibration), len(calibration)))

    levels, mode, weight_dtype = _expected(device)
    fqs = [o for o in model.get_ops() if o.get_type_name() == "FakeQuantize"]
    assert fqs and {o.get_attributes()["levels"] for o in fqs} == {levels}
    if mode == "asymmetric":  # e.g. NPU: activations carry a zero point, input_low < 0 < input_high
        assert settings.activation_mode == "asymmetric"
    codes = [o for o in model.get_ops() if o.get_type_name() == "Constant" and o.get_output_partial_shape(0).rank.get_length() == 4
             and o.get_element_type() in (ov.Type.i8, ov.Type.i16)]
    assert codes and all(np.asarray(o.get_data()).dtype == weight_dtype for o in codes)

    xml = tmp_path / f"{device}.xml"
    ov.save_model(model, str(xml), compress_to_fp16=False)
    compiled = ov.Core().compile_model(str(xml), "CPU")
    out = compiled(sample)[0]
    assert np.isfinite(out).all() and out.shape == tuple(compiled.output(0).get_shape())
