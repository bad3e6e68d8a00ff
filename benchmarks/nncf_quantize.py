"""Quantize an OpenVINO IR with NNCF on the same calibration samples ``pot`` uses.

Usage::

    python benchmarks/nncf_quantize.py MODEL_XML DATA_DIR OUT_XML [--subset 300]
        [--model-type transformer] [--preset performance|mixed] [--target-device ANY|CPU]

Runs ``nncf.quantize(model, nncf.Dataset(samples), subset_size=N, target_device=...)`` with NNCF's
other defaults (MinMax + FastBiasCorrection) and saves with
``ov.save_model(q, OUT_XML, compress_to_fp16=False)``. The benchmark times this script from process
start to exit and passes the same ``--target-device`` as to ``pot``; the default here is NNCF's own,
ANY. The last stdout line is a JSON object with the phase timings.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

T0 = time.perf_counter()

sys.path.insert(0, str(Path(__file__).resolve().parent))

import openvino as ov  # noqa: E402

from data import load_calibration_samples  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_xml", type=Path)
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("out_xml", type=Path)
    ap.add_argument("--subset", type=int, default=300, help="subset_size for nncf.quantize")
    ap.add_argument("--model-type", choices=["none", "transformer"], default="none")
    ap.add_argument("--preset", choices=["default", "performance", "mixed"], default="default")
    ap.add_argument("--target-device", choices=["ANY", "CPU"], default="ANY",
                    help="nncf.TargetDevice passed as target_device (default ANY, NNCF's default)")
    args = ap.parse_args(argv)

    import nncf  # imported here so --help works without nncf

    timings: dict[str, float] = {}
    t = time.perf_counter()
    timings["imports_s"] = t - T0
    model = ov.Core().read_model(str(args.model_xml))
    samples = load_calibration_samples(model, args.data_dir, subset=args.subset)
    if not samples:
        print(f"error: no calibration samples in {args.data_dir}", file=sys.stderr)
        return 2
    timings["load_s"] = time.perf_counter() - t

    kwargs = {"subset_size": args.subset, "target_device": nncf.TargetDevice[args.target_device]}
    if args.model_type == "transformer":
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    if args.preset != "default":
        kwargs["preset"] = nncf.QuantizationPreset(args.preset)
    t = time.perf_counter()
    quantized = nncf.quantize(model, nncf.Dataset(samples), **kwargs)
    timings["quantize_s"] = time.perf_counter() - t

    t = time.perf_counter()
    args.out_xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(args.out_xml), compress_to_fp16=False)
    timings["save_s"] = time.perf_counter() - t
    timings["in_process_total_s"] = time.perf_counter() - T0
    print(json.dumps({"nncf_version": nncf.__version__, "samples": len(samples),
                      "subset_size": args.subset, "model_type": args.model_type,
                      "target_device": args.target_device,
                      "timings": {k: round(v, 3) for k, v in timings.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
