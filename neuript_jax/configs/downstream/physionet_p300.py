"""PhysioNet P300 (target vs non-target): 2 s windows from 0.7 s before the stimulus (T 128), 20 TCP channels.

  python -m launch.finetune --config=neuript_jax/configs/downstream/physionet_p300.py \
      --config.data.sources="(('SHARDS', 1.0),)" --config.init_from=PRETRAINED --workdir=W
  (SHARDS: python -m data_prep.convert --recipe=physionet_p300 --input=RAW --output=SHARDS)

:paper (default): the paper model; the paper states nothing: the README's 20 epochs, Table 15's batch 16, the finetune:paper lr 1e-5. Metrics as EEGPT: balanced accuracy, Cohen's kappa, AUROC. Everything else as
neuript_jax/configs/downstream/__init__.py says (Bal-BCE K 0.1, aux 0.8, AdamW, selection on
the validation AUROC with patience 3).
Split: 60/20/20 by subject, seeded hash (the recipe's default; the paper gives no ratio).
:cpu: the tiny model on tokens of 8 points with the `build` CPU budget; not measured (no
recordings of this dataset here).

The paper's NeurIPT row: `PAPER` (neuript_jax/sweep/paper_results.py).
"""

from neuript_jax.configs.downstream import build
from neuript_jax.sweep import paper_results

PAPER = paper_results.neuript_result("physionet_p300")


def get_config(arg: str | None = None):
  return build(arg, recipe="physionet_p300", data="PhysioP300", num_classes=2, window_s=2.0, epochs=20,
               batch=16, lr=1e-5)
