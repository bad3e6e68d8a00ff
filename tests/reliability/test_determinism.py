"""Case 5: the same model, data, config and seed give byte-identical ``.xml`` and ``.bin``, also in
a fresh process, also with ``shuffle_data`` (a seeded random subset), and whatever order the
asynchronous infer requests finish in (statistics are folded in sample order)."""
from __future__ import annotations

import json

import models
from reliability.helpers import pot_proc, snapshot


def _config(path, xml, data, **params):
    path.write_text(json.dumps({"model": {"model": str(xml)}, "engine": {"data_source": str(data)},
                                "compression": {"algorithms": [{"name": "DefaultQuantization", "params": params}]}}))
    return path


def _ir(out, name):
    return {suffix: (out / "optimized" / f"{name}{suffix}").read_bytes() for suffix in (".xml", ".bin")}


def test_rerun_gives_byte_identical_ir_also_with_shuffle_and_seed(ws):
    # conv -> bias -> relu twice: FastBiasCorrection sums per-channel means over 150 samples,
    # so the order in which samples are folded shows in the saved biases
    xml, _ = models.save_ir(models.conv_chain(), ws.inputs / "chain", "chain")
    images = ws.inputs / "many"
    models.write_images(images, 150, (8, 8, 3), seed=3)
    before = ws.before()
    plain = _config(ws.root / "plain.json", xml, images, stat_subset_size=150)
    shuffled = _config(ws.root / "shuffled.json", xml, images, stat_subset_size=100, shuffle_data=True, seed=7)
    other_seed = _config(ws.root / "seed8.json", xml, images, stat_subset_size=100, shuffle_data=True, seed=8)
    runs = {}
    for tag, config in (("plain_a", plain), ("plain_b", plain), ("shuffled_a", shuffled), ("shuffled_b", shuffled),
                        ("seed8", other_seed)):
        extra = ["--progress-bar"] if tag.endswith("_b") else []  # display options change nothing
        proc = pot_proc("-c", config, "--output-dir", ws.root / tag, "-d", "--log-level", "WARNING", *extra)
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr
        runs[tag] = _ir(ws.root / tag, "chain")
    assert runs["plain_a"] == runs["plain_b"]
    assert runs["shuffled_a"] == runs["shuffled_b"]
    assert runs["shuffled_a"][".bin"] != runs["plain_a"][".bin"]  # another subset, another model
    assert runs["seed8"][".bin"] != runs["shuffled_a"][".bin"]  # the seed picks the subset
    assert ws.before() == before
    reports = [json.loads((ws.root / t / "optimized" / "report.json").read_text()) for t in ("shuffled_a", "seed8")]
    assert [r["samples"]["used"] for r in reports] == [100, 100]
    assert snapshot(xml.parent) == {k: v for k, v in before.items() if k.startswith(str(xml.parent))}
