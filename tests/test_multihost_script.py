"""launch/multihost_local.sh: N local processes joined by jax.distributed, output prefixed by
process id, all stopped when one fails or on Ctrl-C, non-zero exit on failure."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

SCRIPT = os.path.join(REPO, "launch", "multihost_local.sh")

# Reads the launcher flags the script appends, then records its pid (for the cleanup).
PREAMBLE = """
import os, sys, time
flags = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
me = int(flags["process_id"])
pid_dir = os.environ["PID_DIR"]
open(os.path.join(pid_dir, f"{me}.tmp"), "w").write(str(os.getpid()))
os.replace(os.path.join(pid_dir, f"{me}.tmp"), os.path.join(pid_dir, str(me)))
def wait_for(path, timeout=60):
  end = time.time() + timeout
  while not os.path.exists(path):
    if time.time() > end:
      sys.exit(f"timed out waiting for {path}")
    time.sleep(0.05)
"""


def _env(tmp_path, **extra):
  env = dict(os.environ, PID_DIR=str(tmp_path), PYTHON=sys.executable, **extra)
  env.pop("XLA_FLAGS", None)
  return env


def _kill_leftovers(tmp_path):
  for name in os.listdir(tmp_path):
    if name.isdigit():
      try:
        os.kill(int((tmp_path / name).read_text()), signal.SIGKILL)
      except (ProcessLookupError, ValueError):
        pass


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  # A zombie still answers kill(0); its state says it is gone.
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().split(")")[-1].split()[0] != "Z"
  except FileNotFoundError:
    return False


def _run(tmp_path, *args, timeout=180, **env):
  try:
    return subprocess.run(["bash", SCRIPT, *args], cwd=REPO, env=_env(tmp_path, **env),
                          capture_output=True, text=True, timeout=timeout)
  finally:
    _kill_leftovers(tmp_path)


def test_syntax():
  subprocess.run(["bash", "-n", SCRIPT], check=True)


def test_usage_error(tmp_path):
  res = _run(tmp_path, "zero", timeout=30)
  assert res.returncode == 2 and "usage" in res.stderr


def test_two_processes_initialise_jax_distributed(tmp_path):
  code = PREAMBLE + """
import jax
jax.distributed.initialize(flags["coordinator_address"], int(flags["num_processes"]), me)
print(f"process_index {jax.process_index()} of {jax.process_count()}, "
      f"{jax.local_device_count()} local / {jax.device_count()} devices", flush=True)
"""
  res = _run(tmp_path, "2", "-c", code)
  assert res.returncode == 0, res.stdout + res.stderr
  assert "[0] process_index 0 of 2, 2 local / 4 devices" in res.stdout, res.stdout
  assert "[1] process_index 1 of 2, 2 local / 4 devices" in res.stdout, res.stdout


def test_module_and_arguments(tmp_path):
  mod_dir = tmp_path / "mods"
  mod_dir.mkdir()
  (mod_dir / "mh_echo.py").write_text(
      "import sys\nprint('args', ' '.join(a for a in sys.argv[1:] if not a.startswith("
      "'--coordinator')))\n")
  res = _run(tmp_path, "2", "mh_echo", "--workdir=w", "x", DEVICES_PER_PROCESS="3",
             PYTHONPATH=str(mod_dir), timeout=60)
  assert res.returncode == 0, res.stdout + res.stderr
  for i in (0, 1):
    assert (f"[{i}] args --workdir=w x --distributed --num_processes=2 --process_id={i}"
            in res.stdout), res.stdout
  assert "2 processes x 3 devices" in res.stderr


def test_a_failing_process_stops_the_others(tmp_path):
  code = PREAMBLE + """
if me == 1:
  wait_for(os.path.join(pid_dir, "0"))   # the other one is running
  print("failing", flush=True)
  sys.exit(3)
print("waiting", flush=True)
time.sleep(120)
"""
  start = time.time()
  res = _run(tmp_path, "2", "-c", code, KILL_GRACE_S="5", timeout=90)
  assert res.returncode == 3, res.stdout + res.stderr
  assert time.time() - start < 60
  assert "[1] failing" in res.stdout and "[0] waiting" in res.stdout, res.stdout
  assert not _alive(int((tmp_path / "0").read_text()))


def test_ctrl_c_stops_all_even_if_they_ignore_sigterm(tmp_path):
  code = PREAMBLE + """
import signal
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(120)
"""
  proc = subprocess.Popen(["bash", SCRIPT, "2", "-c", code], cwd=REPO,
                          env=_env(tmp_path, KILL_GRACE_S="1"), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  try:
    ready = set()
    deadline = time.time() + 60
    while len(ready) < 2 and time.time() < deadline:
      line = proc.stdout.readline()
      if not line:
        break
      if line.strip().endswith("ready"):
        ready.add(line.split()[0])
    assert ready == {"[0]", "[1]"}, ready
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    pids = [int((tmp_path / str(i)).read_text()) for i in (0, 1)]
    assert not any(_alive(p) for p in pids)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
    proc.stdout.close()
    _kill_leftovers(tmp_path)
