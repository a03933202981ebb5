#!/usr/bin/env bash
# Single-process local training: the plain CLI, for symmetry with local_multiprocess.sh and tpu_pod.sh.
#
#   launch/train_local.sh --config configs/tiny.py --workdir runs/tiny [--config.max_steps=20 ...]
#
# Uses every local device of one machine (one GPU, or the CPU). Rerun to resume from WORKDIR.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: launch/train_local.sh --config CONFIG --workdir DIR [--dry-run] [TRAIN_ARGS...]

Runs `python -m distilface_jax.train --config CONFIG --workdir DIR TRAIN_ARGS...` in one process
(--distributed=off: never joins a cluster). $PYTHON picks the interpreter (default: python).
--dry-run prints the command instead of running it.
USAGE
}

die() { echo "train_local.sh: $*" >&2; echo "Run launch/train_local.sh --help for usage." >&2; exit 2; }

CONFIG="" WORKDIR="" DRY_RUN=0
ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --config) [[ $# -ge 2 && -n "$2" ]] || die "--config needs a value"; CONFIG="$2"; shift 2 ;;
    --workdir) [[ $# -ge 2 && -n "$2" ]] || die "--workdir needs a value"; WORKDIR="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
[[ -n "$CONFIG" && -n "$WORKDIR" ]] || die "--config and --workdir are required"

CMD=("${PYTHON:-python}" -m distilface_jax.train --config "$CONFIG" --workdir "$WORKDIR"
     --distributed=off ${ARGS[@]+"${ARGS[@]}"})
if [[ "$DRY_RUN" == 1 ]]; then
  printf '+ %s\n' "${CMD[*]}"
  exit 0
fi
exec "${CMD[@]}"
