#!/usr/bin/env bash
# GPU check, one command on a fresh NVIDIA machine with this repository (about 5 minutes):
#   1. install the requirements and the CUDA build of the pinned JAX (BUILD.md), unless JAX
#      already sees a GPU;
#   2. parity of every golden file (python -m launch.parity --golden_dir ...);
#   3. launch.bench --preset=paper in bfloat16 (pretraining and fine-tuning train steps, the
#      fine-tuning forward), with the PyTorch reference beside it when TORCH_REF is set;
#   4. launch.aot_memory: compiled per-device memory of the paper pretraining step on this GPU.
#
# Usage:  bash launch/gpu_check.sh [--dry_run]
#   --dry_run   print the commands, run nothing.
# Environment (all optional):
#   PYTHON         interpreter (default: .venv/bin/python if present, else python3)
#   OUT            results folder (default: ./gpu_check_out); every step writes STEP.log there,
#                  the bench also bench_paper.json, and summary.txt lists each step's status
#   GOLDEN_DIR     golden .npz folder (default: $NEURIPT_SHARED/golden, ../shared/golden or
#                  ./shared/golden, the first that exists)
#   TORCH_REF      the reference source folder, for the side-by-side bench
#   PIP_ARGS       extra pip arguments, e.g. "--no-index --find-links=/wheels" offline
#   BENCH_BATCHES  batch sizes to try in turn until one fits (default: "64 16")
#   SKIP_INSTALL=1 never pip install
# Exit status: 0 when every step that ran passed, 1 otherwise.
set -uo pipefail

cd "$(dirname "$0")/.."
DRY_RUN=0
for arg in "$@"; do
  case "$arg" in
    --dry_run) DRY_RUN=1 ;;
    *) echo "gpu_check.sh: unknown argument $arg (only --dry_run)" >&2; exit 2 ;;
  esac
done

if [[ -n "${PYTHON:-}" ]]; then PY="$PYTHON"
elif [[ -x .venv/bin/python ]]; then PY=.venv/bin/python
else PY=python3; fi
OUT="${OUT:-./gpu_check_out}"
JAX_VERSION="$(sed -n 's/^jax==//p' requirements.txt)"
BENCH_BATCHES="${BENCH_BATCHES:-64 16}"
if [[ -z "${GOLDEN_DIR:-}" ]]; then
  for d in "${NEURIPT_SHARED:-../shared}/golden" ../shared/golden ./shared/golden; do
    if [[ -d "$d" ]]; then GOLDEN_DIR="$d"; break; fi
  done
fi
GOLDEN_DIR="${GOLDEN_DIR:-../shared/golden}"
TORCH_FLAG=""
if [[ -n "${TORCH_REF:-}" ]]; then TORCH_FLAG="--torch_ref=$TORCH_REF"; fi

FAILED=0
if [[ "$DRY_RUN" != 1 ]]; then
  mkdir -p "$OUT"
  : > "$OUT/summary.txt"
fi

# step NAME TIMEOUT_S COMMAND...: run (or print) a command with a time limit, log it.
step() {
  local name="$1" limit="$2"
  shift 2
  if [[ "$DRY_RUN" == 1 ]]; then
    echo "[$name] timeout ${limit}s $*"
    return 0
  fi
  echo "== [$name] $*" | tee -a "$OUT/summary.txt"
  local start=$SECONDS rc
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  tail -n 25 "$OUT/$name.log"
  echo "   [$name] exit $rc after $((SECONDS - start)) s" | tee -a "$OUT/summary.txt"
  return $rc
}

gpu_seen() {
  "$PY" -c "import jax, sys; sys.exit(0 if jax.__version__ == '$JAX_VERSION' and \
jax.devices()[0].platform == 'gpu' else 1)" > /dev/null 2>&1
}

# 1. install
if [[ "${SKIP_INSTALL:-0}" != 1 ]] && { [[ "$DRY_RUN" == 1 ]] || ! gpu_seen; }; then
  # shellcheck disable=SC2086
  step install_requirements 240 "$PY" -m pip install -q ${PIP_ARGS:-} -r requirements.txt \
    || FAILED=1
  # shellcheck disable=SC2086
  step install_jax_cuda 240 "$PY" -m pip install -q ${PIP_ARGS:-} "jax[cuda12]==$JAX_VERSION" \
    || FAILED=1
fi
step devices 60 "$PY" -c "import jax; print(jax.__version__, jax.devices()); \
assert jax.devices()[0].platform == 'gpu', 'JAX sees no GPU'" || FAILED=1

# 2. parity
if [[ "$DRY_RUN" == 1 || -d "$GOLDEN_DIR" ]]; then
  step parity 120 "$PY" -m launch.parity --golden_dir="$GOLDEN_DIR" --full_table=false \
    || FAILED=1
else
  echo "   [parity] skipped: no golden folder at $GOLDEN_DIR (set GOLDEN_DIR)" \
    | tee -a "$OUT/summary.txt"
  FAILED=1
fi

# 3. bench (the first batch size that runs)
bench_failed=1
for batch in $BENCH_BATCHES; do
  # shellcheck disable=SC2086
  if step "bench_paper_b$batch" 150 "$PY" -m launch.bench --preset=paper --batch="$batch" \
      --steps=10 --parts=train1,train2,forward2 --model_override=dtype=bfloat16 \
      --json_out="$OUT/bench_paper.json" $TORCH_FLAG; then
    bench_failed=0
    [[ "$DRY_RUN" == 1 ]] || break
  fi
done
[[ "$bench_failed" == 0 ]] || FAILED=1

# 4. compiled memory of the pretraining step on this GPU
step aot_memory 120 "$PY" -m launch.aot_memory --preset=paper --mesh=1,1,1,1 --batch=16 \
  || FAILED=1

if [[ "$DRY_RUN" != 1 ]]; then
  echo "gpu_check: $([[ $FAILED == 0 ]] && echo all steps passed || echo some step FAILED);" \
       "logs in $OUT" | tee -a "$OUT/summary.txt"
fi
exit $FAILED
