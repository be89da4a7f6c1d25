"""Several processes on one machine, as on a pod: each process with its own simulated CPU
devices, a localhost coordinator, JAX's CPU collectives (gloo).

- pretraining on 2 processes x 2 devices logs the losses of 1 process x 4 devices;
- a kill -9 of one process, then the job restarted, resumes with an uninterrupted run's losses;
- a checkpoint written on 1 process x 8 devices (fsdp 8) restores bit-identically onto other
  meshes and resumes on 2 processes (data 2 x fsdp 2) and on 1 device;
- the data iterator continues at the same global position across a change of process count;
- fine-tuning and evaluation on 2 processes give one process's predictions and metrics;
- the embedded default (no data.sources) is prepared by process 0 alone.

Every process is killed at the end of its test, whatever happens; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import REPO

TIMEOUT = 900

PRETRAIN = [
    "--config.model.T=32", "--config.data.window_len=32",
    "--config.model.merge_layers=(1,2,2)", "--config.model.enc_expert=(0,2,4)",
    "--config.model.dec_expert=(0,0,0,0)", "--config.model.cross_expert=(0,0,0,0)",
    "--config.model.moe_groups=4",          # the same routing on every mesh of these tests
    "--config.data.global_batch_size=8", "--config.total_steps=12", "--config.log_every=1",
    "--config.checkpoint_every=6", "--config.eval_every=6", "--config.plot_every=6",
    "--config.eval_batches=1", "--config.async_checkpoint=false",
]
MESH_2x2 = ["--config.mesh.data=2", "--config.mesh.fsdp=2"]


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def env(devices: int) -> dict:
  e = dict(os.environ)
  e["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  e["JAX_PLATFORMS"] = "cpu"
  e["JAX_CPU_COLLECTIVES_IMPLEMENTATION"] = "gloo"
  return e


class Job:
  """N processes of one launcher, as a pod runs them; `kill()` ends every one of them."""

  def __init__(self, module: str, args, processes: int, devices: int, logdir):
    self.procs, self.logs = [], []
    port = free_port()
    for i in range(processes):
      extra = ([] if processes == 1 else
               ["--distributed", f"--coordinator_address=127.0.0.1:{port}",
                f"--num_processes={processes}", f"--process_id={i}"])
      log = open(os.path.join(logdir, f"{module.split('.')[-1]}_{time.time_ns()}_{i}.log"), "w")
      self.logs.append(log)
      self.procs.append(subprocess.Popen([sys.executable, "-m", module, *args, *extra],
                                         cwd=REPO, env=env(devices), stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True))

  def text(self, i: int = 0) -> str:
    if not self.logs[i].closed:
      self.logs[i].flush()
    with open(self.logs[i].name) as f:
      return f.read()

  def wait(self, timeout: float = TIMEOUT) -> None:
    """Every process exits 0 within `timeout` (else all are killed and the logs shown)."""
    start = time.time()
    try:
      for i, p in enumerate(self.procs):
        rc = p.wait(timeout=max(1.0, timeout - (time.time() - start)))
        assert rc == 0, f"process {i} exited {rc}:\n{self.text(i)[-4000:]}"
    finally:
      self.kill()

  def kill(self) -> None:
    for p in self.procs:
      if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
      p.wait()
    for log in self.logs:
      log.close()


def losses(workdir) -> dict:
  """{step: loss} from metrics.jsonl (the last row of each step; a partial line is skipped)."""
  out = {}
  path = os.path.join(workdir, "metrics.jsonl")
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        if line.endswith("\n"):
          row = json.loads(line)
          if "loss" in row:
            out[row["step"]] = row["loss"]
  return out


def pretrain(workdir, shards, processes, devices, logdir, *extra) -> Job:
  args = [f"--workdir={workdir}", f"--config.data.sources=(('{shards}', 1.0),)", *PRETRAIN,
          *extra]
  return Job("launch.pretrain", args, processes, devices, logdir)


def assert_close(got: dict, want: dict, steps, rtol: float = 1e-5) -> None:
  for s in steps:
    assert got[s] == pytest.approx(want[s], rel=rtol), (s, got[s], want[s])


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
  from data_prep import convert, synthetic
  from data_prep.recipes import get_recipe
  root = tmp_path_factory.mktemp("mp_data")
  # 4 recordings; the recipe's hash puts sub-02 and sub-03 in "val" at this fraction.
  synthetic.write_corpus(root / "raw", n_subjects=4, recordings=1, minutes=5.5, seed=1)
  recipe = get_recipe("pretrain_tcp20", params={"val_fraction": 0.5})
  manifest = convert.convert(str(root / "raw"), recipe, root / "shards", workers=1)
  assert manifest["counts"]["split"]["val"] > 0, manifest["counts"]
  return str(root / "shards")


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("mp_logs"))


@pytest.fixture(scope="module")
def one_process(shards, logdir, tmp_path_factory):
  """1 process x 4 devices, mesh data 2 x fsdp 2: the reference losses."""
  wd = str(tmp_path_factory.mktemp("mp_one"))
  pretrain(wd, shards, 1, 4, logdir, *MESH_2x2).wait()
  got = losses(wd)
  assert sorted(got) == list(range(1, 13))
  return wd, got


@pytest.fixture(scope="module")
def two_processes(shards, logdir, tmp_path_factory):
  wd = str(tmp_path_factory.mktemp("mp_two"))
  job = pretrain(wd, shards, 2, 2, logdir, *MESH_2x2)
  job.wait()
  return wd, losses(wd), job


def test_two_processes_log_the_losses_of_one(one_process, two_processes):
  _, want = one_process
  wd, got, job = two_processes
  assert sorted(got) == list(range(1, 13))
  assert_close(got, want, range(1, 13))
  # One writer: process 0 wrote the metrics and plots; both took part in the checkpoints.
  assert os.path.isfile(os.path.join(wd, "plots", "step_0000012.png"))
  assert sorted(int(d) for d in os.listdir(os.path.join(wd, "checkpoints"))
                if d.isdigit()) == [6, 12]
  assert "eval at step 6" in job.text(0)
  assert "step 12/12" not in job.text(1)           # process 1 prints no progress lines


def test_kill_one_process_then_restart_resumes_exactly(shards, logdir, two_processes,
                                                       tmp_path):
  _, want, _ = two_processes
  wd = str(tmp_path / "killed")
  job = pretrain(wd, shards, 2, 2, logdir, *MESH_2x2)
  try:
    start = time.time()
    # The event: checkpoint 6 finished and step 7 logged; then kill -9 process 1 only.
    while not (os.path.isdir(os.path.join(wd, "checkpoints", "6")) and max(
        losses(wd), default=0) >= 7):
      assert all(p.poll() is None for p in job.procs), job.text(0)[-3000:]
      assert time.time() - start < TIMEOUT
      time.sleep(0.05)
    job.procs[1].send_signal(signal.SIGKILL)
    job.procs[1].wait()
  finally:
    job.kill()                                       # process 0 cannot go on alone
  job = pretrain(wd, shards, 2, 2, logdir, *MESH_2x2)
  job.wait()
  assert "resumed from" in job.text(0)
  got = losses(wd)
  assert_close(got, want, range(1, 13), rtol=1e-6)


@pytest.fixture(scope="module")
def fsdp8_run(shards, logdir, tmp_path_factory):
  """12 steps on 1 process x 8 devices, fsdp 8; checkpoints 6 and 12 kept."""
  wd = str(tmp_path_factory.mktemp("mp_fsdp8"))
  pretrain(wd, shards, 1, 8, logdir, "--config.mesh.data=1", "--config.mesh.fsdp=8").wait()
  return wd


def resumed_copy(src: str, dst: str) -> str:
  """A copy of `src` as it was after step 6: checkpoint 12 and later metrics removed."""
  shutil.copytree(src, dst)
  shutil.rmtree(os.path.join(dst, "checkpoints", "12"))
  shutil.rmtree(os.path.join(dst, "best"), ignore_errors=True)
  path = os.path.join(dst, "metrics.jsonl")
  with open(path) as f:
    rows = [r for r in f if json.loads(r)["step"] <= 6]
  with open(path, "w") as f:
    f.writelines(rows)
  return dst


def test_checkpoint_restores_bit_identically_on_other_meshes(fsdp8_run):
  res = subprocess.run([sys.executable, "-m", "tests._restore_check", fsdp8_run, "6",
                        "1,8,1,1", "2,2,1,1", "1,1,1,1"], cwd=REPO, env=env(8),
                       capture_output=True, text=True, timeout=TIMEOUT)
  assert res.returncode == 0, res.stderr[-4000:]
  out = json.loads(res.stdout.strip().splitlines()[-1])
  assert out["leaves"] > 50
  assert out["identical"] == {"1,8,1,1": True, "2,2,1,1": True, "1,1,1,1": True}, out


def test_resume_on_two_processes(fsdp8_run, one_process, logdir, shards, tmp_path):
  """Steps 7-12 after the mesh change (1 process x fsdp 8 -> 2 processes x data 2 x fsdp 2)
  match an uninterrupted run on the new mesh. (The restore onto one device is checked leaf by
  leaf above; a 1-device resume was dropped to keep the suite inside CI's time.)"""
  two = resumed_copy(fsdp8_run, str(tmp_path / "to_2x2"))
  pretrain(two, shards, 2, 2, logdir, *MESH_2x2).wait()
  # The uninterrupted reference is the 4-device run: with fixed routing groups
  # (model.moe_groups) the numbers do not depend on the mesh beyond float rounding
  # (tests/test_sharding.py), although steps 1-6 ran on 8 batch shards.
  got = losses(two)
  assert sorted(got) == list(range(1, 13))
  assert_close(got, one_process[1], range(7, 13), rtol=1e-4)


def test_iterator_continues_at_the_global_position_across_process_counts(shards):
  """4 batches read by 1 process, the rest of the epoch by 2: every record once."""
  from neuript_jax.data import pipeline
  cfg = pipeline.default_data_config()
  cfg.sources = [(shards, 1.0)]
  cfg.global_batch_size = 4
  cfg.num_epochs = 1
  cfg.window_len = 32
  one = pipeline.make_iterator(cfg, process_index=0, process_count=1)
  seen = [np.asarray(next(one)["index"]) for _ in range(4)]
  state = one.get_state()
  hosts = [pipeline.make_iterator(cfg, process_index=i, process_count=2) for i in range(2)]
  for h in hosts:
    h.set_state(state)
  for a, b in zip(hosts[0], hosts[1]):
    seen.append(np.concatenate([a["index"], b["index"]]))
  ids = np.concatenate(seen)
  n = pipeline.dataset_summary(cfg)["n_records"]
  assert len(ids) == (n // 4) * 4
  assert len(set(ids.tolist())) == len(ids)          # no record twice in the epoch


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
  from data_prep import convert, montages, synthetic
  from data_prep.recipes import get_recipe
  root = tmp_path_factory.mktemp("mp_labelled")
  synthetic.write_corpus(root / "raw", n_subjects=4, recordings=1, minutes=2.0, seed=3)
  recipe = get_recipe("generic", channels=montages.MONTAGES["tcp20"], montage="standard_1020",
                      params={"label_source": "annotations",
                              "label_map": synthetic.GENERIC_LABEL_MAP, "split_rule": "lists",
                              "split_lists": "train=sub-01;sub-02,val=sub-03,test=sub-04"})
  convert.convert(str(root / "raw"), recipe, root / "shards", workers=1)
  return str(root / "shards")


FINETUNE = [
    "--config.model.T=32", "--config.data.window_len=32",
    "--config.model.merge_layers=(1,2,2)", "--config.model.enc_expert=(0,2,4)",
    "--config.model.dec_expert=(0,0,0,0)", "--config.model.cross_expert=(0,0,0,0)",
    "--config.model.c_layers=3", "--config.init_from=", "--config.data.global_batch_size=8",
    "--config.eval_batch_size=16", "--config.total_steps=4", "--config.eval_every=2",
    "--config.log_every=1", "--config.async_checkpoint=false", "--config.optim.pct_start=0.5",
]


def test_finetune_and_evaluate_on_two_processes_match_one(labelled, logdir, tmp_path):
  runs = {}
  for n in (1, 2):
    wd = str(tmp_path / f"ft_{n}")
    Job("launch.finetune", [f"--workdir={wd}", f"--config.data.sources=(('{labelled}', 1.0),)",
                            *FINETUNE], n, 4 // n, logdir).wait()
    with open(os.path.join(wd, "results.json")) as f:
      runs[n] = json.load(f)
  out = str(tmp_path / "eval_2.json")                 # launch.evaluate on 2 processes
  Job("launch.evaluate", [f"--checkpoint={tmp_path / 'ft_2'}", f"--data={labelled}",
                          "--split=test", "--batch_size=16", f"--output={out}"], 2, 2,
      logdir).wait()
  with open(out) as f:
    runs[2]["evaluate"] = json.load(f)
  assert runs[1]["selected_step"] == runs[2]["selected_step"]
  for key in ("test", "validation"):
    assert runs[2][key]["n"] == runs[1][key]["n"]
    assert runs[2][key]["confusion_matrix"] == runs[1][key]["confusion_matrix"]
    for m in ("balanced_accuracy", "auroc", "nll"):
      assert runs[2][key][m] == pytest.approx(runs[1][key][m], abs=1e-5), (key, m)
  assert runs[2]["evaluate"]["confusion_matrix"] == runs[1]["test"]["confusion_matrix"]
  for m in ("balanced_accuracy", "auroc", "nll"):
    assert runs[2]["evaluate"][m] == pytest.approx(runs[1]["test"][m], abs=1e-5)


def test_embedded_default_is_prepared_by_one_process(logdir, tmp_path):
  """No data.sources on 2 processes: process 0 writes and converts the synthetic corpus,
  process 1 waits for it; both train on it."""
  wd = str(tmp_path / "demo")
  job = Job("launch.pretrain", [f"--workdir={wd}", *PRETRAIN[:6], "--config.total_steps=2",
                                "--config.optim.pct_start=0.5", "--config.eval_every=0", "--config.plot_every=0",
                                "--config.synthetic.n_subjects=2",
                                "--config.synthetic.minutes=5.5",   # recipe minimum: 300 s
                                "--config.log_every=1",
                                "--config.async_checkpoint=false"], 2, 1, logdir)
  job.wait()
  assert os.path.isfile(os.path.join(wd, "data", "pretrain_tcp20", "manifest.json"))
  assert "waiting for process 0 to prepare" in job.text(1)
  assert sorted(losses(wd)) == [1, 2]
