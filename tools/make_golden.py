r"""Write a golden `.npz` from the authors' PyTorch NeurIPT code (format: golden/README.md).

  python -m tools.make_golden --torch_ref=/path/to/NeurIPT --out=FILE.npz --stage=2 \
      --config='{"d_model": 48, "n_heads": 4, ..., "data": "TUEV", "data_dim": 20, "T": 64}' \
      --batch=3 --seed=0

For researchers who have the reference source (the folder holding `cross_models/` and
`utils/`); nothing in `neuript_jax` imports this tool. It needs torch, einops, seaborn and mne
importable. The reference is imported from --torch_ref (sys.path insert), built with an args
namespace filled from --config, seeded, initialised with PyTorch's default init, and run on a
random A-law-compressed input:

  * stage 2: eval forward (`out/logits`, `out/enc_out_0..N`), then a train-mode pass with
    dropout 0 and gate noise 0 (`train/logits`, `train/aux`, `train/task_loss` = CE, or
    BCE-with-logits on logit 0 for binary, `train/loss = task + 0.8 * aux`, `train/grad/*`).
  * stage 1: per-block masks `in/mask_l` (exactly round(T * mask_ratio) masked points per
    (sample, channel), random points or contiguous runs (--mask_mode); a merged segment is
    masked when any point in it is; padding repeats the last segments as SegMerging does), passed as both mask_info and re_mask_info; `out/pred`,
    `train/pred`, `train/rec_loss` (mean |pred - x| at the masked points), `train/aux`,
    `train/loss`, `train/grad/*`.
"""

from __future__ import annotations

import json
import os

from absl import app, flags
import numpy as np

from neuript_jax.bench import torch_reference

TORCH_REF = flags.DEFINE_string("torch_ref", None, "folder of the reference code "
                                "(holds cross_models/ and utils/)")
OUT = flags.DEFINE_string("out", None, "output .npz path")
STAGE = flags.DEFINE_integer("stage", 2, "1 (pretraining model) or 2 (fine-tuning model)")
CONFIG = flags.DEFINE_string("config", "{}", "JSON config with the golden's keys")
BATCH = flags.DEFINE_integer("batch", 3, "batch size")
SEED = flags.DEFINE_integer("seed", 0, "torch / numpy seed")
MASK_MODE = flags.DEFINE_enum("mask_mode", "random", ["random", "runs"],
                              "stage 1 point mask: 'random' points, or contiguous 'runs' of "
                              "2-8 points (fewer coarse segments masked)")

DEFAULTS = {
    "d_model": 48, "n_heads": 4, "d_ff": 48, "hidden_dim": 32, "hidden_dim_shared": 48,
    "top_k": 0.5, "noise_std": 0.001, "w_importance": 0.008, "dropout": 0.0, "c_layers": 6,
    "part": "Functional", "data": "TUEV", "data_dim": 20, "T": 64,
    "merge_layers": [1, 4, 1, 2, 1, 2], "enc_expert": [0, 0, 2, 4, 4, 6], "num_classes": 6,
}
STAGE1_DEFAULTS = {"mask_ratio": 0.5}
KEY_ORDER = list(DEFAULTS) + ["mask_ratio", "dec_expert", "cross_expert"]


def full_config(user: dict, stage: int) -> dict:
  cfg = dict(DEFAULTS)
  if stage == 1:
    cfg.update(STAGE1_DEFAULTS)
    cfg.pop("num_classes")
  cfg.update(user)
  if stage != 1:   # dec_expert / cross_expert stay absent unless given (absent = all zero)
    cfg.pop("mask_ratio", None)
  ordered = {k: cfg[k] for k in KEY_ORDER if k in cfg}
  ordered.update({k: v for k, v in cfg.items() if k not in ordered})
  return ordered


def a_law(x, A=0.25):
  ax = np.abs(x)
  y = np.where(ax < 1 / A, A * ax / (np.e + np.log(A)),
               (1 + np.log(np.maximum(A * ax, 1e-30))) / (np.e + np.log(A)))
  return np.sign(x) * y


def block_masks(rng, batch, dims, T, ratio, merges, mode="random"):
  """Point mask [B, D, T] with exactly round(T*ratio) True per row, pooled per block (any)."""
  k = int(round(T * ratio))
  point = np.zeros((batch, dims, T), bool)
  for b in range(batch):
    for d in range(dims):
      if mode == "random":
        point[b, d, rng.permutation(T)[:k]] = True
        continue
      row = point[b, d]
      while row.sum() < k:
        start, length = int(rng.integers(T)), int(rng.integers(2, 9))
        for t in range(start, min(start + length, T)):
          if row.sum() < k:
            row[t] = True
  out, cur = [], point
  for m in merges:
    if m > 1:
      pad = (-cur.shape[-1]) % m
      if pad:
        cur = np.concatenate([cur, cur[..., -pad:]], axis=-1)
      cur = cur.reshape(batch, dims, -1, m).any(-1)
    out.append(cur.copy())
  return out


def main(argv):
  del argv
  if not TORCH_REF.value or not OUT.value:
    raise app.UsageError("give --torch_ref and --out")
  stage = STAGE.value
  if stage not in (1, 2):
    raise app.UsageError("--stage must be 1 or 2")
  ref = torch_reference.import_reference(TORCH_REF.value)
  import torch

  cfg = full_config(json.loads(CONFIG.value), stage)
  batch, T, D = BATCH.value, cfg["T"], cfg["data_dim"]
  torch.manual_seed(SEED.value)
  rng = np.random.default_rng(SEED.value)
  model = torch_reference.build_model(ref, cfg, batch, stage)

  out = {"config": np.array(json.dumps(cfg))}
  for name, t in model.state_dict().items():
    out[f"param/{name}"] = t.detach().cpu().numpy().astype(np.float32)
  x_np = a_law(rng.normal(0.0, 30.0, size=(batch, T, D))).astype(np.float32)
  out["in/x"] = x_np
  x = torch.from_numpy(x_np)

  if stage == 2:
    n_cls = cfg["num_classes"]
    labels_np = rng.integers(0, max(n_cls, 2), size=(batch,)).astype(np.int64)
    out["in/labels"] = labels_np
    labels = torch.from_numpy(labels_np)
    captured = {}
    hook = model.encoder.register_forward_hook(
        lambda mod, inp, res: captured.__setitem__("enc", res[0]))
    model.eval()
    with torch.no_grad():
      logits, _ = model(x.clone())
    hook.remove()
    out["out/logits"] = logits.numpy()
    for i, fmap in enumerate(captured["enc"]):
      out[f"out/enc_out_{i}"] = fmap.detach().numpy()
  else:
    masks_np = block_masks(rng, batch, D, T, cfg["mask_ratio"], cfg["merge_layers"],
                           MASK_MODE.value)
    for i, m in enumerate(masks_np):
      out[f"in/mask_{i}"] = m
    masks = [torch.from_numpy(m) for m in masks_np]
    model.eval()
    with torch.no_grad():
      pred, _ = model(x.clone(), masks, masks)
    out["out/pred"] = pred.numpy()

  # Train mode, deterministic: dropout 0, gate noise 0 (the aux loss is still computed).
  model.train()
  for mod in model.modules():
    if isinstance(mod, ref.MoE):
      mod.noise_std = 0.0
    elif isinstance(mod, ref.FlashAttentionLayer):
      mod.dropout = 0.0
    elif isinstance(mod, torch.nn.Dropout):
      mod.p = 0.0
  model.zero_grad()
  task, aux, loss, train_out = torch_reference.train_loss(
      model, stage, x.clone(), labels if stage == 2 else None, None if stage == 2 else masks)
  if stage == 2:
    out["train/logits"] = train_out.detach().numpy()
    out["train/task_loss"] = task.detach().numpy()
  else:
    out["train/pred"] = train_out.detach().numpy()
    out["train/rec_loss"] = task.detach().numpy()
  loss.backward()
  out["train/aux"] = aux.detach().numpy()
  out["train/loss"] = loss.detach().numpy()
  for name, p in model.named_parameters():
    g = p.grad if p.grad is not None else torch.zeros_like(p)
    out[f"train/grad/{name}"] = g.detach().numpy().astype(np.float32)

  out = {k: (np.asarray(v, np.float32) if np.asarray(v).dtype == np.float64 else np.asarray(v))
         for k, v in out.items()}
  os.makedirs(os.path.dirname(os.path.abspath(OUT.value)), exist_ok=True)
  np.savez(OUT.value, **out)
  print(f"wrote {OUT.value}: {len(out)} arrays, stage {stage}, batch {batch}, "
        f"loss {loss.item():.6f}, aux {aux.item():.6g}")


if __name__ == "__main__":
  app.run(main)
