"""Stand-in ``analysis`` and ``quant_noise`` sections (the data contract of issue 16), built from a
real report's layer names, to render those sections before (or without) running them."""
from __future__ import annotations

import numpy as np


def add_fake_sections(report: dict, seed: int = 0) -> dict:
    """Add made-up ``analysis`` and ``quant_noise`` sections to ``report`` (in place; returned).

    The layer names are the report's own (speed check layers, else the quantizers' consumers);
    the numbers are random. For rendering tests only.
    """
    rng = np.random.default_rng(seed)
    names = [(r["layer"], r["type"]) for r in (report.get("speed_check") or {}).get("layers") or []]
    if not names:
        seen = {}
        for q in report.get("quantizers") or []:
            for c in q.get("consumers") or []:
                seen.setdefault(c.rsplit(":", 1)[0], "Convolution")
        names = list(seen.items())
    quantized = rng.uniform(18, 45, len(names))
    order = np.argsort(quantized)
    rows = []
    for i in order:
        name, kind = names[i]
        rows.append({"group": name, "type": kind,
                     "only_quantized": {"sqnr_db": float(quantized[i]), "cosine": float(1 - 10 ** (-quantized[i] / 10))},
                     "only_float": {"sqnr_db": float(20 + rng.uniform(0, 3)), "cosine": float(0.99 + rng.uniform(0, 0.009))},
                     "metrics": None})
    keep = [r["group"] for r in rows[:2]]
    report["analysis"] = {
        "samples": 8, "groups": len(rows), "time_s": 3.2, "plain_time_s": 2.1, "target": {"cosine": 0.999},
        "rows": rows,
        "recommendation": {"keep_float": keep, "ignored_scope": keep, "predicted": {"sqnr_db": 27.5, "cosine": 0.9991},
                           "config": "/tmp/example/model_recommended.json"}}
    report["quant_noise"] = {"mode": "simplified", "type": "sqnr", "csv": "/tmp/example/sqnr.csv",
                             "rows": [{"layer": n, "type": k, "sqnr_db": float(rng.uniform(15, 40))} for n, k in names]}
    return report
