"""Probes on frozen-encoder features: a planted linear signal is found, noise stays at chance;
the SVM probe follows the paper's sampling/grid; launch.embed exports IILP features (equal to
the pooled per-block maps) with the records' metadata; launch.probe writes the comparison."""

import json
import subprocess
import sys

import numpy as np
import pytest

from neuript_jax.evaluation import probes
from tests.conftest import REPO
from tests.test_finetune import MODEL, model_cfg, reference_npz, shards  # noqa: F401


def planted(n, f=12, num_classes=2, signal=True, seed=0):
  """Features [n, f]; labels from a fixed linear map of the features (or independent)."""
  rng, fixed = np.random.default_rng(seed), np.random.default_rng(99)
  scale = fixed.uniform(0.5, 20, f)                                # unequal feature scales
  w = fixed.normal(0, 1, (f, max(num_classes, 2)))
  z = rng.normal(0, 1, (n, f))
  x = z * scale
  if signal:
    y = np.argmax(z @ w, axis=1)
  else:
    y = rng.integers(0, max(num_classes, 2), n)
  return x, y


@pytest.mark.parametrize("num_classes", [2, 3])
def test_linear_probe_finds_planted_signal(num_classes):
  tr, va, te = (planted(n, num_classes=num_classes, seed=s) for n, s in
                ((600, 0), (200, 1), (400, 2)))
  r = probes.linear_probe(tr, va, te, num_classes)
  assert r["test"]["balanced_accuracy"] > 0.9, r["test"]
  assert r["C"] in probes.LINEAR_CS and set(r["val_scores"]) == set(probes.LINEAR_CS)
  assert r["val"]["balanced_accuracy"] == max(r["val_scores"].values())


def test_probes_on_noise_are_at_chance():
  tr, va, te = (planted(n, signal=False, seed=s) for n, s in ((400, 0), (200, 1), (600, 2)))
  lin = probes.linear_probe(tr, va, te, 2)
  svm = probes.svm_probe(tr, te, 2, n_train=300, n_test=0, grid="quick")
  for r in (lin, svm):
    assert abs(r["test"]["balanced_accuracy"] - 0.5) < 0.08, r["test"]
    assert abs(r["test"]["auroc"] - 0.5) < 0.08, r["test"]


def test_svm_probe_paper_protocol_on_planted_signal():
  tr, te = planted(300, f=6, num_classes=3, seed=0), planted(200, f=6, num_classes=3, seed=1)
  r = probes.svm_probe(tr, te, 3, n_train=150, n_test=100, seed=520, grid="paper")
  assert r["n_settings"] == 16 + 128 and (r["n_train"], r["n_test"]) == (150, 100)
  assert r["test"]["balanced_accuracy"] > 0.8 and r["cv_balanced_accuracy"] > 0.7, r
  assert r["params"]["kernel"] in ("linear", "rbf")
  # The samples are the paper's: RandomState(seed) draws, the same on every call.
  np.testing.assert_array_equal(probes.subsample(300, 150, 520), probes.subsample(300, 150, 520))
  assert len(set(probes.subsample(300, 150, 520))) == 150
  np.testing.assert_array_equal(probes.subsample(40, 500, 520), np.arange(40))


def test_class_scores_and_bad_inputs():
  from sklearn.linear_model import LogisticRegression
  x, y = planted(200, num_classes=3)
  keep = y != 1                                   # class 1 never seen in training
  model = LogisticRegression().fit(x[keep], y[keep])
  s = probes.class_scores(model, x, 4)
  assert s.shape == (200, 4) and np.all(s[:, 1] == -1e9) and np.all(s[:, 3] == -1e9)
  with pytest.raises(ValueError, match="labels must be in 0..1"):
    probes.linear_probe(*[(x, y)] * 3, 2)
  with pytest.raises(ValueError, match="single class"):
    probes.linear_probe((x, np.zeros(200, int)), (x, y), (x, y), 3)
  with pytest.raises(ValueError, match="unknown SVM grid"):
    probes.svm_probe((x, y), (x, y), 3, grid="huge")


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
  path = tmp_path_factory.mktemp("probe_ref") / "stage1.npz"
  reference_npz(path, model_cfg(), seed=5)
  return str(path)


def launch(module, *args):
  res = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True,
                       text=True, timeout=900)
  assert res.returncode == 0, res.stderr[-4000:]
  return res


def test_embed_launcher_exports_features_and_block_maps(shards, npz, tmp_path):  # noqa: F811
  from neuript_jax.data import record
  from neuript_jax.model.heads import group_matrix
  out = tmp_path / "val.npz"
  launch("launch.embed", f"--checkpoint={npz}", f"--data={shards}", "--split=val",
         f"--output={out}", "--blocks", "--batch_size=16", *MODEL)
  z = np.load(out)
  meta = json.loads(str(z["meta"]))
  assert meta["kind"] == "encoder" and meta["split"] == "val"
  recs = list(record.read_split(shards, "val"))
  n = len(recs)
  cfg = model_cfg()
  groups = cfg.iilp_groups()
  assert z["features"].shape == (n, (cfg.c_layers + 1) * len(groups) * cfg.d_model)
  assert z["features"].dtype == np.float32
  np.testing.assert_array_equal(z["labels"], [r.label for r in recs])
  np.testing.assert_array_equal(z["record_id"], np.arange(n))
  np.testing.assert_array_equal(z["subject"], [r.subject for r in recs])
  np.testing.assert_array_equal(z["window_start"], [r.window_start for r in recs])
  assert list(z["channel_names"]) == list(recs[0].channel_names)
  # The features are the per-block maps pooled over time and the lobe groups.
  blocks = sorted(k for k in z.files if k.startswith("block_"))
  assert len(blocks) == len(cfg.merge_layers) + 1
  g = group_matrix(groups, cfg.data_dim)
  pooled = [np.einsum("gc,ncd->ngd", g, z[f"block_{b}"].mean(axis=2)).reshape(n, -1)
            for b in z["map_blocks"]]
  np.testing.assert_allclose(z["features"], np.concatenate(pooled, axis=1), rtol=1e-5,
                             atol=1e-5)
  assert z["groups"].shape == (len(groups), cfg.data_dim)


def test_probe_launcher_compares_checkpoints(shards, npz, tmp_path):  # noqa: F811
  other = tmp_path / "other.npz"
  reference_npz(other, model_cfg(), seed=6)
  res = launch("launch.probe", f"--checkpoint={npz}", f"--checkpoint={other}", "--name=a",
               "--name=b", f"--data={shards}", f"--output_dir={tmp_path}", "--svm_grid=quick",
               "--batch_size=16", *MODEL)
  results = json.load(open(tmp_path / "probe_results.json"))
  assert set(results["results"]) == {"a", "b"} and results["num_classes"] == 4
  for r in results["results"].values():
    assert set(r["linear"]["test"]) >= {"balanced_accuracy", "cohen_kappa", "weighted_f1"}
    assert r["svm"]["n_settings"] == 16
  rows = [line for line in res.stdout.splitlines() if line.startswith("| a ") or
          line.startswith("| b ")]
  assert len(rows) == 2 and "linear balanced_accuracy" in res.stdout
  a = results["results"]["a"]["linear"]["test"]["balanced_accuracy"]
  assert f"{a:.4f}" in rows[0]
