"""TUAB (abnormal vs normal): TUH Abnormal, 10 s windows (T 640), 20 TCP channels.

  python -m launch.finetune --config=neuript_jax/configs/downstream/tuab.py \
      --config.data.sources="(('SHARDS', 1.0),)" --config.init_from=PRETRAINED --workdir=W
  (SHARDS: python -m data_prep.convert --recipe=tuab --input=RAW --output=SHARDS)

:paper (default): the paper model; the paper states epochs 10, batch 16, OneCycle peak 5e-6 -> min 3e-7 (REFERENCE.md §5.3). Everything else as
neuript_jax/configs/downstream/__init__.py says (Bal-BCE K 0.1, aux 0.8, AdamW, selection on
the validation AUROC with patience 3).
Split: official train/test; training subjects 80/20 into train/val (the recipe's default).
:cpu: the tiny model on tokens of 8 points with the `build` CPU budget; not measured (no
recordings of this dataset here).

The paper's NeurIPT row: `PAPER` (neuript_jax/sweep/paper_results.py).
"""

from neuript_jax.configs.downstream import build
from neuript_jax.sweep import paper_results

PAPER = paper_results.neuript_result("tuab")


def get_config(arg: str | None = None):
  return build(arg, recipe="tuab", data="TUAB", num_classes=2, window_s=10.0, epochs=10, batch=16,
               lr=5e-6, min_lr=3e-7)
