"""NeurIPT's own downstream results as the paper reports them, to print beside ours.

Numbers are copied from REFERENCE.md §6.2 (the paper's appendix Tables 18-24, arXiv v1): test
metrics as fractions, mean ± std over seeds (the number of seeds is not stated). Only the
three metrics each table reports are present (``metrics.paper_metrics``). Keys are the
``data_prep`` recipe names of the datasets (``tuev``, ``tuab``, ...). Where Table 2 (%) and the
appendix disagree (BCIC-IV-2A kappa: 40.04 vs 0.4005) the appendix value is used.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class PaperResult:
  """One dataset's reported NeurIPT row: ``metrics[name] = (mean, std)``, fractions."""
  table: str
  metrics: dict


NEURIPT = {
    "mental_arithmetic": PaperResult("Table 18 (MentalArithmetic)", {
        "balanced_accuracy": (0.8646, 0.0107), "auc_pr": (0.7827, 0.0197),
        "auroc": (0.9111, 0.0163)}),
    "mumtaz": PaperResult("Table 19 (Mumtaz2016)", {
        "balanced_accuracy": (0.9803, 0.0062), "auc_pr": (0.9981, 0.0044),
        "auroc": (0.9979, 0.0045)}),
    "physionet_p300": PaperResult("Table 20 (PhysioNetP300)", {
        "balanced_accuracy": (0.6731, 0.0045), "cohen_kappa": (0.3426, 0.0074),
        "auroc": (0.7683, 0.0039)}),
    "sleepedfx": PaperResult("Table 21 (Sleep-EDFx)", {
        "balanced_accuracy": (0.7047, 0.0041), "cohen_kappa": (0.7757, 0.0015),
        "weighted_f1": (0.8739, 0.0013)}),
    "seedv": PaperResult("Table 22 (SEED-V)", {
        "balanced_accuracy": (0.4104, 0.0021), "cohen_kappa": (0.2629, 0.0039),
        "weighted_f1": (0.4158, 0.0037)}),
    "bcic2a": PaperResult("Table 23 (BCIC-IV-2A)", {
        "balanced_accuracy": (0.5504, 0.0072), "cohen_kappa": (0.4005, 0.0121),
        "weighted_f1": (0.5376, 0.0086)}),
    "tuab": PaperResult("Table 24 (TUAB)", {
        "balanced_accuracy": (0.8293, 0.0016), "auc_pr": (0.9040, 0.0022),
        "auroc": (0.8949, 0.0021)}),
    # REFERENCE.md numbers this table "Table 24" too (the one after TUAB's).
    "tuev": PaperResult("Table 24/25 (TUEV)", {
        "balanced_accuracy": (0.6761, 0.0133), "cohen_kappa": (0.6970, 0.0185),
        "weighted_f1": (0.8428, 0.0089)}),
}


def neuript_result(key: str | None) -> PaperResult | None:
  """The paper's NeurIPT row for a recipe name, or None when the paper has no such dataset."""
  return NEURIPT.get(key) if key else None
