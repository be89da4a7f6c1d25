"""The embedded default's corpora: synthetic EEG written as EDF/FIF and converted with a recipe,
under <workdir>/data, once (a finished conversion is reused).

Called by the launchers (launch/common.py) when a config has no data.sources; the library's
training loops only read shards.
"""

from __future__ import annotations

from pathlib import Path

from absl import logging

from data_prep import convert as convert_lib
from data_prep import montages, synthetic
from data_prep.recipes import get_recipe


def _raw_corpus(raw: Path, cfg) -> Path:
  """The synthetic recordings in `raw`, written unless a finished corpus (corpus.json, written
  last) is there."""
  if not (raw / "corpus.json").exists():
    logging.info("writing the synthetic corpus to %s", raw)
    synthetic.write_corpus(raw, n_subjects=cfg.n_subjects, recordings=cfg.recordings,
                           minutes=cfg.minutes, seed=cfg.seed)
  return raw


def pretrain_corpus(workdir: str, cfg) -> str:
  """Write the synthetic corpus and convert it with pretrain_tcp20. Returns the shard dir.

  cfg: config.synthetic of the pretraining config (n_subjects, recordings, minutes,
  val_fraction, seed)."""
  shards = Path(workdir) / "data" / "pretrain_tcp20"
  if (shards / "manifest.json").exists():
    return str(shards)
  raw = _raw_corpus(Path(workdir) / "data" / "synthetic", cfg)
  logging.info("converting it with the pretrain_tcp20 recipe into %s", shards)
  recipe = get_recipe("pretrain_tcp20", params={"val_fraction": cfg.val_fraction})
  convert_lib.convert(str(raw), recipe, shards, workers=1)
  return str(shards)


def labelled_corpus(workdir: str, cfg) -> str:
  """Write a labelled synthetic corpus and convert it with the `generic` recipe (annotation
  labels, TCP-20 channels, subject-level splits from `cfg.split_lists`; `cfg.window_s`
  windows, one per event ("onset") or tiled over each 4 s event every `cfg.stride_s`
  ("tile")). Returns the shard dir."""
  shards = Path(workdir) / "data" / f"generic_tcp20_{cfg.window_s:g}s"
  if (shards / "manifest.json").exists():
    return str(shards)
  raw = _raw_corpus(Path(workdir) / "data" / "synthetic_labelled", cfg)
  logging.info("converting it with the generic recipe (annotation labels) into %s", shards)
  recipe = get_recipe("generic", channels=montages.MONTAGES["tcp20"], montage="standard_1020",
                      window_s=float(cfg.window_s), stride_s=cfg.stride_s,
                      params={"label_source": "annotations",
                              "label_map": synthetic.GENERIC_LABEL_MAP,
                              "annotation_windows": cfg.annotation_windows,
                              "split_rule": "lists", "split_lists": cfg.split_lists})
  convert_lib.convert(str(raw), recipe, shards, workers=1)
  return str(shards)
