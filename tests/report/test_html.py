"""report.html rendering (pot_cli.report.html) and the console summary, without a browser."""
from __future__ import annotations

import json
import re

import pytest

from pot_cli.report.html import render_html, report_files
from pot_cli.report.precision import console_summary, float_reasons
from tests.report.fake_sections import add_fake_sections


def _report() -> dict:
    """A small report with every section, and hostile text in names."""
    evil = '<script>alert("x")</script>&'
    report = {
        "version": "0.1.0", "openvino": "2026", "python": "3.11",
        "config": {"model": {"model_name": f"m{evil}"}, "engine": {"type": "simplified"},
                   "compression": {"target_device": "CPU", "algorithms": [
                       {"name": "AccuracyAwareQuantization",
                        "params": {"preset": "performance", "stat_subset_size": 10, "ignored": {"scope": ["ign"]}}}]}},
        "input": {"model": "/m.xml", "data_source": "/d"}, "output": {"xml": "/o/m.xml"},
        "samples": {"used": 10, "skipped": []},
        "time_s": {"statistics_s": 1.0, "accuracy_aware_s": 2.0, "total_s": 3.5},
        "summary": {"activation_quantizers": 2, "weight_quantizers": 2},
        "quantizers": [{"name": f"fq{evil}", "kind": "activation", "tensor": "t", "consumers": ["conv1:0"], "levels": 256,
                        "input_low": 0.0, "input_high": 1.0, "channels": 1, "observed": [0.0, 1.0]}],
        "accuracy_aware": {"maximal_drop": 0.01, "drop_type": "absolute", "baseline": {"acc": 0.9},
                           "max_drop": {"acc": 0.01}, "target_met": True, "stop_reason": "target met",
                           "steps": [{"iteration": 0, "action": "quantize", "layers": [], "metrics": {"acc": 0.85},
                                      "drop": {"acc": 0.05}, "accepted": True},
                                     {"iteration": 1, "action": "revert", "layers": [f"conv2{evil}"],
                                      "metrics": {"acc": 0.895}, "drop": {"acc": 0.005}, "accepted": True}],
                           "rankings": [{"iteration": 1, "metric": "acc", "subset_size": 10, "time_s": 0.1,
                                         "scores": [{"layer": f"conv2{evil}", "type": "Convolution", "acc": 0.9,
                                                     "distance": 0.01}]}]},
        "speed_check": {"fp32_us": 100.0, "int8_us_before": 90.0, "int8_us": 80.0, "rounds": 2, "seconds": 1.0,
                        "reverted": ["conv3"], "reverted_as_whole_model": [], "categories_not_tried": [],
                        "runtime": {"types": {"Convolution": {"u8": 1, "f32": 1}}, "int8": 1, "total": 2},
                        "layers": [{"layer": "conv1", "type": "Convolution", "fp32_us": 50.0, "int8_us": 30.0,
                                    "decision": "int8"},
                                   {"layer": "conv3", "type": "Convolution", "fp32_us": 10.0, "int8_us": 15.0,
                                    "decision": "float"}]},
        "layers": {"types": {"Convolution": {"int8": 1, "float": 2}}, "int8": 1, "float": 2,
                   "float_layers": [{"layer": "conv3", "type": "Convolution", "reason": "speed check: slower"},
                                    {"layer": f"conv2{evil}", "type": "Convolution", "reason": "reverted by AA"}]},
    }
    return add_fake_sections(report)


def test_every_section_rendered_and_escaped():
    page = render_html(_report())
    for anchor in ("times", "float", "analysis", "quant-noise", "accuracy-aware", "speed", "quantizers"):
        assert f'id="{anchor}"' in page
    assert "<script" not in page and "&lt;script&gt;" in page
    assert page.count("<svg") == 4  # sensitivity, noise, AA drop, speed
    # self-contained: no URL but the in-page anchors (SVG namespaces are not fetched)
    urls = set(re.findall(r'(?:href|src)="([^"#][^"]*)"', page))
    assert not urls, urls
    assert "@import" not in page and not re.findall(r"url\((?!#)", page)  # only in-page clip paths
    snippet = re.search(r'<pre id="ignored-snippet"><code>(.*?)</code></pre>', page, re.S).group(1)
    assert json.loads(snippet.replace("&quot;", '"'))["ignored"]["scope"]
    # what stayed in float includes the config's ignored scope; AccuracyAware's ranking is shown
    assert "compression.algorithms[0].params.ignored.scope</code>, 1 name(s)" in page and "<code>ign</code>" in page
    assert "Ranking of iteration 1: acc" in page and "conv2&lt;script&gt;" in page


def test_a_run_without_diagnostics_says_how_to_get_them():
    page = render_html({"version": "0.1.0", "layers": {"int8": 1, "float": 0, "float_layers": []}})
    assert 'id="analysis"' in page and "--analyze" in page and "QuantNoiseEstimator" in page


def test_sections_absent_do_not_break():
    page = render_html({"version": "0.1.0"})
    assert "<html" in page and 'id="quantizers"' in page and "<svg" not in page


def test_float_reasons_from_sections():
    reasons = float_reasons(_report())
    assert reasons["ign"].startswith("in the config's ignored scope")
    assert "AccuracyAwareQuantization in iteration 1" in reasons['conv2<script>alert("x")</script>&']
    assert reasons["conv3"].startswith("speed check: slower in INT8")


def test_report_files_survive_a_drawing_failure(monkeypatch):
    import pot_cli.report.html as html

    def boom(report):
        raise ValueError("no plot")

    monkeypatch.setattr(html, "render_html", boom)
    files = report_files({"a": 1})
    assert json.loads(files["report.json"]) == {"a": 1}
    assert "could not be drawn" in files["report.html"]


def test_console_summary(tmp_path):
    lines = console_summary(_report(), tmp_path / "report.json")
    assert lines[0].startswith("Summary: 1 of 3 Convolution/MatMul layers in INT8")
    assert any("kept in float: 1 (speed check: slower): conv3" in x for x in lines)
    assert lines[-1] == f"Reports: {tmp_path / 'report.json'} and {tmp_path / 'report.html'}"


@pytest.mark.parametrize("target", ["CPU", "ANY"])
def test_cli_writes_report_html(tmp_path, tiny_model_dir, target):
    from click.testing import CliRunner

    from pot_cli.cli import main

    res = CliRunner().invoke(main, ["-q", "default", "-m", str(tiny_model_dir / "model" / "tiny.xml"), "--data-source",
                                    str(tiny_model_dir / "images"), "--target-device", target,
                                    "--output-dir", str(tmp_path), "-d"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    out = tmp_path / "optimized"
    page = (out / "report.html").read_text()
    report = json.loads((out / "report.json").read_text())
    assert report["layers"]["int8"] + report["layers"]["float"] >= 1 and report["sizes"]["output_bytes"] > 0
    assert "What stayed in floating point" in page
    assert res.output.strip().splitlines()[-1] == str(out / "tiny.xml")


def test_a_coarse_pass_is_explained_and_its_unmeasured_groups_show_a_dash():
    report = _report()
    rows = report["analysis"]["rows"]
    names = [r["group"] for r in rows]
    for r in rows[1:]:
        r["only_quantized"] = None
    report["analysis"]["screening"] = {"blocks": [
        {"groups": names[:1], "only_quantized": {"sqnr_db": 10.0, "cosine": 0.9}, "refined": True},
        {"groups": names[1:], "only_quantized": {"sqnr_db": 30.0, "cosine": 0.999}, "refined": False}]}
    page = render_html(report)
    assert "the 2 blocks of consecutive groups were measured first" in page
    assert "the 1 most harmful blocks one by one (1 groups)" in page
    table = page[page.index("Which layers hurt"):]
    row = re.search(r"<tr><td[^>]*>2</td>.*?</tr>", table, re.S).group(0)
    assert row.count(">\u2014<") == 2  # only quantized: SQNR and cosine not measured


def test_a_reused_evaluation_is_labelled_in_the_stage_times():
    report = _report()
    report["time_s"]["evaluation_s"] = 0.0
    report["evaluation"] = {"dataset": "d", "samples": 10, "metrics": {"acc": 0.9}, "time_s": 1.2, "reused": True}
    assert "evaluation (AccuracyAware&#x27;s final evaluation, reused)" in render_html(report)
    report["evaluation"]["reused"] = False
    assert "final evaluation, reused" not in render_html(report)


def test_the_sensitivity_section_names_the_output_it_ranks_by_and_defines_its_terms():
    report = _report()
    report["analysis"]["ranked_by_output"] = "classificators"
    page = render_html(report)
    assert "of output <code>classificators</code>, the one the fully quantized model is furthest" in page
    assert "Cosine: the cosine similarity of the output and the FP32 output" in page
    assert "checked together on the real model" in page
    assert "the saturation fix keeps one bit less" in page
    assert page.count('href="#analysis">Which layers hurt<') == 1
