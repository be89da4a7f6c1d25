"""TUEV (event type, 6 classes): TUH EEG Events, 5 s windows (T 320), 20 TCP channels.

  python -m launch.finetune --config=neuript_jax/configs/downstream/tuev.py \
      --config.data.sources="(('SHARDS', 1.0),)" --config.init_from=PRETRAINED --workdir=W
  (SHARDS: python -m data_prep.convert --recipe=tuev --input=RAW --output=SHARDS)

:paper (default): the paper model; the paper states epochs 20, batch 16, OneCycle peak 1e-5 -> min 1e-7 (REFERENCE.md §5.3). Everything else as
neuript_jax/configs/downstream/__init__.py says (Bal-BCE K 0.1, aux 0.8, AdamW, selection on
the validation Cohen's kappa with patience 3).
Split: official train/test; training subjects 80/20 into train/val (the recipe's default).
:cpu: the tiny model on tokens of 8 points with the `build` CPU budget; not measured (no
recordings of this dataset here).

The paper's NeurIPT row: `PAPER` (neuript_jax/sweep/paper_results.py).
"""

from neuript_jax.configs.downstream import build
from neuript_jax.sweep import paper_results

PAPER = paper_results.neuript_result("tuev")


def get_config(arg: str | None = None):
  return build(arg, recipe="tuev", data="TUEV", num_classes=6, window_s=5.0, epochs=20, batch=16,
               lr=1e-5, min_lr=1e-7)
