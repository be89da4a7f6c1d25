"""Host memory for the launchers: glibc malloc on transparent huge pages, and how much memory
there is (MemAvailable, RSS) and how large a batch fits it (launch.bench picks its batches so).

Why: on CPU, XLA allocates each step's temporaries as one block (10.4 GB for the stage-1
train step at the `small` preset, batch 4) and frees it after the step. glibc serves a block
that large with mmap and returns it with munmap, so every step touches fresh memory in 4 KiB
pages: 2 million page faults per step, which took ~30% of the step (11.7 s -> 8.7 s with the
setting, BENCHMARKS.md). glibc >= 2.35's tunable `glibc.malloc.hugetlb=1` makes malloc
madvise(MADV_HUGEPAGE) its mmapped blocks, so the kernel maps them in 2 MiB pages (512x fewer
faults). PyTorch's CPU allocator also uses malloc, so in `launch.bench` both sides get it.

glibc reads tunables once at start, so `reexec_with_hugepages()` re-executes the process
(same PID, same argv, via os.execve) with GLIBC_TUNABLES extended, before anything else runs.
It does nothing when the setting is already there, when NEURIPT_HOST_HUGEPAGES=0, off Linux
glibc < 2.35, or when the kernel's transparent huge pages are "never".
"""

from __future__ import annotations

import os
import platform
import sys

TUNABLE = "glibc.malloc.hugetlb=1"
OPT_OUT = "NEURIPT_HOST_HUGEPAGES"
THP_PATH = "/sys/kernel/mm/transparent_hugepage/enabled"


def thp_mode(path: str = THP_PATH) -> str | None:
  """The kernel's transparent-huge-page mode ("always" / "madvise" / "never"), None if unknown."""
  try:
    with open(path) as f:
      text = f.read()
  except OSError:
    return None
  start, end = text.find("["), text.find("]")
  return text[start + 1:end] if 0 <= start < end else None


def hugepage_env(environ, system: str, libc: tuple[str, str], thp: str | None):
  """The environment to re-execute with, or None when no re-execution is wanted.

  environ: the current environment; system: platform.system(); libc: platform.libc_ver();
  thp: thp_mode().
  """
  if environ.get(OPT_OUT, "1") == "0" or system != "Linux" or libc[0] != "glibc":
    return None
  try:
    version = tuple(int(p) for p in libc[1].split(".")[:2])
  except ValueError:
    return None
  if version < (2, 35) or thp not in ("always", "madvise"):
    return None
  current = environ.get("GLIBC_TUNABLES", "")
  if "glibc.malloc.hugetlb=" in current:
    return None
  env = dict(environ)
  env["GLIBC_TUNABLES"] = f"{current}:{TUNABLE}" if current else TUNABLE
  return env


def reexec_with_hugepages() -> None:
  """Re-execute this process with glibc malloc on huge pages when useful (see module doc).

  Call first thing in a launcher's `if __name__ == "__main__":` block; returns only when no
  re-execution is needed."""
  env = hugepage_env(os.environ, platform.system(), platform.libc_ver(), thp_mode())
  if env is None:
    return
  argv = list(getattr(sys, "orig_argv", None) or [sys.executable] + sys.argv)
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable] + argv[1:], env)


# -- how much host memory there is, and how large a batch fits it ---------------------------------

MEMINFO_PATH = "/proc/meminfo"


def mem_available_bytes(path: str = MEMINFO_PATH) -> int | None:
  """The kernel's MemAvailable (bytes): memory a new process can use without swapping; None
  where /proc/meminfo (or its MemAvailable line) is missing."""
  try:
    with open(path) as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024     # the file's unit is kB
  except (OSError, ValueError, IndexError):
    return None
  return None


def rss_bytes() -> int | None:
  """This process's resident set size now (bytes), from /proc/self/statm; None off Linux."""
  try:
    with open("/proc/self/statm") as f:
      return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
  except (OSError, ValueError, IndexError):
    return None


def largest_fitting_batch(base_bytes: float, per_sample_bytes: float, available_bytes: float,
                          cap: int, headroom: float = 0.85) -> int:
  """The largest batch b <= cap with base + b * per_sample <= headroom * available (0 if
  not even b = 1 fits). base: what the process holds whatever the batch; per_sample: what
  each sample adds at the peak (both bytes)."""
  if cap < 1:
    raise ValueError(f"batch cap must be >= 1, got {cap}")
  if per_sample_bytes <= 0:
    return cap
  room = headroom * available_bytes - base_bytes
  return max(0, min(cap, int(room // per_sample_bytes)))


def make_oom_victim() -> None:
  """Mark this process first in line for the kernel's OOM killer (oom_score_adj 1000), so
  that a benchmark child that runs out of memory is the one killed, not a neighbour. For
  subprocess's preexec_fn; does nothing where /proc/self/oom_score_adj cannot be written."""
  try:
    with open("/proc/self/oom_score_adj", "w") as f:
      f.write("1000")
  except OSError:
    pass
