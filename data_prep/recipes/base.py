"""The Recipe interface: how one dataset's recordings become labelled windows.

A recipe is two things:

1. ``RecipeConfig``: a frozen dataclass of *declarative* settings (output channels or bipolar
   derivation, template montage, target rate, band-pass, notch, reference, window and stride,
   minimum duration, edge trim, artefact thresholds, class names, recipe-specific ``params``).
   Its canonical JSON is hashed (``config_hash``); the hash is written into every record and
   into the manifest, so shards made with different settings can never be mixed silently.
2. ``Recipe``: a class whose *hooks* know the dataset's file layout. The engine
   (``data_prep.pipeline``) does everything else -- reading, channel-name normalisation,
   picking, filtering, notch, resampling, re-referencing, derivation, windowing, artefact
   rejection, positions, shards and the manifest -- identically for every recipe.

Hooks (all optional; the defaults suit "every EEG file is one unlabelled recording"):

* ``accepts(path) -> bool``: does this recipe consume this file? (e.g. skip hypnograms,
  ``.rec`` label files, README files). Default: any file with a known EEG extension.
* ``describe(path, root) -> RecordingInfo``: ids (dataset/subject/session/recording), a
  file-level label (e.g. from the folder name), the split, and ``extra`` (e.g. the path of a
  paired hypnogram). ``root`` is the input folder the file was found under. Raise
  ``Rejected(reason)`` for a file that belongs to the dataset but cannot be used.
* ``assign_splits(infos) -> infos``: called once in the main process with every file's
  ``RecordingInfo`` (sorted by path) before any signal is read; use it when a split needs
  the global subject list (e.g. "sorted subjects, first 80 % train"). Default: unchanged.
* ``open(path, info) -> mne.io.BaseRaw | None``: read a format the generic reader does not
  know (e.g. BCIC ``.mat``); return None to use ``data_prep.readers.open_raw``.
* ``windows(ctx) -> list[WindowSpec] | None``: labelled window starts, in seconds on the
  recording's own time axis (0 = first sample), from annotations, event files or sidecar
  label files. Return None for the default: sliding windows of ``window_s`` every
  ``stride_s`` between the edge trims, each labelled with ``info.label``.

Errors: raise ``Rejected(reason)`` from any hook for a file that cannot be used; the reason goes
to the manifest. Any other exception from a hook also rejects only that file (logged with its
traceback, reason "could not parse this path" or "internal error"), so a recipe bug on one odd
path never stops a corpus run. ``describe`` must return string ids and a non-empty subject and
split. A resumed run re-runs ``describe``/``assign_splits`` and reconverts any file whose
decision (ids, split, label, extra) changed.

Channel names in ``RecipeConfig.channels`` are canonical 10-05 names (``"Cz"``) or bipolar
``"A-B"`` pairs (``"Fp1-F7"``). A bipolar output is taken from the recording when it holds a
channel of that exact name (Sleep-EDF's ``EEG Fpz-Cz``), else derived as A minus B. Legacy and
modern temporal names are interchangeable (T3=T7, T4=T8, T5=P7, T6=P8; A1=M1, A2=M2):
``data_prep.channels`` resolves either spelling.

Worked example (a two-class motor dataset whose events live in the recording's annotations)::

    from data_prep.recipes import base

    CONFIG = base.RecipeConfig(
        name="my_motor", dataset="MyMotor",
        channels=("C3", "Cz", "C4"), montage="standard_1020",
        target_rate_hz=64.0, bandpass_hz=(0.1, 30.0), notch_hz=50.0,
        window_s=4.0, label_names=("left", "right"),
        params={"events": {"T1": "left", "T2": "right"}, "offset_s": 0.5})

    class MyMotor(base.Recipe):
      def describe(self, path, root):
        subject = path.stem.split("_")[0]                     # "S007_run1.edf" -> "S007"
        return base.RecordingInfo(
            dataset=self.config.dataset, subject=subject, session="1",
            recording=path.stem,
            split=base.split_by_fraction(subject, {"train": .8, "val": .1, "test": .1}))

      def windows(self, ctx):
        return base.windows_from_annotations(
            ctx, self.config.params["events"], self.config.label_names,
            offset_s=self.config.params["offset_s"])

    def build(**overrides):                                   # what get_recipe() calls
      return MyMotor(base.override(CONFIG, **overrides))

Everything here is plain Python and picklable (recipes travel to worker processes and Beam
workers): keep hook state in ``config`` / ``info.extra``, not in open handles.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

if TYPE_CHECKING:  # MNE is imported lazily; the recipe registry must import fast.
  import mne

# File extensions the generic reader (data_prep.readers) opens.
EEG_EXTENSIONS = (".edf", ".bdf", ".fif", ".vhdr", ".set", ".cnt", ".gdf")

SPLITS = ("train", "val", "test")


class Rejected(Exception):
  """A recording (or file) that cannot be used; ``reason`` is written to the manifest."""

  def __init__(self, reason: str):
    super().__init__(reason)
    self.reason = reason


@dataclasses.dataclass(frozen=True)
class RecipeConfig:
  """Declarative settings of a recipe. Every field is part of the recipe hash.

  Units: Hz for rates and frequencies, seconds for durations, microvolts for thresholds.
  """

  name: str
  """Registry name (``--recipe``)."""
  dataset: str
  """Dataset id written into every record (e.g. ``"TUAB"``)."""
  channels: tuple[str, ...]
  """Output channels in output order: ``"Cz"`` (monopolar) or ``"Fp1-F7"`` (bipolar A-B)."""
  montage: str = "standard_1020"
  """MNE template montage for positions (``standard_1020`` / ``standard_1005``)."""
  positions: str = "template"
  """``"template"``: positions from ``montage``; ``"recording"``: the recording's own
  digitised positions (bipolar: midpoint), rejecting recordings that lack them."""
  target_rate_hz: float = 64.0
  """Output sampling rate."""
  min_source_rate_hz: float | None = None
  """Recordings sampled below this are rejected; None means ``target_rate_hz``."""
  resample_method: str = "fft"
  """``mne.filter.resample`` method: ``"fft"`` (MNE's default) or ``"polyphase"``."""
  bandpass_hz: tuple[float | None, float | None] | None = None
  """(low, high) FIR band-pass cut-offs applied at the source rate; None entries skip a side."""
  notch_hz: float | None = None
  """Line frequency; its notch is applied (after the band-pass) when below the source Nyquist."""
  reference: str = "none"
  """``"none"`` or ``"car"`` (common average over the picked electrodes, before derivation)."""
  car_channels: tuple[str, ...] = ()
  """Electrodes averaged for CAR; empty means every 10-05 electrode found in the recording."""
  window_s: float = 4.0
  """Window length."""
  stride_s: float | None = None
  """Stride of default sliding windows; None means ``window_s`` (non-overlapping)."""
  min_duration_s: float = 0.0
  """Recordings shorter than this (before trimming) are rejected."""
  trim_start_s: float = 0.0
  """Seconds dropped at the start of each recording (default windows only start after it)."""
  trim_end_s: float = 0.0
  """Seconds dropped at the end of each recording."""
  max_abs_uv: float | None = None
  """Drop a window if any |x| exceeds this (after all processing)."""
  flat_uv: float | None = None
  """Drop a window if any channel has |x| below this at every sample (a flat channel)."""
  label_names: tuple[str, ...] = ()
  """Class names; a record's ``label`` indexes this tuple (-1: unlabelled)."""
  params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  """Recipe-specific settings (JSON-serialisable), read by the recipe's hooks."""

  def __post_init__(self):
    # Normalise types so equal settings always give the same JSON (5 vs 5.0, list vs tuple).
    set_ = lambda k, v: object.__setattr__(self, k, v)
    for f in ("target_rate_hz", "window_s", "min_duration_s", "trim_start_s", "trim_end_s"):
      set_(f, float(getattr(self, f)))
    for f in ("min_source_rate_hz", "stride_s", "notch_hz", "max_abs_uv", "flat_uv"):
      if getattr(self, f) is not None:
        set_(f, float(getattr(self, f)))
    for f in ("channels", "car_channels", "label_names"):
      set_(f, tuple(str(x) for x in getattr(self, f)))
    if self.bandpass_hz is not None:
      set_("bandpass_hz", tuple(None if x is None else float(x) for x in self.bandpass_hz))
    if self.positions not in ("template", "recording"):
      raise ValueError(f"positions must be 'template' or 'recording', not {self.positions!r}")
    if self.reference not in ("none", "car"):
      raise ValueError(f"reference must be 'none' or 'car', not {self.reference!r}")

  def canonical_json(self) -> str:
    """Sorted, compact JSON of every field: the input of ``config_hash``."""
    return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"),
                      default=_json_default)

  @functools.cached_property
  def config_hash(self) -> str:
    """First 16 hex digits of the SHA-256 of ``canonical_json()`` (computed once)."""
    return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:16]

  @property
  def stride(self) -> float:
    """Effective stride in seconds."""
    return self.window_s if self.stride_s is None else self.stride_s

  @property
  def window_samples(self) -> int:
    """Samples per output window at ``target_rate_hz``."""
    return int(round(self.window_s * self.target_rate_hz))


def _json_default(obj):
  if isinstance(obj, (set, frozenset)):
    return sorted(obj)
  raise TypeError(f"recipe config value {obj!r} is not JSON-serialisable")


def override(config: RecipeConfig, **changes) -> RecipeConfig:
  """A copy of ``config`` with fields replaced; unknown names raise ValueError.

  ``params`` given as a mapping is merged into (not substituted for) the existing params;
  a key ``"params.x"`` sets one param. Lists become tuples so the config stays hashable.
  """
  fields = {f.name for f in dataclasses.fields(config)}
  params = dict(config.params)
  direct = {}
  for key, value in changes.items():
    if key.startswith("params."):
      params[key[len("params."):]] = value
    elif key == "params":
      params.update(dict(value))
    elif key in fields:
      direct[key] = tuple(value) if isinstance(value, list) else value
    else:
      raise ValueError(f"recipe {config.name!r} has no setting {key!r}; "
                       f"settings: {', '.join(sorted(fields))} (or params.<name>)")
  return dataclasses.replace(config, params=params, **direct)


@dataclasses.dataclass
class RecordingInfo:
  """Per-file metadata, decided from the path alone (no signal read)."""

  dataset: str
  subject: str
  session: str = ""
  recording: str = ""
  split: str = "train"
  label: int = -1
  """File-level label for default sliding windows (e.g. TUAB normal/abnormal); -1: none."""
  label_name: str | None = None
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)
  """Anything the recipe's later hooks need (JSON-serialisable), e.g. a paired file's path."""


@dataclasses.dataclass(frozen=True)
class WindowSpec:
  """One labelled window: ``start_s`` on the recording's time axis (0 = first sample)."""

  start_s: float
  label: int = -1
  label_name: str | None = None


@dataclasses.dataclass
class RecordingContext:
  """What ``Recipe.windows`` sees about one recording (names already normalised)."""

  path: Path
  info: RecordingInfo
  raw: "mne.io.BaseRaw"
  """The recording as read (data may not be loaded; use it for annotations and header)."""
  sfreq: float
  """Source sampling rate in Hz."""
  duration_s: float
  """Length of the recording in seconds."""
  channel_names: tuple[str, ...]
  """Normalised channel names of the recording."""

  def annotations(self) -> list[tuple[float, float, str]]:
    """(onset_s, duration_s, description) on the recording's time axis, sorted by onset."""
    ann = self.raw.annotations
    first = self.raw.first_time
    out = [(float(o) - first, float(d), str(s))
           for o, d, s in zip(ann.onset, ann.duration, ann.description)]
    return sorted(out, key=lambda t: (t[0], t[2]))


class Recipe:
  """Base recipe: every EEG file is one recording, unlabelled, split by subject hash.

  Subclasses override hooks (see the module docstring) and keep all settings in
  ``self.config``.
  """

  def __init__(self, config: RecipeConfig):
    self.config = config

  @property
  def name(self) -> str:
    return self.config.name

  @property
  def config_hash(self) -> str:
    return self.config.config_hash

  def accepts(self, path: Path) -> bool:
    """True for files this recipe converts (default: known EEG extensions)."""
    return path.suffix.lower() in EEG_EXTENSIONS

  def describe(self, path: Path, root: Path) -> RecordingInfo:
    """Ids and split from the path. Default: subject = file stem, 80/10/10 hash split."""
    subject = path.stem
    return RecordingInfo(dataset=self.config.dataset, subject=subject, session="",
                         recording=recording_id(path, root),
                         split=split_by_fraction(subject, DEFAULT_FRACTIONS))

  def assign_splits(self, infos: Sequence[RecordingInfo]) -> Sequence[RecordingInfo]:
    """Global split decision over all files (sorted by path); default: keep ``describe``'s."""
    return infos

  def open(self, path: Path, info: RecordingInfo) -> "mne.io.BaseRaw | None":
    """Read a non-standard format; None means the generic reader."""
    return None

  def windows(self, ctx: RecordingContext) -> Sequence[WindowSpec] | None:
    """Labelled window starts, or None for default sliding windows."""
    return None


DEFAULT_FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}


def recording_id(path: Path, root: Path) -> str:
  """The file's path relative to ``root`` without extension, as a POSIX string."""
  try:
    rel = path.relative_to(root)
  except ValueError:
    rel = Path(path.name)
  return rel.with_suffix("").as_posix()


def hash_fraction(key: str, salt: str = "") -> float:
  """A deterministic number in [0, 1) from ``key`` (SHA-256; stable across runs/machines)."""
  digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
  return int.from_bytes(digest[:8], "big") / 2.0**64


def split_by_fraction(subject: str, fractions: Mapping[str, float], salt: str = "") -> str:
  """Subject-level split by hash: subject lands in a split with probability ``fractions``.

  ``fractions`` maps split name -> fraction (need not sum to 1; they are normalised).
  """
  total = float(sum(fractions.values()))
  if total <= 0:
    raise ValueError(f"split fractions must sum to > 0: {dict(fractions)}")
  u = hash_fraction(subject, salt) * total
  acc = 0.0
  names = list(fractions)
  for name in names:
    acc += fractions[name]
    if u < acc:
      return name
  return names[-1]


def split_by_lists(subject: str, lists: Mapping[str, Iterable[str]],
                   default: str | None = None) -> str:
  """Explicit subject lists: the split whose list holds ``subject``; else ``default``.

  Raises Rejected if the subject is in no list and there is no default.
  """
  for name, subjects in lists.items():
    if subject in {str(s) for s in subjects}:
      return name
  if default is None:
    raise Rejected(f"subject {subject!r} is in none of the split lists ({', '.join(lists)})")
  return default


def split_sorted(subjects: Sequence[str], fractions: Mapping[str, float]) -> dict[str, str]:
  """Subject -> split, cutting the sorted unique subject list by ``fractions`` in order.

  Numeric subject ids sort numerically. Used from ``assign_splits`` hooks.
  """
  unique = sorted(set(subjects), key=natural_key)
  total = float(sum(fractions.values()))
  out, start = {}, 0
  names = list(fractions)
  for i, name in enumerate(names):
    end = len(unique) if i == len(names) - 1 else start + int(
        round(len(unique) * fractions[name] / total))
    for s in unique[start:end]:
      out[s] = name
    start = end
  return out


def natural_key(text: str) -> tuple:
  """Sort key that orders embedded numbers numerically ("s2" < "s10")."""
  return tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text))


def windows_from_annotations(ctx: RecordingContext, mapping: Mapping[str, str | int],
                             label_names: Sequence[str], offset_s: float = 0.0,
                             match: str = "exact") -> list[WindowSpec]:
  """One window per annotation whose description maps to a class.

  mapping: annotation description -> class name (in ``label_names``) or class index.
  ``match="prefix"`` matches descriptions that start with a key. The window starts
  ``offset_s`` after the annotation onset (negative: before). Unmapped annotations are ignored.
  """
  out = []
  for onset, _, desc in ctx.annotations():
    key = desc.strip()
    target = mapping.get(key)
    if target is None and match == "prefix":
      target = next((v for k, v in mapping.items() if key.startswith(k)), None)
    if target is None:
      continue
    if isinstance(target, int):
      label = target
      name = label_names[label] if 0 <= label < len(label_names) else key
    else:
      if target not in label_names:
        raise ValueError(f"annotation {key!r} maps to {target!r}, not a class of "
                         f"{tuple(label_names)}")
      label, name = label_names.index(target), target
    out.append(WindowSpec(start_s=onset + offset_s, label=label, label_name=name))
  return out
