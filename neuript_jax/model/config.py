"""ModelConfig: every architectural setting of NeurIPT in one frozen (hashable) dataclass.

Field names follow the reference's arguments (REFERENCE.md §2.1) so a golden file's `config`
maps onto it directly (`ModelConfig.from_dict`). Presets live in `neuript_jax/configs`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np

from neuript_jax import geometry
from neuript_jax.model.attention import ATTENTION_IMPLS, resolve_attention_impl
from neuript_jax.model.moe import MOE_DISPATCHES, resolve_moe_dispatch
from neuript_jax.model.quirks import Quirks

# jax.checkpoint policies per TSA layer (mapped to policies in model/tsa.py).
REMAT_OPTIONS = ("none", "block", "layer_ordered", "nothing_saveable", "dots_saveable",
                 "dots_with_no_batch_dims_saveable")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """NeurIPT hyper-parameters.

  Shapes: input x is [B, T, D] (time first, A-law companded µV); D = len(channels).
  `data` is a reference dataset key (TUEV, BCICIV-2A, ...) that fixes the channel list and
  montage; `channels`/`montage` override it for montages the reference does not know.
  """
  d_model: int = 768
  n_heads: int = 8
  d_ff: int = 768                 # dense SwiGLU hidden width
  hidden_dim: int = 512           # routed expert SwiGLU hidden width
  hidden_dim_shared: int = 768    # shared expert SwiGLU hidden width
  top_k: float = 0.5              # k = ceil(E * top_k)
  noise_std: float = 0.001        # router noise (training only)
  w_importance: float = 0.008
  dropout: float = 0.1
  T: int = 256                    # samples per window (64 Hz)
  seg_len: int = 1                # points per token (1 = point-level tokens)
  merge_layers: tuple[int, ...] = (1, 4, 1, 2, 1, 2)
  enc_expert: tuple[int, ...] = (0, 0, 2, 4, 4, 6)
  dec_expert: tuple[int, ...] = (0,) * 7
  cross_expert: tuple[int, ...] = (0,) * 7
  c_layers: int = 6               # IILP uses enc_out[0] and the last c_layers block outputs
  # IILP partition: Functional/Hemispheres/Sagittal/Coronal (the reference's tables), Auto
  # (lobes from electrode names/positions, geometry.auto_lobe_groups), Mean or None pooling.
  # Functional with custom `channels` (no reference table for them) means Auto.
  part: str = "Functional"
  num_classes: int = 6            # <= 2 -> one logit
  data: str | None = "Stage1"     # reference dataset key
  channels: tuple[str, ...] | None = None  # overrides `data`: monopolar or "A-B" names
  montage: str = "standard_1020"  # used with `channels`
  quirks: Quirks = Quirks()
  dtype: str = "float32"          # compute dtype (params stay float32)
  attention: str = "auto"         # "auto" | "xla" | "dot_product_attention" | "fused" |
                                  # "pallas" (model/attention.py; "auto": Pallas on TPU, cuDNN
                                  # on GPU, "fused" on CPU; see for_platform)
  moe_dispatch: str = "auto"      # dropless PMoE: "auto" | "buffer" | "ragged" (model/moe.py)
  moe_groups: int = 0             # PMoE routing groups per batch: 0 = one per batch shard of
                                  # the mesh (numbers depend on it); N > 0 = N groups of B / N
                                  # windows on any mesh (model/moe.py)
  remat: str = "none"             # "none" or a jax.checkpoint policy per TSA layer: "block"
                                  # (= "nothing_saveable"), "dots_saveable",
                                  # "dots_with_no_batch_dims_saveable" (model/tsa.py);
                                  # "layer_ordered": encoder TSA layers and whole decoder
                                  # layers rematerialised, each recompute after its own
                                  # cotangent and one at a time (model/decoder.py)

  def __post_init__(self):
    if len(self.merge_layers) != len(self.enc_expert):
      raise ValueError(f"merge_layers {self.merge_layers} and enc_expert {self.enc_expert} "
                       "must have one entry per encoder block")
    n_dec = len(self.merge_layers) + 1
    for name in ("dec_expert", "cross_expert"):
      if len(getattr(self, name)) != n_dec:
        raise ValueError(f"{name} needs {n_dec} entries (one per decoder layer), "
                         f"got {getattr(self, name)}")
    if self.d_model % self.n_heads:
      raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
    if self.T % self.seg_len:
      raise ValueError(f"T {self.T} is not divisible by seg_len {self.seg_len}")
    if self.attention not in ATTENTION_IMPLS:
      raise ValueError(f"attention must be one of {ATTENTION_IMPLS}, got {self.attention!r}")
    if self.moe_dispatch not in MOE_DISPATCHES:
      raise ValueError(f"moe_dispatch must be one of {MOE_DISPATCHES}, got {self.moe_dispatch!r}")
    if not isinstance(self.moe_groups, int) or self.moe_groups < 0:
      raise ValueError(f"moe_groups must be an int >= 0 (0: one routing group per batch shard "
                       f"of the mesh), got {self.moe_groups!r}")
    if self.remat not in REMAT_OPTIONS:
      raise ValueError(f"remat must be one of {REMAT_OPTIONS}, got {self.remat!r}")
    if self.data is None and self.channels is None:
      raise ValueError("set either `data` (a reference dataset key) or `channels`")

  # -- derived ---------------------------------------------------------------------------------
  @property
  def channel_names(self) -> tuple[str, ...]:
    if self.channels is not None:
      return tuple(self.channels)
    return geometry.dataset_channels(self.data, fix_typo=not self.quirks.tcp_fp2_f3_typo)[0]

  @property
  def channel_montage(self) -> str:
    if self.channels is not None:
      return self.montage
    return geometry.dataset_channels(self.data)[1]

  @property
  def data_dim(self) -> int:
    return len(self.channel_names)

  @property
  def n_tokens_time(self) -> int:
    """Embedding length L0 = T / seg_len."""
    return self.T // self.seg_len

  def block_lengths(self) -> list[int]:
    """Time length after each encoder block (SegMerging pads up: ceil(L / m))."""
    out, length = [], self.n_tokens_time
    for m in self.merge_layers:
      length = math.ceil(length / m)
      out.append(length)
    return out

  def pos3d(self) -> np.ndarray:
    """Integer 3D coordinates [D, 3] in 0..49 for the spatial PE."""
    return geometry.quantize_positions(
        geometry.electrode_positions(self.channel_names, self.channel_montage))

  def iilp_groups(self) -> tuple[tuple[int, ...], ...]:
    """The IILP head's channel groups (stage 2); checks c_layers against the block count."""
    if not 0 <= self.c_layers <= len(self.merge_layers):
      raise ValueError(f"c_layers {self.c_layers} must be in 0..{len(self.merge_layers)} "
                       f"(the encoder has {len(self.merge_layers)} blocks)")
    if self.part == "Auto" or (self.part == "Functional" and self.channels is not None):
      names = self.channel_names
      return geometry.auto_lobe_groups(
          names, geometry.electrode_positions(names, self.channel_montage))
    return geometry.lobe_groups(self.part, self.data_dim, self.data)

  def n_logits(self) -> int:
    return self.num_classes if self.num_classes > 2 else 1

  def for_platform(self, platform: str) -> "ModelConfig":
    """This config with "auto" attention and MoE dispatch resolved for the devices the step is
    compiled for (e.g. mesh.devices.flat[0].platform: "tpu", "gpu", "cpu"), not the host."""
    return self.replace(attention=resolve_attention_impl(self.attention, platform),
                        moe_dispatch=resolve_moe_dispatch(self.moe_dispatch, platform))

  def replace(self, **kw) -> "ModelConfig":
    return dataclasses.replace(self, **kw)

  # -- (de)serialisation ------------------------------------------------------------------------
  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "ModelConfig":
    """Build from a reference-style dict (a golden `config`, or a ConfigDict.to_dict()).

    Unknown keys are ignored (e.g. `mask_ratio`, `data_dim` which must agree with the channel
    list); a mismatching `data_dim` is an error.
    """
    fields = {f.name for f in dataclasses.fields(cls)}
    kw = {}
    for k, v in dict(d).items():
      if k not in fields:
        continue
      if k == "quirks" and isinstance(v, Mapping):
        v = Quirks(**dict(v))
      elif isinstance(v, list):
        v = tuple(v)
      kw[k] = v
    # Absent decoder expert lists mean "all zero", one entry per decoder layer (blocks + 1),
    # also when the encoder does not have the default 6 blocks.
    if "merge_layers" in kw:
      for name in ("dec_expert", "cross_expert"):
        kw.setdefault(name, (0,) * (len(kw["merge_layers"]) + 1))
    cfg = cls(**kw)
    if "data_dim" in d and int(d["data_dim"]) != cfg.data_dim:
      raise ValueError(f"config data_dim {d['data_dim']} != {cfg.data_dim} channels of "
                       f"{cfg.data or cfg.channels}")
    return cfg

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["data_dim"] = self.data_dim
    return d
