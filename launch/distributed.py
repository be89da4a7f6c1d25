"""Multi-host start shared by the training launchers: --distributed and its three options.

Import this module from a launcher to define the flags; call `initialize()` first thing in
`main`, before any JAX device is touched.
"""

from __future__ import annotations

from absl import flags

DISTRIBUTED = flags.DEFINE_bool("distributed", False, "call jax.distributed.initialize()")
COORD = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (omit on TPU "
                            "pods and SLURM/Open MPI, where JAX finds it)")
NPROC = flags.DEFINE_integer("num_processes", None, "number of processes")
PID = flags.DEFINE_integer("process_id", None, "this process's id")


def initialize() -> None:
  """jax.distributed.initialize() when --distributed is set; otherwise nothing."""
  if DISTRIBUTED.value:
    import jax
    jax.distributed.initialize(coordinator_address=COORD.value, num_processes=NPROC.value,
                               process_id=PID.value)
