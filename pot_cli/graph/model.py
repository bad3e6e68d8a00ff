"""Reading and saving OpenVINO IR models, and small read-only graph queries."""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from pot_cli.errors import ModelError, OutputError

log = logging.getLogger("pot")

_core: ov.Core | None = None


def get_core() -> ov.Core:
    """The process-wide :class:`openvino.Core` (created once; creating it costs ~0.1 s)."""
    global _core
    if _core is None:
        _core = ov.Core()
    return _core


def load_model(xml_path: Path, bin_path: Path, allow_quantized: bool = False) -> ov.Model:
    """Read an IR; the files on disk are never modified.

    :param xml_path: the ``.xml`` topology.
    :param bin_path: the ``.bin`` weights.
    :param allow_quantized: accept a model that already holds FakeQuantize ops.
    :return: the model, ready to be edited in memory.
    :raises ModelError: when the files cannot be read as an IR, or the model is already
        quantized and ``allow_quantized`` is false.
    """
    for path, what in ((xml_path, "model"), (bin_path, "weights")):
        if not Path(path).is_file():
            raise ModelError(f"{path}: {what} file not found")
    try:
        model = get_core().read_model(str(xml_path), str(bin_path))
    except Exception as e:  # openvino raises RuntimeError subclasses with multi-line text
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"{xml_path}: cannot read the model as OpenVINO IR: {first}") from e
    if not allow_quantized:
        fq = [op.get_friendly_name() for op in model.get_ops() if op.get_type_name() == "FakeQuantize"]
        if fq:
            raise ModelError(f"{xml_path}: the model is already quantized ({len(fq)} FakeQuantize ops, "
                             f"e.g. '{fq[0]}'); expected a floating-point model")
    return model


def compile_model(model: ov.Model, config: dict | None = None) -> ov.CompiledModel:
    """Compile on CPU, wrapping runtime failures in :class:`ModelError`."""
    try:
        return get_core().compile_model(model, "CPU", config or {})
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"model '{model.get_friendly_name()}': the CPU plugin cannot compile it: {first}") from e


def evaluate_constants(outputs: list[ov.Output]) -> list[np.ndarray]:
    """Values of constant sub-graphs (weights behind Convert/Reshape/Transpose chains).

    All outputs are evaluated at once: one parameter-less model, compiled once in f32.

    :param outputs: node outputs whose ancestors are all Constants.
    :return: float or integer numpy arrays in the same order, of each output's shape.
    """
    if not outputs:
        return []
    results = [ops.result(o) for o in outputs]
    probe = ov.Model(results, [], "constant_probe")
    compiled = compile_model(probe, {"INFERENCE_PRECISION_HINT": "f32"})
    values = compiled({})
    out = [np.array(values[compiled.output(i)]) for i in range(len(outputs))]
    for r in results:  # detach the probe from the model's nodes
        r.input(0).get_source_output().remove_target_input(r.input(0))
    return out


def is_constant_subgraph(output: ov.Output, cache: dict | None = None) -> bool:
    """True when every ancestor of ``output`` is a Constant (no Parameter, ShapeOf or state).

    :param output: a node output.
    :param cache: memo shared across calls (node instance id -> bool).
    """
    cache = {} if cache is None else cache
    stack = [(output.get_node(), False)]
    while stack:
        node, expanded = stack.pop()
        key = node.get_instance_id()
        if key in cache:
            continue
        sources = [i.get_source_output().get_node() for i in node.inputs()]
        if node.get_type_name() == "Constant":
            cache[key] = True
        elif not sources or node.get_type_name() in _NOT_CONSTANT:
            cache[key] = False
        elif expanded:
            cache[key] = all(cache[s.get_instance_id()] for s in sources)
        else:
            stack.append((node, True))
            stack.extend((s, False) for s in sources if s.get_instance_id() not in cache)
    return cache[output.get_node().get_instance_id()]


_NOT_CONSTANT = frozenset({"Parameter", "ReadValue", "Assign", "ShapeOf", "RandomUniform"})


def save_model_atomic(model: ov.Model, target_dir: Path, model_name: str, extra_files: dict[str, str] | None = None) -> Path:
    """Write ``<target_dir>/<model_name>.xml|.bin`` (and extra text files) all or nothing.

    Files are first written into a temporary sibling folder, which is then renamed to
    ``target_dir``. An existing ``target_dir`` is replaced only once the new one is complete.

    :param model: the model to save (weights keep their precision: ``compress_to_fp16=False``).
    :param target_dir: the folder that will hold the IR.
    :param model_name: file stem of the IR.
    :param extra_files: file name -> text, written beside the IR (for example ``report.json``).
    :return: path of the written ``.xml``.
    :raises OutputError: when the folder cannot be created or written.
    """
    target_dir = Path(target_dir)
    parent = target_dir.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{parent}: cannot create the output folder: {e.strerror or e}") from e
    tmp = None
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target_dir.name}.tmp-", dir=parent))
        ov.save_model(model, str(tmp / f"{model_name}.xml"), compress_to_fp16=False)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        backup = None
        if target_dir.exists():
            backup = parent / f".{target_dir.name}.old-{os.getpid()}"
            os.replace(target_dir, backup)
        os.replace(tmp, target_dir)
        tmp = None
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    except OSError as e:
        raise OutputError(f"{target_dir}: cannot write the output model: {e.strerror or e}") from e
    except RuntimeError as e:  # ov.save_model reports I/O failures as RuntimeError
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise OutputError(f"{target_dir}: cannot write the output model: {first}") from e
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return target_dir / f"{model_name}.xml"
