r"""How far our bfloat16 compute is from a golden file's float32 reference outputs.

  python -m launch.gpu_bf16_deviation --golden_dir=../shared/golden [--json_out=FILE]

For every stage*.npz: the eval forward (stage 2: logits; stage 1: the masked predictions) and
the deterministic train-mode loss (no dropout, no gate noise), computed with the golden's
converted weights at float32 (matmul precision "highest") and at bfloat16 compute (params stay
float32). Prints, per file and dtype, max |ours - reference|, that error over max |reference|,
and |loss - reference loss|. Not a pass/fail check (launch.parity is, at float32): bf16 has an
8-bit mantissa, so errors near 1e-2 relative are expected. Exit 1 only if a value is not finite.
"""

from __future__ import annotations

import glob
import json
import os
import sys

from absl import app, flags

DIR = flags.DEFINE_string("golden_dir", None, "folder of stage*.npz golden files")
JSON_OUT = flags.DEFINE_string("json_out", None, "also write the rows as JSON to this file")


def deviation(path: str, dtype: str) -> dict:
  """{output, max_abs_err, rel_err, loss_err} of one golden file at one compute dtype."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from neuript_jax import convert, parity
  from neuript_jax.model import build_model, gather_masked, masked_mean_abs_error

  g = np.load(path)
  cfg = parity.load_config(g).replace(dtype=dtype)
  stage = parity.stage_of(g)
  state_dict = {k[len("param/"):]: g[k] for k in g.files if k.startswith("param/")}
  params = jax.tree_util.tree_map(jnp.asarray, convert.from_reference(state_dict, cfg, stage))
  x = jnp.asarray(g["in/x"])
  train_cfg = cfg.replace(noise_std=0.0, dropout=0.0)
  if stage == 2:
    out = jax.jit(build_model(cfg, 2).apply, static_argnums=(2, 3))(
        {"params": params}, x, True, True)[0]
    ref, name = g["out/logits"], "out/logits"
    labels = jnp.asarray(g["in/labels"])

    def loss_fn(p):
      lg, aux = build_model(train_cfg, 2).apply({"params": p}, x, False)
      return parity.task_loss(lg.astype(jnp.float32), labels) + parity.AUX_WEIGHT * aux
  else:
    masks = [jnp.asarray(g[f"in/mask_{i}"]) for i in range(len(cfg.merge_layers))]
    pred = jax.jit(build_model(cfg, 1).apply, static_argnums=(4,))(
        {"params": params}, x, masks, masks, True)[0]
    out = gather_masked(pred, masks[0], cfg.seg_len)
    ref, name = g["out/pred"], "out/pred"

    def loss_fn(p):
      pr, aux = build_model(train_cfg, 1).apply({"params": p}, x, masks, masks, False)
      rec = masked_mean_abs_error(pr.astype(jnp.float32), x, masks[0], cfg.seg_len)
      return rec + parity.AUX_WEIGHT * aux

  out = np.asarray(jnp.asarray(out, jnp.float32), np.float64)
  ref = np.asarray(ref, np.float64)
  loss = float(jax.jit(loss_fn)(params))
  err = float(np.max(np.abs(out - ref)))
  return {"file": os.path.basename(path), "dtype": dtype, "output": name,
          "max_abs_err": err, "rel_err": err / max(float(np.max(np.abs(ref))), 1e-30),
          "loss": loss, "loss_err": abs(loss - float(g["train/loss"])),
          "finite": bool(np.isfinite(out).all() and np.isfinite(loss))}


def main(argv):
  del argv
  import jax
  jax.config.update("jax_default_matmul_precision", "highest")
  if not DIR.value:
    raise app.UsageError("give --golden_dir DIR")
  paths = sorted(p for p in glob.glob(os.path.join(DIR.value, "stage*.npz")))
  if not paths:
    raise app.UsageError(f"--golden_dir {DIR.value}: no stage*.npz files there")
  rows = [deviation(p, dtype) for p in paths for dtype in ("float32", "bfloat16")]
  print(f"{'file':<30} {'dtype':<9} {'output':<11} {'max|err|':>10} {'rel':>9} "
        f"{'|dloss|':>10}  ({jax.devices()[0].device_kind})")
  for r in rows:
    print(f"{r['file']:<30} {r['dtype']:<9} {r['output']:<11} {r['max_abs_err']:10.3e} "
          f"{r['rel_err']:9.2e} {r['loss_err']:10.3e}")
  result = {"device_kind": jax.devices()[0].device_kind, "jax_version": jax.__version__,
            "rows": rows}
  if JSON_OUT.value:
    with open(JSON_OUT.value, "w") as f:
      f.write(json.dumps(result) + "\n")
  sys.exit(0 if all(r["finite"] for r in rows) else 1)


if __name__ == "__main__":
  app.run(main)
