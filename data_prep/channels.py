"""Channel-name normalisation: every recording's labels -> canonical 10-05 electrode names.

``normalize_name`` is applied to every channel before anything else looks at it:

1. strip surrounding blanks, then a leading ``EEG`` type prefix (``"EEG FP1-REF"``,
   ``"EEG-Fz"``, ``"EEG Fpz-Cz"``); other prefixes (``POL``, ``ECG``, ``SaO2``...) are kept, so
   those channels never match an electrode;
2. strip a reference suffix: ``-REF``, ``-Ref``, ``-LE``, ``-AVG``, ``-AR`` (TUH, clinical);
3. strip EEGMMIDB padding dots (``"Fc5."``, ``"Cz.."``);
4. restore the canonical case from MNE's 10-05 electrode table (``FP1``->``Fp1``,
   ``CZ``->``Cz``, ``FPZ``->``Fpz``, ``Fcz``->``FCz``); for an ``A-B`` pair each side is
   cased separately (``"FPZ-CZ"``->``"Fpz-Cz"``).

Names are otherwise stored as the recording spells them: legacy (T3/T4/T5/T6, A1/A2) and modern
(T7/T8/P7/P8, M1/M2) names are *not* rewritten. Lookups are alias-aware instead:
``find_electrode("T3", names)`` finds ``T3`` or ``T7``. Recipes name their outputs in either
spelling (the TCP lists use the legacy names, as the reference does).
"""

from __future__ import annotations

import functools
import re
from typing import Mapping, Sequence

# Legacy <-> modern 10-20 names of the same electrode site (A1/A2 earlobes are treated as
# the M1/M2 mastoids, as most EEG pipelines do).
ALIASES: Mapping[str, str] = {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8",
                              "A1": "M1", "A2": "M2"}
ALIASES = {**ALIASES, **{v: k for k, v in ALIASES.items()}}

_PREFIX = re.compile(r"^EEG[\s\-_]+", re.IGNORECASE)
_REF_SUFFIX = re.compile(r"[\s\-_]+(REF|LE|AVG|AR)$", re.IGNORECASE)


class MissingChannelsError(ValueError):
  """Channels a recipe needs that a recording lacks; ``.names`` lists them."""

  def __init__(self, names: Sequence[str], available: Sequence[str]):
    self.names = list(names)
    self.available = list(available)
    shown = ", ".join(self.available[:12]) + (" ..." if len(self.available) > 12 else "")
    super().__init__(f"missing channel(s) {', '.join(self.names)} "
                     f"(recording has: {shown or 'no channels'})")


@functools.lru_cache(maxsize=None)
def electrode_table() -> Mapping[str, str]:
  """Lower-case name -> canonical name for every 10-05 electrode (MNE's template list)."""
  import mne  # Lazy: importing data_prep.channels must stay cheap.
  names = list(mne.channels.make_standard_montage("colin27_1005").ch_names)
  names += [n for n in ("T3", "T4", "T5", "T6", "A1", "A2", "M1", "M2") if n not in names]
  return {n.lower(): n for n in names}


def canonical_electrode(name: str) -> str | None:
  """The canonical spelling of a 10-05 electrode name (any case), or None if not one."""
  return electrode_table().get(name.strip().lower())


def normalize_name(name: str) -> str:
  """One recording label -> normalised name (see the module docstring)."""
  n = name.strip()
  n = _PREFIX.sub("", n)
  n = _REF_SUFFIX.sub("", n)
  n = n.rstrip(".").strip()
  canon = canonical_electrode(n)
  if canon:
    return canon
  parts = n.split("-")
  if len(parts) == 2:
    a, b = (canonical_electrode(p) for p in parts)
    if a and b:
      return f"{a}-{b}"
  return n


def normalize_names(names: Sequence[str]) -> list[str]:
  """Normalise every label; a name that would repeat an earlier one keeps its raw label."""
  out, seen = [], set()
  for raw in names:
    n = normalize_name(raw)
    if n in seen:
      n = raw
    seen.add(n)
    out.append(n)
  return out


def is_electrode(name: str) -> bool:
  """True for a normalised 10-05 electrode name (``"Cz"``, ``"T3"``)."""
  return canonical_electrode(name) == name


def find_electrode(name: str, available: Sequence[str]) -> int | None:
  """Index in ``available`` of electrode ``name`` or of its legacy/modern alias."""
  index = {n: i for i, n in enumerate(available)}
  if name in index:
    return index[name]
  alias = ALIASES.get(name)
  if alias is not None and alias in index:
    return index[alias]
  return None
