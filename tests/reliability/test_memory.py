"""Case 6 (fast version): the peak memory of a run does not grow with ``stat_subset_size``.

Statistics are folded across samples while they are collected (running min/max/sum per channel),
and samples are decoded one at a time, so 600 samples peak no higher than 60 (+10%). The full
measurement on ``mobilenet_v2`` (300 vs 3000 samples, and image size) is ``benchmarks/memory.py``,
results in ``docs/memory.md``. Image size is covered here by
``test_data.py::test_images_far_larger_than_the_input_keep_memory_bounded``.
"""
from __future__ import annotations

import json
import sys

import models
from reliability.helpers import run_measured


def test_peak_memory_does_not_grow_with_stat_subset_size(ws):
    xml, _ = models.save_ir(models.conv_chain(), ws.inputs / "chain", "chain")
    names = sorted(p.name for p in ws.images.iterdir())
    listing = ws.inputs / "600.txt"
    listing.write_text("".join(f"images/{names[k % len(names)]}\n" for k in range(600)))
    before = ws.before()
    peaks = {}
    for n in (60, 600):
        config = ws.root / f"c{n}.json"
        config.write_text(json.dumps({
            "model": {"model": str(xml)}, "engine": {"data_source": str(listing)},
            "compression": {"algorithms": [{"name": "DefaultQuantization", "params": {"stat_subset_size": n}}]}}))
        code, err, peaks[n] = run_measured([sys.executable, "-m", "pot_cli", "-c", config, "--output-dir",
                                            ws.root / f"out{n}", "-d", "--log-level", "WARNING"])
        assert code == 0, err
        report = json.loads((ws.root / f"out{n}" / "optimized" / "report.json").read_text())
        assert report["samples"]["used"] == n
    assert peaks[600] <= peaks[60] * 1.10, peaks
    assert ws.before() == before
