"""Recipes for fault tests: the generic recipe with a slow or a crashing reader hook.

Their configuration is the generic recipe's, so they share its hash: an output made by one
can be resumed by the plain CLI. Run as a script, converts with the slow recipe:
``python -m tests.data_prep._fault_recipes INPUT OUTPUT WORKERS``.
"""

import os
import sys
import time

from data_prep.recipes import generic


class SlowGeneric(generic.Generic):
  """Sleeps 0.3 s before reading each file (so a test can interrupt a run midway)."""

  def open(self, path, info):
    time.sleep(0.3)
    return None


class CrashingGeneric(generic.Generic):
  """Kills its own worker process on any file whose name contains 'crash'."""

  def open(self, path, info):
    if "crash" in path.name:
      os._exit(3)
    return None


def slow(**overrides):
  return SlowGeneric(generic.build(**overrides).config)


def crashing(**overrides):
  return CrashingGeneric(generic.build(**overrides).config)


if __name__ == "__main__":
  from data_prep import convert
  convert.convert(sys.argv[1], slow(channels=["Fp1", "Cz", "O1"]), sys.argv[2],
                  workers=int(sys.argv[3]))
