"""Semantic segmentation types (``pot_cli.engines.ac.segmentation``) against Accuracy Checker.

Reference values: ``tests/data/ac_reference/segmentation_expected.json`` computed by Accuracy
Checker 2023.3 on the inputs in ``segmentation_cases.json``; both are written by
``tests/data/ac_reference/make_segmentation_reference.py`` (run in the reference venv, the
command is recorded in both files). Converters are tested on small files made here.
"""
from __future__ import annotations

import base64
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from pot_cli.engines.ac import segmentation as seg
from pot_cli.engines.ac.base import ADAPTERS, CONVERTERS, METRICS, POSTPROCESSING, Context, Outputs
from pot_cli.engines.ac.representations import (DatasetMeta, SampleMeta, SegmentationAnnotation,
                                                SegmentationPrediction)
from pot_cli.engines.preprocessing import Problems
from pot_cli.errors import ConfigError, DatasetError, EngineError

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "ac_reference"
CASES = json.loads((REFERENCE / "segmentation_cases.json").read_text())
EXPECTED = json.loads((REFERENCE / "segmentation_expected.json").read_text())
METRIC_CASES = {c["name"]: c for c in CASES["metrics"]}
TOL = 1e-6
MAX_DIFF: dict[str, float] = {}


def ctx_for(where="models[0].datasets[0].metrics[0]", label_map=None, data_source=None, base=Path("."), meta=None):
    meta = meta if meta is not None else DatasetMeta(dict(label_map or {}))
    return Context(Problems("ac.yml"), where, base=base, data_source=data_source, dataset_meta=meta)


def build(table, name, params, ctx):
    """The registered type built as the engine does, with unknown keys checked; its problems."""
    reg = table[name]
    full = dict(params, **({"converter": name} if table is CONVERTERS else {"type": name}))
    ctx.problems.keys(full, reg.keys, ctx.where)
    return reg.cls(full, ctx), ctx.problems.lines


def close(actual, expected, what):
    """Equal within TOL (None = NaN); records the largest difference seen."""
    if expected is None:
        assert actual is None or math.isnan(actual), f"{what}: {actual} != NaN"
        return
    assert actual is not None and not math.isnan(actual), f"{what}: NaN != {expected}"
    diff = abs(actual - expected)
    MAX_DIFF["metrics"] = max(MAX_DIFF.get("metrics", 0.0), diff)
    assert diff <= TOL, f"{what}: {actual} != {expected}"


def nan_to_none(value):
    return None if value is None or math.isnan(value) else float(value)


# --- metrics against Accuracy Checker ---------------------------------------------------------------

def _records(case):
    anns, preds = [], []
    for k, image in enumerate(case["images"]):
        anns.append(SegmentationAnnotation(f"img{k}", np.asarray(image["gt"], np.int64)))
        pred = np.asarray(image["pred"])
        pred = pred.astype(np.float32) if case["use_argmax"] else pred.astype(np.int64)
        preds.append(SegmentationPrediction(f"img{k}", pred))
    return anns, preds


def _metric(kind, case):
    label_map = {int(k): v for k, v in case["label_map"].items()}
    params = {"use_argmax": case["use_argmax"]}
    if case["ignore_label"] is not None:
        params["ignore_label"] = case["ignore_label"]
    metric, problems = build(METRICS, kind, params, ctx_for(label_map=label_map))
    assert problems == []
    return metric


@pytest.mark.parametrize("kind", ["mean_iou", "mean_accuracy", "segmentation_accuracy"])
@pytest.mark.parametrize("name", sorted(METRIC_CASES))
def test_metric_matches_accuracy_checker(name, kind):
    case, expected = METRIC_CASES[name], EXPECTED["metrics"][name][kind]
    metric = _metric(kind, case)
    anns, preds = _records(case)
    close(nan_to_none(metric.evaluate(preds, anns)), expected["value"], f"{name}/{kind} dataset value")
    for k, (pred, ann) in enumerate(zip(preds, anns)):
        ref = expected["per_image"][k]
        close(nan_to_none(metric.per_sample(pred, ann)), ref["nanmean"], f"{name}/{kind} image {k} per-sample")
        update = metric.update(pred, ann)
        ref_update = ref["update"] if isinstance(ref["update"], list) else [ref["update"]]
        update = update if isinstance(update, list) else [update]
        assert len(update) == len(ref_update), f"{name}/{kind} image {k}: {update} vs {ref_update}"
        for a, b in zip(update, ref_update):
            close(nan_to_none(a), b, f"{name}/{kind} image {k} update")


def test_metric_reference_covers_the_edge_cases():
    """The fixture has the cases the brief lists (and at least 20)."""
    names = set(METRIC_CASES)
    assert len(names) >= 20
    for needed in ("class_absent_everywhere", "class_only_predicted", "ignore_label_camvid_like",
                   "voc_like_255_border", "random_3cls_scores", "random_5cls_ids", "single_image_scores",
                   "single_image_ids"):
        assert needed in names
    assert EXPECTED["command"].endswith("make_segmentation_reference.py")
    assert CASES["command"] == EXPECTED["command"]


def test_mean_accuracy_per_sample_drops_last_class_with_ignore_label():
    """Accuracy Checker's per-image mean_accuracy with ignore_label pairs K values with K - 1 names,
    so the last class is left out of the per-sample value (not of the dataset value)."""
    metric = _metric("mean_accuracy", {"label_map": {"0": "a", "1": "b", "2": "c"}, "use_argmax": False,
                                       "ignore_label": 0})
    gt = np.array([[1, 1, 2, 2]])
    pred = np.array([[1, 0, 1, 2]])
    a, p = SegmentationAnnotation("x", gt), SegmentationPrediction("x", pred)
    assert metric.update(p, a) == [1.0]  # class 1: 1/1 (the pixel predicted 0 is ignored); class 2 dropped
    assert metric.evaluate([p], [a]) == pytest.approx(0.75)  # classes 1 (1/1) and 2 (1/2)


def test_metric_confusion_matrix_and_values_by_hand():
    metric = _metric("mean_iou", {"label_map": {"0": "bg", "1": "fg"}, "use_argmax": False, "ignore_label": None})
    gt = np.array([[0, 0, 1, 1], [0, 255, 1, 1]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 7, 1]])
    cm = metric.confusion_matrix(SegmentationPrediction("x", pred), SegmentationAnnotation("x", gt))
    assert cm.tolist() == [[2, 1], [0, 3]]  # 255 in gt and 7 in pred are not counted
    assert cm.dtype == np.int64
    assert metric.per_sample(SegmentationPrediction("x", pred), SegmentationAnnotation("x", gt)) == \
        pytest.approx((2 / 3 + 3 / 4) / 2)
    assert metric.higher_better and metric.annotation_kind == "segmentation"


def test_metric_config_problems():
    ctx = ctx_for(label_map={0: "a", 1: "b"})
    _, problems = build(METRICS, "mean_iou", {"use_argmax": "maybe", "ignore_label": 5, "annotation_source": "x"},
                        ctx)
    assert any("use_argmax" in p and "boolean" in p for p in problems)
    assert any("ignore_label" in p and "0..1" in p for p in problems)
    assert any("annotation_source" in p and "unknown key" in p for p in problems)
    _, problems = build(METRICS, "mean_accuracy", {"ignore_label": -1}, ctx_for(label_map={0: "a"}))
    assert any("ignore_label" in p for p in problems)
    metric, problems = build(METRICS, "segmentation_accuracy", {"name": "pixel_acc", "presenter": "print_vector",
                                                                 "reference": 0.9, "abs_threshold": 0.01},
                             ctx_for(label_map={0: "a", 1: "b"}))
    assert problems == [] and metric.name == "pixel_acc"


def test_metric_runtime_errors():
    gt = SegmentationAnnotation("a.png", np.zeros((4, 5), np.int64))
    no_labels, _ = build(METRICS, "mean_iou", {"use_argmax": False}, ctx_for())
    with pytest.raises(ConfigError, match="label map"):
        no_labels.evaluate([SegmentationPrediction("a.png", np.zeros((4, 5), np.int64))], [gt])
    metric, _ = build(METRICS, "mean_iou", {}, ctx_for(label_map={0: "a", 1: "b"}))
    with pytest.raises(ConfigError, match="use_argmax: false"):
        metric.per_sample(SegmentationPrediction("a.png", np.zeros((4, 5), np.int64)), gt)
    with pytest.raises(EngineError, match="a.png.*resize_segmentation_mask"):
        metric.per_sample(SegmentationPrediction("a.png", np.zeros((2, 4, 4), np.float32)), gt)
    ids_metric, _ = build(METRICS, "mean_iou", {"use_argmax": False}, ctx_for(label_map={0: "a", 1: "b"}))
    with pytest.raises(ConfigError, match="use_argmax: true"):
        ids_metric.per_sample(SegmentationPrediction("a.png", np.zeros((2, 4, 5), np.float32)), gt)
    colour = SegmentationAnnotation("a.png", np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(ConfigError, match="encode_segmentation_mask"):
        ids_metric.per_sample(SegmentationPrediction("a.png", np.zeros((4, 5), np.int64)), colour)
    # a one-channel id map (1, H, W) is accepted with use_argmax false, as Accuracy Checker flattens it
    assert ids_metric.per_sample(SegmentationPrediction("a.png", np.zeros((1, 4, 5), np.int64)), gt) == 1.0


# --- adapters against Accuracy Checker --------------------------------------------------------------

def _outputs(raw, name="out"):
    return Outputs([raw], [(name, f"{name}/sink_port_0")])


@pytest.mark.parametrize("case", CASES["adapters"], ids=lambda c: c["name"])
@pytest.mark.parametrize("how", ["input_shape", "input_layout", "heuristic"])
def test_adapter_matches_accuracy_checker(case, how):
    raw = np.asarray(case["raw"], dtype=case["dtype"])
    expected = np.asarray(EXPECTED["adapters"][case["name"]]["mask"])
    adapter, problems = build(ADAPTERS, case["adapter"], case["params"], ctx_for("models[0].launchers[0].adapter"))
    assert problems == []
    shape = case["input_shape"]
    chw = shape[1] <= 4
    meta = SampleMeta("img", (10, 10, 3), input_size=tuple(shape[2:] if chw else shape[1:3]))
    if how == "input_shape":
        meta.extra["input_shape"] = {"x": shape}
    elif how == "input_layout":
        meta.extra["input_layout"] = "NCHW" if chw else "NHWC"
    pred = adapter.process(_outputs(raw), meta)
    mask = pred.mask
    if case["adapter"] == "segmentation_one_class":  # Accuracy Checker keeps (1, H, W) uint8
        assert mask.dtype == np.int64 and mask.shape == expected.shape[1:]
        expected = expected[0]
    elif expected.dtype.kind == "f":
        assert mask.dtype == np.float32 and mask.ndim == 3
    else:
        assert mask.dtype == np.int64 and mask.ndim == 2
    assert mask.shape == expected.shape
    np.testing.assert_allclose(mask, expected, rtol=0, atol=1e-6)


def test_adapter_single_channel_extension():
    adapter, _ = build(ADAPTERS, "segmentation", {"make_argmax": True}, ctx_for())
    prob = np.array([[[[0.2, 0.5, 0.51], [0.9, 0.0, 1.0]]]], np.float32)
    meta = SampleMeta("img", (2, 3, 3), input_size=(2, 3))
    assert adapter.process(_outputs(prob), meta).mask.tolist() == [[0, 0, 1], [1, 0, 1]]
    # a [1, H, W] float map is a single-channel map too
    assert adapter.process(_outputs(prob[:, 0]), meta).mask.tolist() == [[0, 0, 1], [1, 0, 1]]
    with pytest.raises(EngineError, match="already holds class ids"):
        adapter.process(_outputs(np.zeros((1, 2, 3), np.int32)), meta)
    with pytest.raises(EngineError, match=r"output 'out' has shape \[1, 2, 3, 4, 5\]"):
        adapter.process(_outputs(np.zeros((1, 2, 3, 4, 5), np.float32)), meta)


def test_adapter_output_selection_and_params():
    two = Outputs([np.zeros((1, 2, 2, 2), np.float32), np.ones((1, 3, 2, 2), np.float32)],
                  [("first",), ("second",)])
    meta = SampleMeta("img", (2, 2, 3), input_size=(2, 2))
    adapter, problems = build(ADAPTERS, "segmentation", {"segmentation_out": "second"}, ctx_for())
    assert problems == [] and adapter.process(two, meta).mask.shape == (3, 2, 2)
    adapter, _ = build(ADAPTERS, "segmentation", {}, ctx_for())
    assert adapter.process(two, meta).mask.shape == (2, 2, 2)  # the first output, as Accuracy Checker
    adapter, _ = build(ADAPTERS, "segmentation", {"output_blob": "third"}, ctx_for())
    with pytest.raises(EngineError, match="no output 'third'"):
        adapter.process(two, meta)
    _, problems = build(ADAPTERS, "segmentation", {"make_argmax": 3, "output_blob": 7}, ctx_for("a"))
    assert len(problems) == 2 and any("make_argmax" in p for p in problems)
    _, problems = build(ADAPTERS, "segmentation_one_class", {"threshold": -1}, ctx_for("a"))
    assert any("threshold" in p for p in problems)


# --- postprocessing against Accuracy Checker --------------------------------------------------------

@pytest.mark.parametrize("case", CASES["resize"], ids=lambda c: c["name"])
def test_resize_segmentation_mask_matches_accuracy_checker(case):
    post, problems = build(POSTPROCESSING, "resize_segmentation_mask", dict(case["params"], apply_to=case["target"]),
                           ctx_for("models[0].datasets[0].postprocessing[0]"))
    assert problems == []
    mask = np.asarray(case["mask"], dtype=case["dtype"])
    meta = SampleMeta("img", tuple(case["image_size"]))
    if case["target"] == "annotation":
        ann, pred = post(SegmentationAnnotation("img", mask.copy()), None, meta, DatasetMeta())
        out = ann.mask
    else:
        ann, pred = post(None, SegmentationPrediction("img", mask.copy()), meta, DatasetMeta())
        out = pred.mask
    expected = np.asarray(EXPECTED["resize"][case["name"]]["mask"])
    assert out.shape == expected.shape
    assert np.array_equal(out, expected)
    if out.ndim == 3 and case["target"] == "prediction":
        assert out.dtype == np.float32
    elif out.ndim == 2:
        assert out.dtype == np.int64
    assert np.array_equal(mask, np.asarray(case["mask"], dtype=case["dtype"]))  # input unchanged


@pytest.mark.parametrize("case", CASES["encode"], ids=lambda c: c["name"])
def test_encode_segmentation_mask_matches_accuracy_checker(case):
    meta = seg.SegmentationDatasetMeta({0: "a"}, None,
                                       [tuple(c) for c in case.get("segmentation_colors", [])] or None,
                                       {int(k): v for k, v in case.get("prediction_to_gt_labels", {}).items()} or None)
    post, problems = build(POSTPROCESSING, "encode_segmentation_mask", {"apply_to": case["target"]},
                           ctx_for("p", meta=meta))
    assert problems == []
    mask = np.asarray(case["mask"], dtype=case["dtype"])
    sample = SampleMeta("img", mask.shape[-2:] + (3,))
    if case["target"] == "annotation":
        out = post(SegmentationAnnotation("img", mask), None, sample, meta)[0].mask
    else:
        out = post(None, SegmentationPrediction("img", mask), sample, meta)[1].mask
    expected = np.asarray(EXPECTED["encode"][case["name"]]["mask"])  # int8 in Accuracy Checker
    assert out.dtype == np.int64
    assert np.array_equal(out, expected)


def test_postprocessing_config_problems():
    _, problems = build(POSTPROCESSING, "resize_segmentation_mask", {"dst_width": 10}, ctx_for("p"))
    assert any("dst_height" in p and "missing" in p for p in problems)
    _, problems = build(POSTPROCESSING, "resize_segmentation_mask", {"size": 0, "apply_to": "both"}, ctx_for("p"))
    assert any(".size:" in p for p in problems) and any("apply_to" in p for p in problems)
    voc = DatasetMeta({0: "bg", 1: "a"}, 0, [(0, 0, 0), (1, 1, 1)])
    _, problems = build(POSTPROCESSING, "encode_segmentation_mask", {}, ctx_for("p", meta=voc))
    assert any("apply_to" in p and "prediction_to_gt_labels" in p for p in problems)
    post, problems = build(POSTPROCESSING, "encode_segmentation_mask", {"apply_to": "annotation"},
                           ctx_for("p", meta=voc))
    assert problems == []
    with pytest.raises(ConfigError, match="segmentation_colors"):
        post(SegmentationAnnotation("x", np.zeros((2, 2, 3), np.uint8)), None, SampleMeta("x", (2, 2, 3)),
             DatasetMeta({0: "bg"}))


def test_resize_targets_and_image_info():
    post, _ = build(POSTPROCESSING, "resize_segmentation_mask", {"apply_to": "prediction", "to_dst_image_size": True},
                    ctx_for("p"))
    meta = SampleMeta("x", (4, 6, 3), extra={"image_info": [[3, 5, 1]]})
    out = post(None, SegmentationPrediction("x", np.arange(12).reshape(3, 4)), meta, DatasetMeta())[1].mask
    assert out.shape == (3, 5)
    post, _ = build(POSTPROCESSING, "resize_segmentation_mask", {"apply_to": "all"}, ctx_for("p"))
    ann, pred = post(SegmentationAnnotation("x", np.ones((2, 2), np.int64)),
                     SegmentationPrediction("x", np.ones((2, 2), np.int64)), SampleMeta("x", (4, 6, 3)), DatasetMeta())
    assert ann.mask.shape == pred.mask.shape == (4, 6)


def test_byte_scale_and_nearest_rule():
    assert seg.byte_scale(np.array([[0, 255]], np.int64)).tolist() == [[0, 255]]
    assert seg.byte_scale(np.array([[-1, 1]], np.int64)).tolist() == [[0, 255]]
    assert seg.byte_scale(np.array([[0.0, 0.5, 1.0]], np.float32)).tolist() == [[0, 128, 255]]
    assert seg.byte_scale(np.full((2, 2), 3.0, np.float32)).tolist() == [[0, 0], [0, 0]]
    # Pillow NEAREST: source index int((i + 0.5) * in / out)
    assert seg._nearest_indices(4, 2).tolist() == [1, 3]
    assert seg._nearest_indices(3, 6).tolist() == [0, 0, 1, 1, 2, 2]
    assert seg._nearest_indices(640, 500).tolist()[:5] == [0, 1, 3, 4, 5]


# --- mask loaders against Pillow / Accuracy Checker -------------------------------------------------

@pytest.mark.parametrize("entry", CASES["mask_files"], ids=lambda e: e["name"])
def test_mask_loaders_match_accuracy_checker(entry, tmp_path):
    path = tmp_path / f"{entry['name']}.png"
    path.write_bytes(base64.b64decode(entry["png_base64"]))
    for loader in ("pillow", "scipy", "pillow_convert_to_rgb", "opencv", "opencv_gray", "opencv_unchanged"):
        expected = EXPECTED["mask_files"][f"{entry['name']}/{loader}"]
        got = seg.read_mask(path, loader)
        assert got.dtype == np.uint8
        assert list(got.shape) == expected["shape"], loader
        assert np.array_equal(got, np.asarray(expected["mask"])), loader


def _palette_png(path: Path, indices: np.ndarray, palette, bits=8, transparency=None) -> Path:
    """A palette ("P" mode) PNG written by Pillow, ``bits`` per index."""
    image = Image.fromarray(indices.astype(np.uint8), "P")
    image.putpalette([v for color in palette for v in color])
    extra = {"transparency": bytes(transparency)} if transparency is not None else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, bits=bits, **extra)
    return path


@pytest.mark.parametrize("bits", [8, 4, 2, 1])
def test_palette_mask_loaders(bits, tmp_path):
    """Palette indices (pillow), palette colours (scipy; RGBA with transparency), and OpenCV agreeing
    on the colours, at every palette bit depth."""
    rng = np.random.default_rng(bits)
    n = 1 << min(bits, 5)
    palette = [(int(v), int(v) // 2, 255 - int(v)) for v in np.linspace(0, 255, n)]
    ids = rng.integers(0, n, (11, 13))
    path = _palette_png(tmp_path / "m.png", ids, palette, bits)
    assert path.read_bytes()[24:26] == bytes([bits, 3])  # IHDR: bit depth, colour type 3 (palette)
    assert np.array_equal(seg.read_mask(path, "pillow"), ids)
    rgb = seg.read_mask(path, "scipy")
    assert np.array_equal(rgb, np.asarray(palette, np.uint8)[ids])
    assert np.array_equal(seg.read_mask(path, "pillow_convert_to_rgb"), rgb)
    assert np.array_equal(seg.read_mask(path, "opencv")[:, :, ::-1], rgb)  # OpenCV agrees on the colours
    _palette_png(path, ids, palette, bits, transparency=[0, 128])
    rgba = seg.read_mask(path, "scipy")
    assert rgba.shape == (11, 13, 4) and set(np.unique(rgba[:, :, 3])) <= {0, 128, 255}
    assert np.array_equal(rgba[:, :, 3], np.where(ids == 0, 0, np.where(ids == 1, 128, 255)))


def test_mask_loader_errors_and_numpy(tmp_path):
    with pytest.raises(DatasetError, match="missing.png: cannot read the mask"):
        seg.read_mask(tmp_path / "missing.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    for loader in ("pillow", "scipy", "opencv", "numpy"):
        with pytest.raises(DatasetError, match=f"bad.png: corrupt or unsupported mask file for mask_loader '{loader}'"):
            seg.read_mask(bad, loader)
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), np.full((40, 50), 7, np.uint8))
    bad.write_bytes(good.read_bytes()[:60])  # truncated
    with pytest.raises(DatasetError, match="bad.png: corrupt"):
        seg.read_mask(bad)
    with pytest.raises(ValueError, match="unknown mask loader 'nifti'"):
        seg.read_mask(good, "nifti")
    np.save(tmp_path / "m.npy", np.array([[1, 2], [3, 260]]))
    assert seg.read_mask(tmp_path / "m.npy", "numpy").tolist() == [[1, 2], [3, 4]]  # uint8 cast wraps
    np.savez(tmp_path / "m.npz", first=np.array([[5.7, 1]]), second=np.zeros(3))
    assert seg.read_mask(tmp_path / "m.npz", "numpy").tolist() == [[5, 1]]  # the first array, cast


def test_mask_cache_decodes_once_and_follows_file_changes(tmp_path, monkeypatch):
    cache = seg.MaskCache()
    monkeypatch.setattr(seg, "MASK_CACHE", cache)
    decoded = []
    real_read = seg.read_mask
    monkeypatch.setattr(seg, "read_mask", lambda path, loader="pillow": decoded.append(path) or real_read(path, loader))
    path = tmp_path / "m.png"
    cv2.imwrite(str(path), np.array([[0, 1], [2, 3]], np.uint8))
    ann = seg.MaskFileAnnotation("m", None, str(path), "pillow")
    first = ann.mask
    assert first.dtype == np.int64 and first.tolist() == [[0, 1], [2, 3]]
    first[0, 0] = 9  # the caller's copy; the cache is not touched
    assert ann.mask.tolist() == [[0, 1], [2, 3]] and len(decoded) == 1
    assert seg.MaskFileAnnotation("other record", None, str(path), "pillow").mask.tolist() == [[0, 1], [2, 3]]
    assert len(decoded) == 1 and cache.info()["hits"] == 2 and cache.info()["misses"] == 1
    cached = cache.get(path, "pillow")
    assert cached.dtype == np.uint8 and not cached.flags.writeable and cache.info()["bytes"] == 4
    # another loader is another entry
    assert seg.MaskFileAnnotation("m", None, str(path), "opencv").mask.shape == (2, 2, 3)
    assert len(decoded) == 2 and cache.info()["entries"] == 2
    # a file changed on disk (other size, later mtime) is read again
    cv2.imwrite(str(path), np.full((3, 3), 4, np.uint8))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert ann.mask.tolist() == [[4] * 3] * 3 and len(decoded) == 3
    assert cache.info()["entries"] == 2 and cache.info()["bytes"] == 9 + 12
    # colour masks come out as uint8 copies
    colour = seg.MaskFileAnnotation("c", None, str(path), "pillow_convert_to_rgb")
    assert colour.mask.dtype == np.uint8 and colour.mask.flags.writeable
    path.unlink()
    with pytest.raises(DatasetError, match="m.png: cannot read the mask"):
        _ = ann.mask
    cache.clear()
    assert cache.info() == {"entries": 0, "bytes": 0, "max_bytes": 256 << 20, "hits": 0, "misses": 0}


def test_mask_cache_byte_budget_evicts_least_recently_used(tmp_path):
    cache = seg.MaskCache(max_bytes=250)
    paths = []
    for k in range(4):
        paths.append(tmp_path / f"{k}.png")
        cv2.imwrite(str(paths[-1]), np.full((10, 10), k, np.uint8))  # 100 bytes each
    for p in paths[:2]:
        cache.get(p)
    cache.get(paths[0])  # 0 is now the most recently used
    cache.get(paths[2])  # evicts 1
    assert cache.info()["entries"] == 2 and cache.info()["bytes"] == 200
    misses = cache.info()["misses"]
    assert int(cache.get(paths[0])[0, 0]) == 0 and cache.info()["misses"] == misses  # kept
    assert int(cache.get(paths[1])[0, 0]) == 1 and cache.info()["misses"] == misses + 1  # read again
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), np.zeros((20, 20), np.uint8))  # 400 bytes: over the budget, never kept
    assert cache.get(big).shape == (20, 20) and cache.info()["bytes"] <= 250
    assert all(entry[0] != str(big) for entry in cache._entries)


def test_mask_cache_threads(tmp_path):
    cache = seg.MaskCache(max_bytes=1000)
    paths = []
    for k in range(12):
        paths.append(tmp_path / f"{k}.png")
        cv2.imwrite(str(paths[-1]), np.full((10, 10), k, np.uint8))
    with ThreadPoolExecutor(4) as pool:
        values = list(pool.map(lambda k: int(cache.get(paths[k % 12])[5, 5]), range(240)))
    assert values == [k % 12 for k in range(240)]
    info = cache.info()
    assert info["bytes"] <= 1000 and info["bytes"] == 100 * info["entries"]
    assert info["hits"] + info["misses"] == 240


def test_metric_reuses_per_sample_matrices_in_evaluate(monkeypatch):
    """The evaluator's pattern: per_sample on every pair, then evaluate on the same objects."""
    metric = _metric("mean_iou", {"label_map": {"0": "bg", "1": "fg"}, "use_argmax": False, "ignore_label": None})
    rng = np.random.default_rng(3)
    anns = [SegmentationAnnotation(f"{k}", rng.integers(0, 3, (5, 6))) for k in range(4)]
    preds = [SegmentationPrediction(f"{k}", rng.integers(-1, 2, (5, 6))) for k in range(4)]
    expected = metric.evaluate(preds, anns)
    calls = []
    real = metric.confusion_matrix
    monkeypatch.setattr(metric, "confusion_matrix", lambda p, a: calls.append(p.identifier) or real(p, a))
    samples = [metric.per_sample(p, a) for p, a in zip(preds, anns)]
    assert calls == ["0", "1", "2", "3"]
    assert metric.evaluate(preds, anns) == expected and calls == ["0", "1", "2", "3"]  # no recount
    assert metric._memo == {}  # emptied by evaluate
    assert metric.evaluate(preds, anns) == expected and len(calls) == 8  # nothing remembered now
    assert samples == [metric.per_sample(p, a) for p, a in zip(preds, anns)]  # from the fixture-checked rules
    # a prediction whose mask was replaced, and a new annotation object, are counted again
    preds[1].mask = np.ones((5, 6), np.int64)
    copy = SegmentationAnnotation("2", anns[2].mask)
    del calls[:]
    changed = metric.evaluate(preds[:3], anns[:2] + [copy])
    assert calls == ["1", "2"]  # pair 0 is remembered from the per_sample calls just above
    assert changed == pytest.approx(metric.evaluate(preds[:3], anns[:2] + [copy]))
    # bounded: past the limit the oldest pairs are forgotten (and counted again by evaluate)
    monkeypatch.setattr(seg, "_MEMO_BYTES", 0)  # the floor of 64 entries
    many = [(SegmentationPrediction(f"{k}", preds[0].mask), anns[0]) for k in range(70)]
    for p, a in many:
        metric.per_sample(p, a)
    assert len(metric._memo) == 64
    del calls[:]
    metric.evaluate([p for p, _ in many], [a for _, a in many])
    assert calls == [str(k) for k in range(6)]


# --- converters -------------------------------------------------------------------------------------

def _write_image(path: Path, h=4, w=5):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), 90, np.uint8))


def _write_ids(path: Path, ids: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), ids.astype(np.uint8))


def convert(name, params, tmp_path, data_source=None):
    conv, problems = build(CONVERTERS, name, params, ctx_for("models[0].datasets[0].annotation_conversion",
                                                             base=tmp_path, data_source=data_source))
    assert problems == []
    return conv.convert()


def test_voc_segmentation_devkit(tmp_path):
    devkit = tmp_path / "VOCdevkit" / "VOC2012"
    ids = {"2007_000032": np.array([[0, 1, 255], [15, 15, 0]]), "2007_000039": np.array([[20, 0, 0], [0, 0, 255]])}
    palette = list(seg.VOC_SEGMENTATION_COLORS) + [(0, 0, 0)] * 234 + [(224, 224, 192)]
    (devkit / "SegmentationClass").mkdir(parents=True)
    for name, mask in ids.items():
        _write_image(devkit / "JPEGImages" / f"{name}.jpg")
        _palette_png(devkit / "SegmentationClass" / f"{name}.png", mask, palette)
    imageset = devkit / "ImageSets" / "Segmentation" / "val.txt"
    imageset.parent.mkdir(parents=True)
    imageset.write_text("2007_000032\n\n2007_000039\n")
    out = convert("voc_segmentation", {"imageset_file": "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt"},
                  tmp_path)
    assert [a.identifier for a in out.annotations] == ["2007_000032.jpg", "2007_000039.jpg"]
    assert out.files == [devkit / "JPEGImages" / "2007_000032.jpg", devkit / "JPEGImages" / "2007_000039.jpg"]
    assert out.meta.label_map[0] == "__background__" and out.meta.label_map[20] == "tvmonitor"
    assert out.meta.background_label == 0 and len(out.meta.segmentation_colors) == 21
    first = out.annotations[0]
    assert isinstance(first, SegmentationAnnotation)
    assert first.mask.shape == (2, 3, 3) and first.mask.dtype == np.uint8  # colours, as AC's scipy loader
    encode, _ = build(POSTPROCESSING, "encode_segmentation_mask", {"apply_to": "annotation"},
                      ctx_for("p", meta=out.meta))
    encoded = encode(first, None, SampleMeta("x", (2, 3, 3)), out.meta)[0].mask
    assert encoded.tolist() == [[0, 1, 0], [15, 15, 0]]  # the 255 border colour matches no class -> 0
    # with a data_source, files come from it (as Accuracy Checker's reader)
    out = convert("voc_segmentation", {"imageset_file": str(imageset), "images_dir": str(devkit / "JPEGImages"),
                                       "mask_dir": str(devkit / "SegmentationClass")}, tmp_path, tmp_path / "src")
    assert out.files[0] == tmp_path / "src" / "2007_000032.jpg"


def test_voc_segmentation_labelmap_and_errors(tmp_path):
    (tmp_path / "ImageSets" / "Segmentation").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Segmentation" / "val.txt").write_text("a\n")
    _write_ids(tmp_path / "SegmentationClass" / "a.png", np.array([[0, 1], [1, 0]]))
    _write_image(tmp_path / "JPEGImages" / "a.jpg")
    (tmp_path / "labelmap.txt").write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\ntext:255,255,255::\n")
    out = convert("voc_segmentation", {"imageset_file": "ImageSets/Segmentation/val.txt",
                                       "labelmap_file": "labelmap.txt"}, tmp_path)
    assert out.meta.label_map == {0: "background", 1: "text"}
    assert out.meta.segmentation_colors == [(0, 0, 0), (255, 255, 255)]
    assert out.annotations[0].mask.tolist() == [[0, 1], [1, 0]] and out.annotations[0].mask.dtype == np.int64
    (tmp_path / "ImageSets" / "Segmentation" / "val.txt").write_text("a\nb\n")
    conv, _ = build(CONVERTERS, "voc_segmentation", {"imageset_file": "ImageSets/Segmentation/val.txt"},
                    ctx_for("c", base=tmp_path))
    with pytest.raises(DatasetError, match=r"b\.png does not exist"):
        conv.convert()
    _, problems = build(CONVERTERS, "voc_segmentation", {"images_dir": 3, "has_background": True}, ctx_for("c"))
    assert any("imageset_file" in p and "required" in p for p in problems)
    assert any("images_dir" in p for p in problems) and any("has_background" in p for p in problems)


def test_cityscapes(tmp_path):
    root = tmp_path / "Cityscapes"
    for city, name in (("munich", "munich_000001_000019"), ("bonn", "bonn_000000_000019")):
        _write_image(root / "imgsFine/leftImg8bit/val" / city / f"{name}_leftImg8bit.png")
        _write_ids(root / "gtFine/val" / city / f"{name}_gtFine_labelTrainIds.png",
                   np.array([[0, 18, 255], [19, 3, 3]]))
    out = convert("cityscapes", {"dataset_root_dir": "Cityscapes"}, tmp_path, data_source=root)
    assert [a.identifier for a in out.annotations] == [
        "imgsFine/leftImg8bit/val/bonn/bonn_000000_000019_leftImg8bit.png",
        "imgsFine/leftImg8bit/val/munich/munich_000001_000019_leftImg8bit.png"]
    assert out.files[0] == root / out.annotations[0].identifier
    assert out.annotations[0].mask_path == str(root / "gtFine/val/bonn/bonn_000000_000019_gtFine_labelTrainIds.png")
    assert out.annotations[1].mask.tolist() == [[0, 18, 255], [19, 3, 3]]
    assert len(out.meta.label_map) == 20 and out.meta.background_label == 19
    full = convert("cityscapes", {"dataset_root_dir": str(root), "use_full_label_map": True}, tmp_path).meta
    assert len(full.label_map) == 35 and full.label_map[-1] == "license plate" and full.label_map[33] == "bicycle"
    assert full.prediction_to_gt_labels[0] == 7 and full.prediction_to_gt_labels[18] == 33
    conv, _ = build(CONVERTERS, "cityscapes", {"dataset_root_dir": str(root), "images_subfolder": "nope"},
                    ctx_for("c"))
    with pytest.raises(DatasetError, match="no image matches"):
        conv.convert()


def test_camvid(tmp_path):
    root = tmp_path / "CamVid"
    _write_image(root / "val" / "0016E5_07959.png")
    _write_ids(root / "valannot" / "0016E5_07959.png", np.array([[0, 11], [5, 3]]))
    (root / "val.txt").write_text("/SegNet/CamVid/val/0016E5_07959.png /SegNet/CamVid/valannot/0016E5_07959.png\n")
    out = convert("camvid", {"annotation_file": "CamVid/val.txt"}, tmp_path, data_source=root)
    assert out.annotations[0].identifier == "val/0016E5_07959.png"
    assert out.files == [root / "val" / "0016E5_07959.png"]
    assert out.annotations[0].mask.tolist() == [[0, 11], [5, 3]]
    assert out.meta.label_map[11] == "Unlabelled" and out.meta.background_label == 11
    assert out.meta.segmentation_colors[4] == (60, 40, 222)
    (root / "val.txt").write_text("a.png b.png\nonly_one.png\n")
    conv, _ = build(CONVERTERS, "camvid", {"annotation_file": str(root / "val.txt")}, ctx_for("c", data_source=root))
    with pytest.raises(DatasetError, match=r"val.txt:2: expected '<image> <mask>'"):
        conv.convert()


def test_common_semantic_segmentation(tmp_path):
    for base, mask in (("b", [[1, 2]]), ("a", [[0, 0]])):
        _write_image(tmp_path / "images" / f"img_{base}.jpg")
        _write_ids(tmp_path / "masks" / f"gt_{base}_mask.png", np.array(mask))
    _write_image(tmp_path / "images" / "other.png")
    (tmp_path / "meta.json").write_text(json.dumps({"labels": ["bg", "x", "y"],
                                                    "segmentation_colors": [[0, 0, 0], [1, 1, 1], [2, 2, 2]]}))
    params = {"images_dir": "images", "masks_dir": "masks", "image_prefix": "img_", "image_postfix": ".jpg",
              "mask_prefix": "gt_", "mask_postfix": "_mask.png", "dataset_meta_file": "meta.json"}
    out = convert("common_semantic_segmentation", params, tmp_path)
    assert [a.identifier for a in out.annotations] == ["img_a.jpg", "img_b.jpg"]
    assert out.files == [tmp_path / "images" / "img_a.jpg", tmp_path / "images" / "img_b.jpg"]
    assert [a.mask.tolist() for a in out.annotations] == [[[0, 0]], [[1, 2]]]
    assert out.meta.label_map == {0: "bg", 1: "x", 2: "y"} and out.meta.segmentation_colors[2] == (2, 2, 2)
    rgb = convert("common_semantic_segmentation", dict(params, mask_loader="pillow_convert_to_rgb"), tmp_path)
    assert rgb.annotations[1].mask.shape == (1, 2, 3)
    no_meta = convert("common_semantic_segmentation", {k: v for k, v in params.items() if k != "dataset_meta_file"},
                      tmp_path)
    assert no_meta.meta.label_map == {}
    _, problems = build(CONVERTERS, "common_semantic_segmentation",
                        dict(params, mask_loader="nifti", dataset_meta="x.json"), ctx_for("c", base=tmp_path))
    assert any("mask_loader" in p and "nifti" in p for p in problems)
    assert any("dataset_meta" in p and "unknown key" in p for p in problems)
    conv, _ = build(CONVERTERS, "common_semantic_segmentation", dict(params, mask_postfix=".bmp"),
                    ctx_for("c", base=tmp_path))
    with pytest.raises(DatasetError, match=r"gt_a\.bmp does not exist"):
        conv.convert()


def test_masks_root_follows_segmentation_masks_source(tmp_path):
    _write_image(tmp_path / "images" / "a.png")
    _write_ids(tmp_path / "elsewhere" / "a.png", np.array([[3]]))
    (tmp_path / "masks").mkdir()
    ctx = ctx_for("c", base=tmp_path)
    ctx.segmentation_masks_source = tmp_path / "elsewhere"  # what the engine may pass (Accuracy Checker's rule)
    conv, _ = build(CONVERTERS, "common_semantic_segmentation", {"images_dir": "images", "masks_dir": "masks"}, ctx)
    assert conv.convert().annotations[0].mask.tolist() == [[3]]


# --- a small pipeline -------------------------------------------------------------------------------

def test_pipeline_converter_adapter_resize_metric(tmp_path):
    """common_semantic_segmentation -> segmentation adapter (argmax) -> resize to the image -> metrics."""
    gt = np.zeros((6, 8), np.int64)
    gt[2:4, 2:6] = 1
    _write_image(tmp_path / "images" / "x.png", 6, 8)
    _write_ids(tmp_path / "masks" / "x.png", gt)
    (tmp_path / "meta.json").write_text(json.dumps({"label_map": {"0": "background", "1": "text"}}))
    out = convert("common_semantic_segmentation", {"images_dir": "images", "masks_dir": "masks",
                                                   "dataset_meta_file": "meta.json"}, tmp_path)
    prob = np.zeros((1, 1, 3, 4), np.float32)
    prob[0, 0, 1, 1:3] = 0.9  # the text at half resolution
    adapter, _ = build(ADAPTERS, "segmentation", {"make_argmax": True}, ctx_for())
    meta = SampleMeta("x.png", (6, 8, 3), input_size=(3, 4))
    pred = adapter.process(_outputs(prob), meta)
    resize, _ = build(POSTPROCESSING, "resize_segmentation_mask", {"apply_to": "prediction"}, ctx_for("p"))
    ann, pred = resize(out.annotations[0], pred, meta, out.meta)
    assert pred.mask.shape == (6, 8)
    values = {}
    for kind in ("mean_iou", "mean_accuracy", "segmentation_accuracy"):
        metric, _ = build(METRICS, kind, {"use_argmax": False}, ctx_for(meta=out.meta))
        values[kind] = metric.evaluate([pred], [ann])
    assert values == {"mean_iou": 1.0, "mean_accuracy": 1.0, "segmentation_accuracy": 1.0}
    assert isinstance(ann, SegmentationAnnotation) and ann.mask.dtype == np.int64


def test_report_max_difference():
    """Runs last in this file: the largest metric difference seen against the reference."""
    assert MAX_DIFF.get("metrics", 0.0) <= TOL
