"""Host allocator setting for the launchers: glibc malloc on transparent huge pages.

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
