"""QuantNoiseEstimator: how much INT8 noise each quantized layer carries (per-layer SQNR).

The original POT's ``QuantNoiseEstimator`` (``algorithms/quantization/qnoise_estimator``,
configs such as ``mobilenetV2_tf_int8_sqnr.json``) runs on a model that **already holds
FakeQuantize ops**: in its example config it comes after DefaultQuantization; it does not quantize
by itself. It compares the model with its float version (the same model with every FakeQuantize
removed) on ``stat_subset_size`` calibration samples and writes one value per layer to the CSV
``results_dump_filename``. This module does the same with the OpenVINO runtime:

* ``mode: full_fq_noise`` (one pass; ``simplified`` is accepted as another name of it): the
  quantized model and its float version run side by side on each sample; each quantized layer's
  output in the quantized model is compared with the same output in the float model, so a
  layer's SQNR includes the noise accumulated by every quantized layer before it;
* ``mode: layerwise_fq_noise`` (one pass): each quantized layer is quantized **alone** (its input
  FakeQuantize ops, with the quantization-agnostic ops between them and the layer, and its
  quantized weights) on the float model's activations, so a layer's SQNR is its own INT8 error.
  Both versions of every layer are in one model, one pass (the original compiled one model per layer
  and, unlike here, removed the layer's weight quantizer, keeping only its input FakeQuantize).

``type: sqnr`` (the only type) is, per layer, over all samples and elements (``ref``: the
float model's output, ``q``: the quantized one)::

    SQNR_dB = 10 * log10(sum(ref ** 2) / (sum((ref - q) ** 2) + eps * n))

with ``n`` the number of elements (``eps`` default 1e-15, as the original's). The sums are
reduced inside the graph (mean squares per sample, averaged over the samples; with a static
shape this is exactly the ratio of the sums). The original reported the linear ratio averaged
over samples; a ratio of sums in dB is the usual definition (e.g. AIMET's, ONNX Runtime's
``compute_signal_to_quantization_noice_ratio``) and a per-sample mean would be dominated by
the best samples. A layer's output is read after its bias Add when it has one (as the original,
which read the Add after each Convolution). A "quantized layer" is any node fed by a FakeQuantize
(directly, or through quantization-agnostic ops and Concat) or by INT8 weights.

Weights already stored as INT8 constants (a model loaded with ``--allow-quantized``) count as
float in the reference, so only their activations' noise shows; in a pipeline, the quantization
algorithm before QuantNoiseEstimator keeps its weights behind FakeQuantize until the noise is
measured, and QuantNoiseEstimator stores them as INT8 afterwards (unless
``keep_uncompressed_weights``), so the weights' noise is measured too.
"""
from __future__ import annotations

import csv
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from pot_cli.algorithms.min_max import AGNOSTIC_OPS
from pot_cli.errors import ConfigError, NotSupportedError, OutputError
from pot_cli.graph.model import is_constant_subgraph, quantized_layers
from pot_cli.graph.patterns import find_bias_add
from pot_cli.statistics.collector import Reduction, StatisticRequest

log = logging.getLogger("pot")

#: the original's mode names; ``simplified`` is read as ``full_fq_noise`` (the one-pass mode)
MODES = ("full_fq_noise", "layerwise_fq_noise")
MODE_ALIASES = {"simplified": "full_fq_noise"}
#: ops between a FakeQuantize and the layer it quantizes (they carry INT8 data)
_CARRIERS = frozenset(AGNOSTIC_OPS) | {"Concat"}
#: nodes that are never a "layer" of the CSV
_NOT_LAYERS = _CARRIERS | {"FakeQuantize", "Constant", "Parameter", "Result", "Convert", "Subtract", "Multiply",
                           "ShapeOf", "ReadValue", "Assign"}
#: CSV columns
CSV_COLUMNS = ("layer", "type", "sqnr_db")


@dataclass
class NoiseRow:
    """One quantized layer's noise.

    :param layer: the layer's friendly name.
    :param type: its op type (``Convolution``, ``MatMul``...).
    :param sqnr_db: SQNR in dB (higher is better: 6.02 dB per bit for a uniform quantizer of a
        full-range signal); ``None`` when the float output is all zeros.
    :param output: the node whose output was measured (the layer, or its bias Add).
    """

    layer: str
    type: str
    sqnr_db: float | None
    output: str


def sqnr_db(signal: float, noise: float, eps: float = 1e-15) -> float | None:
    """``10 * log10(signal / (noise + eps))``: the SQNR in dB from mean squares (or sums).

    :param signal: mean (or sum) of ``ref ** 2``, >= 0.
    :param noise: mean (or sum, same count) of ``(ref - q) ** 2``, >= 0.
    :param eps: added to ``noise`` (the original's ``eps``), so an exact layer gives a large finite value.
    :return: dB, or ``None`` when ``signal`` is 0 (nothing to compare), or when both are 0.
    """
    if not signal > 0:
        return None
    denominator = noise + eps
    if denominator <= 0:
        return None
    return 10.0 * math.log10(signal / denominator)


def normalize_mode(mode: str, source: str = "QuantNoiseEstimator") -> str:
    """The canonical mode name (``simplified`` -> ``full_fq_noise``).

    :raises ConfigError: an unknown mode (the API path is validated by the schema first; this
        guards direct use).
    """
    mode = MODE_ALIASES.get(mode, mode)
    if mode not in MODES:
        raise ConfigError(f"{source}.mode: '{mode}'; expected one of: {', '.join(MODES + tuple(MODE_ALIASES))}")
    return mode


# -- graph helpers ---------------------------------------------------------------------------------

def strip_fake_quantize(model: ov.Model, keep: set[int] | None = None) -> int:
    """Bypass every FakeQuantize of ``model`` in place: its consumers read its input instead.

    :param keep: instance ids of consumer nodes that keep reading the FakeQuantize (its other
        consumers are rewired).
    :return: FakeQuantize ops bypassed.
    """
    count = 0
    for fq in [op for op in model.get_ordered_ops() if op.get_type_name() == "FakeQuantize"]:
        source = fq.input_value(0)
        for target in list(fq.output(0).get_target_inputs()):
            if keep is None or target.get_node().get_instance_id() not in keep:
                target.replace_source_output(source)
        count += 1
    return count


def _chain_to_fake_quantize(output: ov.Output, depth: int = 0) -> list[ov.Node] | None:
    """The carrier ops between ``output`` and the FakeQuantize ops upstream of it (``[]`` when
    ``output`` is a FakeQuantize's), or ``None`` when no FakeQuantize feeds it that way."""
    node = output.get_node()
    t = node.get_type_name()
    if t == "FakeQuantize":
        return []
    if t not in _CARRIERS or depth > 16:
        return None
    found, chain = False, [node]
    for inp in node.inputs():
        sub = _chain_to_fake_quantize(inp.get_source_output(), depth + 1)
        if sub is not None:
            found = True
            chain.extend(n for n in sub if all(n.get_instance_id() != c.get_instance_id() for c in chain))
    return chain if found else None


def find_quantized_layers(model: ov.Model) -> list[tuple[ov.Node, ov.Node]]:
    """Every quantized layer of ``model`` and the node whose output 0 is measured.

    A layer is a node (not a FakeQuantize, carrier op or constant chain) with an input fed by a
    FakeQuantize, directly or through quantization-agnostic ops and Concat, or by INT8/UINT8
    weights (:func:`pot_cli.graph.model.quantized_layers`); it is measured after its bias Add when
    it has one. Only layers with a floating-point output 0.

    :return: ``(layer, measured node)`` pairs in topological order.
    """
    by_weights = set(quantized_layers(model))
    cache: dict = {}
    found = []
    for node in model.get_ordered_ops():
        t = node.get_type_name()
        if t in _NOT_LAYERS or node.get_output_size() < 1 or not node.get_output_element_type(0).is_real():
            continue
        fed = node.get_friendly_name() in by_weights or any(
            _chain_to_fake_quantize(inp.get_source_output()) is not None for inp in node.inputs())
        if fed:
            found.append((node, find_bias_add(node, lambda o: is_constant_subgraph(o, cache)) or node))
    return found


def _copy_nodes(nodes: list[ov.Node], exit_node: ov.Node) -> tuple[ov.Output, set[int]]:
    """A copy of ``nodes`` (a connected sub-graph ending in ``exit_node``) whose inputs from
    outside read the same tensors; returns the copy's output 0 of ``exit_node`` and the
    instance ids of the copied nodes.

    The nodes are wrapped into a temporary model (their outside inputs rewired to Parameters,
    then restored), cloned with ``ov.Model.clone``, and the clone's Parameters replaced by the
    original sources: the Python API has no single-node clone.
    """
    ids = {n.get_instance_id() for n in nodes}
    outside: list[tuple[ov.Input, ov.Output]] = []
    for n in nodes:
        for inp in n.inputs():
            if inp.get_source_output().get_node().get_instance_id() not in ids:
                outside.append((inp, inp.get_source_output()))
    params = []
    for inp, src in outside:
        p = ops.parameter(src.get_partial_shape(), src.get_element_type())
        inp.replace_source_output(p.output(0))
        params.append(p)
    result = ops.result(exit_node.output(0))
    try:
        clone = ov.Model([result], params, "copy").clone()
    finally:
        for inp, src in outside:
            inp.replace_source_output(src)
        result.input(0).get_source_output().remove_target_input(result.input(0))
    copied = {n.get_instance_id() for n in clone.get_ordered_ops() if n.get_type_name() not in ("Parameter", "Result")}
    for (_, src), p in zip(outside, clone.get_parameters()):
        for target in list(p.output(0).get_target_inputs()):
            target.replace_source_output(src)
    return clone.get_results()[0].input_value(0), copied


def _noise_outputs(ref: ov.Output, q: ov.Output) -> tuple[ov.Output, ov.Output]:
    """In-graph ``mean(ref ** 2)`` and ``mean((ref - q) ** 2)`` of one sample, each a ``(1, 1)`` f32 tensor."""
    if ref.get_element_type() != ov.Type.f32:
        ref, q = ops.convert(ref, ov.Type.f32).output(0), ops.convert(q, ov.Type.f32).output(0)
    shape11 = ops.constant(np.array([1, 1], np.int64))

    def mean_square(x) -> ov.Output:
        flat = ops.reshape(x, ops.constant(np.array([-1], np.int64)), False)
        m = ops.reduce_mean(ops.multiply(flat, flat), ops.constant(np.array([0], np.int64)), False)
        return ops.reshape(m, shape11, False).output(0)

    return mean_square(ref), mean_square(ops.subtract(ref, q))


@dataclass
class NoiseModel:
    """The model one statistics pass measures, and per layer the two ``(1, 1)`` tensors to average.

    :param model: float and quantized versions side by side, on the same Parameters.
    :param layers: ``(layer name, type, measured node name, signal output, noise output)``.
    """

    model: ov.Model
    layers: list[tuple[str, str, str, ov.Output, ov.Output]]


def _check_model(model: ov.Model, key: str) -> None:
    if model.get_variables():
        raise NotSupportedError(f"{key}: model '{model.get_friendly_name()}' has a state (ReadValue/Assign "
                                "variables); QuantNoiseEstimator measures stateless models")


def build_full_noise_model(model: ov.Model, key: str = "QuantNoiseEstimator") -> NoiseModel:
    """``full_fq_noise``: the quantized ``model`` and its float version (every FakeQuantize
    bypassed) on the same inputs, with each quantized layer's signal and noise tensors.

    :param model: a model holding FakeQuantize ops (not modified).
    :raises NotSupportedError: a stateful model.
    """
    _check_model(model, key)
    q = model.clone()
    r = model.clone()
    q_ops, r_ops = q.get_ordered_ops(), r.get_ordered_ops()
    if [o.get_type_name() for o in q_ops] != [o.get_type_name() for o in r_ops]:  # pragma: no cover - clone keeps order
        raise RuntimeError("model clones differ")
    position = {o.get_instance_id(): k for k, o in enumerate(q_ops)}
    layers = find_quantized_layers(q)
    strip_fake_quantize(r)
    for qp, rp in zip(q.get_parameters(), r.get_parameters()):
        for target in list(rp.output(0).get_target_inputs()):
            target.replace_source_output(qp.output(0))
    rows = []
    for layer, measured in layers:
        ref = r_ops[position[measured.get_instance_id()]].output(0)
        signal, noise = _noise_outputs(ref, measured.output(0))
        rows.append((layer.get_friendly_name(), layer.get_type_name(), measured.get_friendly_name(), signal, noise))
    return NoiseModel(ov.Model(q.get_results(), q.get_sinks(), q.get_parameters(), q.get_variables(), "quant_noise"), rows)


def build_layerwise_noise_model(model: ov.Model, key: str = "QuantNoiseEstimator") -> NoiseModel:
    """``layerwise_fq_noise``: the float version of ``model`` plus, per quantized layer, a copy
    of that layer (and its bias Add and the carrier ops after its input FakeQuantize ops) that
    reads the FakeQuantize ops on float activations: the layer quantized alone.

    :param model: a model holding FakeQuantize ops (not modified).
    :raises NotSupportedError: a stateful model.
    """
    _check_model(model, key)
    m = model.clone()
    layers = find_quantized_layers(m)
    cache: dict = {}
    keep: set[int] = set()
    copies = []
    for layer, measured in layers:
        nodes = [layer] + ([measured] if measured is not layer else [])
        for inp in layer.inputs():
            src = inp.get_source_output()
            if is_constant_subgraph(src, cache) and src.get_node().get_type_name() != "FakeQuantize":
                continue  # weights: read as they are (a weight FakeQuantize feeds the layer directly)
            chain = _chain_to_fake_quantize(src)
            if chain:
                nodes.extend(n for n in chain if all(n.get_instance_id() != c.get_instance_id() for c in nodes))
        out, copied = _copy_nodes(nodes, measured)
        keep |= copied  # the copy keeps reading the FakeQuantize ops the layer reads
        copies.append((layer, measured, out))
    strip_fake_quantize(m, keep)
    rows = []
    for layer, measured, out in copies:
        signal, noise = _noise_outputs(measured.output(0), out)
        rows.append((layer.get_friendly_name(), layer.get_type_name(), measured.get_friendly_name(), signal, noise))
    return NoiseModel(m, rows)


# -- the algorithm ----------------------------------------------------------------------------------

def measure_noise(model: ov.Model, collect, mode: str = "full_fq_noise", eps: float = 1e-15,
                  key: str = "QuantNoiseEstimator") -> list[NoiseRow]:
    """Per-layer SQNR of ``model`` (holding FakeQuantize ops) against its float version.

    :param model: the quantized model (not modified).
    :param collect: ``collect(model, requests) -> Statistics``: one statistics pass on the
        calibration samples (the engine's, so any engine works).
    :param mode: ``full_fq_noise`` (or ``simplified``) or ``layerwise_fq_noise``.
    :param eps: added to the mean squared noise.
    :param key: names the params in messages.
    :return: one row per quantized layer, in topological order.
    :raises ConfigError: the model has no quantized layer.
    :raises NotSupportedError: a stateful model.
    """
    mode = normalize_mode(mode, key)
    build = build_full_noise_model if mode == "full_fq_noise" else build_layerwise_noise_model
    noise_model = build(model, key)
    if not noise_model.layers:
        raise ConfigError(f"{key}: model '{model.get_friendly_name()}' has no quantized layer (no FakeQuantize op "
                          "and no INT8 weights); QuantNoiseEstimator measures a quantized model: expected "
                          "DefaultQuantization (or MinMaxQuantization) before it in the algorithms, or a quantized "
                          "model (--allow-quantized)")
    requests = []
    for _, _, _, signal, noise in noise_model.layers:
        requests += [StatisticRequest(signal, Reduction.MEAN_PER_CHANNEL, 1),
                     StatisticRequest(noise, Reduction.MEAN_PER_CHANNEL, 1)]
    stats = collect(noise_model.model, requests)
    rows = []
    for (name, op_type, measured, signal, noise), _ in zip(noise_model.layers, range(len(noise_model.layers))):
        s = float(np.asarray(stats.get(signal, Reduction.MEAN_PER_CHANNEL, 1)).reshape(-1)[0])
        n = float(np.asarray(stats.get(noise, Reduction.MEAN_PER_CHANNEL, 1)).reshape(-1)[0])
        value = sqnr_db(s, n, eps)
        rows.append(NoiseRow(name, op_type, None if value is None else round(value, 4), measured))
    return rows


def write_csv(rows: list[NoiseRow], path: Path) -> None:
    """``layer,type,sqnr_db`` with a header, one row per layer (``nan`` for a layer without
    signal), written atomically.

    :raises OutputError: the folder cannot be written.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(CSV_COLUMNS)
            for r in rows:
                w.writerow([r.layer, r.type, "nan" if r.sqnr_db is None else f"{r.sqnr_db:.4f}"])
        os.replace(tmp, path)
    except OSError as e:
        raise OutputError(f"{path}: cannot write the QuantNoiseEstimator CSV ({e.strerror or e}); expected a "
                          "writable path for results_dump_filename") from e


def csv_path(filename: str, output_dir) -> Path:
    """``results_dump_filename`` resolved: absolute as given, relative from the run's output
    folder (``output_dir``), else from the working directory."""
    p = Path(os.path.expanduser(filename))
    if p.is_absolute():
        return p
    return (Path(output_dir) if output_dir is not None else Path.cwd()) / p


def run_quant_noise(algo, model, state) -> None:
    """What :class:`pot_cli.algorithms.registry.QuantNoiseEstimator` runs: measure, log the
    lowest-SQNR layers, write the CSV and ``state.quant_noise``; weights the quantization before
    kept behind FakeQuantize are stored as INT8 afterwards (unless ``keep_uncompressed_weights``)."""
    p = algo.params
    mode = normalize_mode(p.mode, algo.source)
    indices = algo.indices()
    t = time.perf_counter()
    log.info("QuantNoiseEstimator: %s SQNR of every quantized layer on %d sample(s)%s", mode, len(indices),
             " (each layer quantized alone)" if mode == "layerwise_fq_noise" else "")

    def collect(target: ov.Model, requests):
        return algo.engine.collect_statistics(target, requests, indices, "quantization noise")

    rows = measure_noise(model.model, collect, mode, p.eps, algo.source)
    path = None
    if p.results_dump_filename:
        path = csv_path(p.results_dump_filename, getattr(state, "output_dir", None))
        write_csv(rows, path)
    if not state.keep_uncompressed_weights and any(
            op.get_type_name() == "FakeQuantize" for op in model.model.get_ops()):
        from pot_cli.api.model import compress_model_weights

        compress_model_weights(model)
    state.timed("quant_noise_s", t)
    state.quant_noise = {"mode": mode, "type": p.type, "samples": len(indices),
                         "csv": None if path is None else str(path.resolve()),
                         "rows": [{"layer": r.layer, "type": r.type, "sqnr_db": r.sqnr_db} for r in rows]}
    worst = sorted((r for r in rows if r.sqnr_db is not None), key=lambda r: r.sqnr_db)[:5]
    log.info("QuantNoiseEstimator: %d quantized layer(s) measured in %.1f s; lowest SQNR: %s%s", len(rows),
             time.perf_counter() - t, ", ".join(f"{r.layer} ({r.type}) {r.sqnr_db:.1f} dB" for r in worst) or "-",
             f"; CSV {path}" if path is not None else "")
