"""What the absl launchers share: multi-host start, quiet logging, the embedded default's data
and pretraining, and the flags of the evaluation launchers (evaluate, embed, probe).

A launcher imports this module (which defines --distributed, --coordinator_address,
--num_processes, --process_id and --verbose), then calls `start()` first thing in `main`.
"""

from __future__ import annotations

import logging as py_logging
import os

from absl import flags, logging

DISTRIBUTED = flags.DEFINE_bool("distributed", False, "call jax.distributed.initialize()")
COORD = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (omit on TPU "
                            "pods and SLURM/Open MPI, where JAX finds it)")
NPROC = flags.DEFINE_integer("num_processes", None, "number of processes")
PID = flags.DEFINE_integer("process_id", None, "this process's id")
VERBOSE = flags.DEFINE_bool("verbose", False, "show the libraries' INFO logs (orbax, absl, "
                            "backend probing)")

# Our own code: INFO records from files under these folders are shown; INFO records from
# anywhere else (orbax logs every checkpoint file, jax its backend probing) only with --verbose.
OWN_CODE = tuple(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), d)
                 for d in ("neuript_jax", "launch", "data_prep", "tests", "tools"))


class _OwnInfoOnly(py_logging.Filter):
  def filter(self, record):
    return record.levelno >= py_logging.WARNING or record.pathname.startswith(OWN_CODE)


def quiet_libraries(verbose: bool = False) -> None:
  """Libraries' INFO logs off unless `verbose`; their warnings and errors stay loud."""
  if verbose:
    return
  handlers = set(py_logging.getLogger().handlers) | {logging.get_absl_handler()}
  for h in handlers:
    if not any(isinstance(f, _OwnInfoOnly) for f in h.filters):
      h.addFilter(_OwnInfoOnly())


def start() -> None:
  """Quiet library logs; jax.distributed.initialize() when --distributed is set."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
  quiet_libraries(VERBOSE.value)
  if DISTRIBUTED.value:
    import jax
    jax.distributed.initialize(coordinator_address=COORD.value, num_processes=NPROC.value,
                               process_id=PID.value)


# -- the embedded default ------------------------------------------------------------------------

def with_demo_data(config, workdir: str, kind: str):
  """config with data.sources set to the synthetic demo corpus when it has none (written and
  converted once under <workdir>/data by process 0; the other processes wait for it).
  kind: "pretrain" (unlabelled, pretrain_tcp20 recipe) or "finetune" (labelled, generic)."""
  if config.data.sources:
    return config
  from data_prep import demo
  from neuript_jax.train import loop
  make = {"pretrain": demo.pretrain_corpus, "finetune": demo.labelled_corpus}[kind]
  shards = loop.prepare_once(f"{kind}_demo_corpus:{os.path.abspath(workdir)}",
                             lambda: make(workdir, config.synthetic))
  config = config.copy_and_resolve_references()
  config.data.sources = ((shards, 1.0),)
  logging.info("no data.sources: using the synthetic demo corpus in %s", shards)
  return config


def with_pretrained_demo(config, workdir: str):
  """config.init_from == "pretrain_demo": an existing demo pretraining workdir
  (config.pretrain_demo_dir) if it has checkpoints, else the pretraining demo is run now into
  <workdir>/pretrain (every process takes part)."""
  if config.init_from != "pretrain_demo":
    return config
  demo_dir = config.pretrain_demo_dir
  ckpts = os.path.join(demo_dir or "", "checkpoints")
  config = config.copy_and_resolve_references()
  if demo_dir and os.path.isdir(ckpts) and any(d.isdigit() for d in os.listdir(ckpts)):
    logging.info("init_from=pretrain_demo: using the pretraining run in %s", demo_dir)
    config.init_from = demo_dir
    return config
  from neuript_jax.configs import pretrain as pretrain_config
  from neuript_jax.train import pretrain
  target = os.path.join(workdir, "pretrain")
  logging.info("init_from=pretrain_demo: no pretraining run in %s; running the pretraining "
               "demo into %s first", demo_dir, target)
  pretrain.train(with_demo_data(pretrain_config.get_config(), target, "pretrain"), target)
  config.init_from = target
  return config


# -- flags of the evaluation launchers -------------------------------------------------------------

def define_eval_flags(checkpoint_help: str, multi_checkpoint: bool = False) -> None:
  """--checkpoint, --data, --batch_size, --window_len (evaluate, embed, probe)."""
  if multi_checkpoint:
    flags.DEFINE_multi_string("checkpoint", None, checkpoint_help, required=True)
  else:
    flags.DEFINE_string("checkpoint", None, checkpoint_help, required=True)
  flags.DEFINE_list("data", None, "data_prep output folder(s), comma separated", required=True)
  flags.DEFINE_integer("batch_size", 64, "eval batch size (the last batch is padded)")
  flags.DEFINE_string("window_len", "config", "'config' (as in training), 'none' or an "
                      "integer")


def define_encoder_config_flag() -> None:
  """--config: the model for encoder-only checkpoints (pretraining runs, reference files)."""
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", "neuript_jax/configs/finetune.py",
                                  "model (and data.alaw/window_len) for an encoder-only "
                                  "--checkpoint; ignored for a fine-tuning workdir")
