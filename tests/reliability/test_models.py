"""Case 2: models. Unreadable models end in exit 1 naming the file; unusual but valid models
(dynamic shapes, FP16, several inputs, already quantized, If) are handled or refused clearly."""
from __future__ import annotations

import json

import cv2
import numpy as np
import openvino as ov
import pytest

import models
from pot_cli.engines.data_source import create_data_source
from reliability.helpers import assert_failed_cleanly, model_with_if, model_with_loop, op_names, pot, snapshot


def _broken_model(ws, kind: str):
    """Damage the workspace's IR; returns the file the message must name."""
    if kind == "not_xml":
        ws.xml.write_text("hello, I am not a model\n")
        return ws.xml, "not an OpenVINO IR: not valid XML at line 1, column 1"
    if kind == "not_an_ir":
        ws.xml.write_text('<?xml version="1.0"?>\n<html><body/></html>\n')
        return ws.xml, "not an OpenVINO IR: the root element is <html>; expected <net>"
    if kind == "truncated_bin":
        ws.bin.write_bytes(ws.bin.read_bytes()[:100])
        return ws.bin, "the weights file does not fit the model tiny.xml: 100 bytes, the model reads"
    if kind == "empty_bin":
        ws.bin.write_bytes(b"")
        return ws.bin, "the weights file does not fit the model tiny.xml: 0 bytes"
    if kind == "weights_of_another_model":
        models.save_ir(models.conv_chain(), ws.root / "other", "other")
        ws.bin.write_bytes((ws.root / "other" / "other.bin").read_bytes())
        return ws.bin, "larger than the model needs; the weights of another model?"
    if kind == "unknown_op":
        ws.xml.write_text(ws.xml.read_text().replace('type="ReLU"', 'type="FancyReLU"'))
        return ws.xml, "cannot read the model as OpenVINO IR: Opset opset1 doesn't contain the operation with type: FancyReLU"
    if kind == "unknown_opset":
        ws.xml.write_text(ws.xml.read_text().replace('version="opset1"', 'version="opset99"'))
        return ws.xml, "cannot read the model as OpenVINO IR: Cannot create Parameter layer x id:0 from unsupported opset: opset99"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["not_xml", "not_an_ir", "truncated_bin", "empty_bin", "weights_of_another_model",
                                  "unknown_op", "unknown_opset"])
def test_unreadable_model_exits_1_naming_the_file(ws, kind):
    named, fragment = _broken_model(ws, kind)
    before = ws.before()
    result = pot("-q", "default", "-m", ws.xml, "--data-source", ws.images, "--output-dir", ws.out, "-d")
    line = assert_failed_cleanly(result.exit_code, result.stderr, 1, [fragment], ws.out, before)
    assert line.startswith(f"{named}: "), line


def _run_ok(ws, xml, *extra, data=None):
    before = snapshot(xml.parent, data or ws.images)
    result = pot("-q", "default", "-m", xml, "--data-source", data or ws.images, "--output-dir", ws.out, "-d", *extra)
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(xml.parent, data or ws.images) == before
    out = ws.out / "optimized"
    return out / f"{xml.stem}.xml", json.loads((out / "report.json").read_text())


def test_dynamic_batch_is_set_to_1_and_kept_in_the_output(ws):
    xml, _ = models.save_ir(models.dynamic_batch_conv(), ws.root / "dyn", "dynb")
    data = create_data_source(ws.images, ov.Core().read_model(str(xml)))
    assert data.input_shapes["x"] == ov.PartialShape([1, 3, 8, 8])
    assert data[0]["x"].shape == (1, 3, 8, 8)
    out, report = _run_ok(ws, xml)
    assert report["samples"]["used"] == 12
    assert ov.Core().read_model(str(out)).inputs[0].get_partial_shape() == ov.PartialShape([-1, 3, 8, 8])
    assert op_names(out, "FakeQuantize") == ["conv/fq_input_0"]


def _images_of_sizes(directory, sizes):
    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k, (h, w) in enumerate(sizes):
        cv2.imwrite(str(directory / f"img_{k}.png"), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_dynamic_spatial_dims_take_each_samples_size_or_the_configured_shape(ws):
    model = models.conv_bias_relu()
    model.reshape({"x": ov.PartialShape([-1, 3, -1, -1])})
    xml, _ = models.save_ir(model, ws.root / "dyn", "dynhw")
    sizes = [(8, 8), (12, 10), (5, 17)]
    _images_of_sizes(ws.root / "sized", sizes)
    data = create_data_source(ws.root / "sized", ov.Core().read_model(str(xml)))
    assert [data[i]["x"].shape for i in range(3)] == [(1, 3, h, w) for h, w in sizes]
    shaped = create_data_source(ws.root / "sized", ov.Core().read_model(str(xml)), shape=[1, 3, 16, 16])
    assert [shaped[i]["x"].shape for i in range(3)] == [(1, 3, 16, 16)] * 3

    out, report = _run_ok(ws, xml, data=ws.root / "sized")
    assert report["samples"]["used"] == 3
    assert ov.Core().read_model(str(out)).inputs[0].get_partial_shape() == ov.PartialShape([-1, 3, -1, -1])
    config = ws.root / "shape.json"
    config.write_text(json.dumps({
        "model": {"model": str(xml)}, "engine": {"data_source": str(ws.root / "sized"), "shape": [1, 3, 16, 16]},
        "compression": {"algorithms": [{"name": "DefaultQuantization"}]}}))
    result = pot("-c", config, "--output-dir", ws.root / "out_shape", "-d")
    assert result.exit_code == 0, result.stderr
    assert op_names(ws.root / "out_shape" / "optimized" / "dynhw.xml", "FakeQuantize") == ["conv/fq_input_0"]


def test_fp16_ir_gets_int8_weights_and_fp32_statistics(ws):
    fp16_xml = ws.root / "fp16" / "tiny16.xml"
    fp16_xml.parent.mkdir()
    ov.save_model(models.conv_bias_relu(), str(fp16_xml), compress_to_fp16=True)
    assert "f16" in fp16_xml.read_text()
    out16, _ = _run_ok(ws, fp16_xml)
    ref = pot("-q", "default", "-m", ws.xml, "--data-source", ws.images, "--output-dir", ws.root / "ref", "-d")
    assert ref.exit_code == 0, ref.stderr

    def constants(xml):
        return {o.get_friendly_name(): o for o in ov.Core().read_model(str(xml)).get_ops()
                if o.get_type_name() == "Constant"}

    c16, c32 = constants(out16), constants(ws.root / "ref" / "optimized" / "tiny.xml")
    assert c16["conv/fq_weights_1/int8"].get_element_type() == ov.Type.i8
    for end in ("input_low", "input_high", "output_low", "output_high"):
        name = f"conv/fq_input_0/{end}"
        assert c16[name].get_element_type() == ov.Type.f32, name  # ranges are fp32, not fp16
        # the activations are the same images through fp16-rounded weights: ranges agree closely
        np.testing.assert_allclose(c16[name].data, c32[name].data, rtol=1e-3)


def test_multi_input_model_takes_npz_keyed_by_input_name(ws):
    xml, _ = models.save_ir(models.multi_input(), ws.root / "multi", "multi")
    npz = ws.root / "npz"
    npz.mkdir()
    rng = np.random.default_rng(0)
    for k in range(4):
        np.savez(npz / f"s{k}.npz", x1=rng.random((1, 3, 8, 8), dtype=np.float32),
                 x2=rng.random((3, 8, 8), dtype=np.float32))  # batch dim may be left out
    out, report = _run_ok(ws, xml, data=npz)
    assert report["samples"]["used"] == 4
    assert {"conv1/fq_input_0", "conv2/fq_input_0"} <= set(op_names(out, "FakeQuantize"))

    before = snapshot(xml.parent, ws.images)
    images = pot("-q", "default", "-m", xml, "--data-source", ws.images, "--output-dir", ws.root / "o2", "-d")
    assert_failed_cleanly(images.exit_code, images.stderr, 1,
                          [f"{ws.images}: holds images, but the model has 2 inputs (x1, x2); "
                           "use .npz files with the keys x1, x2"], ws.root / "o2", before)
    bad = ws.root / "bad_npz"
    bad.mkdir()
    np.savez(bad / "s0.npz", x1=np.zeros((1, 3, 8, 8), np.float32), y=np.zeros((1, 3, 8, 8), np.float32))
    keys = pot("-q", "default", "-m", xml, "--data-source", bad, "--output-dir", ws.root / "o3", "-d")
    assert_failed_cleanly(keys.exit_code, keys.stderr, 1,
                          [f"{bad / 's0.npz'}: keys do not match the model inputs (missing x2; unexpected y); "
                           "expected one array per input: x1, x2"], ws.root / "o3", before)


def test_already_quantized_model_is_refused_unless_allowed(ws):
    xml, _ = models.save_ir(models.conv_chain(), ws.root / "chain", "chain")
    config = ws.root / "partial.json"
    config.write_text(json.dumps({
        "model": {"model": str(xml)}, "engine": {"data_source": str(ws.images)},
        "compression": {"algorithms": [{"name": "DefaultQuantization", "params": {"ignored": {"scope": ["conv2"]}}}]}}))
    assert pot("-c", config, "--output-dir", ws.root / "partial", "-d").exit_code == 0
    partial = ws.root / "partial" / "optimized" / "chain.xml"
    assert op_names(partial, "FakeQuantize") == ["conv1/fq_input_0"]

    before = snapshot(partial.parent, ws.images)
    refused = pot("-q", "default", "-m", partial, "--data-source", ws.images, "--output-dir", ws.out, "-d")
    line = assert_failed_cleanly(refused.exit_code, refused.stderr, 1,
                                 [f"{partial}: the model is already quantized (1 FakeQuantize ops, e.g. "
                                  "'conv1/fq_input_0'); expected a floating-point model", "--allow-quantized"],
                                 ws.out, before)
    assert line.count("\n") == 0

    allowed = pot("-q", "default", "-m", partial, "--data-source", ws.images, "--output-dir", ws.out, "-d",
                  "--allow-quantized")
    assert allowed.exit_code == 0, allowed.stderr
    assert "1 layer(s) already quantized are kept as they are" in allowed.stderr
    out = ws.out / "optimized" / "chain.xml"
    # conv1 keeps its single quantizer, conv2 gets its own: no quantizer is doubled
    assert op_names(out, "FakeQuantize") == ["conv1/fq_input_0", "conv2/fq_input_0"]
    assert snapshot(partial.parent, ws.images) == before


def test_a_loop_body_with_layers_is_named_as_kept_in_floating_point(ws):
    xml, _ = models.save_ir(model_with_loop(body_conv=True), ws.root / "loop_conv", "loop_conv")
    result = pot("-q", "default", "-m", xml, "--data-source", ws.images, "--output-dir", ws.out, "-d")
    assert result.exit_code == 0, result.stderr
    assert "1 Loop/TensorIterator op(s) keep their bodies in floating point" in result.stderr
    assert "loop" in result.stderr.split("keep their bodies in floating point")[1].splitlines()[0]
    assert op_names(ws.out / "optimized" / "loop_conv.xml", "FakeQuantize") == ["conv1/fq_input_0", "conv2/fq_input_0"]


@pytest.mark.parametrize("build, op_type, bodies, body_fqs", [
    # the then body (every image takes it) is quantized, the else body never ran
    (model_with_if, "If", lambda op: (op.get_then_body(), op.get_else_body()), [["then_conv/fq_input_0"], []]),
    (model_with_loop, "Loop", lambda op: (op.get_function(),), [[]]),  # Loop bodies stay in floating point
], ids=["if", "loop"])
def test_model_with_subgraphs_quantizes_its_main_graph(ws, build, op_type, bodies, body_fqs):
    model = build()
    xml, _ = models.save_ir(model, ws.root / op_type, model.get_friendly_name())
    out, report = _run_ok(ws, xml)
    assert op_names(out, "FakeQuantize") == ["conv1/fq_input_0", "conv2/fq_input_0"]
    model = ov.Core().read_model(str(out))
    node = next(o for o in model.get_ops() if o.get_type_name() == op_type)
    for body, expected in zip(bodies(node), body_fqs):
        assert [o.get_friendly_name() for o in body.get_ops() if o.get_type_name() == "FakeQuantize"] == expected
    compiled = ov.Core().compile_model(model, "CPU")
    y = compiled(models.random_inputs(model, low=0, high=255))[0]
    assert y.shape == (1, 2, 8, 8) and np.isfinite(y).all()
    assert report["samples"]["used"] == 12
