"""Shared test fixtures: where ../shared lives, and JAX settings for exact comparisons.

Every test process, and every launcher it starts (they inherit os.environ), shares JAX's
persistent compilation cache under .pytest_cache/jax_cache: the tiny configs compile the same
programs many times over, and a cache hit is the same executable, so results do not change.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NEURIPT_SHARED", REPO.parent / "shared"))

# Set before any test module imports jax (jax reads these at import).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO / ".pytest_cache" / "jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


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
