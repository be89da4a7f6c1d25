"""Weight conversion between the reference PyTorch state_dict and Flax params, both ways.

Reference names are the authors' module paths (`encoder.encode_blocks.2.encode_layers.0.MLP1.
experts.1.net.0.weight`); Linear weights are [out, in] there and [in, out] (kernel) here.
Routed experts are stacked along a leading expert axis here. Positional-encoding buffers
(`*.temporal_PE.pe_t`, `*.spacial_PE.pe_3d`, `dec_in`) are not parameters: they are skipped on
import (rebuilt from geometry, as the reference does at fine-tuning) and rebuilt on export.

    params = from_reference(state_dict, cfg, stage=2)    # numpy arrays -> Flax param tree
    sd = to_reference(params, cfg, stage=2)              # Flax -> {name: np.ndarray}
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import flax
import jax
import numpy as np

from neuript_jax.model import ModelConfig, init_params
from neuript_jax.model.embedding import spatial_pe, temporal_pe

PE_BUFFER = re.compile(r"(\.temporal_PE\.pe_t|\.spacial_PE\.pe_3d)$|^dec_in$")
DECODER_PE_LEN = 5000  # the reference's default TSA out_len, used by decoder layers


class ConversionError(ValueError):
  """Missing, unexpected or mis-shaped tensors; the message lists every one."""


def _ref_prefix(path: tuple[str, ...]) -> str:
  """Flax module path -> reference module path (`encode_blocks_2` -> `encode_blocks.2`,
  SwiGLU `wi`/`wo` -> `0`/`2`, with `net.` inside experts)."""
  out = []
  for i, part in enumerate(path):
    m = re.fullmatch(r"(encode_blocks|encode_layers|decode_layers)_(\d+)", part)
    if m:
      out += [m.group(1), m.group(2)]
    elif part in ("wi", "wo"):
      if i > 0 and path[i - 1] == "shared_expert":
        out.append("net")
      out.append("0" if part == "wi" else "2")
    else:
      out.append(part)
  return ".".join(out)


def _entries(template: Mapping[str, Any]):
  """Yield (flax path, ref name, expert index or None, kind) for every leaf of a param tree.

  kind: "linear" (transpose), "plain" (copy).
  """
  flat = flax.traverse_util.flatten_dict(template)
  for path, leaf in sorted(flat.items()):
    *mod, name = path
    if name in ("wi_kernel", "wi_bias", "wo_kernel", "wo_bias"):
      which, what = name.split("_")
      for e in range(leaf.shape[0]):
        ref = (f"{_ref_prefix(tuple(mod))}.{e}.net.{'0' if which == 'wi' else '2'}."
               f"{'weight' if what == 'kernel' else 'bias'}")
        yield path, ref, e, "linear" if what == "kernel" else "plain"
      continue
    prefix = _ref_prefix(tuple(mod))
    if name == "kernel":
      yield path, f"{prefix}.weight", None, "linear"
    elif name == "scale":
      yield path, f"{prefix}.weight", None, "plain"
    elif name == "bias":
      yield path, f"{prefix}.bias", None, "plain"
    else:  # a bare parameter such as mask_token
      yield path, ".".join(path), None, "plain"


def param_template(cfg: ModelConfig, stage: int):
  """Shapes of the Flax params (no computation)."""
  return jax.eval_shape(lambda: init_params(cfg, stage, jax.random.key(0)))


def from_reference(state_dict: Mapping[str, Any], cfg: ModelConfig, stage: int):
  """Reference state_dict (arrays or torch tensors) -> Flax param tree of float32 numpy.

  Raises ConversionError listing missing keys, unexpected keys and shape mismatches.
  """
  sd = {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
        for k, v in state_dict.items()}
  template = flax.traverse_util.flatten_dict(param_template(cfg, stage))
  leaves = {path: np.zeros(s.shape, np.float32) for path, s in template.items()}
  expected, missing, bad_shape = set(), [], []
  for path, ref, e, kind in _entries(flax.traverse_util.unflatten_dict(template)):
    expected.add(ref)
    if ref not in sd:
      missing.append(ref)
      continue
    value = sd[ref].astype(np.float32)
    if kind == "linear":
      value = value.T
    target = leaves[path] if e is None else leaves[path][e]
    if value.shape != target.shape:
      want = target.shape[::-1] if kind == "linear" else target.shape
      bad_shape.append(f"{ref}: file {sd[ref].shape}, model {tuple(want)}")
      continue
    if e is None:
      leaves[path] = value
    else:
      leaves[path][e] = value
  unexpected = sorted(k for k in sd if k not in expected and not PE_BUFFER.search(k))
  if missing or unexpected or bad_shape:
    raise ConversionError("reference state_dict does not fit the model config:\n  "
                          + mismatch_report(missing, unexpected, bad_shape))
  return flax.traverse_util.unflatten_dict(leaves)


def pe_buffers(cfg: ModelConfig, stage: int, stage1_batch_size: int | None = None
               ) -> dict[str, np.ndarray]:
  """The reference's PE buffers for this config, rebuilt from geometry (names as in its
  state_dict). `dec_in` (stage 1) needs the reference's fixed batch size."""
  pe_t = temporal_pe(cfg.n_tokens_time, cfg.d_model)[None]
  pe_s = spatial_pe(cfg.pos3d(), cfg.d_model)[None]
  out = {}
  for i in range(len(cfg.merge_layers)):
    p = f"encoder.encode_blocks.{i}.encode_layers.0"
    out[f"{p}.temporal_PE.pe_t"] = pe_t
    out[f"{p}.spacial_PE.pe_3d"] = pe_s
  if stage == 1:
    dec_t = temporal_pe(DECODER_PE_LEN, cfg.d_model)[None]
    for i in range(len(cfg.dec_expert)):
      p = f"decoder.decode_layers.{i}.self_attention"
      out[f"{p}.temporal_PE.pe_t"] = dec_t
      out[f"{p}.spacial_PE.pe_3d"] = pe_s
    if stage1_batch_size:
      dec = pe_t[0][None, :, :] + pe_s[0][:, None, :]
      out["dec_in"] = np.broadcast_to(dec[None], (stage1_batch_size,) + dec.shape).copy()
  return out


def to_reference(params, cfg: ModelConfig, stage: int, with_buffers: bool = True,
                 stage1_batch_size: int | None = None) -> dict[str, np.ndarray]:
  """Flax params -> reference-named {name: float32 array} (plus rebuilt PE buffers)."""
  params = flax.core.unfreeze(params) if hasattr(params, "unfreeze") else params
  flat = flax.traverse_util.flatten_dict(params)
  out = {}
  for path, ref, e, kind in _entries(params):
    value = np.asarray(flat[path], np.float32)
    if e is not None:
      value = value[e]
    out[ref] = np.ascontiguousarray(value.T if kind == "linear" else value)
  if with_buffers:
    out.update(pe_buffers(cfg, stage, stage1_batch_size))
  return out


# -- files ---------------------------------------------------------------------------------------

def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """Read a reference state_dict from `.npz` (arrays named as in the reference, optionally
  prefixed `param/` as in the golden files) or `.pth`/`.pt` (needs torch)."""
  if path.endswith(".npz"):
    with np.load(path) as z:
      keys = [k for k in z.files if k.startswith("param/")] or list(z.files)
      return {k.removeprefix("param/"): z[k] for k in keys}
  if path.endswith((".pth", ".pt")):
    try:
      import torch
    except ImportError as e:
      raise ImportError(f"reading {path} needs torch; or convert it to .npz first") from e
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"],
                                                                      Mapping):
      obj = obj["state_dict"]
    return {k.removeprefix("module."): v.float().numpy() for k, v in obj.items()}
  raise ValueError(f"{path}: expected a .npz, .pth or .pt file")


def save_state_dict(state_dict: Mapping[str, np.ndarray], path: str) -> None:
  """Write reference-named arrays as `.npz`, or `.pth`/`.pt` (needs torch)."""
  if path.endswith(".npz"):
    np.savez(path, **state_dict)
  elif path.endswith((".pth", ".pt")):
    import torch
    torch.save({k: torch.from_numpy(np.array(v, np.float32)) for k, v in state_dict.items()},
               path)
  else:
    raise ValueError(f"{path}: expected a .npz, .pth or .pt file")


def mismatch_report(missing, unexpected, bad_shape) -> str:
  """The lines of a tensor-mismatch error: "missing N: ...", "unexpected N: ...", "shape
  mismatch N: ..." (the non-empty ones), joined for an indented error message."""
  lines = []
  if missing:
    lines.append(f"missing {len(missing)}: " + ", ".join(missing))
  if unexpected:
    lines.append(f"unexpected {len(unexpected)}: " + ", ".join(unexpected))
  if bad_shape:
    lines.append(f"shape mismatch {len(bad_shape)}: " + "; ".join(bad_shape))
  return "\n  ".join(lines)
