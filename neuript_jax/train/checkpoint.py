"""Checkpoints with orbax: the latest N steps (for resume) and the best by eval loss.

Each checkpoint holds the train state (params, optimizer state, step, RNG key data) and the
data iterator's state (JSON), so a resumed run continues with exactly the batches and random
draws an uninterrupted run would have used. Saves are asynchronous; `wait()` blocks until the
last one is on disk (orbax writes to a temporary folder and renames it when complete, so a
killed save never looks finished).
"""

from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp


class Checkpointer:
  """workdir/checkpoints (last `keep` steps) and workdir/best (lowest eval loss)."""

  def __init__(self, workdir: str, keep: int = 3, async_save: bool = True):
    opts = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                        enable_async_checkpointing=async_save)
    self.latest = ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"),
                                        options=opts)
    best_opts = ocp.CheckpointManagerOptions(
        max_to_keep=1, create=True, enable_async_checkpointing=async_save,
        best_fn=lambda m: m["eval_loss"], best_mode="min",
        keep_checkpoints_without_metrics=False)
    self.best = ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "best"),
                                      options=best_opts)

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def save(self, step: int, state, data_state: Any, force: bool = False) -> None:
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              data=ocp.args.JsonSave(data_state))
    self.latest.save(step, args=args, force=force)

  def save_best(self, step: int, state, data_state: Any, eval_loss: float) -> None:
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              data=ocp.args.JsonSave(data_state))
    self.best.save(step, args=args, metrics={"eval_loss": float(eval_loss)}, force=True)

  def restore(self, abstract_state, step: int | None = None):
    """-> (state, data_state) of `step` (default: latest)."""
    step = self.latest.latest_step() if step is None else step
    out = self.latest.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    return out["state"], out["data"]

  def wait(self) -> None:
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    self.latest.close()
    self.best.close()


def load_params(path: str):
  """Params only (a tree of arrays), from a workdir, its checkpoints/ or best/ folder (latest
  step), or one step folder. Used by `--config.init_from=`; optimizer state is ignored."""
  path = os.path.abspath(path)
  for sub in ("checkpoints", "best"):
    if os.path.isdir(os.path.join(path, sub)):
      path = os.path.join(path, sub)
      break
  if os.path.basename(path).isdigit():
    root, step = os.path.dirname(path), int(os.path.basename(path))
  else:
    root = path
    steps = sorted(int(d) for d in os.listdir(root) if d.isdigit()) if os.path.isdir(root) else []
    if not steps:
      raise FileNotFoundError(f"init_from={path}: no orbax checkpoint steps there")
    step = steps[-1]
  with ocp.CheckpointManager(root) as mngr:
    out = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  return out["state"]["params"]
