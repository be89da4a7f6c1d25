"""The pretraining launcher end to end: a SIGKILL at any point resumes with the exact losses of
an uninterrupted run; SIGTERM saves before exiting; init_from loads params only."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

FAST = [
    "--config.model.T=32", "--config.data.window_len=32",
    "--config.model.merge_layers=(1,2,2)", "--config.model.enc_expert=(0,2,4)",
    "--config.model.dec_expert=(0,0,0,0)", "--config.model.cross_expert=(0,0,0,0)",
    "--config.total_steps=12", "--config.log_every=1", "--config.checkpoint_every=4",
    "--config.eval_every=1000", "--config.plot_every=1000", "--config.eval_batches=1",
    "--config.async_checkpoint=false",
]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
  """A small pretrain_tcp20 shard folder from the synthetic corpus (2 subjects x 2 x 5.5 min)."""
  from data_prep import convert, synthetic
  from data_prep.recipes import get_recipe
  root = tmp_path_factory.mktemp("pretrain_data")
  synthetic.write_corpus(root / "raw", n_subjects=3, recordings=1, minutes=5.5, seed=1)
  recipe = get_recipe("pretrain_tcp20", params={"val_fraction": 0.34})
  manifest = convert.convert(str(root / "raw"), recipe, root / "shards", workers=1)
  assert manifest["windows"] > 20
  return str(root / "shards")


def command(workdir, shards, *extra):
  return [sys.executable, "-m", "launch.pretrain", f"--workdir={workdir}",
          f"--config.data.sources=(('{shards}', 1.0),)", *FAST, *extra]


def losses(workdir):
  out = {}
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      row = json.loads(line)
      if "loss" in row:
        out[row["step"]] = row["loss"]
  return out


def run(cmd, timeout=900):
  res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
  assert res.returncode == 0, res.stderr[-4000:]
  return res


@pytest.fixture(scope="module")
def uninterrupted(shards, tmp_path_factory):
  wd = str(tmp_path_factory.mktemp("run_a"))
  run(command(wd, shards))
  got = losses(wd)
  assert sorted(got) == list(range(1, 13))
  return wd, got


def wait_for_checkpoint(workdir, step, proc, timeout=600):
  target = os.path.join(workdir, "checkpoints", str(step))
  start = time.time()
  while not os.path.isdir(target):
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    assert time.time() - start < timeout, "no checkpoint appeared"
    time.sleep(0.2)


def logged_step(workdir) -> int:
  """The last step in metrics.jsonl (0 if none yet; a line being written is skipped)."""
  try:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      rows = [json.loads(line) for line in f if line.endswith("\n")]
  except FileNotFoundError:
    return 0
  return max((r["step"] for r in rows if "loss" in r), default=0)


def wait_for_step(workdir, step, proc, timeout=600):
  start = time.time()
  while logged_step(workdir) < step:
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    assert time.time() - start < timeout, f"step {step} was never logged"
    time.sleep(0.05)


def test_sigkill_then_resume_gives_identical_losses(shards, uninterrupted, tmp_path):
  _, want = uninterrupted
  wd = str(tmp_path / "run_b")
  proc = subprocess.Popen(command(wd, shards), cwd=REPO, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  wait_for_checkpoint(wd, 4, proc)
  wait_for_step(wd, 6, proc)           # after checkpoint 4, mid-run: steps 5-6 are lost
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  before = losses(wd)
  res = run(command(wd, shards))
  assert "resumed from" in res.stderr
  after = losses(wd)
  for step in range(1, 13):
    assert after[step] == want[step], (step, after[step], want[step], sorted(before))


def test_sigterm_saves_before_exit(shards, tmp_path):
  wd = str(tmp_path / "run_c")
  proc = subprocess.Popen(command(wd, shards, "--config.total_steps=400",
                                  "--config.checkpoint_every=1000"),
                          cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  metrics = os.path.join(wd, "metrics.jsonl")
  start = time.time()
  while not (os.path.exists(metrics) and os.path.getsize(metrics) > 0):
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    assert time.time() - start < 600
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  err = proc.communicate(timeout=300)[1]
  assert proc.returncode == 0, err[-3000:]
  assert "SIGTERM: saving step" in err
  steps = [int(d) for d in os.listdir(os.path.join(wd, "checkpoints")) if d.isdigit()]
  assert steps and max(steps) < 400 and max(steps) % 1000 != 0
  assert f"stopped at step {max(steps)} of 400; the same command resumes it" in err


def test_init_from_loads_params_not_optimizer(shards, uninterrupted, tmp_path):
  src, _ = uninterrupted
  wd = str(tmp_path / "run_d")
  res = run(command(wd, shards, f"--config.init_from={src}", "--config.total_steps=2",
                    "--config.optim.pct_start=0"))
  assert "initialising params from" in res.stderr
  assert sorted(losses(wd)) == [1, 2]          # a fresh run: step counter not restored


def test_nonfinite_step_is_skipped_and_never_changes_params():
  import jax
  import numpy as np
  from neuript_jax.configs import pretrain as pretrain_config
  from neuript_jax.configs.common import to_model_config
  from neuript_jax.train import mesh as mesh_lib
  from neuript_jax.train import pretrain

  config = pretrain_config.get_config("tiny")
  config.model.T = 32
  config.model.merge_layers = (1, 2, 2)
  config.model.enc_expert = (0, 2, 4)
  config.model.dec_expert = config.model.cross_expert = (0, 0, 0, 0)
  model_cfg = to_model_config(config.model)
  mesh = mesh_lib.make_mesh([1, 1, 1, 1], jax.devices()[:1])
  state, train_step, _, _ = pretrain.setup(config, model_cfg, mesh)
  before = jax.tree_util.tree_map(np.asarray, state["params"])
  x = np.random.default_rng(0).standard_normal((8, 32, 20)).astype(np.float32)
  bad = x.copy()
  bad[0, 3, 5] = np.nan
  state, m = train_step(state, {"x": bad})
  assert int(m["finite"]) == 0 and int(state["step"]) == 1
  for a, b in zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(state["params"])):
    np.testing.assert_array_equal(a, np.asarray(b))
  state, m = train_step(state, {"x": x})
  assert int(m["finite"]) == 1 and np.isfinite(float(m["loss"]))
  changed = any(not np.array_equal(a, np.asarray(b)) for a, b in
                zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(state["params"])))
  assert changed


def test_train_step_with_patch_tokens():
  """seg_len > 1 (tokens of several points): the AAMP masks are pooled to the model's tokens."""
  import jax
  import numpy as np
  from neuript_jax.configs import pretrain as pretrain_config
  from neuript_jax.configs.common import to_model_config
  from neuript_jax.train import mesh as mesh_lib
  from neuript_jax.train import pretrain

  config = pretrain_config.get_config("tiny")
  config.model.update(dict(T=32, seg_len=4, merge_layers=(1, 2), enc_expert=(0, 2),
                           dec_expert=(0, 0, 0), cross_expert=(0, 0, 0)))
  model_cfg = to_model_config(config.model)
  mesh = mesh_lib.make_mesh([1, 1, 1, 1], jax.devices()[:1])
  state, train_step, _, _ = pretrain.setup(config, model_cfg, mesh)
  x = np.random.default_rng(0).standard_normal((4, 32, 20)).astype(np.float32)
  state, m = train_step(state, {"x": x})
  assert int(m["finite"]) == 1 and 0 < float(m["rec_loss"]) < 10
