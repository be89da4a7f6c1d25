r"""PMoE dispatch timings across expert and token counts: a Markdown table and a PNG plot.

  python -m tools.moe_dispatch_bench --experts=2,4,8,16 --tokens=1024,4096,16384 \
      --out_png=/tmp/moe_dispatch.png

Times one jitted forward + backward (grad of sum(sin(y)) + aux w.r.t. params and input) of
`neuript_jax.model.moe.MoE` at d_model 192, expert hidden 128, shared hidden 192, top_k 0.5
(the `small` preset's PMoE), for three paths:
  capacity        the reference routing (C = floor(N / E)), vectorised [E, C, d] dispatch
  dropless-buffer dropless routing through the same dispatch with C = N
  dropless-ragged dropless routing, pairs sorted by expert, jax.lax.ragged_dot
Medians of --reps calls after one warm-up call; the backend is whatever JAX runs on.
"""

from __future__ import annotations

import os
import statistics
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from neuript_jax.model.moe import MoE

EXPERTS = flags.DEFINE_list("experts", ["2", "4", "8", "16"], "routed expert counts")
TOKENS = flags.DEFINE_list("tokens", ["1024", "4096", "16384"], "token counts N")
REPS = flags.DEFINE_integer("reps", 3, "timed calls per setting (median reported)")
OUT_PNG = flags.DEFINE_string("out_png", None, "write the plot here (optional)")

PATHS = {"capacity": ("capacity", "buffer"), "dropless-buffer": ("dropless", "buffer"),
         "dropless-ragged": ("dropless", "ragged")}


def time_path(path: str, experts: int, tokens: int, reps: int) -> float:
  """Median seconds of one forward + backward of the PMoE on [tokens, 192]."""
  routing, dispatch = PATHS[path]
  moe = MoE(experts, 0.5, 128, 192, noise_std=0.001, routing=routing, dispatch=dispatch)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(tokens, 192)), jnp.float32)
  params = moe.init({"params": jax.random.key(0), "gate_noise": jax.random.key(1)}, x)

  def loss(p, x):
    y, aux = moe.apply(p, x, False, rngs={"gate_noise": jax.random.key(2)})
    return jnp.sum(jnp.sin(y)) + aux

  step = jax.jit(jax.grad(loss, argnums=(0, 1)))
  jax.block_until_ready(step(params, x))
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    jax.block_until_ready(step(params, x))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def plot(rows, path: str):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  token_counts = sorted({r["tokens"] for r in rows})
  fig, axes = plt.subplots(1, len(token_counts), figsize=(4.2 * len(token_counts), 3.6),
                           squeeze=False)
  for ax, n in zip(axes[0], token_counts):
    for name in PATHS:
      pts = sorted((r["experts"], r[name]) for r in rows if r["tokens"] == n)
      ax.plot([p[0] for p in pts], [1e3 * p[1] for p in pts], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("routed experts E")
    ax.set_ylabel("fwd + bwd ms")
    ax.set_title(f"N = {n} tokens")
    ax.grid(alpha=0.3)
  axes[0][0].legend()
  fig.suptitle(f"PMoE dispatch, d 192 / hidden 128, top_k 0.5, {jax.devices()[0].device_kind}")
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def main(argv):
  del argv
  rows = []
  print(f"# {jax.devices()[0].device_kind}, {os.cpu_count()} CPUs, load {os.getloadavg()}")
  print("| E | N | " + " | ".join(f"{p} ms" for p in PATHS) + " | ragged / buffer |")
  print("|---|---|" + "---|" * (len(PATHS) + 1))
  for n in (int(t) for t in TOKENS.value):
    for e in (int(x) for x in EXPERTS.value):
      row = {"experts": e, "tokens": n}
      for name in PATHS:
        row[name] = time_path(name, e, n, REPS.value)
      rows.append(row)
      cells = " | ".join(f"{1e3 * row[p]:.1f}" for p in PATHS)
      print(f"| {e} | {n} | {cells} | "
            f"{row['dropless-ragged'] / row['dropless-buffer']:.2f} |", flush=True)
  if OUT_PNG.value:
    plot(rows, OUT_PNG.value)
    print(f"wrote {OUT_PNG.value}")


if __name__ == "__main__":
  app.run(main)
