"""``pot_cli.api.feeding``: DataLoader item forms and fitting data to model inputs."""
from __future__ import annotations

import logging

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

from pot_cli.api.feeding import InputFeeder, LoaderItem, parse_item
from pot_cli.errors import ConfigError, DatasetError
from tests.models import param

FORMS = ("expected a tuple (data, annotation), (data, annotation, metadata) or "
         "((index, annotation), data[, metadata])")


def model_of(*params: ov.Node) -> ov.Model:
    """A model reading each Parameter through a ReLU (Convert first for non-float ones)."""
    outs = [ops.relu(p if p.get_element_type().is_real() else ops.convert(p, ov.Type.f32)) for p in params]
    return ov.Model(outs, list(params), "m")


def infos(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "pot" and r.levelno == logging.INFO]


# -- parse_item ---------------------------------------------------------------------------------

X = np.zeros((3, 4, 4), np.float32)


@pytest.mark.parametrize("item, annotation, metadata", [
    ((X, 5), 5, {}),
    ((X, 5, {"k": 1}), 5, {"k": 1}),
    (((7, 5), X), 5, {}),
    (((7, 5), X, {"k": 1}), 5, {"k": 1}),
    (({7: 5}, X), 5, {}),
    (({7: 5}, X, [1]), 5, [1]),
])
def test_accepted_forms(item, annotation, metadata):
    assert parse_item(item, 7) == LoaderItem(X, annotation, metadata, True)  # data compared by identity


def test_none_annotation_and_dict_data():
    parsed = parse_item(({"input": X}, None), 0)
    assert parsed.data == {"input": X} and parsed.annotation is None and not parsed.has_annotation
    assert parsed.metadata == {}


def test_dict_data_keyed_by_input_name_is_not_the_2021_form():
    data = {"input": X}
    parsed = parse_item((data, 3), 0)
    assert parsed.data is data and parsed.annotation == 3


def test_simplified():
    assert parse_item(X, 2, simplified=True) == LoaderItem(X, None, {}, False)
    d = {"a": X}
    parsed = parse_item(d, 2, simplified=True)
    assert parsed.data is d and parsed.annotation is None and not parsed.has_annotation


def test_loader_item_is_frozen():
    parsed = parse_item((X, 1), 0)
    with pytest.raises(AttributeError):
        parsed.annotation = 2


@pytest.mark.parametrize("item, message", [
    ([X, 1], f"DataLoader item 7: a list; {FORMS}"),
    (X, f"DataLoader item 7: an ndarray of shape (3, 4, 4); {FORMS}"),
    ((X,), f"DataLoader item 7: a tuple of 1 element; {FORMS}"),
    ((X, 1, {}, 2), f"DataLoader item 7: a tuple of 4 elements; {FORMS}"),
    (None, f"DataLoader item 7: None; {FORMS}"),
    ({"input": X}, f"DataLoader item 7: a dict; {FORMS}"),
    (((7, 5, 1), X), f"DataLoader item 7: a tuple whose first element is a tuple of 3 elements; {FORMS}"),
    ((None, 1), "DataLoader item 7: data is None; expected an ndarray or a dict {input name: ndarray}"),
    (("img.png", 1), "DataLoader item 7: data is a str; expected an ndarray or a dict {input name: ndarray}"),
])
def test_refused_forms(item, message):
    with pytest.raises(DatasetError) as e:
        parse_item(item, 7)
    assert e.value.message == message


@pytest.mark.parametrize("item, what", [((X, 1), "a tuple of 2 elements"), (None, "None")])
def test_simplified_refuses_tuples(item, what):
    with pytest.raises(DatasetError) as e:
        parse_item(item, 3, simplified=True)
    assert e.value.message == (f"DataLoader item 3: {what}; expected bare data (an ndarray or a dict "
                               "{input name: ndarray}) for the simplified engine")


# -- InputFeeder: names and dicts ---------------------------------------------------------------

def two_inputs() -> ov.Model:
    a = ops.parameter([1, 4], ov.Type.f32, name="a_friendly")
    a.output(0).set_names({"a", "a:0"})
    b = param("b", [1, 2, 3])
    return model_of(a, b)


def test_feed_keys_are_any_names_and_dict_keys_may_be_friendly_or_tensor_names():
    feeder = InputFeeder(two_inputs())
    key_a = feeder.input_names[0]
    assert key_a in ("a", "a:0") and feeder.input_names[1] == "b"
    for name in ("a_friendly", "a", "a:0"):
        out = feeder.feed({name: np.ones(4), "b": np.ones((2, 3))}, 0)
        assert list(out) == [key_a, "b"]
        assert out[key_a].shape == (1, 4) and out[key_a].dtype == np.float32
        assert out["b"].shape == (1, 2, 3)


def test_missing_and_unknown_keys():
    feeder = InputFeeder(two_inputs())
    names = ", ".join(feeder.input_names)
    with pytest.raises(DatasetError) as e:
        feeder.feed({"a": np.ones(4)}, 4)
    assert e.value.message == ("DataLoader item 4: no array for input(s) b; expected a dict with one array per "
                               f"model input: {names}")
    with pytest.raises(DatasetError) as e:
        feeder.feed({"a": np.ones(4), "b": np.ones((2, 3)), "label": 1}, 5)
    assert e.value.message == f"DataLoader item 5: unknown key 'label'; expected one array per model input: {names}"
    with pytest.raises(DatasetError) as e:
        feeder.feed({"a": np.ones(4), "a:0": np.ones(4), "b": np.ones((2, 3))}, 6)
    assert e.value.message.startswith("DataLoader item 6: second key for input 'a:0'")


def test_feeds_work_with_infer_queue():
    model = two_inputs()
    feeder = InputFeeder(model)
    compiled = ov.Core().compile_model(model, "CPU")
    queue = ov.AsyncInferQueue(compiled, 1)
    results = []
    queue.set_callback(lambda req, _: results.append(req.get_output_tensor(1).data.copy()))
    queue.start_async(feeder.feed({"a": np.ones(4), "b": -np.ones((2, 3))}, 0))
    queue.wait_all()
    assert results[0].shape == (1, 2, 3) and np.all(results[0] == 0)


def test_three_inputs_need_a_dict():
    feeder = InputFeeder(model_of(param("a", [1, 2]), param("b", [1, 2]), param("c", [1, 2])))
    with pytest.raises(DatasetError) as e:
        feeder.feed(np.ones((1, 2)), 1)
    assert e.value.message.startswith("DataLoader item 1: an ndarray of shape (1, 2) for a model with 3 inputs "
                                      "(a, b, c); expected a dict {input name: array}")


# -- shapes -------------------------------------------------------------------------------------

def test_batch_dim_added_or_kept_and_dynamic_batch_over_1():
    feeder = InputFeeder(model_of(param("x", [-1, 3, 4, 4])))
    assert feeder.feed(np.ones((3, 4, 4)), 0)["x"].shape == (1, 3, 4, 4)
    assert feeder.feed(np.ones((1, 3, 4, 4)), 0)["x"].shape == (1, 3, 4, 4)
    assert feeder.feed(np.ones((5, 3, 4, 4)), 0)["x"].shape == (5, 3, 4, 4)


def test_hwc_is_transposed_to_chw_and_logged_once(caplog):
    feeder = InputFeeder(model_of(param("x", [1, 3, 4, 5])))
    hwc = np.arange(60, dtype=np.float32).reshape(4, 5, 3)
    with caplog.at_level(logging.INFO, logger="pot"):
        out = feeder.feed(hwc, 0)["x"]
        feeder.feed(hwc, 1)
        feeder.feed(hwc[None], 2)
    np.testing.assert_array_equal(out[0], hwc.transpose(2, 0, 1))
    np.testing.assert_array_equal(feeder.feed(hwc[None], 3)["x"], out)
    assert infos(caplog) == ["DataLoader data for input 'x' [1,3,4,5] (NCHW) is HWC; transposing it to CHW "
                             "(the original POT reshaped it without a transpose)"]


def test_chw_is_transposed_to_hwc_for_an_nhwc_ir_layout(caplog):
    feeder = InputFeeder(model_of(param("x", [-1, 8, 8, 3], layout="NHWC")))
    chw = np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)
    with caplog.at_level(logging.INFO, logger="pot"):
        out = feeder.feed(chw, 0)["x"]
    np.testing.assert_array_equal(out[0], chw.transpose(1, 2, 0))
    assert len(infos(caplog)) == 1 and "is CHW; transposing it to HWC" in infos(caplog)[0]


def test_given_layout_overrides_inference():
    # [1,3,8,3]: inference cannot tell; the given NHWC says the 3 x 8 x 8 data is CHW
    feeder = InputFeeder(model_of(param("x", [1, 8, 8, 3])), layout="NHWC")
    assert feeder.feed(np.ones((3, 8, 8)), 0)["x"].shape == (1, 8, 8, 3)
    with pytest.raises(ConfigError):
        InputFeeder(model_of(param("x", [1, 8, 8, 3])), layout="NCH")
    with pytest.raises(ConfigError):
        InputFeeder(model_of(param("x", [1, 8, 8, 3])), layout={"y": "NCHW"})


def test_mismatch_error():
    feeder = InputFeeder(model_of(param("input", [1, 3, 224, 224])))
    with pytest.raises(DatasetError) as e:
        feeder.feed(np.zeros((224, 224, 4), np.float32), 3)
    assert e.value.message == ("DataLoader item 3: data shape (224, 224, 4) does not fit input 'input' "
                               "[1,3,224,224] (NCHW); expected [1,3,224,224], or [3,224,224] without the batch dim "
                               "(HWC data is transposed to CHW)")
    with pytest.raises(DatasetError, match=r"data shape \(2, 3, 224, 224\) does not fit"):
        feeder.feed(np.zeros((2, 3, 224, 224)), 0)  # static batch 1


def test_no_silent_reshape_of_same_size_data():
    feeder = InputFeeder(model_of(param("x", [1, 2, 6])))
    with pytest.raises(DatasetError):
        feeder.feed(np.zeros((3, 4)), 0)  # POT's np.reshape would have taken it


@pytest.mark.parametrize("shape", [(28, 28), (1, 28, 28), (28, 28, 1), (1, 1, 28, 28)])
def test_grayscale(shape):
    feeder = InputFeeder(model_of(param("x", [-1, 1, 28, 28])))
    data = np.arange(784, dtype=np.float32).reshape(shape)
    out = feeder.feed(data, 0)["x"]
    assert out.shape == (1, 1, 28, 28)
    np.testing.assert_array_equal(out.ravel(), data.ravel())


def test_grayscale_batch_on_dynamic_batch():
    feeder = InputFeeder(model_of(param("x", [-1, 1, 28, 28])))
    assert feeder.feed(np.zeros((4, 28, 28)), 0)["x"].shape == (4, 1, 28, 28)


def test_rank_0_and_dynamic_rank():
    feeder = InputFeeder(model_of(param("s", []), param("d", ov.PartialShape.dynamic())))
    out = feeder.feed({"s": np.array([2.5]), "d": np.ones((2, 5))}, 0)
    assert out["s"].shape == () and out["s"] == np.float32(2.5) and out["d"].shape == (2, 5)
    assert InputFeeder(model_of(param("s", []))).feed(3, 0)["s"].shape == ()
    with pytest.raises(DatasetError, match="expected a single value"):
        feeder.feed({"s": np.ones(2), "d": np.ones(1)}, 0)


# -- image_info ---------------------------------------------------------------------------------

def test_image_info_two_input_model():
    feeder = InputFeeder(model_of(param("image", [-1, 3, 6, 8]), param("im_info", [-1, 3])))
    out = feeder.feed(np.ones((6, 8, 3)), 0)
    assert out["image"].shape == (1, 3, 6, 8)
    np.testing.assert_array_equal(out["im_info"], [[6, 8, 1]])
    assert out["im_info"].dtype == np.float32
    out = feeder.feed(np.ones((2, 3, 6, 8)), 0)
    np.testing.assert_array_equal(out["im_info"], [[6, 8, 1], [6, 8, 1]])


def test_image_info_wider_row_and_dict_passthrough():
    feeder = InputFeeder(model_of(param("im_info", [1, 6]), param("image", [1, 3, 4, 5])))
    np.testing.assert_array_equal(feeder.feed(np.ones((3, 4, 5)), 0)["im_info"], [[4, 5, 1, 1, 1, 1]])
    given = np.array([[4, 5, 2]], np.float32)
    feeder = InputFeeder(model_of(param("im_info", [1, 3]), param("image", [1, 3, 4, 5])))
    out = feeder.feed({"image": np.ones((3, 4, 5)), "im_info": given}, 0)
    np.testing.assert_array_equal(out["im_info"], given)


def test_two_inputs_without_one_2d_input_need_a_dict():
    feeder = InputFeeder(model_of(param("a", [1, 3]), param("b", [1, 3])))
    with pytest.raises(DatasetError, match="for a model with 2 inputs"):
        feeder.feed(np.ones((1, 3)), 0)


# -- dtypes and copies --------------------------------------------------------------------------

@pytest.mark.parametrize("et, data, expected", [
    (ov.Type.f32, np.ones(4, np.float64), np.float32),
    (ov.Type.f16, np.ones(4, np.float32), np.float16),
    (ov.Type.i64, np.arange(4, dtype=np.int32), np.int64),
    (ov.Type.i32, np.arange(4.0), np.int32),
    (ov.Type.u8, np.arange(4, dtype=np.int64), np.uint8),
    (ov.Type.boolean, np.array([0, 1, 1, 0]), np.bool_),
    (ov.Type.f32, [1, 2, 3, 4], np.float32),
])
def test_dtype_casts(et, data, expected):
    out = InputFeeder(model_of(param("x", [1, 4], et))).feed(data, 0)["x"]
    assert out.dtype == expected and out.shape == (1, 4)
    np.testing.assert_array_equal(out.ravel(), np.asarray(data).astype(expected))


@pytest.mark.parametrize("et, data, match", [
    (ov.Type.f32, np.array(["a", "b", "c", "d"]), r"has dtype <U1; expected numbers \(float32\)"),
    (ov.Type.f32, np.array([object()] * 4), "has dtype object"),
    (ov.Type.i64, np.array([0.5, 1, 2, 3]), r"float64 values in \[0.5, 3.0\] \(not whole numbers\); expected int64"),
    (ov.Type.u8, np.array([0, 1, 2, 300]), r"values in \[0, 300\]; expected uint8 values in \[0, 255\]"),
])
def test_dtype_refusals(et, data, match):
    with pytest.raises(DatasetError, match=match):
        InputFeeder(model_of(param("x", [1, 4], et))).feed(data, 0)


def test_outputs_are_contiguous_copies():
    feeder = InputFeeder(model_of(param("x", [1, 3, 4, 4])))
    data = np.ones((1, 3, 4, 4), np.float32)
    out = feeder.feed(data, 0)["x"]
    assert out.flags.c_contiguous and not np.shares_memory(out, data)
    out = feeder.feed(np.ones((4, 4, 3), np.float32)[::1, ::1, :], 0)["x"]
    assert out.flags.c_contiguous
