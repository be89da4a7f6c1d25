"""The authors' PyTorch NeurIPT, imported from a source path and built from a config dict.

Shared by `tools.make_golden` (golden files) and `launch.bench` (side-by-side timing). Nothing
in `neuript_jax` imports this module; it needs torch, einops, seaborn and mne importable.

Config dicts use the golden keys (`tools/README.md`): d_model, n_heads, d_ff, hidden_dim,
hidden_dim_shared, top_k, noise_std, w_importance, dropout, c_layers, part, data, data_dim, T,
merge_layers, enc_expert, num_classes (stage 2), dec_expert, cross_expert (stage 1).
"""

from __future__ import annotations

import os
import sys
import types
import warnings

from absl import app
import numpy as np

AUX_WEIGHT = 0.8
CONFIG_KEYS = ("d_model", "n_heads", "d_ff", "hidden_dim", "hidden_dim_shared", "top_k",
               "noise_std", "w_importance", "dropout", "c_layers", "part", "data", "data_dim",
               "T", "merge_layers", "enc_expert", "num_classes", "dec_expert", "cross_expert")


def import_reference(path: str) -> types.SimpleNamespace:
  """Import the reference from `path` (the folder holding cross_models/ and utils/).

  Returns a namespace with Stage_1_model, Stage_2_model, MoE, FlashAttentionLayer.
  """
  try:
    import torch  # noqa: F401
  except ImportError:
    raise app.UsageError("the PyTorch reference needs torch (pip install torch); it is not "
                         "installed")
  for mod in ("einops", "seaborn", "mne"):
    try:
      __import__(mod)
    except ImportError:
      raise app.UsageError(f"the reference code imports {mod!r}; install it to use it")
  path = os.path.abspath(path)
  if not os.path.isdir(os.path.join(path, "cross_models")):
    raise app.UsageError(f"--torch_ref {path}: no cross_models/ folder there")
  if path not in sys.path:
    sys.path.insert(0, path)
  warnings.filterwarnings("ignore", category=FutureWarning)   # MNE montage renames
  from cross_models.stage_1_model import Stage_1_model
  from cross_models.stage_2_model import Stage_2_model
  from cross_models.moe_models.primary_shared_expert import MoE
  from cross_models.attn import FlashAttentionLayer
  return types.SimpleNamespace(Stage_1_model=Stage_1_model, Stage_2_model=Stage_2_model,
                               MoE=MoE, FlashAttentionLayer=FlashAttentionLayer)


def reference_config(model_cfg) -> dict:
  """Golden-style config dict of a neuript_jax ModelConfig (same architecture)."""
  d = model_cfg.to_dict()
  out = {k: d[k] for k in CONFIG_KEYS}
  for k in ("merge_layers", "enc_expert", "dec_expert", "cross_expert"):
    out[k] = list(out[k])
  return out


def make_args(cfg: dict, batch: int, stage: int):
  """The reference's `args` namespace for a config dict."""
  a = types.SimpleNamespace(**cfg)
  a.input_dim = a.output_dim = cfg["d_model"]
  a.out_len = cfg["T"]           # seg_len = 1: one token per sample
  a.seg_len = 1
  a.batch_size_stage_1 = batch
  a.cls_only = stage == 2
  a.use_shared_expert = True
  n_dec = len(cfg["merge_layers"]) + 1
  a.dec_expert = list(cfg.get("dec_expert", [0] * n_dec))
  a.cross_expert = list(cfg.get("cross_expert", [0] * n_dec))
  return a


def build_model(ref, cfg: dict, batch: int, stage: int):
  """The reference Stage_1_model / Stage_2_model (float32, PyTorch default init under the
  current torch seed). `batch` fixes the stage-1 decoder input buffer's batch size."""
  args = make_args(cfg, batch, stage)
  common = dict(data_dim=cfg["data_dim"], out_len=cfg["T"], seg_len=1,
                merge_layers=list(cfg["merge_layers"]), args=args, d_model=cfg["d_model"],
                d_ff=cfg["d_ff"], n_heads=cfg["n_heads"], e_layers=len(cfg["merge_layers"]),
                dropout=cfg["dropout"])
  if stage == 2:
    model = ref.Stage_2_model(c_layers=cfg["c_layers"], num_classes=cfg["num_classes"],
                              part=cfg["part"], **common)
  elif stage == 1:
    model = ref.Stage_1_model(**common)
  else:
    raise ValueError(f"stage must be 1 or 2, got {stage}")
  return model.float()


def stage2_task_loss(logits, labels):
  """Cross-entropy, or BCE-with-logits on logit 0 for a one-logit (binary) head."""
  import torch.nn.functional as F
  if logits.shape[-1] == 1:
    return F.binary_cross_entropy_with_logits(logits[:, 0], labels.float())
  return F.cross_entropy(logits, labels)


def stage1_task_loss(pred, x, mask0):
  """Mean |pred - x| over the masked points; pred is the reference's [B, -1, D] selection."""
  batch, _, dims = x.shape
  target = x[mask0.transpose(1, 2)].view(batch, -1, dims)
  return (pred - target).abs().mean()


def train_loss(model, stage: int, x, labels=None, masks=None):
  """(task loss, aux, loss = task + 0.8 aux, model output) of one forward in the current mode."""
  import torch
  if stage == 2:
    out, aux = model(x)
    task = stage2_task_loss(out, labels)
  else:
    out, aux = model(x, masks, masks)
    task = stage1_task_loss(out, x, masks[0])
  aux = torch.as_tensor(aux, dtype=torch.float32)
  return task, aux, task + AUX_WEIGHT * aux, out


def make_train_step(model, stage: int, lr: float = 1e-3, clip_norm: float = 100.0):
  """step(x, labels=None, masks=None) -> loss: train-mode forward + loss + backward +
  global-norm clipping + AdamW (betas 0.9/0.98, weight decay 5e-3, as our optimizer)."""
  import torch
  opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), eps=1e-8,
                          weight_decay=5e-3)

  def step(x, labels=None, masks=None):
    model.train()
    opt.zero_grad(set_to_none=True)
    _, _, loss, _ = train_loss(model, stage, x, labels, masks)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    opt.step()
    return loss.detach()

  return step


def make_forward(model, stage: int):
  """fwd(x, masks=None) -> output: eval-mode forward without gradients."""
  import torch

  def fwd(x, masks=None):
    model.eval()
    with torch.no_grad():
      return model(x)[0] if stage == 2 else model(x, masks, masks)[0]

  return fwd


def bench_parts(torch_ref: str, model_cfg, batch_np: dict, block_masks, parts,
                dtype: str = "float32", seed: int = 0):
  """The reference's side of `neuript_jax.bench.steps.run`: ({part: call}, info).

  Same configuration, the same numpy batch and stage-1 block masks; torch uses all CPU
  threads (torch.set_num_threads(os.cpu_count())), or CUDA when available (bf16 autocast when
  dtype is bfloat16). Each call runs one train step / forward and synchronises.
  """
  import contextlib
  import torch
  ref = import_reference(torch_ref)
  torch.set_num_threads(os.cpu_count())
  torch.manual_seed(seed)
  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if dtype == "bfloat16"
              else contextlib.nullcontext())
  sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
  cfg = reference_config(model_cfg)
  batch = int(batch_np["x"].shape[0])
  x = torch.from_numpy(np.array(batch_np["x"], np.float32)).to(device)
  labels = torch.from_numpy(np.asarray(batch_np["label"], np.int64)).to(device)
  masks = (None if block_masks is None else
           [torch.from_numpy(np.array(m, bool)).to(device) for m in block_masks])
  calls = {}
  for stage in (2, 1):
    wanted = [p for p in parts if p.endswith(str(stage))]
    if not wanted:
      continue
    model = build_model(ref, cfg, batch, stage).to(device)
    step, fwd = make_train_step(model, stage), make_forward(model, stage)
    kw = {"labels": labels} if stage == 2 else {"masks": masks}
    fkw = {} if stage == 2 else {"masks": masks}

    def train_call(step=step, kw=kw):
      with autocast:
        step(x, **kw)
      sync()

    def forward_call(fwd=fwd, fkw=fkw):
      with autocast:
        fwd(x, **fkw)
      sync()

    for p in wanted:
      calls[p] = train_call if p.startswith("train") else forward_call
  info = {"torch_version": torch.__version__, "torch_threads": torch.get_num_threads(),
          "torch_device": str(device)}
  return calls, info
