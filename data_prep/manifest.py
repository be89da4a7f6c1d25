"""``DIR/manifest.json``: what a conversion produced, built from the per-input state files.

Fields (all counts are windows written unless said otherwise):

* ``schema_version``: record schema version (``neuript_jax.data.record.SCHEMA_VERSION``);
  ``engine_version``: version of the signal path (``data_prep.pipeline.ENGINE_VERSION``).
* ``recipe``: ``{"name", "hash", "config"}`` -- the full recipe configuration.
* ``sampling_rate`` (Hz), ``window_samples``, ``montage``, ``positions_source``
  (``template``/``recording``).
* ``channels``: the output channel names, and ``positions``: their ``[C, 3]`` metres (head
  frame); both null when they vary between recordings (then see each ``files`` entry).
* ``windows``: total windows written; ``hours``: hours of EEG in them; ``input_hours``: hours
  of the converted recordings.
* ``counts``: ``{"split": {split: n}, "label": {split: {label: n}}, "subject": {split:
  {subject: n}}}``.
* ``shards``: ``{split: [shard path relative to DIR, ...]}`` -- what ``read_split`` reads.
* ``files``: one entry per converted input (sorted by path): ``path``, ``size`` (bytes),
  ``sha256``, ``subject``, ``session``, ``recording``, ``split``, ``windows``, ``duration_s``,
  ``source_rate_hz``, ``shard``, ``rejected_windows``.
* ``rejected``: ``[{"path", "reason"}]`` for every input that could not be used.
* ``rejected_windows``: windows dropped, per reason (``amplitude``, ``flat_channel``,
  ``outside_recording``).

No timestamps or timings: the manifest depends only on the inputs and the recipe, so a rerun
or a run with another worker count writes the same bytes. Written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from data_prep import pipeline
from neuript_jax.data import record as record_lib

MANIFEST = "manifest.json"


def build(recipe, states: Sequence[dict]) -> dict:
  """The manifest dict from the committed states of the current inputs (any order)."""
  cfg = recipe.config
  states = sorted(states, key=lambda s: s["path"])
  converted = [s for s in states if s["status"] == "converted"]
  rejected = [{"path": s["path"], "reason": s["reason"]} for s in states
              if s["status"] != "converted"]
  split_counts: dict[str, int] = {}
  label_counts: dict[str, dict[str, int]] = {}
  subject_counts: dict[str, dict[str, int]] = {}
  rejected_windows: dict[str, int] = {}
  shard_lists: dict[str, list[str]] = {}
  files = []
  for s in converted:
    split = s["split"]
    split_counts[split] = split_counts.get(split, 0) + s["windows"]
    for label, n in s.get("labels", {}).items():
      per = label_counts.setdefault(split, {})
      per[label] = per.get(label, 0) + n
    if s["windows"]:
      per = subject_counts.setdefault(split, {})
      per[s["subject"]] = per.get(s["subject"], 0) + s["windows"]
    for reason, n in s.get("rejected_windows", {}).items():
      rejected_windows[reason] = rejected_windows.get(reason, 0) + n
    if s.get("shard"):
      shard_lists.setdefault(split, []).append(s["shard"])
    files.append({k: s.get(k) for k in (
        "path", "size", "sha256", "dataset", "subject", "session", "recording", "split",
        "windows", "duration_s", "source_rate_hz", "shard", "rejected_windows")})
  channel_sets = {tuple(s["channels"]) for s in converted}
  position_sets = {json.dumps(s["positions"]) for s in converted}
  same_channels = len(channel_sets) == 1
  same_positions = same_channels and len(position_sets) == 1
  if not same_positions:
    for f, s in zip(files, converted):
      f["channels"], f["positions"] = s["channels"], s["positions"]
  total = sum(split_counts.values())
  return {
      "schema_version": record_lib.SCHEMA_VERSION,
      "engine_version": pipeline.ENGINE_VERSION,
      "recipe": {"name": recipe.name, "hash": recipe.config_hash,
                 "config": json.loads(cfg.canonical_json())},
      "dataset": cfg.dataset,
      "sampling_rate": cfg.target_rate_hz,
      "window_samples": cfg.window_samples,
      "montage": cfg.montage,
      "positions_source": cfg.positions,
      "channels": list(next(iter(channel_sets))) if same_channels else None,
      "positions": converted[0]["positions"] if same_positions else None,
      "windows": total,
      "hours": round(total * cfg.window_s / 3600.0, 6),
      "input_hours": round(sum(s["duration_s"] for s in converted) / 3600.0, 6),
      "counts": {"split": dict(sorted(split_counts.items())),
                 "label": {k: dict(sorted(v.items())) for k, v in sorted(label_counts.items())},
                 "subject": {k: dict(sorted(v.items())) for k, v in
                             sorted(subject_counts.items())}},
      "shards": {k: v for k, v in sorted(shard_lists.items())},
      "files": files,
      "rejected": rejected,
      "rejected_windows": dict(sorted(rejected_windows.items())),
  }


def write(out_dir: str | Path, manifest: dict) -> Path:
  """Atomically write ``DIR/manifest.json`` (sorted keys, indented); an identical manifest
  is left untouched (a rerun on a finished output does not even change its mtime)."""
  from neuript_jax.files import atomic_write_text
  path = Path(out_dir) / MANIFEST
  text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
  if not (path.exists() and path.read_text() == text):
    atomic_write_text(path, text)
  return path


def read(out_dir: str | Path) -> dict:
  """The manifest of a ``data_prep`` output directory."""
  return json.loads((Path(out_dir) / MANIFEST).read_text())
