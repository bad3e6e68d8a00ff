"""The ``pot`` command's engine for a cascade (``model.cascade``): an Accuracy Checker custom evaluator.

A cascade runs only through an engine that runs its stages, as in the original POT (whose
``IEEngine`` refused cascades, and whose CLI quantized MTCNN through Accuracy Checker's ``mtcnn``
custom evaluator, ``configs/examples/accuracy_checker/mtcnn.yaml``). The POT config names an
Accuracy Checker YAML (``engine.config``) whose top level is ``evaluations:``, each entry being
``{name, module, module_config, python_path?}`` as Accuracy Checker's custom evaluators:

* ``module``: ``package.module.Class``, a :class:`pot_cli.api.Engine` subclass with a classmethod
  ``from_evaluation_config(module_config, base_dir, device)`` returning the engine (data loader and
  metric included), imported with ``python_path`` (relative to the YAML) on ``sys.path``; the
  MTCNN one is ``examples/face_detection/mtcnn_engine.py`` (``mtcnn_engine.MTCNNEngine``);
* ``module_config``: that class's settings (``datasets``, ``launchers``, ``network_info`` ...);
  relative paths in it resolve against the YAML's folder (or ``--data-dir`` / ``DATA_DIR`` when set).

Accuracy Checker's own evaluator classes (``custom_evaluators.mtcnn_evaluator.MTCNNEvaluator``) are
not shipped: such a ``module`` is refused with a message naming the class to use instead.
"""
from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path

from pot_cli.config.model import EngineConfig
from pot_cli.errors import ConfigError, NotSupportedError

log = logging.getLogger("pot")

#: the evaluator this project ships, by the original's evaluator name
KNOWN = {"mtcnn": ("mtcnn_engine.MTCNNEngine", "examples/face_detection")}


def _import_class(dotted: str, python_path: Path | None, key: str):
    module_name, _, class_name = dotted.rpartition(".")
    if not module_name:
        raise ConfigError(f"{key}: {dotted!r}; expected module.Class")
    added = False
    if python_path is not None and str(python_path) not in sys.path:
        sys.path.insert(0, str(python_path))
        added = True
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise NotSupportedError(f"{key}: cannot import {module_name!r} ({e}); expected a module.Class importable "
                                f"from python_path, e.g. module: {KNOWN['mtcnn'][0]} with python_path: "
                                f"<path of {KNOWN['mtcnn'][1]}> (Accuracy Checker's own custom evaluators are "
                                "not shipped)") from None
    finally:
        if added:
            sys.path.remove(str(python_path))
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ConfigError(f"{key}: module {module_name!r} has no {class_name!r}")
    return cls


def create_cascade_engine(engine: EngineConfig, config_source: str, model_names: list[str], roots=None):
    """The engine of a cascade from the Accuracy Checker YAML of ``engine.config`` (see the module docstring).

    :param engine: the validated engine section (type ``accuracy_checker``, with ``config``).
    :param config_source: the POT config file (messages).
    :param model_names: the cascade's sub-model names (for messages).
    :param roots: Accuracy Checker path roots (``data_dir`` replaces the YAML's folder as the base of
        relative paths when set).
    :return: the engine (an :class:`pot_cli.api.Engine` whose ``predict`` runs the stages).
    :raises ConfigError: malformed YAML (with line and column), missing keys, a class that is no engine.
    :raises NotSupportedError: a YAML without ``evaluations``, or a module that cannot be imported.
    """
    from pot_cli.api import Engine
    from pot_cli.engines.accuracy_checker import load_ac_document

    cascade = f"a cascade ({', '.join(model_names)})"
    if engine.ac_config is None:
        raise NotSupportedError(f"{config_source}: engine: {cascade} needs an Accuracy Checker YAML (engine.config) "
                                "with an 'evaluations' entry naming an engine that runs the stages (custom evaluator, "
                                "e.g. configs/examples/mtcnn.yaml)")
    doc, source, base = load_ac_document(engine, config_source)
    evaluations = doc.get("evaluations")
    if not isinstance(evaluations, list) or not evaluations:
        raise NotSupportedError(f"{source}: {cascade} runs through a custom evaluator; expected 'evaluations: "
                                "[{name, module, module_config}]' (Accuracy Checker 'models' entries run one model)")
    if len(evaluations) > 1:
        log.warning("%s: evaluations: %d entries; the first one ('%s') is used", source, len(evaluations),
                    evaluations[0].get("name"))
    entry = evaluations[0]
    key = f"{source}: evaluations[0]"
    if not isinstance(entry, dict) or not entry.get("module"):
        raise ConfigError(f"{key}.module: missing; expected module.Class of an engine, e.g. {KNOWN['mtcnn'][0]}")
    python_path = Path(base, entry["python_path"]).resolve() if entry.get("python_path") else None
    cls = _import_class(str(entry["module"]), python_path, f"{key}.module")
    if not (isinstance(cls, type) and issubclass(cls, Engine) and hasattr(cls, "from_evaluation_config")):
        raise ConfigError(f"{key}.module: {entry['module']!r} is not an Engine with from_evaluation_config(); "
                          f"expected e.g. {KNOWN['mtcnn'][0]}")
    module_config = entry.get("module_config") or {}
    data_base = Path(roots.data_dir) if roots is not None and getattr(roots, "data_dir", None) else base
    device = engine.device or "CPU"
    try:
        result = cls.from_evaluation_config(module_config, data_base, device)
    except ConfigError as e:
        raise ConfigError(f"{key}.{e}") from None
    log.info("Cascade engine: %s from %s (evaluation '%s'), %d samples", type(result).__name__, source,
             entry.get("name"), len(result.data_loader))
    return result
