"""Electrode geometry: template positions, bipolar midpoints, quantised 3D coordinates, lobes.

Everything NeurIPT knows about where channels sit on the head lives here:

* ``electrode_positions(names, montage)``: positions in metres (MNE template montage, head
  frame: +x right, +y anterior, +z up) for monopolar (``"Cz"``) or bipolar (``"Fp1-F7"``,
  the midpoint of the two electrodes) channel names.
* ``quantize_positions(positions_m)``: the reference's per-dataset normalisation (subtract the
  per-axis minimum, scale by one common factor so the largest value is 49, round) giving
  integer coordinates in 0..49 for the 3D spatial PE (REFERENCE.md §1.3).
* ``DATASET_CHANNELS``: the reference's channel list for every dataset key it knows
  (``"TUEV"``, ``"BCICIV-2A"``, ...), and ``dataset_positions(key)`` for its integer coordinates.
* ``LOBE_GROUPS``: the reference's IILP partitions (Functional, Hemispheres, Sagittal, Coronal)
  by channel count.

Montage names: the reference uses MNE's ``standard_1020`` / ``standard_1005``; MNE 1.13 renamed
them ``colin27_1020`` / ``colin27_1005`` (same data). Both spellings are accepted here.
"""

from __future__ import annotations

import functools
import re
from typing import Mapping, Sequence

import numpy as np

# The reference's names -> the MNE >= 1.13 names of the same template data.
_MONTAGE_ALIASES = {"standard_1020": "colin27_1020", "standard_1005": "colin27_1005"}

# Integer coordinate range of the 3D spatial PE: positions are 0..MAX_COORD.
MAX_COORD = 49


class UnknownChannelError(ValueError):
  """Channel names that the montage cannot place; ``.names`` lists them."""

  def __init__(self, names: Sequence[str], montage: str):
    self.names = list(names)
    self.montage = montage
    super().__init__(
        f"unknown channel name(s) for montage {montage!r}: {', '.join(self.names)}")


@functools.lru_cache(maxsize=None)
def _montage_positions(montage: str) -> Mapping[str, np.ndarray]:
  """Electrode name -> position [3] in metres for an MNE built-in montage (cached)."""
  import mne  # Imported lazily: the model never needs MNE at import time.

  name = _MONTAGE_ALIASES.get(montage, montage)
  if name not in mne.channels.get_builtin_montages():
    raise ValueError(f"unknown montage {montage!r}; MNE knows "
                     f"{', '.join(mne.channels.get_builtin_montages())}")
  pos = mne.channels.make_standard_montage(name).get_positions()["ch_pos"]
  return {k: np.asarray(v, dtype=np.float64) for k, v in pos.items()}


def split_bipolar(name: str) -> tuple[str, ...]:
  """``"Fp1-F7"`` -> ``("Fp1", "F7")``; ``"Cz"`` -> ``("Cz",)``."""
  parts = tuple(p.strip() for p in name.split("-"))
  if len(parts) > 2 or any(not p for p in parts):
    raise ValueError(f"channel name {name!r} is neither monopolar ('Cz') nor bipolar ('Fp1-F7')")
  return parts


def electrode_positions(names: Sequence[str], montage: str = "standard_1020") -> np.ndarray:
  """Positions [len(names), 3] in metres; bipolar names give the midpoint of their electrodes.

  Electrode lookup is exact first, then case-insensitive (``"FP1"`` finds ``"Fp1"``).
  Raises UnknownChannelError naming every electrode the montage lacks.
  """
  table = _montage_positions(montage)
  folded = {k.lower(): v for k, v in table.items()}
  out, unknown = [], []
  for name in names:
    pts = []
    for electrode in split_bipolar(name):
      p = table.get(electrode)
      if p is None:
        p = folded.get(electrode.lower())
      if p is None:
        unknown.append(electrode if electrode == name else f"{electrode} (in {name})")
      else:
        pts.append(p)
    if pts:
      out.append(np.mean(pts, axis=0) if len(pts) == 2 else pts[0])
  if unknown:
    raise UnknownChannelError(unknown, montage)
  return np.stack(out) if out else np.zeros((0, 3))


def quantize_positions(positions_m: np.ndarray, max_coord: int = MAX_COORD) -> np.ndarray:
  """The reference's per-dataset normalisation to integers in 0..max_coord.

  positions_m: [D, 3] (any unit). Subtracts the per-axis minimum, multiplies everything by
  ``max_coord / max(all shifted values)`` (one factor, aspect ratio kept) and rounds half to
  even (numpy's ``rint``, as the reference). Returns int64 [D, 3].
  """
  p = np.asarray(positions_m, dtype=np.float64)
  p = p - p.min(axis=0)
  top = p.max()
  if top <= 0:  # a single channel: every coordinate is 0.
    return np.zeros(p.shape, dtype=np.int64)
  return np.rint(p * (max_coord / top)).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Channel lists. Bipolar pairs are "A-B" strings: data, not code.

TCP20 = ("Fp1-F7", "F7-T3", "T3-T5", "T5-O1", "Fp2-F8", "F8-T4", "T4-T6", "T6-O2",
         "T3-C3", "C3-Cz", "Cz-C4", "C4-T4", "Fp1-F3", "F3-C3", "C3-P3", "P3-O1",
         "Fp2-F4", "F4-C4", "C4-P4", "P4-O2")
"""The TCP "double banana", in the reference's order, with index 12 as the paper labels it."""

TCP20_REFERENCE_TYPO = TCP20[:12] + ("Fp2-F3",) + TCP20[13:]
"""The reference code's list: index 12 is written Fp2-F3 (a typo for Fp1-F3)."""

TCP22 = TCP20[:8] + ("A1-T3",) + TCP20[8:12] + ("T4-A2",) + TCP20[12:]
"""TCP with the two ear pairs the reference comments out (A1-T3 at 8, T4-A2 at 13)."""

BCIC2A16 = ("C5-C1", "C3-Cz", "Cz-C4", "C2-C6", "Fz-C5", "C5-P1", "CP3-POz", "Fz-C1",
            "C1-Pz", "CP1-POz", "Fz-C2", "C2-Pz", "CP2-POz", "Fz-C6", "C6-P2", "CP4-POz")
SLEEP2 = ("Fpz-Cz", "Pz-Oz")
SEEDV17 = ("Fp1", "Fp2", "F7", "F3", "F4", "F8", "T7", "C3", "Cz", "C4", "T8", "P7", "P3",
           "P4", "P8", "O1", "O2")
BCIC2B2 = ("C3-Cz", "Cz-C4")
BCIC2B3 = ("C3", "Cz", "C4")
BCIC2A22 = ("Fz", "FC3", "FC1", "FCz", "FC2", "FC4", "C5", "C3", "C1", "Cz", "C2", "C4", "C6",
            "CP3", "CP1", "CPz", "CP2", "CP4", "P1", "Pz", "P2", "POz")

# Reference dataset key -> (channel list as the reference computes positions, montage).
# Every TCP key carries the reference's Fp2-F3 typo; `dataset_channels(key, fix_typo=True)`
# gives the corrected list.
DATASET_CHANNELS: dict[str, tuple[tuple[str, ...], str]] = {
    **{k: (TCP20_REFERENCE_TYPO, "standard_1020")
       for k in ("Stage1", "TUEV", "TUAB", "Mumtaz", "MentalArithmetic", "PhysioP300",
                 "PhysioP300-TTS", "SEED-V-bipolar", "BCIC2020-3", "FACED")},
    "SEED-V": (SEEDV17, "standard_1020"),
    "BCICIV-2B": (BCIC2B2, "standard_1020"),
    "BCICIV-2B-SC": (BCIC2B3, "standard_1020"),
    "BCICIV-2B-SC-TTS": (BCIC2B3, "standard_1020"),
    "BCICIV-2A": (BCIC2A16, "standard_1005"),
    "BCICIV-2A-TTS": (BCIC2A16, "standard_1005"),
    "BCICIV-2A-SC-TTS": (BCIC2A22, "standard_1005"),
    "Sleep-EDFx": (SLEEP2, "standard_1005"),
}


def fix_fp2_f3_typo(names) -> tuple[str, ...]:
  """Channel names with the reference's TCP typo "Fp2-F3" written as the intended "Fp1-F3"."""
  return tuple("Fp1-F3" if n == "Fp2-F3" else n for n in names)


def dataset_channels(key: str, fix_typo: bool = False) -> tuple[tuple[str, ...], str]:
  """(channel names, montage) for a reference dataset key; fix_typo swaps Fp2-F3 for Fp1-F3."""
  if key not in DATASET_CHANNELS:
    raise KeyError(f"unknown dataset key {key!r}; known: {', '.join(sorted(DATASET_CHANNELS))}")
  names, montage = DATASET_CHANNELS[key]
  if fix_typo:
    names = fix_fp2_f3_typo(names)
  return names, montage


def dataset_positions(key: str, fix_typo: bool = False) -> np.ndarray:
  """Integer coordinates [D, 3] in 0..49 that the reference computes for a dataset key."""
  names, montage = dataset_channels(key, fix_typo)
  return quantize_positions(electrode_positions(names, montage))


# ---------------------------------------------------------------------------------------------
# IILP partitions: channel-index groups by partition name and channel count (the reference's
# tables; groups may overlap). The 20/22-channel tables index TCP order, 17 SEED-V order,
# 16 BCIC-IV-2A order.

LOBE_GROUPS: dict[str, dict[int, tuple[tuple[int, ...], ...]]] = {
    "Functional": {
        22: ((0, 4, 14, 18), (9, 10, 11, 12, 15, 16, 19, 20), (3, 7, 17, 21), (1, 2, 8, 9),
             (5, 6, 12, 13)),
        20: ((0, 4, 12, 16), (8, 9, 10, 11, 13, 14, 17, 18), (3, 7, 15, 19), (1, 2, 8),
             (5, 6, 11)),
        17: ((0, 1, 2, 3, 4, 5), (6, 7, 8, 9, 10), (11, 12, 13, 14, 15, 16)),
        16: ((4, 7, 10, 13), (0, 1, 2, 3), (5, 6, 8, 9), (11, 12, 14, 15)),
        3: ((0,), (1,), (2,)),
        2: ((0,), (1,)),
    },
    "Hemispheres": {
        22: ((0, 1, 2, 3, 8, 9, 10, 14, 15, 16, 17), (4, 5, 6, 7, 11, 12, 13, 18, 19, 20, 21)),
        20: ((0, 1, 2, 3, 8, 9, 12, 13, 14, 15), (4, 5, 6, 7, 10, 11, 16, 17, 18, 19)),
        17: ((0, 2, 3, 6, 7, 8, 11, 12, 15), (1, 4, 5, 8, 9, 10, 13, 14, 16)),
        16: ((0, 1, 4, 5, 6, 7, 8, 9), (2, 3, 10, 11, 12, 13, 14, 15)),
        3: ((0, 1, 2),),
        2: ((0, 1),),
    },
    "Sagittal": {
        22: ((0, 1, 2, 3), (4, 5, 6, 7), (8, 9, 10, 11, 12, 13), (14, 15, 16, 17),
             (18, 19, 20, 21)),
        20: ((0, 1, 2, 3), (4, 5, 6, 7), (8, 9, 10, 11), (12, 13, 14, 15), (16, 17, 18, 19)),
    },
    "Coronal": {
        22: ((0, 4, 14, 18), (1, 5, 15, 19), (2, 6, 16, 20), (3, 7, 17, 21),
             (8, 9, 10, 11, 12, 13)),
        20: ((0, 4, 12, 16), (1, 5, 13, 17), (2, 6, 14, 18), (3, 7, 15, 19), (8, 9, 10, 11)),
    },
}


def lobe_groups(part: str, n_channels: int, data: str | None = None
                ) -> tuple[tuple[int, ...], ...]:
  """The reference's IILP groups for a partition and channel count.

  ``part="Mean"`` is one group of all channels (mean pooling); ``part="None"`` is one group per
  channel (no pooling). The reference's Functional table for ``BCICIV-2A-SC-TTS`` is empty (a
  bug that gives a zero-width head); that case is refused here.
  """
  if part == "Mean":
    return (tuple(range(n_channels)),)
  if part == "None":
    return tuple((i,) for i in range(n_channels))
  if part not in LOBE_GROUPS:
    raise ValueError(f"unknown IILP partition {part!r}; known: "
                     f"{', '.join(list(LOBE_GROUPS) + ['Mean', 'None'])}")
  if part == "Functional" and data == "BCICIV-2A-SC-TTS":
    raise ValueError("the reference's Functional partition for BCICIV-2A-SC-TTS is empty "
                     "(zero-width head); choose another partition")
  table = LOBE_GROUPS[part]
  if n_channels not in table:
    raise ValueError(f"the reference has no {part!r} partition for {n_channels} channels "
                     f"(it knows {sorted(table)}); use part='Mean' or 'None'")
  return table[n_channels]


# ---------------------------------------------------------------------------------------------
# Automatic Functional lobes for montages the reference has no table for.

LOBES = ("Frontal", "Central", "Occipital", "Temporal-L", "Temporal-R")
"""Lobe order of the reference's Functional groups (its 20/22-channel tables)."""

# 10-05 name prefix -> lobe ("Temporal" gets its side from the electrode number).
_PREFIX_LOBE = {
    "FP": "Frontal", "AF": "Frontal", "F": "Frontal",
    "FC": "Central", "C": "Central", "CP": "Central", "P": "Central",
    "FT": "Temporal", "T": "Temporal", "TP": "Temporal",
    "PO": "Occipital", "O": "Occipital", "OI": "Occipital", "I": "Occipital",
}
# Lateral parietal sites that the old 10-20 names call temporal (T5 = P7, T6 = P8), and the
# ear/mastoid references.
_TEMPORAL_NAMES = {"P7", "P8", "P9", "P10", "A1", "A2", "M1", "M2", "LPA", "RPA"}


def _lobe_from_name(electrode: str) -> str | None:
  """Lobe of one monopolar 10-20/10-05 electrode name, or None if the name is not one.

  Prefix letters give the lobe (Fp/AF/F frontal; FC/C/CP/P central-parietal; FT/T/TP and the
  lateral P7-P10, A1/A2, M1/M2 temporal; PO/O/I occipital); odd numbers are left, even right.
  A midline ("z") temporal name does not exist, so it returns None.
  """
  name = electrode.strip().upper()
  m = re.fullmatch(r"([A-Z]+?)(Z|\d+)(H)?", name)
  if m is None:
    return None
  prefix, number = m.group(1), m.group(2)
  lobe = "Temporal" if name in _TEMPORAL_NAMES else _PREFIX_LOBE.get(prefix)
  if lobe is None:
    return None
  if lobe == "Temporal":
    if number == "Z":
      return None
    return "Temporal-L" if int(number) % 2 else "Temporal-R"
  return lobe


@functools.lru_cache(maxsize=None)
def _template_lobes(montage: str) -> tuple[np.ndarray, tuple[str, ...]]:
  """Positions [K, 3] m and lobes of every template electrode whose name gives a lobe."""
  table = _montage_positions(montage)
  names = [n for n in table if _lobe_from_name(n) is not None]
  return np.stack([table[n] for n in names]), tuple(_lobe_from_name(n) for n in names)


def electrode_lobe(electrode: str, position_m=None) -> str:
  """Lobe of one monopolar electrode: from its 10-05 name, else from its 3D position.

  A name that is not a 10-05 name (``"EEG 001"``, ``"E17"``) takes the lobe of the nearest
  10-05 electrode of the standard_1005 template to ``position_m`` [3] (metres, MNE head
  coordinates: the frame of MNE's built-in montages and of digitised positions).
  """
  lobe = _lobe_from_name(electrode)
  if lobe is not None:
    return lobe
  if position_m is None:
    raise UnknownChannelError([electrode], "lobe names (give its 3D position)")
  points, lobes = _template_lobes("standard_1005")
  dist = np.linalg.norm(points - np.asarray(position_m, np.float64)[None], axis=1)
  return lobes[int(np.argmin(dist))]


def channel_lobes(name: str, position_m=None) -> tuple[str, ...]:
  """Lobes of one channel (monopolar or bipolar ``"A-B"``); a bipolar channel may have two.

  The rule reproduces the reference's TCP-20/22 Functional tables: a derivation A-B belongs to
  the lobe of B (the electrode the chain runs to: Fp1-F7 frontal, F7-T3 left temporal, T3-T5
  left temporal, T5-O1 occipital, C3-P3 central-parietal), and also to A's temporal lobe when
  links a temporal electrode with a central one (the transverse chain's T3-C3 and C4-T4, which
  the reference puts in both lobes). ``position_m`` (the channel's position, the midpoint for
  a pair) is only used for names that are not 10-05 names (then the pair gets B's lobe only).
  """
  parts = split_bipolar(name)
  if len(parts) == 1:
    return (electrode_lobe(parts[0], position_m),)
  first = _lobe_from_name(parts[0])
  second = electrode_lobe(parts[1], position_m)
  pair = {first, second}
  if "Central" in pair and pair & {"Temporal-L", "Temporal-R"}:
    return (second, first)
  return (second,)


def auto_lobe_groups(names: Sequence[str], positions_m=None) -> tuple[tuple[int, ...], ...]:
  """IILP Functional groups for any montage: channel indices per lobe, in LOBES order.

  names: [D] channel names; positions_m: optional [D, 3] positions (metres, head coordinates)
  used only for channels whose names are not 10-05 names. Lobes without channels are left out
  (a montage with no occipital channel has 4 groups). Reproduces the reference's 20- and
  22-channel TCP tables exactly; see docs/QUIRKS.md for where it differs from the reference's
  SEED-V (3 coronal bands) and BCIC-IV-2A tables.
  """
  members: dict[str, list[int]] = {lobe: [] for lobe in LOBES}
  for i, name in enumerate(names):
    pos = None if positions_m is None else np.asarray(positions_m)[i]
    for lobe in channel_lobes(name, pos):
      members[lobe].append(i)
  return tuple(tuple(members[lobe]) for lobe in LOBES if members[lobe])
