r"""``--runner=beam``: the same per-recording unit of work as an Apache Beam pipeline.

The pipeline is ``Create(tasks) | Reshuffle | Map(job.convert_task)``: each element converts
one input file, writes its shard atomically and commits its journal entry exactly as the local
runner does (``data_prep.job.convert_task``), and returns the small state dict. The driver
collects the states and writes the manifest, so the output is byte-identical to a local run.
A Beam retry of an element rewrites the same shard name with the same bytes, so retries can
never duplicate windows.

Tests use the DirectRunner. On a cluster, ``--output`` (and ``--input``) must be a filesystem
that every worker mounts at the same path (NFS, Filestore, a gcsfuse/s3fs mount), and the
workers need this repository and ``requirements.txt`` installed (``--setup_file`` or a custom
container). Examples::

  # Google Cloud Dataflow
  python -m data_prep.convert --runner=beam --input=/mnt/eeg/tuh --recipe=pretrain_tcp20 \
      --output=/mnt/eeg/shards/tcp20 \
      --beam_options=--runner=DataflowRunner --beam_options=--project=MY_PROJECT \
      --beam_options=--region=europe-west4 --beam_options=--temp_location=gs://BUCKET/tmp \
      --beam_options=--sdk_container_image=REGISTRY/neuript-data-prep:latest

  # Apache Flink (portable runner against a Flink cluster)
  python -m data_prep.convert --runner=beam ... \
      --beam_options=--runner=FlinkRunner --beam_options=--flink_master=HOST:8081 \
      --beam_options=--environment_type=DOCKER \
      --beam_options=--environment_config=REGISTRY/neuript-data-prep:latest

  # Apache Spark
  python -m data_prep.convert --runner=beam ... \
      --beam_options=--runner=SparkRunner --beam_options=--spark_master_url=spark://HOST:7077 \
      --beam_options=--environment_type=DOCKER \
      --beam_options=--environment_config=REGISTRY/neuript-data-prep:latest

Local multi-process Beam: ``--beam_options=--direct_num_workers=8
--beam_options=--direct_running_mode=multi_processing``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from data_prep import job
from data_prep.recipes.base import Recipe


class _ConvertFn:
  """Picklable callable: task -> committed state (JSON text, to keep the coder trivial)."""

  def __init__(self, out_dir: str, recipe: Recipe):
    self.out_dir = out_dir
    self.recipe = recipe

  def __call__(self, task: job.Task) -> str:
    state = job.convert_task(task, self.out_dir, self.recipe)
    state.pop("seconds", None)
    return json.dumps(state, sort_keys=True)


def run_beam(tasks: Sequence[job.Task], out_dir: str | Path, recipe: Recipe,
             beam_options: Sequence[str] = ()) -> list[dict]:
  """Run ``convert_task`` over ``tasks`` in a Beam pipeline; returns the committed states."""
  import apache_beam as beam  # pylint: disable=g-import-not-at-top
  from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=g-import-not-at-top

  if not tasks:
    return []
  options = PipelineOptions(list(beam_options) or ["--runner=DirectRunner"])
  with beam.Pipeline(options=options) as p:
    _ = (p
         | "Inputs" >> beam.Create(list(tasks))
         | "Spread" >> beam.Reshuffle()
         | "Convert" >> beam.Map(_ConvertFn(str(out_dir), recipe)))
  # The states are committed on disk by each element; read them back (works for every runner,
  # where collecting a PCollection into the driver would not).
  states = []
  for t in tasks:
    state = job.load_state(Path(out_dir), t, recipe.config_hash)
    if state is None:
      raise RuntimeError(f"the Beam pipeline finished without committing {t.path}")
    states.append(state)
  return states
