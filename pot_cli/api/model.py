"""The model object of the API and its I/O: ``load_model``, ``save_model``, ``compress_model_weights``."""
from __future__ import annotations

import os
import shutil
import tempfile
import types
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import openvino as ov

from pot_cli.errors import ConfigError, NotSupportedError, OutputError, runtime_error_text
from pot_cli.graph import model as graph_model


class CompressedModel:
    """One model, or a cascade of named sub-models, being quantized (the original's ``CompressedModel``).

    :param model: an ``ov.Model`` (one model), or ``None`` with ``models``.
    :param name: the model name (output file stem by default).
    :param models: ``[{'name': str, 'model': ov.Model}, ...]`` for a cascade.
    :param xml: the ``.xml`` it was read from (``original()`` re-reads it), if any.
    :param bin: the ``.bin`` it was read from.
    :param allow_quantized: it may hold FakeQuantize ops already (their layers are kept).

    ``models`` is the original's list of ``{'model', 'name'?}`` dicts (``name`` only for a cascade
    of two or more); :attr:`model` is the one ``ov.Model`` of a non-cascade.
    """

    def __init__(self, model: ov.Model | None = None, name: str | None = None, *, models: list[dict] | None = None,
                 xml: Path | None = None, bin: Path | None = None, allow_quantized: bool = False):
        if models is None:
            models = [{"model": model}]
        self.models = models
        self.name = name or (model.get_friendly_name() if model is not None else "model")
        self.xml, self.bin = (Path(xml) if xml else None), (Path(bin) if bin else None)
        self.allow_quantized = allow_quantized
        self._copy: ov.Model | None = None

    @property
    def is_cascade(self) -> bool:
        return len(self.models) > 1

    @property
    def model(self) -> ov.Model:
        """The ``ov.Model`` of a non-cascade.

        :raises NotSupportedError: for a cascade.
        """
        if self.is_cascade:
            raise NotSupportedError(f"model '{self.name}': a cascade of {len(self.models)} models; this step "
                                    "needs a single model")
        return self.models[0]["model"]

    @model.setter
    def model(self, value: ov.Model) -> None:
        self.models[0]["model"] = value

    def keep_original(self) -> None:
        """Remember the input model of an in-memory model (one read from files is re-read)."""
        if self.xml is None and self._copy is None:
            self._copy = self.model.clone()

    def original(self) -> ov.Model:
        """The input model as it was loaded: re-read from its files, else the copy
        :meth:`keep_original` made (the current model when it made none)."""
        if self.xml is not None:
            return graph_model.load_model(self.xml, self.bin, allow_quantized=self.allow_quantized)
        return (self._copy or self.model).clone()

    @property
    def names(self) -> list[str]:
        """Sub-model names of a cascade, in order (``[]`` for one model)."""
        return [m["name"] for m in self.models if "name" in m]

    def sub_model(self, name: str) -> "CompressedModel":
        """Sub-model ``name`` of a cascade as a model of its own (same ``ov.Model`` object, so
        in-place edits show in the cascade; assign ``.model`` back after a step that replaces it).

        :raises KeyError: when the cascade has no such sub-model.
        """
        entry = next((m for m in self.models if m.get("name") == name), None)
        if entry is None:
            raise KeyError(f"model '{self.name}' has no sub-model '{name}' (it has {', '.join(self.names)})")
        return CompressedModel(entry["model"], name, xml=entry.get("xml"), bin=entry.get("bin"),
                               allow_quantized=self.allow_quantized)

    def save(self, save_path, model_name: str | None = None) -> list[dict]:
        """:func:`save_model` of this model."""
        return save_model(self, save_path, model_name)

    def __repr__(self) -> str:
        return f"CompressedModel(name={self.name!r}, models={len(self.models)})"


def _get(config: Any, key: str, default=None):
    if isinstance(config, Mapping):
        return config.get(key, default)
    return getattr(config, key, default)


def load_model(model_config: Mapping | Any, target_device: str = "ANY") -> CompressedModel:
    """Read an IR (or a cascade of IRs) described by ``model_config``.

    :param model_config: ``{'model_name': str, 'model': xml path, 'weights': bin path}`` (``weights``
        defaults to the ``.xml`` path with ``.bin``; paths may be ``str`` or ``Path``); our extension
        ``allow_quantized: True`` accepts a model that holds FakeQuantize ops already.
    :param target_device: accepted for compatibility (the algorithms take it from their params).
    :return: the model; the files are never modified.
    A cascade: ``{'model_name': str, 'cascade': [{'name': str, 'model': xml, 'weights': bin}, ...]}``
    (each entry merged over the top-level keys, as the original did; ``name`` is required with two
    or more entries) gives one :class:`CompressedModel` whose ``models`` are
    ``[{'name', 'model'}, ...]`` in cascade order (saved as ``<model_name>_<name>.xml``); a cascade
    of one entry is a plain model.

    :raises ModelError: when a file is missing or is not a readable IR.
    :raises ConfigError: a cascade entry without ``name`` (2+ entries), or two with the same name.
    """
    cascade = _get(model_config, "cascade")
    if cascade:
        return _load_cascade(model_config, list(cascade))
    xml = _get(model_config, "model")
    if not xml:
        raise ConfigError("model_config.model: missing; expected the path of the model .xml")
    xml = Path(xml)
    weights = _get(model_config, "weights")
    bin_path = Path(weights) if weights else xml.with_suffix(".bin")
    allow = bool(_get(model_config, "allow_quantized", False))
    model = graph_model.load_model(xml, bin_path, allow_quantized=allow)
    return CompressedModel(model, _get(model_config, "model_name") or xml.stem, xml=xml, bin=bin_path,
                           allow_quantized=allow)


def _load_cascade(model_config, cascade: list) -> CompressedModel:
    """:func:`load_model` of ``model_config.cascade``."""
    top = {k: _get(model_config, k) for k in ("model_name", "allow_quantized", "weights")
           if _get(model_config, k) is not None}
    top.pop("weights", None)  # a top-level .bin belongs to no sub-model
    if len(cascade) == 1:
        one = load_model({**top, **{k: _get(cascade[0], k) for k in ("model", "weights")
                                    if _get(cascade[0], k) is not None}})
        one.name = top.get("model_name") or _get(cascade[0], "name") or one.name
        return one
    models, seen = [], set()
    for k, entry in enumerate(cascade):
        name = _get(entry, "name")
        if not name:
            raise ConfigError(f"model_config.cascade[{k}].name: missing; expected a sub-model name for each "
                              f"entry of a cascade of {len(cascade)} models")
        if name in seen:
            raise ConfigError(f"model_config.cascade[{k}].name: '{name}' names two sub-models; expected unique names")
        seen.add(name)
        xml = _get(entry, "model")
        if not xml:
            raise ConfigError(f"model_config.cascade[{k}].model: missing; expected the path of the sub-model .xml")
        sub = load_model({**top, "model": xml, "weights": _get(entry, "weights")})
        models.append({"name": name, "model": sub.model, "xml": sub.xml, "bin": sub.bin})
    return CompressedModel(name=top.get("model_name") or "cascade", models=models,
                           allow_quantized=bool(top.get("allow_quantized", False)))


def save_model(model: CompressedModel, save_path, model_name: str | None = None,
               for_stat_collection: bool = False) -> list[dict]:
    """Write ``<save_path>/<model_name>.xml|.bin``; other files in ``save_path`` are kept.

    The IR is written into a temporary folder inside ``save_path`` and moved into place, the
    ``.bin`` before the ``.xml``, so a failure leaves no half-written model (weights in their own
    precision: ``compress_to_fp16=False``).

    :param model: the model.
    :param save_path: the folder (created if needed).
    :param model_name: the file stem (default: the model's name).
    :param for_stat_collection: accepted for compatibility; no effect.
    :return: ``[{'model': xml path, 'weights': bin path}]`` (with ``'name'`` per sub-model of a cascade).
    :raises OutputError: when the folder cannot be created or written.
    """
    folder = Path(save_path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{folder}: cannot create the output folder: {e.strerror or e}") from e
    written = []
    for entry in model.models:
        stem = model_name or model.name
        if "name" in entry:
            stem = f"{model_name}_{entry['name']}" if model_name else entry["name"]
        tmp = Path(tempfile.mkdtemp(prefix=f".{stem}.tmp-", dir=folder))
        try:
            ov.save_model(entry["model"], str(tmp / f"{stem}.xml"), compress_to_fp16=False)
            for suffix in (".bin", ".xml"):
                os.replace(tmp / f"{stem}{suffix}", folder / f"{stem}{suffix}")
        except (OSError, RuntimeError) as e:
            text = getattr(e, "strerror", None) or runtime_error_text(e)
            raise OutputError(f"{folder}: cannot write the model '{stem}': {text}") from e
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        row = {"model": str(folder / f"{stem}.xml"), "weights": str(folder / f"{stem}.bin")}
        if "name" in entry:
            row = {"name": entry["name"], **row}
        written.append(row)
    return written


def _weight_codes(value: np.ndarray, low: np.ndarray, high: np.ndarray, levels: int):
    """INT8/UINT8 codes, scale and zero point of ``FakeQuantize(value)`` (FakeQuantize-1 spec:
    ``q = round((clip(x, low, high) - low) / (high - low) * (levels - 1))``).

    :return: ``(codes, params)``: int8 codes with zero point 0 when zero sits on the middle level,
        else uint8 codes and their zero point; ``params.scale`` broadcastable to ``value``.
    """
    scale = ((high - low) / (levels - 1)).astype(np.float32)
    safe = np.where(scale == 0, 1.0, scale)
    q = np.round((np.clip(value, low, high) - low) / safe)
    zero = np.round(-low / safe)
    middle = levels // 2
    if np.all(zero == middle) and levels <= 256:
        return (q - middle).astype(np.int8), types.SimpleNamespace(scale=scale, zero_point=np.zeros(1, np.int8))
    return q.astype(np.uint8), types.SimpleNamespace(scale=scale, zero_point=zero.astype(np.uint8))


def compress_model_weights(model: CompressedModel) -> None:
    """Store every FakeQuantize on constant weights as INT8 (or UINT8) codes with a
    Convert -> (Subtract zero point) -> Multiply scale chain, in place (the original's
    ``compress_model_weights``). The pipeline already stores the weights it quantizes this way,
    so on its output this changes nothing; weights it left behind a FakeQuantize
    (``keep_uncompressed_weights``) and quantized models loaded with ``allow_quantized`` are compressed.

    :param model: the model, edited in place.
    :return: ``None``.
    """
    from pot_cli.graph.insertion import insert_compressed_weights

    for entry in model.models:
        m: ov.Model = entry["model"]
        cache: dict = {}
        for fq in [op for op in m.get_ordered_ops() if op.get_type_name() == "FakeQuantize"]:
            inputs = [fq.input_value(k) for k in range(5)]
            levels = int(fq.get_attributes()["levels"])
            if levels > 256 or not all(graph_model.is_constant_subgraph(i, cache) for i in inputs):
                continue
            value, low, high, out_low, out_high = graph_model.evaluate_constants(inputs)
            if not (np.array_equal(low, out_low) and np.array_equal(high, out_high)):
                continue  # a FakeQuantize that also rescales: not a weight quantizer of ours
            codes, params = _weight_codes(value.astype(np.float32), low, high, levels)
            targets = list(fq.output(0).get_target_inputs())
            out = insert_compressed_weights(targets[0], codes, params, fq.get_friendly_name())
            for t in targets[1:]:
                t.replace_source_output(out)
        m.validate_nodes_and_infer_types()
