"""Statistics reduced on the host with NumPy, for engines that run the model themselves.

A custom :class:`pot_cli.api.Engine` (the original POT's contract) receives a ``stats_layout``
``{tensor name: {statistic name: function}}`` in ``predict`` and returns, per tensor and
statistic, the function's value for every sample. The functions here compute the same
per-sample values as the in-graph reducers of :mod:`pot_cli.statistics.collector`, and
:func:`fold_statistics` folds them the same way, so a custom engine gives the same
:class:`~pot_cli.statistics.collector.Statistics` as the built-in one.
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

import numpy as np

from pot_cli.statistics.collector import Reduction, StatisticRequest, Statistics, _Accumulator


def _other_axes(x: np.ndarray, channel_axis: int) -> tuple[int, ...]:
    axis = channel_axis % x.ndim
    return tuple(a for a in range(x.ndim) if a != axis)


def reduce_sample(request: StatisticRequest, x: np.ndarray) -> np.ndarray:
    """The per-sample value of ``request`` on one sample's tensor ``x`` (batch 1, any rank).

    :param request: what to compute (:class:`~pot_cli.statistics.collector.Reduction`).
    :param x: the tensor's value, e.g. ``(1, C, H, W)`` float32.
    :return: float64: a scalar for MIN/MAX and per-tensor quantiles, ``(C,)`` for per-channel
        reductions, ``(rank,)`` for SHAPE. Quantiles as ``np.quantile`` (linear).
    """
    x = np.asarray(x)
    r = request.reduction
    if r is Reduction.SHAPE:
        return np.array(x.shape, dtype=np.float64)
    x = x.astype(np.float64, copy=False)
    p = request.outlier_prob
    if r is Reduction.MIN:
        return np.array(x.min())
    if r is Reduction.MAX:
        return np.array(x.max())
    if r is Reduction.QUANTILE_LOW:
        return np.array(np.quantile(x, p))
    if r is Reduction.QUANTILE_HIGH:
        return np.array(np.quantile(x, 1 - p))
    if r is Reduction.ABS_QUANTILE:
        return np.array(np.quantile(np.abs(x), 1 - p))
    axes = _other_axes(x, request.channel_axis)
    rows = np.moveaxis(x, request.channel_axis, 0).reshape(x.shape[request.channel_axis], -1)
    per_channel: dict[Reduction, Callable[[], np.ndarray]] = {
        Reduction.MIN_PER_CHANNEL: lambda: x.min(axis=axes),
        Reduction.MAX_PER_CHANNEL: lambda: x.max(axis=axes),
        Reduction.MEAN_PER_CHANNEL: lambda: x.mean(axis=axes),
        Reduction.MEAN_MIN_PER_CHANNEL: lambda: x.min(axis=axes),
        Reduction.MEAN_MAX_PER_CHANNEL: lambda: x.max(axis=axes),
        Reduction.QUANTILE_LOW_PER_CHANNEL: lambda: np.quantile(rows, p, axis=1),
        Reduction.QUANTILE_HIGH_PER_CHANNEL: lambda: np.quantile(rows, 1 - p, axis=1),
        Reduction.ABS_QUANTILE_PER_CHANNEL: lambda: np.quantile(np.abs(rows), 1 - p, axis=1),
    }
    return np.asarray(per_channel[r](), dtype=np.float64)


def tensor_key(request: StatisticRequest) -> str:
    """The ``stats_layout`` key of a request's tensor: the producer's friendly name, with
    ``.<port>`` appended for an output other than 0 (the name of that tensor in the statistics
    model given to the engine)."""
    node, port = request.output.get_node(), request.output.get_index()
    return node.get_friendly_name() + (f".{port}" if port else "")


def statistic_key(request: StatisticRequest) -> str:
    """The ``stats_layout`` statistic name of a request, e.g. ``max_per_channel@1`` or
    ``quantile_high#0.0001``."""
    key = request.reduction.value
    if request.channel_axis is not None:
        key += f"@{request.channel_axis}"
    if request.outlier_prob is not None:
        key += f"#{request.outlier_prob:g}"
    return key


def stats_layout(requests: Sequence[StatisticRequest],
                 prefix: str = "") -> dict[str, dict[str, Callable[[np.ndarray], np.ndarray]]]:
    """POT's ``stats_layout`` for ``requests``: ``{tensor key: {statistic key: fn(array) -> value}}``.

    :param prefix: prepended to every tensor key (``'<sub-model>_'`` for a cascade's sub-model).
    """
    layout: dict[str, dict[str, Callable]] = {}
    for r in requests:
        layout.setdefault(prefix + tensor_key(r), {})[statistic_key(r)] = partial(reduce_sample, r)
    return layout


def fold_statistics(requests: Sequence[StatisticRequest], values: dict[str, dict[str, list]],
                    prefix: str = "") -> Statistics:
    """Fold an engine's per-sample values into :class:`Statistics`.

    :param requests: the requests ``stats_layout`` was made of.
    :param values: ``{tensor key: {statistic key: [value per sample, in dataset order]}}``, the
        second element of ``Engine.predict``'s result; a value may hold several samples along a
        new first axis (a batch).
    :param prefix: the tensor keys' prefix given to :func:`stats_layout`.
    :return: the statistics, as :func:`pot_cli.statistics.collector.collect_statistics` gives.
    :raises KeyError: when a requested statistic is missing.
    """
    out: dict[tuple, np.ndarray] = {}
    n = 0
    for r in dict.fromkeys(requests):
        acc = _Accumulator(r.reduction)
        for v in values[prefix + tensor_key(r)][statistic_key(r)]:
            acc.add(np.asarray(v, dtype=np.float64))
        n = max(n, acc.n)
        out[(r.output, r.reduction, r.channel_axis, r.outlier_prob)] = acc.result()
    return Statistics(out, n)
