"""Channel sets as data, and the one function that derives them from a recording.

A channel set is a tuple of names: ``"Cz"`` (monopolar) or ``"Fp1-F7"`` (bipolar, A minus B).
The lists themselves live in ``neuript_jax.geometry`` (REFERENCE.md §1.3), so the model and
``data_prep`` can never disagree; ``MONTAGES`` names them for recipes and the CLI. The TCP lists
here use the correct Fp1-F3 pair at index 12 (the reference's Fp2-F3 typo is a switch of the
geometry module, not of the data).

``plan_derivation`` turns (wanted outputs, recording channel names, reference) into a
``Derivation``: which source channels to read and one matrix ``[outputs, picked]`` that applies
the common average reference and the bipolar differences at once (all linear, so it can be
applied after filtering and resampling the picked channels, which is cheaper).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from data_prep import channels as chans
from neuript_jax import geometry

MONTAGES: dict[str, tuple[str, ...]] = {
    "tcp20": geometry.TCP20,
    "tcp22": geometry.TCP22,
    "bcic2a16": geometry.BCIC2A16,
    "bcic2a22": geometry.BCIC2A22,
    "bcic2b2": geometry.BCIC2B2,
    "bcic2b3": geometry.BCIC2B3,
    "sleep2": geometry.SLEEP2,
    "seedv17": geometry.SEEDV17,
    "tcp20_electrodes": ("Fp1", "Fp2", "F7", "F8", "F3", "F4", "T3", "T4", "T5", "T6", "C3",
                         "C4", "Cz", "P3", "P4", "O1", "O2"),
}
"""Named channel sets (``--channels=tcp20`` in the generic recipe resolves through this)."""


def resolve_channel_set(spec: str | Sequence[str]) -> tuple[str, ...]:
  """A montage name (``"tcp20"``) or a comma list / sequence of names -> tuple of names."""
  if isinstance(spec, str):
    if spec in MONTAGES:
      return MONTAGES[spec]
    spec = [s for s in spec.split(",")]
  return tuple(s.strip() for s in spec if s.strip())


@dataclasses.dataclass(frozen=True)
class Derivation:
  """outputs = matrix @ source[pick]; source rows are the recording's channels."""

  outputs: tuple[str, ...]
  pick: tuple[int, ...]
  """Source channel indices to read, in increasing order."""
  matrix: np.ndarray
  """float64 [len(outputs), len(pick)]."""
  electrodes: tuple[tuple[int, ...], ...]
  """Per output: source indices of its electrode(s) (one, or A then B) for positions."""

  def apply(self, picked: np.ndarray) -> np.ndarray:
    """picked: [len(pick), T] (source units) -> [len(outputs), T]."""
    return self.matrix @ picked


def plan_derivation(outputs: Sequence[str], available: Sequence[str], reference: str = "none",
                    car_channels: Sequence[str] = ()) -> Derivation:
  """Plan the derivation of ``outputs`` from a recording whose normalised names are ``available``.

  An output ``"A-B"`` is read directly when the recording has a channel of that name (e.g.
  Sleep-EDF's ``Fpz-Cz``), otherwise derived from electrodes A and B (aliases allowed).
  ``reference="car"`` subtracts the mean of ``car_channels`` (default: every 10-05 electrode of
  the recording) from each electrode first. Raises MissingChannelsError naming every missing
  electrode once (``"T3/T7"`` when either spelling would do).
  """
  needed: list[tuple[int, ...]] = []
  missing: list[str] = []
  direct: list[bool] = []
  for out in outputs:
    exact = available.index(out) if out in available else None
    if exact is not None and "-" in out:
      needed.append((exact,))
      direct.append(True)
      continue
    idx = []
    for electrode in geometry.split_bipolar(out):
      i = chans.find_electrode(electrode, available)
      if i is None:
        alias = chans.ALIASES.get(electrode)
        missing.append(f"{electrode}/{alias}" if alias else electrode)
      else:
        idx.append(i)
    needed.append(tuple(idx))
    direct.append(False)
  if missing:
    raise chans.MissingChannelsError(list(dict.fromkeys(missing)), available)

  car_idx: list[int] = []
  if reference == "car":
    if car_channels:
      for name in car_channels:
        i = chans.find_electrode(name, available)
        if i is None:
          raise chans.MissingChannelsError([f"{name} (for CAR)"], available)
        car_idx.append(i)
    else:
      car_idx = [i for i, n in enumerate(available) if chans.is_electrode(n)]
    if not car_idx:
      raise chans.MissingChannelsError(["any 10-05 electrode (for CAR)"], available)
  elif reference != "none":
    raise ValueError(f"unknown reference {reference!r}")

  pick = sorted({i for idx in needed for i in idx} | set(car_idx))
  col = {src: j for j, src in enumerate(pick)}
  matrix = np.zeros((len(outputs), len(pick)))
  car_row = np.zeros(len(pick))
  for i in car_idx:
    car_row[col[i]] += 1.0 / len(car_idx)
  for r, (idx, is_direct) in enumerate(zip(needed, direct)):
    signs = (1.0,) if len(idx) == 1 else (1.0, -1.0)
    for sign, src in zip(signs, idx):
      matrix[r, col[src]] += sign
    # CAR cancels exactly in an A-B difference; only monopolar outputs carry it.
    if car_idx and not is_direct and len(idx) == 1:
      matrix[r] -= car_row
  return Derivation(outputs=tuple(outputs), pick=tuple(pick), matrix=matrix,
                    electrodes=tuple(needed))


def derive(data: np.ndarray, available: Sequence[str], outputs: Sequence[str],
           reference: str = "none", car_channels: Sequence[str] = ()) -> np.ndarray:
  """data [len(available), T] -> [len(outputs), T] (convenience over ``plan_derivation``)."""
  plan = plan_derivation(outputs, available, reference, car_channels)
  return plan.apply(np.asarray(data)[list(plan.pick)])
