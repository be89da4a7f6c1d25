"""The paper's downstream fine-tuning runs as config files, one per dataset, each named after
its data_prep recipe (REFERENCE.md §1.4, §5.3, Table 15):

  python -m launch.finetune --config=neuript_jax/configs/downstream/<dataset>.py[:paper|:cpu] \
      --config.data.sources="(('SHARDS', 1.0),)" --workdir=W [--config.init_from=PRETRAINED]

`:paper` (the default) is the paper model (configs/finetune.py:paper, REFERENCE.md §2.1) with
the dataset's geometry key, classes, window length and the optimisation the paper states for
it; where it states nothing the README / Table 15 defaults are used and the file says so.
`:cpu` is a model and budget that trains on a 2-core CPU (configs/finetune.py:tiny sizes,
`CPU` below); only mental_arithmetic.py's has been measured.

Settings shared by every file (`build`):
  loss        Bal-BCE (the reference's), K = `bal_bce_k` (Table 15 range 0-0.3; the paper gives
              no per-dataset K: 0.1), `bal_bce_binary_form` "reference" (neuript_jax.losses),
              aux weight 0.8 (Table 13; Table 15 range 0.8-1).
  optimiser   AdamW (0.9, 0.98), weight decay 5e-3, clip 100 (the pretraining values, §5.2; the
              paper gives none for fine-tuning), OneCycle (cosine), warm-up 0.15 unless stated,
              div factor 5 (Table 15 range 1-5).
  selection   the validation metric of CBraMod's protocol, which the paper says it follows:
              AUROC for binary tasks, Cohen's kappa for multi-class ones; early stopping
              patience 3 (the README default); the test split is evaluated once.
  decision    `decision_rule` "half" (sigmoid > 0.5 / argmax: CBraMod's evaluator, the only
              rule of the reference path; neuript_jax.evaluation.metrics.decision).
  init_from   "" (no public NeurIPT weights exist): pass --config.init_from=<pretraining
              workdir or .pth> for the pretrained rows.
"""

from __future__ import annotations

import importlib

import ml_collections

DATASETS = ("tuev", "tuab", "seedv", "mental_arithmetic", "mumtaz", "sleepedfx", "bcic2a",
            "physionet_p300")
ARGS = ("paper", "cpu")
SAMPLING_RATE_HZ = 64.0

# The ":cpu" budget shared by every file (a file's `cpu` dict overrides it): the tiny model
# (configs/finetune.py:tiny sizes, d_model 32) on point-level tokens like the paper's, the tiny
# preset's OneCycle (peak 1e-3, div 25, final div 1e4), 4 epochs, batch 16, early-stopping
# patience 2, the decision rule "prior" (the reference loss does not correct the class prior;
# metrics.decision). Chosen on MentalArithmetic's validation split: tokens of 8 points peaked
# at validation AUROC 0.668, point tokens at 0.721 (epoch 1), and validation fell after the
# first epoch in both, hence 4 epochs and patience 2 (the test split was not looked at).
CPU = {"model.seg_len": 1, "epochs": 4, "data.global_batch_size": 16, "optim.lr": 1e-3,
       "optim.div_factor": 25.0, "optim.final_div_factor": 1e4, "optim.min_lr": 1e-5,
       "early_stopping_patience": 2, "decision_rule": "prior"}


def downstream_arg(arg: str | None) -> str:
  """The `:ARG` of a downstream config file (None/"" -> "paper"), checked."""
  arg = (arg or "paper").strip()
  if arg not in ARGS:
    raise ValueError(f"unknown downstream preset {arg!r}: choose one of {', '.join(ARGS)} "
                     "(e.g. --config=neuript_jax/configs/downstream/tuev.py:cpu)")
  return arg


def build(arg: str | None, *, recipe: str, data: str, num_classes: int, window_s: float,
          epochs: int, batch: int, lr: float, min_lr: float | None = None,
          schedule: str = "onecycle", pct_start: float = 0.15, div_factor: float = 5.0,
          cpu: dict | None = None, **fields) -> ml_collections.ConfigDict:
  """A complete fine-tuning config: configs/finetune.py:paper (or :tiny for "cpu") with the
  dataset's fields. `min_lr` (OneCycle: sets final_div_factor = lr / (div_factor * min_lr));
  `cpu`: dotted-path overrides applied last for the "cpu" preset; `fields`: top-level
  config fields (dotted paths allowed, e.g. {"optim.weight_decay": 0.05})."""
  from neuript_jax.configs import finetune

  arg = downstream_arg(arg)
  c = finetune.get_config("paper" if arg == "paper" else "tiny")
  c.name = f"{recipe}_{arg}"
  c.dataset = recipe                         # the data_prep recipe = the results key
  c.model.data = data
  c.model.num_classes = num_classes
  c.model.T = int(round(window_s * SAMPLING_RATE_HZ))
  c.data.global_batch_size = batch
  c.epochs = epochs
  c.init_from = ""
  c.loss = "bal_bce"
  c.bal_bce_k = 0.1
  c.bal_bce_binary_form = "reference"
  c.aux_weight = 0.8
  c.optim.schedule = schedule
  c.optim.lr = lr
  c.optim.pct_start = pct_start
  c.optim.div_factor = div_factor
  if min_lr is not None:
    c.optim.min_lr = min_lr
    c.optim.final_div_factor = lr / (div_factor * min_lr)
  c.select_metric = "auroc" if num_classes <= 2 else "cohen_kappa"
  c.early_stopping_patience = 3
  c.decision_rule = "half"
  for path, value in fields.items():
    _set(c, path, value)
  if arg == "cpu":
    for path, value in {**CPU, **(cpu or {})}.items():
      _set(c, path, value)
  return c


def _set(c, path: str, value) -> None:
  *parents, leaf = path.split(".")
  node = c
  for p in parents:
    node = node[p]
  if leaf not in node:
    raise KeyError(f"downstream config: no field {path!r} in the fine-tuning config")
  node[leaf] = value


def get_config(dataset: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """The config of one downstream dataset (a recipe name in DATASETS) and preset."""
  if dataset not in DATASETS:
    raise ValueError(f"unknown downstream dataset {dataset!r}; known: {', '.join(DATASETS)}")
  return importlib.import_module(f"neuript_jax.configs.downstream.{dataset}").get_config(arg)
