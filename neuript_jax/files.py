"""Small file helpers shared by the library and data_prep: writes that never leave a
half-written file behind."""

from __future__ import annotations

import os
from pathlib import Path


def atomic_write_bytes(path, data: bytes) -> None:
  """Write `data` to a hidden temporary file beside `path`, fsync, then rename onto `path`
  (readers see the old file or the new one, never a part)."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
  with open(tmp, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def atomic_write_text(path, text: str) -> None:
  """`atomic_write_bytes` of `text` encoded as UTF-8."""
  atomic_write_bytes(path, text.encode("utf-8"))
