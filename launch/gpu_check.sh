#!/usr/bin/env bash
# GPU check: build a bundle here, carry it to a bare GPU machine with no network, run once there.
#
#   bash launch/gpu_check.sh --bundle DIR [--dry_run]   # here: build DIR (see BUILD.md, GPU)
#   bash launch/gpu_check.sh [--from DIR] [--dry_run]   # there: install DIR's wheels, run
#
# --bundle DIR builds everything the GPU machine lacks, at most BUNDLE_LIMIT_MIB (64) MiB
# together with the repository's working tree (what travels with it), and fails if over:
#   DIR/wheels/    Python 3.12 manylinux x86_64 wheels (no deps resolved; the list is WHEELS
#                  below: what our code and the reference import that the image does not have)
#   DIR/golden/    the golden files (GOLDEN_DIR)
#   DIR/NeurIPT/   the reference source, cross_models/ utils/ LICENSE (TORCH_REF, default
#                  external/NeurIPT)
#   DIR/eegmat/    the eegmat shards (data_prep.convert --recipe=mental_arithmetic of
#                  EEGMAT_RAW), or, when they do not fit, DIR/eegmat_f16.npz: the same shards
#                  with float16 signals (launch/gpu_shard_pack.py; EEGMAT_PACK=auto|float32|
#                  float16|none)
# DIR must be a git-ignored folder of this repository (default .gpu_bundle) so that the device
# tool can carry it: run(command="bash launch/gpu_check.sh --from .gpu_bundle",
# carry=[".gpu_bundle"]).
#
# Run mode (default) installs the wheels offline (pip --no-index --no-deps --target), only
# those whose module does not import already, then runs each step under `timeout`, all within
# GPU_CHECK_TOTAL_S (480 s) of wall time; a step that fails is logged and the rest go on, a
# step that no longer fits in the time left is skipped:
#   devices, parity (float32, every golden file), bf16_deviation, bench stage 2 and stage 1
#   (ours, then the reference, one process each), memory of the stage-1 step (reference, ours:
#   launch/gpu_memory.py), eegmat fine-tune (configs/downstream/mental_arithmetic.py:paper if
#   FT_PAPER_MIN_S are left, else :cpu; old flags if that file does not exist), report.
# Results: $OUT (default ./gpu_check_out): summary.txt (one line per step), steps.log (every
# step's output), results.jsonl (one JSON line per step result), gpu_results.md (tables).
# Four files, since the device tool returns at most 8.
#
# Environment (all optional): PYTHON, OUT, GOLDEN_DIR, TORCH_REF, EEGMAT_RAW, EEGMAT_PACK,
# BUNDLE_LIMIT_MIB, GPU_CHECK_TOTAL_S, GPU_CHECK_WORK (scratch, default /tmp/gpu_check),
# BENCH_CONFIG (neuript_jax/configs/pretrain.py:paper; the bench and memory model),
# BENCH1_BATCH (4), BENCH2_BATCH (32), BENCH_STEPS (5), MEM_BATCHES ("1 2 4"),
# FT_PAPER_MIN_S (240), GPU_CHECK_STEP_SCALE (1: multiplies the step caps, for a slow machine),
# SKIP_INSTALL=1.
# Exit status: 0 when every step that ran passed, 1 otherwise, 2 for a usage error.
set -uo pipefail

cd "$(dirname "$0")/.."
REPO="$PWD"
DRY_RUN=0
MODE=run
BUNDLE=""
FROM=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry_run) DRY_RUN=1 ;;
    --bundle) MODE=bundle; BUNDLE="${2:-}"; shift ;;
    --bundle=*) MODE=bundle; BUNDLE="${1#--bundle=}" ;;
    --from) FROM="${2:-}"; shift ;;
    --from=*) FROM="${1#--from=}" ;;
    *) echo "gpu_check.sh: unknown argument $1 (--bundle DIR, --from DIR, --dry_run)" >&2
       exit 2 ;;
  esac
  shift
done
if [[ "$MODE" == bundle && -z "$BUNDLE" ]]; then
  echo "gpu_check.sh: --bundle needs a folder" >&2; exit 2
fi

if [[ -n "${PYTHON:-}" ]]; then PY="$PYTHON"
elif [[ -x .venv/bin/python ]]; then PY=.venv/bin/python
else PY=python3; fi

# What the GPU image lacks (its package list: Python 3.12, jax 0.11.2 + CUDA plugin, flax,
# optax, orbax-checkpoint, torch, einops, seaborn, scikit-learn, scipy, matplotlib, absl,
# etils, jinja2, lazy-loader, tqdm, ...): DIST==VERSION:MODULE. Pins follow requirements.txt.
WHEELS=(
  "ml-collections==1.1.0:ml_collections"
  "grain==0.2.18:grain"
  "array-record==0.8.6:array_record"
  "portpicker==1.6.0:portpicker"
  "mne==1.13.2:mne"
  "pooch==1.9.0:pooch"
  "platformdirs==4.14.9:platformdirs"
  "decorator==5.3.1:decorator"
  "edfio==0.4.18:edfio"
  "tensorboardX==2.6.5:tensorboardX"
)
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64
           manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64)
MIB=1048576

# mib BYTES -> "12.34"
mib() { awk -v b="$1" 'BEGIN { printf "%.2f", b / 1048576 }'; }
# bytes PATH... -> total size of the files under PATHs (0 if none exist)
bytes() {
  local total=0 p
  for p in "$@"; do
    [[ -e "$p" ]] && total=$((total + $(du -sb "$p" | cut -f1)))
  done
  echo "$total"
}
# tree_bytes -> size of what the device tool sends besides carried paths: tracked files and
# untracked files git does not ignore
tree_bytes() {
  git ls-files -co --exclude-standard -z | while IFS= read -r -d '' f; do
    [[ -f "$f" ]] && stat -c %s "$f"
  done | awk '{ s += $1 } END { print s + 0 }'
}

# ============================================================================== bundle mode
if [[ "$MODE" == bundle ]]; then
  LIMIT_MIB="${BUNDLE_LIMIT_MIB:-64}"
  GOLDEN_DIR="${GOLDEN_DIR:-}"
  if [[ -z "$GOLDEN_DIR" ]]; then
    for d in "${NEURIPT_SHARED:-../shared}/golden" ../shared/golden ./shared/golden; do
      if [[ -d "$d" ]]; then GOLDEN_DIR="$d"; break; fi
    done
  fi
  GOLDEN_DIR="${GOLDEN_DIR:-../shared/golden}"
  REF="${TORCH_REF:-external/NeurIPT}"
  EEGMAT_RAW="${EEGMAT_RAW:-${NEURIPT_SHARED:-../shared}/data/eegmat}"
  [[ -d "$EEGMAT_RAW/eeg-during-mental-arithmetic-tasks-1.0.0" ]] \
    && EEGMAT_RAW="$EEGMAT_RAW/eeg-during-mental-arithmetic-tasks-1.0.0"
  EEGMAT_PACK="${EEGMAT_PACK:-auto}"
  SCRATCH="${GPU_CHECK_WORK:-/tmp/gpu_check_bundle}"
  SHARDS="$SCRATCH/eegmat_shards"
  specs=()
  for w in "${WHEELS[@]}"; do specs+=("${w%%:*}"); done
  plat=()
  for p in "${PLATFORMS[@]}"; do plat+=(--platform "$p"); done
  pip_cmd=("$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12
           --implementation cp "${plat[@]}" -d "$BUNDLE/wheels" "${specs[@]}")
  convert_cmd=("$PY" -m data_prep.convert --input="$EEGMAT_RAW" --recipe=mental_arithmetic
               --output="$SHARDS" --workers=1)
  if [[ "$DRY_RUN" == 1 ]]; then
    echo "[bundle] into $BUNDLE (at most $LIMIT_MIB MiB with the working tree)"
    echo "[wheels] ${pip_cmd[*]}"
    echo "[golden] cp $GOLDEN_DIR/*.npz $GOLDEN_DIR/README.md $BUNDLE/golden/"
    echo "[reference] cp -r $REF/{cross_models,utils,LICENSE} $BUNDLE/NeurIPT/ (*.py only)"
    echo "[eegmat] ${convert_cmd[*]}"
    echo "[eegmat] EEGMAT_PACK=$EEGMAT_PACK: copy $SHARDS (no .state/) to $BUNDLE/eegmat if" \
         "it fits, else $PY -m launch.gpu_shard_pack pack $SHARDS $BUNDLE/eegmat_f16.npz"
    echo "[sizes] working tree $(mib "$(tree_bytes)") MiB now; parts and total printed," \
         "fails if over $LIMIT_MIB MiB"
    exit 0
  fi
  fail() { echo "gpu_check.sh --bundle: $*" >&2; exit 1; }
  # The device tool carries only ignored folders of this repository (others travel as part
  # of the tree and would count twice).
  abs_bundle="$(mkdir -p "$BUNDLE" && cd "$BUNDLE" && pwd)"
  case "$abs_bundle/" in
    "$REPO"/*)
      git check-ignore -q "$abs_bundle" || fail "$BUNDLE is not git-ignored: add it to" \
          ".gitignore, or the device tool sends it as part of the working tree" ;;
    *) echo "note: $BUNDLE is outside the repository; copy it into an ignored folder of it" \
            "to carry it" ;;
  esac
  [[ -d "$GOLDEN_DIR" ]] || fail "no golden folder at $GOLDEN_DIR (set GOLDEN_DIR)"
  [[ -d "$REF/cross_models" ]] || fail "no reference source at $REF (cross_models/ missing;" \
      "set TORCH_REF to the NeurIPT source folder)"
  rm -rf "$BUNDLE/wheels" "$BUNDLE/golden" "$BUNDLE/NeurIPT" "$BUNDLE/eegmat" \
         "$BUNDLE/eegmat_f16.npz"
  mkdir -p "$BUNDLE/wheels" "$BUNDLE/golden" "$BUNDLE/NeurIPT"
  echo "[wheels] ${specs[*]}"
  "${pip_cmd[@]}" 2> >(grep -v "^WARNING: Location" >&2) || fail "pip download failed (see above)"
  n_wheels=$(ls "$BUNDLE/wheels"/*.whl 2>/dev/null | wc -l)
  [[ "$n_wheels" == "${#WHEELS[@]}" ]] || fail "expected ${#WHEELS[@]} wheels in" \
      "$BUNDLE/wheels, found $n_wheels"
  echo "[golden] $GOLDEN_DIR"
  cp "$GOLDEN_DIR"/*.npz "$BUNDLE/golden/" || fail "copying $GOLDEN_DIR/*.npz failed"
  [[ -f "$GOLDEN_DIR/README.md" ]] && cp "$GOLDEN_DIR/README.md" "$BUNDLE/golden/"
  echo "[reference] $REF"
  (cd "$REF" && find cross_models utils -name '*.py' -exec cp --parents {} \
      "$abs_bundle/NeurIPT/" \;) || fail "copying the reference from $REF failed"
  [[ -f "$REF/LICENSE" ]] && cp "$REF/LICENSE" "$BUNDLE/NeurIPT/"
  if [[ "$EEGMAT_PACK" != none ]]; then
    if [[ ! -f "$SHARDS/manifest.json" ]]; then
      [[ -d "$EEGMAT_RAW" ]] || fail "no eegmat recordings at $EEGMAT_RAW (set EEGMAT_RAW)"
      echo "[eegmat] converting $EEGMAT_RAW into $SHARDS"
      "${convert_cmd[@]}" > "$SCRATCH.convert.log" 2>&1 \
          || fail "conversion failed; log: $SCRATCH.convert.log"
    else
      echo "[eegmat] reusing $SHARDS"
    fi
  fi
  tree=$(tree_bytes)
  others=$(bytes "$BUNDLE/wheels" "$BUNDLE/golden" "$BUNDLE/NeurIPT")
  room=$((LIMIT_MIB * MIB - tree - others))
  shards_bytes=$(bytes "$SHARDS/manifest.json" "$SHARDS/train" "$SHARDS/val" "$SHARDS/test")
  eegmat_mode="$EEGMAT_PACK"
  if [[ "$EEGMAT_PACK" == auto ]]; then
    if (( shards_bytes <= room )); then eegmat_mode=float32; else eegmat_mode=float16; fi
    echo "[eegmat] float32 shards $(mib "$shards_bytes") MiB, room $(mib "$room") MiB:" \
         "$eegmat_mode"
  fi
  case "$eegmat_mode" in
    float32)
      mkdir -p "$BUNDLE/eegmat"
      (cd "$SHARDS" && find . -path ./.state -prune -o -type f -exec cp --parents {} \
          "$abs_bundle/eegmat/" \;) || fail "copying $SHARDS failed" ;;
    float16)
      "$PY" -m launch.gpu_shard_pack pack "$SHARDS" "$BUNDLE/eegmat_f16.npz" \
          || fail "packing $SHARDS failed" ;;
    none) ;;
    *) fail "EEGMAT_PACK=$EEGMAT_PACK: choose auto, float32, float16 or none" ;;
  esac
  eeg=$(bytes "$BUNDLE/eegmat" "$BUNDLE/eegmat_f16.npz")
  total=$((tree + others + eeg))
  {
    echo "gpu_check bundle, commit $(git rev-parse --short HEAD 2>/dev/null)," \
         "$(date -u +%Y-%m-%dT%H:%MZ)"
    printf '  %-34s %9s MiB\n' "working tree (travels anyway)" "$(mib "$tree")"
    printf '  %-34s %9s MiB\n' "wheels ($n_wheels)" "$(mib "$(bytes "$BUNDLE/wheels")")"
    printf '  %-34s %9s MiB\n' "golden files" "$(mib "$(bytes "$BUNDLE/golden")")"
    printf '  %-34s %9s MiB\n' "reference source" "$(mib "$(bytes "$BUNDLE/NeurIPT")")"
    printf '  %-34s %9s MiB\n' "eegmat shards ($eegmat_mode)" "$(mib "$eeg")"
    printf '  %-34s %9s MiB (limit %s MiB)\n' "total" "$(mib "$total")" "$LIMIT_MIB"
  } | tee "$BUNDLE/BUNDLE.txt"
  if (( total > LIMIT_MIB * MIB )); then
    fail "OVER THE LIMIT: $(mib "$total") MiB > $LIMIT_MIB MiB; use EEGMAT_PACK=float16 or" \
         "none, or carry less"
  fi
  echo "ok: carry it with run(command=\"bash launch/gpu_check.sh --from $BUNDLE\"," \
       "carry=[\"$BUNDLE\"], timeout_s=540)"
  exit 0
fi

# ================================================================================= run mode
if [[ -z "$FROM" ]] && [[ -d .gpu_bundle || "$DRY_RUN" == 1 ]]; then FROM=.gpu_bundle; fi
OUT="${OUT:-./gpu_check_out}"
WORK="${GPU_CHECK_WORK:-/tmp/gpu_check}"
TOTAL_S="${GPU_CHECK_TOTAL_S:-480}"
GOLDEN_DIR="${GOLDEN_DIR:-}"
if [[ -z "$GOLDEN_DIR" ]]; then
  for d in ${FROM:+"$FROM/golden"} "${NEURIPT_SHARED:-../shared}/golden" ../shared/golden \
           ./shared/golden; do
    if [[ -d "$d" ]]; then GOLDEN_DIR="$d"; break; fi
  done
fi
GOLDEN_DIR="${GOLDEN_DIR:-${FROM:-../shared}/golden}"
REF="${TORCH_REF:-}"
if [[ -z "$REF" ]]; then
  for d in ${FROM:+"$FROM/NeurIPT"} external/NeurIPT; do
    if [[ -d "$d/cross_models" ]]; then REF="$d"; break; fi
  done
fi
BENCH_CONFIG="${BENCH_CONFIG:-neuript_jax/configs/pretrain.py:paper}"
B1="${BENCH1_BATCH:-4}"
B2="${BENCH2_BATCH:-32}"
STEPS="${BENCH_STEPS:-5}"
MEM_BATCHES="${MEM_BATCHES:-1 2 4}"
FT_PAPER_MIN_S="${FT_PAPER_MIN_S:-240}"
STEP_SCALE="${GPU_CHECK_STEP_SCALE:-1}"      # multiplies every step's time cap
REPORT_RESERVE_S=20
START=$SECONDS
FAILED=0

export PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false     # ours and the reference share the GPU
export JAX_COMPILATION_CACHE_DIR="$WORK/jax_cache"   # bench and memory reuse compiles
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=1
if [[ -n "$FROM" ]] && [[ -d "$FROM/wheels" || "$DRY_RUN" == 1 ]]; then
  export PYTHONPATH="$WORK/site:$REPO${PYTHONPATH:+:$PYTHONPATH}"
fi

if [[ "$DRY_RUN" != 1 ]]; then
  mkdir -p "$OUT" "$WORK"
  : > "$OUT/summary.txt"
  : > "$OUT/steps.log"
  : > "$OUT/results.jsonl"
fi

left() { echo $((TOTAL_S - (SECONDS - START))); }

plan="[plan] $TOTAL_S s in all; bundle ${FROM:-none}:"
for part in wheels golden NeurIPT eegmat eegmat_f16.npz; do
  [[ -n "$FROM" && -e "$FROM/$part" ]] && plan+=" $part $(mib "$(bytes "$FROM/$part")") MiB,"
done
plan+=" golden $GOLDEN_DIR, reference ${REF:-none}"
if [[ "$DRY_RUN" == 1 ]]; then echo "$plan"; else echo "$plan" | tee -a "$OUT/summary.txt"; fi

# step NAME CAP_S COMMAND...: run a command under timeout min(CAP_S, time left - reserve),
# its output appended to steps.log; skipped when less than 15 s would be left for it.
step() {
  local name="$1" cap="$2"
  shift 2
  if [[ "$DRY_RUN" == 1 ]]; then
    echo "[$name] timeout ${cap}s $*"
    return 0
  fi
  cap=$((cap * STEP_SCALE))
  local limit=$(( $(left) - REPORT_RESERVE_S ))
  (( limit > cap )) && limit=$cap
  if (( limit < 15 )); then
    echo "   [$name] SKIPPED: $(left) s of the $TOTAL_S s left" | tee -a "$OUT/summary.txt"
    echo "== [$name] skipped (time)" >> "$OUT/steps.log"
    return 1
  fi
  echo "== [$name] (limit ${limit}s) $*" | tee -a "$OUT/summary.txt" >> "$OUT/steps.log"
  local start=$SECONDS rc
  timeout -k 10 "$limit" "$@" >> "$OUT/steps.log" 2>&1
  rc=$?
  local note=""
  [[ $rc == 124 ]] && note=" (TIMED OUT)"
  echo "   [$name] exit $rc after $((SECONDS - start)) s$note" \
    | tee -a "$OUT/summary.txt" | tee -a "$OUT/steps.log"
  return $rc
}

# collect NAME FILE: append {"step": NAME, "result": <FILE's JSON>} to results.jsonl
collect() {
  [[ "$DRY_RUN" == 1 ]] && return 0
  if [[ -s "$2" ]]; then
    "$PY" -c "import json, sys; t = open(sys.argv[2]).read().strip()
try: r = json.loads(t)
except ValueError: r = json.loads(t.splitlines()[-1])
print(json.dumps({'step': sys.argv[1], 'result': r}))" "$1" "$2" \
      >> "$OUT/results.jsonl" 2>> "$OUT/steps.log" \
      || echo "   [$1] unreadable $2" >> "$OUT/steps.log"
  fi
}

# --- 1. offline install of what does not import yet
if [[ "${SKIP_INSTALL:-0}" != 1 && -n "$FROM" ]] && [[ -d "$FROM/wheels" || "$DRY_RUN" == 1 ]]
then
  files=()
  for w in "${WHEELS[@]}"; do
    dist="${w%%==*}"; mod="${w##*:}"
    pattern="$(echo "${dist}" | tr '-' '_')"
    if [[ "$DRY_RUN" == 1 ]] || ! "$PY" -c "import $mod" > /dev/null 2>&1; then
      f=$(ls "$FROM/wheels/" 2>/dev/null | grep -i "^${pattern}-" | head -1)
      files+=("$FROM/wheels/${f:-${pattern}-MISSING.whl}")
    fi
  done
  if [[ ${#files[@]} -gt 0 ]]; then
    step install 90 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --upgrade --target "$WORK/site" "${files[@]}" || FAILED=1
  fi
fi
step devices 60 "$PY" -c "import jax, flax, optax, orbax.checkpoint, numpy, sys; \
print('python', sys.version.split()[0], 'jax', jax.__version__, 'flax', flax.__version__, \
'optax', optax.__version__, 'numpy', numpy.__version__); print(jax.devices()); \
import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available()); \
assert jax.devices()[0].platform == 'gpu', 'JAX sees no GPU'" || FAILED=1
if [[ "$DRY_RUN" != 1 ]] && command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv \
    >> "$OUT/steps.log" 2>&1
fi

# --- 2. parity at float32, then the bf16 deviation
if [[ "$DRY_RUN" == 1 || -d "$GOLDEN_DIR" ]]; then
  step parity 120 "$PY" -m launch.parity --golden_dir="$GOLDEN_DIR" --full_table=false \
    || FAILED=1
  step bf16_deviation 90 "$PY" -m launch.gpu_bf16_deviation --golden_dir="$GOLDEN_DIR" \
    --json_out="$WORK/bf16_deviation.json" || FAILED=1
  collect bf16_deviation "$WORK/bf16_deviation.json"
else
  echo "   [parity] SKIPPED: no golden folder at $GOLDEN_DIR (set GOLDEN_DIR)" \
    | tee -a "$OUT/summary.txt"
  FAILED=1
fi

# --- 3. bench: the paper model in bf16 (pretrain.py:paper), one side per process
if [[ "$DRY_RUN" == 1 ]] && ! "$PY" -c "import absl" > /dev/null 2>&1; then
  bench_help=""
else
  bench_help="$("$PY" -m launch.bench --help 2>&1 | head -c 200000)"
fi
if grep -q -- "--config" <<< "$bench_help"; then      # the experiment-config grammar
  BENCH_MODEL=(--config="$BENCH_CONFIG")
  BATCH_FLAG=--config.data.global_batch_size
else                                                # the preset grammar before it
  BENCH_MODEL=(--preset=paper --model_override=dtype=bfloat16 --model_override=remat=block)
  BATCH_FLAG=--batch
fi
bench() {   # bench NAME BATCH PARTS
  local name="$1" batch="$2" parts="$3" side
  for side in jax torch; do
    if [[ "$side" == torch && -z "$REF" ]]; then
      echo "   [${name}_torch] SKIPPED: no reference source (TORCH_REF)" \
        | tee -a "$OUT/summary.txt"
      continue
    fi
    step "${name}_$side" 200 "$PY" -m launch.bench "${BENCH_MODEL[@]}" "$BATCH_FLAG=$batch" \
      --steps="$STEPS" --parts="$parts" --side="$side" ${REF:+--torch_ref="$REF"} \
      --json_out="$WORK/${name}_$side.json" || FAILED=1
    collect "${name}_$side" "$WORK/${name}_$side.json"
  done
}
bench bench_stage2 "$B2" train2,forward2
bench bench_stage1 "$B1" train1,forward1

# --- 4. peak memory of the stage-1 step: the reference, then ours
mem_batches="$(echo $MEM_BATCHES | tr ' ' ',')"
if [[ -n "$REF" ]]; then
  # Each batch's process first builds our stage-1 state on the CPU (JAX_PLATFORMS=cpu) for
  # the step-0 masks; the compile cache makes that quicker after the first.
  step memory_torch 180 "$PY" -m launch.gpu_memory --config="$BENCH_CONFIG" --side=torch \
    --torch_ref="$REF" --batches="$mem_batches" --max_evals=7 --time_budget_s=150 \
    --eval_timeout_s=120 --json_out="$WORK/memory_torch.json" || FAILED=1
  collect memory_torch "$WORK/memory_torch.json"
fi
step memory_jax 200 "$PY" -m launch.gpu_memory --config="$BENCH_CONFIG" --side=jax \
  --batches="$mem_batches" --max_evals=5 --time_budget_s=150 --eval_timeout_s=150 \
  --json_out="$WORK/memory_jax.json" || FAILED=1
collect memory_jax "$WORK/memory_jax.json"

# --- 5. eegmat fine-tune from scratch: :paper when time allows, else :cpu
EEGMAT=""
if [[ -n "$FROM" && -f "$FROM/eegmat/manifest.json" ]]; then
  EEGMAT="$FROM/eegmat"
elif [[ -n "$FROM" && -f "$FROM/eegmat_f16.npz" ]]; then
  EEGMAT="$WORK/eegmat"
  step eegmat_unpack 60 "$PY" -m launch.gpu_shard_pack unpack "$FROM/eegmat_f16.npz" \
    "$EEGMAT" || { FAILED=1; EEGMAT=""; }
elif [[ "$DRY_RUN" == 1 ]]; then
  EEGMAT="${FROM:-.gpu_bundle}/eegmat"
fi
FT_CFG=neuript_jax/configs/downstream/mental_arithmetic.py
if [[ -n "$EEGMAT" ]]; then
  size=cpu
  [[ "$DRY_RUN" == 1 ]] || (( $(left) - REPORT_RESERVE_S >= FT_PAPER_MIN_S )) && size=paper
  sources="--config.data.sources=(('$(realpath -m "$EEGMAT")', 1.0),)"
  if [[ -f "$FT_CFG" ]]; then
    if [[ "$DRY_RUN" != 1 ]] && ! "$PY" -c "import runpy, sys; \
runpy.run_path(sys.argv[1])['get_config'](sys.argv[2])" "$FT_CFG" "$size" \
        >> "$OUT/steps.log" 2>&1; then
      echo "   [finetune_eegmat] $FT_CFG:$size does not build; trying :cpu" \
        | tee -a "$OUT/summary.txt"
      size=cpu
    fi
    FT_ARGS=(--config="$FT_CFG:$size" "$sources")
  else
    echo "   [finetune_eegmat] $FT_CFG does not exist yet: old flags" \
      "(finetune.py, eegmat overrides)" | tee -a "$OUT/summary.txt"
    [[ "$size" == cpu ]] && size=small
    FT_ARGS=(--config="neuript_jax/configs/finetune.py:$size" "$sources" --config.init_from=
             --config.model.T=320 --config.model.num_classes=2
             --config.model.data=MentalArithmetic)
  fi
  step "finetune_eegmat_$size" 600 "$PY" -m launch.finetune "${FT_ARGS[@]}" \
    --workdir="$WORK/finetune_eegmat_$size" || FAILED=1
  collect "finetune_eegmat_$size" "$WORK/finetune_eegmat_$size/results.json"
else
  echo "   [finetune_eegmat] SKIPPED: no eegmat shards (none in ${FROM:-no --from}, or the" \
       "unpack failed or was skipped)" \
    | tee -a "$OUT/summary.txt"
fi

# --- 6. report: the tables of every result so far
if [[ "$DRY_RUN" == 1 ]]; then
  echo "[report] $PY -m launch.gpu_report $OUT/results.jsonl $OUT/gpu_results.md"
  exit 0
fi
REPORT_RESERVE_S=0
step report 20 "$PY" -m launch.gpu_report "$OUT/results.jsonl" "$OUT/gpu_results.md" \
  || FAILED=1
cat "$OUT/gpu_results.md" 2>/dev/null
verdict="all steps passed"
[[ $FAILED == 0 ]] || verdict="some step FAILED or was skipped"
echo "gpu_check: $verdict; $((SECONDS - START)) s; logs in $OUT" | tee -a "$OUT/summary.txt"
exit $FAILED
