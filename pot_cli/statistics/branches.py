"""Which branches of the model's If operations the calibration data took.

The bodies of If operations are separate graphs, quantized from the samples that took them
(:mod:`pot_cli.algorithms.if_bodies`). An If whose calibration data always took the same branch
deserves a word to the user: its other body stays in floating point, and nothing in the
calibration run says how the model behaves on that branch. During the statistics pass the
condition of every top-level If is reduced to its per-sample minimum and maximum (a boolean is
read as 0.0 or 1.0): when every sample's condition is true the else body was never run, when
every one is false the then body was never run (OpenVINO If, opset8: a true condition runs
``then_body``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import openvino as ov

from pot_cli.graph.model import is_constant_subgraph
from pot_cli.statistics.collector import Reduction, StatisticRequest, Statistics

log = logging.getLogger("pot")


@dataclass(frozen=True)
class UnreachedBranch:
    """A branch of a top-level If that no calibration sample took.

    :param node: friendly name of the If.
    :param branch: ``"then"`` or ``"else"``.
    :param samples: calibration samples that ran.
    """

    node: str
    branch: str
    samples: int

    @property
    def message(self) -> str:
        """The warning shown to the user (one line)."""
        return (f"If '{self.node}': the calibration data never took its {self.branch} branch "
                f"({self.samples} samples); that body stays in floating point")


def if_conditions(model: ov.Model) -> list[tuple[ov.Node, ov.Output]]:
    """Top-level If nodes whose condition depends on the inputs, with their condition tensor.

    Conditions of dynamic rank, or computed from constants only, are left out.

    :param model: the model (not modified).
    :return: ``(If node, condition output)`` pairs in topological order.
    """
    cache: dict = {}
    out = []
    for node in model.get_ordered_ops():
        if node.get_type_name() != "If":
            continue
        cond = node.input(0).get_source_output()
        if cond.get_partial_shape().rank.is_dynamic or is_constant_subgraph(cond, cache):
            continue
        out.append((node, cond))
    return out


def branch_requests(model: ov.Model) -> list[StatisticRequest]:
    """Per-sample MIN and MAX of every top-level If condition (see :func:`if_conditions`)."""
    reqs = []
    for _, cond in if_conditions(model):
        reqs.append(StatisticRequest(cond, Reduction.MIN))
        reqs.append(StatisticRequest(cond, Reduction.MAX))
    return reqs


def find_unreached_branches(model: ov.Model, stats: Statistics) -> list[UnreachedBranch]:
    """The If branches no calibration sample took, from the statistics of :func:`branch_requests`.

    Never raises: an If whose statistics are missing or empty is skipped.

    :param model: the model the requests were made on.
    :param stats: the collected statistics.
    :return: one entry per unreached branch, in topological order of the If nodes.
    """
    found = []
    if stats.n_samples == 0:
        return found
    for node, cond in if_conditions(model):
        if (cond, Reduction.MIN, None) not in stats or (cond, Reduction.MAX, None) not in stats:
            continue
        lows = np.asarray(stats.get(cond, Reduction.MIN), dtype=np.float64).reshape(-1)
        highs = np.asarray(stats.get(cond, Reduction.MAX), dtype=np.float64).reshape(-1)
        if lows.size == 0 or highs.size == 0:
            continue
        name = node.get_friendly_name()
        if float(lows.min()) != 0.0:  # every element of every sample's condition was true
            found.append(UnreachedBranch(name, "else", stats.n_samples))
        elif float(highs.max()) == 0.0:  # always false
            found.append(UnreachedBranch(name, "then", stats.n_samples))
    return found
