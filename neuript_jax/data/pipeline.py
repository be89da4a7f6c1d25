"""The grain input pipeline: ``data_prep`` shards -> fixed-shape, host-local training batches.

Reads the ArrayRecord shards and ``manifest.json`` of one or more ``data_prep`` output
directories (``neuript_jax.data.record`` is the schema) and yields dicts of numpy arrays::

  "x"          float32 [B_local, T, D]   A-law companded (or µV with alaw=False), time first
  "positions"  float32 [B_local, D, 3]   metres, head frame
  "label"      int32   [B_local]         -1 = unlabelled
  "index"      int64   [B_local]         global record id (below); -1 = padding
  "valid"      bool    [B_local]         False for the padding rows of a final global batch

Order of the data (all of it deterministic, a function of the config only):

1. Source k is the concatenation of its split's shards in manifest order; its record ``i``
   has the global record id ``index = offset_k + i`` (``offset_k`` = records of the sources
   listed before it).
2. Each source is globally shuffled with its own seed (``SeedSequence([seed, k])``) and
   repeated ``num_epochs`` times (``None``: forever), reshuffled each epoch.
3. The sources are mixed with ``grain.MapDataset.mix(weights)``: a fixed interleaving in
   which source k contributes ``weight_k / sum(weights)`` of every long enough stretch.
   With a finite ``num_epochs`` the mixture ends when the first source (smallest
   records / weight) has been read ``num_epochs`` times; the others are then partly read.
   This mixed stream ``s[0], s[1], ...`` is the *global record order*.
4. Global batch ``g`` is ``s[g*G : (g+1)*G]`` (``G = global_batch_size``). With
   ``drop_remainder`` a final incomplete global batch is dropped; without it (evaluation) the
   final global batch is padded to ``G`` rows with copies of ``s[0]`` marked ``valid=False``,
   ``index=-1``, so every batch has one shape and every host the same batch count.
5. Per host: with ``P = process_count`` and ``L = G // P``, host ``p`` yields, as its
   ``g``-th batch, ``s[g*G + p*L : g*G + (p+1)*L]``. So the hosts' local batches are disjoint
   and their concatenation in process order is exactly global batch ``g``; every host yields
   the same number of batches. Only the records of the host's own share are read.
   ``to_global_batch`` then places each host's rows on that host's devices; if the mesh
   orders devices by process along the data axes (``jax.make_mesh`` / ``mesh_utils`` do),
   the global array's rows are in exactly this order.

Iterator state: ``{"version", "next_batch", "fingerprint"}`` (plain JSON). ``next_batch``
counts global batches consumed, so it is the same on every host and independent of the
number of hosts and of grain worker processes; ``set_state`` rebuilds the pipeline to start
at that batch (the data are a lazy indexable dataset, so nothing before it is read).
``fingerprint`` records everything that determines the global record order (records and
weight per source, recipe hash, split, seed, shuffle, epochs, batch size, remainder policy,
A-law, window length); restoring a state into a pipeline whose fingerprint differs raises a
ValueError naming the differing fields rather than silently yielding other batches.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import grain
import ml_collections
import numpy as np

from neuript_jax import signal as signal_lib
from neuript_jax.data import record as record_lib

STATE_VERSION = 1
MANIFEST = "manifest.json"


def default_data_config() -> ml_collections.ConfigDict:
  """The pipeline's configuration (every field is read by ``make_iterator``)."""
  cfg = ml_collections.ConfigDict()
  # Prepared data_prep output dirs: [{"path": DIR, "weight": 1.0}, ...]; an entry may also be
  # a bare path (weight 1) or a (path, weight) pair (FrozenConfigDict cannot hold dicts in a
  # list).
  cfg.sources = []
  cfg.split = "train"
  cfg.global_batch_size = 8
  cfg.seed = 0
  cfg.shuffle = True
  cfg.num_epochs = None  # None = repeat forever
  cfg.worker_count = 0  # grain worker processes; 0 = in-process
  cfg.worker_buffer_size = 2  # batches buffered per worker process
  cfg.alaw = True
  cfg.alaw_a = 0.25
  cfg.window_len = None  # None = records as they are; an int crops T to its first samples
  cfg.drop_remainder = True
  # In-process reading: threads reading batches ahead, and how many batches they may hold.
  cfg.read_threads = 4
  cfg.prefetch_batches = 8
  return cfg


# ------------------------------------------------------------------------------------------
# Sources and validation


class DataConfigError(ValueError):
  """A source directory, manifest or split is missing, or the sources do not fit together."""


def _source_entries(cfg) -> list[tuple[str, float]]:
  sources = list(cfg.sources or [])
  if not sources:
    raise DataConfigError("data config has no sources: set sources = [{'path': DIR, "
                          "'weight': 1.0}, ...]")
  out = []
  for i, s in enumerate(sources):
    if isinstance(s, (str, os.PathLike)):
      path, weight = os.fspath(s), 1.0
    elif isinstance(s, (tuple, list)) and len(s) == 2:
      path, weight = os.fspath(s[0]), float(s[1])
    else:
      s = dict(s)
      if "path" not in s:
        raise DataConfigError(f"sources[{i}] has no 'path': {s}")
      path, weight = os.fspath(s["path"]), float(s.get("weight", 1.0))
    if not (math.isfinite(weight) and weight > 0):
      raise DataConfigError(f"source {path}: weight must be a positive number, got {weight}")
    out.append((path, weight))
  return out


def _manifest(path: str) -> dict:
  directory = Path(path)
  if not directory.is_dir():
    raise DataConfigError(f"source directory {directory} does not exist (expected a data_prep "
                          f"output directory)")
  manifest = directory / MANIFEST
  if not manifest.is_file():
    raise DataConfigError(f"source {directory} has no {manifest} (not a finished data_prep "
                          f"output; run `python -m data_prep.convert ... --output={directory}`)")
  try:
    return json.loads(manifest.read_text())
  except json.JSONDecodeError as e:
    raise DataConfigError(f"{manifest} is not valid JSON: {e}") from e


def _describe_source(path: str, weight: float, split: str) -> dict:
  """One source's summary from its manifest; shard files are checked to exist."""
  manifest = _manifest(path)
  directory = Path(path)
  shard_lists = manifest.get("shards", {})
  if split not in shard_lists:
    raise DataConfigError(
        f"{directory / MANIFEST} has no split {split!r} (splits: {sorted(shard_lists)})")
  files = manifest.get("files") or []
  windows_of = {f["shard"]: int(f["windows"]) for f in files
                if f.get("shard") and f.get("windows") is not None}
  shards = []
  for rel in shard_lists[split]:
    full = directory / rel
    if not full.is_file():
      raise DataConfigError(f"shard {full} listed in {directory / MANIFEST} does not exist")
    n = windows_of.get(rel)
    if n is None:  # not described by the manifest: count it
      from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
      reader = array_record_module.ArrayRecordReader(str(full))
      n = int(reader.num_records())
      reader.close()
    if n:
      shards.append((str(full), n))
  n_records = sum(n for _, n in shards)
  if n_records == 0:
    raise DataConfigError(f"source {directory} has zero records in split {split!r} "
                          f"({directory / MANIFEST})")
  if manifest.get("channels") is not None:
    channel_counts = {len(manifest["channels"])}
  else:
    channel_counts = {len(f["channels"]) for f in files
                      if f.get("split") == split and f.get("windows") and f.get("channels")}
  if len(channel_counts) != 1:
    raise DataConfigError(f"source {directory}: cannot tell one channel count for split {split!r} "
                          f"from {directory / MANIFEST} (found {sorted(channel_counts)})")
  window = manifest.get("window_samples")
  if window is None:
    raise DataConfigError(f"{directory / MANIFEST} has no window_samples")
  return {
      "path": str(directory),
      "weight": weight,
      "split": split,
      "n_records": n_records,
      "n_shards": len(shards),
      "channels": channel_counts.pop(),
      "channel_names": manifest.get("channels"),
      "window_samples": int(window),
      "sampling_rate": manifest.get("sampling_rate"),
      "dataset": manifest.get("dataset"),
      "recipe_hash": (manifest.get("recipe") or {}).get("hash"),
      "_shards": shards,
  }


def _validated_sources(cfg) -> list[dict]:
  entries = _source_entries(cfg)
  split = cfg.split
  infos = [_describe_source(p, w, split) for p, w in entries]
  by_channels = {}
  for s in infos:
    by_channels.setdefault(s["channels"], []).append(s["path"])
  if len(by_channels) > 1:
    detail = "; ".join(f"{c} channels: {', '.join(p)}" for c, p in sorted(by_channels.items()))
    raise DataConfigError(f"sources disagree on the channel count ({detail})")
  window_len = cfg.window_len
  if window_len is None:
    by_window = {}
    for s in infos:
      by_window.setdefault(s["window_samples"], []).append(s["path"])
    if len(by_window) > 1:
      detail = "; ".join(f"{t} samples: {', '.join(p)}" for t, p in sorted(by_window.items()))
      raise DataConfigError(f"sources disagree on the samples per window ({detail}); set "
                            f"window_len to crop them to a common length")
  else:
    window_len = int(window_len)
    if window_len <= 0:
      raise DataConfigError(f"window_len must be positive, got {window_len}")
    short = [f"{s['path']} ({s['window_samples']})" for s in infos
             if s["window_samples"] < window_len]
    if short:
      raise DataConfigError(f"window_len={window_len} is longer than the windows of: "
                            f"{', '.join(short)}")
  offset = 0
  for s in infos:
    s["offset"] = offset
    offset += s["n_records"]
  return infos


def dataset_summary(cfg) -> dict:
  """Per-source facts from the manifests, after the same validation as ``make_iterator``.

  Returns ``{"split", "sources": [{path, weight, n_records, n_shards, channels,
  channel_names, window_samples, sampling_rate, dataset, recipe_hash, offset}],
  "n_records", "channels", "window_len"}``. Raises ``DataConfigError`` (a ValueError) naming
  the file when a source dir, its manifest, the split or a listed shard is missing, when a
  split has no records, or when the sources disagree on the channel count / window length.
  """
  return _summary(cfg, _validated_sources(cfg))


def _summary(cfg, infos) -> dict:
  window_len = cfg.window_len if cfg.window_len is not None else infos[0]["window_samples"]
  return {
      "split": cfg.split,
      "sources": [{k: v for k, v in s.items() if not k.startswith("_")} for s in infos],
      "n_records": sum(s["n_records"] for s in infos),
      "channels": infos[0]["channels"],
      "window_len": int(window_len),
  }


# ------------------------------------------------------------------------------------------
# Grain building blocks (module level and picklable, for worker processes)


class _IndexedShardSource:
  """Random access over one source's shards: ``source[i] -> (offset + i, bytes)``.

  Record counts come from the manifest, so no shard is opened before it is read; grain's
  ``ArrayRecordDataSource`` opens readers lazily and is itself picklable.
  """

  def __init__(self, shards: Sequence[tuple[str, int]], offset: int):
    self._instructions = [f"{p}[0:{n}]" for p, n in shards]
    self._len = int(sum(n for _, n in shards))
    self._offset = int(offset)
    self._source = None

  def _ds(self):
    if self._source is None:
      self._source = grain.sources.ArrayRecordDataSource(self._instructions)
    return self._source

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, index: int):
    index = int(index)
    return self._offset + index, self._ds()[index]

  def _getitems(self, indices: Sequence[int]):
    indices = [int(i) for i in indices]
    data = self._ds().__getitems__(indices)
    return [(self._offset + i, d) for i, d in zip(indices, data)]

  def __getstate__(self):
    state = self.__dict__.copy()
    state["_source"] = None
    return state

  def __repr__(self):
    return f"_IndexedShardSource(n={self._len}, offset={self._offset})"


class _DecodeWindow:
  """(index, bytes) -> the per-example dict (time first, A-law applied, T cropped)."""

  def __init__(self, channels: int, window_len: int, alaw: bool, alaw_a: float):
    self.channels = int(channels)
    self.window_len = int(window_len)
    self.alaw = bool(alaw)
    self.alaw_a = float(alaw_a)

  def __call__(self, element):
    index, data = element
    rec = record_lib.decode(data)
    c, t = rec.signal.shape
    if c != self.channels or t < self.window_len:
      raise ValueError(f"record {index}: signal [C={c}, T={t}] does not fit the pipeline "
                       f"(C={self.channels}, T>={self.window_len})")
    x = rec.signal[:, :self.window_len]
    valid = index >= 0
    if self.alaw:
      x = signal_lib.a_law_compress(x, a=self.alaw_a)
    return {
        "x": np.ascontiguousarray(x.T, dtype=np.float32),
        "positions": np.asarray(rec.positions, dtype=np.float32),
        "label": np.int32(rec.label),
        "index": np.int64(index),
        "valid": np.bool_(valid),
    }


class _PaddedStream:
  """Random-access view of a finite stream of (index, bytes) padded to ``length`` elements;
  padding element ``i >= len(stream)`` is ``(-1, stream[0][1])``."""

  def __init__(self, stream, length: int):
    self.stream = stream
    self.n = len(stream)
    self.length = int(length)

  def __len__(self):
    return self.length

  def __getitem__(self, i):
    if i < self.n:
      return self.stream[i]
    return (-1, self.stream[0][1])


def _source_seed(seed: int, k: int) -> int:
  return int(np.random.SeedSequence([int(seed), int(k)]).generate_state(1, np.uint32)[0])


def _global_stream(cfg, infos):
  """The mixed, shuffled, repeated MapDataset of encoded records (the global record order)."""
  parts = []
  for k, s in enumerate(infos):
    ds = grain.MapDataset.source(_IndexedShardSource(s["_shards"], s["offset"]))
    if cfg.shuffle:
      ds = ds.shuffle(seed=_source_seed(cfg.seed, k))
    ds = ds.repeat(None if cfg.num_epochs is None else int(cfg.num_epochs))
    parts.append(ds)
  if len(parts) == 1:
    return parts[0]
  return grain.MapDataset.mix(parts, weights=[s["weight"] for s in infos])


def _fingerprint(cfg, infos, window_len: int) -> dict:
  return {
      "sources": [[s["n_records"], s["weight"], s["recipe_hash"]] for s in infos],
      "split": cfg.split,
      "seed": int(cfg.seed),
      "shuffle": bool(cfg.shuffle),
      "num_epochs": None if cfg.num_epochs is None else int(cfg.num_epochs),
      "global_batch_size": int(cfg.global_batch_size),
      "drop_remainder": bool(cfg.drop_remainder),
      "alaw": bool(cfg.alaw),
      "alaw_a": float(cfg.alaw_a) if cfg.alaw else None,
      "window_len": int(window_len),
  }


# ------------------------------------------------------------------------------------------
# The iterator


class PipelineIterator(grain.DatasetIterator):
  """Host-local batches; ``get_state``/``set_state`` give exact, JSON-able resumption.

  A ``grain.DatasetIterator``, so grain's orbax checkpoint handlers accept it too.
  Attributes: ``global_batch_size``, ``local_batch_size``, ``process_index``,
  ``process_count``, ``num_batches`` (global batches in the stream; ``None`` if endless),
  ``summary`` (``dataset_summary``).
  """

  def __init__(self, batches, *, fingerprint: dict, read_options, mp_options, summary: dict,
               global_batch_size: int, process_index: int, process_count: int,
               num_batches: int | None):
    super().__init__()
    self._batches = batches  # host-local MapDataset of batches
    self._fingerprint = fingerprint
    self._read_options = read_options
    self._mp_options = mp_options
    self._next_batch = 0
    self._inner = None
    self.summary = summary
    self.global_batch_size = global_batch_size
    self.local_batch_size = global_batch_size // process_count
    self.process_index = process_index
    self.process_count = process_count
    self.num_batches = num_batches

  def _build(self):
    ds = self._batches
    if self._next_batch:
      ds = ds[self._next_batch:]
    ids = ds.to_iter_dataset(self._read_options)
    if self._mp_options is not None:
      ids = ids.mp_prefetch(self._mp_options)
    self._inner = iter(ids)

  def __next__(self) -> dict:
    self._assert_not_closed()
    if self._inner is None:
      self._build()
    batch = next(self._inner)
    self._next_batch += 1
    return batch

  def get_state(self) -> dict[str, Any]:
    return {"version": STATE_VERSION, "next_batch": self._next_batch,
            "fingerprint": self._fingerprint}

  def set_state(self, state) -> None:
    if isinstance(state, (str, bytes)):
      state = iterator_state_from_json(state)
    if not isinstance(state, dict) or "next_batch" not in state:
      raise ValueError(f"not a pipeline iterator state: {state!r}")
    if state.get("version") != STATE_VERSION:
      raise ValueError(f"iterator state version {state.get('version')} is not "
                       f"{STATE_VERSION}")
    saved = state.get("fingerprint") or {}
    # JSON turns tuples into lists; compare in that form.
    mine = json.loads(json.dumps(self._fingerprint))
    saved = json.loads(json.dumps(saved))
    diff = sorted(k for k in set(mine) | set(saved) if mine.get(k) != saved.get(k))
    if diff:
      detail = ", ".join(f"{k}: saved {saved.get(k)!r} vs now {mine.get(k)!r}" for k in diff)
      raise ValueError(f"iterator state was saved by a pipeline with a different global "
                       f"record order ({detail})")
    n = int(state["next_batch"])
    if n < 0 or (self.num_batches is not None and n > self.num_batches):
      raise ValueError(f"iterator state next_batch={n} is outside [0, {self.num_batches}]")
    self._close_inner()
    self._next_batch = n

  def _close_inner(self):
    if self._inner is not None:
      self._inner.close()
      self._inner = None

  def close(self) -> None:
    self._close_inner()
    super().close()

  def __str__(self):
    return (f"PipelineIterator(host {self.process_index}/{self.process_count}, "
            f"local batch {self.local_batch_size}, next_batch {self._next_batch})")


def make_iterator(cfg, *, process_index: int | None = None,
                  process_count: int | None = None) -> PipelineIterator:
  """This host's iterator of local batches (see the module docstring for the order).

  ``process_index``/``process_count`` default to ``jax.process_index()/process_count()``.
  Validates the sources first (``dataset_summary``'s errors).
  """
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  process_index, process_count = int(process_index), int(process_count)
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count})")
  global_batch = int(cfg.global_batch_size)
  if global_batch <= 0 or global_batch % process_count:
    raise ValueError(f"global_batch_size {global_batch} must be a positive multiple of "
                     f"process_count {process_count}")
  if cfg.num_epochs is not None and int(cfg.num_epochs) <= 0:
    raise ValueError(f"num_epochs must be None or positive, got {cfg.num_epochs}")
  local_batch = global_batch // process_count
  infos = _validated_sources(cfg)
  summary = _summary(cfg, infos)
  window_len = summary["window_len"]

  stream = _global_stream(cfg, infos)
  n = len(stream)
  endless = cfg.num_epochs is None
  if cfg.drop_remainder:
    n_global = n // global_batch
    stream = stream[:n_global * global_batch]
  elif endless:
    raise ValueError("drop_remainder=False needs a finite num_epochs")
  else:
    n_global = -(-n // global_batch)
    if n_global * global_batch != n:
      stream = grain.MapDataset.source(_PaddedStream(stream, n_global * global_batch))
  stream = stream.map(_DecodeWindow(summary["channels"], window_len, cfg.alaw, cfg.alaw_a))
  # Host p's g-th batch is local batch g*P + p of the stream cut into batches of L.
  batches = stream.batch(local_batch, drop_remainder=True)
  if process_count > 1:
    batches = batches[process_index::process_count]
  read_options = grain.ReadOptions(num_threads=max(1, int(cfg.read_threads)),
                                   prefetch_buffer_size=max(1, int(cfg.prefetch_batches)))
  mp_options = None
  if int(cfg.worker_count) > 0:
    mp_options = grain.MultiprocessingOptions(
        num_workers=int(cfg.worker_count),
        per_worker_buffer_size=max(1, int(cfg.worker_buffer_size)))
  return PipelineIterator(
      batches, fingerprint=_fingerprint(cfg, infos, window_len), read_options=read_options,
      mp_options=mp_options, summary=summary, global_batch_size=global_batch,
      process_index=process_index, process_count=process_count,
      num_batches=None if endless else n_global)


def iterator_state_to_json(state) -> str:
  """The iterator state (``it.get_state()``) as a JSON string."""
  return json.dumps(state, sort_keys=True)


def iterator_state_from_json(s) -> dict:
  """Inverse of ``iterator_state_to_json`` (accepts str or bytes)."""
  if isinstance(s, bytes):
    s = s.decode()
  return json.loads(s)


# ------------------------------------------------------------------------------------------
# Host batches -> global jax.Arrays


def to_global_batch(batch: dict, mesh, data_axes: Sequence[str] = ("data", "fsdp")) -> dict:
  """Host-local numpy batch -> global ``jax.Array``s sharded over dim 0 on ``data_axes``.

  Axes of ``data_axes`` that the mesh does not have are ignored (none left: replicated).
  Each host passes its own local batch; the global batch is their concatenation along
  dim 0, in the order the mesh gives the hosts' devices on the data axes. int64 leaves
  become int32 unless ``jax_enable_x64`` is on.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from jax.sharding import NamedSharding, PartitionSpec  # pylint: disable=g-import-not-at-top
  axes = tuple(a for a in data_axes if a in mesh.axis_names)
  spec = PartitionSpec(axes) if axes else PartitionSpec()
  sharding = NamedSharding(mesh, spec)
  n_shards = int(np.prod([mesh.shape[a] for a in axes])) if axes else 1
  x64 = bool(jax.config.jax_enable_x64)
  out = {}
  for key, value in batch.items():
    value = np.asarray(value)
    if not x64 and value.dtype == np.int64:
      value = value.astype(np.int32)
    elif not x64 and value.dtype == np.float64:
      value = value.astype(np.float32)
    global_rows = value.shape[0] * jax.process_count()
    if axes and global_rows % n_shards:
      raise ValueError(f"batch {key!r}: global batch {global_rows} is not divisible by the "
                       f"{n_shards} shards of mesh axes {axes}")
    out[key] = jax.make_array_from_process_local_data(sharding, value)
  return out
