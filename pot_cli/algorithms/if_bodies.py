"""Quantize the bodies of If operations with the samples that took each branch.

An ``If`` (opset8) runs ``then_body`` when its condition is true and ``else_body`` otherwise;
each body is a graph of its own, which the main graph's statistics pass cannot observe. As NNCF
does for OpenVINO models (``nncf.quantize`` on a model with If: one dataset per body built from
the If's inputs), the bodies are quantized as models of their own:

1. plan DefaultQuantization on every body of every top-level If whose condition depends on the
   inputs (:func:`pot_cli.statistics.branches.if_conditions`); a body with nothing to quantize is
   left alone and costs nothing;
2. run the float model once more over the calibration samples with the condition and the data
   inputs of those Ifs as outputs (f32 precision), and keep, per body, the body-parameter values
   of the samples that took that branch;
3. collect the body's statistics on those values and quantize it in place, as the main graph
   (placement, ranges, bias correction, INT8 weights); Ifs inside a body are handled the same
   way, from the body's samples (up to :data:`MAX_DEPTH` levels).

A branch that no sample took stays in floating point (the pipeline warns once per such branch).
Loop and TensorIterator bodies stay in floating point.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import openvino as ov

from pot_cli.algorithms.default import DefaultQuantization, QuantizerRecord
from pot_cli.errors import EngineError, ModelError
from pot_cli.statistics.branches import if_conditions
from pot_cli.statistics.collector import collect_statistics, compile_with_outputs, run_samples

log = logging.getLogger("pot")

#: nesting depth of Ifs inside If bodies that still get quantized
MAX_DEPTH = 4
#: bytes of captured body inputs kept in memory, over all bodies of one level; samples past it
#: are not used for the bodies (the main graph still uses them)
MAX_CAPTURE_BYTES = 2 << 30

BRANCHES = ("then", "else")


@dataclass
class BodyQuantization:
    """One quantized If body.

    :param node: friendly name of the If (for a nested If: ``outer/inner``).
    :param branch: ``"then"`` or ``"else"``.
    :param samples: calibration samples that took this branch and were used.
    :param quantizers: the body's activation FakeQuantize and weight records.
    :param bias_corrections: biases the correction changed.
    """

    node: str
    branch: str
    samples: int
    quantizers: list[QuantizerRecord] = field(default_factory=list)
    bias_corrections: int = 0

    def report(self) -> dict:
        """One entry of report.json's ``if_bodies``."""
        return {"node": self.node, "branch": self.branch, "samples": self.samples,
                "activation_fake_quantize": sum(1 for q in self.quantizers if q.kind == "activation"),
                "weights": sum(1 for q in self.quantizers if q.kind == "weights"),
                "bias_corrections": self.bias_corrections,
                "quantizers": [q.name for q in self.quantizers]}


@dataclass
class _Body:
    node: ov.Node
    index: int  # 0 then, 1 else
    model: ov.Model
    algorithm: DefaultQuantization | None = None
    requests: list = field(default_factory=list)
    samples: list[dict[int, np.ndarray]] = field(default_factory=list)


def _plan(model: ov.Model, make_algorithm, requests_number: int | None) -> list[_Body]:
    bodies = []
    for node, _ in if_conditions(model):
        for index in (0, 1):
            body = _Body(node, index, node.get_function(index))
            if len(node.get_input_descriptions(index)) != len(body.model.get_parameters()):
                continue  # a body parameter fed by no input: nothing to capture it from

            def collect(target, requests, body=body):  # BiasCorrection's second pass, on the body's samples
                return collect_statistics(target, requests, enumerate(body.samples), len(body.samples),
                                          requests_number=requests_number)

            body.algorithm = make_algorithm(body.model, collect)
            body.requests = body.algorithm.statistic_requests(body.model)
            mm = body.algorithm.min_max
            if mm.activations or mm.weights or if_conditions(body.model):
                bodies.append(body)
    return bodies


def _capture(model: ov.Model, bodies: list[_Body], samples: Iterable[tuple[int, dict]],
             requests_number: int | None) -> int:
    """One inference pass of ``model`` over ``samples``: fills each body's ``samples`` with the
    body-parameter values (``{parameter index: array}``) of the samples that took its branch.

    :return: samples run.
    :raises EngineError: when inference fails.
    """
    nodes = list(dict.fromkeys(b.node for b in bodies))
    wanted = {(b.node.get_instance_id(), b.index): b for b in bodies}
    outputs: list[ov.Output] = []
    for node in nodes:
        for inp in node.inputs():
            if inp.get_source_output() not in outputs:
                outputs.append(inp.get_source_output())
    position = {o: k for k, o in enumerate(outputs)}
    compiled = compile_with_outputs(model, outputs)
    done: dict[int, list[np.ndarray]] = {}
    lock = threading.Lock()
    used = kept_bytes = 0
    full = False

    def on_done(request: ov.InferRequest, k: int) -> None:
        values = [np.array(request.get_output_tensor(j).data) for j in range(len(outputs))]
        with lock:
            done[k] = values

    def drain() -> None:  # in sample order, so the bodies' statistics are the same on every run
        nonlocal used, kept_bytes, full
        while True:
            with lock:
                values = done.pop(used, None)
            if values is None:
                return
            used += 1
            for node in nodes:
                cond = bool(np.asarray(values[position[node.input_value(0)]]).reshape(-1)[0])
                index = 0 if cond else 1
                body = wanted.get((node.get_instance_id(), index))
                if body is None or full:
                    continue
                feed = {d.body_parameter_index: values[position[node.input_value(d.input_index)]]
                        for d in node.get_input_descriptions(index)}
                size = sum(v.nbytes for v in feed.values())
                if kept_bytes + size > MAX_CAPTURE_BYTES:
                    full = True
                    log.info("If bodies: %.1f GiB of captured inputs reached; later samples are not used "
                             "for the bodies", MAX_CAPTURE_BYTES / (1 << 30))
                    continue
                kept_bytes += size
                body.samples.append(feed)

    count = run_samples(compiled, samples, on_done, "while capturing If inputs", requests_number, after_start=drain)
    drain()
    return count


def quantize_if_bodies(model: ov.Model, samples: Iterable[tuple[int, dict]],
                       make_algorithm: Callable[[ov.Model, Callable], DefaultQuantization],
                       requests_number: int | None = None, prefix: str = "", depth: int = 0) -> list[BodyQuantization]:
    """Quantize, in place, the bodies of ``model``'s top-level Ifs that the samples reach.

    :param model: the float model (its main graph may be quantized afterwards; this only edits
        the bodies, and reads the main graph's float values).
    :param samples: ``(key, {input: array})`` pairs, as for
        :func:`pot_cli.statistics.collector.collect_statistics`; consumed only when some body has
        something to quantize.
    :param make_algorithm: ``make_algorithm(body, collect)``: a new, unplanned DefaultQuantization
        for ``body`` (its settings may depend on the body, e.g. the ignored scope restricted to the
        body's nodes); ``collect(model, requests) -> Statistics`` runs the body's samples, for
        BiasCorrection's second pass.
    :param requests_number: parallel infer requests (default: the plugin's optimal number).
    :param prefix: name prefix of nested Ifs (``"outer/"``).
    :param depth: nesting depth (bodies deeper than :data:`MAX_DEPTH` stay in floating point).
    :return: one entry per quantized body (branches no sample took are absent). A body whose
        inference fails here stays in floating point, with a warning.
    :raises PotError: as raised by the sample iterator (data errors).
    """
    if depth >= MAX_DEPTH:
        return []
    bodies = _plan(model, make_algorithm, requests_number)
    if not bodies:
        return []
    log.info("If bodies: capturing the inputs of %d If op(s) to quantize %d body(ies)",
             len({b.node.get_instance_id() for b in bodies}), len(bodies))
    try:
        _capture(model, bodies, samples, requests_number)
    except (EngineError, ModelError) as e:  # the main graph is still quantized
        log.warning("If bodies kept in floating point: %s", e.format_message())
        return []
    done: list[BodyQuantization] = []
    for body in bodies:
        if not body.samples:
            continue  # never taken: the pipeline's warning covers it
        name = prefix + body.node.get_friendly_name()
        n = len(body.samples)
        # Ifs inside the body first: their capture reads the body's float values
        nested = quantize_if_bodies(body.model, enumerate(body.samples), make_algorithm, requests_number,
                                    prefix=name + "/", depth=depth + 1)
        quantized = BodyQuantization(name, BRANCHES[body.index], n)
        if body.algorithm.min_max.activations or body.algorithm.min_max.weights:
            try:
                stats = collect_statistics(body.model, body.requests, enumerate(body.samples), n,
                                           requests_number=requests_number)
            except (EngineError, ModelError) as e:  # nothing edited yet: the body stays as it was
                log.warning("If '%s': %s body kept in floating point: %s", name, quantized.branch,
                            e.format_message())
                done.extend(nested)
                continue
            result = body.algorithm.apply(body.model, stats)
            quantized.quantizers = result.quantizers
            quantized.bias_corrections = sum(1 for b in result.bias_corrections if b.applied)
            log.info("If '%s': %s body quantized on the %d sample(s) that took it: %d activation FakeQuantize, "
                     "%d weight tensor(s)", name, quantized.branch, n,
                     sum(1 for q in quantized.quantizers if q.kind == "activation"),
                     sum(1 for q in quantized.quantizers if q.kind == "weights"))
            done.append(quantized)
        done.extend(nested)
        body.samples = []
    model.validate_nodes_and_infer_types()
    return done
