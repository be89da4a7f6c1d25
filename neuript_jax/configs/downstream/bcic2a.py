"""BCIC-IV-2A (4-class motor imagery): 2-6 s after the cue (T 256), 16 bipolar pairs.

  python -m launch.finetune --config=neuript_jax/configs/downstream/bcic2a.py \
      --config.data.sources="(('SHARDS', 1.0),)" --config.init_from=PRETRAINED --workdir=W
  (SHARDS: python -m data_prep.convert --recipe=bcic2a --input=RAW --output=SHARDS)

:paper (default): the paper model; the paper states epochs 150, batch 16, cosine with a linear warm-up 1.7e-5 -> 3.5e-5, then decay to 1.7e-5 by epoch 150 (REFERENCE.md §5.3); the warm-up length is not stated: 10%. The authors re-initialised the weights when validation saturated early. Everything else as
neuript_jax/configs/downstream/__init__.py says (Bal-BCE K 0.1, aux 0.8, AdamW, selection on
the validation Cohen's kappa with patience 3).
Split: subjects 1-5 train / 6-7 val / 8-9 test (the recipe).
:cpu: the tiny model on tokens of 8 points with the `build` CPU budget; not measured (no
recordings of this dataset here).

The paper's NeurIPT row: `PAPER` (neuript_jax/sweep/paper_results.py).
"""

from neuript_jax.configs.downstream import build
from neuript_jax.sweep import paper_results

PAPER = paper_results.neuript_result("bcic2a")


def get_config(arg: str | None = None):
  return build(arg, recipe="bcic2a", data="BCICIV-2A", num_classes=4, window_s=4.0, epochs=150,
               batch=16, lr=3.5e-5, min_lr=1.7e-5, schedule="cosine", pct_start=0.1,
               div_factor=3.5 / 1.7)
