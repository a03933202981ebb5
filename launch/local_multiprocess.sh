#!/usr/bin/env bash
# Rehearse a multi-host run on one machine: N CPU processes of distilface_jax.train, each with D
# simulated devices, joined through a coordinator on 127.0.0.1 exactly as TPU hosts would be.
#
#   launch/local_multiprocess.sh --num-processes 2 --devices-per-process 4 \
#       --config configs/tiny.py --workdir runs/tiny_mp
#
# Process i logs to WORKDIR/logs/process_i.log; the script fails if any process fails.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch/local_multiprocess.sh --config CONFIG --workdir DIR [options] [TRAIN_ARGS...]

Runs N local processes of `python -m distilface_jax.train` with
--coordinator_address=127.0.0.1:PORT --num_processes=N --process_id=I, on the CPU
(JAX_PLATFORMS=cpu) with D devices each (XLA_FLAGS=--xla_force_host_platform_device_count=D),
so the global batch is split over N hosts and N*D devices as on a pod.

Required:
  --config PATH              config file (e.g. configs/tiny.py)
  --workdir DIR              shared run directory; logs go to DIR/logs/process_I.log

Options:
  --num-processes N          number of processes (default 2)
  --devices-per-process D    simulated CPU devices per process (default 4)
  --port PORT                coordinator port (default: a free port)
  --python PYTHON            interpreter (default: $PYTHON, else python)
  --dry-run                  print the N commands instead of running them
  -h, --help                 this message

Every other argument (e.g. --config.max_steps=20) is passed to distilface_jax.train.
EOF
}

die() { echo "local_multiprocess.sh: $*" >&2; echo "Run launch/local_multiprocess.sh --help for usage." >&2; exit 2; }

quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_@%+=:,./~-]+$ ]]; then printf '%s' "$1"; else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}
quote_all() {
  local out="" word
  for word in "$@"; do out+="${out:+ }$(quote "$word")"; done
  printf '%s' "$out"
}

CONFIG="" WORKDIR="" NUM_PROCESSES=2 DEVICES_PER_PROCESS=4 PORT="" DRY_RUN=0
PYTHON_BIN="${PYTHON:-python}"
TRAIN_ARGS=()

need_value() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value"; }

parse_args() {
  while [[ $# -gt 0 ]]; do
    case "$1" in
      -h|--help) usage; exit 0 ;;
      --config) need_value "$@"; CONFIG="$2"; shift 2 ;;
      --workdir) need_value "$@"; WORKDIR="$2"; shift 2 ;;
      --num-processes) need_value "$@"; NUM_PROCESSES="$2"; shift 2 ;;
      --devices-per-process) need_value "$@"; DEVICES_PER_PROCESS="$2"; shift 2 ;;
      --port) need_value "$@"; PORT="$2"; shift 2 ;;
      --python) need_value "$@"; PYTHON_BIN="$2"; shift 2 ;;
      --dry-run) DRY_RUN=1; shift ;;
      --) shift; TRAIN_ARGS+=("$@"); break ;;
      *) TRAIN_ARGS+=("$1"); shift ;;
    esac
  done
  local missing=()
  [[ -n "$CONFIG" ]] || missing+=(--config)
  [[ -n "$WORKDIR" ]] || missing+=(--workdir)
  [[ ${#missing[@]} -eq 0 ]] || die "missing required argument(s): ${missing[*]}"
  [[ "$NUM_PROCESSES" =~ ^[1-9][0-9]*$ ]] || die "--num-processes must be a positive integer, got '$NUM_PROCESSES'"
  [[ "$DEVICES_PER_PROCESS" =~ ^[1-9][0-9]*$ ]] \
    || die "--devices-per-process must be a positive integer, got '$DEVICES_PER_PROCESS'"
  [[ -z "$PORT" || "$PORT" =~ ^[1-9][0-9]*$ ]] || die "--port must be an integer, got '$PORT'"
}

free_port() {
  # Bind to port 0 and let the kernel choose; a tiny race with other programs is acceptable here.
  local py port
  py="$(command -v python3 || echo "$PYTHON_BIN")"
  port="$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  [[ "$port" =~ ^[0-9]+$ ]] || die "could not find a free port (got '$port'); pass --port"
  echo "$port"
}

process_command() {  # process_command I -> the argv of process I, in CMD
  # Keep the caller's other XLA flags, but ours must be the only device count.
  local xla_flags
  xla_flags="$(printf '%s' "${XLA_FLAGS:-}" | sed -E 's/--xla_force_host_platform_device_count=[0-9]+//g; s/^ +| +$//g')"
  CMD=(env JAX_PLATFORMS=cpu
       "XLA_FLAGS=${xla_flags:+$xla_flags }--xla_force_host_platform_device_count=$DEVICES_PER_PROCESS"
       "$PYTHON_BIN" -m distilface_jax.train --config "$CONFIG" --workdir "$WORKDIR"
       --coordinator_address="127.0.0.1:$PORT" --num_processes="$NUM_PROCESSES" --process_id="$1"
       ${TRAIN_ARGS[@]+"${TRAIN_ARGS[@]}"})  # (the +-form: empty arrays under set -u in bash < 4.4)
}

PIDS=()
stop_all() {  # Only the processes this script started, by pid.
  local pid
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill "$pid" 2>/dev/null || true; done
}

main() {
  parse_args "$@"
  [[ -n "$PORT" ]] || PORT="$(free_port)"
  local i
  if [[ "$DRY_RUN" == 1 ]]; then
    for ((i = 0; i < NUM_PROCESSES; i++)); do
      process_command "$i"
      printf '+ %s > %s\n' "$(quote_all "${CMD[@]}")" "$(quote "$WORKDIR/logs/process_$i.log")"
    done
    return 0
  fi

  mkdir -p "$WORKDIR/logs"
  trap 'stop_all; exit 130' INT TERM
  for ((i = 0; i < NUM_PROCESSES; i++)); do
    process_command "$i"
    "${CMD[@]}" > "$WORKDIR/logs/process_$i.log" 2>&1 &
    PIDS+=("$!")
    echo "local_multiprocess.sh: process $i (pid $!) -> $WORKDIR/logs/process_$i.log" >&2
  done

  # Poll rather than wait in order: a failed process 1 must not go unnoticed while process 0
  # blocks in a collective until jax's heartbeat timeout. (kill -0 / wait PID: works in bash 3.2.)
  local failed=0 status running pid
  local -a done_flags=()
  for ((i = 0; i < NUM_PROCESSES; i++)); do done_flags[i]=0; done
  running="$NUM_PROCESSES"
  while [[ "$running" -gt 0 ]]; do
    for ((i = 0; i < NUM_PROCESSES; i++)); do
      pid="${PIDS[$i]}"
      if [[ "${done_flags[$i]}" == 1 ]] || kill -0 "$pid" 2>/dev/null; then continue; fi
      done_flags[i]=1; running=$((running - 1)); status=0
      wait "$pid" || status=$?
      if [[ "$status" != 0 ]]; then
        echo "local_multiprocess.sh: process $i exited with status $status; end of its log:" >&2
        tail -n 20 "$WORKDIR/logs/process_$i.log" >&2 || true
        [[ "$failed" != 0 ]] || stop_all
        failed=1
      fi
    done
    [[ "$running" == 0 ]] || sleep 1
  done
  [[ "$failed" == 0 ]] || exit 1
  echo "local_multiprocess.sh: all $NUM_PROCESSES processes finished" >&2
}

main "$@"
