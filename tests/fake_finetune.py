"""A stand-in for launch.finetune in the sweep tests (`--program=tests.fake_finetune`): no JAX.

Reads --workdir and --config.seed=<k> like the real launcher, and the rest of its config from
the `sweep_config.json` that the sweep writes into the run folder before starting it; like the
real launcher, exits at once when results.json exists. Environment: FAKE_LOG (a file; "start
<workdir>" / "finish <workdir>" lines are appended), FAKE_FAIL (a substring of the workdir: that
run prints an error to stderr and exits 3), FAKE_HOLD (a substring of the workdir: that run
writes its pid to <workdir>/fake_finetune.pid, logs "start" and then waits until it is killed).
Writes results.json with metrics 0.5 + 0.01 * seed (validation) and 0.6 + 0.01 * seed (test)
and the CUDA_VISIBLE_DEVICES it saw, and an empty curves.png.
"""

import json
import os
import signal
import sys

PID_FILE = "fake_finetune.pid"


def main(argv):
  workdir = next(a.split("=", 1)[1] for a in argv if a.startswith("--workdir="))
  seed = int(next(a.split("=", 1)[1] for a in argv if a.startswith("--config.seed=")))
  with open(os.path.join(workdir, "sweep_config.json")) as f:
    cfg = json.load(f)
  results = os.path.join(workdir, "results.json")
  log = os.environ.get("FAKE_LOG")

  def note(what):
    if log:
      with open(log, "a") as f:
        f.write(f"{what} {workdir}\n")

  if os.path.exists(results):
    note("already")
    return 0
  hold = os.environ.get("FAKE_HOLD")
  if hold and hold in workdir:
    with open(os.path.join(workdir, PID_FILE + ".tmp"), "w") as f:
      f.write(str(os.getpid()))
    os.replace(os.path.join(workdir, PID_FILE + ".tmp"), os.path.join(workdir, PID_FILE))
  note("start")
  fail = os.environ.get("FAKE_FAIL")
  if fail and fail in workdir:
    print("Traceback (most recent call last):\nValueError: fake failure for this run",
          file=sys.stderr)
    return 3
  if hold and hold in workdir:
    while True:       # until a signal kills this process
      signal.pause()
  names = ("balanced_accuracy", "cohen_kappa", "weighted_f1", "auroc", "auc_pr",
           "average_precision", "nll")
  out = {"validation": {k: 0.5 + 0.01 * seed for k in names},
         "test": {k: 0.6 + 0.01 * seed for k in names}, "selected_step": 1,
         "select_metric": cfg["select_metric"], "num_classes": cfg["model"]["num_classes"],
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
