#!/usr/bin/env bash
# N local processes of one launcher, joined by jax.distributed, to try multi-host runs on one
# machine (each process gets its own simulated CPU devices).
#
#   launch/multihost_local.sh N [MODULE | -c CODE] [ARGS...]
#
#   launch/multihost_local.sh 2 --workdir=runs/mh --config.total_steps=12   # launch.pretrain
#   launch/multihost_local.sh 2 launch.finetune --workdir=runs/mh_ft
#   launch/multihost_local.sh 2 -c 'import sys; print(sys.argv[1:])'
#
# MODULE (default launch.pretrain; the first ARG if it does not start with '-') runs as
# `python -m MODULE ARGS... --distributed --coordinator_address=127.0.0.1:PORT
# --num_processes=N --process_id=i` for i = 0..N-1; with `-c CODE` the same flags follow
# `python -c CODE` (they are its sys.argv[1:]). PORT is a free local port.
#
# Environment:
#   DEVICES_PER_PROCESS  simulated CPU devices per process (default 2), through
#                        XLA_FLAGS=--xla_force_host_platform_device_count=K
#   JAX_PLATFORMS        default cpu (the simulated devices are CPU devices)
#   PYTHON               interpreter (default: the repo's .venv/bin/python, else python3)
#   COORDINATOR_PORT     port of the coordinator (default: a free one)
#   KILL_GRACE_S         seconds between SIGTERM and SIGKILL when stopping (default 10)
#
# Each output line is prefixed with "[i] ". When a process exits non-zero, or on Ctrl-C /
# SIGTERM, every other process gets SIGTERM (its whole process group), then SIGKILL after
# KILL_GRACE_S. Exit status: 0 when all N exit 0, else the first failure's status (130 after
# Ctrl-C, 143 after SIGTERM).
set -uo pipefail

usage() { echo "usage: $0 N [MODULE | -c CODE] [ARGS...]" >&2; exit 2; }
[[ $# -ge 1 && $1 =~ ^[1-9][0-9]*$ ]] || usage
n=$1
shift

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-}
if [[ -z $python ]]; then
  if [[ -x $repo/.venv/bin/python ]]; then python=$repo/.venv/bin/python; else python=python3; fi
fi

if [[ $# -ge 1 && $1 == "-c" ]]; then
  [[ $# -ge 2 ]] || usage
  target=(-c "$2")
  shift 2
elif [[ $# -ge 1 && $1 != -* ]]; then
  target=(-m "$1")
  shift
else
  target=(-m launch.pretrain)
fi

port=${COORDINATOR_PORT:-$("$python" -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')} || {
  echo "$0: cannot find a free port with $python" >&2; exit 2; }
k=${DEVICES_PER_PROCESS:-2}
[[ $k =~ ^[1-9][0-9]*$ ]] || { echo "$0: DEVICES_PER_PROCESS=$k is not a positive integer" >&2; exit 2; }
grace=${KILL_GRACE_S:-10}

export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=$k"
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

echo "[multihost_local] $n processes x $k devices, coordinator 127.0.0.1:$port: $python ${target[*]} $*" >&2

# Prefix each line as it comes (awk implementations may buffer their input).
prefix() {
  local line
  while IFS= read -r line || [[ -n $line ]]; do printf '[%s] %s\n' "$1" "$line"; done
}

# Job control: each process (with its output filter) is a job with its own process group, so
# a stop reaches its children too, and Ctrl-C reaches only this script, which stops them.
set -m
pids=()
for ((i = 0; i < n; i++)); do
  "$python" "${target[@]}" "$@" --distributed --coordinator_address="127.0.0.1:$port" \
      --num_processes="$n" --process_id="$i" 2>&1 \
    | prefix "$i" &
  pids+=("$(jobs -p %+)")   # the job's process-group id
done
set +m   # no job-status notices; the process groups stay

stop_all() {
  local pg alive
  for pg in "${pids[@]}"; do kill -TERM -- "-$pg" 2>/dev/null; done
  for ((t = 0; t < grace * 10; t++)); do
    alive=0
    for pg in "${pids[@]}"; do kill -0 -- "-$pg" 2>/dev/null && alive=1; done
    [[ $alive == 0 ]] && return
    sleep 0.1
  done
  for pg in "${pids[@]}"; do kill -KILL -- "-$pg" 2>/dev/null; done
}

on_signal() {
  echo "[multihost_local] $1: stopping all processes" >&2
  trap '' INT TERM   # a second Ctrl-C must not cut the stop short (SIGKILL follows anyway)
  stop_all
  wait 2>/dev/null
  exit "$2"
}
trap 'on_signal SIGINT 130' INT
trap 'on_signal SIGTERM 143' TERM

status=0
for ((left = n; left > 0; left--)); do
  wait -n
  rc=$?
  if [[ $rc != 0 ]]; then
    status=$rc
    echo "[multihost_local] a process exited with status $rc: stopping the others" >&2
    stop_all
    break
  fi
done
wait 2>/dev/null
exit "$status"
