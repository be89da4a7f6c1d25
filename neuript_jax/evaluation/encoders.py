"""Encoder weights for fine-tuning, embeddings and probes: which params are the encoder, and
loading them from an orbax checkpoint (stage 1 or 2) or a reference state_dict.

Stage-2 params: {"enc_value_embedding", "encoder", "classification_head"}; `init_from` loads
the first two, the head is new. Positional encodings are rebuilt from the target montage,
never loaded.
"""

from __future__ import annotations

import flax
import jax
import numpy as np

from neuript_jax import convert
from neuript_jax.train import checkpoint as ckpt_lib
from neuript_jax.train.step import HEAD_KEY

ENCODER_KEYS = ("enc_value_embedding", "encoder")   # what init_from loads; the head is new


class InitError(ValueError):
  """init_from weights do not fit the fine-tuning model; the message names the tensors."""


def _flat_shapes(tree) -> dict:
  return {"/".join(k): tuple(np.shape(v)) for k, v in
          flax.traverse_util.flatten_dict(flax.core.unfreeze(tree)).items()}


def param_shapes(model_cfg):
  """Stage-2 param shapes (ShapeDtypeStructs; nothing is computed)."""
  return convert.param_template(model_cfg, 2)


def encoder_subtrees(params) -> dict:
  params = flax.core.unfreeze(params)
  return {k: params[k] for k in ENCODER_KEYS if k in params}


def check_encoder_fit(loaded: dict, template: dict, source: str) -> None:
  """Raise InitError naming every missing, unexpected or mis-shaped encoder tensor."""
  want = _flat_shapes(encoder_subtrees(template))
  got = _flat_shapes(encoder_subtrees(loaded))
  missing = sorted(set(want) - set(got))
  unexpected = sorted(set(got) - set(want))
  shape = sorted(k for k in set(want) & set(got) if want[k] != got[k])
  if missing or unexpected or shape:
    bad = [f"{k} (checkpoint {got[k]}, model {want[k]})" for k in shape]
    raise InitError(f"init_from={source}: the encoder does not fit the model config (merge "
                    "layers, experts or sizes differ?):\n  "
                    + convert.mismatch_report(missing, unexpected, bad))


def load_encoder_params(path: str, model_cfg, template) -> dict:
  """{"enc_value_embedding": ..., "encoder": ...} from an orbax workdir/step dir (stage-1 or
  stage-2 params) or a reference state_dict file (.pth/.pt/.npz, stage 1 or 2). Positional
  encodings are rebuilt from the target montage, never loaded. `template`: stage-2 param
  shapes. Raises InitError naming the tensors that do not fit."""
  if path.endswith((".pth", ".pt", ".npz")):
    sd = convert.load_state_dict(path)
    keep = {k: v for k, v in sd.items() if k.split(".")[0] in ENCODER_KEYS}
    if not keep:
      raise InitError(f"init_from={path}: no encoder/embedding tensors (names starting with "
                      f"{' or '.join(ENCODER_KEYS)}) in the file")
    # The head is not loaded: fill its reference names from the template so that
    # from_reference checks exactly the encoder and embedding tensors.
    zeros = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, np.float32), template[HEAD_KEY])
    head = convert.to_reference({HEAD_KEY: zeros}, model_cfg, stage=2, with_buffers=False)
    try:
      params = convert.from_reference({**keep, **head}, model_cfg, stage=2)
    except convert.ConversionError as e:
      raise InitError(f"init_from={path}: {e}") from e
    return encoder_subtrees(params)
  loaded = ckpt_lib.load_params(path)
  check_encoder_fit(loaded, template, path)
  return jax.tree_util.tree_map(np.asarray, encoder_subtrees(loaded))


def with_blank_head(encoder: dict, cfg) -> dict:
  """A stage-2 param tree from encoder subtrees (load_encoder_params) with a zero head, so
  that Stage2Model can run."""
  template = param_shapes(cfg)
  head = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), template[HEAD_KEY])
  return {**encoder, HEAD_KEY: head}
