"""``ACEngine``: the Accuracy Checker engine for Python scripts, as the original POT's
``openvino.tools.pot.engines.ac_engine.ACEngine``.

A script gives the engine section of a POT config (the Accuracy Checker YAML and the device)
instead of a ``DataLoader`` and a ``Metric``::

    engine = ACEngine({"config": "ssd.yml", "device": "CPU"})
    pipeline = create_pipeline([{"name": "AccuracyAwareQuantization", "params": {...}}], engine)
    compressed = pipeline.run(load_model({"model_name": "ssd", "model": "ssd.xml", "weights": "ssd.bin"}))

The YAML is read as by ``pot --ac-config`` (definitions file, ``DATA_DIR``, launcher selection,
detection and segmentation types: :mod:`pot_cli.engines.accuracy_checker`); its datasets are
bound to each model given to :meth:`set_model`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from pot_cli.config.model import EngineConfig
from pot_cli.engines.ac.config_reader import Roots
from pot_cli.engines.accuracy_checker import create_ac_engine
from pot_cli.engines.cli_engines import AccuracyCheckerEngine
from pot_cli.errors import ConfigError

#: keys of the engine config read here (besides inline Accuracy Checker content)
_KEYS = ("config", "device", "stat_requests_number", "eval_requests_number", "layout", "type", "definitions",
         "data_dir", "annotations_dir")
_INLINE = ("models", "name", "launchers", "datasets")


class ACEngine(AccuracyCheckerEngine):
    """An engine that reads an Accuracy Checker config: calibration on its optimization dataset,
    metrics (classification, detection, segmentation) on its evaluation dataset.

    :param config: the engine section as a dict: ``config`` (path of the Accuracy Checker YAML)
        or inline ``models``/``datasets``/``launchers``; ``device`` (default ``CPU``);
        ``stat_requests_number``, ``eval_requests_number``; ``layout``; our additions
        ``definitions``, ``data_dir``, ``annotations_dir`` (default: ``DEFINITIONS_FILE``,
        ``DATA_DIR``, ``ANNOTATIONS_DIR`` from the environment).
    :raises ConfigError: an unknown key, neither ``config`` nor inline content, or any problem of
        the Accuracy Checker config (all at once).
    :raises DatasetError: unreadable annotation files, no samples.
    """

    def __init__(self, config: Mapping[str, Any]):
        config = dict(config or {})
        unknown = [k for k in config if k not in _KEYS + _INLINE]
        if unknown:
            raise ConfigError(f"ACEngine config: {', '.join(map(str, unknown))}: unknown key(s); expected one of: "
                              f"{', '.join(_KEYS + _INLINE)}")
        inline = {k: config[k] for k in _INLINE if k in config}
        if not config.get("config") and not inline:
            raise ConfigError("ACEngine config: expected 'config' (an Accuracy Checker YAML) or inline 'models'")
        section = EngineConfig(type="accuracy_checker",
                               ac_config=Path(config["config"]).resolve() if config.get("config") else None,
                               ac_inline=inline or None, device=str(config.get("device") or "CPU"),
                               layout=config.get("layout"),
                               stat_requests_number=config.get("stat_requests_number"),
                               eval_requests_number=config.get("eval_requests_number"))
        env = Roots.from_env()
        get = (lambda k: Path(config[k]).expanduser() if config.get(k) else None)
        roots = Roots(get("definitions") or env.definitions, get("data_dir") or env.data_dir,
                      get("annotations_dir") or env.annotations_dir)
        super().__init__(section, create_ac_engine(section, str(Path.cwd() / "<api>"), roots))
        self._section = section
        self._bound_to = None

    def set_model(self, model) -> None:
        """Make ``model`` the one ``predict`` runs, binding the datasets to its inputs (once per
        input signature)."""
        super().set_model(model)
        inner = model.model if hasattr(model, "model") else model
        signature = tuple((p.get_any_name(), str(p.get_partial_shape()), str(p.get_element_type()))
                          for p in inner.inputs)
        if signature != self._bound_to:
            self.ac.bind(inner, self._section.layout)
            self._bound_to = signature
