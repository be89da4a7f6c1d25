r"""Check our model against a golden file from the authors' PyTorch code.

  python -m launch.parity --golden ../shared/golden/stage2_tuev_tiny.npz [--golden ...]
  python -m launch.parity --golden_dir ../shared/golden

Builds the model from the file's `config`, converts its `param/*` state_dict, runs the eval
forward and the deterministic train-mode loss and gradients, prints a per-tensor table of max
abs error against the tolerances of golden/README.md, and exits 1 if anything is outside them.
"""

from __future__ import annotations

import glob
import os
import sys
import time

from absl import app, flags

FLAGS = flags.DEFINE_multi_string("golden", [], "golden .npz file(s) to check")
DIR = flags.DEFINE_string("golden_dir", None, "check every stage*.npz in this folder")
FULL = flags.DEFINE_bool("full_table", True, "print every tensor (else failures only)")


def main(argv):
  del argv
  import jax
  jax.config.update("jax_default_matmul_precision", "highest")
  from neuript_jax import parity

  paths = list(FLAGS.value)
  if DIR.value:
    paths += sorted(p for p in glob.glob(os.path.join(DIR.value, "*.npz"))
                    if os.path.basename(p) != "utils.npz")
  if not paths:
    raise app.UsageError("give --golden FILE.npz (repeatable) or --golden_dir DIR")
  failed = []
  for path in paths:
    if not os.path.exists(path):
      raise app.UsageError(f"--golden {path}: no such file")
    start = time.time()
    rows = parity.check_golden(path)
    ok = parity.passed(rows)
    print(f"\n== {path}: {len(rows)} tensors, {'PASS' if ok else 'FAIL'} "
          f"({time.time() - start:.1f} s)")
    print(parity.format_table(rows, only_failures=not FULL.value))
    worst = max(rows, key=lambda r: r.max_abs_err / max(r.tolerance, 1e-30))
    print(f"worst: {worst.name} err {worst.max_abs_err:.3e} (tolerance {worst.tolerance:.3e})")
    if not ok:
      failed.append(path)
  print(f"\nparity: {len(paths) - len(failed)} passed, {len(failed)} failed")
  sys.exit(1 if failed else 0)


if __name__ == "__main__":
  app.run(main)
