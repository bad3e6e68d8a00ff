"""Reading and saving OpenVINO IR models, and small read-only graph queries."""
from __future__ import annotations

import difflib
import errno
import logging
import os
import shutil
import signal
import tempfile
import threading
from contextlib import contextmanager
from xml.etree import ElementTree
import time
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from pot_cli.errors import ConfigError, ModelError, OutputError, runtime_error_text

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
    _check_ir_root(Path(xml_path))
    _check_weights_size(Path(xml_path), Path(bin_path))
    try:
        model = get_core().read_model(str(xml_path), str(bin_path))
    except Exception as e:  # openvino raises RuntimeError subclasses with multi-line text
        text = runtime_error_text(e)
        if "weights in bin file" in text or "bin file" in text.lower():
            raise ModelError(f"{bin_path}: the weights file does not fit the model {Path(xml_path).name} "
                             f"({text}); expected the complete .bin saved with that .xml (truncated or "
                             "from another model?)") from e
        raise ModelError(f"{xml_path}: cannot read the model as OpenVINO IR: {text}") from e
    if not allow_quantized:
        fq = [op.get_friendly_name() for op in model.get_ops() if op.get_type_name() == "FakeQuantize"]
        if fq:
            raise ModelError(f"{xml_path}: the model is already quantized ({len(fq)} FakeQuantize ops, "
                             f"e.g. '{fq[0]}'); expected a floating-point model",
                             hint="pass --allow-quantized to quantize only the layers that are not "
                                  "quantized yet")
    return model


def _check_ir_root(xml_path: Path) -> None:
    """Fail early, with a clear message, when ``xml_path`` is not XML or not an IR (``<net>``).

    Only the start of the file is parsed (up to the root element), so this is cheap for any size.
    """
    try:
        with open(xml_path, "rb") as f:
            for _, element in ElementTree.iterparse(f, events=("start",)):
                if element.tag != "net":
                    raise ModelError(f"{xml_path}: not an OpenVINO IR: the root element is <{element.tag}>; "
                                     "expected <net> (the .xml of an IR)")
                return
    except ElementTree.ParseError as e:
        line, col = e.position
        raise ModelError(f"{xml_path}: not an OpenVINO IR: not valid XML at line {line}, column {col + 1}; "
                         "expected the .xml of an IR") from e
    except OSError as e:
        raise ModelError(f"{xml_path}: cannot read the model file: {e.strerror or e}") from e


def weights_bytes_needed(xml_path: Path) -> int:
    """The end of the last constant the IR reads from its ``.bin`` (``offset + size`` of every
    ``<data>``); the ``.bin`` that OpenVINO saved with the ``.xml`` has exactly this size.

    :raises ElementTree.ParseError: when the file is not valid XML.
    """
    needed = 0
    for _, element in ElementTree.iterparse(xml_path, events=("end",)):
        if element.tag != "layer":
            continue
        data = element.find("data")
        if element.get("type") == "Const" and data is not None and "offset" in data.attrib and "size" in data.attrib:
            needed = max(needed, int(data.attrib["offset"]) + int(data.attrib["size"]))
        element.clear()
    return needed


def _check_weights_size(xml_path: Path, bin_path: Path) -> None:
    """Refuse a ``.bin`` that is not the one saved with the ``.xml`` (truncated, or the weights of
    another model, which would otherwise be read as garbage weights without any error)."""
    try:
        needed = weights_bytes_needed(xml_path)
    except (ElementTree.ParseError, ValueError, OSError):
        return  # the runtime's reader reports it
    have = Path(bin_path).stat().st_size
    if have != needed:
        problem = "truncated" if have < needed else "larger than the model needs; the weights of another model?"
        raise ModelError(f"{bin_path}: the weights file does not fit the model {Path(xml_path).name}: {have} bytes, "
                         f"the model reads {needed} ({problem}); expected the .bin saved with that .xml",
                         hint=None if have < needed else "an IR with unused bytes in its .bin can be re-saved "
                                                         "with openvino.save_model")


def quantized_layers(model: ov.Model) -> list[str]:
    """Friendly names of the nodes that already have a quantized input: fed by a FakeQuantize,
    or by INT8/UINT8/INT4/UINT4 weights behind a dequantization chain (Convert, Subtract,
    Multiply, Reshape...). Used to leave those layers as they are when an already quantized
    model is quantized again (``--allow-quantized``).

    :param model: the model (not modified).
    :return: names in topological order, each once.
    """
    low_bit = {ov.Type.i8, ov.Type.u8, ov.Type.i4, ov.Type.u4}
    passthrough = {"Convert", "Subtract", "Multiply", "Reshape", "Transpose", "Unsqueeze", "Squeeze"}

    def quantized_source(node) -> bool:
        stack, seen = [node], set()
        while stack:
            n = stack.pop()
            if n.get_instance_id() in seen:
                continue
            seen.add(n.get_instance_id())
            t = n.get_type_name()
            if t == "FakeQuantize" or (t == "Constant" and n.get_element_type() in low_bit):
                return True
            if t in passthrough:
                stack.extend(i.get_source_output().get_node() for i in n.inputs())
        return False

    names = []
    for node in model.get_ordered_ops():
        if node.get_type_name() in passthrough | {"FakeQuantize", "Constant", "Parameter", "Result"}:
            continue
        if any(quantized_source(i.get_source_output().get_node()) for i in node.inputs()):
            names.append(node.get_friendly_name())
    return list(dict.fromkeys(names))


def node_names(model: ov.Model, bodies: bool = True) -> list[str]:
    """Friendly names of the nodes of ``model``, in topological order, and with ``bodies`` those
    of the bodies of its If, Loop and TensorIterator ops (recursively) after each such op.

    :param model: the model (not modified).
    :param bodies: include the sub-graphs' nodes.
    """
    names = []
    for node in model.get_ordered_ops():
        names.append(node.get_friendly_name())
        if bodies:
            for body in sub_models(node):
                names.extend(node_names(body))
    return names


def sub_models(node: ov.Node) -> list[ov.Model]:
    """The bodies of an If (then, else), Loop or TensorIterator; ``[]`` for other ops."""
    if not hasattr(node, "get_function"):
        return []
    return [node.get_function(0), node.get_function(1)] if node.get_type_name() == "If" else [node.get_function()]


def check_ignored_scope(model: ov.Model, scope, key: str = "ignored.scope") -> None:
    """Every name of an ignored scope must name a node of ``model`` or of one of its bodies.

    :param model: the model (not modified).
    :param scope: node friendly names (POT's ``ignored.scope``).
    :param key: how the message names the key (``<config>: compression.algorithms[0].params.ignored.scope``).
    :raises ConfigError: for the first unknown name, with the closest node names as a hint.
    """
    names = node_names(model)
    known = set(names)
    for name in scope:
        if name not in known:
            close = difflib.get_close_matches(name, names, n=3)
            raise ConfigError(f"{key}: no node named '{name}' in the model",
                              hint=f"closest node names: {', '.join(repr(c) for c in close)}" if close else None)


def absent_op_types(model: ov.Model, types) -> list[tuple[str, list[str]]]:
    """The op types among ``types`` that no node of ``model`` (bodies included) has, each with
    the closest types the model has (a typo such as ``MatMull``).

    :param model: the model (not modified).
    :param types: op type names (POT's ``ignored.operations[].type``).
    """
    present: set[str] = set()

    def walk(m: ov.Model) -> None:
        for node in m.get_ops():
            present.add(node.get_type_name())
            for body in sub_models(node):
                walk(body)

    walk(model)
    return [(t, difflib.get_close_matches(t, sorted(present), n=3)) for t in dict.fromkeys(types) if t not in present]


def check_output_dir(path: Path) -> None:
    """Fail early when ``path`` cannot become an output folder.

    :param path: ``--output-dir``; it may not exist yet.
    :raises OutputError: when ``path`` or one of its parents is a file, or the nearest existing
        folder is on a read-only file system or not writable.
    """
    path = Path(path)
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        where = "is a file" if probe == path else f"is inside {probe}, which is a file"
        raise OutputError(f"{path}: output folder {where}; expected a folder (or a path that does not exist yet)")
    try:
        read_only = bool(os.statvfs(probe).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    if read_only or not os.access(probe, os.W_OK | os.X_OK):
        reason = "read-only file system" if read_only else "permission denied"
        raise OutputError(f"{path}: output folder is not writable ({probe}: {reason}); "
                          "expected a writable folder for --output-dir")


def compile_model(model: ov.Model, config: dict | None = None) -> ov.CompiledModel:
    """Compile on CPU, wrapping runtime failures in :class:`ModelError`."""
    try:
        return get_core().compile_model(model, "CPU", config or {})
    except Exception as e:
        raise ModelError(f"model '{model.get_friendly_name()}': the CPU plugin cannot compile it: "
                         f"{runtime_error_text(e)}") from e


def model_with_results(model: ov.Model, results: list, name: str) -> ov.Model:
    """A model over ``model``'s nodes with ``model``'s parameters and these ``results`` (Result
    nodes on tensors of ``model``): a statistics or capture model.

    A stateful model's sinks (Assign) and variables come along: the CPU plugin refuses a
    ReadValue whose Assign is not in the model ("doesn't have sibling output").
    """
    return ov.Model(results, model.get_sinks(), model.get_parameters(), model.get_variables(), name)


def evaluate_constants(outputs: list[ov.Output]) -> list[np.ndarray]:
    """Values of constant sub-graphs (weights behind Convert/Reshape/Transpose chains).

    Plain Constants are read directly; the other outputs are evaluated at once: one
    parameter-less model, compiled once in f32.

    :param outputs: node outputs whose ancestors are all Constants.
    :return: float or integer numpy arrays in the same order, of each output's shape.
    """
    if not outputs:
        return []
    out: list = [np.array(o.get_node().get_data()) if _plain_constant(o) else None
                 for o in outputs]  # a plain Constant needs no compilation
    pending = [k for k, v in enumerate(out) if v is None]
    if not pending:
        return out
    results = [ops.result(outputs[k]) for k in pending]
    probe = ov.Model(results, [], "constant_probe")
    compiled = compile_model(probe, {"INFERENCE_PRECISION_HINT": "f32"})
    values = compiled({})
    for i, k in enumerate(pending):
        out[k] = np.array(values[compiled.output(i)])
    for r in results:  # detach the probe from the model's nodes
        r.input(0).get_source_output().remove_target_input(r.input(0))
    return out


#: element types whose Constant data reads as a numpy array of the right shape (not packed bits)
_NUMPY_TYPES = frozenset({"f64", "f32", "f16", "i64", "i32", "i16", "i8", "u64", "u32", "u16", "u8", "boolean"})


def _plain_constant(output: ov.Output) -> bool:
    node = output.get_node()
    return node.get_type_name() == "Constant" and node.get_element_type().get_type_name() in _NUMPY_TYPES


def _fold_ancestors(output: ov.Output, cache: dict, leaf: Callable[[ov.Node], object | None],
                    combine: Callable[[ov.Node, list], object]):
    """A value computed over the ancestors of ``output``, post-order, without recursion (graphs
    are deep): ``leaf(node)`` gives a node's value on its own (None: look at its inputs), and
    ``combine(node, input_values)`` gives it from its inputs' values; memoised in ``cache``
    (node instance id -> value)."""
    stack = [(output.get_node(), False)]
    while stack:
        node, expanded = stack.pop()
        key = node.get_instance_id()
        if key in cache:
            continue
        sources = [i.get_source_output().get_node() for i in node.inputs()]
        value = leaf(node)
        if value is not None:
            cache[key] = value
        elif expanded:
            cache[key] = combine(node, [cache[s.get_instance_id()] for s in sources])
        else:
            stack.append((node, True))
            stack.extend((s, False) for s in sources if s.get_instance_id() not in cache)
    return cache[output.get_node().get_instance_id()]


def is_constant_subgraph(output: ov.Output, cache: dict | None = None) -> bool:
    """True when every ancestor of ``output`` is a Constant (no Parameter, ShapeOf or state).

    :param output: a node output.
    :param cache: memo shared across calls (node instance id -> bool).
    """
    def leaf(node: ov.Node) -> bool | None:
        if node.get_type_name() == "Constant":
            return True
        return False if node.get_input_size() == 0 or node.get_type_name() in _NOT_CONSTANT else None

    return _fold_ancestors(output, {} if cache is None else cache, leaf, lambda _, values: all(values))


_NOT_CONSTANT = frozenset({"Parameter", "ReadValue", "Assign", "ShapeOf", "RandomUniform"})


def reads_state_only(output: ov.Output, cache: dict | None = None) -> bool:
    """True when ``output`` depends on a model state (ReadValue) and on no model input.

    Calibration samples each start from the state's initial value (see
    :func:`pot_cli.statistics.collector.start_sample`), so such a tensor only ever shows that
    value there: its range cannot be calibrated.

    :param output: a node output.
    :param cache: memo shared across calls (node instance id -> (reads state, reads input)).
    """
    def leaf(node: ov.Node) -> tuple[bool, bool] | None:
        if node.get_type_name() == "Parameter":
            return False, True
        return (node.get_type_name() == "ReadValue", False) if node.get_input_size() == 0 else None

    def combine(node: ov.Node, values: list) -> tuple[bool, bool]:
        # a ReadValue's input is its initial value, which a sample may set
        return node.get_type_name() == "ReadValue" or any(v[0] for v in values), any(v[1] for v in values)

    state, inputs = _fold_ancestors(output, {} if cache is None else cache, leaf, combine)
    return state and not inputs


def save_model_atomic(model: ov.Model | Mapping[str, ov.Model], target_dir: Path, model_name: str,
                      extra_files: dict[str, str] | Callable[[float], dict[str, str]] | None = None) -> Path:
    """Write ``<target_dir>/<model_name>.xml|.bin`` (and extra text files) all or nothing.

    ``model`` may also be ``{file stem: ov.Model}`` (a cascade's sub-models, written together);
    ``model_name`` is then the stem whose ``.xml`` path is returned.

    Files are first written into a temporary sibling folder, which is then renamed to
    ``target_dir``. An existing ``target_dir`` is replaced only once the new one is complete.

    :param model: the model to save (weights keep their precision: ``compress_to_fp16=False``).
    :param target_dir: the folder that will hold the IR.
    :param model_name: file stem of the IR.
    :param extra_files: file name -> text, written beside the IR (for example ``report.json``),
        or a function of the seconds spent writing the IR that returns them.
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
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the output is a normal folder
        started = time.perf_counter()
        models = dict(model) if isinstance(model, Mapping) else {model_name: model}
        for stem, one in models.items():
            ov.save_model(one, str(tmp / f"{stem}.xml"), compress_to_fp16=False)
        if callable(extra_files):
            extra_files = extra_files(time.perf_counter() - started)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        for stem in models:
            _check_saved(tmp, stem, extra_files)
        backup = None
        with _signals_deferred():  # Ctrl-C here would leave neither the old nor the new folder
            if target_dir.exists():
                backup = parent / f".{target_dir.name}.old-{os.getpid()}"
                os.replace(target_dir, backup)
            os.replace(tmp, target_dir)
            tmp = None
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    except OSError as e:
        raise OutputError(f"{target_dir}: cannot write the output model: {e.strerror or e}") from e
    except RuntimeError as e:  # ov.save_model reports I/O failures as RuntimeError, without errno
        text = runtime_error_text(e)
        if _nearly_full(tmp or parent):
            text = f"no space left on device ({text})"
        raise OutputError(f"{target_dir}: cannot write the output model: {text}") from e
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return target_dir / f"{model_name}.xml"


def _check_saved(folder: Path, model_name: str, extra_files: dict[str, str] | None) -> None:
    """Make sure every file of a freshly saved IR is complete before it is published.

    ``ov.save_model`` may not report a short write (a full disk), so the ``.bin`` is checked to
    hold every byte the ``.xml`` refers to, and the files are flushed to disk.

    :raises OSError: when a file is missing or shorter than expected (``ENOSPC`` wording).
    """
    xml, bin_ = folder / f"{model_name}.xml", folder / f"{model_name}.bin"
    try:
        needed = weights_bytes_needed(xml)
    except ElementTree.ParseError as e:
        raise OSError(errno.ENOSPC, f"{xml.name} is incomplete ({e}; is the disk full?)") from e
    have = bin_.stat().st_size if bin_.exists() else -1
    if have < needed:
        raise OSError(errno.ENOSPC, f"{bin_.name} is incomplete ({max(have, 0)} of {needed} bytes written; "
                      "is the disk full?)")
    for f in [xml, bin_] + [folder / n for n in (extra_files or {})]:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _nearly_full(path: Path, margin: int = 1 << 20) -> bool:
    """True when the file system of ``path`` has less than ``margin`` bytes free for us."""
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < margin


@contextmanager
def _signals_deferred():
    """Hold SIGINT and SIGTERM until the block ends (main thread, POSIX); elsewhere a no-op."""
    can_block = hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread()
    if not can_block:
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
