"""Fixtures of the config tests."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def ir(tmp_path: Path) -> Path:
    """An empty m.xml/m.bin pair (the loader only checks that they exist)."""
    (tmp_path / "m.xml").touch()
    (tmp_path / "m.bin").touch()
    return tmp_path / "m.xml"
