"""Reference values of Accuracy Checker 2023.3's detection annotation converters.

Runs ONLY in the reference environment (openvino-dev 2023.3.0)::

    /work/ac-ref/venv/bin/python tests/data/ac_reference/make_converter_reference.py

It (1) writes the small synthetic inputs under ``tests/data/ac_converters/`` (deterministic, so a
re-run rewrites identical files), (2) runs Accuracy Checker's own converters ``mscoco_detection``,
``mscoco_mask_rcnn``, ``voc_detection``, ``wider`` and ``cvat_object_detection`` on those, on
``tests/data/ac_cvat_sample.xml`` and on the shared faces set (``<shared>/data/faces``), and (3)
stores per case the identifiers, labels, boxes, difficult and crowd flags, image sizes, masks (RLE
counts, area and decoded pixel sum) and the label map in ``converter_expected.json``, next to this
script. A case Accuracy Checker cannot convert records the error it raised.

Param values use placeholders the tests substitute: ``{faces}`` (the shared faces folder),
``{data}`` (``tests/data/ac_converters``) and ``{tests_data}`` (``tests/data``).
"""
from __future__ import annotations

import copy
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

try:
    from openvino.tools.accuracy_checker.annotation_converters import BaseFormatConverter
    from pycocotools import mask as mask_utils
except ImportError:  # pragma: no cover - wrong interpreter
    sys.exit("run this with the reference venv: /work/ac-ref/venv/bin/python " + " ".join(sys.argv))

HERE = Path(__file__).resolve().parent
TESTS_DATA = HERE.parent
DATA = TESTS_DATA / "ac_converters"
REPO = TESTS_DATA.parents[1]
FACES = REPO.parent / "shared" / "data" / "faces"
JPEG = "{faces}/VOC/JPEGImages"

# --- synthetic inputs -----------------------------------------------------------------------------

#: (file name, height, width) of four faces images the synthetic sets point at
_IMAGES = [("faces_002_opencv_text_motion.jpg", 355, 573), ("faces_000_skimage_colorwheel.jpg", 522, 522),
           ("faces_001_opencv_ela_original.jpg", 516, 605), ("faces_003_opencv_squirrel_cls.jpg", 384, 484)]


def _uncompressed_rle(mask: np.ndarray) -> list[int]:
    """COCO uncompressed RLE counts of a 0/1 mask (column-major runs, starting with zeros)."""
    flat = mask.flatten(order="F").astype(np.int64)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    return ([0] + runs) if flat[0] == 1 else runs


def _coco_masks() -> dict:
    h5, w5 = _IMAGES[2][1], _IMAGES[2][2]
    crowd = np.zeros((h5, w5), np.uint8)
    crowd[0:40, 0:30] = 1
    crowd[100:110, 200:260] = 1
    yy, xx = np.mgrid[:h5, :w5]
    disc = (((yy - 125) ** 2 + (xx - 325) ** 2) <= 24 ** 2).astype(np.uint8)
    rle = mask_utils.encode(np.asfortranarray(disc))
    images = [{"id": 7, "file_name": _IMAGES[0][0], "height": _IMAGES[0][1], "width": _IMAGES[0][2]},
              {"id": 2, "file_name": _IMAGES[1][0], "height": _IMAGES[1][1], "width": _IMAGES[1][2]},
              {"id": 5, "file_name": _IMAGES[2][0], "height": _IMAGES[2][1], "width": _IMAGES[2][2]},
              {"id": 3, "file_name": _IMAGES[3][0], "height": _IMAGES[3][1], "width": _IMAGES[3][2]}]
    anns = [
        {"id": 1, "image_id": 2, "category_id": 1, "bbox": [10.5, 20.25, 100, 50.5], "iscrowd": 0, "area": 5050.0,
         "segmentation": [[10.5, 20.25, 110.5, 20.25, 110.5, 70.75, 10.5, 70.75]]},
        {"id": 2, "image_id": 2, "category_id": 3, "bbox": [200, 200, 80, 60], "iscrowd": 0, "area": 2400,
         "segmentation": [[200, 200, 240, 200, 240, 230, 200, 230], [250, 220, 280, 220, 280, 260, 250, 260]]},
        {"id": 3, "image_id": 5, "category_id": 1, "bbox": [0, 0, 260, 110], "iscrowd": 1, "area": 1800,
         "segmentation": {"size": [h5, w5], "counts": _uncompressed_rle(crowd)}},
        {"id": 4, "image_id": 5, "category_id": 7, "bbox": [301, 101, 48, 48], "iscrowd": 0,
         "area": int(disc.sum()), "segmentation": {"size": [h5, w5], "counts": rle["counts"].decode()}},
        {"id": 5, "image_id": 3, "category_id": 3, "bbox": [5, 5, 20, 10], "iscrowd": 0, "area": 200,
         "segmentation": [[5, 5, 25, 5, 25, 15]]},
        {"id": 6, "image_id": 99, "category_id": 1, "bbox": [1, 1, 2, 2], "iscrowd": 0, "area": 4,
         "segmentation": [[1, 1, 3, 1, 3, 3]]},
        {"id": 7, "image_id": 2, "category_id": 7, "bbox": [300.0, 0.0, 0.5, 0.25], "iscrowd": 0, "area": 0.125,
         "segmentation": [[300, 0, 300.5, 0, 300.5, 0.25, 300, 0.25]]},
    ]
    cats = [{"id": 3, "name": "car", "supercategory": "vehicle"},
            {"id": 1, "name": "person", "supercategory": "person"},
            {"id": 7, "name": "train", "supercategory": "vehicle"}]
    return {"info": {"description": "synthetic COCO for mscoco_mask_rcnn tests (make_converter_reference.py)"},
            "images": images, "annotations": anns, "categories": cats}


_VOC_XML = """<annotation>
  <folder>JPEGImages</folder>
  <filename>{file}</filename>
  <size><width>{w}</width><height>{h}</height><depth>3</depth></size>
{objects}</annotation>
"""
_VOC_OBJ = """  <object>
    <name>{name}</name>
    <difficult>{difficult}</difficult>
    <bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox>
  </object>
"""
_VOC = {"img_a": (_IMAGES[1], [("person", 0, (114, 181, 231, 303)), ("dog", 1, (224, 30, 317, 123)),
                               ("person", 0, (1, 1, 10.5, 20))]),
        "img_b": (_IMAGES[0], []),
        "img_c": (_IMAGES[3], [("dog", 0, (182, 60, 278, 156))])}


def write_inputs() -> None:
    DATA.mkdir(exist_ok=True)

    def dump(name, obj):
        (DATA / name).write_text(json.dumps(obj, indent=1) + "\n")

    dump("coco_masks.json", _coco_masks())
    dump("faces_meta_labels.json", {"labels": ["face"]})
    dump("coco_meta_voc.json", {"label_map": {"1": "person", "3": "car", "7": "train"}})
    dump("wider_meta_bg.json", {"labels": ["__background__", "face"], "background_label": 0})
    dump("voc_meta_labelmap.json", {"label_map": {"0": "__background__", "1": "dog", "2": "person", "3": "dog"}})
    dump("cvat_labels.json", {"labels": {"face": 1, "hand": 2}})
    voc = DATA / "voc"
    (voc / "Annotations").mkdir(parents=True, exist_ok=True)
    (voc / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    for stem, ((file, h, w), objs) in _VOC.items():
        body = "".join(_VOC_OBJ.format(name=n, difficult=d, b=b) for n, d, b in objs)
        (voc / "Annotations" / f"{stem}.xml").write_text(_VOC_XML.format(file=file, w=w, h=h, objects=body))
    (voc / "ImageSets" / "Main" / "test.txt").write_text("img_a\nimg_c\n\nimg_b\n")


# --- cases ----------------------------------------------------------------------------------------

COCO_FACES = "{faces}/coco_instances.json"
CASES = [
    # mscoco_detection on the shared faces set (AC needs 'segmentation' in every annotation: it is run
    # on a copy with "segmentation": [] added; see "ac_input")
    ("coco_faces", "mscoco_detection", {"annotation_file": COCO_FACES}),
    ("coco_faces_background", "mscoco_detection", {"annotation_file": COCO_FACES, "has_background": True}),
    ("coco_faces_full_map", "mscoco_detection", {"annotation_file": COCO_FACES, "use_full_label_map": True,
                                                 "has_background": True}),
    ("coco_faces_size_sort", "mscoco_detection", {"annotation_file": COCO_FACES, "sort_key": "image_size"}),
    ("coco_faces_unsorted", "mscoco_detection", {"annotation_file": COCO_FACES, "sort_annotations": False}),
    ("coco_faces_meta_labels_bg", "mscoco_detection", {"annotation_file": COCO_FACES, "has_background": True,
                                                       "dataset_meta_file": "{data}/faces_meta_labels.json"}),
    ("coco_faces_meta_labels", "mscoco_detection", {"annotation_file": COCO_FACES,
                                                    "dataset_meta_file": "{data}/faces_meta_labels.json"}),
    # synthetic COCO: categories [3 car, 1 person, 7 train] in that order, image ids 7, 2, 5, 3
    ("coco_synth", "mscoco_detection", {"annotation_file": "{data}/coco_masks.json"}),
    ("coco_synth_background", "mscoco_detection", {"annotation_file": "{data}/coco_masks.json",
                                                   "has_background": True}),
    ("coco_synth_full_map", "mscoco_detection", {"annotation_file": "{data}/coco_masks.json",
                                                 "use_full_label_map": True}),
    ("coco_synth_size_sort", "mscoco_detection", {"annotation_file": "{data}/coco_masks.json",
                                                  "sort_key": "image_size"}),
    ("coco_synth_to_voc", "mscoco_detection", {"annotation_file": "{data}/coco_masks.json",
                                               "dataset_meta_file": "{data}/coco_meta_voc.json",
                                               "convert_COCO_to_VOC_labels": True}),
    ("mask_rcnn_synth", "mscoco_mask_rcnn", {"annotation_file": "{data}/coco_masks.json"}),
    ("mask_rcnn_synth_background", "mscoco_mask_rcnn", {"annotation_file": "{data}/coco_masks.json",
                                                        "has_background": True, "sort_annotations": False}),
    # voc_detection: the faces set's class 'face' is not a VOC class
    ("voc_faces", "voc_detection", {"imageset_file": "{faces}/VOC/ImageSets/Main/test.txt",
                                    "annotations_dir": "{faces}/VOC/Annotations", "images_dir": JPEG}),
    ("voc_faces_meta_labels", "voc_detection", {"imageset_file": "{faces}/VOC/ImageSets/Main/test.txt",
                                                "annotations_dir": "{faces}/VOC/Annotations", "images_dir": JPEG,
                                                "dataset_meta_file": "{data}/faces_meta_labels.json"}),
    ("voc_faces_meta_labels_no_bg", "voc_detection", {"imageset_file": "{faces}/VOC/ImageSets/Main/test.txt",
                                                      "annotations_dir": "{faces}/VOC/Annotations",
                                                      "images_dir": JPEG, "has_background": False,
                                                      "dataset_meta_file": "{data}/faces_meta_labels.json"}),
    ("voc_synth", "voc_detection", {"imageset_file": "{data}/voc/ImageSets/Main/test.txt",
                                    "annotations_dir": "{data}/voc/Annotations", "images_dir": JPEG}),
    ("voc_synth_no_bg", "voc_detection", {"imageset_file": "{data}/voc/ImageSets/Main/test.txt",
                                          "annotations_dir": "{data}/voc/Annotations", "images_dir": JPEG,
                                          "has_background": False}),
    ("voc_synth_label_map", "voc_detection", {"imageset_file": "{data}/voc/ImageSets/Main/test.txt",
                                              "annotations_dir": "{data}/voc/Annotations", "images_dir": JPEG,
                                              "dataset_meta_file": "{data}/voc_meta_labelmap.json"}),
    # wider
    ("wider_faces", "wider", {"annotation_file": "{faces}/wider_face_annotations.txt"}),
    ("wider_faces_label0", "wider", {"annotation_file": "{faces}/wider_face_annotations.txt", "label_start": 0}),
    ("wider_faces_meta_bg", "wider", {"annotation_file": "{faces}/wider_face_annotations.txt",
                                      "dataset_meta_file": "{data}/wider_meta_bg.json"}),
    ("wider_faces_meta_labels", "wider", {"annotation_file": "{faces}/wider_face_annotations.txt",
                                          "dataset_meta_file": "{data}/faces_meta_labels.json"}),
    # cvat
    ("cvat_sample", "cvat_object_detection", {"annotation_file": "{tests_data}/ac_cvat_sample.xml"}),
    ("cvat_sample_no_bg", "cvat_object_detection", {"annotation_file": "{tests_data}/ac_cvat_sample.xml",
                                                    "has_background": False}),
    ("cvat_sample_labels_file", "cvat_object_detection", {"annotation_file": "{tests_data}/ac_cvat_sample.xml",
                                                          "labels_file": "{data}/cvat_labels.json"}),
]


def _resolve(params: dict, tmp: Path) -> tuple[dict, str | None]:
    """AC's params with real paths; the faces COCO JSON replaced by a copy with segmentation."""
    out, note = {}, None
    for key, value in params.items():
        if isinstance(value, str):
            value = value.format(faces=FACES, data=DATA, tests_data=TESTS_DATA)
        out[key] = value
    if params.get("annotation_file") == COCO_FACES:
        data = json.loads(Path(out["annotation_file"]).read_text())
        for ann in data["annotations"]:
            ann.setdefault("segmentation", [])
        patched = tmp / "coco_instances_with_segmentation.json"
        patched.write_text(json.dumps(data))
        out["annotation_file"] = str(patched)
        note = 'faces coco_instances.json with "segmentation": [] added to every annotation'
    return out, note


def _detection(ann) -> dict:
    boxes = np.stack([np.asarray(ann.x_mins, float), np.asarray(ann.y_mins, float),
                      np.asarray(ann.x_maxs, float), np.asarray(ann.y_maxs, float)], axis=1).reshape(-1, 4)
    n = len(ann.labels)
    difficult = [False] * n
    for k in ann.metadata.get("difficult_boxes", []):
        difficult[k] = True
    rec = {"identifier": ann.identifier, "labels": [int(v) for v in ann.labels], "boxes": boxes.tolist(),
           "difficult": difficult}
    if "iscrowd" in ann.metadata:
        rec["crowd"] = [bool(v) for v in ann.metadata["iscrowd"]]
    return rec


def _masks(seg) -> dict:
    out = []
    for rle in seg.mask:
        counts = rle["counts"]
        out.append({"size": [int(v) for v in rle["size"]],
                    "counts": counts.decode() if isinstance(counts, bytes) else counts,
                    "area": int(mask_utils.area(rle)), "pixel_sum": int(mask_utils.decode(rle).sum())})
    h, w, _ = seg.metadata["image_size"]
    return {"masks": out, "image_size": [int(h), int(w)], "mask_labels": [int(v) for v in seg.labels]}


def run_case(name: str, converter: str, params: dict, tmp: Path) -> dict:
    config, note = _resolve(params, tmp)
    case = {"name": name, "converter": converter, "params": params}
    if note:
        case["ac_input"] = note
        try:
            original = dict(config, annotation_file=str(FACES / "coco_instances.json"))
            BaseFormatConverter.provide(converter, dict(original, converter=converter)).convert()
        except Exception as e:  # noqa: BLE001 - record what AC raises
            case["ac_error_on_original"] = f"{type(e).__name__}: {e}"
    try:
        result = BaseFormatConverter.provide(converter, dict(config, converter=converter)).convert()
    except Exception as e:  # noqa: BLE001
        case["error"] = f"{type(e).__name__}: {e}"
        return case
    records = []
    for ann in result.annotations:
        if converter == "mscoco_mask_rcnn":
            rec = _detection(ann["detection_annotation"])
            rec.update(_masks(ann["segmentation_annotation"]))
        else:
            rec = _detection(ann)
        records.append(rec)
    meta = result.meta or {}
    case["annotations"] = records
    case["label_map"] = {str(k): v for k, v in meta.get("label_map", {}).items()}
    case["background_label"] = meta.get("background_label")
    return case


def _dump(out: dict) -> str:
    """JSON with one line per annotation record (the file stays readable and small)."""
    marks = {}
    for c in out["cases"]:
        for k, rec in enumerate(c.get("annotations", [])):
            key = f"@@{len(marks)}@@"
            marks[key] = json.dumps(rec, separators=(",", ":"))
            c["annotations"][k] = key
    text = json.dumps(out, indent=1)
    for key, rec in marks.items():
        text = text.replace(f'"{key}"', rec, 1)
    return text


def main() -> None:
    import openvino.tools.accuracy_checker as ac

    write_inputs()
    with tempfile.TemporaryDirectory() as tmp:
        cases = [run_case(n, c, copy.deepcopy(p), Path(tmp)) for n, c, p in CASES]
    out = {
        "command": "/work/ac-ref/venv/bin/python tests/data/ac_reference/make_converter_reference.py",
        "source": f"openvino-dev 2023.3.0 Accuracy Checker (package version {getattr(ac, '__version__', '?')}) "
                  "annotation_converters; inputs: <shared>/data/faces and tests/data/ac_converters",
        "placeholders": {"{faces}": "<shared>/data/faces", "{data}": "tests/data/ac_converters",
                         "{tests_data}": "tests/data"},
        "cases": cases,
    }
    (HERE / "converter_expected.json").write_text(_dump(out) + "\n")
    for c in cases:
        print(c["name"], c.get("error") or f"{len(c['annotations'])} annotations",
              c.get("ac_error_on_original", ""))


if __name__ == "__main__":
    main()
