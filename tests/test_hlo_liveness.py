"""bench.hlo_liveness: the live set at the peak of a scheduled HLO module."""

import jax
import jax.numpy as jnp
import pytest

from neuript_jax.bench import hlo_liveness

# A scheduled ENTRY: a (4 KiB) and the tuple t = (b 8 KiB, c 2 KiB) are made; c dies at once
# (its only use is e), a and b live to the ROOT's operand; d is on-chip memory (S(1)), the
# parameter is an argument, the bitcast and get-tuple-elements are aliases.
HLO = """HloModule m, is_scheduled=true

%fused (p: f32[1024]) -> f32[1024] {
  ROOT %p = f32[1024]{0} parameter(0)
}

ENTRY %main (x: f32[1024]) -> f32[1024] {
  %x = f32[1024]{0} parameter(0)
  %a = f32[1024]{0} fusion(%x), kind=kLoop, calls=%fused, metadata={op_name="jit(f)/jvp(M)/enc/a"}
  %t = (f32[2048]{0}, bf16[1024]{0}) fusion(%a), kind=kLoop, calls=%fused, metadata={op_name="jit(f)/transpose(jvp(M))/dec/layer_1/t"}
  %c = bf16[1024]{0} get-tuple-element(%t), index=1
  %e = f32[16]{0} fusion(%c), kind=kLoop, calls=%fused
  %b = f32[2048]{0} get-tuple-element(%t), index=0
  %d = f32[4096]{0:S(1)} fusion(%b), kind=kLoop, calls=%fused
  %ab = f32[2048]{0} bitcast(%a)
  %s = f32[1024]{0} fusion(%ab, %b, %e, %d), kind=kLoop, calls=%fused
  ROOT %r = f32[1024]{0} fusion(%s), kind=kLoop, calls=%fused
}
"""


def test_live_set_of_a_hand_written_module():
  live = hlo_liveness.analyse(HLO)
  # At %s (position 8): a 4 KiB, b 8 KiB, e 64 B, s 4 KiB; c died at e, d is on chip.
  assert live.peak_bytes == 4096 + 8192 + 64 + 4096
  assert [b.shape for b in live.live_at_peak] == ["f32[2048]", "f32[1024]", "f32[1024]",
                                                 "f32[16]"]
  b = live.live_at_peak[0]
  assert (b.op, b.first, b.last) == ("fusion", 2, 8)
  assert hlo_liveness.model_part(b.op_name) == "backward dec/layer_1"
  assert hlo_liveness.model_part(live.live_at_peak[1].op_name) == "forward enc/a"
  text = hlo_liveness.report(live, top=3)
  assert "backward dec/layer_1" in text and "f32[2048]" in text


def test_a_compiled_step_peak_holds_both_operands_of_the_last_matmul():
  """Two [512, 512] float32 products (1 MiB each) must coexist at the final matmul."""
  def f(x, w):
    a = jnp.sin(x) @ w
    b = jnp.cos(x) @ w
    return (a @ b).sum()
  x = jax.ShapeDtypeStruct((512, 512), jnp.float32)
  hlo = jax.jit(f).lower(x, x).compile().as_text()
  live = hlo_liveness.analyse(hlo)
  big = [b for b in live.live_at_peak if b.bytes == 512 * 512 * 4]
  assert len(big) >= 2, hlo_liveness.report(live)
  assert live.peak_bytes >= 2 * 512 * 512 * 4


def test_text_without_an_entry_is_refused():
  with pytest.raises(ValueError, match="no ENTRY computation"):
    hlo_liveness.analyse("HloModule m\n")


def test_tpu_tile_padding_is_counted():
  """bf16 [2048, 20, 8, 96] in layout {3,1,2,0:T(8,128)(2,1)}: 96 -> 128 lanes, 20 -> 32 rows
  (two bf16 rows per 32-bit sublane), so 2.13x its data."""
  shapes = hlo_liveness._shapes("bf16[2048,20,8,96]{3,1,2,0:T(8,128)(2,1)}")
  assert shapes == [("bf16[2048,20,8,96]", 2048 * 32 * 8 * 128 * 2)]
  assert hlo_liveness._shapes("f32[40,16,64]{2,1,0:T(8,128)}")[0][1] == 40 * 16 * 128 * 4
  assert hlo_liveness._shapes("f32[7,5]{1,0}")[0][1] == 7 * 5 * 4        # no tile: exact
