r"""The battery of extra golden configurations verified against the reference (tools/README.md).

  python -m tools.golden_battery --torch_ref=/path/to/NeurIPT --out_dir=/tmp/golden_extra [NAME ...]

Writes one `<name>.npz` per configuration with tools.make_golden (one subprocess each; files
that exist are skipped unless named). The `xref_*` entries are configurations where the
reference itself raises; they are expected to fail.
"""

import json
import os
import subprocess
import sys

from absl import app, flags

TORCH_REF = flags.DEFINE_string("torch_ref", None, "folder of the reference code")
OUT_DIR = flags.DEFINE_string("out_dir", "/tmp/golden_extra", "where to write the files")

B = {}
def s2(name, batch=3, seed=1, **kw): B[name] = (2, batch, seed, kw)
def s1(name, batch=2, seed=1, mask_mode="random", **kw):
  B[name] = (1, batch, seed, dict(kw, _mask_mode=mask_mode))
# montages / parts
s2("s2_bcic2a_func", data="BCICIV-2A", data_dim=16, num_classes=4)
s2("s2_bcic2a_hemi", data="BCICIV-2A", data_dim=16, part="Hemispheres", num_classes=4, c_layers=3)
s2("s2_seedv_func", data="SEED-V", data_dim=17, num_classes=5)
s2("s2_seedv_hemi", data="SEED-V", data_dim=17, part="Hemispheres", num_classes=5, batch=5)
s2("s2_sleep_func", data="Sleep-EDFx", data_dim=2, num_classes=5)
s2("s2_sleep_hemi_bin", data="Sleep-EDFx", data_dim=2, part="Hemispheres", num_classes=2)
s2("s2_bcic2b_func_bin", data="BCICIV-2B", data_dim=2, num_classes=2)
s2("s2_bcic2bsc_func_bin", data="BCICIV-2B-SC", data_dim=3, num_classes=2)
s2("s2_bcic2bsc_hemi", data="BCICIV-2B-SC", data_dim=3, part="Hemispheres", num_classes=3)
s2("s2_mental_func_c1_bin", data="MentalArithmetic", data_dim=20, num_classes=2, c_layers=1)
s2("s2_tuev_sagittal", part="Sagittal")
s2("s2_tuab_coronal_bin", data="TUAB", part="Coronal", num_classes=2, c_layers=3)
s2("s2_tuev_hemi_c1", part="Hemispheres", c_layers=1)
s2("s2_2asc_sagittal", data="BCICIV-2A-SC-TTS", data_dim=22, part="Sagittal", num_classes=4)
s2("s2_2asc_coronal", data="BCICIV-2A-SC-TTS", data_dim=22, part="Coronal", num_classes=4, c_layers=3)
s2("s2_2asc_hemi", data="BCICIV-2A-SC-TTS", data_dim=22, part="Hemispheres", num_classes=4)
s2("s2_mumtaz_c0_bin", data="Mumtaz", num_classes=2, c_layers=0)
# experts
s2("s2_exp_zero", enc_expert=[0,0,0,0,0,0])
s2("s2_exp_4all", enc_expert=[4,4,4,4,4,4])
s2("s2_exp_644400", enc_expert=[6,4,4,4,0,0])
s2("s2_exp_0036912", enc_expert=[0,0,3,6,9,12])
s2("s2_exp_odd", enc_expert=[1,3,5,0,2,7], num_classes=3)
s2("s2_exp_odd_b5", enc_expert=[1,3,5,0,2,7], batch=5, data="BCICIV-2A", data_dim=16, num_classes=4)
# merges
s2("s2_merge_121212", merge_layers=[1,2,1,2,1,2])
s2("s2_merge_118121", merge_layers=[1,1,8,1,2,1])
s2("s2_pad_T40_141212", T=40, merge_layers=[1,4,1,2,1,2])
s2("s2_pad_T40_131212", T=40, merge_layers=[1,3,1,2,1,2], enc_expert=[2,0,3,4,4,6])
s2("s2_pad_T64_131212", T=64, merge_layers=[1,3,1,2,1,2], data="SEED-V", data_dim=17, num_classes=5)
# heads / widths
s2("s2_h2", n_heads=2)
s2("s2_h6", n_heads=6)
s2("s2_h8", n_heads=8)
s2("s2_d36_h6", d_model=36, n_heads=6, d_ff=40, hidden_dim=20, hidden_dim_shared=36)
s2("s2_d60_h6", d_model=60, n_heads=6, d_ff=64, hidden_dim=24, hidden_dim_shared=60)
s2("s2_d64_h8_bin", d_model=64, n_heads=8, d_ff=64, hidden_dim=32, hidden_dim_shared=64, data="TUAB", num_classes=2)
# top_k / batch
s2("s2_topk025", top_k=0.25)
s2("s2_topk1", top_k=1.0)
s2("s2_b1", batch=1)
s2("s2_b5", batch=5)
s2("s2_b5_topk1_odd", batch=5, top_k=1.0, enc_expert=[1,3,5,0,2,7])
s2("s2_dropout_cfg", dropout=0.1, noise_std=0.01, w_importance=0.05)
# stage 1
s1("s1_decx", dec_expert=[0,2,0,4,0,2,0], cross_expert=[2,0,4,0,2,0,3])
s1("s1_r035_d36", d_model=36, n_heads=6, mask_ratio=0.35, dec_expert=[2,2,2,2,2,2,2], cross_expert=[0,0,0,0,0,0,4])
s1("s1_r02_b3", batch=3, mask_ratio=0.2, enc_expert=[0,0,3,6,9,12], dec_expert=[1,3,5,0,2,7,4], cross_expert=[4,4,4,4,4,4,4])
s1("s1_T40_pad", T=40, merge_layers=[1,3,1,2,1,2], mask_ratio=0.35, dec_expert=[0,0,2,0,0,2,0], cross_expert=[0,2,0,0,2,0,2])
s1("s1_b1_topk1", batch=1, top_k=1.0, enc_expert=[4,4,4,4,4,4], dec_expert=[4,4,4,4,4,4,4], cross_expert=[4,4,4,4,4,4,4])
s1("s1_bcic2a", data="BCICIV-2A", data_dim=16, mask_ratio=0.5, dec_expert=[0,2,0,2,0,2,0], cross_expert=[2,0,2,0,2,0,2])
s1("s1_seedv_h8", data="SEED-V", data_dim=17, n_heads=8, mask_ratio=0.5, dec_expert=[3,0,0,0,0,0,3], cross_expert=[0,3,0,0,0,3,0])
s1("s1_merge_118121", merge_layers=[1,1,8,1,2,1], mask_ratio=0.25, dec_expert=[2,0,0,0,0,0,2], cross_expert=[0,0,2,0,0,0,0])

s2("s2_exp_odd357", enc_expert=[3,5,7,0,3,5], num_classes=3)
s2("s2_exp_odd_b5_noone", enc_expert=[0,3,5,7,5,3], batch=5, data="BCICIV-2A", data_dim=16, num_classes=4, top_k=0.25)
s2("s2_sleep_cap0_b1", data="Sleep-EDFx", data_dim=2, num_classes=5, enc_expert=[0,0,3,6,9,12], batch=1)
s2("s2_4blocks", merge_layers=[1,2,2,2], enc_expert=[0,2,4,4], c_layers=4)
s2("xref_merge_first2", merge_layers=[2,2,1,2,1,2])
s2("xref_2asc_func", data="BCICIV-2A-SC-TTS", data_dim=22, part="Functional", num_classes=4)
s1("s1_odd357", enc_expert=[0,3,5,7,3,5], dec_expert=[3,0,5,0,7,0,3], cross_expert=[0,5,0,3,0,7,0], mask_ratio=0.35, batch=3)


s2("s2_T50_pad_L1", T=50, merge_layers=[1,4,2,2,2,2], enc_expert=[0,2,2,4,4,6], seed=3)
s2("s2_T48_d64_h4_seedv", T=48, d_model=64, n_heads=4, d_ff=80, hidden_dim=40, hidden_dim_shared=56, data="SEED-V", data_dim=17, num_classes=3, enc_expert=[0,0,4,4,8,8], seed=4)
s1("s1_T48_d64_h8", T=48, d_model=64, n_heads=8, mask_ratio=0.5, enc_expert=[0,2,2,4,4,6], dec_expert=[2,0,2,0,2,0,2], cross_expert=[0,2,0,2,0,2,0], seed=5)
s1("s1_T50_pad_sleep", T=50, data="Sleep-EDFx", data_dim=2, merge_layers=[1,4,2,2,2,2], mask_ratio=0.3, dec_expert=[0,0,3,0,0,3,0], cross_expert=[3,0,0,3,0,0,3], batch=4, seed=6)

s1("s1_runs_r05", mask_mode="runs", mask_ratio=0.5, batch=3, dec_expert=[0,2,0,4,0,2,0], cross_expert=[2,0,4,0,2,0,3], seed=7)
s1("s1_runs_T40_r035", mask_mode="runs", T=40, merge_layers=[1,4,1,2,1,2], mask_ratio=0.35, data="SEED-V", data_dim=17, dec_expert=[3,3,0,0,0,0,3], cross_expert=[0,0,3,3,0,0,0], seed=8)


def main(argv):
  only = argv[1:]
  if not TORCH_REF.value:
    raise app.UsageError("give --torch_ref")
  os.makedirs(OUT_DIR.value, exist_ok=True)
  for name, (stage, batch, seed, kw) in B.items():
    if only and name not in only:
      continue
    out = os.path.join(OUT_DIR.value, f"{name}.npz")
    if os.path.exists(out) and not only:
      continue
    kw = dict(kw)
    extra = [f"--mask_mode={kw.pop('_mask_mode')}"] if "_mask_mode" in kw else []
    r = subprocess.run([sys.executable, "-m", "tools.make_golden", f"--torch_ref={TORCH_REF.value}",
                        f"--out={out}", f"--stage={stage}", f"--batch={batch}", f"--seed={seed}",
                        "--config=" + json.dumps(kw)] + extra, capture_output=True, text=True)
    last = [l for l in (r.stdout + r.stderr).splitlines() if l.strip()][-1:]
    print(name, "OK" if r.returncode == 0 else "FAILED", *last, flush=True)


if __name__ == "__main__":
  app.run(main)
