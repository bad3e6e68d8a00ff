"""SmoothQuant: move the activation outliers of a transformer's FullyConnected layers into their weights.

Xiao et al., "SmoothQuant: Accurate and Efficient Post-Training Quantization for Large Language
Models" (ICML 2023, arXiv:2211.10438). A MatMul ``Y = X @ W`` (``X [..., K]`` an activation,
``W [K, N]`` constant weights) computes the same with ``X' = X / s`` and ``W' = diag(s) @ W`` for
any positive per-input-channel ``s``. A LayerNorm output with a few channels tens of times wider
than the rest (common in trained transformers) forces a per-tensor activation quantizer to a
coarse step; with

    s_k = max|X_k| ** alpha / max|W_k| ** (1 - alpha)

those channels shrink and the weights, quantized per output channel, take the width instead.
As in NNCF's SmoothQuant for OpenVINO (its default for ``ModelType.TRANSFORMER``: ``alpha``
0.95 for MatMul, none for convolutions), ``s`` is clipped to ``[q10(s), 100]`` (the 10th
percentile of ``s``), MatMuls reading the same tensor share one ``s`` (that of the layer whose
``min(s) / max(s)`` is largest), ``max|X_k|`` is the largest ``|x|`` of channel ``k`` over the
samples of the statistics pass (the pipeline runs it on the first 64 calibration samples), and
``1 / s`` becomes a Multiply in front of those MatMuls (the CPU plugin fuses it into the
preceding element-wise op or the FakeQuantize).

Unlike NNCF, which uses ``alpha`` 0.95 everywhere, the strength may be chosen per tensor: given
a few captured samples of the tensor, the one among :data:`ALPHA_CHOICES` and no smoothing whose
simulated 8-bit outputs of its layers are closest to the float ones (the local output-error
criterion of Intel Neural Compressor's automatic alpha tuning). A fixed 0.95 lowered
minilm_l6_v2's output cosine to FP32 (0.9846 -> 0.9829, minimum 0.968 -> 0.916); the search
raised it (0.9882).

Only MatMuls that DefaultQuantization will quantize (a weight quantizer on a 2-D constant, an
activation first input) are smoothed; a weight shared by several MatMuls (a tied embedding) is
left alone, since one scale per consumer would need two copies.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from pot_cli.algorithms.min_max import MinMaxQuantization, MinMaxSettings
from pot_cli.graph.model import evaluate_constants
from pot_cli.statistics.collector import Reduction, StatisticRequest, Statistics

log = logging.getLogger("pot")

#: NNCF's default ``alpha`` for MatMul in ``ModelType.TRANSFORMER``
DEFAULT_ALPHA = 0.95
#: bounds of ``s``: the 10th percentile of the layer's scales, and this
MAX_SCALE = 100.0
#: smallest statistic used (NNCF's clip of both statistics)
MIN_STATISTIC = 1e-5
#: strengths tried per tensor when activations were captured (besides no smoothing)
ALPHA_CHOICES = (0.5, 0.75, 0.95)
#: rows (tokens) per captured sample used by the search
SEARCH_ROWS = 256
#: output channels per layer used by the search (a BERT-base FFN has 3072)
SEARCH_COLUMNS = 256


@dataclass
class SmoothedTensor:
    """One smoothed activation tensor: report row.

    :param tensor: ``<producer friendly name>:<output port>``.
    :param layers: friendly names of the MatMuls reading ``X / s``.
    :param scale_min: smallest ``s``.
    :param scale_max: largest ``s``.
    :param range_before: ``max_k max|X_k|`` over the channels (the per-tensor width before).
    :param range_after: ``max_k max|X_k| / s_k`` (after).
    :param alpha: the strength used.
    """

    tensor: str
    layers: list[str]
    scale_min: float
    scale_max: float
    range_before: float
    range_after: float
    alpha: float


@dataclass
class _Target:
    node: ov.Node
    transpose_b: bool  # W is [N, K]


@dataclass
class _Group:
    source: ov.Output
    targets: list[_Target] = field(default_factory=list)


class SmoothQuant:
    """Plan on the float model, then smooth it in place from per-channel statistics.

    :param settings: the quantization settings (which MatMuls get quantized).
    :param alpha: migration strength in [0, 1] (0: nothing moves to the weights, 1: all).
    """

    def __init__(self, settings: MinMaxSettings, alpha: float = DEFAULT_ALPHA):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha {alpha}: expected a value in [0, 1]")
        self.settings = settings
        self.alpha = alpha
        self.groups: list[_Group] = []

    def statistic_requests(self, model: ov.Model, min_max: MinMaxQuantization) -> list[StatisticRequest]:
        """Find the MatMuls to smooth in ``min_max``'s plan of ``model`` and return the per-channel
        minimum and maximum of their activation inputs (channel = last axis).

        :param model: the float model.
        :param min_max: MinMaxQuantization already planned on ``model``.
        """
        users: dict[ov.Output, int] = defaultdict(int)
        for w in min_max.weights:
            users[w.source] += 1
        by_source: dict[ov.Output, _Group] = {}
        for w in min_max.weights:
            node = w.node
            if node.get_type_name() != "MatMul" or w.port != 1 or users[w.source] > 1:
                continue
            x = node.input_value(0)
            attrs = node.get_attributes()
            if attrs.get("transpose_a") or len(w.source.get_partial_shape()) != 2 \
                    or x.get_partial_shape().rank.is_dynamic or min_max.is_constant(x):
                continue
            by_source.setdefault(x, _Group(x)).targets.append(_Target(node, bool(attrs.get("transpose_b"))))
        self.groups = list(by_source.values())
        reqs = []
        for g in self.groups:
            reqs.append(StatisticRequest(g.source, Reduction.MIN_PER_CHANNEL, -1))
            reqs.append(StatisticRequest(g.source, Reduction.MAX_PER_CHANNEL, -1))
        return reqs

    @staticmethod
    def _scales(act: np.ndarray, weights: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
        s = act ** alpha / (weights ** (1.0 - alpha) + np.finfo(np.float32).eps)
        s = np.clip(s, np.quantile(s, 0.1), MAX_SCALE)
        return s, float(s.min() / (s.max() + np.finfo(np.float32).eps))

    def _best_scales(self, act: np.ndarray, w_maxes: list[np.ndarray], alpha: float) -> np.ndarray:
        """The group's ``s``: that of the layer with the largest ``min(s) / max(s)``.

        :param w_maxes: per layer, ``max|W_k|`` per input channel, shape ``(K,)``.
        """
        best, best_ratio = None, 0.0
        for w_max in w_maxes:
            s, ratio = self._scales(act, w_max, alpha)
            if best is None or ratio > best_ratio:
                best, best_ratio = s, ratio
        return best

    def _search(self, act, w, w_maxes, rows: list[np.ndarray]) -> float | None:
        """The strength (or None: no smoothing) with the smallest simulated output error.

        :param w: per layer, the weights as ``[K, N]`` float32.
        """
        x = [r.reshape(-1, r.shape[-1]) for r in rows]
        rng = np.random.default_rng(0)
        x = [r[rng.choice(len(r), SEARCH_ROWS, replace=False)] if len(r) > SEARCH_ROWS else r for r in x]
        # output channels are quantized apart, so a random subset of them estimates the error
        sim = [wi[:, np.sort(rng.choice(wi.shape[1], SEARCH_COLUMNS, replace=False))]
               if wi.shape[1] > SEARCH_COLUMNS else wi for wi in w]
        ref = [[xi @ wi for wi in sim] for xi in x]
        errors = {}
        for alpha in (None,) + ALPHA_CHOICES:
            s = np.ones(act.size) if alpha is None else self._best_scales(act, w_maxes, alpha)
            errors[alpha] = _simulated_error(x, sim, ref, s.astype(np.float32), self.settings)
        return min(errors, key=lambda a: (errors[a], a is not None))

    def apply(self, model: ov.Model, stats: Statistics,
              captured: list[list[np.ndarray]] | None = None) -> list[SmoothedTensor]:
        """Smooth ``model`` in place.

        :param model: the model planned by :meth:`statistic_requests`.
        :param stats: the requested statistics.
        :param captured: per sample, the value of every group's tensor (in ``groups`` order), for
            a few samples: each tensor then gets the strength among :data:`ALPHA_CHOICES` (and
            none) whose simulated 8-bit FullyConnected outputs are closest to the float ones on
            these samples (:func:`_simulated_error`); without it, ``alpha`` everywhere.
        :return: one row per smoothed tensor.
        """
        done = []
        # every group's weights at once: one compilation for the Constant(f16) -> Convert ones
        flat = evaluate_constants([t.node.input_value(1) for g in self.groups for t in g.targets])
        per_group, k = [], 0
        for g in self.groups:
            per_group.append(flat[k:k + len(g.targets)])
            k += len(g.targets)
        for gi, g in enumerate(self.groups):
            lo = np.asarray(stats.get(g.source, Reduction.MIN_PER_CHANNEL, -1), dtype=np.float64).reshape(-1)
            hi = np.asarray(stats.get(g.source, Reduction.MAX_PER_CHANNEL, -1), dtype=np.float64).reshape(-1)
            if lo.size == 0 or lo.size != hi.size:
                continue
            act = np.maximum(np.maximum(np.abs(lo), np.abs(hi)), MIN_STATISTIC)
            # each layer's weights as [K, N] and their largest |w| per input channel (from every output channel)
            w = [np.asarray(v, dtype=np.float32).T if t.transpose_b else np.asarray(v, dtype=np.float32)
                 for v, t in zip(per_group[gi], g.targets)]
            w_maxes = [np.maximum(np.abs(wi).max(axis=1).astype(np.float64), MIN_STATISTIC) for wi in w]
            if any(m.size != act.size for m in w_maxes):
                continue  # a weight that does not match the activation's channels
            alpha = self.alpha
            if captured:
                rows = [np.asarray(c[gi], dtype=np.float32) for c in captured]
                alpha = self._search(act, w, w_maxes, rows)
                if alpha is None:
                    continue  # smoothing does not help this tensor
            best = self._best_scales(act, w_maxes, alpha)
            for t, v in zip(g.targets, per_group[gi]):
                v = np.asarray(v, dtype=np.float32)
                scaled = v * (best[None, :] if t.transpose_b else best[:, None]).astype(np.float32)
                t.node.input(1).replace_source_output(ops.constant(scaled).output(0))
            rank = g.source.get_partial_shape().rank.get_length()
            inv = (1.0 / best).astype(np.float32).reshape([1] * (rank - 1) + [-1])
            mul = ops.multiply(g.source, ops.constant(inv))
            producer = g.source.get_node().get_friendly_name()
            mul.set_friendly_name(f"{producer}/smooth_quant_{g.source.get_index()}")
            for t in g.targets:
                t.node.input(0).replace_source_output(mul.output(0))
            done.append(SmoothedTensor(f"{producer}:{g.source.get_index()}",
                                       [t.node.get_friendly_name() for t in g.targets],
                                       float(best.min()), float(best.max()), float(act.max()),
                                       float((act / best).max()), alpha))
        model.validate_nodes_and_infer_types()
        return done



def _fake_quantize(x: np.ndarray, low, high, levels: int) -> np.ndarray:
    step = (high - low) / (levels - 1)
    return np.clip(np.round((np.clip(x, low, high) - low) / step), 0, levels - 1) * step + low


def _simulated_error(rows: list[np.ndarray], weights: list[np.ndarray], refs: list[list[np.ndarray]],
                     s: np.ndarray, settings: MinMaxSettings) -> float:
    """Relative squared error of the 8-bit outputs of ``(X / s) @ (diag(s) W)`` over the captured
    rows: activations per tensor, asymmetric, the range the mean of the per-sample minima and
    maxima (the default estimator); weights symmetric per output channel, 255 levels.

    :param rows: per sample ``[rows, K]`` activations.
    :param weights: ``[K, N]`` per layer.
    :param refs: per sample, per layer, the float outputs.
    """
    xs = [r / s for r in rows]
    low = min(0.0, float(np.mean([r.min() for r in xs])))
    high = max(0.0, float(np.mean([r.max() for r in xs])))
    if high - low <= 0:
        return 0.0
    err = norm = 0.0
    for w, layer in zip(weights, zip(*refs)):
        ws = w * s[:, None]
        m = np.maximum(np.abs(ws).max(axis=0, keepdims=True), 1e-30)
        wq = np.round(ws / m * 127.0) * (m / 127.0)
        for x, ref in zip(xs, layer):
            y = _fake_quantize(x, low, high, 256) @ wq
            err += float(((y - ref) ** 2).sum())
            norm += float((ref ** 2).sum())
    return err / max(norm, 1e-30)
