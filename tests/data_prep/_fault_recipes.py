"""Recipes for fault tests: the generic recipe with a holding or a crashing reader hook.

Their configuration is the generic recipe's, so they share its hash: an output made by one
can be resumed by the plain CLI. Run as a script, converts with the holding recipe:
``python -m tests.data_prep._fault_recipes INPUT OUTPUT WORKERS HOLD_FROM``.
"""

import os
import signal
import sys

from data_prep.recipes import generic


class HoldingGeneric(generic.Generic):
  """Converts files named before `hold_from` (name order) and holds on the others until its
  worker process is ended by a signal, so a test can interrupt a run midway without timing it."""

  hold_from = "\uffff"

  def open(self, path, info):
    while path.name >= self.hold_from:
      signal.pause()
    return None


class CrashingGeneric(generic.Generic):
  """Kills its own worker process on any file whose name contains 'crash'."""

  def open(self, path, info):
    if "crash" in path.name:
      os._exit(3)
    return None


def holding(hold_from: str, **overrides):
  recipe = HoldingGeneric(generic.build(**overrides).config)
  recipe.hold_from = hold_from
  return recipe


def crashing(**overrides):
  return CrashingGeneric(generic.build(**overrides).config)


if __name__ == "__main__":
  from data_prep import convert
  convert.convert(sys.argv[1], holding(sys.argv[4], channels=["Fp1", "Cz", "O1"]), sys.argv[2],
                  workers=int(sys.argv[3]))
