"""The window record: the one schema shared by ``data_prep`` (writer) and the loader (reader).

One record = one window of one recording. Fields and units:

=================  ============================  ==============================================
field              type / shape                  meaning
=================  ============================  ==============================================
version            int                           schema version (``SCHEMA_VERSION``)
signal             float32 ``[C, T]``            microvolts, after the recipe's filtering,
                                                 re-referencing, derivation and resampling
channel_names      tuple of C str                ``"Cz"`` (monopolar) or ``"Fp1-F7"`` (bipolar)
positions          float32 ``[C, 3]``            metres, MNE head frame (+x right, +y anterior,
                                                 +z up); bipolar channels at the midpoint
sampling_rate      float                         Hz of ``signal``
dataset            str                           dataset id (e.g. ``"TUAB"``)
subject            str                           subject id within the dataset
session            str                           session id ("" if none)
recording          str                           recording id (input path relative to its root)
window_start       int                           first sample of the window, at
                                                 ``sampling_rate``, on the recording's time axis
window_start_s     float                         the same in seconds
label              int                           class index; -1 = unlabelled
label_name         str or None                   class name
split              str                           ``"train"`` / ``"val"`` / ``"test"``
recipe_hash        str                           hash of the recipe configuration
=================  ============================  ==============================================

A-law companding is NOT applied in the shards: ``signal`` is in microvolts, and the loader
applies the A-law (or any other scaling) when it reads a record.

Byte layout of ``encode``: ``b"NRPT"``, a little-endian uint32 header length ``H``, ``H``
bytes of UTF-8 JSON (sorted keys; every field except the two arrays, plus their shapes),
then ``signal`` as little-endian float32 C-order bytes, then ``positions`` likewise. No
pickle anywhere. Shards are ArrayRecord files (``group_size:1``, so random access reads one
record); ``ShardReader`` and ``read_split`` are the documented readers. A grain pipeline
reads the same shards with
``grain.python.ArrayRecordDataSource([str(p) for p in split_shards(dir, split)])`` and maps
``decode`` over the bytes (``decode`` is a plain module function, so it pickles).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import struct
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

SCHEMA_VERSION = 1
MAGIC = b"NRPT"
WRITER_OPTIONS = "group_size:1"
SHARD_SUFFIX = ".array_record"
_F32 = np.dtype("<f4")


@dataclasses.dataclass
class Record:
  """One window; see the module docstring for units and shapes."""

  signal: np.ndarray
  channel_names: tuple[str, ...]
  positions: np.ndarray
  sampling_rate: float
  dataset: str
  subject: str
  session: str
  recording: str
  window_start: int
  window_start_s: float
  label: int = -1
  label_name: str | None = None
  split: str = "train"
  recipe_hash: str = ""
  version: int = SCHEMA_VERSION

  def __post_init__(self):
    self.signal = np.asarray(self.signal, dtype=np.float32)
    self.positions = np.asarray(self.positions, dtype=np.float32)
    self.channel_names = tuple(self.channel_names)
    if self.signal.ndim != 2 or self.signal.shape[0] != len(self.channel_names):
      raise ValueError(f"signal must be [channels={len(self.channel_names)}, samples], "
                       f"got {self.signal.shape}")
    if self.positions.shape != (len(self.channel_names), 3):
      raise ValueError(f"positions must be [{len(self.channel_names)}, 3], "
                       f"got {self.positions.shape}")


_META_FIELDS = tuple(f.name for f in dataclasses.fields(Record)
                     if f.name not in ("signal", "positions"))


def encode(record: Record) -> bytes:
  """Record -> bytes (header JSON + raw float32 arrays; see the module docstring)."""
  meta = {k: getattr(record, k) for k in _META_FIELDS}
  meta["channel_names"] = list(record.channel_names)
  meta["sampling_rate"] = float(record.sampling_rate)
  meta["window_start"] = int(record.window_start)
  meta["window_start_s"] = float(record.window_start_s)
  meta["label"] = int(record.label)
  meta["signal_shape"] = list(record.signal.shape)
  header = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
  return b"".join((MAGIC, struct.pack("<I", len(header)), header,
                   np.ascontiguousarray(record.signal, dtype=_F32).tobytes(),
                   np.ascontiguousarray(record.positions, dtype=_F32).tobytes()))


def decode(data: bytes) -> Record:
  """bytes -> Record. Raises ValueError on a foreign, truncated or newer-version record."""
  if data[:4] != MAGIC:
    raise ValueError("not a NeurIPT window record (bad magic)")
  (hlen,) = struct.unpack_from("<I", data, 4)
  meta = json.loads(bytes(data[8:8 + hlen]))
  if meta.get("version", 0) > SCHEMA_VERSION:
    raise ValueError(f"record schema version {meta['version']} is newer than this reader "
                     f"({SCHEMA_VERSION})")
  c, t = meta.pop("signal_shape")
  offset = 8 + hlen
  n_sig, n_pos = c * t * 4, c * 3 * 4
  if len(data) != offset + n_sig + n_pos:
    raise ValueError(f"record has {len(data)} bytes, expected {offset + n_sig + n_pos}")
  signal = np.frombuffer(data, _F32, c * t, offset).reshape(c, t).astype(np.float32)
  positions = np.frombuffer(data, _F32, c * 3, offset + n_sig).reshape(c, 3).astype(np.float32)
  return Record(signal=signal, positions=positions, **meta)


class ShardReader:
  """Random access over ArrayRecord shards: ``len(r)``, ``r[i] -> Record``, iteration.

  Shards are opened lazily and at most ``max_open`` stay open (least recently used closed
  first), so a split of tens of thousands of per-recording shards does not exhaust file
  handles. ``sizes`` (records per shard, e.g. from the manifest) avoids opening every shard
  to count it. Picklable (open handles are not pickled), so it can serve as a grain
  ``RandomAccessDataSource`` in worker processes.
  """

  def __init__(self, paths: Sequence[str | Path], sizes: Sequence[int] | None = None,
               max_open: int = 64):
    self.paths = [str(p) for p in paths]
    self.max_open = max(1, int(max_open))
    self._open: collections.OrderedDict = collections.OrderedDict()
    if sizes is None:
      sizes = []
      for k in range(len(self.paths)):
        sizes.append(self._reader(k).num_records())
    if len(sizes) != len(self.paths):
      raise ValueError(f"{len(sizes)} sizes for {len(self.paths)} shards")
    self._sizes = np.asarray(sizes, dtype=np.int64)
    self._ends = np.cumsum(self._sizes)

  def _reader(self, k: int):
    reader = self._open.get(k)
    if reader is None:
      from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
      reader = array_record_module.ArrayRecordReader(self.paths[k])
      self._open[k] = reader
      while len(self._open) > self.max_open:
        _, oldest = self._open.popitem(last=False)
        oldest.close()
    else:
      self._open.move_to_end(k)
    return reader

  def __len__(self) -> int:
    return int(self._ends[-1]) if len(self._ends) else 0

  def read_bytes(self, index: int) -> bytes:
    """The encoded record at a global index (shards concatenated in the given order)."""
    if not 0 <= index < len(self):
      raise IndexError(f"record {index} out of range [0, {len(self)})")
    shard = int(np.searchsorted(self._ends, index, side="right"))
    local = index - (int(self._ends[shard - 1]) if shard else 0)
    return self._reader(shard).read([local])[0]

  def __getitem__(self, index: int) -> Record:
    return decode(self.read_bytes(index))

  def __iter__(self) -> Iterator[Record]:
    for k in range(len(self.paths)):
      for data in self._reader(k).read_all():
        yield decode(data)

  def close(self):
    for reader in self._open.values():
      reader.close()
    self._open.clear()

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_open"] = collections.OrderedDict()
    return state

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def split_shards(directory: str | Path, split: str) -> list[Path]:
  """Shard paths of one split of a ``data_prep`` output, in manifest order.

  The manifest's ``shards[split]`` list is authoritative (files left over from earlier runs
  are not read); without a manifest, every ``*.array_record`` in ``DIR/split`` sorted by name.
  """
  directory = Path(directory)
  manifest = directory / "manifest.json"
  if manifest.exists():
    listed = json.loads(manifest.read_text()).get("shards", {}).get(split, [])
    return [directory / p for p in listed]
  return sorted((directory / split).glob(f"*{SHARD_SUFFIX}"))


def read_split(directory: str | Path, split: str, max_open: int = 64) -> ShardReader:
  """A ShardReader over every shard of ``split`` in a ``data_prep`` output directory.

  Record counts come from the manifest when it lists them, so no shard is opened up front.
  """
  directory = Path(directory)
  paths = split_shards(directory, split)
  sizes = None
  manifest = directory / "manifest.json"
  if manifest.exists():
    counts = {f.get("shard"): f.get("windows") for f in
              json.loads(manifest.read_text()).get("files", [])}
    rel = [p.relative_to(directory).as_posix() for p in paths]
    if all(counts.get(r) is not None for r in rel):
      sizes = [counts[r] for r in rel]
  return ShardReader(paths, sizes=sizes, max_open=max_open)
