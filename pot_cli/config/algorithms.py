"""Validation of an algorithm list given through the API (``create_pipeline``).

The same JSON Schema and the same builder as a whole config file, so a misspelt key or a bad
value gives the message the CLI gives (``<source>: compression.algorithms[0].params.preset: ...``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

from pot_cli.config.loader import _Builder, raise_problems, schema_problems
from pot_cli.config.model import AlgorithmConfig, EngineConfig
from pot_cli.errors import ConfigError


def _plain(value: Any) -> Any:
    """A dict/AttrDict/list tree as plain JSON types (``Path`` values as strings)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def validate_algorithms(algorithms: Iterable[Any], source: str = "create_pipeline") -> tuple[AlgorithmConfig, ...]:
    """Typed algorithm configs from ``[{'name': ..., 'params': {...}}, ...]``.

    Keys of an entry other than ``name`` and ``params`` are ignored, as the original's
    ``create_pipeline`` ignored them. ``target_device`` defaults to ``ANY``.

    :param algorithms: dicts (or :class:`~pot_cli.api.AttrDict`), or already typed
        :class:`AlgorithmConfig` (returned as they are).
    :param source: prefixes every message.
    :return: the typed configs, in order.
    :raises ConfigError: every problem at once, one line each.
    """
    items = list(algorithms)
    if all(isinstance(a, AlgorithmConfig) for a in items):
        return tuple(items)
    raw = []
    for k, a in enumerate(items):
        if not isinstance(a, Mapping):
            raise ConfigError(f"{source}: algorithms[{k}]: a {type(a).__name__}; expected "
                              "{'name': 'DefaultQuantization', 'params': {...}}")
        entry = {"name": a.get("name")}
        if a.get("params") is not None:
            entry["params"] = _plain(a["params"])
        raw.append(entry)
    compression = {"algorithms": raw}
    document = {"model": {"model_name": "model", "model": "model.xml", "weights": "model.bin"},
                "engine": {"type": "accuracy_checker"}, "compression": compression}
    raise_problems([p for p in schema_problems(document, "pot_config.schema.json", source)
                    if ": compression" in p])
    builder = _Builder(source, Path.cwd())
    engine = EngineConfig(type="accuracy_checker")
    configs = tuple(builder.algorithm(a, k, compression, engine) for k, a in enumerate(raw))
    raise_problems(builder.problems)
    return configs
