"""The ``pot`` command as a client of the API: model, engine, ``create_pipeline``, save, report.

``pot -c config.json``: :func:`create_model_and_pipeline` (:func:`pot_cli.api.load_model`, an
engine for ``engine.type`` from :mod:`pot_cli.engines.cli_engines`, ``create_pipeline(
config.compression.algorithms, engine)``), then ``pipeline.run(model)`` in the command itself,
then :func:`finish` (``-e``, the IR and ``report.json`` written together, atomically).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pot_cli import __version__
from pot_cli.algorithms.registry import create_algorithms
from pot_cli.api.model import CompressedModel, load_model
from pot_cli.config import PotConfig
from pot_cli.errors import UsageError
from pot_cli.graph.model import save_model_atomic
from pot_cli.pipeline import Pipeline, check_cascade, create_pipeline
from pot_cli.report.html import report_files as report_texts
from pot_cli.report.precision import add_model_sections
from pot_cli.report.report import build_run_report

log = logging.getLogger("pot")


@dataclass(frozen=True)
class RunOptions:
    """Command-line options that are not part of the POT config.

    :param output_dir: ``--output-dir``.
    :param direct_dump: ``-d``: write into ``output_dir/optimized`` without the run sub-folders.
    :param keep_uncompressed_weights: keep float weights behind FakeQuantize.
    :param progress_bar: show a tqdm bar for statistics collection.
    :param stream_output: print progress as separate lines (for log collectors).
    :param evaluate: ``-e``: evaluate the output model on the whole evaluation dataset.
    :param allow_quantized: ``--allow-quantized``: accept a model that is already (partly)
        quantized; its quantized layers are left as they are.
    :param ac_roots: the Accuracy Checker definitions file and path roots
        (:class:`~pot_cli.engines.ac.config_reader.Roots`); None: from the environment.
    """

    output_dir: Path = Path("results")
    direct_dump: bool = False
    keep_uncompressed_weights: bool = False
    progress_bar: bool = False
    stream_output: bool = False
    evaluate: bool = False
    allow_quantized: bool = False
    ac_roots: Any = None


@dataclass
class RunResult:
    """Paths written and the report dictionary.

    :param target_met: False when AccuracyAwareQuantization could not reach ``maximal_drop``
        (the best model found was written).
    :param evaluation: ``-e``: the ``evaluation`` section of the report (``metrics`` etc.).
    """

    xml: Path
    bin: Path
    report_path: Path
    report: dict = field(default_factory=dict)
    target_met: bool = True
    evaluation: dict | None = None
    #: a cascade: every sub-model's ``.xml`` (``xml`` is the first)
    xmls: list[Path] = field(default_factory=list)


def create_run_dir(options: RunOptions, model_name: str, algorithm: str, now: datetime | None = None) -> Path:
    """The folder of this run: ``<output_dir>/<model>_<algorithm>/<YYYY-MM-DD_HH-MM-SS>`` as the
    original POT, or ``<output_dir>`` with ``-d``. Not created here.

    A second run in the same second gets a ``_1``, ``_2``... suffix instead of reusing the folder.
    """
    if options.direct_dump:
        return Path(options.output_dir)
    stamp = (now or datetime.now()).strftime("%Y-%m-%d_%H-%M-%S")
    base = Path(options.output_dir) / f"{model_name}_{algorithm}"
    run = base / stamp
    k = 1
    while run.exists():
        run = base / f"{stamp}_{k}"
        k += 1
    return run


def create_engine(config: PotConfig, model: CompressedModel, options: RunOptions):
    """The engine of ``config.engine`` for ``model``, with the CLI's progress display.

    :raises UsageError: ``-e`` without annotated data.
    :raises ConfigError: the data or Accuracy Checker config does not fit.
    """
    from pot_cli.engines.cli_engines import create_ac_engine, create_data_free_engine, create_simplified_engine

    if model.is_cascade:
        return _create_cascade_engine(config, model, options)
    if config.engine.type != "accuracy_checker":
        if options.evaluate:
            raise UsageError(f"{config.source}: -e/--evaluate needs annotated data and metrics: engine type "
                             "'accuracy_checker' with an Accuracy Checker config (--ac-config or engine.config)")
        if config.engine.type == "data_free":
            from pot_cli.engines.data_free import subset_size

            engine = create_data_free_engine(config.engine, model.model, subset_size(config.compression.algorithms))
        else:
            engine = create_simplified_engine(config.engine, model.model)
    else:
        engine = create_ac_engine(config.engine, config.source, model.model, roots=options.ac_roots)
        accuracy_aware = any(a.name == "AccuracyAwareQuantization" for a in config.compression.algorithms)
        if accuracy_aware or options.evaluate:
            engine.ac.require_metrics("AccuracyAwareQuantization" if accuracy_aware else "-e/--evaluate")
        ac = engine.ac
        log.info("Accuracy Checker engine: %s; calibration on '%s' (%d samples), evaluation on '%s' (%d samples)",
                 ac.source, ac.optimization.name, len(ac.optimization), ac.evaluation.name, len(ac.evaluation))
    engine.progress = "stream" if options.stream_output else "bar" if options.progress_bar else None
    return engine


def _create_cascade_engine(config: PotConfig, model: CompressedModel, options: RunOptions):
    """A cascade's engine: the Accuracy Checker custom evaluator of ``engine.config``
    (:mod:`pot_cli.engines.cascade`)."""
    from pot_cli.engines.cascade import create_cascade_engine

    if config.engine.type != "accuracy_checker":
        raise UsageError(f"{config.source}: engine.type '{config.engine.type}': model '{model.name}' is a cascade "
                         f"({', '.join(model.names)}); expected engine type 'accuracy_checker' with an Accuracy "
                         "Checker YAML whose 'evaluations' entry runs the stages (e.g. configs/examples/mtcnn.yaml)")
    engine = create_cascade_engine(config.engine, config.source, model.names, roots=options.ac_roots)
    engine.progress = "stream" if options.stream_output else "bar" if options.progress_bar else None
    return engine


def _evaluate(pipeline: Pipeline, model: CompressedModel, options: RunOptions) -> dict | None:
    """``-e``: the evaluation section (AccuracyAwareQuantization's own when it evaluated the whole set)."""
    if not options.evaluate:
        return None
    t = time.perf_counter()
    if model.is_cascade:  # the engine runs the stages and has the metric
        metrics = pipeline.evaluate(model)
        if metrics is None:
            raise UsageError("-e/--evaluate: the cascade's engine has no metric")
        section = {"dataset": type(pipeline.engine.data_loader).__name__, "samples": len(pipeline.engine.data_loader),
                   "metrics": {k: float(v) for k, v in metrics.items()}, "time_s": round(time.perf_counter() - t, 3)}
        pipeline.state.timed("evaluation_s", t)
        log.info("Evaluation of the output cascade (%d samples): %s", section["samples"],
                 ", ".join(f"{k} {v:.6g}" for k, v in section["metrics"].items()))
        return section
    state, engine = pipeline.state, pipeline.engine
    aa = state.accuracy_aware
    annotation_free = any(a.params.annotation_free for a in pipeline.algo_seq if a.name == "AccuracyAwareQuantization")
    reused = aa is not None and not annotation_free
    evaluation = aa.evaluation if reused else engine.evaluator().evaluate(model.model)
    dataset = engine.ac.evaluation
    section = {"dataset": dataset.name, "samples": len(evaluation.indices), "metrics": dict(evaluation.metrics),
               "time_s": round(evaluation.time_s, 3), "reused": reused}
    state.timed("evaluation_s", t)
    log.info("Evaluation of the output model on '%s' (%d samples): %s", section["dataset"], section["samples"],
             ", ".join(f"{k} {v:.6g}" for k, v in section["metrics"].items()))
    return section


def create_model_and_pipeline(config: PotConfig, options: RunOptions) -> tuple[CompressedModel, Pipeline]:
    """The model and the pipeline of ``config.compression.algorithms`` on the config's engine.

    The ignored scopes are checked against the model before any data is read.

    :raises PotError: the model cannot be read, the config does not fit it, the data cannot be read.
    """
    t0 = time.perf_counter()
    if config.model.cascade:
        model = load_model({"model_name": config.model.model_name, "allow_quantized": options.allow_quantized,
                            "cascade": [{"name": c.name, "model": c.model, "weights": c.weights}
                                        for c in config.model.cascade]})
    else:
        model = load_model({"model_name": config.model.model_name, "model": config.model.model,
                            "weights": config.model.weights, "allow_quantized": options.allow_quantized})
    load_s = time.perf_counter() - t0
    algos = create_algorithms(config.compression.algorithms, None, config.source)
    if model.is_cascade:
        check_cascade(algos, model)
    else:
        for algo in algos:
            algo.check(model.model)
    t = time.perf_counter()
    engine = create_engine(config, model, options)
    pipeline = create_pipeline(config.compression.algorithms, engine, source=config.source,
                               keep_uncompressed_weights=options.keep_uncompressed_weights)
    pipeline.checked = True
    if config.compression.analyze and not model.is_cascade:  # --analyze / compression.analyze
        from pot_cli.algorithms.analysis import AnalysisSettings

        pipeline.analyze = AnalysisSettings.from_value(config.compression.analyze)
    elif config.compression.analyze:
        log.warning("%s: compression.analyze: not supported on a cascade; skipped", config.source)
    if config.compression.output_check is not None and not model.is_cascade:
        pipeline.check_output = dict(config.compression.output_check)
    elif config.compression.output_check is not None:
        log.warning("%s: compression.output_check: not supported on a cascade; skipped", config.source)
    pipeline.times.update(load_model_s=load_s, data_source_s=time.perf_counter() - t)
    return model, pipeline


def finish(config: PotConfig, options: RunOptions, run_dir: Path, pipeline: Pipeline,
           model: CompressedModel) -> RunResult:
    """After :meth:`Pipeline.run`: ``-e``, then ``<run_dir>/optimized/<model_name>.xml|.bin|report.json``
    written together, atomically.

    :return: the written paths, the report, whether the accuracy target was met and the evaluation.
    :raises PotError: evaluation or output failures.
    """
    evaluation = _evaluate(pipeline, model, options)
    return _save(config, options, run_dir, pipeline, model, evaluation)


def _save(config: PotConfig, options: RunOptions, run_dir: Path, pipeline: Pipeline, model: CompressedModel,
          evaluation: dict | None) -> RunResult:
    """Write the IR and ``report.json`` together, atomically."""
    t = time.perf_counter()
    state = pipeline.state
    target = Path(run_dir) / "optimized"
    name = config.model.model_name
    if model.is_cascade:
        return _save_cascade(config, options, target, pipeline, model, evaluation, t)
    report = build_run_report(config, options, state, target / f"{name}.xml", __version__,
                              skipped=[str(p) for p in getattr(pipeline.engine, "skipped", [])], evaluation=evaluation)
    add_model_sections(report, {name: model.model}, [str(config.model.weights)])
    recommended = _recommended_file(config, report, target / f"{name}_recommended.json")
    state.timed("report_s", t)

    def report_files(save_seconds: float) -> dict[str, str]:
        report["time_s"].update(report_s=state.times["report_s"], save_s=save_seconds,
                                total_s=time.perf_counter() - state.started)
        return {**report_texts(report), **recommended}  # report.json and report.html

    xml = save_model_atomic(model.model, target, name, extra_files=report_files)
    if state.unquantized:
        log.info("Model written unquantized (INT8 was not faster on %s; see report.json speed_check) to %s",
                 config.compression.target_device, xml)
    else:
        log.info("Quantized model written to %s", xml)
    aa = state.accuracy_aware
    return RunResult(xml=xml, bin=xml.with_suffix(".bin"), report_path=target / "report.json", report=report,
                     target_met=aa is None or aa.target_met, evaluation=evaluation)


def _recommended_file(config: PotConfig, report: dict, path: Path) -> dict[str, str]:
    """``--analyze``: ``{<model_name>_recommended.json: the run's config with the recommended
    ignored scope}`` (:func:`pot_cli.algorithms.analysis.recommended_config`), its path recorded in
    ``report['analysis']['recommendation']['config']``; empty without an analysis."""
    import json

    from pot_cli.algorithms.analysis import recommended_config

    section = report.get("analysis")
    if not section:
        return {}
    section["recommendation"]["config"] = str(path.resolve())
    log.info("Recommended config (ignored scope of %d layer group(s) kept in float): %s",
             len(section["recommendation"]["keep_float"]), path.resolve())
    return {path.name: json.dumps(recommended_config(config.raw, section), indent=2) + "\n"}


def _save_cascade(config: PotConfig, options: RunOptions, target: Path, pipeline: Pipeline, model: CompressedModel,
                  evaluation: dict | None, started: float) -> RunResult:
    """Write every sub-model as ``<model_name>_<sub>.xml|.bin`` (the original's names) and
    ``report.json`` (rows per sub-model), together, atomically."""
    from pot_cli.report.report import build_cascade_report

    state, name = pipeline.state, config.model.model_name
    stems = {m["name"]: f"{name}_{m['name']}" for m in model.models}
    report = build_cascade_report(config, options, state, pipeline.states, {n: target / f"{s}.xml" for n, s in stems.items()},
                                  __version__, skipped=[str(p) for p in getattr(pipeline.engine, "skipped", [])],
                                  evaluation=evaluation)
    models = {stems[m["name"]]: m["model"] for m in model.models}
    add_model_sections(report, models, [str(c.weights) for c in config.model.cascade])
    state.timed("report_s", started)

    def report_files(save_seconds: float) -> dict[str, str]:
        report["time_s"].update(report_s=state.times["report_s"], save_s=save_seconds,
                                total_s=time.perf_counter() - state.started)
        return report_texts(report)  # report.json and report.html

    xml = save_model_atomic(models, target, stems[model.names[0]], extra_files=report_files)
    xmls = [target / f"{s}.xml" for s in stems.values()]
    log.info("Quantized cascade written to %s", ", ".join(str(x) for x in xmls))
    return RunResult(xml=xml, bin=xml.with_suffix(".bin"), report_path=target / "report.json", report=report,
                     evaluation=evaluation, xmls=xmls)
