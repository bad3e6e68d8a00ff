"""Side-by-side benchmark: FP32 vs ours (``pot -q default``) vs NNCF (``nncf.quantize``).

Usage::

    python benchmarks/run.py [--models mobilenet_v2,fmnist_cnn,...] [--subset 300]
        [--no-ours] [--no-nncf] [--out docs/benchmarks.md] [--json benchmarks/results.json]
        [--work /tmp/potbench] [--rounds 24] [--seconds 0.45] [--reuse] [--target-device CPU|ANY]

Per model, in one run: quantize with both tools for the same target device (each timed as a
subprocess, start to exit), measure agreement with the FP32 reference (compiled with
INFERENCE_PRECISION_HINT=f32) on inputs other than the calibration ones, count the
Convolution/FullyConnected layers the CPU plugin runs in u8/i8, compare per layer which weighted
layers each INT8 model runs in u8/i8 (and whether our speed check kept the difference in float on
purpose), count the runtime Reorder/Convert nodes, and measure latency and throughput of FP32
(default compile), ours and NNCF interleaved (A, B, C, A, B, C, ...; median of the rounds).
See benchmarks/README.md for the columns.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import openvino as ov

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
sys.path.insert(0, str(HERE))

import data as bdata  # noqa: E402  (benchmarks/data.py)

try:  # nncf is optional: without it the NNCF columns are skipped
    import nncf  # noqa: F401

    NNCF_VERSION: str | None = nncf.__version__
except Exception:  # noqa: BLE001
    NNCF_VERSION = None

MODELS: dict[str, dict] = {
    "mobilenet_v2": {"calib": "data/images", "eval": "classification_crops"},
    "ppocrv4_det": {"calib": "data/images", "eval": "text_detection"},
    "mp_face_detection_short": {"calib": "data/images", "eval": "output_cosine_crops"},
    "fmnist_cnn": {"calib": "data/fashion_mnist/calibration", "eval": "fmnist_top1"},
    "minilm_l6_v2": {"calib": "data/text_minilm", "eval": "embedding_cosine", "model_type": "transformer"},
}
VARIANTS = ("fp32", "ours", "nncf")
WEIGHTED_LAYER_TYPES = ("Convolution", "Deconvolution", "FullyConnected")
#: runtime layer types compared one by one between ours and NNCF (MatMul: activation x activation)
PARITY_LAYER_TYPES = WEIGHTED_LAYER_TYPES + ("MatMul",)
#: IR op types those runtime layers come from; their names identify a layer across the two INT8 models
IR_WEIGHTED_OP_TYPES = ("Convolution", "GroupConvolution", "ConvolutionBackpropData",
                        "GroupConvolutionBackpropData", "MatMul")
#: runtime nodes that only convert data (layout or precision), counted per variant
CONVERSION_LAYER_TYPES = ("Reorder", "Convert")
TARGET_DEVICES = ("CPU", "ANY")
INT8_PRECISIONS = ("u8", "i8")
F32_REF_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- quantization


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_timed(cmd: list[str], cwd: Path, log_path: Path) -> dict:
    """Run ``cmd``; wall time from process start to exit; full output saved to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=str(cwd), capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    log_path.write_text(f"$ {shlex.join(cmd)}\n# cwd={cwd}\n# exit={proc.returncode} "
                        f"seconds={seconds:.3f}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}\n")
    return {"command": shlex.join(cmd), "exit_code": proc.returncode, "seconds": round(seconds, 3),
            "stderr_tail": _tail(proc.stderr), "stdout_tail": _tail(proc.stdout, 5), "log": str(log_path)}


def ours_base_command() -> list[str]:
    """``pot`` if the console script on PATH is ours (pot_cli), else ``python -m pot_cli``."""
    exe = shutil.which("pot")
    if exe:
        try:
            head = Path(exe).read_text(errors="replace")[:2000]
        except OSError:
            head = ""
        if "pot_cli" in head:
            return [exe]
    return [sys.executable, "-m", "pot_cli"]


def read_speed_check(xml: Path) -> dict | None:
    """The ``speed_check`` section of our ``report.json`` beside ``xml`` (None: not run or no report)."""
    try:
        return json.loads((xml.parent / "report.json").read_text()).get("speed_check")
    except (OSError, json.JSONDecodeError):
        return None


def _speed_check_summary(sc: dict | None) -> dict | None:
    """The speed check's totals and reverts, without the per-layer rows (those stay in report.json)."""
    if sc is None:
        return None
    rows = sc.get("layers", [])
    return {"layers_timed": len(rows), "layers_float": sum(r.get("decision") == "float" for r in rows),
            "reverted": sc.get("reverted", []), **{k: sc.get(k) for k in ("fp32_us", "int8_us_before",
                                                                         "int8_us", "rounds", "seconds")}}


def quantize_ours(name: str, model_xml: Path, data_dir: Path, work: Path, target_device: str,
                  reuse: bool) -> dict:
    out_dir = work / "ours" / name
    xml = out_dir / "optimized" / f"{name}.xml"
    if reuse and xml.exists():
        res = {"ok": True, "reused": True, "xml": str(xml), "seconds": None}
    else:
        if out_dir.exists():
            shutil.rmtree(out_dir)
        cmd = ours_base_command() + ["-q", "default", "-m", str(model_xml), "-w", str(model_xml.with_suffix(".bin")),
                                     "--data-source", str(data_dir), "--output-dir", str(out_dir), "-d",
                                     "--target-device", target_device]
        res = run_timed(cmd, REPO, work / "logs" / f"ours_{name}.log")
        res["xml"] = str(xml)
        res["ok"] = res["exit_code"] == 0 and xml.exists() and xml.with_suffix(".bin").exists()
        if res["exit_code"] == 0 and not res["ok"]:
            res["error"] = f"exit 0 but {xml} (or its .bin) was not written"
        elif res["exit_code"] != 0:
            res["error"] = f"exit code {res['exit_code']}"
    if res["ok"]:
        res["report_json"] = str(xml.parent / "report.json")
        res["speed_check"] = _speed_check_summary(read_speed_check(xml))
    return res


def quantize_nncf(name: str, model_xml: Path, data_dir: Path, work: Path, subset: int,
                  model_type: str | None, target_device: str, reuse: bool) -> dict:
    xml = work / "nncf" / name / f"{name}.xml"
    if reuse and xml.exists():
        return {"ok": True, "reused": True, "xml": str(xml), "seconds": None}
    if xml.parent.exists():
        shutil.rmtree(xml.parent)
    cmd = [sys.executable, str(HERE / "nncf_quantize.py"), str(model_xml), str(data_dir), str(xml),
           "--subset", str(subset), "--target-device", target_device]
    if model_type:
        cmd += ["--model-type", model_type]
    res = run_timed(cmd, REPO, work / "logs" / f"nncf_{name}.log")
    res["xml"] = str(xml)
    res["ok"] = res["exit_code"] == 0 and xml.exists()
    if not res["ok"]:
        res["error"] = f"exit code {res['exit_code']}" if res["exit_code"] else f"{xml} not written"
    for line in reversed(res["stdout_tail"].splitlines()):
        if line.startswith("{"):
            try:
                res["in_process"] = json.loads(line)
            except json.JSONDecodeError:
                pass
            break
    return res


# ----------------------------------------------------------------------------- inference helpers


def infer_all(compiled, inputs: list) -> list[list[np.ndarray]]:
    """Run each input through one synchronous request; copies of every output per input."""
    req = compiled.create_infer_request()
    n_out = len(compiled.outputs)
    outs = []
    for x in inputs:
        req.infer(x)
        outs.append([np.array(req.get_output_tensor(i).data, copy=True) for i in range(n_out)])
    return outs


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def _softmax_max(logits: np.ndarray) -> float:
    z = np.asarray(logits, np.float64)
    e = np.exp(z - z.max())
    return float(e.max() / e.sum())


def _f1(tp: int, fp: int, fn: int) -> float:
    denom = 2 * tp + fp + fn
    return 1.0 if denom == 0 else 2 * tp / denom


def output_names(compiled) -> list[str]:
    names = []
    for i, o in enumerate(compiled.outputs):
        try:
            names.append(o.get_any_name())
        except RuntimeError:
            names.append(f"output{i}")
    return names


# ----------------------------------------------------------------------------- accuracy


def _compile_variants(core, xmls: dict[str, Path | None]) -> tuple[dict, dict]:
    """The f32 reference plus each variant compiled default; ``errors`` for those that fail."""
    compiled, errors = {}, {}
    compiled["ref"] = core.compile_model(str(xmls["fp32"]), "CPU", F32_REF_CONFIG)
    for v, xml in xmls.items():
        if xml is None:
            continue
        try:
            compiled[v] = core.compile_model(str(xml), "CPU")
        except Exception as e:  # noqa: BLE001 - report and go on
            errors[v] = f"compile failed: {e}"
    return compiled, errors


def _default_is_f32(compiled) -> bool:
    """True when a default compile already infers in f32 (no bf16/f16 on this CPU)."""
    try:
        return compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    except Exception:  # noqa: BLE001
        return False


def _outputs_per_variant(compiled: dict, inputs: list) -> dict[str, list]:
    outs = {"ref": infer_all(compiled["ref"], inputs)}
    for v in VARIANTS:
        if v not in compiled:
            continue
        if v == "fp32" and _default_is_f32(compiled["fp32"]):
            outs[v] = outs["ref"]  # the default compile is the f32 path on this CPU
        else:
            outs[v] = infer_all(compiled[v], inputs)
    return outs


def eval_classification_crops(core, xmls, seed: int) -> dict:
    model = core.read_model(str(xmls["fp32"]))
    inputs, sources = bdata.crop_eval_inputs(model, SHARED / "data/images", crops_per_image=5, seed=seed)
    compiled, errors = _compile_variants(core, xmls)
    outs = _outputs_per_variant(compiled, inputs)
    ref_top1 = np.array([o[0].ravel().argmax() for o in outs["ref"]])
    ref_top5 = [set(np.argsort(o[0].ravel())[-5:]) for o in outs["ref"]]
    ref_conf = np.array([_softmax_max(o[0].ravel()) for o in outs["ref"]])
    confident = ref_conf >= 0.5  # crops where FP32 itself is fairly sure of its top-1
    primary, details = {}, {}
    for v in VARIANTS:
        if v not in outs:
            continue
        top1 = np.array([o[0].ravel().argmax() for o in outs[v]])
        primary[v] = float((top1 == ref_top1).mean())
        details[v] = {
            "top1_agreement": primary[v],
            "fp32_top1_in_top5": float(np.mean([t in s for t, s in zip(ref_top1, [
                set(np.argsort(o[0].ravel())[-5:]) for o in outs[v]])])),
            "top5_overlap": float(np.mean([len(set(np.argsort(o[0].ravel())[-5:]) & r) / 5
                                           for o, r in zip(outs[v], ref_top5)])),
            "logits_cosine_mean": float(np.mean([cosine(a[0], b[0]) for a, b in zip(outs[v], outs["ref"])])),
            "top1_agreement_fp32_confident": float((top1 == ref_top1)[confident].mean()) if confident.any() else None,
            "fp32_confident_inputs": int(confident.sum()),
        }
    return {"metric": "top1_agreement", "metric_label": "top-1 agreement with FP32",
            "inputs": f"{len(inputs)} random square crops (5 per photo of {len(set(sources))} photos, "
                      f"side 40-100% of the short side, seed {seed}) resized to 224x224",
            "n_inputs": len(inputs), "primary": primary, "details": details, "errors": errors}


def eval_text_detection(core, xmls, seed: int, threshold: float = 0.3) -> dict:
    model = core.read_model(str(xmls["fp32"]))
    inputs, sources = bdata.crop_eval_inputs(model, SHARED / "data/images", crops_per_image=7, seed=seed,
                                             names=bdata.TEXT_IMAGES, include_full=True, min_frac=0.4)
    compiled, errors = _compile_variants(core, xmls)
    outs = _outputs_per_variant(compiled, inputs)
    ref_masks = [o[0] > threshold for o in outs["ref"]]
    primary, details = {}, {}
    for v in VARIANTS:
        if v not in outs:
            continue
        tp = fp = fn = 0
        per_image, empty_both = [], 0
        for o, rm in zip(outs[v], ref_masks):
            m = o[0] > threshold
            t, f, n = int((m & rm).sum()), int((m & ~rm).sum()), int((~m & rm).sum())
            tp, fp, fn = tp + t, fp + f, fn + n
            if t + f + n == 0:
                empty_both += 1
            else:
                per_image.append(_f1(t, f, n))
        primary[v] = _f1(tp, fp, fn)
        details[v] = {
            "mask_f1_pooled": primary[v],
            "mask_f1_mean_per_image": float(np.mean(per_image)) if per_image else 1.0,
            "mask_f1_min_per_image": float(np.min(per_image)) if per_image else 1.0,
            "images_with_empty_masks": empty_both,
            "prob_cosine_mean": float(np.mean([cosine(a[0], b[0]) for a, b in zip(outs[v], outs["ref"])])),
            "prob_cosine_pooled": cosine(np.concatenate([a[0].ravel() for a in outs[v]]),
                                         np.concatenate([b[0].ravel() for b in outs["ref"]])),
            "prob_max_abs_diff_mean": float(np.mean([np.abs(a[0] - b[0]).max() for a, b in zip(outs[v], outs["ref"])])),
        }
    ref_fraction = float(np.mean([m.mean() for m in ref_masks]))
    return {"metric": "mask_f1_pooled", "metric_label": f"pixel F1 of mask (p>{threshold}) vs FP32, pooled",
            "inputs": f"{len(inputs)} views of {len(set(sources))} photos with text "
                      f"({', '.join(bdata.TEXT_IMAGES)}): the whole photo + 7 random square crops each "
                      f"(side 40-100% of the short side, seed {seed}), resized to 640x640; "
                      f"FP32 marks {ref_fraction:.1%} of the pixels as text on average",
            "n_inputs": len(inputs), "primary": primary, "details": details, "errors": errors}


def eval_output_cosine_crops(core, xmls, seed: int) -> dict:
    model = core.read_model(str(xmls["fp32"]))
    inputs, sources = bdata.crop_eval_inputs(model, SHARED / "data/images", crops_per_image=5, seed=seed)
    compiled, errors = _compile_variants(core, xmls)
    names = output_names(compiled["ref"])
    outs = _outputs_per_variant(compiled, inputs)
    primary, details = {}, {}
    for v in VARIANTS:
        if v not in outs:
            continue
        per_output = {}
        for i, name in enumerate(names):
            per_output[name] = float(np.mean([cosine(a[i], b[i]) for a, b in zip(outs[v], outs["ref"])]))
        primary[v] = float(np.mean(list(per_output.values())))
        d = {"cosine_mean_over_outputs": primary[v], "cosine_min_over_outputs": min(per_output.values()),
             "cosine_per_output": per_output}
        if "classificators" in names:  # BlazeFace: anchor scores, sigmoid > 0.5 = a detection
            i = names.index("classificators")
            tp = fp = fn = 0
            for a, b in zip(outs[v], outs["ref"]):
                m, r = a[i].ravel() > 0, b[i].ravel() > 0  # sigmoid(x) > 0.5 <=> x > 0
                tp, fp, fn = tp + int((m & r).sum()), fp + int((m & ~r).sum()), fn + int((~m & r).sum())
            d["anchor_detection_f1"] = _f1(tp, fp, fn)
            d["anchor_detections_fp32"] = int(sum((b[i].ravel() > 0).sum() for b in outs["ref"]))
        details[v] = d
    return {"metric": "output_cosine_mean", "metric_label": "output cosine vs FP32 (mean over outputs)",
            "inputs": f"{len(inputs)} random square crops (5 per photo of {len(set(sources))} photos, "
                      f"side 40-100% of the short side, seed {seed}) resized to 128x128 NHWC",
            "n_inputs": len(inputs), "primary": primary, "details": details, "errors": errors}


def eval_fmnist(core, xmls, seed: int) -> dict:
    model = core.read_model(str(xmls["fp32"]))
    fm = SHARED / "data/fashion_mnist"
    x, y = bdata.fmnist_eval_set(model, fm / "val", fm / "val.txt")
    compiled, errors = _compile_variants(core, xmls)
    batches = [x[i:i + 250] for i in range(0, len(x), 250)]
    outs = {}
    for v in ("ref",) + VARIANTS:
        if v not in compiled:
            continue
        if v == "fp32" and _default_is_f32(compiled["fp32"]):
            outs[v] = outs["ref"]
            continue
        outs[v] = np.concatenate([o[0] for o in infer_all(compiled[v], batches)])
    ref_pred = outs["ref"].argmax(1)
    primary, details = {}, {}
    for v in VARIANTS:
        if v not in outs:
            continue
        pred = outs[v].argmax(1)
        primary[v] = float((pred == y).mean()) if v != "fp32" else float((ref_pred == y).mean())
        details[v] = {"top1_accuracy": primary[v], "top1_agreement_with_fp32": float((pred == ref_pred).mean()),
                      "delta_vs_fp32": float((pred == y).mean() - (ref_pred == y).mean())}
    return {"metric": "top1_accuracy", "metric_label": "top-1 accuracy on the labelled val split",
            "inputs": f"{len(x)} Fashion-MNIST test images (val/ + val.txt), batches of 250",
            "n_inputs": int(len(x)), "primary": primary, "details": details, "errors": errors,
            "fp32_reference_accuracy": float((ref_pred == y).mean())}


def eval_embedding_cosine(core, xmls, seed: int) -> dict:
    text_dir = SHARED / "data/text_minilm"
    derived, kinds = bdata.text_eval_inputs(text_dir, seed=seed)
    calib = bdata.text_samples(text_dir)
    compiled, errors = _compile_variants(core, xmls)
    outs_d = _outputs_per_variant(compiled, derived)
    outs_c = _outputs_per_variant(compiled, calib)
    primary, details = {}, {}
    for v in VARIANTS:
        if v not in outs_d:
            continue
        cos_d = np.array([cosine(a[0], b[0]) for a, b in zip(outs_d[v], outs_d["ref"])])
        cos_c = np.array([cosine(a[0], b[0]) for a, b in zip(outs_c[v], outs_c["ref"])])
        primary[v] = float(cos_d.mean())
        details[v] = {"cosine_mean_derived": primary[v], "cosine_min_derived": float(cos_d.min()),
                      "cosine_mean_calibration_samples": float(cos_c.mean()),
                      "cosine_min_calibration_samples": float(cos_c.min()),
                      "cosine_mean_by_kind": {k: float(cos_d[[kk == k for kk in kinds]].mean())
                                              for k in sorted(set(kinds))}}
    counts = {k: kinds.count(k) for k in sorted(set(kinds))}
    return {"metric": "embedding_cosine_mean", "metric_label": "embedding cosine vs FP32 (non-calibration inputs)",
            "inputs": f"{len(derived)} sequences derived from the 200 text samples ({counts}): truncated = first "
                      f"half of the tokens, unpadded; shuffled = tokens permuted (seed {seed}), unpadded; "
                      f"concat = sample i + sample i+1, cut/padded to 128. The 200 calibration samples "
                      f"themselves are reported separately",
            "n_inputs": len(derived), "primary": primary, "details": details, "errors": errors}


EVALUATORS = {
    "classification_crops": eval_classification_crops,
    "text_detection": eval_text_detection,
    "output_cosine_crops": eval_output_cosine_crops,
    "fmnist_top1": eval_fmnist,
    "embedding_cosine": eval_embedding_cosine,
}


# ----------------------------------------------------------------------------- structure


def ir_structure(core, xml: Path) -> dict:
    model = core.read_model(str(xml))
    ops = model.get_ops()
    types = [op.get_type_name() for op in ops]
    int8_consts = sum(1 for op in ops if op.get_type_name() == "Constant"
                      and op.get_element_type().get_type_name() in ("i8", "u8"))
    return {"fake_quantize": types.count("FakeQuantize"), "int8_constants": int8_consts,
            "bin_bytes": xml.with_suffix(".bin").stat().st_size}


def ir_weighted_names(core, xml: Path) -> set[str]:
    """Friendly names of the convolutions and MatMuls of an IR (the keys of the per-layer comparison)."""
    return {op.get_friendly_name() for op in core.read_model(str(xml)).get_ops()
            if op.get_type_name() in IR_WEIGHTED_OP_TYPES}


def ir_attention_names(core, xml: Path) -> dict[str, str]:
    """IR name -> ScaledDotProductAttention name, for each attention op and the ops feeding its
    query and key (ports 0, 1): the CPU plugin runs an attention either as one fused node that
    lists the op in ``originalLayersNames``, or decomposed, with a Q.K^T MatMul named after
    nodes it created, found by its inputs."""
    out: dict[str, str] = {}
    for op in core.read_model(str(xml)).get_ops():
        if op.get_type_name() == "ScaledDotProductAttention":
            name = op.get_friendly_name()
            out[name] = name
            for port in (0, 1):
                out.setdefault(op.input_value(port).get_node().get_friendly_name(), name)
    return out


def _original_names(rt) -> list[str]:
    """``rt_info['originalLayersNames']`` of a runtime node: the IR ops it executes."""
    if "originalLayersNames" not in rt:
        return []
    return [n for n in rt["originalLayersNames"].astype(str).split(",") if n]


def _ir_layer(names: list[str], weighted_names: set[str]) -> str | None:
    """The first of ``names`` that is an IR convolution/MatMul, also after dropping a ``/suffix``
    the CPU plugin's transformations append (``.../MatMul/DequantizationMultiply``)."""
    for n in names:
        if n in weighted_names:
            return n
    for n in names:
        if n.rpartition("/")[0] in weighted_names:
            return n.rpartition("/")[0]
    return None


def _attention_key(op, lt: str, original: list[str], attention: dict[str, str]) -> str | None:
    """The attention op a runtime node executes (see :func:`ir_attention_names`), or None."""
    for n in original:
        if attention.get(n) == n:
            return n
    if lt != "MatMul":
        return None
    for inp in op.inputs():
        for n in _original_names(inp.get_source_output().get_node().get_rt_info()):
            if n in attention:
                return attention[n]
    return None


def runtime_structure(core, xml: Path, weighted_names: set[str], attention: dict[str, str] | None = None) -> dict:
    """What the CPU plugin runs, from the runtime model of a default compile.

    Per weighted layer type how many run in u8/i8; the Reorder/Convert node counts; and under
    ``layers`` (used for the per-layer comparison, not saved) one entry per weighted runtime layer,
    keyed by the IR convolution/MatMul it executes (its own name or one of its
    ``originalLayersNames`` found among ``weighted_names``, see :func:`_ir_layer`, so the key is the
    same in both INT8 models even when the runtime node's name differs; the runtime name when none
    matches). An attention op (``attention``, see :func:`ir_attention_names`) is one entry, INT8
    when one of its runtime nodes (fused Subgraph, or the Q.K^T MatMul) runs in u8/i8.
    """
    compiled = core.compile_model(str(xml), "CPU")
    rm = compiled.get_runtime_model()
    counts: dict[str, dict[str, int]] = {}
    conversions = dict.fromkeys(CONVERSION_LAYER_TYPES, 0)
    conversions_all = dict.fromkeys(CONVERSION_LAYER_TYPES, 0)
    constant: set[str] = set()  # runtime nodes on constant paths: the plugin runs them once, at load
    layers: dict[str, dict] = {}
    not_int8 = []
    for op in rm.get_ordered_ops():
        rt = op.get_rt_info()
        if "layerType" not in rt:
            continue
        lt = rt["layerType"].astype(str)
        pr = rt["runtimePrecision"].astype(str).lower() if "runtimePrecision" in rt else "?"
        srcs = [i.get_source_output().get_node().get_friendly_name() for i in op.inputs()]
        if lt == "Const" or (srcs and all(n in constant for n in srcs)):
            constant.add(op.get_friendly_name())
        if lt in conversions:  # counted when they run at every inference
            conversions_all[lt] += 1
            if op.get_friendly_name() not in constant:
                conversions[lt] += 1
        name = op.get_friendly_name()
        original = _original_names(rt)
        att = _attention_key(op, lt, original, attention or {})
        if att is not None:
            entry = layers.setdefault(att, {"runtime_name": name, "type": "Attention", "precision": pr,
                                            "int8": False, "original": []})
            entry["original"] += [name] + original
            # a fused attention Subgraph reports the precision of its boolean mask input: read the query's
            q_type = op.input(0).get_element_type().get_type_name() if op.get_input_size() else "?"
            int8 = pr in INT8_PRECISIONS if lt == "MatMul" else q_type in INT8_PRECISIONS
            if int8:
                entry.update(int8=True, precision=pr if lt == "MatMul" else q_type, runtime_name=name)
            continue
        if lt not in PARITY_LAYER_TYPES:
            continue
        key = _ir_layer([name] + original, weighted_names) or name
        layers.setdefault(key, {"runtime_name": name, "type": lt, "precision": pr,
                                "int8": pr in INT8_PRECISIONS, "original": original})
        c = counts.setdefault(lt, {"total": 0, "int8": 0})
        c["total"] += 1
        if pr in INT8_PRECISIONS:
            c["int8"] += 1
        elif lt in WEIGHTED_LAYER_TYPES:
            not_int8.append(f"{name} ({lt}, {pr})")
    total = sum(c["total"] for t, c in counts.items() if t in WEIGHTED_LAYER_TYPES)
    int8 = sum(c["int8"] for t, c in counts.items() if t in WEIGHTED_LAYER_TYPES)
    mm = counts.get("MatMul", {"total": 0, "int8": 0})
    return {"weighted_total": total, "weighted_int8": int8,
            "int8_fraction": (int8 / total) if total else None,
            "matmul_total": mm["total"], "matmul_int8": mm["int8"],
            "by_type": counts, "not_int8": not_int8[:40], "not_int8_count": len(not_int8),
            "runtime_nodes": conversions, "runtime_nodes_with_constant_paths": conversions_all, "layers": layers}


def _speed_check_row(layer: dict | None, key: str, speed_check: dict | None) -> tuple[dict | None, bool]:
    """Our speed check's row for a layer and whether it kept the layer in float.

    The speed check names a layer by its IR op; the runtime node may carry another name, so the key,
    the runtime name and every ``originalLayersNames`` entry of our runtime node are tried.
    """
    if not speed_check:
        return None, False
    names = [key] + ([layer["runtime_name"]] + layer["original"] if layer else [])
    rows = {r["layer"]: r for r in speed_check.get("layers", [])}
    row = next((rows[n] for n in names if n in rows), None)
    reverted = set(speed_check.get("reverted", []))
    on_purpose = (row is not None and row.get("decision") == "float") or any(n in reverted for n in names)
    return row, on_purpose


def int8_parity(layers: dict[str, dict], speed_check: dict | None) -> dict:
    """Per weighted layer: the ones NNCF's model runs in u8/i8 and ours does not, and why.

    ``layers``: ``runtime_structure(...)["layers"]`` of ``ours`` and ``nncf``. A gap is *on purpose*
    when our speed check (``speed_check`` of report.json) timed the layer and kept it in float.
    """
    ours, nncf_ = layers["ours"], layers["nncf"]
    ours_int8 = {k for k, x in ours.items() if x["int8"]}
    nncf_int8 = {k for k, x in nncf_.items() if x["int8"]}
    gaps = []
    for key in sorted(nncf_int8 - ours_int8):
        mine = ours.get(key)
        row, on_purpose = _speed_check_row(mine, key, speed_check)
        gaps.append({"layer": key, "type": nncf_[key]["type"],
                     "ours_runtime_name": mine["runtime_name"] if mine else None,
                     "ours_precision": mine["precision"] if mine else "absent",
                     "speed_check": row.get("decision") if row else ("reverted" if on_purpose else "not timed"),
                     "fp32_us": row.get("fp32_us") if row else None,
                     "int8_us": row.get("int8_us") if row else None,
                     "on_purpose": on_purpose})
    extra = sorted(ours_int8 - nncf_int8)
    return {"layers_compared": len(set(ours) | set(nncf_)), "ours_int8": len(ours_int8), "nncf_int8": len(nncf_int8),
            "both_int8": len(ours_int8 & nncf_int8), "speed_check_ran": speed_check is not None,
            "nncf_int8_ours_float_count": len(gaps),
            "nncf_int8_ours_float_on_purpose": sum(g["on_purpose"] for g in gaps),
            "nncf_int8_ours_float_unexplained": sum(not g["on_purpose"] for g in gaps),
            "nncf_int8_ours_float": gaps,
            "ours_int8_nncf_float_count": len(extra), "ours_int8_nncf_float": extra[:40]}


def structure(core, xmls: dict[str, Path | None]) -> tuple[dict, dict | None]:
    """IR and runtime structure per variant, and the per-layer INT8 comparison ours vs NNCF."""
    out, layers = {}, {}
    fp32_bin = xmls["fp32"].with_suffix(".bin").stat().st_size
    weighted_names = ir_weighted_names(core, xmls["fp32"])
    attention = ir_attention_names(core, xmls["fp32"])
    for v, xml in xmls.items():
        if xml is None:
            continue
        try:
            s = ir_structure(core, xml)
            s.update(runtime_structure(core, xml, weighted_names, attention))
            layers[v] = s.pop("layers")
            s["bin_ratio"] = s["bin_bytes"] / fp32_bin
            out[v] = s
        except Exception as e:  # noqa: BLE001
            out[v] = {"error": str(e)}
    parity = None
    if "ours" in layers and "nncf" in layers:
        parity = int8_parity(layers, read_speed_check(xmls["ours"]))
    return out, parity


# ----------------------------------------------------------------------------- speed


def _type_name(t) -> str:
    return t.get_type_name() if hasattr(t, "get_type_name") else str(t)


def _set_inputs(req, inputs: dict) -> None:
    for k, v in inputs.items():
        req.set_tensor(k, ov.Tensor(np.ascontiguousarray(v)))


def _latency_round(compiled, inputs: dict, seconds: float) -> float:
    req = compiled.create_infer_request()
    _set_inputs(req, inputs)
    times = []
    end = time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter()
        req.infer()
        t1 = time.perf_counter()
        times.append(t1 - t0)
        if t1 >= end:
            break
    return statistics.median(times) * 1000.0


def _throughput_round(queue, seconds: float) -> float:
    done = [0]

    def cb(_req, _userdata):
        done[0] += 1

    queue.set_callback(cb)
    t0 = time.perf_counter()
    end = t0 + seconds
    while time.perf_counter() < end:
        queue.start_async()
    queue.wait_all()
    return done[0] / (time.perf_counter() - t0)


def speed(core, xmls: dict[str, Path | None], inputs: dict, static_shapes: dict | None,
          rounds: int, seconds: float) -> dict:
    """Latency (sync, LATENCY hint) and throughput (async queue, THROUGHPUT hint), interleaved.

    ``fp32_control`` is the FP32 IR compiled and measured again in a slot of its own: its ratio to
    ``fp32`` is what two identical models measure apart on this machine (the noise floor of the
    other ratios)."""
    variants = [v for v in VARIANTS if xmls.get(v) is not None]
    if "fp32" in variants:
        xmls = dict(xmls, fp32_control=xmls["fp32"])
        variants.append("fp32_control")
    res: dict = {"rounds": rounds, "seconds_per_round": seconds, "input_shapes":
                 {k: list(v.shape) for k, v in inputs.items()}, "loadavg_before": _loadavg()}
    for mode in ("LATENCY", "THROUGHPUT"):
        compiled, info = {}, {}
        for v in variants:
            try:
                m = core.read_model(str(xmls[v]))
                if static_shapes:
                    m.reshape(static_shapes)
                t0 = time.perf_counter()
                compiled[v] = core.compile_model(m, "CPU", {"PERFORMANCE_HINT": mode})
                info[v] = {"compile_s": round(time.perf_counter() - t0, 3),
                           "nireq": int(compiled[v].get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")),
                           "inference_precision": _type_name(compiled[v].get_property("INFERENCE_PRECISION_HINT"))}
            except Exception as e:  # noqa: BLE001
                info[v] = {"error": str(e)}
        queues = {}
        for v, c in compiled.items():  # warm-up
            if mode == "LATENCY":
                _latency_round(c, inputs, 0.3)
            else:
                q = ov.AsyncInferQueue(c, info[v]["nireq"])
                for i in range(len(q)):
                    _set_inputs(q[i], inputs)
                queues[v] = q
                _throughput_round(q, 0.3)
        per_round: dict[str, list[float]] = {v: [] for v in compiled}
        order = list(compiled)
        for r in range(rounds):
            rot = order[r % len(order):] + order[:r % len(order)] if order else []
            for v in rot:
                if mode == "LATENCY":
                    per_round[v].append(_latency_round(compiled[v], inputs, seconds))
                else:
                    per_round[v].append(_throughput_round(queues[v], seconds))
        key = "latency_ms" if mode == "LATENCY" else "throughput_fps"
        res[key] = {v: statistics.median(x) for v, x in per_round.items() if x}
        res[key + "_rounds"] = per_round
        # rounds are interleaved, so a ratio taken within a round compares runs under the same load
        res[key + "_paired_ratios"] = {
            f"{a}/{b}": statistics.median(x / y for x, y in zip(per_round[a], per_round[b]))
            for a, b in (("ours", "fp32"), ("nncf", "fp32"), ("ours", "nncf"), ("fp32_control", "fp32"))
            if per_round.get(a) and per_round.get(b)}
        res[mode.lower() + "_compile"] = info
        del queues, compiled
    res["loadavg_after"] = _loadavg()
    return res


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def speed_inputs(name: str, core, fp32_xml: Path, calib_dir: Path) -> tuple[dict, dict | None]:
    model = core.read_model(str(fp32_xml))
    if bdata.is_npz_dir(calib_dir):
        x = bdata.text_speed_input(calib_dir, 128)
        return x, {k: [1, 128] for k in x}
    spec = bdata.detect_image_input(model)
    x = bdata.load_calibration_samples(model, calib_dir, subset=1)[0]
    static = None
    if model.inputs[0].get_partial_shape().is_dynamic:
        static = {spec.name: list(x.shape)}
    return {spec.name: x}, static


# ----------------------------------------------------------------------------- driver


def machine_info() -> dict:
    cpu = "unknown"
    flags: list[str] = []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu == "unknown":
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1].split()
    except OSError:
        pass
    core = ov.Core()
    try:
        full_name = core.get_property("CPU", "FULL_DEVICE_NAME")
    except Exception:  # noqa: BLE001
        full_name = cpu
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
           if f in flags]
    return {"cpu": cpu, "ov_device_name": full_name, "cores_logical": os.cpu_count(), "isa": isa,
            "openvino": ov.__version__, "nncf": NNCF_VERSION, "python": platform.python_version(),
            "numpy": np.__version__, "platform": platform.platform(),
            "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds")}


def run_model(name: str, args, core, work: Path) -> dict:
    spec = MODELS[name]
    fp32_xml = SHARED / "models" / name / f"{name}.xml"
    calib = SHARED / spec["calib"]
    res: dict = {"model": name, "fp32_xml": str(fp32_xml), "calibration_data": str(calib)}
    t_model = time.perf_counter()

    quant = {}
    if not args.no_ours:
        log(f"{name}: ours (pot -q default)")
        quant["ours"] = quantize_ours(name, fp32_xml, calib, work, args.target_device, args.reuse)
        log(f"{name}: ours -> exit {quant['ours'].get('exit_code')} in {quant['ours'].get('seconds')} s")
    if not args.no_nncf:
        log(f"{name}: nncf.quantize")
        quant["nncf"] = quantize_nncf(name, fp32_xml, calib, work, args.subset, spec.get("model_type"),
                                      args.target_device, args.reuse)
        log(f"{name}: nncf -> exit {quant['nncf'].get('exit_code')} in {quant['nncf'].get('seconds')} s")
    res["quantization"] = quant

    xmls: dict[str, Path | None] = {"fp32": fp32_xml}
    for v in ("ours", "nncf"):
        if v in quant and quant[v]["ok"]:
            xmls[v] = Path(quant[v]["xml"])

    log(f"{name}: accuracy ({spec['eval']})")
    try:
        res["accuracy"] = EVALUATORS[spec["eval"]](core, xmls, args.seed)
    except Exception as e:  # noqa: BLE001
        res["accuracy"] = {"error": f"{type(e).__name__}: {e}"}
    log(f"{name}: accuracy {res['accuracy'].get('primary')}")

    log(f"{name}: structure")
    res["structure"], res["int8_parity"] = structure(core, xmls)
    if res["int8_parity"]:
        p = res["int8_parity"]
        log(f"{name}: NNCF runs {p['nncf_int8']} weighted layers in INT8, ours {p['ours_int8']}; "
            f"{p['nncf_int8_ours_float_count']} NNCF-INT8 layers in float in ours "
            f"({p['nncf_int8_ours_float_on_purpose']} kept by the speed check)")

    log(f"{name}: speed ({args.rounds} rounds x {args.seconds} s, interleaved)")
    try:
        inputs, static = speed_inputs(name, core, fp32_xml, calib)
        res["speed"] = speed(core, xmls, inputs, static, args.rounds, args.seconds)
    except Exception as e:  # noqa: BLE001
        res["speed"] = {"error": f"{type(e).__name__}: {e}"}
    log(f"{name}: latency {res['speed'].get('latency_ms')} throughput {res['speed'].get('throughput_fps')}")
    res["benchmark_seconds"] = round(time.perf_counter() - t_model, 1)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of " + ", ".join(MODELS))
    ap.add_argument("--subset", type=int, default=300, help="NNCF subset_size (ours uses its default)")
    ap.add_argument("--no-ours", action="store_true", help="skip our tool")
    ap.add_argument("--no-nncf", action="store_true", help="skip NNCF (automatic when nncf is not installed)")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    ap.add_argument("--json", type=Path, default=HERE / "results.json")
    ap.add_argument("--work", type=Path, default=Path("/tmp/potbench"))
    ap.add_argument("--rounds", type=int, default=24, help="interleaved speed rounds per mode")
    ap.add_argument("--seconds", type=float, default=0.45, help="seconds per speed round and variant")
    ap.add_argument("--seed", type=int, default=0, help="seed of the evaluation crops / shuffles")
    ap.add_argument("--target-device", choices=TARGET_DEVICES, default="CPU",
                    help="target device of both tools: `pot --target-device X` and NNCF's "
                         "target_device=nncf.TargetDevice.X (CPU: ours also times layers on this CPU)")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse INT8 IRs already in --work instead of quantizing again (no timing)")
    args = ap.parse_args(argv)

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; expected some of {list(MODELS)}")
    if NNCF_VERSION is None and not args.no_nncf:
        log("nncf is not installed: skipping the NNCF columns")
        args.no_nncf = True
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    core = ov.Core()
    results = {"machine": machine_info(), "loadavg_start": _loadavg(),
               "command": "python benchmarks/run.py " + shlex.join(sys.argv[1:] if argv is None else argv),
               "settings": {"models": names, "subset": args.subset, "ours": not args.no_ours,
                            "nncf": not args.no_nncf, "rounds": args.rounds, "seconds": args.seconds,
                            "seed": args.seed, "work": str(work), "reuse": args.reuse,
                            "target_device": args.target_device,
                            "ours_command": shlex.join(ours_base_command())},
               "models": {}}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    for name in names:
        results["models"][name] = run_model(name, args, core, work)
        results["total_seconds"] = round(time.perf_counter() - t0, 1)
        args.json.write_text(json.dumps(results, indent=1, default=str))  # partial results survive
    results["total_seconds"] = round(time.perf_counter() - t0, 1)
    results["loadavg_end"] = _loadavg()
    args.json.write_text(json.dumps(results, indent=1, default=str))

    import report  # benchmarks/report.py

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report.with_memory_section(report.render_markdown(results)))
    log(f"wrote {args.out} and {args.json} in {results['total_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
