"""Optimizer and learning-rate schedules (REFERENCE.md §5.2): AdamW (0.9, 0.98), weight decay
5e-3, global-norm clipping at 100, OneCycle (max lr 3e-4, warm-up 0.15, div 25, final div 1e4)
or warm-up + cosine."""

from __future__ import annotations

import optax


def make_schedule(cfg, total_steps: int) -> optax.Schedule:
  """cfg: optim ConfigDict with schedule, lr, pct_start, div_factor, final_div_factor,
  warmup_steps, min_lr."""
  if cfg.schedule == "onecycle":
    return optax.cosine_onecycle_schedule(
        transition_steps=max(total_steps, 1), peak_value=cfg.lr, pct_start=cfg.pct_start,
        div_factor=cfg.div_factor, final_div_factor=cfg.final_div_factor)
  if cfg.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(
        init_value=cfg.lr / cfg.div_factor, peak_value=cfg.lr,
        warmup_steps=int(cfg.pct_start * total_steps), decay_steps=max(total_steps, 1),
        end_value=cfg.min_lr)
  if cfg.schedule == "constant":
    return optax.constant_schedule(cfg.lr)
  raise ValueError(f"config.optim.schedule must be onecycle, cosine or constant, "
                   f"got {cfg.schedule!r}")


def make_optimizer(cfg, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  schedule = make_schedule(cfg, total_steps)
  tx = optax.chain(
      optax.clip_by_global_norm(cfg.clip_norm) if cfg.clip_norm else optax.identity(),
      optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay))
  return tx, schedule
