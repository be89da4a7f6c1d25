"""Shared test fixtures: where ../shared lives, and JAX settings for exact comparisons."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NEURIPT_SHARED", REPO.parent / "shared"))


def shared_path(*parts: str) -> Path:
  return SHARED.joinpath(*parts)


@pytest.fixture(scope="session")
def golden_dir() -> Path:
  path = shared_path("golden")
  if not path.is_dir():
    pytest.skip(f"golden tensors not found at {path} (set NEURIPT_SHARED)")
  return path


@pytest.fixture(autouse=True, scope="session")
def _highest_matmul_precision():
  import jax
  jax.config.update("jax_default_matmul_precision", "highest")
  yield
