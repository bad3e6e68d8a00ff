"""The per-layer sensitivity analysis and its recommendation (pot_cli/algorithms/analysis.py):
tiny in-memory models through the API and the ``pot`` command."""
from __future__ import annotations

import json

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

import models
from pot_cli.api import DataLoader, IEEngine, Metric, create_pipeline
from pot_cli.algorithms import analysis as analysis_module
from pot_cli.algorithms.analysis import AnalysisSettings, recommended_config

N = 16


class Arrays(DataLoader):
    """``(data, annotation)`` items: ``(3, 8, 8)`` float32 samples in [0, 1)."""

    def __init__(self, n: int = N, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.data = [rng.uniform(0, 1, (3, 8, 8)).astype(np.float32) for _ in range(n)]

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        return self.data[i], i


def fragile_chain(seed: int = 0) -> ov.Model:
    """``x -> conv1 -> relu1 -> conv2 -> relu2 -> conv3 -> relu3 -> conv4``. Channel 0 of relu1 is
    1000x wider than the others and conv2 barely reads it: the 8-bit step of conv2's input, set
    by that channel, wipes out the channels conv2 does read, so ``conv2`` is the fragile group."""
    rng = np.random.default_rng(seed)
    x = models.param("x", [1, 3, 8, 8], layout="NCHW")
    w1 = models.conv_weights(rng, 8, 3) * 0.3
    w1[0] *= 1000.0
    y = ops.relu(models.conv(x, w1, "conv1"))
    y.set_friendly_name("relu1")
    w2 = models.conv_weights(rng, 8, 8) * 0.2
    w2[:, 0] *= 1e-4
    y = ops.relu(models.conv(y, w2, "conv2"))
    y.set_friendly_name("relu2")
    y = ops.relu(models.conv(y, models.conv_weights(rng, 8, 8) * 0.1, "conv3"))
    y.set_friendly_name("relu3")
    y = models.conv(y, models.conv_weights(rng, 4, 8) * 0.1, "conv4")
    return ov.Model([ops.result(y)], [x], "fragile_chain")


def run(model, analyze=True, scope=()):
    params = {"stat_subset_size": N}
    if scope:
        params["ignored"] = {"scope": list(scope)}
    pipeline = create_pipeline([{"name": "DefaultQuantization", "params": params}], IEEngine({"device": "CPU"}, Arrays()),
                               analyze=analyze)
    pipeline.run(model)
    return pipeline


def test_the_ranking_puts_the_deliberately_fragile_group_first_and_the_recommendation_keeps_it():
    section = run(fragile_chain()).state.analysis
    rows = section["rows"]
    assert rows[0]["group"] == "conv2"
    assert {r["group"] for r in rows} == {"conv1", "conv2", "conv3", "conv4"}
    top = rows[0]
    # kept alone in float it lifts the output much more than any other group does
    assert top["only_float"]["cosine"] > max(r["only_float"]["cosine"] for r in rows[1:])
    assert top["only_quantized"]["sqnr_db"] < min(r["only_quantized"]["sqnr_db"] for r in rows[1:])
    rec = section["recommendation"]
    assert rec["keep_float"][0] == "conv2"
    assert rec["predicted"]["cosine"] >= section["target"]["cosine"] > section["fully_quantized"]["cosine"]


def long_fragile_chain(n: int = 20, fragile: int = 13, seed: int = 0) -> ov.Model:
    """``n`` convolutions with ReLUs between; conv ``fragile`` is fragile as ``conv2`` of
    :func:`fragile_chain` (its input's channel 0 is 1000x wider and it barely reads it)."""
    rng = np.random.default_rng(seed)
    x = models.param("x", [1, 3, 8, 8], layout="NCHW")
    y = x
    for k in range(n):
        w = models.conv_weights(rng, 8, 3 if k == 0 else 8)
        w *= 1.0 / float(np.sqrt(np.square(w).sum(axis=(1, 2, 3)).mean()))  # keeps the activations' scale
        if k == fragile - 1:
            w[0] *= 1000.0
        if k == fragile:
            w[:, 0] *= 1e-4
        y = models.conv(y, w, f"c{k}")
        if k < n - 1:
            y = ops.relu(y)
            y.set_friendly_name(f"relu{k}")
    return ov.Model([ops.result(y)], [x], "long_fragile_chain")


def test_over_budget_the_coarse_pass_measures_blocks_and_still_finds_the_fragile_group(monkeypatch):
    """One sample with every group alone quantized does not fit the budget: blocks of consecutive
    groups first, then the most harmful blocks group by group (``screening``); the fragile group,
    in the middle of the chain, still ranks first and the recommendation keeps it."""
    monkeypatch.setattr(analysis_module, "BUDGET_MIN_S", 0.0)
    pipeline = create_pipeline([{"name": "DefaultQuantization", "params": {"stat_subset_size": N}}],
                               IEEngine({"device": "CPU"}, Arrays()),
                               analyze=AnalysisSettings(budget_share=1e-6))
    pipeline.run(long_fragile_chain())
    section = pipeline.state.analysis
    assert section["groups"] == 20 and section["samples"] == 1
    blocks = section["screening"]["blocks"]
    assert [len(b["groups"]) for b in blocks] == [4] * 5
    refined = [b for b in blocks if b["refined"]]
    assert len(refined) == 2  # a third of the blocks at least, nothing more fits
    assert any("c13" in b["groups"] for b in refined)
    rows = section["rows"]
    assert rows[0]["group"] == "c13"
    measured = {r["group"] for r in rows if r["only_quantized"] is not None}
    assert measured == {g for b in refined for g in b["groups"]}
    assert section["recommendation"]["keep_float"][0] == "c13"
    # fewer inferences than every group alone quantized: 1 full + 5 blocks + 8 groups (+ search, floats)
    assert section["inferences"] < 1 + 20 + 2 * 20


def test_the_report_section_has_the_contracted_shape():
    section = run(fragile_chain(), analyze=0.999).state.analysis
    assert isinstance(section["samples"], int) and 1 <= section["samples"] <= analysis_module.MAX_SAMPLES
    assert section["groups"] == len(section["rows"]) == 4
    assert isinstance(section["time_s"], float) and isinstance(section["plain_time_s"], float)
    assert section["target"] == {"cosine": 0.999}
    assert section["ranked_by_output"] is None  # one output: no choice to name
    for row in section["rows"]:
        assert set(row) == {"group", "type", "only_quantized", "only_float", "metrics"}
        assert row["type"] == "Convolution" and row["metrics"] is None
        for key in ("only_quantized", "only_float"):
            assert set(row[key]) == {"sqnr_db", "cosine"}
            assert all(isinstance(v, float) for v in row[key].values())
    rec = section["recommendation"]
    assert set(rec) == {"keep_float", "ignored_scope", "predicted", "verified_samples", "config"}
    assert rec["verified_samples"] >= section["samples"]
    assert set(rec["predicted"]) == {"sqnr_db", "cosine"}
    assert rec["ignored_scope"] == rec["keep_float"]
    json.dumps(section)


def test_the_cost_is_one_compiled_model_per_variant_at_most(monkeypatch):
    """Every variant runs on one switchable model: 2 compilations (it and FP32) plus one per
    verified recommendation, whatever the number of groups."""
    compiled = []
    real = analysis_module._compile_f32
    monkeypatch.setattr(analysis_module, "_compile_f32", lambda m, d: compiled.append(m) or real(m, d))
    section = run(fragile_chain()).state.analysis
    variants = 2 * section["groups"] + 1
    assert section["compiled_models"] == len(compiled) <= 2 + analysis_module.MAX_VERIFICATIONS
    assert len(compiled) < variants
    assert section["inferences"] >= variants * section["samples"]


def test_the_switchable_model_computes_each_variant():
    """All gates on: the quantized model; all off: the float model (up to the f32 emulation)."""
    from pot_cli.algorithms.accuracy_aware import group_ops
    from pot_cli.statistics.collector import fake_quantize_in_float

    fp = models.conv_chain()
    pipeline = create_pipeline([{"name": "DefaultQuantization"}], IEEngine({"device": "CPU"}, Arrays()))
    model = pipeline.run(fp.clone()).model
    groups = list(group_ops(model, pipeline.state.result))
    assert groups == ["conv1", "conv2"]
    sw = analysis_module.switchable_model(model, fp, groups)
    with fake_quantize_in_float(sw):
        c = ov.Core().compile_model(sw, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    x = Arrays()[0][0][None]
    q = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})({"x": x})[0]
    f = ov.Core().compile_model(fp, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})({"x": x})[0]
    on = c({"x": x, analysis_module.GATE_INPUT: np.ones(2, np.float32)})[0]
    off = c({"x": x, analysis_module.GATE_INPUT: np.zeros(2, np.float32)})[0]
    np.testing.assert_allclose(off, f, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(on, q, rtol=1e-3, atol=1e-2 * np.abs(q).max())
    assert np.abs(on - off).max() > 0


def test_each_job_s_outputs_reach_the_sums_under_its_own_key():
    """``_run`` keeps several requests busy; each result must be the one of its own inputs, and
    every job must arrive (the figures of ``--analyze`` are sums over these results)."""
    x = models.param("x", [1, 64], layout="NC")
    model = ov.Model([ops.result(ops.multiply(x, ops.constant(np.float32(2.0))))], [x], "double")
    compiled = analysis_module._compile_f32(model, "CPU")
    data = [np.full((1, 64), k + 1, np.float32) for k in range(400)]
    seen = {}
    analysis_module._run(compiled, [(k, {"x": d}) for k, d in enumerate(data)],
                         lambda k, ys: seen.__setitem__(k, float(ys[0].ravel()[0])))
    assert seen == {k: 2.0 * (k + 1) for k in range(400)}


@pytest.mark.parametrize("groups, per_inference, budget, samples, floats, blocks, refined, verified", [
    (64, 0.001, 10.0, 8, 64, 0, 0, 32),   # cheap: every sample and every group, 32 samples verify
    (40, 0.01, 3.0, 4, 10, 0, 0, 32),     # in between: samples first, then the most harmful groups' only-float
    (81, 0.08, 10.0, 1, 11, 0, 0, 15),    # one sample fits: every group alone quantized
    (81, 0.1, 10.0, 1, 4, 9, 6, 12),      # one sample does not fit: 9 blocks of 9, the 6 most harmful refined
    (81, 0.1, 4.0, 1, 4, 9, 3, 8),        # far over: still a third of the blocks refined; the loaded 8 verify
])
def test_the_plan_fits_the_budget_with_at_least_one_sample(groups, per_inference, budget, samples, floats, blocks,
                                                           refined, verified):
    plan = analysis_module._plan(groups, 8, per_inference, 0.2, budget)
    assert (plan.samples, plan.float_variants, plan.blocks, plan.refined) == (samples, floats, blocks, refined)
    assert plan.verify_samples == verified
    alone = min(groups, refined * -(-groups // blocks)) + blocks if blocks else groups
    assert plan.inferences >= plan.samples * (alone + floats)
    if plan.samples > 1 or refined > blocks / 3:
        assert plan.seconds + 0.1 <= budget
    unlimited = analysis_module._plan(groups, 8, per_inference, 0.2, None)
    assert (unlimited.samples, unlimited.float_variants, unlimited.blocks) == (8, groups, 0)


def test_recommended_config_extends_the_ignored_scope_and_drops_analyze():
    raw = {"model": {"model_name": "m"}, "compression": {"analyze": 0.99, "algorithms": [
        {"name": "DefaultQuantization", "params": {"ignored": {"scope": ["a"]}}}]}}
    predicted = {"sqnr_db": 30.0, "cosine": 0.995}
    section = {"recommendation": {"ignored_scope": ["a", "b"], "predicted": predicted, "verified_samples": 20},
               "target": {"cosine": 0.99}}
    out = recommended_config(raw, section)
    assert out["compression"] == {"algorithms": [{"name": "DefaultQuantization",
                                                  "params": {"ignored": {"scope": ["a", "b"]}}}],
                                  "output_check": {"samples": 20, "expected": predicted, "target": 0.99}}
    assert raw["compression"]["analyze"] == 0.99  # not modified


def test_a_target_outside_zero_one_is_a_config_error():
    from pot_cli.errors import ConfigError

    with pytest.raises(ConfigError, match="expected an output cosine in"):
        create_pipeline([{"name": "DefaultQuantization"}], IEEngine({"device": "CPU"}, Arrays()), analyze=1.5)
    assert AnalysisSettings.from_value(None) is None and AnalysisSettings.from_value(True).target == 0.99


def test_a_bad_output_check_is_a_config_error(tmp_path):
    from click.testing import CliRunner

    from pot_cli.cli import main
    from pot_cli.errors import ConfigError

    with pytest.raises(ConfigError, match="check_output .*expected True or"):
        create_pipeline([{"name": "DefaultQuantization"}], IEEngine({"device": "CPU"}, Arrays()),
                        check_output={"samples": 0})
    fp_xml, _ = models.save_ir(fragile_chain(), tmp_path / "fp", "fragile")
    models.write_images(tmp_path / "images", 4)
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"model": {"model_name": "m", "model": str(fp_xml)},
                                  "engine": {"type": "simplified", "data_source": str(tmp_path / "images")},
                                  "compression": {"output_check": {"sample": 8},
                                                  "algorithms": [{"name": "DefaultQuantization"}]}}))
    r = CliRunner().invoke(main, ["-c", str(config), "--output-dir", str(tmp_path / "out")])
    assert r.exit_code == 2 and "output_check" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.xml"))


def _cosine_to_fp32(xml, fp_xml, images) -> float:
    """Mean output cosine of the IR ``xml`` against ``fp_xml`` on ``images`` (fed as the
    simplified engine feeds them: BGR 0..255 float32, NCHW)."""
    import cv2

    core = ov.Core()
    q = core.compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    f = core.compile_model(str(fp_xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    cos = []
    for path in images:
        x = cv2.imread(str(path)).astype(np.float32).transpose(2, 0, 1)[None]
        a, b = q(x)[0].ravel().astype(np.float64), f(x)[0].ravel().astype(np.float64)
        cos.append(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    return float(np.mean(cos))


def test_pot_analyze_writes_a_recommended_config_that_reproduces_the_predicted_quality(tmp_path):
    from click.testing import CliRunner

    from pot_cli.cli import main

    fp_xml, _ = models.save_ir(fragile_chain(), tmp_path / "fp", "fragile")
    images = models.write_images(tmp_path / "images", N)
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["-q", "default", "-m", str(fp_xml), "--data-source", str(tmp_path / "images"),
                                  "--analyze", "--output-dir", str(out), "-d"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    report = json.loads((out / "optimized" / "report.json").read_text())
    section = report["analysis"]
    rec = section["recommendation"]
    assert rec["keep_float"][:1] == ["conv2"]
    config = out / "optimized" / "fragile_recommended.json"
    assert rec["config"] == str(config.resolve())
    raw = json.loads(config.read_text())
    assert "analyze" not in raw["compression"]
    assert raw["compression"]["algorithms"][0]["params"]["ignored"]["scope"] == rec["ignored_scope"]
    quantized = _cosine_to_fp32(out / "optimized" / "fragile.xml", fp_xml, images)
    assert quantized < section["target"]["cosine"]

    again = tmp_path / "again"
    r = CliRunner().invoke(main, ["-c", str(config), "--output-dir", str(again), "-d"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    reproduced = _cosine_to_fp32(again / "optimized" / "fragile.xml", fp_xml, images)
    assert reproduced >= section["target"]["cosine"] - 0.002
    assert abs(reproduced - rec["predicted"]["cosine"]) < 0.005
    again_report = json.loads((again / "optimized" / "report.json").read_text())
    assert "analysis" not in again_report
    # the re-run measures itself on the samples the prediction was verified on, the prediction beside
    assert raw["compression"]["output_check"] == {"samples": rec["verified_samples"], "expected": rec["predicted"],
                                                  "target": section["target"]["cosine"]}
    check = again_report["output_check"]
    assert check["samples"] == rec["verified_samples"] and check["expected"] == rec["predicted"]
    assert check["target"] == section["target"]["cosine"] and check["target_met"] == (check["cosine"] >= check["target"])
    assert abs(check["cosine"] - rec["predicted"]["cosine"]) < 0.002
    assert check["cosine"] >= section["target"]["cosine"] - 0.002
    page = (again / "optimized" / "report.html").read_text()
    assert 'id="output-check"' in page and "predicted by the analysis that recommended this config" in page


def test_output_check_in_the_api_compares_the_output_model_with_fp32():
    """``create_pipeline(check_output=True)``: the fully quantized fragile chain is measured against
    FP32 on the calibration samples, as the analysis measures its fully quantized model."""
    pipeline = create_pipeline([{"name": "DefaultQuantization", "params": {"stat_subset_size": N}}],
                               IEEngine({"device": "CPU"}, Arrays()), check_output={"samples": 12})
    pipeline.run(fragile_chain())
    check = pipeline.state.output_check
    assert check["samples"] == 12 and check["expected"] is None and check["target"] is None
    analysed = run(fragile_chain()).state.analysis["fully_quantized"]
    assert check["cosine"] < 0.999  # conv2 is fragile: far from FP32
    assert check["cosine"] == pytest.approx(analysed["cosine"], abs=0.02)


def test_compression_analyze_in_a_config_file_runs_the_analysis(tmp_path):
    from click.testing import CliRunner

    from pot_cli.cli import main

    fp_xml, _ = models.save_ir(fragile_chain(), tmp_path / "fp", "fragile")
    models.write_images(tmp_path / "images", 4)
    cfg = {"model": {"model_name": "fragile", "model": str(fp_xml)},
           "engine": {"type": "simplified", "data_source": str(tmp_path / "images")},
           "compression": {"analyze": 0.995, "algorithms": [{"name": "DefaultQuantization"}]}}
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    r = CliRunner().invoke(main, ["-c", str(tmp_path / "c.json"), "--output-dir", str(tmp_path / "o"), "-d"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    section = json.loads((tmp_path / "o" / "optimized" / "report.json").read_text())["analysis"]
    assert section["target"] == {"cosine": 0.995} and section["samples"] == 4


class ReusedBuffer(IEEngine):
    """An engine that hands out the same input arrays for every sample (a feeder reusing its buffer)."""

    def iter_samples(self, indices):
        buffer = None
        for i, sample in super().iter_samples(indices):
            if buffer is None:
                buffer = {k: np.array(v) for k, v in sample.items()}
            for k, v in sample.items():
                buffer[k][...] = v
            yield i, buffer


def test_the_fully_quantized_figures_do_not_depend_on_how_the_engine_buffers_samples():
    """The analysed samples are copied: an engine reusing its buffers once made every reference
    (FP32) output come from the last sample, so the measured cosines were nonsense."""
    def fully_quantized(engine):
        pipeline = create_pipeline([{"name": "DefaultQuantization", "params": {"stat_subset_size": N}}], engine,
                                   analyze=True)
        pipeline.run(fragile_chain())
        return pipeline.state.analysis["fully_quantized"]

    plain = fully_quantized(IEEngine({"device": "CPU"}, Arrays()))
    reused = fully_quantized(ReusedBuffer({"device": "CPU"}, Arrays()))
    assert reused["cosine"] == pytest.approx(plain["cosine"], abs=1e-6)
    assert reused["sqnr_db"] == pytest.approx(plain["sqnr_db"], abs=1e-3)


class CosineToFp32(Metric):
    """Mean cosine between the output and the annotation (the FP32 output), higher is better."""

    def __init__(self):
        super().__init__()
        self.values = []

    @property
    def value(self):
        return {"cosine": [self.values[-1]]}

    @property
    def avg_value(self):
        return {"cosine": float(np.mean(self.values))}

    def update(self, output, target):
        y, r = np.ravel(output[0]).astype(np.float64), np.ravel(target[0]).astype(np.float64)
        self.values.append(float(y @ r / (np.linalg.norm(y) * np.linalg.norm(r))))

    def reset(self):
        self.values = []

    def get_attributes(self):
        return {"cosine": {"direction": "higher-better", "type": "cosine"}}


class Annotated(Arrays):
    """``(data, FP32 output)`` items."""

    def __init__(self, fp: ov.Model):
        super().__init__()
        compiled = ov.Core().compile_model(fp, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        self.refs = [compiled({"x": d[None]})[0][0] for d in self.data]

    def __getitem__(self, i):
        return self.data[i], self.refs[i]


def test_with_a_metric_the_most_harmful_groups_get_the_metric_with_them_alone_in_float():
    fp = fragile_chain()
    engine = IEEngine({"device": "CPU"}, Annotated(fp), CosineToFp32())
    pipeline = create_pipeline([{"name": "DefaultQuantization", "params": {"stat_subset_size": N}}], engine,
                               analyze=True)
    pipeline.run(fp.clone())
    section = pipeline.state.analysis
    full = section["fully_quantized_metrics"]["cosine"]
    rows = {r["group"]: r for r in section["rows"]}
    assert section["rows"][0]["group"] == "conv2"
    assert rows["conv2"]["metrics"]["cosine"] > full + 0.01  # in float it lifts the metric
    measured = [r for r in section["rows"] if r["metrics"] is not None]
    assert measured and all(r["only_float"] is not None for r in measured)
    assert section["time_split_s"]["metrics_s"] > 0
