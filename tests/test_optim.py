"""The optimizer and schedule of the paper's pretraining (REFERENCE.md §5.2): AdamW (0.9, 0.98),
weight decay 5e-3, clipping at 100, OneCycle to 3e-4 with div 25 (start 1.2e-5), final div 1e4
and warm-up 0.15, cosine annealing; as the paper preset sets them."""

import numpy as np
import pytest

from neuript_jax.configs import pretrain as pretrain_config
from neuript_jax.train import optim


def test_paper_preset_states_the_papers_optimizer():
  c = pretrain_config.get_config("paper")
  o = c.optim
  assert (o.schedule, o.lr, o.pct_start, o.div_factor, o.final_div_factor) == (
      "onecycle", 3e-4, 0.15, 25.0, 1e4)
  assert (o.b1, o.b2, o.weight_decay, o.clip_norm) == (0.9, 0.98, 5e-3, 100.0)
  assert c.total_steps == 400_000 and c.data.global_batch_size == 480


def test_onecycle_schedule_matches_the_paper():
  c = pretrain_config.get_config("paper")
  total = 1000
  lr = optim.make_schedule(c.optim, total)
  assert float(lr(0)) == pytest.approx(3e-4 / 25, rel=1e-6)            # 1.2e-5 at the start
  assert float(lr(150)) == pytest.approx(3e-4, rel=1e-6)                # peak after 15%
  assert float(lr(total)) == pytest.approx(3e-4 / 25 / 1e4, rel=1e-4)   # start / final div
  # Cosine annealing both ways: rising to the peak, then falling, half-way values.
  assert float(lr(75)) == pytest.approx((3e-4 / 25 + 3e-4) / 2, rel=1e-4)
  assert float(lr(575)) == pytest.approx((3e-4 + 3e-4 / 25 / 1e4) / 2, rel=1e-3)
  values = np.array([float(lr(s)) for s in range(0, total + 1, 10)])
  peak = int(np.argmax(values))
  assert np.all(np.diff(values[:peak + 1]) >= 0) and np.all(np.diff(values[peak:]) <= 0)

