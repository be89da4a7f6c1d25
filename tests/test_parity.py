"""Golden parity: every shipped golden file through the library and the CLI."""

import subprocess
import sys

import jax
import numpy as np
import pytest

from neuript_jax import convert, parity
from tests.conftest import REPO

GOLDEN = ["stage2_tuev_tiny.npz", "stage2_tuab_binary_tiny.npz", "stage1_tiny.npz"]


@pytest.mark.parametrize("name", GOLDEN)
def test_shipped_golden_passes(golden_dir, name):
  rows = parity.check_golden(str(golden_dir / name))
  bad = [r for r in rows if not r.ok]
  assert not bad, parity.format_table(bad)
  names = {r.name for r in rows}
  assert "train/loss" in names and any(n.startswith("grad/") for n in names)
  assert len([n for n in names if n.startswith("grad/")]) > 100


def test_perturbed_weight_fails(golden_dir):
  path = str(golden_dir / "stage2_tuev_tiny.npz")
  g = np.load(path)
  cfg = parity.load_config(g)
  sd = {k[6:]: g[k].copy() for k in g.files if k.startswith("param/")}
  sd["encoder.encode_blocks.4.encode_layers.0.MLP2.experts.3.net.2.bias"] += 1e-2
  params = jax.tree_util.tree_map(np.asarray, convert.from_reference(sd, cfg, 2))
  rows = parity.check_golden(path, params_override=params)
  assert not parity.passed(rows)
  assert any(r.name == "out/logits" and not r.ok for r in rows)


def test_cli_exit_codes(golden_dir, tmp_path):
  ok = subprocess.run([sys.executable, "-m", "launch.parity", "--golden",
                       str(golden_dir / "stage2_tuab_binary_tiny.npz"), "--full_table=false"],
                      cwd=REPO, capture_output=True, text=True, timeout=900)
  assert ok.returncode == 0, ok.stdout + ok.stderr
  assert "1 passed, 0 failed" in ok.stdout
  # Same file with one weight perturbed -> exit 1 and the failing tensor named.
  g = dict(np.load(golden_dir / "stage2_tuab_binary_tiny.npz"))
  g["param/classification_head.classification_layer.bias"] = (
      g["param/classification_head.classification_layer.bias"] + 0.5)
  bad_path = tmp_path / "perturbed.npz"
  np.savez(bad_path, **g)
  bad = subprocess.run([sys.executable, "-m", "launch.parity", "--golden", str(bad_path),
                        "--full_table=false"], cwd=REPO, capture_output=True, text=True,
                       timeout=900)
  assert bad.returncode == 1, bad.stdout + bad.stderr
  assert "out/logits" in bad.stdout and "0 passed, 1 failed" in bad.stdout
