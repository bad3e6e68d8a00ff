"""``Metric``: the accuracy interface of the original POT API (2022.1-2023.3 contract)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class Metric(ABC):
    """A metric that ``IEEngine`` updates sample by sample.

    ``__init__`` calls :meth:`reset`, so a subclass sets the fields ``reset`` reads before
    calling ``super().__init__()`` (as the original's samples did).

    * :meth:`update` ``(output, target)``: ``output`` is what ``IEEngine.postprocess_output``
      returned, by default a list with one array per model output, in model output order, batch
      first (``[(1, 10) float32]`` for a classifier); ``target`` is a list with one annotation per
      item of the batch (``[label]``).
    * :attr:`value`: ``{metric name: [value per item of the last batch]}``; needed by
      AccuracyAwareQuantization to rank layers by their harm per sample. Without it the ranking
      uses the output distance to FP32 only (the original refused to run).
    * :attr:`avg_value`: ``{metric name: value}`` over everything since the last :meth:`reset`.
    * :meth:`get_attributes`: ``{metric name: {'direction': 'higher-better' | 'higher-worse',
      'type': str}}``.
    """

    def __init__(self):
        self.reset()

    @property
    def value(self) -> dict[str, list[float]]:
        """Per-item values of the last batch, ``{name: [v_0, ..., v_{B-1}]}``.

        :raises NotImplementedError: unless the subclass provides it.
        """
        raise NotImplementedError("The value() property should be implemented to use this metric with "
                                  "AccuracyAwareQuantization algorithm!")

    @property
    @abstractmethod
    def avg_value(self) -> dict[str, float]:
        """``{name: value}`` over every sample since the last :meth:`reset`."""

    @property
    def higher_better(self) -> bool:
        """Kept for compatibility; :meth:`get_attributes` decides (as in the original)."""
        return True

    @abstractmethod
    def update(self, output: Any, target: Any) -> None:
        """Add one batch: model outputs and the batch's annotations (see the class docstring)."""

    @abstractmethod
    def reset(self) -> None:
        """Forget every sample."""

    @abstractmethod
    def get_attributes(self) -> dict[str, dict[str, str]]:
        """``{name: {'direction': 'higher-better' | 'higher-worse', 'type': str}}``."""

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        self.update(*args, **kwargs)
