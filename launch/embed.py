r"""Export per-window IILP features (and, on request, per-block encoder maps) of a prepared split.

  python -m launch.embed --checkpoint=runs/finetune_demo --data=SHARD_DIR --split=test \
      --output=test_features.npz [--blocks] [--batch_size=64] [--window_len=config]
  python -m launch.embed --checkpoint=runs/pretrain_demo --data=SHARD_DIR --split=train \
      --output=train_features.npz [--config=neuript_jax/configs/finetune.py \
      --config.model.c_layers=6 --config.model.part=Functional ...]

--checkpoint: a fine-tuning workdir or step folder (launch.evaluate.find_run; the model and the
A-law / window settings come from its finetune_config.json, --config is ignored), or an
encoder only: a pretraining workdir or step folder, or a reference .pth/.pt/.npz state_dict
(finetune.load_encoder_params). For an encoder only, --config (default
neuript_jax/configs/finetune.py) gives the model (sizes, merge layers, experts, and the IILP
`part` / `c_layers` that define the features) and data.alaw / data.window_len.
--data: one or more data_prep output folders (comma separated), read in order, unshuffled.

Output: one .npz (numpy.load, no pickle needed), N windows:

  features        float32 [N, F]   IILP features, F = (c_layers + 1) * n_groups * d_model;
                                   features[n, (i * n_groups + g) * d_model + k] = channel k,
                                   lobe group g, feature map i (encoder output map_blocks[i]),
                                   averaged over time segments and the group's channels
  block_<l>       float32 [N, D, L_l, d_model]  with --blocks: encoder output l (0 = embedding
                                   + temporal PE, 1..n_blocks = after block l)
  labels          int64 [N]        class index, -1 = unlabelled
  subject, session, recording, dataset   str [N]   from the records
  record_id       int64 [N]        the window's position in its source's split
                                   (neuript_jax.data.record.read_split(dir, split)[i])
  source          int64 [N]        index into meta["data"]
  window_start    int64 [N]        first sample of the window in its recording
  window_start_s  float64 [N]      the same in seconds
  channel_names   str [D]          the data's channels (model input order)
  map_blocks      int64 [c_layers + 1]   encoder output index of each feature map
  groups          int64 [n_groups, D]    1 where channel d is in lobe group g
  meta            str (JSON)       checkpoint, kind (finetuned | encoder), split, data,
                                   label_names, model config

A NumPy file rather than ArrayRecord: the consumers (scikit-learn, pandas, other projects)
read it with numpy alone, and features of one split fit in memory (N x F float32).
"""

from __future__ import annotations

import json
import os

from absl import app, flags, logging

from neuript_jax import host_memory


def is_finetuned(checkpoint: str) -> bool:
  """True for a fine-tuning workdir or step folder (finetune_config.json in its workdir)."""
  from launch.evaluate import find_run
  from neuript_jax.train import finetune
  if checkpoint.endswith((".pth", ".pt", ".npz")):
    return False
  try:
    workdir, _ = find_run(checkpoint)
  except FileNotFoundError:
    return False
  return os.path.exists(os.path.join(workdir, finetune.RUN_CONFIG))


def load_encoder(checkpoint: str, config=None):
  """(model_cfg, stage-2 params, training data config dict, kind) for any --checkpoint.

  kind "finetuned": the run's own model and head; "encoder": `config.model` with the encoder
  of a pretraining checkpoint or reference state_dict and a zero head."""
  from neuript_jax.configs.common import to_model_config
  from neuript_jax.evaluation import embeddings
  from neuript_jax.train import finetune
  if is_finetuned(checkpoint):
    from launch.evaluate import load_finetuned
    model_cfg, params, run_cfg, _ = load_finetuned(checkpoint)
    return model_cfg, params, run_cfg["config"]["data"], "finetuned"
  if not (checkpoint.endswith((".pth", ".pt", ".npz")) or os.path.isdir(checkpoint)):
    raise FileNotFoundError(f"--checkpoint={checkpoint}: neither a checkpoint folder nor a "
                            ".pth/.pt/.npz file")
  if config is None:
    from neuript_jax.configs import finetune as finetune_config
    config = finetune_config.get_config()
  model_cfg = to_model_config(config.model)
  encoder = finetune.load_encoder_params(checkpoint, model_cfg, finetune.param_shapes(model_cfg))
  return model_cfg, embeddings.with_blank_head(encoder, model_cfg), config.data.to_dict(), \
      "encoder"


def embed_splits(checkpoint: str, data, splits, config=None, batch_size: int = 64,
                 window_len="config", blocks: bool = False) -> dict:
  """{split: the arrays of the output file (module docstring)} for each of `splits` of `data`;
  the checkpoint is loaded and the feature function compiled once."""
  import jax
  import numpy as np
  from launch.evaluate import check_data_fits, split_data_config
  from neuript_jax.evaluation import embeddings
  from neuript_jax.model.heads import group_matrix
  from neuript_jax.train import finetune
  from neuript_jax.train import mesh as mesh_lib

  model_cfg, params, trained, kind = load_encoder(checkpoint, config)
  mesh = mesh_lib.make_mesh([-1, 1, 1, 1])
  params = jax.device_put(params, mesh_lib.replicated(mesh))
  fn = jax.jit(embeddings.make_feature_fn(model_cfg, blocks))
  results = {}
  for split in splits:
    data_cfg = split_data_config(data, split, batch_size, trained, window_len)
    summary = check_data_fits(data_cfg, model_cfg)
    out = embeddings.extract_split(fn, params, data_cfg, mesh, batch_size)
    names = summary["sources"][0].get("channel_names") or list(model_cfg.channel_names)
    out["channel_names"] = np.asarray(names, dtype=str)
    out["map_blocks"] = np.asarray(embeddings.map_blocks(model_cfg), np.int64)
    out["groups"] = (group_matrix(model_cfg.iilp_groups(), model_cfg.data_dim) > 0).astype(
        np.int64)
    out["meta"] = np.asarray(json.dumps({
        "checkpoint": os.path.abspath(checkpoint), "kind": kind, "split": split,
        "data": [os.path.abspath(p) for p in data],
        "label_names": finetune.label_names(data_cfg), "model": model_cfg.to_dict()},
        default=str))
    logging.info("%s %s: %d windows x %d features", checkpoint, split, *out["features"].shape)
    results[split] = out
  return results


def save(path: str, arrays: dict) -> str:
  """Write the arrays to `path` (.npz, uncompressed; the folder is created)."""
  import numpy as np
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp.npz"
  np.savez(tmp, **arrays)
  os.replace(tmp, path)
  return path


def _define_flags():
  """Flags are defined only when run as a program (launch.probe imports this module)."""
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", "neuript_jax/configs/finetune.py",
                                  "model (and data.alaw/window_len) for an encoder-only "
                                  "--checkpoint; ignored for a fine-tuning workdir")
  flags.DEFINE_string("checkpoint", None, "fine-tuning workdir/step folder, pretraining "
                      "workdir/step folder, or reference .pth/.pt/.npz", required=True)
  flags.DEFINE_list("data", None, "data_prep output folder(s)", required=True)
  flags.DEFINE_string("split", "test", "split to export")
  flags.DEFINE_string("output", None, ".npz file to write", required=True)
  flags.DEFINE_bool("blocks", False, "also export every encoder output map (block_<l>)")
  flags.DEFINE_integer("batch_size", 64, "batch size (last batch padded)")
  flags.DEFINE_string("window_len", "config", "'config', 'none' or an integer")


def main(argv):
  del argv
  f = flags.FLAGS
  out = embed_splits(f.checkpoint, f.data, [f.split], f.config, f.batch_size, f.window_len,
                     f.blocks)[f.split]
  save(f.output, out)
  logging.info("wrote %s: %d windows x %d features%s", f.output, *out["features"].shape,
               f", {sum(k.startswith('block_') for k in out)} block maps" if f.blocks else "")
  print(json.dumps({"output": f.output, "n": int(out["features"].shape[0]),
                    "features": int(out["features"].shape[1])}))


if __name__ == "__main__":
  host_memory.reexec_with_hugepages()
  _define_flags()
  app.run(main)
