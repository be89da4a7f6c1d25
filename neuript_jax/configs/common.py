"""Shared pieces of the ml_collections presets: the model block (derived from ModelConfig),
the model sizes the presets pick from, and the preset-argument parser."""

from __future__ import annotations

import dataclasses

import ml_collections

from neuript_jax.model.config import ModelConfig
from neuript_jax.model.quirks import Quirks

# Model sizes by preset name (REFERENCE.md §2.1 / Table 13 for "paper"). Every other field
# keeps its ModelConfig default (merges (1,4,1,2,1,2), experts (0,0,2,4,4,6), ...).
SIZES = {
    "tiny": dict(d_model=32, n_heads=4, d_ff=32, hidden_dim=32, hidden_dim_shared=32),
    "small": dict(d_model=192, n_heads=8, d_ff=192, hidden_dim=128, hidden_dim_shared=192),
    "paper": dict(d_model=768, n_heads=8, d_ff=768, hidden_dim=512, hidden_dim_shared=768),
}


def size_arg(arg: str | None, default: str = "tiny") -> str:
  """The preset argument of `--config=FILE:ARG` (None/"" -> default), checked."""
  arg = (arg or default).strip()
  if arg not in SIZES:
    raise ValueError(f"unknown preset {arg!r}: choose one of {', '.join(SIZES)} "
                     "(e.g. --config=neuript_jax/configs/pretrain.py:paper)")
  return arg


def _config_value(field: dataclasses.Field, value):
  """A ModelConfig default as a ConfigDict value (tuples stay tuples; None gets a typed
  placeholder so that it can be overridden from the command line)."""
  if value is None:
    return ml_collections.FieldReference(None, field_type=tuple if field.name == "channels"
                                         else str)
  return tuple(value) if isinstance(value, (list, tuple)) else value


def quirks_config(**overrides) -> ml_collections.ConfigDict:
  """Reference-compatibility switches (defaults = the authors' code; see docs/QUIRKS.md)."""
  q = ml_collections.ConfigDict(dataclasses.asdict(Quirks()))
  q.update(overrides)
  return q


def model_config(**fields) -> ml_collections.ConfigDict:
  """A `model` block: every ModelConfig field with its default, overridable as
  --config.model.<field>=...; `fields` replace defaults (a `size` key picks SIZES[size])."""
  defaults = ModelConfig()
  block = {}
  for f in dataclasses.fields(ModelConfig):
    if f.name == "quirks":
      block[f.name] = quirks_config()
    else:
      block[f.name] = _config_value(f, getattr(defaults, f.name))
  m = ml_collections.ConfigDict(block)
  size = fields.pop("size", None)
  if size is not None:
    m.update(SIZES[size_arg(size)])
  m.update(fields)
  return m


def to_model_config(model: ml_collections.ConfigDict) -> ModelConfig:
  """ConfigDict `model` block -> frozen ModelConfig."""
  return ModelConfig.from_dict(model.to_dict())
