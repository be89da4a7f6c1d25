"""A stand-in for launch.finetune in the sweep tests (`--program=tests.fake_finetune`): no JAX.

Reads --workdir and --config.<field>=<value> like the real launcher; like it, exits at once
when results.json exists. Environment: FAKE_LOG (a file; "start <workdir>" / "finish
<workdir>" lines are appended), FAKE_FAIL (a substring of the workdir: that run prints an
error to stderr and exits 3), FAKE_SECONDS (how long a run takes, default 0). Writes
results.json with metrics 0.5 + 0.01 * seed (validation) and 0.6 + 0.01 * seed (test) and the
CUDA_VISIBLE_DEVICES it saw, and an empty curves.png.
"""

import json
import os
import sys
import time


def main(argv):
  workdir = next(a.split("=", 1)[1] for a in argv if a.startswith("--workdir="))
  cfg = dict(a[len("--config."):].split("=", 1) for a in argv if a.startswith("--config."))
  results = os.path.join(workdir, "results.json")
  log = os.environ.get("FAKE_LOG")

  def note(what):
    if log:
      with open(log, "a") as f:
        f.write(f"{what} {workdir}\n")

  if os.path.exists(results):
    note("already")
    return 0
  note("start")
  fail = os.environ.get("FAKE_FAIL")
  if fail and fail in workdir:
    print("Traceback (most recent call last):\nValueError: fake failure for this run",
          file=sys.stderr)
    return 3
  end = time.time() + float(os.environ.get("FAKE_SECONDS", "0"))
  while time.time() < end:
    time.sleep(0.05)
  seed = int(cfg["seed"])
  names = ("balanced_accuracy", "cohen_kappa", "weighted_f1", "auroc", "auc_pr",
           "average_precision", "nll")
  out = {"validation": {k: 0.5 + 0.01 * seed for k in names},
         "test": {k: 0.6 + 0.01 * seed for k in names}, "selected_step": 1,
         "select_metric": cfg["select_metric"], "num_classes": int(cfg["model.num_classes"]),
         "checkpoint": os.path.join(workdir, "best", "1"),
         "visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
  with open(os.path.join(workdir, "curves.png"), "wb"):
    pass
  with open(results + ".tmp", "w") as f:
    json.dump(out, f)
  os.replace(results + ".tmp", results)
  note("finish")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
