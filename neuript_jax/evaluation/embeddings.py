"""Per-window features of a (frozen) NeurIPT encoder over a prepared split.

The features are what the IILP classification head consumes (``heads.iilp_features``): for
each of the ``c_layers + 1`` feature maps enc_out[0], enc_out[-1], ..., enc_out[-c_layers]
(block index ``map_blocks(cfg)``), the map is averaged over its time segments and over the
channels of every lobe group of ``cfg.iilp_groups()``, and the [n_groups, d_model] results are
concatenated: ``features[n, (i * n_groups + g) * d_model + k]`` is channel k of group g of
map i. The head's logits are ``features @ kernel + bias``.

Per-block maps (``blocks=True``): every encoder output enc_out[l], l = 0 (embedding + temporal
PE) .. n_blocks, as [N, D, L_l, d_model] (L_l time segments after block l's merging).

Records are read per source, in manifest order (no shuffling), so ``record_id`` is the
record's position in its source's split (``neuript_jax.data.record.read_split(dir, split)[i]``).
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from neuript_jax.data import record as record_lib
from neuript_jax.model import Stage2Model
from neuript_jax.model.heads import iilp_features
from neuript_jax.evaluation import predict as predict_lib

META_FIELDS = ("dataset", "subject", "session", "recording", "window_start",
               "window_start_s")


def map_blocks(cfg) -> list[int]:
  """enc_out index of each IILP feature map, in feature order: [0, n, n-1, ...]."""
  n = len(cfg.merge_layers)
  return [0] + [n + 1 - i for i in range(1, cfg.c_layers + 1)]


def make_feature_fn(cfg, blocks: bool = False):
  """fn(params, x [B, T, D]) -> {"features": [B, F] float32} (+ "block_<l>": [B, D, L_l, d]
  float32 per encoder output with `blocks`); params: a stage-2 param tree (the head's values
  are not used)."""
  model = Stage2Model(cfg)
  groups = cfg.iilp_groups()

  def fn(params, x):
    _, _, enc_out = model.apply({"params": params}, x, True, True)
    out = {"features": iilp_features(enc_out, groups, cfg.c_layers)}
    if blocks:
      out.update({f"block_{l}": m.astype(jnp.float32) for l, m in enumerate(enc_out)})
    return out

  return fn


def record_metadata(directory: str, split: str) -> dict[str, np.ndarray]:
  """{field: [N]} of META_FIELDS and "label" for every record of `split`, in record_id order."""
  rows = {k: [] for k in META_FIELDS + ("label",)}
  with record_lib.read_split(directory, split) as reader:
    for rec in reader:
      for k in rows:
        rows[k].append(getattr(rec, k))
  return {k: np.asarray(v) for k, v in rows.items()}


def extract_split(fn, params, data_cfg, mesh, batch_size: int) -> dict[str, np.ndarray]:
  """fn's outputs plus metadata for every record of data_cfg.split, source after source.

  data_cfg: a pipeline config reading its split once, unshuffled (launch.evaluate's
  split_data_config); fn from make_feature_fn. Returns {"features" [N, F], ("block_<l>"),
  "labels" [N] int64, "record_id" [N] int64, "source" [N] int64 (index into data_cfg.sources),
  and META_FIELDS [N]}.
  """
  from neuript_jax.data import pipeline
  parts = []
  sources = [s["path"] for s in pipeline.dataset_summary(data_cfg)["sources"]]
  for k, path in enumerate(sources):
    one = data_cfg.copy_and_resolve_references()
    one.sources = [(path, 1.0)]
    outs, ids = [], []
    for batch, out in predict_lib.map_split(fn, params, one, mesh, batch_size):
      outs.append(out)
      ids.append(np.asarray(batch["index"], np.int64))
    ids = np.concatenate(ids)
    meta = record_metadata(path, data_cfg.split)
    if len(ids) != len(meta["label"]) or np.any(ids != np.arange(len(ids))):
      raise RuntimeError(f"{path} ({data_cfg.split}): the pipeline read {len(ids)} records "
                         f"out of order or incompletely ({len(meta['label'])} in the shards)")
    part = {key: np.concatenate([o[key] for o in outs]) for key in outs[0]}
    part.update({f: meta[f] for f in META_FIELDS})
    part["labels"] = meta["label"].astype(np.int64)
    part["record_id"] = ids
    part["source"] = np.full(len(ids), k, np.int64)
    parts.append(part)
  return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def embed_splits(checkpoint: str, data, splits, config=None, batch_size: int = 64,
                 window_len="config", blocks: bool = False) -> dict:
  """{split: the arrays of the output file (module docstring)} for each of `splits` of `data`;
  the checkpoint is loaded and the feature function compiled once."""
  from absl import logging
  from neuript_jax.evaluation.runs import check_data_fits, load_encoder, split_data_config
  from neuript_jax.model.heads import group_matrix
  from neuript_jax.train import loop
  from neuript_jax.train import mesh as mesh_lib

  model_cfg, params, trained, kind = load_encoder(checkpoint, config)
  mesh = mesh_lib.make_mesh([-1, 1, 1, 1])
  params = loop.place(params, jax.tree_util.tree_map(lambda _: mesh_lib.replicated(mesh),
                                                     params))
  features = loop.traced_under(mesh, make_feature_fn(model_cfg, blocks))
  fn = loop.compiled_together(jax.jit(features), "embed_features")
  results = {}
  for split in splits:
    data_cfg = split_data_config(data, split, batch_size, trained, window_len)
    summary = check_data_fits(data_cfg, model_cfg)
    out = extract_split(fn, params, data_cfg, mesh, batch_size)
    names = summary["sources"][0].get("channel_names") or list(model_cfg.channel_names)
    out["channel_names"] = np.asarray(names, dtype=str)
    out["map_blocks"] = np.asarray(map_blocks(model_cfg), np.int64)
    out["groups"] = (group_matrix(model_cfg.iilp_groups(), model_cfg.data_dim) > 0).astype(
        np.int64)
    out["meta"] = np.asarray(json.dumps({
        "checkpoint": os.path.abspath(checkpoint), "kind": kind, "split": split,
        "data": [os.path.abspath(p) for p in data],
        "label_names": predict_lib.label_names(data_cfg), "model": model_cfg.to_dict()},
        default=str))
    logging.info("%s %s: %d windows x %d features", checkpoint, split, *out["features"].shape)
    results[split] = out
  return results


def save(path: str, arrays: dict) -> str:
  """Write the arrays to `path` (.npz, uncompressed; the folder is created)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp.npz"
  np.savez(tmp, **arrays)
  os.replace(tmp, path)
  return path
