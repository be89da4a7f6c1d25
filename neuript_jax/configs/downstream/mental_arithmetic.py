r"""MentalArithmetic (PhysioNet "EEG During Mental Arithmetic Tasks"): rest vs serial
subtraction, 5 s windows (T 320), 20 TCP channels; subjects 1-28 train / 29-32 val / 33-36
test (the recipe; 1,707 windows: train 1,343 = 1,007 rest + 336 task, val 172, test 192).

  python -m data_prep.convert --recipe=mental_arithmetic --output=SHARDS \
      --input=../shared/data/eegmat/eeg-during-mental-arithmetic-tasks-1.0.0
  python -m launch.finetune --config=neuript_jax/configs/downstream/mental_arithmetic.py:cpu \
      --config.data.sources="(('SHARDS', 1.0),)" --workdir=W
  python -m launch.downstream_table --dataset=mental_arithmetic --data=SHARDS_OR_RAW \
      --workdir=W --seeds=0,1,2,3,4 --size=cpu       (every row of `PAPER_ROWS`, 5 seeds)

:paper (default): the paper model; the paper states no epochs, batch or learning rate for
this dataset: the README's 20 epochs and early-stopping patience 3, Table 15's batch 16, the
finetune:paper peak lr 1e-5 (OneCycle, div 5). Loss, selection (validation AUROC, CBraMod's
binary protocol) and the rest: neuript_jax/configs/downstream/__init__.py.
:cpu: `downstream.CPU` (tiny model, point-level tokens, 4 epochs, batch 16, lr 1e-3,
early-stopping patience 2, decision rule "prior"), from scratch (init_from ""). Measured (the
command above, seed 0, run just before this preset changed, as the overrides
--config.model.seg_len=1 --config.epochs=4 of the old one, with patience 3, which also ran a
4th epoch that patience 2 skips; shared 2-core CPU with the test suite beside it, 47 min):
validation AUROC 0.721 at epoch 1 (then 0.664, 0.653: the selected checkpoint is step 83);
test at that checkpoint AUROC 0.878, AUC-PR 0.682, balanced accuracy 0.757 with the "prior"
rule (threshold 0.250 = 336 / 1,343; 0.500 at p > 0.5, every window called rest), so above
the issue's targets (BAcc >= 0.72, AUROC >= 0.82); band power + LR on the same split: 0.760 /
0.866. The earlier preset (tokens of 8 points, 6 epochs) reached validation AUROC 0.668 and
test 0.549 / 0.762. Other seeds and rows: BENCHMARKS.md "Real EEG: MentalArithmetic".

The paper's numbers (REFERENCE.md Tables 10, 11, 18; test, fractions): `PAPER_ROWS`.
"""

from neuript_jax.configs.downstream import build
from neuript_jax.sweep import paper_results

PAPER = paper_results.neuript_result("mental_arithmetic")

# Row name -> {metric: (mean, std or None)}; the NeurIPT pretrained row is PAPER's.
PAPER_ROWS = {
    "NeurIPT pretrained, AAMP (Table 18)": dict(PAPER.metrics),
    "NeurIPT pretrained, random masking (Table 10)": {
        "balanced_accuracy": (0.8438, None), "auc_pr": (0.7789, None), "auroc": (0.9098, None)},
    "NeurIPT from scratch, 3D PE (Table 11)": {
        "balanced_accuracy": (0.7569, None), "auc_pr": (0.7437, None), "auroc": (0.8683, None)},
    "CBraMod (Table 18)": {
        "balanced_accuracy": (0.7256, 0.0132), "auc_pr": (0.6267, 0.0099),
        "auroc": (0.7905, 0.0073)},
    "LaBraM (Table 18)": {
        "balanced_accuracy": (0.6909, 0.0125), "auc_pr": (0.5999, 0.0155),
        "auroc": (0.7721, 0.0093)},
    "BIOT (Table 18)": {
        "balanced_accuracy": (0.6875, 0.0186), "auc_pr": (0.6004, 0.0195),
        "auroc": (0.7536, 0.0144)},
    "EEGNet (Table 18)": {
        "balanced_accuracy": (0.6770, 0.0116), "auc_pr": (0.5763, 0.0102),
        "auroc": (0.7321, 0.0108)},
}


def get_config(arg: str | None = None):
  return build(arg, recipe="mental_arithmetic", data="MentalArithmetic", num_classes=2,
               window_s=5.0, epochs=20, batch=16, lr=1e-5)
