"""Where a compiled XLA:CPU program's time goes, op by op.

A jax profiler trace of a few calls: every thunk the CPU runtime executes is one trace event
named after its HLO instruction, so each thunk's time is joined with that instruction in the
compiled (optimized) HLO text: its output shape, its kind and the jax `op_name` that made it
(the Flax module path, e.g. `Stage2Model/encoder/encode_blocks_0/.../value_projection`).

  profile_calls(call, calls, hlo_text, log_dir) -> rows, slowest first: dicts with thunk,
      ms_per_call, kind ("matmul" | "layout copy" | "other"), shape, op_name
  by_kind(rows) / by_scope(rows, depth) -> {name: ms per call}, largest first
      (by_scope_and_kind: keyed by (scope, kind))
  write_csv(rows, path); plot_scopes(rows, path, title)

Thunks that do not depend on each other run at the same time on different threads, so a
thunk's time includes its slowdown from sharing the cores with another one, and the sum over
thunks can exceed the call's wall time. Read the table for where the time goes, not for a
total. Used by `launch.bench --side=jax --thunk_profile=DIR`.
"""

from __future__ import annotations

import collections
import csv
import glob
import gzip
import json
import os
import re
from typing import Callable

import jax

# `%name = shape opcode(operands), attributes` in HLO text; tuple shapes hold spaces, hence
# the lazy shape group up to the opcode that precedes "(".
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (.+?) ([a-z][\w\-]*)\((.*)$", re.M)
_COMPUTATION = re.compile(r"^(?:ENTRY )?%([\w.\-]+) .*?\{\n(.*?)\n\}", re.M | re.S)
_MATMUL_OPS = frozenset({"dot", "convolution"})
_LAYOUT_OPS = frozenset({"copy", "transpose"})


def hlo_instructions(hlo_text: str) -> dict[str, dict]:
  """{instruction name: {"shape", "opcode", "op_name", "kind"}} of an optimized HLO module.

  kind: "matmul" when the instruction is a dot / convolution or a fusion whose computation
  holds one; "layout copy" when it is, or fuses, a copy or transpose (XLA fuses the
  elementwise work before a transpose into it, e.g. a projection's bias add); else "other"."""
  bodies = {m.group(1): m.group(2) for m in _COMPUTATION.finditer(hlo_text)}

  def opcodes(body: str) -> set[str]:
    return {m.group(3) for m in _INSTRUCTION.finditer(body)}

  out = {}
  for m in _INSTRUCTION.finditer(hlo_text):
    name, shape, opcode, rest = m.groups()
    op_name = re.search(r'op_name="([^"]*)"', rest)
    called = re.search(r"calls=%([\w.\-]+)", rest)
    ops = {opcode}
    if called and called.group(1) in bodies:
      ops = opcodes(bodies[called.group(1)])
    if ops & _MATMUL_OPS:
      kind = "matmul"
    elif ops & _LAYOUT_OPS:
      kind = "layout copy"
    else:
      kind = "other"
    out[name] = {"shape": shape.split("{")[0], "opcode": opcode, "kind": kind,
                 "op_name": op_name.group(1) if op_name else ""}
  return out


def trace_events(trace_dir: str) -> list[dict]:
  """The complete ("X") events of the newest jax profiler trace under trace_dir."""
  paths = sorted(glob.glob(os.path.join(trace_dir, "plugins", "profile", "*",
                                        "*.trace.json.gz")), key=os.path.getmtime)
  if not paths:
    raise FileNotFoundError(f"no *.trace.json.gz under {trace_dir}/plugins/profile: the "
                            "profiler wrote no trace")
  with gzip.open(paths[-1], "rt") as f:
    events = json.load(f).get("traceEvents", [])
  return [e for e in events if e.get("ph") == "X" and "dur" in e]


def thunk_rows(events: list[dict], instructions: dict[str, dict], calls: int) -> list[dict]:
  """Per-thunk rows (see the module docstring) from trace events (durations in µs) of
  `calls` calls; events whose names are not HLO instructions are dropped."""
  total = collections.defaultdict(float)
  for e in events:
    if e["name"] in instructions:
      total[e["name"]] += float(e["dur"])
  rows = [{"thunk": name, "ms_per_call": us / calls / 1e3, **instructions[name]}
          for name, us in total.items()]
  return sorted(rows, key=lambda r: -r["ms_per_call"])


def profile_calls(call: Callable[[], object], calls: int, hlo_text: str,
                  log_dir: str) -> list[dict]:
  """Trace `calls` calls of call() (each blocks until its result is ready) into log_dir and
  join the thunks with hlo_text (`compiled.as_text()` of the program call runs). Call it
  warm: a first call's one-off work would be traced too."""
  if calls < 1:
    raise ValueError(f"calls must be >= 1, got {calls}")
  with jax.profiler.trace(log_dir):
    for _ in range(calls):
      call()
  return thunk_rows(trace_events(log_dir), hlo_instructions(hlo_text), calls)


def scope(op_name: str, depth: int) -> str:
  """The first `depth` module names of an op_name, without its jit(...) root and its
  operation: "jit(f)/Stage2Model/encoder/encode_blocks_0/x/dot_general", 3 ->
  "Stage2Model/encoder/encode_blocks_0"."""
  parts = [p for p in op_name.split("/") if p]
  if parts and parts[0].startswith("jit("):
    parts = parts[1:]
  return "/".join(parts[:-1][:depth]) or "(no op_name)"


def _sums(rows, key) -> dict[str, float]:
  sums = collections.defaultdict(float)
  for r in rows:
    sums[key(r)] += r["ms_per_call"]
  return dict(sorted(sums.items(), key=lambda kv: -kv[1]))


def by_kind(rows: list[dict]) -> dict[str, float]:
  """ms per call summed by kind, largest first."""
  return _sums(rows, lambda r: r["kind"])


def by_scope_and_kind(rows: list[dict], depth: int = 5) -> dict[tuple[str, str], float]:
  """ms per call summed by (`scope(op_name, depth)`, kind), largest first."""
  return _sums(rows, lambda r: (scope(r["op_name"], depth), r["kind"]))


def by_scope(rows: list[dict], depth: int = 5) -> dict[str, float]:
  """`by_scope_and_kind` with "scope [kind]" keys."""
  return {f"{s} [{k}]": ms for (s, k), ms in by_scope_and_kind(rows, depth).items()}


def write_csv(rows: list[dict], path: str) -> str:
  fields = ("thunk", "ms_per_call", "kind", "shape", "opcode", "op_name")
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fields)
    writer.writeheader()
    for r in rows:
      writer.writerow({k: (round(r[k], 4) if k == "ms_per_call" else r[k]) for k in fields})
  return path


def plot_scopes(rows: list[dict], path: str, title: str, depth: int = 5, top: int = 25) -> str:
  """Horizontal bars: ms per call of the `top` largest scope/kind groups (PNG)."""
  from matplotlib.figure import Figure
  groups = list(by_scope_and_kind(rows, depth).items())[:top][::-1]
  colours = {"matmul": "tab:blue", "layout copy": "tab:red", "other": "tab:gray"}
  fig = Figure(figsize=(10, 0.3 * len(groups) + 1.5))
  ax = fig.add_subplot()
  ax.barh(range(len(groups)), [ms for _, ms in groups],
          color=[colours[kind] for (_, kind), _ in groups])
  ax.set_yticks(range(len(groups)), [f"{s} [{kind}]" for (s, kind), _ in groups], fontsize=7)
  ax.set_xlabel("ms per call (summed over thunks; concurrent thunks overlap)")
  ax.set_title(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  return path
