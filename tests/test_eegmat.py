"""MentalArithmetic on the real PhysioNet eegmat recordings (../shared/data/eegmat): the
recipe's paper counts on all 72 files, and one short fine-tuning on 4 real subjects with the
downstream config (shards -> results.json with the paper's binary metrics)."""

import collections
import json
import os

import numpy as np
import pytest

from tests.conftest import shared_path

EEGMAT = shared_path("data", "eegmat", "eeg-during-mental-arithmetic-tasks-1.0.0")
pytestmark = pytest.mark.skipif(not (EEGMAT / "Subject00_1.edf").exists(),
                                reason=f"eegmat recordings not found in {EEGMAT}")


def _records_by_split(out):
  from data_prep import convert as convert_lib
  from neuript_jax.data import record as rec
  manifest = convert_lib.manifest_lib.read(out)
  return manifest, {split: list(rec.read_split(out, split)) for split in manifest["shards"]}


def test_recipe_on_all_72_files_gives_the_paper_counts(tmp_path):
  from data_prep import convert as convert_lib
  from data_prep.recipes import get_recipe
  manifest = convert_lib.convert(str(EEGMAT), get_recipe("mental_arithmetic"), tmp_path / "s",
                                 workers=2)
  assert manifest["rejected"] == [] and len(manifest["files"]) == 72
  assert manifest["windows"] == 1707
  assert manifest["counts"]["label"] == {"train": {"rest": 1007, "task": 336},
                                         "val": {"rest": 124, "task": 48},
                                         "test": {"rest": 144, "task": 48}}
  _, by_split = _records_by_split(tmp_path / "s")
  labels = {s: collections.Counter(r.label_name for r in recs) for s, recs in by_split.items()}
  assert {s: len(r) for s, r in by_split.items()} == {"train": 1343, "val": 172, "test": 192}
  assert labels["train"] == {"rest": 1007, "task": 336}
  assert labels["val"] == {"rest": 124, "task": 48}
  assert labels["test"] == {"rest": 144, "task": 48}
  subjects = {s: {r.subject for r in recs} for s, recs in by_split.items()}
  assert subjects["train"] == {f"Subject{i:02d}" for i in range(28)}
  assert subjects["val"] == {f"Subject{i:02d}" for i in range(28, 32)}
  assert subjects["test"] == {f"Subject{i:02d}" for i in range(32, 36)}
  for r in by_split["train"][:3]:
    assert r.signal.shape == (20, 320) and r.sampling_rate == 64.0
    assert int(r.label) == ("task" == r.label_name)


def test_one_finetuning_on_four_real_subjects(tmp_path):
  from data_prep import convert as convert_lib
  from data_prep.recipes import get_recipe
  from neuript_jax.configs.downstream import mental_arithmetic
  from neuript_jax.evaluation import metrics
  from neuript_jax.train import finetune

  files = [str(EEGMAT / f"Subject{n:02d}_{p}.edf") for n in (0, 1, 28, 32) for p in (1, 2)]
  recipe = get_recipe("mental_arithmetic", params={"subject_ranges": {
      "train": [0, 1], "val": [28, 28], "test": [32, 32]}})
  manifest = convert_lib.convert(files, recipe, tmp_path / "shards", workers=2)
  assert manifest["counts"]["split"] == {"train": 96, "val": 48, "test": 48}

  c = mental_arithmetic.get_config("cpu")
  assert c.init_from == "" and c.model.T == 320 and c.model.num_classes == 2
  c.data.sources = ((str(tmp_path / "shards"), 1.0),)
  # A 3-block model and 4 steps keep it fast; the data, loss and selection are the config's.
  c.model.merge_layers, c.model.enc_expert = (1, 2, 2), (0, 2, 4)
  c.model.dec_expert = c.model.cross_expert = (0, 0, 0, 0)
  c.model.c_layers = 3
  c.data.global_batch_size = 8
  c.eval_batch_size = 16
  c.total_steps, c.eval_every, c.log_every = 8, 4, 4
  c.async_checkpoint = False
  results = finetune.train(c, str(tmp_path / "run"))
  on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
  assert on_disk["test"]["n"] == 48 and on_disk["validation"]["n"] == 48
  assert list(results["paper_metrics"]) == ["balanced_accuracy", "auc_pr", "auroc"]
  for k in results["paper_metrics"]:
    assert 0.0 <= on_disk["test"][k] <= 1.0
  assert np.asarray(on_disk["test"]["confusion_matrix"]).sum() == 48
  assert on_disk["select_metric"] == "auroc"
  assert set(metrics.paper_metrics(2)) <= set(on_disk["test"])
  # The config's "prior" rule: threshold = the training task fraction; the hard metrics in
  # results.json are those of predictions.npz at that threshold.
  counts = finetune.class_counts(finetune.data_configs(c)[0], 2)
  assert on_disk["decision_rule"] == "prior"
  assert on_disk["decision"]["threshold"] == pytest.approx(counts[1] / counts.sum())
  z = np.load(tmp_path / "run" / "predictions.npz")
  assert z["test_labels"].shape == (48,) and z["val_logits"].shape[0] == 48
  again = metrics.compute_metrics(z["test_labels"], z["test_logits"], 2, **on_disk["decision"])
  assert again["balanced_accuracy"] == pytest.approx(on_disk["test"]["balanced_accuracy"])


def _fake_runs(root, runs, rng):
  """Finished runs as bench.downstream_table writes them: {row: seeds} under root/runs."""
  from neuript_jax.bench import downstream_table as table
  from neuript_jax.evaluation import metrics, predict
  for row, seeds in runs.items():
    for seed in seeds:
      d = root / "runs" / row / f"seed{seed}"
      d.mkdir(parents=True)
      labels = np.array([0] * 30 + [1] * 10)
      logits = (rng.normal(size=40) + 2.0 * labels - 1.0)[:, None]     # [N, 1], the model's
      preds = {"val": (labels, logits), "test": (labels, logits + 0.1 * seed)}
      decision = metrics.decision("prior", 2, train_counts=[30, 10])
      scored = {name: predict.prediction_metrics(*preds[k], 2, **decision)
                for name, k in (("validation", "val"), ("test", "test"))}
      np.savez(d / table.PREDICTIONS, test_labels=labels, test_logits=preds["test"][1])
      (d / table.RESULT).write_text(json.dumps({**scored, "row": row, "seed": seed,
                                                "decision_rule": "prior",
                                                "decision": decision, "wall_s": 10.0},
                                               default=float))


def test_table_summary_from_finished_runs(tmp_path):
  """bench.downstream_table's summary on two fake rows: mean ± std over seeds, every seed,
  the paper's rows, the rows not measured, and the ROC plot."""
  from neuript_jax.bench import downstream_table as table
  _fake_runs(tmp_path, {"neuript_scratch": (0, 1), "band_power_lr": (0,)},
             np.random.default_rng(0))
  out = table.write_summary(tmp_path, "mental_arithmetic", 2)
  assert out["neuript_scratch"]["n"] == 2 and out["band_power_lr"]["n"] == 1
  md = (tmp_path / "summary.md").read_text()
  assert "NeurIPT pretrained, AAMP (Table 18) | 0.8646 ± 0.0107" in md
  assert "Not measured: NeurIPT pretrained (AAMP" in md and "EEGNet (braindecode)." in md
  lines = (tmp_path / "summary.csv").read_text().splitlines()
  assert lines[0].startswith("row,seed,decision_rule,balanced_accuracy,auc_pr,auroc")
  assert sum(line.startswith("neuript_scratch,") for line in lines) == 4   # 2 seeds, mean, std
  assert (tmp_path / "roc_test.png").stat().st_size > 1000
  # The csv reports the prior rule's balanced accuracy and the 0.5 rule's beside it.
  row0 = dict(zip(lines[0].split(","), lines[1].split(",")))
  scored = json.loads((tmp_path / "runs/neuript_scratch/seed0/result.json").read_text())
  assert float(row0["balanced_accuracy"]) == pytest.approx(
      scored["test"]["balanced_accuracy"], abs=1e-4)
  assert float(row0["balanced_accuracy_half"]) == pytest.approx(
      scored["test"]["balanced_accuracy_half"], abs=1e-4)
  assert scored["test"]["balanced_accuracy"] != scored["test"]["balanced_accuracy_half"]


def test_table_refuses_runs_made_with_other_settings(tmp_path):
  """A recorded run made with other settings (here EEGNet epochs, or none recorded) stops the
  command before anything trains, naming the file and the setting; the same setting reuses it."""
  from neuript_jax.bench import downstream_table as table
  records = tmp_path / "records"
  _fake_runs(records, {"eegnet": (0,), "neuript_scratch": (0,)}, np.random.default_rng(2))
  result = records / "runs/eegnet/seed0/result.json"
  result.write_text(json.dumps({**json.loads(result.read_text()),
                                "settings": {"eegnet_epochs": 10}}))
  no_shards = str(tmp_path / "no_shards")      # never read: nothing may train
  with pytest.raises(table.SettingsMismatchError, match=r"eegnet/seed0/result.json was made "
                     r"with eegnet_epochs=10, this command asks for eegnet_epochs=100"):
    table.run_table("mental_arithmetic", no_shards, str(tmp_path / "a"), [0],
                    rows=("eegnet",), eegnet_epochs=100, records=str(records))
  with pytest.raises(table.SettingsMismatchError, match=r"size=\(not recorded\)"):
    table.run_table("mental_arithmetic", no_shards, str(tmp_path / "b"), [0],
                    rows=("neuript_scratch",), records=str(records))
  out = table.run_table("mental_arithmetic", no_shards, str(tmp_path / "c"), [0],
                        rows=("eegnet",), eegnet_epochs=10, records=str(records))
  assert out["eegnet"]["n"] == 1


def test_table_continues_from_records(tmp_path):
  """--records: recorded runs are copied into a fresh workdir and not run again, a run that
  only the workdir has is recorded, nothing on either side is overwritten, and a finished
  pretraining (done.json + its encoder file; never checkpoints) travels both ways, so a fresh
  workdir reuses it; one without its encoder file does not travel."""
  from neuript_jax.bench import downstream_table as table
  rng = np.random.default_rng(1)
  records, work = tmp_path / "records", tmp_path / "work"
  _fake_runs(records, {"band_power_lr": (0, 1)}, rng)
  _fake_runs(work, {"band_power_lr": (1,), "eegnet": (0,)}, rng)
  kept = (work / "runs/band_power_lr/seed1/result.json").read_text()
  (work / "pretrain_aamp/checkpoints/3").mkdir(parents=True)
  (work / "pretrain_aamp/done.json").write_text('{"wall_s": 5.0, "total_steps": 3}')
  (work / "pretrain_aamp" / table.ENCODER_FILE).write_bytes(b"weights")
  (work / "pretrain_random").mkdir()
  (work / "pretrain_random/done.json").write_text('{"wall_s": 5.0, "total_steps": 3}')
  ckpt = str((work / "runs/eegnet/seed0/best/7").resolve())
  (work / "runs/eegnet/seed0/results.json").write_text(json.dumps({"checkpoint": ckpt}))
  moved = table.sync_records(work, records)
  assert moved == {"in": ["runs/band_power_lr/seed0"],
                   "out": ["runs/eegnet/seed0", "pretrain_aamp"]}
  # The records name the checkpoint relative to the run (this machine's path means nothing).
  assert json.loads((records / "runs/eegnet/seed0/results.json").read_text()) == {
      "checkpoint": "best/7"}
  assert (work / "runs/band_power_lr/seed1/result.json").read_text() == kept
  assert (records / "runs/eegnet/seed0/predictions.npz").exists()
  assert (records / "pretrain_aamp" / table.ENCODER_FILE).read_bytes() == b"weights"
  assert not (records / "pretrain_aamp/checkpoints").exists()
  assert not (records / "pretrain_random").exists()     # no encoder file: not finished
  assert table.sync_records(work, records) == {"in": [], "out": []}
  # A fresh workdir: every (row, seed) asked for is recorded, so nothing trains (the shards
  # path does not exist and is never read) and the summary covers the recorded runs.
  fresh = tmp_path / "fresh"
  out = table.run_table("mental_arithmetic", str(tmp_path / "no_shards"), str(fresh), [0, 1],
                        rows=("band_power_lr",), records=str(records))
  assert out["band_power_lr"]["n"] == 2 and out["eegnet"]["n"] == 1
  assert (fresh / "pretrain_aamp" / table.ENCODER_FILE).read_bytes() == b"weights"
  assert json.loads((fresh / "pretrain_aamp/done.json").read_text())["total_steps"] == 3
  assert "band_power_lr | 1 |" in (fresh / "summary.md").read_text()


def test_table_marks_a_pretraining_done_only_when_it_reached_its_last_step(tmp_path,
                                                                           monkeypatch):
  """A pretraining that SIGTERM stopped early (train returns its step) raises and leaves no
  done.json, so the next run resumes it; a finished one writes its encoder file and done.json
  and is reused; one made with other steps is refused, naming the file."""
  import ml_collections
  from neuript_jax.bench import downstream_table as table
  from neuript_jax.train import pretrain
  calls = []
  def fake_train(config, workdir):
    calls.append(workdir)
    os.makedirs(workdir, exist_ok=True)
    return {"loss": 0.5, "step": 3 if len(calls) == 1 else config.total_steps}
  monkeypatch.setattr(pretrain, "train", fake_train)
  monkeypatch.setattr(table, "export_encoder",
                      lambda ckpt, model, out: out.write_text(f"from {ckpt}"))
  cfg, wd = ml_collections.ConfigDict({"total_steps": 150}), tmp_path / "pretrain_aamp"
  encoder = str(wd / table.ENCODER_FILE)
  with pytest.raises(RuntimeError, match=r"pretraining stopped at step 3 of 150"):
    table.pretrain_encoder(wd, cfg, None)
  assert not (wd / "done.json").exists() and not (wd / table.ENCODER_FILE).exists()
  assert table.pretrain_encoder(wd, cfg, None) == encoder
  assert json.loads((wd / "done.json").read_text())["total_steps"] == 150
  assert table.pretrain_encoder(wd, cfg, None) == encoder and len(calls) == 2
  with pytest.raises(table.SettingsMismatchError,
                     match=r"pretrain_aamp/done.json was made with pretrain_steps=150, this "
                           r"command asks for pretrain_steps=300"):
    table.pretrain_encoder(wd, ml_collections.ConfigDict({"total_steps": 300}), None)


def test_exported_encoder_loads_the_same_weights_as_its_checkpoint(tmp_path):
  """The pretraining's encoder file (what the records keep and init_from reads) holds exactly
  the checkpoint's embedding and encoder, and nothing of the head."""
  import jax
  from neuript_jax.bench import downstream_table as table
  from neuript_jax.configs import downstream
  from neuript_jax.configs.common import to_model_config
  from neuript_jax.evaluation import encoders
  from neuript_jax.train import checkpoint as ckpt_lib
  model = downstream.get_config("mental_arithmetic", "cpu").model
  cfg = to_model_config(model)
  rng = np.random.default_rng(0)
  params = jax.tree_util.tree_map(
      lambda s: rng.normal(size=s.shape).astype(np.float32), encoders.param_shapes(cfg))
  c = ckpt_lib.Checkpointer(str(tmp_path / "pre"), keep=1, async_save=False)
  c.save(7, {"params": params, "step": np.int32(7)}, json.dumps({"next_batch": 7}))
  c.wait()
  c.close()
  out = tmp_path / "pre" / table.ENCODER_FILE
  table.export_encoder(tmp_path / "pre", model, out)
  with np.load(out) as z:
    assert z.files and all(k.split(".")[0] in encoders.ENCODER_KEYS for k in z.files)
  want = encoders.load_encoder_params(str(tmp_path / "pre"), cfg, encoders.param_shapes(cfg))
  got = encoders.load_encoder_params(str(out), cfg, encoders.param_shapes(cfg))
  assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
  for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not list((tmp_path / "pre").glob("*.tmp*"))
