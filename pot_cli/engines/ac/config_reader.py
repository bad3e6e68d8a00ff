"""Reading an Accuracy Checker YAML as Open Model Zoo's quantizer gave it to the original POT.

* **Launcher selection** (Accuracy Checker's ``filter_models`` with POT's filter
  ``target_framework: openvino``, ``target_devices: [<engine device>]``): the first ``models[]``
  entry with a launcher whose ``framework`` is ``openvino`` or ``dlsdk`` and whose ``device``
  (when given) is the engine's device is used; TensorFlow, ONNX, ... entries are skipped.
* **Dataset definitions**: a dataset given by ``name`` only is completed from the definitions
  file (``--definitions FILE``, else the ``DEFINITIONS_FILE`` environment variable, else the
  YAML's top-level ``global_definitions``, relative to the YAML). Keys of the model's own entry
  replace the definition's keys whole (no deep merge), as in Accuracy Checker.
* **Path roots** (``--data-dir``/``DATA_DIR``, ``--annotations-dir``/``ANNOTATIONS_DIR``): a
  relative ``data_source``, ``segmentation_masks_source``, ``additional_data_source`` or
  ``annotation_conversion`` key ending in ``file`` or ``dir`` is joined to the data root;
  ``annotation``, ``dataset_meta``, ``subset_file`` to the annotations root. Without a root a
  relative path resolves as every path of ``pot``: from the working directory when it exists
  there, otherwise from the folder of the file that holds it (the YAML, or the definitions file).
* **Pre-converted annotations** (``annotation:`` / ``dataset_meta:`` pickles written by
  Accuracy Checker) cannot be read without Accuracy Checker's classes: when the dataset also has
  ``annotation_conversion`` we convert (and never write the pickle); a dataset with only the
  pickle is refused, naming the key.

Source: Accuracy Checker 2023.3 ``config/config_reader.py`` (``ENTRIES_PATHS``,
``_merge_configs_by_identifier``, ``filter_models``) and Open Model Zoo's
``quantize_engine/quantizer.py`` (the variables it sets).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from pot_cli.errors import ConfigError, NotSupportedError

log = logging.getLogger("pot")

FRAMEWORKS = ("dlsdk", "openvino")
#: dataset keys whose relative paths take the data root
DATA_KEYS = ("data_source", "segmentation_masks_source", "additional_data_source")
#: dataset keys whose relative paths take the annotations root
ANNOTATION_KEYS = ("annotation", "dataset_meta", "subset_file")


@dataclass(frozen=True)
class Roots:
    """Where names and relative paths of an Accuracy Checker config resolve.

    :param definitions: the dataset definitions file, or None.
    :param data_dir: prefix of relative data paths, or None.
    :param annotations_dir: prefix of relative annotation paths, or None.
    """

    definitions: Path | None = None
    data_dir: Path | None = None
    annotations_dir: Path | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Roots":
        """The roots set by ``DEFINITIONS_FILE``, ``DATA_DIR`` and ``ANNOTATIONS_DIR``."""
        env = os.environ if environ is None else environ
        get = (lambda k: Path(env[k]).expanduser() if env.get(k) else None)
        return cls(get("DEFINITIONS_FILE"), get("DATA_DIR"), get("ANNOTATIONS_DIR"))


def read_yaml(path: Path, what: str) -> Any:
    """The YAML document of ``path``.

    :raises ConfigError: unreadable file or malformed YAML (with line and column).
    """
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the {what}: {e.strerror or e}") from e
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(f"{path}: {at}{e.problem or e.context or 'malformed YAML'}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: {e}") from None


def _device_matches(launcher_device: Any, device: str) -> bool:
    if not launcher_device:
        return True
    wanted = str(device).upper().split(".")[0].split(":")[0]
    return str(launcher_device).upper().split(".")[0].split(":")[0] == wanted


def select_model_entry(models: Any, source: str, device: str) -> tuple[Mapping, str, int]:
    """The model entry and launcher POT would run.

    :param models: the YAML's ``models`` list.
    :param source: the YAML file, for messages.
    :param device: the engine's device (``CPU``); a launcher ``device`` must match it.
    :return: ``(entry, key path of the entry, index of the launcher in its launchers)``.
    :raises ConfigError: no entry has an OpenVINO launcher for ``device`` (naming what was found).
    """
    if not isinstance(models, list) or not models or not all(isinstance(m, Mapping) for m in models):
        raise ConfigError(f"{source}: models: expected a non-empty list of model entries")
    found = []
    for k, entry in enumerate(models):
        launchers = entry.get("launchers")
        if not isinstance(launchers, list):
            continue
        for j, launcher in enumerate(launchers):
            if not isinstance(launcher, Mapping):
                continue
            framework, dev = launcher.get("framework"), launcher.get("device")
            found.append(f"models[{k}].launchers[{j}]: {framework}" + (f" on {dev}" if dev else ""))
            if framework in FRAMEWORKS and _device_matches(dev, device):
                if k:
                    log.info("%s: using models[%d] ('%s'), the first with an OpenVINO launcher", source, k,
                             entry.get("name"))
                return entry, f"models[{k}]", j
    raise ConfigError(f"{source}: models: no launcher with framework {' or '.join(FRAMEWORKS)} for device {device} "
                      f"(found {'; '.join(found) or 'none'}); expected e.g. {{framework: openvino, "
                      "adapter: classification}")


class Definitions:
    """The dataset definitions file: ``datasets: [{name: ..., ...}, ...]``.

    :param path: the file.
    :raises ConfigError: unreadable, malformed, or without a ``datasets`` list.
    """

    def __init__(self, path: Path):
        self.path = path
        doc = read_yaml(path, "dataset definitions file")
        datasets = doc.get("datasets") if isinstance(doc, Mapping) else None
        if not isinstance(datasets, list):
            raise ConfigError(f"{path}: expected a top-level 'datasets' list of named dataset entries")
        self.entries = {str(d["name"]): d for d in datasets if isinstance(d, Mapping) and "name" in d}

    def complete(self, dataset: Mapping, where: str) -> tuple[dict, Path | None]:
        """``dataset`` merged over its definition (model keys win whole).

        :return: ``(merged entry, folder of the definitions file when the entry came from it)``.
        """
        name = dataset.get("name")
        if name is None or str(name) not in self.entries:
            return dict(dataset), None
        merged = dict(self.entries[str(name)])
        merged.update(dataset)
        return merged, self.path.parent


def _resolve(value: Any, root: Path | None, base: Path) -> Path:
    """``value`` under ``root`` when relative and a root is set; else as every config path of
    ``pot`` (:func:`pot_cli.config.loader.resolve_path`: the working directory when it exists
    there, otherwise ``base``)."""
    from pot_cli.config.loader import resolve_path

    p = Path(str(value)).expanduser()
    if p.is_absolute():
        return p
    return (root / p) if root is not None else resolve_path(str(value), base)


def resolve_dataset_paths(dataset: Mapping, roots: Roots, base: Path) -> dict:
    """A copy of ``dataset`` with its path keys made absolute (see the module docstring).

    :param dataset: a dataset entry (already merged with its definition).
    :param roots: the data and annotation roots.
    :param base: the folder relative paths resolve against without a root.
    """
    out = dict(dataset)
    for key in DATA_KEYS:
        if isinstance(out.get(key), (str, os.PathLike)):
            out[key] = str(_resolve(out[key], roots.data_dir, base))
    for key in ANNOTATION_KEYS:
        if isinstance(out.get(key), (str, os.PathLike)):
            out[key] = str(_resolve(out[key], roots.annotations_dir, base))
    conv = out.get("annotation_conversion")
    if isinstance(conv, Mapping):
        conv = dict(conv)
        for key, value in conv.items():
            if (key.endswith("file") or key.endswith("dir")) and isinstance(value, (str, os.PathLike)):
                conv[key] = str(_resolve(value, roots.data_dir, base))
        out["annotation_conversion"] = conv
    return out


def prepare_dataset(dataset: Any, where: str, source: str, base: Path, roots: Roots,
                    definitions: Definitions | None) -> Any:
    """One dataset entry ready to parse: completed from the definitions, paths absolute, AC
    pickles dropped (conversion given) or refused (no conversion).

    :param dataset: the entry of the YAML (a mapping; anything else is returned unchanged for the
        parser to report).
    :param where: key path of the entry.
    :param source: the YAML file.
    :param base: the YAML's folder.
    :raises ConfigError: a name-only dataset without a definitions file, or a name not defined.
    :raises NotSupportedError: ``annotation:``/``dataset_meta:`` without ``annotation_conversion``.
    """
    if not isinstance(dataset, Mapping):
        return dataset
    entry, entry_base = dict(dataset), base
    if definitions is not None:
        entry, def_base = definitions.complete(dataset, where)
        entry_base = def_base or base
    name = entry.get("name")
    if not ({"data_source", "annotation_conversion", "annotation"} & set(entry)) and name is not None:
        if definitions is None:
            raise ConfigError(f"{source}: {where}.name: dataset '{name}' is defined by name only; expected a "
                              "definitions file that defines it (--definitions FILE or the DEFINITIONS_FILE "
                              "environment variable, as Open Model Zoo sets it)")
        raise ConfigError(f"{source}: {where}.name: dataset '{name}' is not in {definitions.path}; expected one of: "
                          f"{', '.join(sorted(definitions.entries)[:12])}")
    entry = resolve_dataset_paths(entry, roots, entry_base)
    if "annotation_conversion" in entry:
        for key in ("annotation", "dataset_meta"):
            if key in entry:
                log.debug("%s: %s.%s: Accuracy Checker's pre-converted file is not read; annotations are "
                          "converted from annotation_conversion", source, where, key)
                entry.pop(key)
    else:
        for key in ("annotation", "dataset_meta"):
            if key in entry:
                raise NotSupportedError(f"{source}: {where}.{key}: Accuracy Checker's pre-converted annotation "
                                        f"files (pickles) cannot be read; expected annotation_conversion "
                                        "(a converter and its files) instead")
    return entry


def load_definitions(doc: Mapping, source: str, base: Path, roots: Roots) -> Definitions | None:
    """The definitions file of this run: ``roots.definitions`` (flag or environment), else the
    YAML's ``global_definitions`` (relative to the YAML), else None.

    :raises ConfigError: the file cannot be read.
    """
    if roots.definitions is not None:
        if not roots.definitions.is_file():
            raise ConfigError(f"{roots.definitions}: no such dataset definitions file (given by --definitions or "
                              "the DEFINITIONS_FILE environment variable); expected the definitions YAML")
        return Definitions(roots.definitions)
    if doc.get("global_definitions"):
        return Definitions(_resolve(doc["global_definitions"], None, base))
    return None
