"""Fixtures of the AccuracyAwareQuantization / Accuracy Checker engine tests."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import models
from accuracy_aware import synthetic
from pot_cli.cli import main


def pot(*args):
    """Run ``pot args`` in process; returns the Click result (``exit_code``, ``stdout``, ``stderr``)."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def report_of(out_dir: Path) -> dict:
    """``report.json`` of a ``-d`` run into ``out_dir``."""
    return json.loads((Path(out_dir) / "optimized" / "report.json").read_text())


@pytest.fixture(scope="session")
def outlier_dir(tmp_path_factory) -> Path:
    """``model/m.xml`` (:func:`synthetic.outlier_chain` with a x1000 outlier channel on the input of
    ``conv3``), ``val/`` (120 PNGs), ``val.txt`` (FP32 labels) and ``ac.yml``. Read-only."""
    root = tmp_path_factory.mktemp("outlier")
    model = synthetic.outlier_chain({"conv3": 1000.0})
    models.save_ir(model, root / "model", "m")
    synthetic.write_dataset(root, model)
    return root


@pytest.fixture
def outlier(outlier_dir, tmp_path) -> dict[str, Path]:
    """The outlier set-up with a private output folder: ``xml``, ``ac``, ``root``, ``out``."""
    return {"xml": outlier_dir / "model" / "m.xml", "ac": outlier_dir / "ac.yml", "root": outlier_dir,
            "out": tmp_path / "out"}


@pytest.fixture
def copy_of(tmp_path):
    """Copy a read-only fixture folder into ``tmp_path`` (to edit its files)."""
    def make(src: Path) -> Path:
        dst = tmp_path / src.name
        shutil.copytree(src, dst)
        return dst
    return make
