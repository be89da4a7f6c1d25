"""neuript_jax.bench.thunk_profile: HLO instructions joined with profiler thunk times
(`launch.bench --side=jax --thunk_profile` end to end: tests/test_bench.py)."""

import csv
import os

import jax
import jax.numpy as jnp
import numpy as np

from neuript_jax.bench import thunk_profile as tp


def _program():
  def f(a, b):
    h = jnp.tanh(a @ b)
    return h.T.copy() * 2.0 + 1.0
  a = jnp.asarray(np.random.default_rng(0).standard_normal((256, 128)), jnp.float32)
  b = jnp.asarray(np.random.default_rng(1).standard_normal((128, 192)), jnp.float32)
  compiled = jax.jit(f).lower(a, b).compile()
  return compiled, (a, b)


def test_instructions_carry_kind_shape_and_op_name():
  compiled, _ = _program()
  inst = tp.hlo_instructions(compiled.as_text())
  matmuls = [v for v in inst.values() if v["kind"] == "matmul"]
  assert matmuls, inst
  assert any("dot_general" in v["op_name"] for v in matmuls)
  assert any(v["shape"] == "f32[256,192]" for v in matmuls)
  assert all(v["kind"] in ("matmul", "layout copy", "other") for v in inst.values())


def test_layout_copy_kind_is_any_fusion_with_a_transpose():
  text = """HloModule m

%fused_t (p: f32[4,8]) -> f32[8,4] {
  %p = f32[4,8]{1,0} parameter(0)
  ROOT %t = f32[8,4]{1,0} transpose(%p), dimensions={1,0}
}

%fused_tm (p: f32[4,8]) -> f32[8,4] {
  %p = f32[4,8]{1,0} parameter(0)
  %t = f32[8,4]{1,0} transpose(%p), dimensions={1,0}
  ROOT %m = f32[8,4]{1,0} multiply(%t, %t)
}

%fused_m (p: f32[4,8]) -> f32[4,8] {
  %p = f32[4,8]{1,0} parameter(0)
  ROOT %m = f32[4,8]{1,0} multiply(%p, %p)
}

ENTRY %main (x: f32[4,8]) -> f32[8,4] {
  %x = f32[4,8]{1,0} parameter(0)
  %a = f32[8,4]{1,0} fusion(%x), kind=kLoop, calls=%fused_t, metadata={op_name="jit(f)/m/transpose"}
  %b = f32[8,4]{1,0} fusion(%x), kind=kLoop, calls=%fused_tm
  ROOT %c = f32[4,8]{1,0} fusion(%x), kind=kLoop, calls=%fused_m
}
"""
  inst = tp.hlo_instructions(text)
  assert inst["a"]["kind"] == "layout copy" and inst["a"]["op_name"] == "jit(f)/m/transpose"
  assert inst["b"]["kind"] == "layout copy" and inst["b"]["op_name"] == ""
  assert inst["c"]["kind"] == "other"
  assert inst["a"]["shape"] == "f32[8,4]"


def test_rows_drop_unknown_events_and_divide_by_calls():
  inst = {"dot.1": {"shape": "f32[2,2]", "opcode": "dot", "kind": "matmul",
                    "op_name": "jit(f)/M/enc/proj/dot_general"},
          "copy.2": {"shape": "f32[2,2]", "opcode": "copy", "kind": "layout copy",
                     "op_name": "jit(f)/M/enc/transpose"}}
  events = [{"name": "dot.1", "dur": 3000.0}, {"name": "dot.1", "dur": 1000.0},
            {"name": "copy.2", "dur": 1000.0}, {"name": "ThunkExecutor::Execute", "dur": 9e6}]
  rows = tp.thunk_rows(events, inst, calls=2)
  assert [(r["thunk"], r["ms_per_call"]) for r in rows] == [("dot.1", 2.0), ("copy.2", 0.5)]
  assert tp.by_kind(rows) == {"matmul": 2.0, "layout copy": 0.5}
  assert tp.by_scope(rows, 2) == {"M/enc [matmul]": 2.0, "M/enc [layout copy]": 0.5}
  assert tp.scope("jit(f)/M/enc/proj/dot_general", 3) == "M/enc/proj"
  assert tp.scope("", 3) == "(no op_name)"


def test_profile_of_a_real_program_times_its_matmul(tmp_path):
  compiled, args = _program()
  call = lambda: jax.block_until_ready(compiled(*args))
  call()
  rows = tp.profile_calls(call, 3, compiled.as_text(), str(tmp_path / "trace"))
  assert rows and all(r["ms_per_call"] >= 0 for r in rows)
  assert rows == sorted(rows, key=lambda r: -r["ms_per_call"])
  matmul = [r for r in rows if r["kind"] == "matmul"]
  assert matmul and matmul[0]["ms_per_call"] > 0
  path = tp.write_csv(rows, str(tmp_path / "t.csv"))
  with open(path) as f:
    back = list(csv.DictReader(f))
  assert [r["thunk"] for r in back] == [r["thunk"] for r in rows]
  png = tp.plot_scopes(rows, str(tmp_path / "t.png"), "test")
  assert os.path.getsize(png) > 1000
