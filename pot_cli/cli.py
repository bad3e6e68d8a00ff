"""The ``pot`` command (Click), with the original POT's flags and rules.

Exit codes: 0 success; 1 runtime failure (model, data, inference, output); 2 usage or
configuration error, or a feature not supported yet; 3 AccuracyAwareQuantization could not reach
``maximal_drop`` (the best model found is written); 130 interrupted (Ctrl-C).
This is the only place that catches :class:`pot_cli.errors.PotError`.
"""
from __future__ import annotations

import logging
import signal
import sys
import threading
import traceback
from pathlib import Path

import click

from pot_cli import __version__
from pot_cli.errors import PotError, UsageError

log = logging.getLogger("pot")

EXIT_TARGET_NOT_MET = 3
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class Terminated(KeyboardInterrupt):
    """SIGTERM (a CI timeout, ``kill``): handled like Ctrl-C, so no partial output is left."""


class _Signals:
    """SIGINT and SIGTERM while ``pot`` runs: each raises :class:`KeyboardInterrupt` (or
    :class:`Terminated`) and is remembered in :attr:`received`.

    A signal can arrive while Python code runs under an OpenVINO or pybind11 call (a data
    loader's ``__str__``, a request callback); the interrupt is then re-raised as an ordinary
    error (``SystemError: ... returned a result with an exception set``) and, wrapped by the
    engine, would read as an inference failure with exit code 1. Remembering the signal lets the
    session report it as what it was: exit 130 or 143, whatever exception carried it out.
    """

    def __init__(self):
        self.received: int | None = None
        self.previous: dict[int, object] = {}

    def install(self) -> None:
        """Install the handlers (only in the main thread, where signals can be handled)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            self.previous[signum] = signal.signal(signum, self._raise)

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous.clear()

    def _raise(self, signum, frame):
        self.received = signum
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
TARGET_DEVICES = ("ANY", "CPU", "CPU_SPR", "GPU", "NPU", "VPU", "GNA", "GNA3", "GNA3.5")


def _setup_console_logging(level: str) -> None:
    log.setLevel(logging.DEBUG)
    log.propagate = False
    for h in list(log.handlers):
        log.removeHandler(h)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(getattr(logging, level))
    console.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    log.addHandler(console)


class _LogFileHandler(logging.FileHandler):
    """``log.txt``: when it cannot be written (full disk), say so once on the console and go on
    without it, instead of printing a traceback per record."""

    failed = False

    def _fail(self, error) -> None:
        if not self.failed:
            self.failed = True
            sys.stderr.write(f"WARNING: {self.baseFilename}: cannot write the log file "
                             f"({getattr(error, 'strerror', None) or error}); logging to the console only\n")

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        self._fail(sys.exc_info()[1])

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)

    def flush(self) -> None:
        try:
            super().flush()
        except OSError as e:
            self._fail(e)

    def close(self) -> None:
        try:
            super().close()
        except OSError:
            pass


def _add_file_log(path: Path, level: str) -> logging.Handler:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = _LogFileHandler(path, encoding="utf-8")
    handler.setLevel(min(logging.INFO, getattr(logging, level)))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s: %(message)s"))
    log.addHandler(handler)
    return handler


def build_raw_config(config: str | None, quantize: str | None, preset: str | None, model: str | None,
                     weights: str | None, name: str | None, engine: str | None, data_source: str | None,
                     target_device: str | None, ac_config: str | None = None,
                     max_drop: float | None = None, layout: str | None = None,
                     data_free: dict | None = None) -> tuple[dict, str, Path | None]:
    """Turn the flags into a raw POT config dict (flags override the config file's values).

    ``data_free``: the flags ``--shape`` (``"1,3,224,224"``), ``--data-type`` and
    ``--[no-]generate-data`` given (None values are left out); they set ``engine.shape``,
    ``engine.data_type`` and ``engine.generate_data``.

    ``--ac-config`` selects the accuracy_checker engine with that file (replacing the config's
    engine data); ``--max-drop`` sets ``maximal_drop`` of AccuracyAwareQuantization;
    ``--layout`` sets ``engine.layout``: ``NCHW`` (a single-input model) or ``name:LAYOUT`` pairs
    separated by commas, e.g. ``image:NHWC,mask:NC``.

    :return: ``(raw, source, config_path)``; ``source`` names where keys came from in messages.
    :raises UsageError: on a forbidden combination of flags.
    :raises ConfigError: when the config file cannot be read.
    """
    from pot_cli.config import load_config_file

    if config and quantize:
        raise UsageError("-c/--config and -q/--quantize are mutually exclusive; use one of them")
    if not config and not quantize:
        raise UsageError("either -c/--config or -q/--quantize is required")
    if config:
        path = Path(config)
        raw = load_config_file(path)
        if not isinstance(raw, dict):
            from pot_cli.errors import ConfigError
            raise ConfigError(f"{path}: the top level must be a mapping with 'model', 'engine' and 'compression'")
        source = str(path)
    else:
        path = None
        source = "<command line>"
        if not model:
            raise UsageError("-q/--quantize needs -m/--model")
        if quantize == "default" and not ac_config and not data_source and engine != "data_free":
            raise UsageError("-q default needs --data-source DIR (simplified engine), --ac-config FILE "
                             "(accuracy_checker engine) or --engine data_free")
        if quantize == "accuracy_aware" and not ac_config:
            raise UsageError("-q accuracy_aware needs --ac-config FILE (an Accuracy Checker config with the "
                             "annotated dataset and its metrics)")
        if max_drop is not None and quantize != "accuracy_aware":
            raise UsageError("--max-drop applies only to -q accuracy_aware")
        algo = "DefaultQuantization" if quantize == "default" else "AccuracyAwareQuantization"
        raw = {"model": {}, "engine": {"type": engine or ("simplified" if data_source and not ac_config
                                                          else "accuracy_checker")},
               "compression": {"algorithms": [{"name": algo, "params": {"preset": preset or "performance",
                                                                        "stat_subset_size": 300}}]}}
    raw.setdefault("model", {})
    raw.setdefault("engine", {})
    raw.setdefault("compression", {})
    if model:
        raw["model"]["model"] = model
        if not weights and path is not None:
            raw["model"].pop("weights", None)
    if weights:
        raw["model"]["weights"] = weights
    if name:
        raw["model"]["model_name"] = name
    if data_source:
        raw["engine"]["data_source"] = data_source
        raw["engine"].setdefault("type", "simplified")
    if engine:
        raw["engine"]["type"] = engine
    if layout:
        pairs = [p.strip() for p in layout.split(",") if p.strip()]
        if all(":" in p for p in pairs):
            raw["engine"]["layout"] = {k.strip(): v.strip() for k, v in (p.rsplit(":", 1) for p in pairs)}
        elif len(pairs) == 1:
            raw["engine"]["layout"] = pairs[0]
        else:
            raise UsageError(f"--layout {layout}: expected one layout (NCHW) or name:LAYOUT pairs separated by "
                             "commas (image:NHWC,mask:NC)")
    if ac_config:
        if engine == "simplified":
            raise UsageError("--ac-config needs the accuracy_checker engine; drop --engine simplified")
        if data_source:
            raise UsageError("--ac-config and --data-source are exclusive: the Accuracy Checker config "
                             "names the data")
        for key in ("data_source", "name", "models", "datasets", "launchers"):
            raw["engine"].pop(key, None)
        raw["engine"].update(type="accuracy_checker", config=ac_config)
    if max_drop is not None:
        algos = raw["compression"].get("algorithms")
        aa = [a for a in algos if isinstance(a, dict) and a.get("name") == "AccuracyAwareQuantization"] \
            if isinstance(algos, list) else []
        if not aa:
            raise UsageError(f"{source}: --max-drop applies only to AccuracyAwareQuantization; the config has "
                             "no such algorithm")
        for a in aa:
            a.setdefault("params", {})["maximal_drop"] = max_drop
    for key, value in (data_free or {}).items():
        if value is None:
            continue
        if key == "shape":
            try:
                value = [int(d) for d in str(value).strip().strip("[]()").split(",")]
            except ValueError:
                raise UsageError(f"--shape {value}: expected comma-separated integers, for example 1,3,224,224") \
                    from None
        raw["engine"][key] = value
    if target_device:
        raw["compression"]["target_device"] = target_device
    if preset and isinstance(raw["compression"].get("algorithms"), list):
        for algo in raw["compression"]["algorithms"]:
            if isinstance(algo, dict):
                algo.setdefault("params", {})["preset"] = preset
    return raw, source, path


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--config", type=click.Path(dir_okay=False), help="Path to a POT config file (.json or .yml/.yaml).")
@click.option("-q", "--quantize", type=click.Choice(["default", "accuracy_aware"]),
              help="Quantize with DefaultQuantization or AccuracyAwareQuantization (no config file).")
@click.option("--preset", type=click.Choice(["performance", "mixed"]), help="Quantization preset (default performance).")
@click.option("-m", "--model", type=click.Path(dir_okay=False), help="Path to the model .xml.")
@click.option("-w", "--weights", type=click.Path(dir_okay=False), help="Path to the weights .bin (default: beside the .xml).")
@click.option("-n", "--name", help="Model name used in output names (default: the .xml stem).")
@click.option("--engine", type=click.Choice(["simplified", "accuracy_checker", "data_free"]),
              help="Engine type; -q default with --data-source means simplified; data_free calibrates on "
                   "synthetic images cached in --data-source.")
@click.option("--data-source", help="Calibration data: a folder, a glob pattern or a .txt list of files.")
@click.option("--layout", help="Input layout when the IR and the shape do not tell it: NCHW, NHWC, ... or "
                               "name:LAYOUT pairs, e.g. image:NHWC,mask:NC (engine.layout).")
@click.option("--ac-config", type=click.Path(dir_okay=False),
              help="Accuracy Checker config (.yml): annotated datasets and metrics (accuracy_checker engine).")
@click.option("--max-drop", type=click.FloatRange(min=0.0),
              help="maximal_drop of AccuracyAwareQuantization (e.g. 0.01: one point of accuracy).")
@click.option("-e", "--evaluate", is_flag=True,
              help="Evaluate the output model on the whole validation set (accuracy_checker engine).")
@click.option("--target-device", type=click.Choice(TARGET_DEVICES, case_sensitive=False),
              help="Target device (default ANY).")
@click.option("--output-dir", default="./results", show_default=True, help="Folder for the results.")
@click.option("-d", "--direct-dump", is_flag=True, help="Write to <output-dir>/optimized without run sub-folders.")
@click.option("--log-level", type=click.Choice(LOG_LEVELS), default="INFO", show_default=True,
              help="Console log level; DEBUG also shows tracebacks.")
@click.option("--progress-bar", is_flag=True, help="Show a progress bar for statistics collection.")
@click.option("--stream-output", is_flag=True, help="Print progress as separate lines (for log collectors).")
@click.option("--keep-uncompressed-weights", is_flag=True,
              help="Keep float weights behind FakeQuantize instead of INT8 constants.")
@click.option("--allow-quantized", is_flag=True,
              help="Accept a model that already holds FakeQuantize or INT8 weights: layers already "
                   "quantized are kept as they are, the others are quantized.")
@click.option("--definitions", type=click.Path(dir_okay=False),
              help="Accuracy Checker dataset definitions file for datasets named in --ac-config (default: the "
                   "DEFINITIONS_FILE environment variable).")
@click.option("--data-dir", type=click.Path(file_okay=False),
              help="Root of relative data paths in the Accuracy Checker config (default: DATA_DIR).")
@click.option("--annotations-dir", type=click.Path(file_okay=False),
              help="Root of relative annotation paths in the Accuracy Checker config (default: ANNOTATIONS_DIR).")
@click.option("--shape", help="Input shape to calibrate with, e.g. 1,3,224,224 (engine.shape; needed by data_free "
                              "for a dynamic height or width).")
@click.option("--data-type", help="data_free: kind of data to generate (engine.data_type; only image).")
@click.option("--generate-data/--no-generate-data", default=None,
              help="data_free: generate synthetic images into --data-source when it holds none (default), or "
                   "use only the images already there (engine.generate_data).")
@click.option("--analyze", type=click.FloatRange(min=0.0, max=1.0, min_open=True), is_flag=False, flag_value=0.99,
              default=None, metavar="[TARGET]",
              help="After quantization, rank the quantized layers by the harm they do to the output (SQNR, cosine "
                   "against FP32 on a few calibration samples) and recommend the fewest to keep in float for output "
                   "cosine TARGET (default 0.99): report.json 'analysis' and <model_name>_recommended.json.")
@click.version_option(__version__, "--version", prog_name="pot")
def main(config, quantize, preset, model, weights, name, engine, data_source, ac_config, max_drop, evaluate,
         target_device, output_dir, direct_dump, log_level, progress_bar, stream_output, keep_uncompressed_weights,
         allow_quantized=False, layout=None, definitions=None, data_dir=None, annotations_dir=None, shape=None,
         data_type=None, generate_data=None, analyze=None):
    """Post-training INT8 quantization of OpenVINO IR models (POT-compatible)."""
    from pot_cli.client import create_model_and_pipeline, finish

    with _session(log_level) as session:
        cfg, options, run_dir = _prepare(config, quantize, preset, model, weights, name, engine, data_source,
                                         ac_config, max_drop, evaluate, target_device, output_dir, direct_dump,
                                         log_level, progress_bar, stream_output, keep_uncompressed_weights,
                                         allow_quantized, layout, (definitions, data_dir, annotations_dir),
                                         {"shape": shape, "data_type": data_type, "generate_data": generate_data},
                                         analyze)
        model, pipeline = create_model_and_pipeline(cfg, options)
        pipeline.output_dir = run_dir
        model = pipeline.run(model)
        session.code = _report(finish(cfg, options, run_dir, pipeline, model))
    sys.exit(session.code)


class _session:
    """The command's frame: console logging (restored on exit, for in-process callers), SIGINT
    and SIGTERM reported as such (see :class:`_Signals`), and every failure turned into one log line and an exit code in
    :attr:`code` (a traceback only with ``--log-level DEBUG``)."""

    def __init__(self, log_level: str):
        self.log_level = log_level
        self.code = 0

    def __enter__(self) -> "_session":
        self.saved = (log.level, log.propagate, list(log.handlers))
        _setup_console_logging(self.log_level)
        self.signals = _Signals()
        self.signals.install()
        return self

    def __exit__(self, kind, error, tb) -> bool:
        if error is not None and self.signals.received is not None and not isinstance(error, KeyboardInterrupt):
            if self.log_level == "DEBUG":  # the signal surfaced wrapped in another error
                traceback.print_exception(kind, error, tb)
            error = Terminated() if self.signals.received == signal.SIGTERM else KeyboardInterrupt()
        if isinstance(error, PotError):
            if self.log_level == "DEBUG":
                traceback.print_exception(kind, error, tb)
            log.error(error.format_message())
            self.code = error.exit_code
        elif isinstance(error, KeyboardInterrupt):
            log.error("%s; no output written", "terminated" if isinstance(error, Terminated) else "interrupted")
            self.code = EXIT_TERMINATED if isinstance(error, Terminated) else EXIT_INTERRUPTED
        elif isinstance(error, Exception):  # a bug: say so in one line, trace only on request
            if self.log_level == "DEBUG":
                traceback.print_exception(kind, error, tb)
            log.error("internal error: %s: %s (rerun with --log-level DEBUG for the traceback)", kind.__name__, error)
            self.code = 1
        self.signals.restore()
        for h in list(log.handlers):
            h.flush()
            if isinstance(h, logging.FileHandler):
                h.close()
            log.removeHandler(h)
        log.setLevel(self.saved[0])
        log.propagate = self.saved[1]
        for h in self.saved[2]:
            log.addHandler(h)
        return error is None or isinstance(error, Exception) or isinstance(error, KeyboardInterrupt)


def _prepare(config, quantize, preset, model, weights, name, engine, data_source, ac_config, max_drop, evaluate,
             target_device, output_dir, direct_dump, log_level, progress_bar, stream_output,
             keep_uncompressed_weights, allow_quantized=False, layout=None, roots=(None, None, None),
             data_free=None, analyze=None):
    """The validated config, the run options and the run folder (with its ``log.txt`` open).

    ``data_free``: ``--shape``, ``--data-type``, ``--[no-]generate-data`` (see :func:`build_raw_config`).

    ``analyze``: ``--analyze [TARGET]``, the target output cosine; sets ``compression.analyze``.

    ``roots``: ``(--definitions, --data-dir, --annotations-dir)``; each unset one comes from its
    environment variable (``DEFINITIONS_FILE``, ``DATA_DIR``, ``ANNOTATIONS_DIR``).

    :raises PotError: bad flags or config, an output folder that cannot be written.
    """
    if weights and not model and not config:
        raise UsageError("-w/--weights needs -m/--model")

    from pot_cli.client import RunOptions, create_run_dir
    from pot_cli.config import validate_config
    from pot_cli.graph.model import check_output_dir

    raw, source, _ = build_raw_config(config, quantize, preset, model, weights, name, engine, data_source,
                                      target_device.upper() if target_device else None, ac_config, max_drop,
                                      layout, data_free)
    if analyze is not None:
        raw["compression"]["analyze"] = analyze
    cfg = validate_config(raw, source=source)
    if evaluate and cfg.engine.type != "accuracy_checker":
        raise UsageError(f"{source}: -e/--evaluate needs annotated data and metrics: the accuracy_checker engine "
                         "(--ac-config FILE, or engine.config / engine.datasets in the config)")
    from pot_cli.engines.ac.config_reader import Roots

    env = Roots.from_env()
    flags = [Path(v) if v else None for v in roots]
    if any(flags) and cfg.engine.type != "accuracy_checker":
        raise UsageError("--definitions, --data-dir and --annotations-dir apply to the accuracy_checker engine "
                         "(--ac-config FILE)")
    if flags[0] is not None and not flags[0].is_file():
        raise UsageError(f"--definitions {flags[0]}: no such file; expected the dataset definitions YAML")
    ac_roots = Roots(flags[0] or env.definitions, flags[1] or env.data_dir, flags[2] or env.annotations_dir)
    options = RunOptions(output_dir=Path(output_dir), direct_dump=direct_dump, allow_quantized=allow_quantized,
                         keep_uncompressed_weights=keep_uncompressed_weights, progress_bar=progress_bar,
                         stream_output=stream_output, evaluate=evaluate, ac_roots=ac_roots)
    algo_name = cfg.compression.algorithms[0].name if cfg.compression.algorithms else "DefaultQuantization"
    check_output_dir(options.output_dir)
    run_dir = create_run_dir(options, cfg.model.model_name, algo_name)
    try:
        _add_file_log(run_dir / "log.txt", log_level)
    except OSError as e:
        from pot_cli.errors import OutputError
        raise OutputError(f"{run_dir}: cannot create the output folder: {e.strerror or e}") from e
    what = (f"the cascade '{cfg.model.model_name}' ({', '.join(c.name for c in cfg.model.cascade)})"
            if cfg.model.cascade else str(cfg.model.model))
    log.info("pot %s: quantizing %s (target_device %s)", __version__, what, cfg.compression.target_device)
    return cfg, options, run_dir


def _report(result) -> int:
    """Log a short summary (what was quantized, what stayed in float and why, where the reports
    are), print the evaluation and the output path; the exit code (3: the accuracy target was not met)."""
    from pot_cli.report.precision import console_summary

    for line in console_summary(result.report, result.report_path):
        log.info("%s", line)
    if result.evaluation is not None:
        for metric, value in result.evaluation["metrics"].items():
            click.echo(f"{metric}: {value:.6f}")
    for xml in getattr(result, "xmls", None) or [result.xml]:  # a cascade: one .xml per sub-model
        click.echo(str(xml))
    if not result.target_met:
        log.warning("the accuracy target was not met; the best model found was written (exit code %d)",
                    EXIT_TARGET_NOT_MET)
        return EXIT_TARGET_NOT_MET
    return 0
