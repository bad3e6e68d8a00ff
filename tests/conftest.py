"""Shared fixtures: the ``../shared`` assets, a tiny saved IR with calibration images."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
if str(TESTS_DIR) not in sys.path:  # ``import models`` from any test folder
    sys.path.insert(0, str(TESTS_DIR))

import models  # noqa: E402

SHARED_DIR = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The project root (holds ``pot_cli/`` and ``configs/``)."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` beside the project (real models and data); skips when it is absent."""
    if not (SHARED_DIR / "models").is_dir() or not (SHARED_DIR / "data").is_dir():
        pytest.skip(f"shared assets not found at {SHARED_DIR} (expected models/ and data/ there)")
    return SHARED_DIR


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A read-only-by-convention folder with ``model/tiny.xml|.bin`` (conv -> bias -> relu,
    input ``x [1,3,8,8]`` NCHW) and ``images/`` (12 random 8x8 BGR PNGs).

    Tests must not write into it; copy it first.
    """
    root = tmp_path_factory.mktemp("tiny")
    models.save_ir(models.conv_bias_relu(), root / "model", "tiny")
    models.write_images(root / "images", 12, (8, 8, 3), seed=0)
    return root
