"""ArrayRecord shard writing: atomic, random-access (``group_size:1``), deterministic bytes.

A shard is written under a hidden temporary name in its final folder
(``.<name>.tmp-<pid>``, never matched by readers) and renamed onto its final name only once
the writer has closed successfully, so a shard that is visible is always complete. The
reader side is ``neuript_jax.data.record.ShardReader`` / ``read_split``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from neuript_jax.data import record as record_lib

SHARD_SUFFIX = record_lib.SHARD_SUFFIX
WRITER_OPTIONS = record_lib.WRITER_OPTIONS


def write_shard(path: str | Path, records: Iterable[record_lib.Record]) -> int:
  """Write ``records`` (in order) to the ArrayRecord file ``path`` atomically; returns count."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
  writer = array_record_module.ArrayRecordWriter(str(tmp), WRITER_OPTIONS)
  n = 0
  try:
    for rec in records:
      writer.write(record_lib.encode(rec))
      n += 1
  finally:
    writer.close()
  with open(tmp, "rb+") as f:
    os.fsync(f.fileno())
  os.replace(tmp, path)
  return n
