"""``generic``: user recordings with flags for channels, windows, labels and splits.

Settings (``--set`` / the convert flags):

* ``channels``: a named set (``--channels=tcp20``) or a list of names / ``A-B`` pairs; empty
  (the default) keeps every channel with a standard 10-05 name, in recording order (positions
  are then per recording; the manifest lists them per file);
* ``window_s``, ``stride_s`` (default: non-overlapping), ``target_rate_hz`` (64),
  ``bandpass_hz`` (0.1-30), ``notch_hz`` (none), ``min_duration_s`` (0);
* ``params.label_source``: ``none`` (default; label -1), ``annotations`` (one window per
  annotation listed in ``label_map``, starting ``params.offset_s`` after its onset, or with
  ``params.annotation_windows="tile"`` sliding windows inside each annotation's span), or
  ``folder`` (the parent folder's name mapped through ``label_map``; other folders rejected);
* ``params.label_map``: ``"T1=left,T2=right"`` or a JSON object; class indices follow the
  first appearance of each class name;
* ``params.split_rule``: ``hash`` (subject-level, ``params.split_fractions``, default
  ``train=0.8,val=0.1,test=0.1``) or ``lists`` (``params.split_lists``,
  ``"train=s1;s2,val=s3,test=s4"``; unlisted subjects go to train);
* ``params.subject_pattern``: regex with one group applied to the relative path (default: BIDS
  ``sub-XX`` (and ``ses-YY`` as session) for BIDS file names, EEGMMIDB ``S001`` from
  ``S001R01``, else the file stem up to its first ``_``).
"""

from __future__ import annotations

import re

from data_prep import readers
from data_prep.recipes import base

CONFIG = base.RecipeConfig(
    name="generic",
    dataset="generic",
    channels=(),
    montage="standard_1005",
    target_rate_hz=64.0,
    bandpass_hz=(0.1, 30.0),
    window_s=4.0,
    params={"label_source": "none", "label_map": "", "offset_s": 0.0,
            "annotation_windows": "onset", "split_rule": "hash",
            "split_fractions": "train=0.8,val=0.1,test=0.1", "split_lists": "",
            "subject_pattern": ""},
)


def parse_pairs(spec, value_sep: str | None = None) -> dict:
  """'a=b,c=d' (or a mapping) -> dict; with value_sep, values are split into lists."""
  if isinstance(spec, dict):
    return dict(spec)
  out = {}
  for item in str(spec or "").split(","):
    if not item.strip():
      continue
    if "=" not in item:
      raise ValueError(f"expected key=value, got {item!r}")
    k, v = (s.strip() for s in item.split("=", 1))
    out[k] = [x.strip() for x in v.split(value_sep) if x.strip()] if value_sep else v
  return out


class Generic(base.Recipe):
  """Configurable recipe for user data (see the module docstring)."""

  def __init__(self, config):
    super().__init__(config)
    p = config.params
    if p["label_source"] not in ("none", "annotations", "folder"):
      raise ValueError(f"label_source must be none, annotations or folder, "
                       f"not {p['label_source']!r}")
    self.label_map = parse_pairs(p["label_map"])
    if p["label_source"] != "none" and not self.label_map:
      raise ValueError(f"label_source={p['label_source']} needs params.label_map")
    if p["split_rule"] not in ("hash", "lists"):
      raise ValueError(f"split_rule must be hash or lists, not {p['split_rule']!r}")

  def subject(self, path, root) -> str:
    rel = base.recording_id(path, root)
    pattern = self.config.params.get("subject_pattern")
    if pattern:
      m = re.search(pattern, rel)
      if not m or not m.group(1):
        raise base.Rejected(f"subject_pattern {pattern!r} does not match {rel!r}")
      return m.group(1)
    bids = readers.bids_entities(path)
    if bids:
      return f"sub-{bids['sub']}"
    m = re.match(r"^(S\d{3})R\d+$", path.stem)
    return m.group(1) if m else path.stem.split("_")[0]

  def describe(self, path, root):
    p = self.config.params
    subject = self.subject(path, root)
    if p["split_rule"] == "hash":
      split = base.split_by_fraction(subject, {k: float(v) for k, v in
                                               parse_pairs(p["split_fractions"]).items()})
    else:
      split = base.split_by_lists(subject, parse_pairs(p["split_lists"], ";"), default="train")
    session = readers.bids_entities(path).get("ses", "")
    info = base.RecordingInfo(dataset=self.config.dataset, subject=subject, session=session,
                              recording=base.recording_id(path, root), split=split)
    if p["label_source"] == "folder":
      folder = path.parent.name
      if folder not in self.label_map:
        raise base.Rejected(f"folder {folder!r} is not in label_map "
                            f"({', '.join(self.label_map)})")
      info.label_name = self.label_map[folder]
      info.label = self.config.label_names.index(info.label_name)
    return info

  def windows(self, ctx):
    p = self.config.params
    if p["label_source"] != "annotations":
      return None
    if p.get("annotation_windows", "onset") == "onset":
      return base.windows_from_annotations(ctx, self.label_map, self.config.label_names,
                                           offset_s=float(p.get("offset_s", 0.0)))
    out = []
    for onset, duration, desc in ctx.annotations():
      name = self.label_map.get(desc.strip())
      if name is None:
        continue
      t = onset + float(p.get("offset_s", 0.0))
      while t + self.config.window_s <= onset + duration + 1e-9:
        out.append(base.WindowSpec(t, self.config.label_names.index(name), name))
        t += self.config.stride
    return out


def build(**overrides) -> Generic:
  config = base.override(CONFIG, **overrides)
  if not config.label_names and config.params.get("label_map"):
    names = list(dict.fromkeys(parse_pairs(config.params["label_map"]).values()))
    config = base.override(config, label_names=tuple(names))
  return Generic(config)
