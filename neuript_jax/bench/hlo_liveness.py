"""Which buffers are live at the memory peak of a compiled step: an estimate from its
optimized, scheduled HLO text (`jax.jit(f).lower(...).compile().as_text()`).

XLA's `memory_analysis()` gives one number (temporaries); this says what they are. The ENTRY
computation of a scheduled module runs in text order, so each buffer lives from the
instruction that defines it to its last use. Counted: every instruction's result in device
memory (each element of a tuple result on its own). Not counted: parameters and constants
(arguments), aliases (bitcast, get-tuple-element, tuple, copy-done), on-chip memory (a TPU
layout with memory space S(1)), and buffers a callee computation (while body, call)
allocates inside itself. Sizes include the layout's tile padding (TPU: T(8,128)). XLA may
also update a buffer in place or share one between values, which this does not see: an
estimate, to read beside `memory_analysis().temp_size_in_bytes`, not instead of it.

Each buffer carries its op_name metadata (the jax name stack: "jvp(...)" forward, a
"transpose(jvp(...))" backward, "rematted_computation" a rematerialised recompute), so the
live set at the peak reads as model parts.
"""

from __future__ import annotations

import collections
import dataclasses
import re

DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
               "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8}
ALIAS_OPS = {"bitcast", "get-tuple-element", "tuple", "copy-done", "optimization-barrier"}
ARGUMENT_OPS = {"parameter", "constant"}
_SHAPE = re.compile(r"(\w+)\[([\d,]*)\](\{[^}]*\})?")
_INSTR = re.compile(r"\s*(?:ROOT )?%(\S+) = (.*?) ([a-z][a-z0-9-]*)\((.*)$")


@dataclasses.dataclass(frozen=True)
class Buffer:
  """One device buffer: `bytes`, its `shape` ("bf16[160,256,768]"), the defining `op`, the
  jax `op_name`, and its life [first, last] in ENTRY instruction positions."""
  bytes: int
  shape: str
  op: str
  op_name: str
  first: int
  last: int


@dataclasses.dataclass
class Liveness:
  peak_bytes: int           # estimated peak of the buffers counted (module docstring)
  peak_position: int        # ENTRY instruction position where it is reached
  n_instructions: int
  live_at_peak: list        # [Buffer], largest first


def _padded_dims(dims: list[int], layout: str) -> list[int]:
  """Dims padded to the layout's first tile: '{2,1,0:T(8,128)(2,1)}' pads the most minor dim
  to a multiple of 128 and the next to 8 x 2 (the (2,1) sub-tile packs two rows)."""
  m = re.match(r"\{([\d,]*)(?::T\(([\d,]+)\)(?:\((\d+),\d+\))?)?", layout)
  if not m or not m.group(2) or not dims:
    return dims
  order = [int(i) for i in m.group(1).split(",") if i]       # minor to major
  tile = [int(t) for t in m.group(2).split(",")]
  if m.group(3):
    tile[0] *= int(m.group(3))
  out = list(dims)
  for axis, t in zip(order[:len(tile)], tile[::-1]):
    out[axis] = -(-out[axis] // t) * t
  return out


def _shapes(type_text: str) -> list[tuple[str, int]]:
  """'(f32[8,4]{1,0}, bf16[2])' -> [('f32[8,4]', 128), ('bf16[2]', 4)]: bytes with the
  layout's tile padding; 0 for on-chip (S(1)) or non-array element types."""
  out = []
  for dtype, dims, layout in _SHAPE.findall(type_text):
    shape = [int(d) for d in dims.split(",") if d]
    n = 1
    for d in _padded_dims(shape, layout or ""):
      n *= d
    on_chip = bool(layout) and "S(1)" in layout
    out.append((f"{dtype}[{dims}]", 0 if on_chip else n * DTYPE_BYTES.get(dtype, 0)))
  return out


def _entry_lines(hlo_text: str) -> list[str]:
  start = hlo_text.find("\nENTRY")
  if start < 0:
    raise ValueError("no ENTRY computation in this HLO text (pass compiled.as_text())")
  body = hlo_text[start + 1:]
  end = body.find("\n}")
  return body[:end if end >= 0 else len(body)].split("\n")[1:]


def analyse(hlo_text: str) -> Liveness:
  """Liveness of the ENTRY computation of an optimized HLO module (module docstring)."""
  lines = _entry_lines(hlo_text)
  # value name -> the buffers (keys) it refers to; key = (instruction, tuple index or -1)
  refers: dict[str, set] = {}
  info: dict[tuple, list] = {}           # key -> [bytes, shape, op, op_name, first, last]
  for pos, line in enumerate(lines):
    m = _INSTR.match(line)
    if not m:
      continue
    name, type_text, op, rest = m.groups()
    args = rest.split("metadata=")[0]
    operands = [o for o in re.findall(r"%([\w.\-]+)", args) if o in refers]
    op_name = re.search(r'op_name="([^"]*)"', line)
    op_name = op_name.group(1) if op_name else ""
    for o in operands:                     # uses extend the lives of what they refer to
      for key in refers[o]:
        info[key][5] = pos
    if op == "get-tuple-element":
      k = int(re.search(r"index=(\d+)", line).group(1))
      src = refers[operands[0]] if operands else set()
      picked = {key for key in src if key[1] == k}    # element k of a tuple result
      refers[name] = picked or src
    elif op in ALIAS_OPS:
      refers[name] = set().union(*(refers[o] for o in operands)) if operands else set()
    elif op in ARGUMENT_OPS:
      refers[name] = set()
    else:
      shapes = _shapes(type_text)
      if type_text.startswith("(") and len(shapes) > 1:
        refers[name] = set()
        for k, (shape, nbytes) in enumerate(shapes):
          info[(name, k)] = [nbytes, shape, op, op_name, pos, pos]
          refers[name].add((name, k))
      else:
        shape, nbytes = shapes[0] if shapes else ("", 0)
        info[(name, -1)] = [sum(b for _, b in shapes), shape, op, op_name, pos, pos]
        refers[name] = {(name, -1)}
    if line.lstrip().startswith("ROOT"):
      for key in refers[name]:
        info[key][5] = len(lines)
  delta = collections.defaultdict(int)
  for nbytes, _, _, _, first, last in info.values():
    if nbytes:
      delta[first] += nbytes
      delta[last + 1] -= nbytes
  cur, peak, peak_pos = 0, 0, 0
  for pos in sorted(delta):
    cur += delta[pos]
    if cur > peak:
      peak, peak_pos = cur, pos
  live = [Buffer(*v) for v in info.values() if v[0] and v[4] <= peak_pos <= v[5]]
  live.sort(key=lambda b: -b.bytes)
  return Liveness(peak, peak_pos, len(lines), live)


def model_part(op_name: str) -> str:
  """'jit(train_step)/transpose(jvp(M))/decoder/decode_layers_1/MLP/wi/...' ->
  'backward decoder/decode_layers_1' (forward / backward / recompute + the first two
  module scopes after the model's)."""
  kind = ("recompute" if "rematted_computation" in op_name else
          "backward" if "transpose(" in op_name else "forward")
  scopes = []
  for s in op_name.split("/"):
    if s and "(" not in s and s not in ("checkpoint", "rematted_computation", *scopes):
      scopes.append(s)
  return f"{kind} {'/'.join(scopes[:2]) or '?'}"


def report(live: Liveness, top: int = 15) -> str:
  """The peak, its live set grouped by model part, and its `top` largest buffers."""
  gib = 2 ** 30
  groups = collections.Counter()
  for b in live.live_at_peak:
    groups[model_part(b.op_name)] += b.bytes
  lines = [f"estimated peak of the step's buffers: {live.peak_bytes / gib:.3f} GiB at "
           f"instruction {live.peak_position} of {live.n_instructions}; live there, by part:"]
  lines += [f"  {n / gib:8.3f} GiB  {part}" for part, n in groups.most_common(top)]
  lines.append(f"the {top} largest buffers live at the peak:")
  lines += [f"  {b.bytes / 2**20:9.1f} MiB  {b.shape:24s} {b.op:12s} "
            f"(instructions {b.first}-{b.last})  {b.op_name[-90:]}"
            for b in live.live_at_peak[:top]]
  return "\n".join(lines)
