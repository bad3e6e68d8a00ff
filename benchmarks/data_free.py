"""Data-free vs real-data calibration: agreement with FP32 of both INT8 models, per image model.

Usage::

    python benchmarks/data_free.py [--models mobilenet_v2,fmnist_cnn,...] [--work /tmp/pot_data_free]
        [--out docs/data_free.md] [--json benchmarks/data_free.json] [--seed 0] [--reuse]

Per model of ``../shared/models`` the simplified engine can calibrate, two runs of
``pot -q default --target-device ANY``:

* real data: ``--data-source ../shared/data/images`` (``fashion_mnist/calibration`` for fmnist_cnn);
* data-free: ``--engine data_free --data-source WORK/cache/<model>`` (a fresh cache: the time
  includes generating the images; the log's generation time is reported apart).

Both INT8 models are measured beside the FP32 model (compiled with INFERENCE_PRECISION_HINT=f32) on
inputs that are not calibration images: random square crops of the photos (the evaluation
helpers of ``benchmarks/run.py``), the first 500 Fashion-MNIST validation images with their labels.
Not measured: ``mtcnn_*`` (stages of a cascade, calibrated on the pyramid and face crops the
previous stage gives, not on whole images: issue 15's cascade engine) and ``minilm_l6_v2`` (text;
data_free generates images only).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import openvino as ov

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import data as bdata  # noqa: E402
import run as brun  # noqa: E402

SHARED = brun.SHARED
VARIANTS = ("fp32", "real", "data_free")
brun.VARIANTS = VARIANTS  # the evaluation helpers of run.py loop over these variant names

MODELS: dict[str, dict] = {
    "mobilenet_v2": {"calib": "data/images", "eval": "classification"},
    "ppocrv4_det": {"calib": "data/images", "eval": "text_detection"},
    "mp_face_detection_short": {"calib": "data/images", "eval": "output_cosine"},
    "fmnist_cnn": {"calib": "data/fashion_mnist/calibration", "eval": "fmnist"},
    "nudenet_320n": {"calib": "data/images", "eval": "yolo"},
}
SKIPPED = {
    "mtcnn_pnet, mtcnn_rnet, mtcnn_onet": "stages of a cascade: each is calibrated on what the previous stage "
                                          "gives (an image pyramid, 24x24 and 48x48 face candidates), which the "
                                          "cascade engine of issue 15 feeds; not whole images",
    "minilm_l6_v2": "text model (int64 token ids); data_free generates images only (engine.data_type: image)",
}


def quantize(name: str, xml: Path, work: Path, mode: str, reuse: bool) -> dict:
    out = work / mode / name
    target = out / "optimized" / f"{name}.xml"
    if reuse and target.exists():
        return {"ok": True, "reused": True, "xml": str(target), "seconds": None}
    shutil.rmtree(out, ignore_errors=True)
    cmd = brun.ours_base_command() + ["-q", "default", "-m", str(xml), "--output-dir", str(out), "-d",
                                      "--target-device", "ANY"]
    if mode == "real":
        cmd += ["--data-source", str(SHARED / MODELS[name]["calib"])]
    else:
        cache = work / "cache" / name
        shutil.rmtree(cache, ignore_errors=True)  # time the generation too
        cmd += ["--engine", "data_free", "--data-source", str(cache)]
    res = brun.run_timed(cmd, REPO, work / "logs" / f"{mode}_{name}.log")
    res["ok"] = res["exit_code"] == 0 and target.exists()
    res["xml"] = str(target)
    text = Path(res["log"]).read_text()
    m = re.search(r"images generated in ([0-9.]+) s", text)
    res["generation_s"] = float(m.group(1)) if m else None
    m = re.search(r"Collecting statistics on (\d+) samples", text)
    res["calibration_samples"] = int(m.group(1)) if m else None
    return res


def _fmnist(core, xmls, seed: int) -> dict:
    model = core.read_model(str(xmls["fp32"]))
    fm = SHARED / "data/fashion_mnist"
    x, y = bdata.fmnist_eval_set(model, fm / "val", fm / "val.txt", limit=500)
    compiled, errors = brun._compile_variants(core, xmls)
    batches = [x[i:i + 250] for i in range(0, len(x), 250)]
    outs = {v: np.concatenate([o[0] for o in brun.infer_all(c, batches)]) for v, c in compiled.items()}
    ref = outs["ref"].argmax(1)
    primary, details = {}, {}
    for v in VARIANTS:
        pred = (outs["ref"] if v == "fp32" else outs[v]).argmax(1)
        primary[v] = float((pred == y).mean())
        details[v] = {"top1_accuracy": primary[v], "top1_agreement_with_fp32": float((pred == ref).mean())}
    return {"metric": "top1_accuracy", "metric_label": "top-1 accuracy (labels of val.txt)",
            "inputs": f"the first {len(x)} Fashion-MNIST validation images", "n_inputs": int(len(x)),
            "primary": primary, "details": details, "errors": errors}


def _yolo(core, xmls, seed: int, threshold: float = 0.25) -> dict:
    """YOLOv8-style ``[1, 4 + classes, anchors]``: cosine of the class scores, anchor-detection F1."""
    model = core.read_model(str(xmls["fp32"]))
    inputs, sources = bdata.crop_eval_inputs(model, SHARED / "data/images", crops_per_image=5, seed=seed)
    compiled, errors = brun._compile_variants(core, xmls)
    outs = brun._outputs_per_variant(compiled, inputs)
    primary, details = {}, {}
    ref_det = [o[0][0, 4:].max(0) > threshold for o in outs["ref"]]
    for v in VARIANTS:
        cos = [brun.cosine(a[0][0, 4:], b[0][0, 4:]) for a, b in zip(outs[v], outs["ref"])]
        box = [brun.cosine(a[0][0, :4], b[0][0, :4]) for a, b in zip(outs[v], outs["ref"])]
        tp = fp = fn = 0
        for a, r in zip(outs[v], ref_det):
            m = a[0][0, 4:].max(0) > threshold
            tp, fp, fn = tp + int((m & r).sum()), fp + int((m & ~r).sum()), fn + int((~m & r).sum())
        primary[v] = float(np.mean(cos))
        details[v] = {"class_score_cosine_mean": primary[v], "box_cosine_mean": float(np.mean(box)),
                      f"anchor_detection_f1_at_{threshold}": brun._f1(tp, fp, fn)}
    return {"metric": "class_score_cosine_mean", "metric_label": "class-score cosine vs FP32",
            "inputs": f"{len(inputs)} random square crops (5 per photo of {len(set(sources))} photos, seed {seed}) "
                      "resized to 320x320", "n_inputs": len(inputs), "primary": primary, "details": details,
            "errors": errors, "anchor_detections_fp32": int(sum(r.sum() for r in ref_det))}


def evaluate(kind: str, core, xmls, seed: int) -> dict:
    if kind == "classification":
        return brun.eval_classification_crops(core, xmls, seed)
    if kind == "text_detection":
        return brun.eval_text_detection(core, xmls, seed)
    if kind == "output_cosine":
        r = brun.eval_output_cosine_crops(core, xmls, seed)
        r["inputs"] = r["inputs"].replace(" NHWC", " (NHWC)")
        return r
    if kind == "fmnist":
        return _fmnist(core, xmls, seed)
    return _yolo(core, xmls, seed)


def _secondary(name: str, r: dict, v: str) -> str:
    d = r["details"].get(v, {})
    for key in ("top1_agreement_with_fp32", "fp32_top1_in_top5", "prob_cosine_mean", "anchor_detection_f1",
                "anchor_detection_f1_at_0.25"):
        if key in d:
            return f"{key} {d[key]:.3f}"
    return ""


def render(results: dict) -> str:
    m = results["machine"]
    lines = ["# Data-free calibration vs real-data calibration", "",
             "Generated by `python benchmarks/data_free.py` (do not edit by hand). Both INT8 models come from "
             "`pot -q default --target-device ANY`: real data with `--data-source ../shared/data/images` "
             "(`fashion_mnist/calibration` for fmnist_cnn, 300 images; the photo folder has 54), data-free with "
             "`--engine data_free` (300 synthetic images, `pot_cli/engines/data_free.py`). Agreement with the FP32 "
             "model (compiled with INFERENCE_PRECISION_HINT=f32) on inputs that are not calibration images. "
             "The FP32 column is the FP32 IR compiled with the CPU plugin's defaults (bf16 inference on a CPU with "
             "avx512_bf16 or AMX) against that f32 reference; for fmnist_cnn it is the FP32 model's accuracy. "
             "Calibration time: the `pot` process from start to exit; data-free starts from an empty cache, so "
             "it includes generating the images (in brackets), done once per cache folder.", "",
             f"Machine: {m['cpu']}, {m['cores_logical']} logical cores; CPU flags: {', '.join(m['isa']) or 'none'}; "
             f"OpenVINO {m['openvino']}; {m['date']}.", "",
             "| model | metric | FP32 | INT8 real data | INT8 data-free | data-free - real | calibration images "
             "real / data-free | calibration real (s) | calibration data-free (s) (of which image generation) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results["models"].items():
        if "error" in r:
            lines.append(f"| {name} | error: {r['error']} | | | | | | | |")
            continue
        e = r["eval"]
        p = e["primary"]
        q = r["quantization"]
        gen = q["data_free"].get("generation_s")
        t_df = q["data_free"].get("seconds")
        t_df_text = "-" if t_df is None else f"{t_df:.1f}" + (f" ({gen:.1f})" if gen is not None else "")
        t_real = q["real"].get("seconds")
        n = " / ".join(str(q[v].get("calibration_samples") or "-") for v in ("real", "data_free"))
        lines.append(f"| {name} | {e['metric_label']} | {p['fp32']:.4f} | {p['real']:.4f} | {p['data_free']:.4f} | "
                     f"{p['data_free'] - p['real']:+.4f} | {n} | {'-' if t_real is None else f'{t_real:.1f}'} | "
                     f"{t_df_text} |")
    lines += ["", "Secondary measures (same inputs):", ""]
    for name, r in results["models"].items():
        if "error" in r:
            continue
        e = r["eval"]
        extra = "; ".join(f"{v}: {_secondary(name, r['eval'], v)}" for v in ("real", "data_free")
                          if _secondary(name, r["eval"], v))
        lines.append(f"- **{name}** ({e['inputs']}){': ' + extra if extra else ''}.")
    lines += ["", "Not measured:", ""]
    lines += [f"- {k}: {v}." for k, v in SKIPPED.items()]
    lines += ["", "Raw numbers: `benchmarks/data_free.json`; logs of each run: `WORK/logs/{real,data_free}_<model>.log`.",
              ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--work", default="/tmp/pot_data_free")
    ap.add_argument("--out", default=str(REPO / "docs/data_free.md"))
    ap.add_argument("--json", default=str(HERE / "data_free.json"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reuse", action="store_true", help="reuse INT8 IRs already in --work (no timing)")
    args = ap.parse_args(argv)
    work = Path(args.work)
    core = ov.Core()
    results = {"machine": brun.machine_info(), "models": {}, "skipped": SKIPPED}
    for name in [n.strip() for n in args.models.split(",") if n.strip()]:
        if name not in MODELS:
            print(f"unknown model {name}; expected one of {', '.join(MODELS)}", file=sys.stderr)
            return 2
        xml = SHARED / "models" / name / f"{name}.xml"
        brun.log(f"{name}: quantizing (real data, data-free)")
        q = {mode: quantize(name, xml, work, mode, args.reuse) for mode in ("real", "data_free")}
        bad = [f"{mode}: {r.get('stderr_tail', '')[-300:]}" for mode, r in q.items() if not r["ok"]]
        if bad:
            results["models"][name] = {"error": "; ".join(bad), "quantization": q}
            continue
        brun.log(f"{name}: evaluating")
        xmls = {"fp32": xml, "real": Path(q["real"]["xml"]), "data_free": Path(q["data_free"]["xml"])}
        results["models"][name] = {"quantization": q, "eval": evaluate(MODELS[name]["eval"], core, xmls, args.seed)}
        p = results["models"][name]["eval"]["primary"]
        brun.log(f"{name}: fp32 {p['fp32']:.4f} real {p['real']:.4f} data_free {p['data_free']:.4f}")
    Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    Path(args.out).write_text(render(results))
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
