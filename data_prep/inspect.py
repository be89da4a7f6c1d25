"""Look at a ``data_prep`` output: manifest summary, example windows, channel positions.

``python -m data_prep.inspect DIR [--out=DIR/inspect] [--per_split=3]`` prints
``summarize(manifest)`` and writes PNGs (matplotlib, Agg backend):

* ``<split>_windows.png``: ``per_split`` windows of each split, evenly spaced through the
  split, as stacked traces (µV, one row per channel, channel names on the y axis; the title
  of each panel gives subject, recording, window start and label);
* ``positions.png``: the channels' 3-D positions seen from above on a head outline (nose up,
  left ear left); bipolar channels are drawn as a line between their two electrodes with a
  dot at the stored midpoint.

Records are read with ``neuript_jax.data.record.read_split``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from neuript_jax.data import record as record_lib


def summarize(manifest: dict) -> str:
  """A human-readable multi-line summary of a manifest."""
  lines = []
  recipe = manifest.get("recipe", {})
  lines.append(f"recipe      {recipe.get('name')} (hash {recipe.get('hash')}), dataset "
               f"{manifest.get('dataset')}")
  lines.append(f"signal      {manifest.get('sampling_rate')} Hz, "
               f"{manifest.get('window_samples')} samples per window, montage "
               f"{manifest.get('montage')} ({manifest.get('positions_source')} positions)")
  channels = manifest.get("channels")
  lines.append("channels    " + (f"{len(channels)}: {', '.join(channels)}" if channels
                                 else "vary per recording (see files)"))
  lines.append(f"windows     {manifest.get('windows')} ({manifest.get('hours')} h of "
               f"{manifest.get('input_hours')} h converted)")
  counts = manifest.get("counts", {})
  for split, n in counts.get("split", {}).items():
    labels = counts.get("label", {}).get(split, {})
    subjects = counts.get("subject", {}).get(split, {})
    shown = ", ".join(f"{k} {v}" for k, v in labels.items()) or "unlabelled"
    lines.append(f"  {split:<6}    {n} windows, {len(subjects)} subjects; {shown}")
  files = manifest.get("files", [])
  rejected = manifest.get("rejected", [])
  lines.append(f"files       {len(files)} converted, {len(rejected)} rejected")
  for r in rejected[:10]:
    lines.append(f"  rejected  {Path(r['path']).name}: {r['reason']}")
  if len(rejected) > 10:
    lines.append(f"  ... and {len(rejected) - 10} more (manifest.json 'rejected')")
  rw = manifest.get("rejected_windows", {})
  if rw:
    lines.append("windows dropped: " + ", ".join(f"{k} {v}" for k, v in rw.items()))
  return "\n".join(lines)


def _pyplot():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def plot_windows(records: Sequence[record_lib.Record], path: Path, title: str = "") -> Path:
  """Stacked traces of each record (one panel per record) into a PNG at ``path``."""
  plt = _pyplot()
  n = len(records)
  n_ch = max(len(r.channel_names) for r in records)
  fig, axes = plt.subplots(1, n, figsize=(4.5 * n, 0.32 * n_ch + 1.6), squeeze=False)
  for ax, r in zip(axes[0], records):
    x = r.signal
    t = np.arange(x.shape[1]) / r.sampling_rate
    spacing = max(float(np.percentile(np.abs(x), 99)) * 2.0, 1.0)
    offsets = -spacing * np.arange(x.shape[0])
    ax.plot(t, (x + offsets[:, None]).T, lw=0.6, color="k")
    ax.set_yticks(offsets)
    ax.set_yticklabels(r.channel_names, fontsize=7)
    ax.set_xlabel("s")
    label = r.label_name if r.label_name is not None else r.label
    ax.set_title(f"{r.subject} | {Path(r.recording).name}\nt={r.window_start_s:g} s | "
                 f"label {label}", fontsize=8)
    ax.text(0.99, 0.01, f"spacing {spacing:.0f} µV", transform=ax.transAxes, ha="right",
            va="bottom", fontsize=6)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)
  return path


def plot_positions(names: Sequence[str], positions: np.ndarray, path: Path,
                   montage: str | None = None, title: str = "") -> Path:
  """Channel positions [C, 3] (metres) from above on a head outline into a PNG at ``path``.

  Bipolar names ``A-B`` also get a line between their electrodes (template ``montage``
  positions) when the montage knows both.
  """
  from neuript_jax import geometry

  plt = _pyplot()
  pos = np.asarray(positions, dtype=np.float64)
  fig, ax = plt.subplots(figsize=(6, 6))
  electrodes = {}
  if montage:
    for name in names:
      parts = name.split("-")
      if len(parts) == 2:
        try:
          electrodes[name] = geometry.electrode_positions(parts, montage)
        except (ValueError, KeyError):
          pass  # positions from the recording itself: no template line to draw
  extent = [np.abs(pos[:, :2]).max()]
  extent += [np.abs(e[:, :2]).max() for e in electrodes.values()]
  radius = 1.15 * max(max(extent), 1e-3)
  circle = np.linspace(0, 2 * np.pi, 200)
  ax.plot(radius * np.cos(circle), radius * np.sin(circle), color="0.4")
  ax.plot([-0.1 * radius, 0, 0.1 * radius], [0.99 * radius, 1.12 * radius, 0.99 * radius],
          color="0.4")                                         # nose (+y anterior)
  for side in (-1, 1):
    ax.plot(side * radius * np.array([1.0, 1.06, 1.06, 1.0]),
            radius * np.array([0.12, 0.08, -0.12, -0.16]), color="0.4")  # ears
  for name, ends in electrodes.items():
    ax.plot(ends[:, 0], ends[:, 1], color="tab:blue", lw=1, alpha=0.6)
  ax.scatter(pos[:, 0], pos[:, 1], s=18, color="tab:red", zorder=3)
  for name, p in zip(names, pos):
    ax.annotate(name, (p[0], p[1]), fontsize=7, xytext=(2, 2), textcoords="offset points")
  ax.set_aspect("equal")
  ax.set_xlim(-1.25 * radius, 1.25 * radius)
  ax.set_ylim(-1.25 * radius, 1.25 * radius)
  ax.set_xlabel("x (m, right)")
  ax.set_ylabel("y (m, anterior)")
  ax.set_title(title or f"{len(names)} channels (top view)")
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)
  return path


def inspect_dir(directory, out_dir=None, per_split: int = 3) -> list[Path]:
  """Print-free core of the CLI: writes the PNGs for ``directory``; returns their paths."""
  directory = Path(directory)
  manifest = json.loads((directory / "manifest.json").read_text())
  out = Path(out_dir) if out_dir is not None else directory / "inspect"
  out.mkdir(parents=True, exist_ok=True)
  written = []
  first = None
  for split in manifest.get("shards", {}):
    with record_lib.read_split(directory, split) as reader:
      n = len(reader)
      if n == 0:
        continue
      picks = sorted({int(i) for i in np.linspace(0, n - 1, min(per_split, n))})
      recs = [reader[i] for i in picks]
    first = first or recs[0]
    written.append(plot_windows(recs, out / f"{split}_windows.png",
                                title=f"{manifest.get('dataset')} - {split} ({n} windows)"))
  names = manifest.get("channels") or (list(first.channel_names) if first else None)
  positions = manifest.get("positions")
  if positions is None and first is not None:
    positions = first.positions
  if names and positions is not None:
    written.append(plot_positions(names, np.asarray(positions), out / "positions.png",
                                  montage=manifest.get("montage"),
                                  title=f"{manifest.get('dataset')}: {len(names)} channels"))
  return written


def main(argv):
  from absl import app
  from absl import flags
  if len(argv) != 2:
    raise app.UsageError("usage: python -m data_prep.inspect DIR [--out=PNG_DIR] "
                         "[--per_split=N]")
  f = flags.FLAGS
  directory = Path(argv[1])
  manifest = json.loads((directory / "manifest.json").read_text())
  print(summarize(manifest))
  for p in inspect_dir(directory, f.out, f.per_split):
    print(f"wrote {p}")


if __name__ == "__main__":
  from absl import app
  from absl import flags
  flags.DEFINE_string("out", None, "Folder for the PNGs (default: DIR/inspect).")
  flags.DEFINE_integer("per_split", 3, "Windows plotted per split.")
  app.run(main)
