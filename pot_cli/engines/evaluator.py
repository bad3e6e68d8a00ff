"""Asynchronous evaluation of models on an Accuracy-Checker-style dataset.

One :class:`Evaluator` serves a whole run: it keeps the decoded samples in memory (up to a byte
budget, so the FP32 model, the fully quantized one and every candidate of
AccuracyAwareQuantization read each image once), runs samples through an
:class:`openvino.AsyncInferQueue` that is created once per compiled model and reused, and turns
outputs into metrics with :mod:`pot_cli.engines.metrics`.

Models are compiled with ``INFERENCE_PRECISION_HINT=f32`` on CPU so that the FP32 reference is
not silently run in bf16; INT8 layers of a quantized model still run in INT8.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import openvino as ov

from pot_cli.engines.ac.base import Outputs
from pot_cli.engines.accuracy_checker import ACDataset
from pot_cli.engines.metrics import Metric
from pot_cli.errors import EngineError, ModelError, PotError, runtime_error_text
from pot_cli.graph.model import get_core
from pot_cli.statistics.collector import is_stateful, start_sample, wait_for_requests

log = logging.getLogger("pot")

#: decoded samples kept in memory at most (bytes)
CACHE_LIMIT_BYTES = 1 << 30


@dataclass
class Evaluation:
    """Metrics of one model on a set of samples.

    :param metrics: metric name -> value on ``indices``.
    :param per_sample: metric name -> per-sample values, float64 ``(len(indices),)``, in the
        order of ``indices``.
    :param indices: dataset indices evaluated, in order.
    :param outputs: index -> the raw output of that sample (e.g. ``(1, 10)`` float32 scores, or
        every output as :class:`~pot_cli.engines.ac.base.Outputs` for a decoding adapter).
    :param time_s: wall-clock seconds of inference.
    """

    metrics: dict[str, float]
    per_sample: dict[str, np.ndarray]
    indices: list[int]
    outputs: dict[int, np.ndarray] = field(default_factory=dict)
    time_s: float = 0.0


def _output_names(output: ov.Output) -> list[str]:
    """Every name of a model output: its tensor names, then the producing node's friendly name."""
    names = sorted(output.get_names())
    try:
        producer = output.get_node().input_value(0).get_node().get_friendly_name()
    except Exception:  # an output without a producer (never in a valid model)
        producer = None
    return names + ([producer] if producer and producer not in names else []) + [output.get_node().get_friendly_name()]


class Evaluator:
    """Runs models on a bound :class:`ACDataset` and computes its metrics.

    :param dataset: the evaluation dataset, bound to the model (:meth:`ACDataset.bind`).
    :param metrics: metrics to compute (default: the dataset's).
    :param device: OpenVINO device.
    :param requests_number: parallel infer requests (default: the plugin's optimal number).
    :param output: output tensor or node name the metrics read (default: the first output).
    :param annotations: per-sample annotations replacing the dataset's (annotation-free mode).
    :param decoder: the launcher's decoding adapter (:class:`~pot_cli.engines.ac.base.Adapter`):
        it reads every output of a sample and gives the prediction the dataset's postprocessing
        and metrics read; None for the raw-score adapters (``classification``, ``regression``).
    """

    def __init__(self, dataset: ACDataset, metrics: Sequence[Metric] | None = None, device: str = "CPU",
                 requests_number: int | None = None, output: str | None = None,
                 annotations: Sequence[Any] | None = None, decoder: Any = None):
        self.dataset = dataset
        self.metrics = tuple(metrics if metrics is not None else dataset.metrics)
        self.device = device
        self.requests_number = requests_number
        self.output = output
        self.decoder = decoder
        self.annotations = list(annotations) if annotations is not None else dataset.annotations
        #: seconds spent decoding, postprocessing and computing metrics (``score``), over the run
        self.score_time_s = 0.0
        #: samples run through a model (``infer``) and samples scored (``score``), over the run
        self.inferred_samples = 0
        self.scored_samples = 0
        self._cache: dict[int, dict[str, np.ndarray]] = {}
        self._cache_bytes = 0
        self._queues: collections.OrderedDict[int, tuple[ov.CompiledModel, ov.AsyncInferQueue]] = \
            collections.OrderedDict()

    def with_annotations(self, annotations: Sequence[Any], metrics: Sequence[Metric] | None = None) -> "Evaluator":
        """A sibling evaluator sharing this one's sample cache, with other annotations."""
        other = Evaluator(self.dataset, metrics if metrics is not None else self.metrics, self.device,
                          self.requests_number, self.output, annotations, self.decoder)
        other._cache = self._cache
        return other

    # -- compile and run

    def compile(self, model: ov.Model) -> ov.CompiledModel:
        """Compile ``model`` for evaluation (f32 inference precision on CPU, throughput hint).

        :raises ModelError: when the device cannot compile it.
        """
        config: dict[str, str] = {"PERFORMANCE_HINT": "THROUGHPUT"}
        if self.device.upper().startswith("CPU"):
            config["INFERENCE_PRECISION_HINT"] = "f32"
        try:
            return get_core().compile_model(model, self.device, config)
        except Exception as e:
            first = runtime_error_text(e)
            raise ModelError(f"model '{model.get_friendly_name()}': {self.device} cannot compile it: {first}") from e

    def _queue(self, compiled: ov.CompiledModel) -> ov.AsyncInferQueue:
        key = id(compiled)
        if key in self._queues:
            self._queues.move_to_end(key)
            return self._queues[key][1]
        n = self.requests_number or compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
        queue = ov.AsyncInferQueue(compiled, max(1, int(n)))
        self._queues[key] = (compiled, queue)  # holding ``compiled`` keeps its id unique
        while len(self._queues) > 4:
            self._queues.popitem(last=False)
        return queue

    def _output_index(self, compiled: ov.CompiledModel) -> int | None:
        if self.decoder is not None:
            return None  # every output
        if self.output is None:
            return 0
        for k, out in enumerate(compiled.outputs):
            producer = out.get_node().input_value(0).get_node().get_friendly_name()
            if self.output in out.get_names() or self.output in (producer, out.get_node().get_friendly_name()):
                return k
        names = ", ".join(sorted(n for o in compiled.outputs for n in o.get_names())) or "(unnamed)"
        raise EngineError(f"adapter output_blob '{self.output}': the model has no such output; expected one of: {names}")

    @staticmethod
    def _read_output(request: ov.InferRequest, k: int | None, names: list | None = None):
        """A copy of the output the metrics read (``k``: its index), or of every output
        (``k`` None) as :class:`Outputs` with ``names`` (one list per output)."""
        if k is not None:
            return np.array(request.get_output_tensor(k).data, copy=True)
        arrays = [np.array(request.get_output_tensor(j).data, copy=True) for j in range(len(names))]
        return Outputs(arrays, names)

    def _samples(self, indices: Sequence[int]) -> Iterable[tuple[int, dict[str, np.ndarray]]]:
        missing = [i for i in indices if i not in self._cache]
        for i in indices:
            if i in self._cache:
                yield i, self._cache[i]
        for i, sample in self.dataset.iter_samples(missing):
            size = sum(a.nbytes for a in sample.values())
            if self._cache_bytes + size <= CACHE_LIMIT_BYTES:
                self._cache[i] = sample
                self._cache_bytes += size
            yield i, sample

    def infer(self, model: ov.Model | ov.CompiledModel, indices: Sequence[int],
              progress: Callable[[int], None] | None = None,
              extra_inputs: dict[str, np.ndarray] | None = None,
              own_outputs: int | None = None) -> dict[int, np.ndarray]:
        """Run ``indices`` through ``model`` asynchronously.

        :param model: a model (compiled here) or a compiled model (its infer requests are reused
            across calls).
        :param indices: dataset indices.
        :param progress: called with the number of finished samples.
        :param extra_inputs: inputs the model has beside the dataset's, the same for every sample
            (the sensitivity analysis' gate vector).
        :param own_outputs: how many of the first outputs are the model's own (the sensitivity
            analysis' comparison outputs follow them and are not read); ``None``: all.
        :return: index -> copy of the metric output of that sample.
        :raises EngineError: when inference fails.
        """
        compiled = model if isinstance(model, ov.CompiledModel) else self.compile(model)
        queue = self._queue(compiled)
        k = self._output_index(compiled)
        names = [_output_names(o) for o in compiled.outputs[:own_outputs]] if k is None else None
        outputs: dict[int, np.ndarray] = {}
        errors: list[str] = []
        lock = threading.Lock()

        def on_done(request: ov.InferRequest, index: int) -> None:
            try:
                value = self._read_output(request, k, names)
            except Exception as e:  # reported after wait_all
                errors.append(str(e) or type(e).__name__)
                return
            with lock:
                outputs[index] = value

        queue.set_callback(on_done)
        stateful = is_stateful(queue)
        drained = False
        try:
            for i, sample in self._samples(indices):
                start_sample(queue, {**sample, **extra_inputs} if extra_inputs else sample, i, stateful)
                if progress is not None:
                    progress(len(outputs))
            queue.wait_all()
            drained = True
        except PotError:
            raise
        except Exception as e:
            first = runtime_error_text(e)
            raise EngineError(f"inference failed during evaluation: {first}") from e
        finally:
            if not drained:
                wait_for_requests(queue)
        if errors:
            raise EngineError(f"inference failed during evaluation: {errors[0]}")
        self.inferred_samples += len(outputs)
        if progress is not None:
            progress(len(outputs))
        return outputs

    # -- metrics

    def score(self, outputs: dict[int, np.ndarray], indices: Sequence[int], per_sample: bool = True) -> Evaluation:
        """Metrics of ``outputs`` on ``indices`` against the annotations.

        :param per_sample: also the per-sample values (``Evaluation.per_sample``; empty without);
            AccuracyAwareQuantization's ranking only reads the metrics.
        :raises EngineError: when there are no annotations.
        """
        if self.annotations is None:
            raise EngineError(f"{self.dataset.where}: no annotations; cannot compute metrics")
        t = time.perf_counter()
        indices = list(indices)
        predictions, annotations = self._pairs(outputs, indices)
        values = {m.name: np.array([m.per_sample(p, a) for p, a in zip(predictions, annotations)], dtype=np.float64)
                  for m in self.metrics} if per_sample else {}
        metrics = {m.name: float(m.evaluate(predictions, annotations)) for m in self.metrics}
        self.score_time_s += time.perf_counter() - t
        self.scored_samples += len(indices)
        return Evaluation(metrics, values, indices, {i: outputs[i] for i in indices})

    def _pairs(self, outputs: dict[int, Any], indices: list[int]) -> tuple[list, list]:
        """``(predictions, annotations)`` of ``indices``: the raw outputs and annotations as they
        are, or, with a decoding adapter, its predictions and the dataset's postprocessing applied
        to both (on copies: the annotations stay as converted)."""
        annotations = [self.annotations[i] for i in indices]
        if self.decoder is None:
            return [outputs[i] for i in indices], annotations
        ds = self.dataset
        predictions = []
        for n, i in enumerate(indices):
            meta = ds.metas.get(i)
            if meta is None:  # every sample inferred here was loaded by ds.load, which records it
                raise EngineError(f"{ds.where}: sample {ds.identifier(i)} has no image metadata; expected it to be "
                                  "read through the dataset before scoring")
            prediction = self.decoder.process(outputs[i], meta)
            annotation = annotations[n]
            for step in ds.postprocessing:
                annotation, prediction = step(annotation, prediction, meta, ds.dataset_meta)
            predictions.append(prediction)
            annotations[n] = annotation
        return predictions, annotations

    def evaluate(self, model: ov.Model | ov.CompiledModel, indices: Sequence[int] | None = None,
                 progress: Callable[[int], None] | None = None) -> Evaluation:
        """Infer and score ``model`` on ``indices`` (default: the whole dataset)."""
        indices = list(range(len(self.dataset))) if indices is None else list(indices)
        t = time.perf_counter()
        outputs = self.infer(model, indices, progress)
        result = self.score(outputs, indices)
        result.time_s = time.perf_counter() - t
        return result
