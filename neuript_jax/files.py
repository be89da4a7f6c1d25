"""Small file helpers shared by the library and data_prep: writes that never leave a
half-written file behind."""

from __future__ import annotations

import os
from pathlib import Path


def atomic_write_text(path, text: str) -> None:
  """Write `text` to a hidden temporary file beside `path`, fsync, then rename onto `path`
  (readers see the old file or the new one, never a part)."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
