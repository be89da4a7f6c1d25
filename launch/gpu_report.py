r"""Markdown tables of a launch/gpu_check.sh run.

  python -m launch.gpu_report OUT/results.jsonl OUT/gpu_results.md

Reads the step results (one {"step", "result"} JSON line each, as gpu_check.sh collects
them) and the step statuses in summary.txt beside them; writes the bf16 deviation, the bench
(ours beside the reference, per stage and part: seconds, ratio, samples/s, MFU, compile),
the stage-1 memory table with the largest batch that fits, and the eegmat fine-tune metrics.
Steps that did not run or wrote nothing are left out; the statuses say why.
"""

from __future__ import annotations

import json
import os
import sys

GIB = 2 ** 30
PART_NAMES = {"train2": "stage-2 train step", "forward2": "stage-2 forward",
              "train1": "stage-1 train step", "forward1": "stage-1 forward"}


def _f(v, fmt="{:.4f}"):
  return "-" if v is None else fmt.format(v)


def part_keys(part: str) -> dict:
  """JSON keys of a bench part (as neuript_jax.bench.steps.part_keys names them)."""
  prefix = "stage1_" if part.endswith("1") else ""
  kind = "train_step" if part.startswith("train") else "forward"
  name = prefix + ("" if kind == "train_step" else "forward_")
  return {"jax": f"jax_{prefix}{kind}_s", "torch": f"torch_{prefix}{kind}_s",
          "samples": f"{name}samples_per_s", "mfu": f"{name}mfu"}


def load(path: str) -> dict:
  """{step name: result} of a results.jsonl (a later line of the same step wins)."""
  out = {}
  with open(path) as f:
    for line in f:
      line = line.strip()
      if line:
        row = json.loads(line)
        out[row["step"]] = row["result"]
  return out


def bench_table(results: dict) -> list[str]:
  lines = []
  for stage in ("stage2", "stage1"):
    ours = results.get(f"bench_{stage}_jax", {})
    ref = results.get(f"bench_{stage}_torch", {})
    if not ours and not ref:
      continue
    head = ours or ref
    lines += [f"**{stage.replace('stage', 'Stage ')}**, batch {head.get('batch')}, "
              f"{head.get('steps')} timed steps, {head.get('dtype')}, attention "
              f"{head.get('attention')}, remat {head.get('remat')}; {head.get('device_kind')}, "
              f"jax {ours.get('jax_version', '-')}, torch {ref.get('torch_version', '-')}; "
              f"peak {_f(ours.get('peak_flops'), '{:.3g}')} FLOP/s "
              f"({ours.get('peak_source', '-')})", "",
              "| part | ours s | reference s | ours / reference | ours samples/s | "
              "reference samples/s | ours MFU | compile s | ours peak GiB |",
              "|---|---|---|---|---|---|---|---|---|"]
    for part in head.get("parts", []):
      k = part_keys(part)
      o, r = ours.get(k["jax"]), ref.get(k["torch"])
      batch = head.get("batch") or 0
      mfu = ours.get(k["mfu"])
      err = ours.get(f"jax_{part}_error") or ref.get(f"torch_{part}_error")
      peak = ours.get("peak_memory_bytes")
      cells = [PART_NAMES.get(part, part), _f(o), _f(r),
               _f(o / r if o and r else None, "{:.3f}"), _f(ours.get(k["samples"]), "{:.1f}"),
               _f(batch / r if r else None, "{:.1f}"), _f(mfu * 100 if mfu else None, "{:.1f}%"),
               _f(ours.get("compile_s", {}).get(part), "{:.1f}"),
               _f(peak / GIB if peak else None, "{:.2f}")]
      lines.append("| " + " | ".join(cells) + " |" + (f" {err[:120]}" if err else ""))
    lines.append("")
  return lines


def memory_table(results: dict) -> list[str]:
  mem = {s: results.get(f"memory_{s}") for s in ("jax", "torch")}
  if not any(mem.values()):
    return []
  rows = {}
  for side, res in mem.items():
    for r in (res or {}).get("rows", []):
      rows.setdefault(r["batch"], {})[side] = r
  lines = ["**Stage-1 train step, peak memory** (ours: device peak_bytes_in_use; reference: "
           "torch.cuda.max_memory_allocated, reserved in brackets)", "",
           "| batch | ours GiB | reference GiB |", "|---|---|---|"]

  def cell(r, side):
    if r is None:
      return "-"
    if not r.get("ok"):
      return "failed: " + str(r.get("error", ""))[:80].replace("|", "/")
    text = f"{r['peak_bytes'] / GIB:.2f}"
    if side == "torch" and r.get("reserved_peak_bytes"):
      text += f" ({r['reserved_peak_bytes'] / GIB:.2f})"
    return text

  for b in sorted(rows):
    lines.append(f"| {b} | {cell(rows[b].get('jax'), 'jax')} | "
                 f"{cell(rows[b].get('torch'), 'torch')} |")
  lines.append("")
  for side, name in (("jax", "ours"), ("torch", "reference")):
    res = mem[side]
    if not res:
      continue
    largest, cap = res.get("largest"), res.get("capacity_bytes")
    if largest:
      how = ("bracketed: the next one failed or exceeds it" if largest["exact"]
             else "not bracketed")
      lines.append(f"- Largest batch that fits, {name}: {largest['batch']} at "
                   f"{cap / GIB:.1f} GiB ({how}; linear fit {largest['predicted']}).")
    else:
      lines.append(f"- Largest batch that fits, {name}: not found ({res.get('note', '')}).")
  lines.append("")
  return lines


def bf16_table(results: dict) -> list[str]:
  res = results.get("bf16_deviation")
  if not res:
    return []
  lines = [f"**Golden files, float32 and bf16 against the reference** ({res.get('device_kind')})",
           "", "| file | dtype | output | max abs err | relative | abs loss err |",
           "|---|---|---|---|---|---|"]
  for r in res["rows"]:
    lines.append(f"| {r['file']} | {r['dtype']} | {r['output']} | {r['max_abs_err']:.3e} | "
                 f"{r['rel_err']:.2e} | {r['loss_err']:.3e} |")
  return lines + [""]


def finetune_lines(results: dict) -> list[str]:
  lines = []
  for step, res in results.items():
    if not step.startswith("finetune_eegmat"):
      continue
    lines.append(f"**{step}**")
    for split in ("validation", "test"):
      metrics = res.get(split) or {}
      scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
      if scalars:
        lines.append(f"- {split}: " + ", ".join(f"{k} {v:.4f}" for k, v in scalars.items()))
    lines.append("")
  return lines


def report(results_path: str) -> str:
  results = load(results_path) if os.path.exists(results_path) else {}
  summary = os.path.join(os.path.dirname(results_path), "summary.txt")
  lines = ["# GPU check", ""]
  if os.path.exists(summary):
    with open(summary) as f:
      lines += ["```", f.read().rstrip(), "```", ""]
  lines += bf16_table(results) + bench_table(results) + memory_table(results)
  lines += finetune_lines(results)
  return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
  if len(argv) != 3:
    print(__doc__.split("\n\n")[0], file=sys.stderr)
    return 2
  text = report(argv[1])
  with open(argv[2], "w") as f:
    f.write(text)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
