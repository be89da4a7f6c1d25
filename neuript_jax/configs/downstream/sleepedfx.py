"""Sleep-EDFx (5 sleep stages): 30 s epochs (T 1920), Fpz-Cz and Pz-Oz.

  python -m launch.finetune --config=neuript_jax/configs/downstream/sleepedfx.py \
      --config.data.sources="(('SHARDS', 1.0),)" --config.init_from=PRETRAINED --workdir=W
  (SHARDS: python -m data_prep.convert --recipe=sleepedfx --input=RAW --output=SHARDS)

:paper (default): the paper model; the paper states nothing: the README's 20 epochs, Table 15's batch 16, the finetune:paper lr 1e-5. Everything else as
neuript_jax/configs/downstream/__init__.py says (Bal-BCE K 0.1, aux 0.8, AdamW, selection on
the validation Cohen's kappa with patience 3).
Split: 60/20/20 by subject, seeded hash (the recipe's default; the paper's ratio is cut off).
:cpu: the tiny model on tokens of 8 points with the `build` CPU budget; not measured (no
recordings of this dataset here).

The paper's NeurIPT row: `PAPER` (neuript_jax/sweep/paper_results.py).
"""

from neuript_jax.configs.downstream import build
from neuript_jax.sweep import paper_results

PAPER = paper_results.neuript_result("sleepedfx")


def get_config(arg: str | None = None):
  return build(arg, recipe="sleepedfx", data="Sleep-EDFx", num_classes=5, window_s=30.0, epochs=20,
               batch=16, lr=1e-5)
