"""``DataLoader``: the dataset interface of the original POT API (2022.1-2023.3 contract)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class AttrDict(dict):
    """A dict whose keys also read as attributes (``config.device``), as POT's ``addict.Dict``.

    Missing attributes read as ``None`` rather than raising, which is what scripts written for
    the original relied on (``config.stat_requests_number`` when it was not set).
    """

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        value = self.get(name)
        return AttrDict(value) if isinstance(value, dict) and not isinstance(value, AttrDict) else value

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value


class DataLoader(ABC):
    """A dataset that ``IEEngine`` reads by index.

    Subclasses implement :meth:`__len__` and :meth:`__getitem__`; calling ``super().__init__``
    is optional (the original's samples often skipped it).

    ``__getitem__(index)`` returns a tuple, in one of the forms the original accepted:

    * ``(data, annotation)`` or ``(data, annotation, metadata)`` (2022.1 and later);
    * ``((index, annotation), data)`` or ``((index, annotation), data, metadata)`` (every release).

    ``data`` is an array for a one-input model (``(C, H, W)`` or ``(1, C, H, W)`` float32 for an
    NCHW image input; an ``(H, W, C)`` image is transposed to the model's layout) or a dict
    ``{input name: array}``; ``annotation`` is anything the :class:`~pot_cli.api.Metric`
    understands (``None`` for DefaultQuantization); ``metadata`` is passed to
    ``IEEngine.postprocess_output``. For ``SimplifiedEngine`` the item is the bare ``data``.
    An index past ``len(self) - 1`` may raise ``IndexError``; the engines never ask for one.

    :param config: anything; stored as ``self.config`` (a dict becomes an :class:`AttrDict`).
    """

    def __init__(self, config: Any = None):
        self.config = AttrDict(config) if isinstance(config, dict) else config

    @abstractmethod
    def __getitem__(self, index: int) -> Any:
        """The item at ``index`` (0-based), in one of the forms above."""

    @abstractmethod
    def __len__(self) -> int:
        """The number of items."""
