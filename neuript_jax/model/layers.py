"""Small building blocks shared by the NeurIPT modules: Dense and LayerNorm with the
reference's (PyTorch) initialisation and epsilon, and with logical axis names for sharding.

Logical axes (mapped to mesh axes by the training config, MaxText style):
  "embed" d_model, "mlp" FFN hidden, "heads" attention q/k/v/o width, "expert" expert index,
  "merge" SegMerging concatenated width, "seg" patch length, "classes" head outputs.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from neuript_jax.model.mesh_axes import MLP_MESH_AXIS, mesh_axis_size, target_platform


def torch_linear_kernel_init(key, shape, dtype=jnp.float32):
  """PyTorch nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)); fan_in = shape[-2]."""
  bound = 1.0 / jnp.sqrt(shape[-2])
  return jax.random.uniform(key, shape, dtype, -bound, bound)


def torch_linear_bias_init(fan_in: int):
  def init(key, shape, dtype=jnp.float32):
    bound = 1.0 / jnp.sqrt(fan_in)
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


class Dense(nn.Module):
  """y = x @ kernel + bias; kernel [in, out] (the transpose of torch's weight)."""
  features: int
  axes: Sequence[str] = ("embed", "mlp")
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, column_blocks: int = 1):
    """x [..., in] -> y [..., features]; with column_blocks n > 1, the tuple of n outputs
    [..., features / n] of the kernel's column blocks, one matmul each (the same numbers as
    slicing y)."""
    fan_in = x.shape[-1]
    kernel = self.param("kernel", nn.with_logical_partitioning(
        torch_linear_kernel_init, tuple(self.axes)), (fan_in, self.features), jnp.float32)
    bias = self.param("bias", nn.with_logical_partitioning(
        torch_linear_bias_init(fan_in), (self.axes[-1],)), (self.features,), jnp.float32)
    x, kernel, bias = x.astype(self.dtype), kernel.astype(self.dtype), bias.astype(self.dtype)
    if column_blocks == 1:
      return jnp.einsum("...i,io->...o", x, kernel) + bias
    if self.features % column_blocks:
      raise ValueError(f"Dense {self.name}: {self.features} features do not split into "
                       f"{column_blocks} column blocks")
    w = self.features // column_blocks
    blocks = [slice(j * w, (j + 1) * w) for j in range(column_blocks)]
    return tuple(jnp.einsum("...i,io->...o", x, kernel[:, c]) + bias[c] for c in blocks)


class LayerNorm(nn.Module):
  """LayerNorm over the last axis, eps 1e-5 (PyTorch default), statistics in float32."""
  axis_name: str = "embed"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    dim = x.shape[-1]
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones,
                                                             (self.axis_name,)), (dim,))
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros,
                                                           (self.axis_name,)), (dim,))
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + 1e-5) * scale + bias
    return y.astype(self.dtype)


@jax.custom_vjp
def swiglu_gate(h):
  """[..., 2h] -> [..., h]: SiLU(a) * g for the halves [a | g] of the last axis.

  The backward recomputes the sigmoid from h (the only saved residual, and already the output
  of the preceding matmul) instead of letting autodiff store sigmoid(a) and SiLU(a): two fewer
  [tokens, h] activations written and read per FFN (about 2% of a stage-2 step on CPU).
  """
  a, g = jnp.split(h, 2, axis=-1)
  return nn.silu(a) * g


def _swiglu_grads(a, g, dy):
  """(d/da, d/dg) of SiLU(a) * g for the output cotangent dy."""
  s = jax.nn.sigmoid(a)
  return dy * g * s * (1 + a * (1 - s)), dy * (a * s)


def _swiglu_gate_fwd(h):
  return swiglu_gate(h), h


def _swiglu_gate_bwd(h, dy):
  return (jnp.concatenate(_swiglu_grads(*jnp.split(h, 2, axis=-1), dy), axis=-1),)


swiglu_gate.defvjp(_swiglu_gate_fwd, _swiglu_gate_bwd)


@jax.custom_vjp
def swiglu_halves(a, g):
  """a, g [..., h] -> SiLU(a) * g: swiglu_gate on halves that two matmuls wrote apart; the
  backward likewise recomputes the sigmoid from the saved a and g."""
  return nn.silu(a) * g


def _swiglu_halves_fwd(a, g):
  return swiglu_halves(a, g), (a, g)


def _swiglu_halves_bwd(res, dy):
  return _swiglu_grads(*res, dy)


swiglu_halves.defvjp(_swiglu_halves_fwd, _swiglu_halves_bwd)


class SwiGLU(nn.Module):
  """SwiGLU FFN: Linear(d -> 2h), [a | g] halves, SiLU(a) * g, Linear(h -> d).

  On CPU the input projection runs as two matmuls, one per half (`Dense(column_blocks=2)`,
  the same numbers): XLA:CPU's matmul (YNNPACK) is slower per FLOP when a K = 192 product is
  wider than 192 columns, and a is then not split out of one [..., 2h] buffer
  (BENCHMARKS.md, "Split SwiGLU projection"). Not when the mesh's "tensor" axis shards the
  hidden units ("mlp"): each half would then sit on other devices than the one [d, 2h]
  kernel's shards.
  """
  hidden: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    d = x.shape[-1]
    wi = Dense(2 * self.hidden, ("embed", "mlp"), self.dtype, name="wi")
    if target_platform() == "cpu" and mesh_axis_size(MLP_MESH_AXIS) == 1:
      gated = swiglu_halves(*wi(x, column_blocks=2))
    else:
      gated = swiglu_gate(wi(x))
    return Dense(d, ("mlp", "embed"), self.dtype, name="wo")(gated)
