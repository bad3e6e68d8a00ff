"""The greedy loop of AccuracyAwareQuantization with scripted drops (no models, no inference)."""
from __future__ import annotations

import pytest

from pot_cli.algorithms.accuracy_aware import AccuracyAwareQuantization, Variant
from pot_cli.config.model import QuantizationParams
from pot_cli.engines.evaluator import Evaluation
from pot_cli.engines.metrics import Metric

GROUPS = ("A", "B", "C")


class Scripted(AccuracyAwareQuantization):
    """Drops come from ``drops[frozenset(reverted)]``; the ranking is always A, B, C."""

    def __init__(self, drops: dict[str, float], **params):
        super().__init__(QuantizationParams(**params), settings=None, evaluator=None, collect=None)
        self.drops = {frozenset(k): v for k, v in drops.items()}
        self.metrics = [Metric("acc", "accuracy")]
        self.baseline = {"acc": 1.0}
        self.max_drop = {"acc": self.params.maximal_drop}
        self.report = {"steps": [], "rankings": []}
        self._keep, self._order, self._types = [], [], {}
        self.ranked_on: list[str] = []

    def variant(self, reverted: frozenset) -> Variant:
        v = Variant(reverted, "base", None, None, tuple(g for g in GROUPS if g not in reverted))
        drop = self.drops[reverted]
        v.evaluation = Evaluation({"acc": 1.0 - drop}, {}, [])
        v.drop = {"acc": drop}
        return v

    def _child(self, parent, group):
        return self.variant(parent.reverted | {group})

    def _evaluate(self, variant):
        return variant

    def _rank(self, current, metric, exclude, iteration):
        self.ranked_on.append("".join(sorted(current.reverted)) or "-")
        return [g for g in GROUPS if g in current.groups and g not in exclude]

    def search(self):
        current, best, stop = self._search(self.variant(frozenset()))
        return current, best, stop, [(s["layers"][0], s["accepted"]) for s in self.report["steps"]]


DROPS = {"": 0.5, "A": 0.6, "B": 0.3, "C": 0.45, "AB": 0.1, "BC": 0.25, "ABC": 0.0}


def test_a_step_that_increases_the_drop_is_rolled_back_and_retried_after_the_model_changes():
    s = Scripted(DROPS, maximal_drop=0.2)
    current, best, stop, steps = s.search()
    assert steps == [("A", False), ("B", True), ("A", True)]
    assert (sorted(current.reverted), stop, s._order) == (["A", "B"], "target met", ["B", "A"])
    # one ranking: no re-ranking after the roll-back (the same model) nor after B, which lowered
    # the drop; A, rolled back on the previous model, is tried again first (its rank)
    assert s.ranked_on == ["-"]


def test_without_use_prev_if_drop_increase_a_worse_step_is_kept():
    s = Scripted(DROPS, maximal_drop=0.2, use_prev_if_drop_increase=False)
    current, best, stop, steps = s.search()
    assert steps == [("A", True), ("B", True)]
    assert sorted(current.reverted) == ["A", "B"] and stop == "target met"
    assert s.ranked_on == ["-", "A"]  # A kept without lowering the drop: the rest is ranked again


def test_the_ranking_goes_on_while_reverts_lower_the_drop():
    s = Scripted({"": 0.5, "A": 0.4, "AB": 0.3, "ABC": 0.0}, maximal_drop=0.05)
    current, best, stop, steps = s.search()
    assert steps == [("A", True), ("B", True), ("C", True)] and stop == "target met"
    assert s.ranked_on == ["-"]


def test_max_iter_num_stops_and_the_best_model_is_kept():
    s = Scripted(DROPS, maximal_drop=0.05, max_iter_num=2)
    current, best, stop, steps = s.search()
    assert steps == [("A", False), ("B", True)]
    assert stop == "max_iter_num 2 reached" and best.reverted == frozenset("B")


@pytest.mark.parametrize("maximal_drop,reverted", [(0.0, "ABC"), (0.1, "AB"), (0.3, "B"), (0.5, "")])
def test_larger_maximal_drop_stops_earlier_on_the_same_path(maximal_drop, reverted):
    s = Scripted(DROPS, maximal_drop=maximal_drop)
    start = s.variant(frozenset())
    if s._met(start):
        assert reverted == ""
        return
    current, _, stop, _ = s.search()
    assert "".join(sorted(current.reverted)) == reverted and stop == "target met"


def test_when_every_remaining_step_makes_the_drop_larger_the_ranking_is_followed_without_roll_backs():
    """From B, A and C each make the drop larger alone (evaluation noise, or harm that only
    reverting both undoes): they are then reverted in ranking order and kept until the drop holds
    (it used to stop there: 'nothing left to revert', target not met)."""
    drops = {"": 0.5, "A": 0.6, "B": 0.3, "C": 0.6, "AB": 0.35, "BC": 0.31, "ABC": 0.0}
    s = Scripted(drops, maximal_drop=0.05)
    current, best, stop, steps = s.search()
    assert steps == [("A", False), ("B", True), ("A", False), ("C", False), ("A", True), ("C", True)]
    assert stop == "target met" and sorted(current.reverted) == ["A", "B", "C"]
