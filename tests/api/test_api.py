"""The API's contracts (pot_cli.api), on tiny models built in memory."""
from __future__ import annotations

import numpy as np
import openvino as ov
import pytest

import models
from pot_cli.api import (DataLoader, Engine, IEEngine, Metric, SimplifiedEngine, append_stats, compress_model_weights,
                         create_pipeline, load_model, output_key, process_accumulated_stats, save_model)
from pot_cli.api.model import CompressedModel
from pot_cli.errors import ConfigError, DatasetError, NotSupportedError

N = 24


class Arrays(DataLoader):
    """``(data, annotation)`` items: ``(3, 8, 8)`` float32 samples; the annotation is the index."""

    def __init__(self, n: int = N, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.data = [rng.uniform(-1, 1, (3, 8, 8)).astype(np.float32) for _ in range(n)]

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        return self.data[i], i


class Echo(Metric):
    """Per-sample value: the annotation itself (so the order of results can be checked);
    average: the mean of the first output."""

    def __init__(self):
        self.seen, self.means = [], []
        super().__init__()

    @property
    def value(self):
        return {"echo": [self.seen[-1]]}

    @property
    def avg_value(self):
        return {"echo": float(np.mean(self.means))}

    def update(self, output, target):
        assert isinstance(output, list) and output[0].shape[0] == 1  # one array per output, batch first
        self.seen.append(float(target[0]))
        self.means.append(float(np.mean(output[0])))

    def reset(self):
        self.seen, self.means = [], []

    def get_attributes(self):
        return {"echo": {"direction": "higher-better", "type": "echo"}}


def _model(**kw) -> CompressedModel:
    return CompressedModel(models.conv_bias_relu(**kw), "tiny")


def _fq_params(model: ov.Model) -> dict[str, list[np.ndarray]]:
    out = {}
    for op in model.get_ops():
        if op.get_type_name() == "FakeQuantize":
            out[op.get_friendly_name()] = [op.input_value(k).get_node().get_data() for k in range(1, 5)]
    return out


def test_default_quantization_through_the_api_inserts_fake_quantize_and_int8_weights():
    model = create_pipeline([{"name": "DefaultQuantization"}], IEEngine({"device": "CPU"}, Arrays())).run(_model())
    types = [op.get_type_name() for op in model.model.get_ops()]
    assert "FakeQuantize" in types
    assert any(op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8 for op in model.model.get_ops())


def test_an_empty_data_loader_fails_at_create_pipeline_with_the_originals_message():
    with pytest.raises(DatasetError, match="^Empty data loader! Please make sure"):
        create_pipeline([{"name": "DefaultQuantization"}], IEEngine({}, Arrays(0)))


def test_params_are_validated_with_the_clis_messages():
    engine = IEEngine({}, Arrays())
    with pytest.raises(ConfigError) as e:
        create_pipeline([{"name": "DefaultQuantization", "params": {"presett": "mixed"}}], engine)
    assert "create_pipeline: compression.algorithms[0].params.presett: unknown key" in str(e.value)
    assert "did you mean 'preset'" in str(e.value)
    with pytest.raises(ConfigError, match=r"algorithms\[0\]\.name"):
        create_pipeline([{"name": "DefaultQuantisation"}], engine)
    with pytest.raises(NotSupportedError, match="FastBiasCorrection runs right after MinMaxQuantization"):
        create_pipeline([{"name": "FastBiasCorrection"}], engine)


def test_target_device_defaults_to_any_and_keys_beside_params_are_ignored():
    pipeline = create_pipeline([{"name": "DefaultQuantization", "stat_subset_size": 5}], IEEngine({}, Arrays()))
    assert pipeline.algo_seq[0].config["target_device"] == "ANY"
    assert pipeline.algo_seq[0].config["stat_subset_size"] == 300


def test_an_empty_algorithm_list_gives_an_evaluation_only_pipeline():
    model = _model()
    before = [op.get_type_name() for op in model.model.get_ops()]
    engine = IEEngine({"device": "CPU"}, Arrays(), Echo())
    pipeline = create_pipeline(dict(), engine)
    assert pipeline.run(model) is model and [op.get_type_name() for op in model.model.get_ops()] == before
    assert set(pipeline.evaluate(model)) == {"echo"}
    assert create_pipeline([], IEEngine({}, Arrays())).evaluate(model) is None  # no metric


def test_per_sample_results_come_back_in_dataset_order_under_asynchronous_inference():
    engine = IEEngine({"device": "CPU", "eval_requests_number": 4}, Arrays(), Echo())
    engine.set_model(_model())
    (per_sample, avg), stats = engine.predict(metric_per_sample=True)
    assert stats == {}
    assert [r["sample_id"] for r in per_sample] == list(range(N))
    assert [r["result"] for r in per_sample] == [float(i) for i in range(N)]  # each sample's own annotation


class HostEngine(Engine):
    """A custom engine: runs the model itself and reduces statistics on the host (the original's contract)."""

    def predict(self, stats_layout=None, sampler=None, stat_aliases=None, metric_per_sample=False,
                print_progress=False):
        compiled = ov.Core().compile_model(self._model.model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        accumulated: dict = {}
        for indices, items in sampler.batches():
            for index, (data, _) in zip(indices, items):
                result = compiled(data[None])
                outputs = {output_key(o): result[o] for o in compiled.outputs}
                append_stats(accumulated, stats_layout or {}, outputs, index)
        return None, process_accumulated_stats(accumulated)


def test_a_custom_engine_with_only_predict_gives_the_ranges_of_the_built_in_engine():
    algorithms = [{"name": "MinMaxQuantization", "params": {"stat_subset_size": 16}}]
    built_in = create_pipeline(algorithms, IEEngine({"device": "CPU"}, Arrays())).run(_model())
    custom = create_pipeline(algorithms, HostEngine({"device": "CPU"}, Arrays())).run(_model())
    a, b = _fq_params(built_in.model), _fq_params(custom.model)
    assert a.keys() == b.keys() and a
    for name in a:
        for x, y in zip(a[name], b[name]):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)


def test_min_max_with_fast_bias_correction_after_it_corrects_biases_in_one_pass():
    engine = IEEngine({"device": "CPU"}, Arrays())
    plain = create_pipeline([{"name": "MinMaxQuantization"}], engine)
    plain.run(_model())
    chained = create_pipeline([{"name": "MinMaxQuantization"}, {"name": "FastBiasCorrection"}], engine)
    chained.run(_model())
    assert not plain.state.result.bias_corrections
    assert [b.layer for b in chained.state.result.bias_corrections] == ["conv"]


def test_compress_model_weights_stores_fake_quantized_weights_as_int8_with_the_same_outputs():
    engine = IEEngine({"device": "CPU"}, Arrays())
    algorithms = [{"name": "DefaultQuantization"}]
    kept = create_pipeline(algorithms, engine, keep_uncompressed_weights=True).run(_model())
    assert not any(op.get_element_type() == ov.Type.i8 for op in kept.model.get_ops() if op.get_type_name() == "Constant")
    x = Arrays().data[0][None]
    before = ov.Core().compile_model(kept.model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0]
    assert compress_model_weights(kept) is None
    ops = kept.model.get_ops()
    assert sum(op.get_type_name() == "FakeQuantize" for op in ops) == 1  # the activation one stays
    assert any(op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8 for op in ops)
    after = ov.Core().compile_model(kept.model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0]
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)


def test_save_model_returns_the_originals_list_and_keeps_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    paths = save_model(_model(), tmp_path, "q")
    assert paths == [{"model": str(tmp_path / "q.xml"), "weights": str(tmp_path / "q.bin")}]
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "q.bin", "q.xml"]  # no temporary left


def test_load_model_reads_paths_and_defaults_the_weights(tmp_path):
    xml, _ = models.save_ir(models.conv_bias_relu(), tmp_path, "m")
    model = load_model({"model_name": "m", "model": xml})
    assert model.name == "m" and not model.is_cascade and model.models[0]["model"].get_parameters()
    one = load_model({"model_name": "c", "cascade": [{"name": "a", "model": xml}]})
    assert not one.is_cascade and one.name == "c"  # a one-entry cascade is a plain model (tests/api/test_cascade.py)


def test_simplified_engine_reads_bare_data():
    class Bare(Arrays):
        def __getitem__(self, i):
            return self.data[i]

    model = create_pipeline([{"name": "DefaultQuantization"}], SimplifiedEngine({}, Bare())).run(_model())
    assert any(op.get_type_name() == "FakeQuantize" for op in model.model.get_ops())


def test_accuracy_aware_quantization_through_the_api_holds_the_drop():
    engine = IEEngine({"device": "CPU"}, Arrays(), Echo())
    pipeline = create_pipeline([{"name": "AccuracyAwareQuantization", "params": {"maximal_drop": 0.0}}], engine)
    fp = pipeline.evaluate(_model())["echo"]
    model = pipeline.run(_model())
    aa = pipeline.state.accuracy_aware
    assert aa.target_met == (fp - pipeline.evaluate(model)["echo"] <= 1e-12)
    assert aa.report["baseline"]["echo"] == pytest.approx(fp)


def test_running_again_on_a_quantized_model_says_its_layers_are_already_quantized(caplog):
    engine = IEEngine({"device": "CPU"}, Arrays())
    model = create_pipeline([{"name": "DefaultQuantization"}], engine).run(_model())
    with caplog.at_level("WARNING", logger="pot"):
        create_pipeline([{"name": "DefaultQuantization"}], engine).run(model)
    assert "no new layer was quantized: every quantizable layer outside the ignored scope is already quantized" \
        in caplog.text
    assert sum(op.get_type_name() == "FakeQuantize" for op in model.model.get_ops()) == 1  # not quantized twice
