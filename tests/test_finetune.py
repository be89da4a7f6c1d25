"""Fine-tuning end to end on tiny labelled synthetic shards (3-block model, T=32): results.json
with the metric names, selection on validation only, head-only epochs, init_from a reference
.npz (and a mismatched one failing with the tensor names), launch.evaluate, and a SIGKILL
resume that gives the uninterrupted run's losses and results."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import REPO

MODEL = [
    "--config.model.T=32", "--config.data.window_len=32",
    "--config.model.merge_layers=(1,2,2)", "--config.model.enc_expert=(0,2,4)",
    "--config.model.dec_expert=(0,0,0,0)", "--config.model.cross_expert=(0,0,0,0)",
    "--config.model.c_layers=3",
]
RUN = [
    "--config.data.global_batch_size=8", "--config.eval_batch_size=16",
    "--config.total_steps=6", "--config.eval_every=2", "--config.log_every=1",
    "--config.freeze_epochs=1", "--config.async_checkpoint=false",
    "--config.optim.pct_start=0.5",      # a warm-up of at least one step in 6
]
METRICS = ("balanced_accuracy", "cohen_kappa", "weighted_f1", "auroc", "auc_pr",
           "average_precision", "confusion_matrix")


def model_cfg(**kw):
  from neuript_jax.model import ModelConfig
  base = dict(d_model=32, n_heads=4, d_ff=32, hidden_dim=32, hidden_dim_shared=32, T=32,
              data="Stage1", num_classes=4, merge_layers=(1, 2, 2), enc_expert=(0, 2, 4),
              dec_expert=(0,) * 4, cross_expert=(0,) * 4, c_layers=3)
  base.update(kw)
  return ModelConfig(**base)


def reference_npz(path, cfg, seed):
  """A stage-1 reference-format state_dict (random values) for `cfg`, as convert writes it."""
  import jax
  from neuript_jax import convert
  rng = np.random.default_rng(seed)
  params = jax.tree_util.tree_map(lambda s: rng.normal(0, 0.1, s.shape).astype(np.float32),
                                  convert.param_template(cfg, 1))
  convert.save_state_dict(convert.to_reference(params, cfg, stage=1), str(path))
  return params


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
  """generic recipe, annotation labels, TCP-20: 4 subjects x 2 min, one subject per val/test."""
  from data_prep import convert, montages, synthetic
  from data_prep.recipes import get_recipe
  root = tmp_path_factory.mktemp("finetune_data")
  synthetic.write_corpus(root / "raw", n_subjects=4, recordings=1, minutes=2.0, seed=3)
  recipe = get_recipe("generic", channels=montages.MONTAGES["tcp20"], montage="standard_1020",
                      params={"label_source": "annotations",
                              "label_map": synthetic.GENERIC_LABEL_MAP, "split_rule": "lists",
                              "split_lists": "train=sub-01;sub-02,val=sub-03,test=sub-04"})
  manifest = convert.convert(str(root / "raw"), recipe, root / "shards", workers=1)
  assert manifest["counts"]["split"]["train"] >= 24
  return str(root / "shards")


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
  path = tmp_path_factory.mktemp("ref") / "stage1.npz"
  params = reference_npz(path, model_cfg(), seed=0)
  return str(path), params


def command(workdir, shards, init_from, *extra):
  return [sys.executable, "-m", "launch.finetune", f"--workdir={workdir}",
          f"--config.data.sources=(('{shards}', 1.0),)", f"--config.init_from={init_from}",
          *MODEL, *RUN, *extra]


def run(cmd, timeout=900):
  res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
  assert res.returncode == 0, res.stderr[-4000:]
  return res


def train_rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return {r["step"]: r for r in rows if "loss" in r}, [r for r in rows if "val_nll" in r]


@pytest.fixture(scope="module")
def uninterrupted(shards, npz, tmp_path_factory):
  wd = str(tmp_path_factory.mktemp("ft_a"))
  res = run(command(wd, shards, npz[0]))
  return wd, res.stderr


def test_results_json_and_selection_on_validation(uninterrupted):
  wd, log = uninterrupted
  assert "initialised the encoder from" in log
  with open(os.path.join(wd, "results.json")) as f:
    results = json.load(f)
  for split in ("validation", "test"):
    assert set(METRICS) <= set(results[split]), results[split].keys()
    assert np.array(results[split]["confusion_matrix"]).shape == (4, 4)
  train, vals = train_rows(wd)
  assert sorted(train) == list(range(1, 7))
  # Head-only first epoch: the encoder is frozen for steps_per_epoch steps.
  spe = json.load(open(os.path.join(wd, "finetune_config.json")))["steps_per_epoch"]
  assert [train[s]["frozen"] for s in range(1, 7)] == [1] * min(spe, 6) + [0] * (6 - min(spe, 6))
  # The selected step is the first best validation score; no test metric was ever logged.
  assert [v["step"] for v in vals] == [2, 4, 6]
  best = max(vals, key=lambda v: v["val_balanced_accuracy"])
  assert results["selected_step"] == best["step"]
  assert results["validation"]["balanced_accuracy"] == pytest.approx(
      best["val_balanced_accuracy"])
  assert not any(k.startswith("test") for r in vals for k in r)
  for png in ("confusion_matrix_val", "confusion_matrix_test", "roc_test", "pr_test", "curves"):
    assert os.path.getsize(os.path.join(wd, f"{png}.png")) > 5000, png


def test_init_from_reference_npz_loads_encoder(npz):
  import jax
  from neuript_jax.evaluation import encoders
  cfg = model_cfg()
  template = encoders.param_shapes(cfg)
  loaded = encoders.load_encoder_params(npz[0], cfg, template)
  want = npz[1]
  assert set(loaded) == {"enc_value_embedding", "encoder"}
  for k in loaded:
    for a, b in zip(jax.tree_util.tree_leaves(loaded[k]), jax.tree_util.tree_leaves(want[k])):
      np.testing.assert_array_equal(a, b)


def test_init_from_mismatched_npz_names_tensors(tmp_path):
  from neuript_jax.evaluation import encoders as finetune
  other = tmp_path / "other.npz"
  reference_npz(other, model_cfg(merge_layers=(1, 1, 2)), seed=1)   # block 1 without merging
  with pytest.raises(finetune.InitError) as e:
    finetune.load_encoder_params(str(other), model_cfg(), finetune.param_shapes(model_cfg()))
  assert "encoder.encode_blocks.1.merge_layer" in str(e.value)
  # An orbax-style param tree with a wrongly shaped tensor is refused the same way.
  import jax
  tree = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, np.float32),
                                finetune.param_shapes(model_cfg(d_model=16, n_heads=4,
                                                                d_ff=16, hidden_dim=16,
                                                                hidden_dim_shared=16)))
  with pytest.raises(finetune.InitError, match="enc_value_embedding/linear/kernel"):
    finetune.check_encoder_fit(tree, finetune.param_shapes(model_cfg()), "ckpt")


def test_evaluate_launcher_reproduces_test_metrics(uninterrupted, shards, tmp_path):
  from neuript_jax.evaluation import runs
  wd, _ = uninterrupted
  m = runs.evaluate(wd, [shards], "test", batch_size=16, plots_dir=str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == ["confusion_matrix_test.png", "curves.png",
                                          "pr_test.png", "roc_test.png"]
  with open(os.path.join(wd, "results.json")) as f:
    want = json.load(f)["test"]
  for k in METRICS:
    assert m[k] == pytest.approx(want[k], abs=1e-6) if k != "confusion_matrix" else \
        m[k] == want[k]


def test_embedded_features_feed_the_head(uninterrupted, shards):
  """launch.embed's features of a fine-tuned run, through the run's head, are its logits."""
  import jax
  from neuript_jax.evaluation import embeddings, predict, runs
  from neuript_jax.train import mesh as mesh_lib
  from neuript_jax.train import step
  wd, _ = uninterrupted
  z = embeddings.embed_splits(wd, [shards], ["test"], batch_size=16)["test"]
  model_cfg, params, run_cfg, _ = runs.load_finetuned(wd)
  data_cfg = runs.split_data_config([shards], "test", 16, run_cfg["config"]["data"])
  labels, logits = predict.predict_split(jax.jit(step.make_predict(model_cfg)), params,
                                         data_cfg, mesh_lib.make_mesh([-1, 1, 1, 1]), 16)
  head = jax.tree_util.tree_map(np.asarray, params[step.HEAD_KEY]["classification_layer"])
  np.testing.assert_array_equal(z["labels"], labels)
  np.testing.assert_allclose(z["features"] @ head["kernel"] + head["bias"], logits, rtol=1e-4,
                             atol=1e-4)


def test_sigkill_then_resume_gives_identical_run(shards, npz, uninterrupted, tmp_path):
  wd_a, _ = uninterrupted
  wd = str(tmp_path / "ft_b")
  proc = subprocess.Popen(command(wd, shards, npz[0]), cwd=REPO, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  # The event: checkpoint 2 is finished (its folder renamed into place); kill right then.
  target = os.path.join(wd, "checkpoints", "2")
  start = time.time()
  while not os.path.isdir(target):
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    assert time.time() - start < 600, "no checkpoint appeared"
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not os.path.exists(os.path.join(wd, "results.json"))
  res = run(command(wd, shards, npz[0]))
  assert "resumed from" in res.stderr
  want, _ = train_rows(wd_a)
  got, _ = train_rows(wd)
  for step in range(1, 7):
    assert got[step]["loss"] == want[step]["loss"], step
  a = json.load(open(os.path.join(wd_a, "results.json")))
  b = json.load(open(os.path.join(wd, "results.json")))
  assert a["selected_step"] == b["selected_step"]
  assert a["test"] == b["test"]


def test_head_only_steps_leave_the_encoder_unchanged():
  """freeze_steps=2: the encoder's params are bit-identical after two steps while the head
  moves; the third step moves the encoder too."""
  import jax
  from neuript_jax.configs import finetune as finetune_config
  from neuript_jax.configs.common import to_model_config
  from neuript_jax.train import finetune
  from neuript_jax.train import mesh as mesh_lib

  config = finetune_config.get_config("tiny")
  config.model.update(dict(T=32, merge_layers=(1, 2, 2), enc_expert=(0, 2, 4),
                           dec_expert=(0,) * 4, cross_expert=(0,) * 4, c_layers=3))
  cfg = to_model_config(config.model)
  mesh = mesh_lib.make_mesh([1, 1, 1, 1], jax.devices()[:1])
  state, train_step, _ = finetune.setup(config, cfg, mesh, mesh_lib.DEFAULT_RULES, 10, 2,
                                        np.array([5, 5, 5, 5]))
  snap = lambda tree: jax.tree_util.tree_map(np.asarray, tree)
  before = snap(state["params"])
  rng = np.random.default_rng(0)
  batch = {"x": rng.standard_normal((8, cfg.T, cfg.data_dim)).astype(np.float32),
           "label": rng.integers(0, 4, 8).astype(np.int32)}
  for _ in range(2):
    state, m = train_step(state, batch)
    assert int(m["frozen"]) == 1
  after = snap(state["params"])
  for k in ("enc_value_embedding", "encoder"):
    for a, b in zip(jax.tree_util.tree_leaves(before[k]), jax.tree_util.tree_leaves(after[k])):
      np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, b) for a, b in zip(
      jax.tree_util.tree_leaves(before["classification_head"]),
      jax.tree_util.tree_leaves(after["classification_head"])))
  state, m = train_step(state, batch)
  assert int(m["frozen"]) == 0
  moved = snap(state["params"])["encoder"]
  assert any(not np.array_equal(a, b) for a, b in zip(
      jax.tree_util.tree_leaves(after["encoder"]), jax.tree_util.tree_leaves(moved)))


def test_early_stopping_after_patience_validations_without_improvement():
  from neuript_jax.train.finetune import Selection
  sel = Selection("balanced_accuracy", patience=2)
  scores = [0.5, 0.6, 0.55, 0.6, 0.7]      # 0.6 again is no improvement
  best = [sel.update(10 * (i + 1), {"balanced_accuracy": s}) for i, s in enumerate(scores[:4])]
  assert best == [True, True, False, False]
  assert sel.s["stopped"] and sel.s["best_step"] == 20 and sel.s["since_best"] == 2
  never = Selection("nll", patience=0)      # lower is better; patience 0 never stops
  for i, v in enumerate([1.0, 0.9, 1.1, 1.2, 1.3]):
    never.update(i + 1, {"nll": v})
  assert not never.s["stopped"] and never.s["best_step"] == 2


def test_class_counts_match_the_labels_read(shards):
  from neuript_jax.data import pipeline
  from neuript_jax.train import finetune
  data = pipeline.default_data_config()
  data.sources = [(shards, 1.0)]
  data.split = "train"
  data.global_batch_size = 4
  counts = finetune.class_counts(data, 4)            # from the manifest's label counts
  read = finetune._counted_labels(data, 4)           # by reading every record
  np.testing.assert_array_equal(counts, read)
  assert counts.sum() > 0 and (counts > 0).sum() >= 2
