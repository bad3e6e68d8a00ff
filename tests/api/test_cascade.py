"""Cascaded models (``model.cascade``): load_model, per-sub-model quantization with statistics from
an engine that runs the stages, ``ignored`` keyed by sub-model, saving, the CLI config and report."""
from __future__ import annotations

import json

import numpy as np
import openvino as ov
import pytest

import models
from pot_cli.api import (BatchSampler, DataLoader, Engine, IEEngine, append_stats, create_pipeline, load_model,
                         output_key, process_accumulated_stats, save_model)
from pot_cli.errors import ConfigError, DatasetError, NotSupportedError


class Arrays(DataLoader):
    def __init__(self, n: int = 12):
        rng = np.random.default_rng(0)
        self.data = [rng.uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32) for _ in range(n)]

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        return self.data[i], None


class TwoStageEngine(Engine):
    """Stage ``a`` on the sample, stage ``b`` on ``a``'s output; records which stages' stats were asked."""

    calls: list

    stop_after_a = False

    def predict(self, stats_layout=None, sampler=None, stat_aliases=None, metric_per_sample=False,
                print_progress=False):
        self.calls = getattr(self, "calls", [])
        self.calls.append(sorted({k.split("_", 1)[0] for k in (stats_layout or {})}))
        core = ov.Core()
        stages = [(m["name"], core.compile_model(m["model"], "CPU", {"INFERENCE_PRECISION_HINT": "f32"}))
                  for m in self._model.models]
        accumulated = {}
        sampler = sampler or BatchSampler(self.data_loader)
        for index in sampler.subset_indices:
            x, _ = self.data_loader[index]
            for name, compiled in stages:
                result = compiled(x)
                if stats_layout:
                    append_stats(accumulated, stats_layout, {output_key(o, name): result[o] for o in compiled.outputs},
                                 index)
                x = result[compiled.outputs[0]]
                if self.stop_after_a:
                    break
        return None, process_accumulated_stats(accumulated)


def _cascade_files(tmp_path):
    a, _ = models.save_ir(models.conv_bias_relu(c_in=3, c_out=3, seed=0), tmp_path, "stage_a")
    b, _ = models.save_ir(models.conv_chain(seed=1), tmp_path, "stage_b")
    return a, b


def _fq(model: ov.Model) -> list[str]:
    return [op.get_friendly_name() for op in model.get_ops() if op.get_type_name() == "FakeQuantize"]


def test_cascade_loads_quantizes_per_sub_model_and_saves_as_the_original(tmp_path):
    a, b = _cascade_files(tmp_path)
    model = load_model({"model_name": "duo", "cascade": [{"name": "a", "model": a}, {"name": "b", "model": b}]})
    assert model.is_cascade and model.names == ["a", "b"] and model.name == "duo"
    engine = TwoStageEngine({}, Arrays())
    algorithms = [{"name": "DefaultQuantization",
                   "params": {"target_device": "ANY", "stat_subset_size": 8,
                              "ignored": {"b": {"scope": ["conv2"]}}}}]
    pipeline = create_pipeline(algorithms, engine)
    out = pipeline.run(model)
    assert out is model
    quantized = {m["name"]: m["model"] for m in model.models}
    assert _fq(quantized["a"]) and _fq(quantized["b"])
    # conv2 of b is ignored: no FakeQuantize feeds it; conv1 of b is quantized
    conv2 = next(op for op in quantized["b"].get_ops() if op.get_friendly_name() == "conv2")
    assert conv2.input_value(0).get_node().get_type_name() != "FakeQuantize"
    # one statistics pass of the whole cascade measured both sub-models (as the original's)
    assert engine.calls == [["a", "b"]]
    assert set(pipeline.states) == {"a", "b"} and all(s.result.quantizers for s in pipeline.states.values())
    written = save_model(model, tmp_path / "out", "duo")
    assert [w["name"] for w in written] == ["a", "b"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["duo_a.bin", "duo_a.xml", "duo_b.bin",
                                                                   "duo_b.xml"]
    saved = ov.Core().read_model(tmp_path / "out" / "duo_b.xml")
    assert sorted(op.get_friendly_name() for op in saved.get_ops() if op.get_type_name() == "Convolution") == \
        ["conv1", "conv2"]  # names without a sub-model prefix


def test_cascade_skip_model_and_errors(tmp_path):
    a, b = _cascade_files(tmp_path)
    config = {"model_name": "duo", "cascade": [{"name": "a", "model": a}, {"name": "b", "model": b}]}
    model = load_model(config)
    algorithms = [{"name": "DefaultQuantization", "params": {"ignored": {"a": {"skip_model": True}}}}]
    create_pipeline(algorithms, TwoStageEngine({}, Arrays())).run(model)
    assert not _fq(model.models[0]["model"]) and _fq(model.models[1]["model"])

    with pytest.raises(ConfigError, match=r"ignored\.bb: no sub-model 'bb' \(did you mean 'b'\?\); expected one of: a, b"):
        create_pipeline([{"name": "DefaultQuantization", "params": {"ignored": {"bb": {"scope": ["conv1"]}}}}],
                        TwoStageEngine({}, Arrays())).run(load_model(config))
    with pytest.raises(ConfigError, match="is a cascade; expected the ignored scope keyed by sub-model name"):
        create_pipeline([{"name": "DefaultQuantization", "params": {"ignored": {"scope": ["conv1"]}}}],
                        TwoStageEngine({}, Arrays())).run(load_model(config))
    with pytest.raises(ConfigError, match=r"ignored\.b\.scope"):
        create_pipeline([{"name": "DefaultQuantization", "params": {"ignored": {"b": {"scope": ["nope"]}}}}],
                        TwoStageEngine({}, Arrays())).run(load_model(config))
    with pytest.raises(NotSupportedError, match="runs one model; a cascade of 2 models needs an Engine"):
        create_pipeline([{"name": "DefaultQuantization"}], IEEngine({}, Arrays())).run(load_model(config))
    with pytest.raises(ConfigError, match=r"cascade\[1\]\.name: missing"):
        load_model({"cascade": [{"name": "a", "model": a}, {"model": b}]})
    one = load_model({"model_name": "solo", "cascade": [{"model": a}]})
    assert not one.is_cascade and one.name == "solo"
    with pytest.raises(ConfigError, match="name sub-models, but the model is not a cascade"):
        create_pipeline([{"name": "DefaultQuantization", "params": {"ignored": {"a": {"scope": ["conv"]}}}}],
                        TwoStageEngine({}, Arrays())).run(one)


def test_cascade_stage_never_reached_is_a_dataset_error(tmp_path):
    a, b = _cascade_files(tmp_path)
    model = load_model({"model_name": "duo", "cascade": [{"name": "a", "model": a}, {"name": "b", "model": b}]})
    engine = TwoStageEngine({}, Arrays())
    engine.stop_after_a = True
    with pytest.raises(DatasetError, match="sub-model 'b' of cascade 'duo': no calibration sample reached tensor"):
        create_pipeline([{"name": "DefaultQuantization"}], engine).run(model)
    assert not _fq(model.models[0]["model"])  # nothing was quantized: the pass failed for both


ENGINE_MODULE = '''
import numpy as np
import openvino as ov
from pot_cli.api import BatchSampler, DataLoader, Engine, Metric, append_stats, output_key, process_accumulated_stats


class Items(DataLoader):
    def __init__(self, n):
        rng = np.random.default_rng(0)
        self.data = [rng.uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32) for _ in range(n)]

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        return self.data[i], None


class Mean(Metric):
    def __init__(self):
        super().__init__()

    @property
    def avg_value(self):
        return {"mean": float(np.mean(self._v)) if self._v else 0.0}

    def update(self, output, target):
        self._v.append(float(np.mean(output[0])))

    def reset(self):
        self._v = []

    def get_attributes(self):
        return {"mean": {"direction": "higher-better", "type": "mean"}}


class TinyCascadeEngine(Engine):
    @classmethod
    def from_evaluation_config(cls, module_config, base_dir, device="CPU"):
        return cls({"device": device}, Items(int(module_config["samples"])), Mean())

    def predict(self, stats_layout=None, sampler=None, stat_aliases=None, metric_per_sample=False,
                print_progress=False):
        stages = [(m["name"], ov.Core().compile_model(m["model"], "CPU")) for m in self._model.models]
        acc = {}
        evaluate = self._metric is not None and not stats_layout
        if evaluate:
            self._metric.reset()
        for index in (sampler or BatchSampler(self.data_loader)).subset_indices:
            x, _ = self.data_loader[index]
            for name, compiled in stages:
                result = compiled(x)
                if stats_layout:
                    append_stats(acc, stats_layout, {output_key(o, name): result[o] for o in compiled.outputs}, index)
                x = result[compiled.outputs[0]]
            if evaluate:
                self._metric.update([x], [None])
        return (self._metric.avg_value if evaluate else None), process_accumulated_stats(acc)
'''


def test_cli_cascade_with_an_evaluations_engine(tmp_path):
    from click.testing import CliRunner

    from pot_cli.cli import main

    a, b = _cascade_files(tmp_path)
    (tmp_path / "engines").mkdir()
    (tmp_path / "engines" / "tiny_cascade_engine.py").write_text(ENGINE_MODULE)
    (tmp_path / "ac.yml").write_text("evaluations:\n  - name: tiny\n    module: tiny_cascade_engine.TinyCascadeEngine\n"
                                     "    python_path: engines\n    module_config:\n      samples: 6\n")
    config = {"model": {"model_name": "duo", "cascade": [{"name": "a", "model": str(a)}, {"name": "b", "model": str(b)}]},
              "engine": {"config": "ac.yml"},
              "compression": {"algorithms": [{"name": "DefaultQuantization",
                                              "params": {"ignored": {"b": {"skip_model": True}}}}]}}
    (tmp_path / "c.json").write_text(json.dumps(config))
    result = CliRunner().invoke(main, ["-c", str(tmp_path / "c.json"), "-e", "-d", "--output-dir", str(tmp_path / "out")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = tmp_path / "out" / "optimized"
    assert result.stdout.strip().splitlines()[-2:] == [str(out / "duo_a.xml"), str(out / "duo_b.xml")]
    assert _fq(ov.Core().read_model(out / "duo_a.xml")) and not _fq(ov.Core().read_model(out / "duo_b.xml"))
    report = json.loads((out / "report.json").read_text())
    assert [m["name"] for m in report["models"]] == ["a", "b"]
    assert {r["model"] for r in report["quantizers"]} == {"a"} and report["samples"]["used"] == 6
    assert set(report["evaluation"]["metrics"]) == {"mean"}
    assert report["config"]["model"]["cascade"][0] == {"name": "a", "model": str(a), "weights": str(a.with_suffix(".bin"))}

    # a cascade entry without a name, and model beside cascade, are config errors naming the keys
    config["model"]["cascade"][1].pop("name")
    config["model"]["model"] = str(a)
    (tmp_path / "c.json").write_text(json.dumps(config))
    result = CliRunner().invoke(main, ["-c", str(tmp_path / "c.json"), "--output-dir", str(tmp_path / "out2")])
    assert result.exit_code != 0
    assert "model.cascade[1].name: missing" in result.output and "model.model: not used with model.cascade" in result.output


def test_accuracy_aware_on_a_cascade_config_is_a_config_error(tmp_path):
    from pot_cli.config import validate_config
    from pot_cli.errors import ConfigError

    a, b = _cascade_files(tmp_path)
    raw = {"model": {"model_name": "duo", "cascade": [{"name": "a", "model": str(a)}, {"name": "b", "model": str(b)}]},
           "engine": {"type": "simplified", "data_source": str(tmp_path)},
           "compression": {"algorithms": [{"name": "AccuracyAwareQuantization"}]}}
    with pytest.raises(ConfigError, match=r"cfg\.json: compression\.algorithms\[0\]\.name: AccuracyAwareQuantization "
                                          r"on a cascade of 2 models is not supported; expected DefaultQuantization"):
        validate_config(raw, "cfg.json", tmp_path)
