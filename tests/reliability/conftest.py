"""Fixtures of the reliability tests: a private copy of the tiny IR and its images per test."""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from reliability.helpers import snapshot


@dataclass
class Workspace:
    """``root/in/model/tiny.xml|.bin``, ``root/in/images/`` (12 PNGs 8x8), ``root/out`` (absent)."""

    root: Path
    xml: Path
    bin: Path
    images: Path
    out: Path

    @property
    def inputs(self) -> Path:
        return self.root / "in"

    def before(self) -> dict[str, str]:
        """Hashes of every input file (model and data), to compare after the run."""
        return snapshot(self.inputs)


@pytest.fixture
def ws(tiny_model_dir, tmp_path) -> Workspace:
    shutil.copytree(tiny_model_dir, tmp_path / "in")
    return Workspace(tmp_path, tmp_path / "in" / "model" / "tiny.xml", tmp_path / "in" / "model" / "tiny.bin",
                     tmp_path / "in" / "images", tmp_path / "out")


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A function ``mount(name, size="64k", read_only=False) -> Path``: a tiny tmpfs mounted for the
    test (unmounted afterwards); skips when mounting is not permitted (needs root in a container
    that allows ``mount``)."""
    mounted: list[Path] = []

    def mount(name: str, size: str = "64k", read_only: bool = False) -> Path:
        point = tmp_path / name
        point.mkdir()
        opts = f"size={size}" + (",ro" if read_only else "")
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(point)], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode}); needs root and "
                        "permission to mount")
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        if subprocess.run(["umount", str(point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(point)], capture_output=True)
