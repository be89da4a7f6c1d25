"""Running a sweep's runs: one subprocess each, up to `parallel` at a time, resumable.

A run holds an ``flock`` on its folder's ``sweep.lock`` while it runs (passed to the child, so
the lock lives as long as the run), gets SIGKILL if the sweep process dies (Linux
PR_SET_PDEATHSIG: a killed sweep leaves no orphan writing into a folder its rerun will use),
and is recorded in ``sweep_run.json`` when it starts and ends (``records``). A finished run
(``results.json``) is skipped; an unfinished one is started again with the same command (the
fine-tuning launcher resumes from its latest checkpoint); a run whose lock is held elsewhere
is skipped as running. SIGTERM to the sweep is forwarded to the running runs (they checkpoint
and exit) and no new run starts.
"""

from __future__ import annotations

import collections
import dataclasses
import fcntl
import json
import os
import signal
import subprocess
import time
from typing import Callable, Sequence

from neuript_jax.sweep import records
from neuript_jax.sweep.overrides import SweepError
from neuript_jax.sweep.plan import DEFAULT_PROGRAM, Run, command, shell_command

STDERR_TAIL_CHARS = 3000


def _die_with_parent():
  """preexec_fn: SIGKILL this child when the sweep process dies (Linux prctl)."""
  try:
    import ctypes
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
  except OSError:
    pass


def _tail(path: str, start: int, chars: int = STDERR_TAIL_CHARS) -> str:
  try:
    with open(path, "rb") as f:
      f.seek(start)
      data = f.read()
  except OSError:
    return ""
  return data.decode("utf-8", "replace")[-chars:]


@dataclasses.dataclass
class _Active:
  run: Run
  proc: subprocess.Popen
  lock_fd: int
  stderr_start: int
  record: dict
  slot: int


class Sweeper:
  """Runs a list of runs with up to `parallel` processes; see `execute`."""

  def __init__(self, sweep_dir: str, program: str = DEFAULT_PROGRAM, parallel: int = 1,
               retry_failed: bool = True, devices_per_run: int = 0, env: dict | None = None,
               log: Callable[[str], None] = print):
    from neuript_jax.train import validate
    self.env = dict(os.environ if env is None else env)
    # Slot k of `parallel` sees accelerators k*K .. k*K+K-1 (of CUDA_VISIBLE_DEVICES if set).
    listed = self.env.get("CUDA_VISIBLE_DEVICES", "")
    self.devices = listed.split(",") if listed else [
        str(i) for i in range(max(parallel, 0) * max(devices_per_run, 0))]
    try:
      validate.check_sweep_args(parallel=parallel, devices_per_run=devices_per_run,
                                n_devices=len(self.devices))
    except validate.ConfigError as e:
      raise SweepError(f"{e} (CUDA_VISIBLE_DEVICES={listed!r})" if listed else str(e)) from None
    self.devices_per_run = devices_per_run
    self.sweep_dir = os.path.abspath(sweep_dir)
    self.program = program
    self.parallel = parallel
    self.retry_failed = retry_failed
    # Runs of one setting compile the same programs: share them through JAX's disk cache.
    self.env.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(self.sweep_dir, "jax_cache"))
    if parallel > 1:   # several processes on one accelerator must not each take 75% of it
      self.env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    self.log = log
    self.stopping = False
    self.free_slots = list(range(parallel))

  def _start(self, run: Run, slot: int) -> _Active | None:
    os.makedirs(run.workdir, exist_ok=True)
    lock_fd = os.open(os.path.join(run.workdir, records.RUN_LOCK), os.O_RDWR | os.O_CREAT,
                      0o644)
    for attempt in range(5):   # a status check elsewhere holds the lock for an instant
      try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        break
      except BlockingIOError:
        if attempt == 4:
          os.close(lock_fd)
          self.log(f"[sweep] {run.run_id}: running in another process (locked); skipped")
          return None
        time.sleep(0.2)
    if records.is_finished(run.workdir):   # finished while we waited for the lock
      os.close(lock_fd)
      return None
    previous = records.read_json(os.path.join(run.workdir, records.RUN_RECORD)) or {}
    cmd = command(run, self.program)
    d = run.dataset
    record = {"dataset": d.name, "setting": run.setting, "seed": run.seed,
              "hparams": run.hparams, "config": d.config_spec, "overrides": run.overrides,
              "recipe": d.recipe, "task": d.task, "num_classes": d.num_classes,
              "paper_key": d.paper_key, "select_metric": run.config.get("select_metric"),
              "command": shell_command(cmd), "status": "running",
              "attempts": int(previous.get("attempts", 0)) + 1, "started": time.time()}
    env = self.env
    if self.devices_per_run:
      k = self.devices_per_run
      env = dict(env, CUDA_VISIBLE_DEVICES=",".join(self.devices[slot * k:(slot + 1) * k]))
      record["devices"] = env["CUDA_VISIBLE_DEVICES"]
    records.write_json(os.path.join(run.workdir, records.RUN_RECORD), record)
    records.write_json(os.path.join(run.workdir, records.RUN_CONFIG),
                       json.loads(run.config.to_json_best_effort()))
    out_path, err_path = (os.path.join(run.workdir, n)
                          for n in (records.STDOUT_LOG, records.STDERR_LOG))
    header = f"=== sweep attempt {record['attempts']}: {record['command']}\n"
    for p in (out_path, err_path):
      with open(p, "a") as f:
        f.write(header)
    stderr_start = os.path.getsize(err_path)
    with open(out_path, "a") as out, open(err_path, "a") as err:
      proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                              env=env, pass_fds=(lock_fd,), preexec_fn=_die_with_parent)
    self.log(f"[sweep] started {run.run_id} (attempt {record['attempts']}, pid {proc.pid})")
    return _Active(run, proc, lock_fd, stderr_start, record, slot)

  def _finish(self, a: _Active) -> str:
    rc = a.proc.returncode
    os.close(a.lock_fd)
    self.free_slots.append(a.slot)
    record = dict(a.record, exit_code=rc, ended=time.time())
    if records.is_finished(a.run.workdir):
      record["status"] = "finished"
      record.pop("error", None)
    elif self.stopping:
      record["status"] = "interrupted"
    else:
      tail = _tail(os.path.join(a.run.workdir, records.STDERR_LOG), a.stderr_start)
      reason = (f"exit code {rc}" if rc else f"exit code 0 without {records.RESULTS}")
      record["status"] = "failed"
      record["error"] = {"exit_code": rc, "reason": reason, "stderr_tail": tail}
    records.write_json(os.path.join(a.run.workdir, records.RUN_RECORD), record)
    took = record["ended"] - record["started"]
    self.log(f"[sweep] {record['status']} {a.run.run_id} in {took:.0f} s"
             + (f" ({record['error']['reason']}; see {records.STDERR_LOG})"
                if record["status"] == "failed" else ""))
    return record["status"]

  def _request_stop(self, active: dict) -> None:
    self.stopping = True
    self.log("[sweep] SIGTERM: stopping the running runs (they checkpoint and exit); "
             "rerun the same command to resume")
    for a in active.values():
      if a.proc.poll() is None:
        a.proc.send_signal(signal.SIGTERM)

  def execute(self, runs: Sequence[Run]) -> dict:
    """Run every unfinished run of `runs`; returns {run_id: status}. Finished runs are skipped,
    failed runs are retried if retry_failed; results.jsonl and the summary are refreshed after
    each run. SIGTERM forwards SIGTERM to the runs and stops launching new ones."""
    os.makedirs(self.sweep_dir, exist_ok=True)
    status: dict = {}
    pending: collections.deque = collections.deque()
    for run in runs:
      rec = records.read_json(os.path.join(run.workdir, records.RUN_RECORD)) or {}
      if records.is_finished(run.workdir):
        status[run.run_id] = "finished"
      elif rec.get("status") == "failed" and not self.retry_failed:
        status[run.run_id] = "failed"
      else:
        pending.append(run)
    self.log(f"[sweep] {len(runs)} runs in this share: {len(runs) - len(pending)} already "
             f"done or skipped, {len(pending)} to run, {self.parallel} at a time")
    active: dict = {}
    previous = signal.signal(signal.SIGTERM, lambda *_: self._request_stop(active))
    try:
      while pending or active:
        while pending and len(active) < self.parallel and not self.stopping:
          run = pending.popleft()
          slot = min(self.free_slots)
          a = self._start(run, slot)
          if a is None:
            status[run.run_id] = "finished" if records.is_finished(run.workdir) else "running"
          else:
            self.free_slots.remove(slot)
            active[run.run_id] = a
        if self.stopping:
          for run in pending:
            status[run.run_id] = "not started"
          pending.clear()
        done = [k for k, a in active.items() if a.proc.poll() is not None]
        for k in done:
          status[k] = self._finish(active.pop(k))
          records.refresh(self.sweep_dir)
        if not done:
          time.sleep(0.2)
    finally:
      signal.signal(signal.SIGTERM, previous)
    records.refresh(self.sweep_dir)
    return status
