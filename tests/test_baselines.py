"""The downstream baselines (neuript_jax/evaluation/baselines.py) on a planted signal (a 10 Hz
rhythm in the task windows of one channel: high scores) and on noise with random labels
(chance), plus reading data_prep shards into splits."""

import numpy as np
import pytest

from neuript_jax.evaluation import baselines

FS = 64.0


def _splits(planted: bool, seed: int = 0, n=(96, 48, 48), channels=4, t=320):
  rng = np.random.default_rng(seed)
  out = {}
  for name, count in zip(("train", "val", "test"), n):
    labels = (rng.random(count) < 0.3).astype(np.int64)   # imbalanced like eegmat
    labels[:2] = (0, 1)
    x = rng.normal(0, 10.0, (count, channels, t)).astype(np.float32)
    if planted:
      time = np.arange(t) / FS
      phase = rng.uniform(0, 2 * np.pi, count)
      rhythm = 8.0 * np.sin(2 * np.pi * 10.0 * time[None] + phase[:, None])
      x[:, 1] += (labels[:, None] * rhythm).astype(np.float32)
    out[name] = baselines.Split(x, labels, np.array([f"s{i}" for i in range(count)]), FS)
  return out


def test_band_power_features_find_the_rhythm_band():
  s = _splits(True, n=(40, 4, 4))["train"]
  f = baselines.band_power_features(s.x, FS).reshape(len(s.x), 4, len(baselines.BANDS))
  alpha = [lo for lo, _ in baselines.BANDS].index(8.0)
  task, rest = f[s.labels == 1, 1, alpha], f[s.labels == 0, 1, alpha]
  assert task.min() > rest.max()          # 10 Hz power separates the classes on channel 1
  with pytest.raises(ValueError, match="no Welch bin"):
    baselines.band_power_features(s.x, FS, bands=((40.0, 50.0),))


def test_band_power_lr_planted_and_noise():
  good = baselines.band_power_lr(_splits(True), 2)
  assert good.test["balanced_accuracy"] > 0.95 and good.test["auroc"] > 0.98
  assert good.selected["C"] in baselines.C_GRID and good.test_scores.shape == (48,)
  # Chance, on a test split large enough for a tight AUROC (sd about 0.035 at 300).
  noise = baselines.band_power_lr(_splits(False, seed=1, n=(96, 48, 300)), 2)
  assert 0.35 < noise.test["auroc"] < 0.65 and 0.35 < noise.test["balanced_accuracy"] < 0.65


def test_load_split_reads_shards(tmp_path):
  from data_prep import shards as shards_lib
  from neuript_jax.data import record as rec
  (tmp_path / "train").mkdir()
  shards_lib.write_shard(tmp_path / "train" / f"a{rec.SHARD_SUFFIX}", [rec.Record(
      signal=np.full((2, 8), i, np.float32), channel_names=("C3", "C4"),
      positions=np.zeros((2, 3)), sampling_rate=FS, dataset="d", subject=f"s{i}",
      session="", recording=f"r{i}", window_start=0, window_start_s=0.0, label=i % 2)
      for i in range(3)])
  s = baselines.load_split(str(tmp_path), "train")
  assert s.x.shape == (3, 2, 8) and s.labels.tolist() == [0, 1, 0]
  assert s.x[2].max() == 2 and s.sampling_rate == FS
  with pytest.raises(ValueError, match="split 'test' has no windows"):
    baselines.load_split(str(tmp_path), "test")


def test_eegnet_planted_and_noise():
  pytest.importorskip("braindecode", reason="EEGNet needs braindecode: pip install -r "
                      "requirements-bench.txt")
  # Selected on validation balanced accuracy: AUROC reaches 1 within a few epochs, before the
  # logits are calibrated, and the first best epoch is kept.
  good = baselines.eegnet(_splits(True), 2, "balanced_accuracy", epochs=15, batch_size=16,
                          lr=3e-3, threads=1)
  assert good.test["auroc"] > 0.9 and good.test["balanced_accuracy"] > 0.8
  assert 1 <= good.selected["epoch"] <= 15
  noise = baselines.eegnet(_splits(False, seed=1, n=(96, 48, 300)), 2, epochs=5,
                           batch_size=16, threads=1)
  assert 0.35 < noise.test["auroc"] < 0.65
