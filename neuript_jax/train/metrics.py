"""Metric outputs: DIR/metrics.jsonl (one JSON object per logged step), TensorBoard event files,
a progress line (steps/s, samples/s, ETA), and reconstruction plots (PNG)."""

from __future__ import annotations

import json
import os
import time

import numpy as np
from absl import logging


class MetricWriter:
  """metrics.jsonl + TensorBoard + one progress line per log interval. `enabled=False` (every
  process but the first) logs nothing and writes nothing, so a workdir has one writer."""

  def __init__(self, workdir: str, total_steps: int, tensorboard: bool = True,
               enabled: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.total_steps = total_steps
    self.tb = None
    if enabled:
      os.makedirs(workdir, exist_ok=True)
      if tensorboard:
        from tensorboardX import SummaryWriter
        self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
    self._t0 = time.time()
    self._last = (None, None)

  def start(self, step: int) -> None:
    """Start the rate clock at `step` (nothing is printed before a step has run)."""
    self._last = (step, time.time())

  def write(self, step: int, metrics: dict) -> None:
    if not self.enabled:
      return
    row = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
    if self.tb:
      for k, v in row.items():
        if k != "step":
          self.tb.add_scalar(k, v, step)
      self.tb.flush()

  # Shown on the progress line when present, in this order, with these names.
  SHOWN = (("loss", "loss"), ("rec_loss", "rec"), ("cls_loss", "cls"), ("aux_loss", "aux"),
           ("train_acc", "train_acc"), ("lr", "lr"), ("grad_norm", "|g|"))

  def progress(self, step: int, samples_per_step: int, metrics: dict, note: str = "") -> dict:
    """Log one progress line for `step` (already run); returns {"steps_per_s",
    "samples_per_s"} since the previous call (or `start`)."""
    now = time.time()
    last_step, last_t = self._last
    self._last = (step, now)
    if last_step is None or step == last_step:
      rates = {"steps_per_s": 0.0, "samples_per_s": 0.0}
    else:
      sps = (step - last_step) / (now - last_t)
      rates = {"steps_per_s": sps, "samples_per_s": sps * samples_per_step}
    if self.enabled:
      eta = (self.total_steps - step) / rates["steps_per_s"] if rates["steps_per_s"] else 0.0
      shown = "  ".join(f"{name} {metrics[k]:.3g}" if k == "lr" else f"{name} {metrics[k]:.4f}"
                        for k, name in self.SHOWN if k in metrics)
      logging.info("step %d/%d  %s%s  %.2f steps/s  %.1f samples/s  ETA %s", step,
                   self.total_steps, shown, note, rates["steps_per_s"], rates["samples_per_s"],
                   time.strftime("%H:%M:%S", time.gmtime(eta)))
    return rates

  def close(self):
    if self.tb:
      self.tb.close()


def plot_reconstruction(path: str, x, pred, point_mask, channel_names, n_channels: int = 4,
                        sample: int = 0, step: int | None = None) -> None:
  """PNG of a few channels of one sample: signal, masked points, and predictions there.

  x, pred [B, T, D]; point_mask [B, D, T] bool.
  """
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  x, pred, m = np.asarray(x)[sample], np.asarray(pred)[sample], np.asarray(point_mask)[sample]
  chans = list(range(min(n_channels, x.shape[1])))
  fig, axes = plt.subplots(len(chans), 1, figsize=(10, 1.8 * len(chans)), sharex=True)
  axes = np.atleast_1d(axes)
  t = np.arange(x.shape[0])
  for ax, c in zip(axes, chans):
    ax.plot(t, x[:, c], color="#649BC9", lw=1, label="signal")
    idx = np.where(m[c])[0]
    ax.scatter(idx, x[idx, c], s=6, color="#FFAC52", label="masked (target)")
    ax.scatter(idx, pred[idx, c], s=6, color="#F95C49", label="prediction")
    ax.set_ylabel(channel_names[c] if c < len(channel_names) else str(c), fontsize=8)
  axes[0].legend(loc="upper right", fontsize=7, ncol=3)
  axes[-1].set_xlabel("sample (64 Hz)")
  fig.suptitle(f"AAMP reconstruction{'' if step is None else f' at step {step}'} "
               "(A-law companded values)")
  fig.tight_layout()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.savefig(path, dpi=90)
  plt.close(fig)
