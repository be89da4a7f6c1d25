"""The launchers' re-execution with glibc malloc on transparent huge pages."""

import os
import platform
import subprocess
import sys
import textwrap

import pytest

from neuript_jax import host_memory

GLIBC = ("glibc", "2.36")


def test_hugepage_env_decisions():
  env = host_memory.hugepage_env({"PATH": "/bin"}, "Linux", GLIBC, "madvise")
  assert env == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
  # Existing tunables are kept; a set hugetlb (any value) is respected: no loop.
  env = host_memory.hugepage_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, "Linux",
                                 GLIBC, "always")
  assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
  assert host_memory.hugepage_env({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "Linux",
                                  GLIBC, "madvise") is None
  assert host_memory.hugepage_env({"GLIBC_TUNABLES": env["GLIBC_TUNABLES"]}, "Linux", GLIBC,
                                  "madvise") is None
  # Opt-out, other systems, old or unknown glibc, THP off.
  assert host_memory.hugepage_env({"NEURIPT_HOST_HUGEPAGES": "0"}, "Linux", GLIBC,
                                  "madvise") is None
  assert host_memory.hugepage_env({}, "Darwin", ("", ""), "madvise") is None
  assert host_memory.hugepage_env({}, "Linux", ("musl", "1.2"), "madvise") is None
  assert host_memory.hugepage_env({}, "Linux", ("glibc", "2.31"), "madvise") is None
  assert host_memory.hugepage_env({}, "Linux", ("glibc", "x"), "madvise") is None
  assert host_memory.hugepage_env({}, "Linux", GLIBC, "never") is None
  assert host_memory.hugepage_env({}, "Linux", GLIBC, None) is None


def test_thp_mode_reads_the_bracketed_choice(tmp_path):
  path = tmp_path / "enabled"
  path.write_text("always [madvise] never\n")
  assert host_memory.thp_mode(str(path)) == "madvise"
  assert host_memory.thp_mode(str(tmp_path / "missing")) is None


def test_reexec_keeps_pid_and_arguments_and_runs_once():
  """A script that re-executes itself: after it, GLIBC_TUNABLES has the setting, the PID and
  the arguments are the same, and the script body ran exactly once."""
  script = textwrap.dedent("""
      import os, sys
      print("start", os.getpid(), os.environ.get("GLIBC_TUNABLES", ""), sys.argv[1:],
            flush=True)
      from neuript_jax import host_memory
      host_memory.reexec_with_hugepages()
      print("after", os.getpid(), os.environ.get("GLIBC_TUNABLES", ""), sys.argv[1:])
  """)
  env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES",
                                                           "NEURIPT_HOST_HUGEPAGES")}
  env["PYTHONPATH"] = os.getcwd()
  out = subprocess.run([sys.executable, "-c", script, "a", "--b=1"], env=env, check=True,
                       capture_output=True, text=True).stdout.splitlines()
  wanted = host_memory.hugepage_env(env, platform.system(), platform.libc_ver(),
                                    host_memory.thp_mode())
  after = [line for line in out if line.startswith("after")]
  assert len(after) == 1, out
  pids = {line.split()[1] for line in out}
  assert len(pids) == 1, out
  assert "['a', '--b=1']" in after[0]
  if wanted is None:
    assert len(out) == 2 and "hugetlb" not in after[0]
  else:
    assert len(out) == 3, out     # start, start again after execve, after
    assert "glibc.malloc.hugetlb=1" in after[0]


@pytest.mark.skipif(host_memory.hugepage_env({}, platform.system(), platform.libc_ver(),
                                             host_memory.thp_mode()) is None,
                    reason="this machine gets no re-execution")
def test_a_launcher_runs_after_reexecution():
  env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  result = subprocess.run([sys.executable, "-m", "launch.bench", "--only_check_args", "--preset=tiny"], env=env,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
