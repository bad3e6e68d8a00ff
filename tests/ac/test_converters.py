"""Detection annotation converters (``pot_cli.engines.ac.converters``) against Accuracy Checker.

Reference values: ``tests/data/ac_reference/converter_expected.json``, produced by
``tests/data/ac_reference/make_converter_reference.py`` with the reference venv (openvino-dev
2023.3.0); it runs Accuracy Checker's own converters on the shared faces set, the synthetic inputs
in ``tests/data/ac_converters/`` and ``tests/data/ac_cvat_sample.xml``.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from pot_cli.engines.ac import converters  # noqa: F401  (registers the types)
from pot_cli.engines.ac.base import CONVERTERS, Context
from pot_cli.engines.ac.representations import DetectionAnnotation
from pot_cli.engines.preprocessing import Problems
from pot_cli.errors import DatasetError

TESTS_DATA = Path(__file__).resolve().parents[1] / "data"
DATA = TESTS_DATA / "ac_converters"
EXPECTED = json.loads((TESTS_DATA / "ac_reference" / "converter_expected.json").read_text())
CASES = {c["name"]: c for c in EXPECTED["cases"]}
WHERE = "models[0].datasets[0].annotation_conversion"
# pycocotools' decode under NumPy 2 warns about __array__(copy=...); not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def faces(shared_dir) -> Path:
    return shared_dir / "data" / "faces"


def _subst(params: dict, faces: Path) -> dict:
    return {k: v.format(faces=faces, data=DATA, tests_data=TESTS_DATA) if isinstance(v, str) else v
            for k, v in params.items()}


def build(name: str, params: dict, data_source: Path | None = None, base: Path = TESTS_DATA):
    """The converter and the config problems (unknown keys checked as the engine does)."""
    problems = Problems("ac.yml")
    ctx = Context(problems, WHERE, base=base, data_source=data_source)
    reg = CONVERTERS[name]
    problems.keys(dict(params, converter=name), reg.keys, WHERE)
    return reg.cls(dict(params, converter=name), ctx), problems.lines


def run(name: str, params: dict, data_source: Path | None):
    conv, lines = build(name, params, data_source)
    assert lines == []
    return conv.convert()


# --- reference comparison -------------------------------------------------------------------------

def _compare(case: dict, out, root: Path) -> float:
    """Assert our conversion equals Accuracy Checker's; returns the max abs box difference."""
    exp = case["annotations"]
    assert len(out.annotations) == len(exp)
    assert [a.identifier for a in out.annotations] == [e["identifier"] for e in exp]
    assert out.files == [root / e["identifier"] for e in exp]
    worst = 0.0
    for ours, ref in zip(out.annotations, exp):
        assert isinstance(ours, DetectionAnnotation)
        assert ours.labels.dtype == np.int64 and ours.boxes.dtype == np.float64
        assert ours.labels.tolist() == ref["labels"]
        ref_boxes = np.asarray(ref["boxes"], dtype=np.float64).reshape(-1, 4)
        assert ours.boxes.shape == ref_boxes.shape
        if ref_boxes.size:
            worst = max(worst, float(np.abs(ours.boxes - ref_boxes).max()))
        assert ours.difficult.tolist() == ref["difficult"]
        if "crowd" in ref:
            assert ours.crowd.tolist() == ref["crowd"]
        if "masks" in ref:
            assert list(ours.image_size) == ref["image_size"]
            assert len(ours.masks) == len(ref["masks"])
            for m, r in zip(ours.masks, ref["masks"]):
                assert m["size"] == r["size"]
                assert m["counts"].decode() == r["counts"]
                assert int(mask_utils.area(m)) == r["area"]
                assert int(mask_utils.decode(m).sum()) == r["pixel_sum"]
        else:
            assert ours.masks is None
    assert out.meta.label_map == {int(k): v for k, v in case["label_map"].items()}
    assert out.meta.background_label == case["background_label"]
    return worst


OK_CASES = [n for n, c in CASES.items() if "error" not in c]


@pytest.mark.parametrize("name", OK_CASES)
def test_matches_accuracy_checker(name, faces):
    case = CASES[name]
    root = faces / "VOC" / "JPEGImages"
    out = run(case["converter"], _subst(case["params"], faces), root)
    assert _compare(case, out, root) <= 1e-9


def test_reference_covers_every_converter_and_the_ac_failures():
    assert {c["converter"] for c in CASES.values()} == {"mscoco_detection", "mscoco_mask_rcnn", "voc_detection",
                                                        "wider", "cvat_object_detection"}
    assert len(OK_CASES) == 25
    # AC 2023.3 cannot convert the faces COCO JSON as is (no 'segmentation'); we can, see the case notes
    assert CASES["coco_faces"]["ac_error_on_original"] == "KeyError: 'segmentation'"
    assert CASES["voc_faces"]["error"] == "KeyError: 'face'"
    assert CASES["coco_faces_meta_labels"]["error"] == "KeyError: 1"


def test_faces_sets_agree_across_formats(faces):
    """COCO, WIDER and VOC describe the same 166 boxes (VOC's 1-based inclusive corners, shifted by
    -1, give ``x, y, x + w - 1, y + h - 1``)."""
    root = faces / "VOC" / "JPEGImages"
    coco = run("mscoco_detection", {"annotation_file": str(faces / "coco_instances.json")}, root)
    wider = run("wider", {"annotation_file": str(faces / "wider_face_annotations.txt")}, root)
    voc = run("voc_detection", {"imageset_file": str(faces / "VOC/ImageSets/Main/test.txt"),
                                "annotations_dir": str(faces / "VOC/Annotations"),
                                "dataset_meta_file": str(DATA / "faces_meta_labels.json")}, root)
    assert sum(len(a) for a in coco.annotations) == 166
    for c, w, v in zip(coco.annotations, wider.annotations, voc.annotations):
        assert c.identifier == w.identifier == v.identifier
        np.testing.assert_array_equal(c.boxes, w.boxes)
        np.testing.assert_array_equal(c.boxes, v.boxes + [0, 0, 1, 1])
    sizes = {a.identifier: a.image_size for a in coco.annotations}
    assert sizes["faces_real_grace_hopper.jpg"] == (600, 512)
    assert {a.identifier: a.image_size for a in voc.annotations} == sizes
    assert all(a.image_size is None for a in wider.annotations)
    hopper = coco.annotations[-1]
    assert hopper.boxes.tolist() == [[168.0, 128.0, 350.0, 318.0]]


# --- the cases Accuracy Checker cannot convert ----------------------------------------------------

def test_voc_face_class_is_refused_naming_file_and_class(faces):
    case = CASES["voc_faces"]
    conv, lines = build("voc_detection", _subst(case["params"], faces), faces / "VOC/JPEGImages")
    assert lines == []
    with pytest.raises(DatasetError) as e:
        conv.convert()
    msg = e.value.message
    assert "faces_000_skimage_colorwheel.xml" in msg and "'face'" in msg and "dataset_meta_file" in msg
    assert "aeroplane" in msg and "__background__" not in msg


def test_coco_category_outside_meta_label_map(faces):
    case = CASES["coco_faces_meta_labels"]  # labels [face] -> {0: face}; category 1 is not a key
    conv, _ = build("mscoco_detection", _subst(case["params"], faces), faces / "VOC/JPEGImages")
    with pytest.raises(DatasetError, match=r"coco_instances\.json: annotations\[0\]: category_id 1 is not in"):
        conv.convert()


# --- behaviour beyond the reference ---------------------------------------------------------------

def _faces_copy(tmp_path: Path, faces: Path, names: list[str]) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    for n in names:
        shutil.copy(faces / "VOC/JPEGImages" / n, images / n)
    return images


def test_images_dir_used_without_data_source_and_data_source_wins(tmp_path):
    ann = tmp_path / "c.json"
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "height": 4, "width": 5}],
                               "annotations": [], "categories": [{"id": 1, "name": "x"}]}))
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.jpg").write_bytes(b"x")
    # relative paths resolve through the context (against its base here)
    conv, lines = build("mscoco_detection", {"annotation_file": "c.json", "images_dir": "imgs"}, None, base=tmp_path)
    out = conv.convert()
    assert lines == [] and out.files == [tmp_path / "imgs" / "a.jpg"]
    assert out.annotations[0].image_size == (4, 5) and len(out.annotations[0]) == 0
    # data_source is what Accuracy Checker's reader opens: it wins over images_dir
    conv, _ = build("mscoco_detection", {"annotation_file": str(ann), "images_dir": str(tmp_path / "nope")},
                    tmp_path / "imgs")
    assert conv.convert().files == [tmp_path / "imgs" / "a.jpg"]
    # neither: the annotation file's folder (Accuracy Checker's images_dir default)
    (tmp_path / "a.jpg").write_bytes(b"x")
    assert run("mscoco_detection", {"annotation_file": str(ann)}, None).files == [tmp_path / "a.jpg"]


def test_missing_images_listed_up_to_five(tmp_path, faces):
    images = _faces_copy(tmp_path, faces, ["faces_000_skimage_colorwheel.jpg"])
    conv, _ = build("wider", {"annotation_file": str(faces / "wider_face_annotations.txt")}, images)
    with pytest.raises(DatasetError) as e:
        conv.convert()
    msg = e.value.message
    assert msg.startswith(f"{faces / 'wider_face_annotations.txt'}: 61 image file(s) not found in {images}: ")
    assert msg.endswith("faces_005_skimage_coins.jpg and 56 more")
    assert "faces_000_skimage_colorwheel.jpg" not in msg


def test_bad_params_are_reported_with_their_key_and_not_raised():
    conv, lines = build("mscoco_detection", {"has_background": "yes", "sort_key": "name",
                                             "use_full_label_map": 1, "images_dir": 3,
                                             "convert_COCO_to_VOC_labels": "True"})
    text = "\n".join(lines)
    assert f"ac.yml: {WHERE}.annotation_file: missing required key" in text
    assert f"{WHERE}.has_background: 'yes' is not a boolean" in text
    assert f"{WHERE}.sort_key: 'name' is not supported; expected one of: image_id, image_size" in text
    assert f"{WHERE}.use_full_label_map: 1 is not a boolean" in text
    assert f"{WHERE}.images_dir: 3 is not a path" in text
    assert len(lines) == 5 and conv.to_voc is True and conv.sort_key == "image_id"
    _, lines = build("wider", {"annotation_file": "w.txt", "label_start": 1.5})
    assert lines == [f"ac.yml: {WHERE}.label_start: 1.5 is not an integer"]
    _, lines = build("voc_detection", {"imageset_file": "x.txt", "annotations_dir": "A", "imageset": "y"})
    assert len(lines) == 1 and lines[0].startswith(f"ac.yml: {WHERE}.imageset: unknown key")
    _, lines = build("cvat_object_detection", {"annotation_file": "a.xml", "label_file": "l.json"})
    assert len(lines) == 1 and f"{WHERE}.label_file: unknown key" in lines[0]


def test_registered_keys():
    coco = ("converter", "annotation_file", "has_background", "use_full_label_map", "sort_annotations", "sort_key",
            "images_dir", "dataset_meta_file", "convert_COCO_to_VOC_labels")
    assert CONVERTERS["mscoco_detection"].keys == coco == CONVERTERS["mscoco_mask_rcnn"].keys
    assert set(CONVERTERS["voc_detection"].keys) == {"converter", "imageset_file", "annotations_dir", "images_dir",
                                                     "has_background", "dataset_meta_file"}
    assert set(CONVERTERS["wider"].keys) == {"converter", "annotation_file", "label_start", "images_dir",
                                             "dataset_meta_file"}
    assert set(CONVERTERS["cvat_object_detection"].keys) == {"converter", "annotation_file", "images_dir",
                                                             "has_background", "labels_file", "dataset_meta_file"}


def _coco(tmp_path: Path, anns: list, images=None) -> Path:
    images = images or [{"id": 1, "file_name": "a.jpg", "height": 20, "width": 30}]
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": 4, "name": "cat"}]}))
    for im in images:
        (tmp_path / im["file_name"]).write_bytes(b"x")
    return path


def test_coco_lenient_and_strict_fields(tmp_path):
    path = _coco(tmp_path, [{"image_id": 1, "category_id": 4, "bbox": [1, 2, 3, 4]}])
    out = run("mscoco_detection", {"annotation_file": str(path)}, tmp_path)  # no iscrowd, no segmentation
    a = out.annotations[0]
    assert a.boxes.tolist() == [[1, 2, 4, 6]] and a.crowd.tolist() == [False] and a.labels.tolist() == [0]
    with pytest.raises(DatasetError, match=r"annotations\[0\]: no 'segmentation'"):
        run("mscoco_mask_rcnn", {"annotation_file": str(path)}, tmp_path)
    path = _coco(tmp_path, [{"image_id": 1, "category_id": 5, "bbox": [1, 2, 3, 4]}])
    with pytest.raises(DatasetError, match=r"c\.json: annotations\[0\]: category_id 5 is not in the label map; "
                                           r"expected one of: 4"):
        run("mscoco_detection", {"annotation_file": str(path)}, tmp_path)
    path = _coco(tmp_path, [{"image_id": 1, "category_id": 4, "bbox": [1, 2, 3]}])
    with pytest.raises(DatasetError, match=r"annotations\[0\]: bbox \[1, 2, 3\] is not 4 numbers"):
        run("mscoco_detection", {"annotation_file": str(path)}, tmp_path)
    path = _coco(tmp_path, [{"image_id": 1, "category_id": 4, "bbox": [0, 0, 4, 4], "segmentation": [[0, 0, 4, 0]]}])
    with pytest.raises(DatasetError, match=r"annotations\[0\]: malformed segmentation"):
        run("mscoco_mask_rcnn", {"annotation_file": str(path)}, tmp_path)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DatasetError, match=r"bad\.json: the annotation file is not valid JSON"):
        run("mscoco_detection", {"annotation_file": str(tmp_path / "bad.json")}, tmp_path)
    with pytest.raises(DatasetError, match=r"nothing\.json: cannot read the annotation file"):
        run("mscoco_detection", {"annotation_file": str(tmp_path / "nothing.json")}, tmp_path)


def test_mask_rcnn_polygon_mask_is_the_filled_polygon(tmp_path):
    poly = [[2, 3, 12, 3, 12, 9, 2, 9]]
    path = _coco(tmp_path, [{"image_id": 1, "category_id": 4, "bbox": [2, 3, 10, 6], "iscrowd": 0,
                             "segmentation": poly}])
    m = run("mscoco_mask_rcnn", {"annotation_file": str(path)}, tmp_path).annotations[0].masks[0]
    dense = mask_utils.decode(m)
    assert dense.shape == (20, 30) and m["size"] == [20, 30] and isinstance(m["counts"], bytes)
    rows, cols = np.nonzero(dense)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (3, 8, 2, 11)
    assert dense.sum() == 60


def test_dataset_meta_file_must_be_a_json_object(tmp_path, faces):
    (tmp_path / "meta.json").write_text("[1, 2]")
    conv, _ = build("wider", {"annotation_file": str(faces / "wider_face_annotations.txt"),
                              "dataset_meta_file": str(tmp_path / "meta.json")}, faces / "VOC/JPEGImages")
    with pytest.raises(DatasetError, match=r"meta\.json: dataset_meta_file holds a list; expected a JSON object"):
        conv.convert()
    (tmp_path / "meta.yml").write_text("labels: [face]\n")
    conv, _ = build("wider", {"annotation_file": str(faces / "wider_face_annotations.txt"),
                              "dataset_meta_file": str(tmp_path / "meta.yml")}, faces / "VOC/JPEGImages")
    with pytest.raises(DatasetError, match=r"meta\.yml: the dataset_meta_file is not valid JSON"):
        conv.convert()


def test_wider_malformed_lines(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "b.png").write_bytes(b"x")
    good = "a.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n\nb.png\n0\n0 0 0 0\n"
    (tmp_path / "w.txt").write_text(good)
    out = run("wider", {"annotation_file": str(tmp_path / "w.txt"), "label_start": 3}, tmp_path)
    assert [a.identifier for a in out.annotations] == ["a.jpg", "b.png"]
    assert out.annotations[0].boxes.tolist() == [[1, 2, 4, 6]] and out.annotations[0].labels.tolist() == [3]
    assert len(out.annotations[1]) == 0
    assert out.meta.label_map == {0: "__background__", 3: "face"} and out.meta.background_label == 0
    (tmp_path / "w.txt").write_text("a.jpg\ntwo\n1 2 3 4\n")
    with pytest.raises(DatasetError, match=r"w\.txt: line 2: 'two'; expected the box count of a\.jpg"):
        run("wider", {"annotation_file": str(tmp_path / "w.txt")}, tmp_path)
    (tmp_path / "w.txt").write_text("a.jpg\n2\n1 2 3 4\n")
    with pytest.raises(DatasetError, match=r"a\.jpg: 1 box line\(s\) for a count of 2"):
        run("wider", {"annotation_file": str(tmp_path / "w.txt")}, tmp_path)
    (tmp_path / "w.txt").write_text("a.jpg\n1\n1 2 x 4\n")
    with pytest.raises(DatasetError, match=r"line 3: '1 2 x 4'; expected 'x y w h' numbers"):
        run("wider", {"annotation_file": str(tmp_path / "w.txt")}, tmp_path)


def test_cvat_refuses_labelled_non_box_shapes_and_missing_labels(tmp_path, faces):
    xml = (TESTS_DATA / "ac_cvat_sample.xml").read_text()
    bad = xml.replace('<box label="car" occluded="0" xtl="1" ytl="2" xbr="3" ybr="4"></box>',
                      '<polygon label="hand" occluded="0" points="1,2;3,4;5,6"></polygon>')
    (tmp_path / "bad.xml").write_text(bad)
    with pytest.raises(DatasetError, match=r"bad\.xml: image faces_001_opencv_ela_original\.jpg: "
                                           r"<polygon label='hand'> is not a box"):
        run("cvat_object_detection", {"annotation_file": str(tmp_path / "bad.xml")}, faces / "VOC/JPEGImages")
    (tmp_path / "nolabels.xml").write_text(xml.split("<labels>")[0] + xml.split("</labels>")[1])
    with pytest.raises(DatasetError, match=r"nolabels\.xml: no <meta> <label> names"):
        run("cvat_object_detection", {"annotation_file": str(tmp_path / "nolabels.xml")}, faces / "VOC/JPEGImages")
    out = run("cvat_object_detection", {"annotation_file": str(TESTS_DATA / "ac_cvat_sample.xml")},
              faces / "VOC/JPEGImages")
    assert [a.image_size for a in out.annotations] == [(522, 522), (516, 605), (355, 573), (384, 484)]


def test_cvat_dataset_meta_file_int_ids(tmp_path, faces):
    (tmp_path / "m.json").write_text(json.dumps({"label_map": {"1": "face", "5": "hand"}}))
    out = run("cvat_object_detection", {"annotation_file": str(TESTS_DATA / "ac_cvat_sample.xml"),
                                        "dataset_meta_file": str(tmp_path / "m.json")}, faces / "VOC/JPEGImages")
    assert out.annotations[0].labels.tolist() == [1, 1, 5] and out.meta.label_map == {1: "face", 5: "hand"}
    assert out.meta.background_label is None
    (tmp_path / "m.json").write_text(json.dumps({"labels": ["hand", "face"]}))
    out = run("cvat_object_detection", {"annotation_file": str(TESTS_DATA / "ac_cvat_sample.xml"),
                                        "dataset_meta_file": str(tmp_path / "m.json")}, faces / "VOC/JPEGImages")
    assert out.annotations[3].labels.tolist() == [1, 2]
    assert out.meta.label_map == {0: "background", 1: "hand", 2: "face"} and out.meta.background_label == 0


def test_voc_missing_xml_and_bad_box(tmp_path, faces):
    voc = tmp_path / "voc"
    shutil.copytree(DATA / "voc", voc)
    (voc / "Annotations" / "img_c.xml").unlink()
    params = {"imageset_file": str(voc / "ImageSets/Main/test.txt"), "annotations_dir": str(voc / "Annotations")}
    with pytest.raises(DatasetError, match=r"img_c\.xml: cannot read the annotation file"):
        run("voc_detection", params, faces / "VOC/JPEGImages")
    text = (voc / "Annotations" / "img_a.xml").read_text().replace("<xmin>114</xmin>", "<xmin>a</xmin>")
    (voc / "Annotations" / "img_a.xml").write_text(text)
    (voc / "ImageSets/Main/test.txt").write_text("img_a\n")
    with pytest.raises(DatasetError, match=r"img_a\.xml: object 0: <bndbox> needs numeric"):
        run("voc_detection", params, faces / "VOC/JPEGImages")
