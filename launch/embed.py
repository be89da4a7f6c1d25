r"""Export per-window IILP features (and, on request, per-block encoder maps) of a prepared split.

  python -m launch.embed --checkpoint=runs/finetune_demo --data=SHARD_DIR --split=test \
      --output=test_features.npz [--blocks] [--batch_size=64] [--window_len=config]
  python -m launch.embed --checkpoint=runs/pretrain_demo --data=SHARD_DIR --split=train \
      --output=train_features.npz [--config=neuript_jax/configs/finetune.py \
      --config.model.c_layers=6 --config.model.part=Functional ...]

--checkpoint: a fine-tuning workdir or step folder (neuript_jax.evaluation.runs.find_run; the model and the
A-law / window settings come from its finetune_config.json, --config is ignored), or an
encoder only: a pretraining workdir or step folder, or a reference .pth/.pt/.npz state_dict
(neuript_jax.evaluation.encoders.load_encoder_params). For an encoder only, --config (default
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

from absl import app, flags, logging

from launch import common
from neuript_jax import host_memory

common.define_encoder_config_flag()
common.define_eval_flags("fine-tuning workdir/step folder, pretraining workdir/step folder, "
                         "or reference .pth/.pt/.npz")
SPLIT = flags.DEFINE_string("split", "test", "split to export")
OUTPUT = flags.DEFINE_string("output", None, ".npz file to write", required=True)
BLOCKS = flags.DEFINE_bool("blocks", False, "also export every encoder output map (block_<l>)")


def main(argv):
  del argv
  common.start()
  from neuript_jax.evaluation import embeddings
  f = flags.FLAGS
  out = embeddings.embed_splits(f.checkpoint, f.data, [SPLIT.value], f.config, f.batch_size,
                                f.window_len, BLOCKS.value)[SPLIT.value]
  embeddings.save(OUTPUT.value, out)
  logging.info("wrote %s: %d windows x %d features%s", OUTPUT.value, *out["features"].shape,
               f", {sum(k.startswith('block_') for k in out)} block maps"
               if BLOCKS.value else "")
  print(json.dumps({"output": OUTPUT.value, "n": int(out["features"].shape[0]),
                    "features": int(out["features"].shape[1])}))


if __name__ == "__main__":
  host_memory.reexec_with_hugepages()
  app.run(main)
