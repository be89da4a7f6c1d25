"""SEED-V (emotion, 5 classes): 1 s windows (T 64), 17 monopolar channels (the code's best setting).

  python -m launch.finetune --config=neuript_jax/configs/downstream/seedv.py \
      --config.data.sources="(('SHARDS', 1.0),)" --config.init_from=PRETRAINED --workdir=W
  (SHARDS: python -m data_prep.convert --recipe=seedv --input=RAW --output=SHARDS)

:paper (default): the paper model; the paper states epochs 10, batch 256 (REFERENCE.md §5.3); the learning rate is not stated: 1e-5 (configs/finetune.py:paper, TUEV's). The authors re-initialised the weights when validation saturated early (§5.3): the pretrained row may be close to from scratch. Everything else as
neuript_jax/configs/downstream/__init__.py says (Bal-BCE K 0.1, aux 0.8, AdamW, selection on
the validation Cohen's kappa with patience 3).
Split: subjects 1-10 train, 11-15 test, 16 val (the recipe's default; the paper names no val).
:cpu: the tiny model on tokens of 8 points with the `build` CPU budget; not measured (no
recordings of this dataset here).

The paper's NeurIPT row: `PAPER` (neuript_jax/sweep/paper_results.py).
"""

from neuript_jax.configs.downstream import build
from neuript_jax.sweep import paper_results

PAPER = paper_results.neuript_result("seedv")


def get_config(arg: str | None = None):
  return build(arg, recipe="seedv", data="SEED-V", num_classes=5, window_s=1.0, epochs=10, batch=256,
               lr=1e-5)
