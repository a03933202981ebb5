#!/usr/bin/env bash
# Train (and optionally export) on a Cloud TPU VM or pod slice, from creation to deletion.
#
#   launch/tpu_pod.sh --name simcse-v4 --zone us-central2-b --accelerator-type v4-32 \
#       --config configs/unsup_distilbert.py --workdir gs://my-bucket/runs/unsup_distilbert \
#       --export-out gs://my-bucket/models/unsup_distilbert -- --config.batch_size=512
#
# See docs/pods.md. --dry-run prints every command (one per line, prefixed "+ ") and runs none.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch/tpu_pod.sh --name NAME --zone ZONE --accelerator-type TYPE \
           --config CONFIG --workdir gs://BUCKET/PATH [options] [--config.KEY=VALUE ...] [-- TRAIN_ARGS...]

Creates a TPU slice through a queued resource, waits until it is ACTIVE, copies this repository
(git archive HEAD) to every worker, installs jax[tpu] and the project there, runs
`python3 -m distilface_jax.train` on all workers at once (logs streamed here), optionally exports
the model from worker 0, and deletes the slice on exit.

Required:
  --name NAME               queued-resource id, also used as the TPU node id
  --zone ZONE               where the type is offered, e.g. us-central2-b for v4 (see the
                            Cloud TPU "regions and zones" page)
  --accelerator-type TYPE   e.g. v4-32, v5litepod-16, v6e-16, v5p-32
  --config PATH             config file, relative to the repository root
  --workdir gs://...        run directory: checkpoints, metrics, config (a bucket every worker reaches)

Options:
  --runtime-version V       TPU software version (default from the accelerator type:
                            v6e: v2-alpha-tpuv6e, v5p: v2-alpha-tpuv5, v5e: v2-alpha-tpuv5-lite,
                            v4 and older: tpu-ubuntu2204-base)
  --project PROJECT         Google Cloud project (default: gcloud's configured project)
  --spot                    request Spot TPUs (cheaper, preemptible; rerun to resume)
  --export-out DIR          after training, export the model on worker 0 (distilface_jax.export)
                            into DIR: a gs:// path, or a local folder on this machine
  --export-step STEP        which checkpoint --export-out exports: best (default: the best STS-B
                            dev checkpoint, as the docs recommend; needs eval_every > 0),
                            latest, or a step number
  --service-account EMAIL   service account of the TPU VMs (it must be able to write the bucket)
  --setup CMD               extra shell command run on every worker after installing, in the
                            repository copy (e.g. fetch data: 'gsutil cp gs://b/wiki1m.txt data/')
  --keep                    do not delete the slice at the end (reuse it; delete it yourself)
  --poll-seconds N          seconds between state checks while waiting (default 30)
  --dry-run                 print the commands instead of running them; gcloud is not needed
  -h, --help                this message

Arguments --config.KEY=VALUE and everything after "--" are passed to distilface_jax.train.
Rerunning the same command after a preemption resumes from the workdir's latest checkpoint.
EOF
}

die() { echo "tpu_pod.sh: $*" >&2; echo "Run launch/tpu_pod.sh --help for usage." >&2; exit 2; }

# Quote one word for display so the printed line can be pasted into a shell (and parsed by shlex).
quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_@%+=:,./~-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

quote_all() {
  local out="" word
  for word in "$@"; do out+="${out:+ }$(quote "$word")"; done
  printf '%s' "$out"
}

# Every side effect goes through run: under --dry-run it only prints.
run() {
  printf '+ %s\n' "$(quote_all "$@")"
  if [[ "$DRY_RUN" == 0 ]]; then "$@"; fi
}

default_runtime_version() {
  case "$1" in
    v6e-*) echo "v2-alpha-tpuv6e" ;;
    v5p-*) echo "v2-alpha-tpuv5" ;;
    v5litepod-*|v5e-*) echo "v2-alpha-tpuv5-lite" ;;
    v2-*|v3-*|v4-*) echo "tpu-ubuntu2204-base" ;;
    *) die "no default --runtime-version for --accelerator-type=$1; pass --runtime-version" ;;
  esac
}

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NAME="" ZONE="" ACCELERATOR_TYPE="" RUNTIME_VERSION="" PROJECT="" CONFIG="" WORKDIR=""
EXPORT_OUT="" EXPORT_STEP=best SERVICE_ACCOUNT="" SETUP="" SPOT=0 KEEP=0 DRY_RUN=0 POLL_SECONDS=30
TRAIN_ARGS=()

need_value() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value"; }

parse_args() {
  while [[ $# -gt 0 ]]; do
    case "$1" in
      -h|--help) usage; exit 0 ;;
      --name) need_value "$@"; NAME="$2"; shift 2 ;;
      --zone) need_value "$@"; ZONE="$2"; shift 2 ;;
      --accelerator-type) need_value "$@"; ACCELERATOR_TYPE="$2"; shift 2 ;;
      --runtime-version) need_value "$@"; RUNTIME_VERSION="$2"; shift 2 ;;
      --project) need_value "$@"; PROJECT="$2"; shift 2 ;;
      --config) need_value "$@"; CONFIG="$2"; shift 2 ;;
      --workdir) need_value "$@"; WORKDIR="$2"; shift 2 ;;
      --export-out) need_value "$@"; EXPORT_OUT="$2"; shift 2 ;;
      --export-step) need_value "$@"; EXPORT_STEP="$2"; shift 2 ;;
      --service-account) need_value "$@"; SERVICE_ACCOUNT="$2"; shift 2 ;;
      --setup) need_value "$@"; SETUP="$2"; shift 2 ;;
      --poll-seconds) need_value "$@"; POLL_SECONDS="$2"; shift 2 ;;
      --spot) SPOT=1; shift ;;
      --keep) KEEP=1; shift ;;
      --dry-run) DRY_RUN=1; shift ;;
      --config.*) TRAIN_ARGS+=("$1"); shift ;;
      --) shift; TRAIN_ARGS+=("$@"); break ;;
      *) die "unknown argument: $1" ;;
    esac
  done
  local missing=()
  [[ -n "$NAME" ]] || missing+=(--name)
  [[ -n "$ZONE" ]] || missing+=(--zone)
  [[ -n "$ACCELERATOR_TYPE" ]] || missing+=(--accelerator-type)
  [[ -n "$CONFIG" ]] || missing+=(--config)
  [[ -n "$WORKDIR" ]] || missing+=(--workdir)
  [[ ${#missing[@]} -eq 0 ]] || die "missing required argument(s): ${missing[*]}"
  # Workers do not share a disk: a local workdir would scatter checkpoints over the hosts.
  [[ "$WORKDIR" == gs://* ]] || die "--workdir must be a gs:// path every worker can reach, got '$WORKDIR'"
  [[ "$POLL_SECONDS" =~ ^[0-9]+$ ]] || die "--poll-seconds must be an integer, got '$POLL_SECONDS'"
  [[ "$EXPORT_STEP" =~ ^(best|latest|[0-9]+)$ ]] || die "--export-step must be best, latest or a step number, got '$EXPORT_STEP'"
  # Checked before paying for a slice: the workers get the committed tree only.
  [[ -f "$REPO_ROOT/$CONFIG" ]] || die "--config $CONFIG: no such file under $REPO_ROOT"
  git -C "$REPO_ROOT" cat-file -e "HEAD:$CONFIG" 2>/dev/null \
    || echo "tpu_pod.sh: warning: $CONFIG is not committed; workers will not have it (git archive HEAD)" >&2
  [[ -n "$RUNTIME_VERSION" ]] || RUNTIME_VERSION="$(default_runtime_version "$ACCELERATOR_TYPE")"
  GCLOUD_COMMON=(--zone="$ZONE")
  [[ -z "$PROJECT" ]] || GCLOUD_COMMON+=(--project="$PROJECT")
}

REMOTE_DIR="distilface-jax"            # on each worker, relative to the ssh user's home
REMOTE_TARBALL="distilface_jax.tar.gz"
REMOTE_EXPORT="export"                 # inside REMOTE_DIR on worker 0

create_slice() {
  local args=(gcloud compute tpus queued-resources create "$NAME" --node-id="$NAME"
              --accelerator-type="$ACCELERATOR_TYPE" --runtime-version="$RUNTIME_VERSION"
              "${GCLOUD_COMMON[@]}")
  [[ "$SPOT" == 0 ]] || args+=(--spot)
  [[ -z "$SERVICE_ACCOUNT" ]] || args+=(--service-account="$SERVICE_ACCOUNT" --scopes=https://www.googleapis.com/auth/cloud-platform)
  run "${args[@]}"
}

delete_slice() {
  local status=$?
  # --force deletes the TPU VMs first; --quiet skips the confirmation prompt. Synchronous, so
  # a failure to delete (and keep paying) is reported here rather than lost.
  run gcloud compute tpus queued-resources delete "$NAME" "${GCLOUD_COMMON[@]}" --force --quiet \
    || echo "tpu_pod.sh: delete failed; check 'gcloud compute tpus queued-resources list'" >&2
  exit "$status"
}

wait_until_active() {
  local describe=(gcloud compute tpus queued-resources describe "$NAME" "${GCLOUD_COMMON[@]}"
                  --format='value(state.state)')
  if [[ "$DRY_RUN" == 1 ]]; then
    run "${describe[@]}"   # shown once; the real run polls it until ACTIVE
    return
  fi
  local state
  while true; do
    # A failed describe (network blip) is not a verdict: hours in the queue must survive it.
    state="$("${describe[@]}" 2>/dev/null)" || state="UNKNOWN"
    echo "tpu_pod.sh: queued resource $NAME is ${state:-UNKNOWN} ($(date +%H:%M:%S))" >&2
    case "$state" in
      ACTIVE) return ;;
      FAILED|SUSPENDED|SUSPENDING) echo "tpu_pod.sh: $NAME ended $state" >&2; return 1 ;;
    esac
    sleep "$POLL_SECONDS"
  done
}

ssh_workers() {  # ssh_workers WORKER REMOTE_COMMAND
  run gcloud compute tpus tpu-vm ssh "$NAME" "${GCLOUD_COMMON[@]}" --worker="$1" --command="$2"
}

copy_repository() {
  # git archive ships exactly the committed tree: no local runs, caches or virtualenvs.
  if [[ -n "$(git -C "$REPO_ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
    echo "tpu_pod.sh: warning: uncommitted changes are NOT copied (git archive HEAD)" >&2
  fi
  local tarball="${TMPDIR:-/tmp}/distilface_jax-$NAME.tar.gz"
  run git -C "$REPO_ROOT" archive --format=tar.gz -o "$tarball" HEAD
  run gcloud compute tpus tpu-vm scp "$tarball" "$NAME:$REMOTE_TARBALL" "${GCLOUD_COMMON[@]}" --worker=all
  ssh_workers all "rm -rf $REMOTE_DIR && mkdir -p $REMOTE_DIR && tar -xzf $REMOTE_TARBALL -C $REMOTE_DIR"
}

install_on_workers() {
  # The image's system python3; pip falls back to a --user install when site-packages is not writable.
  local install="cd $REMOTE_DIR && python3 -m pip install -U pip"
  install+=" && python3 -m pip install -U \"jax[tpu]\" && python3 -m pip install . gcsfs"
  [[ -z "$SETUP" ]] || install+=" && $SETUP"
  ssh_workers all "$install"
}

train_on_workers() {
  # Same command on every host: each one is a jax process; --distributed=auto makes
  # distilface_jax.training.distributed call jax.distributed.initialize(), which finds the slice's
  # workers in the TPU metadata.
  local train=(python3 -m distilface_jax.train --config "$CONFIG" --workdir "$WORKDIR"
               --distributed=auto ${TRAIN_ARGS[@]+"${TRAIN_ARGS[@]}"})  # +-form: set -u, bash < 4.4
  ssh_workers all "cd $REMOTE_DIR && $(quote_all "${train[@]}")"
}

export_from_worker0() {
  # Export on worker 0 into a local folder, then deliver it: to the bucket, or back to this
  # machine. JAX_PLATFORMS=cpu: a lone TPU process on a multi-host slice would wait for the
  # other hosts forever.
  local export_cmd=(python3 -m distilface_jax.export --workdir "$WORKDIR" --out "$REMOTE_EXPORT")
  [[ "$EXPORT_STEP" == latest ]] || export_cmd+=(--step "$EXPORT_STEP")
  local remote
  remote="cd $REMOTE_DIR && rm -rf $REMOTE_EXPORT && JAX_PLATFORMS=cpu $(quote_all "${export_cmd[@]}")"
  if [[ "$EXPORT_OUT" == gs://* ]]; then
    ssh_workers 0 "$remote && gcloud storage rsync --recursive $REMOTE_EXPORT $(quote "$EXPORT_OUT")"
  else
    ssh_workers 0 "$remote && tar -czf $REMOTE_EXPORT.tar.gz -C $REMOTE_EXPORT ."
    local tarball="${TMPDIR:-/tmp}/distilface_jax-$NAME-export.tar.gz"
    run gcloud compute tpus tpu-vm scp "$NAME:$REMOTE_DIR/$REMOTE_EXPORT.tar.gz" "$tarball" \
      "${GCLOUD_COMMON[@]}" --worker=0
    run mkdir -p "$EXPORT_OUT"
    run tar -xzf "$tarball" -C "$EXPORT_OUT"
  fi
}

main() {
  parse_args "$@"
  if [[ "$DRY_RUN" == 0 ]] && ! command -v gcloud >/dev/null; then
    die "gcloud not found: install the Google Cloud CLI (or use --dry-run)"
  fi
  create_slice
  # From here on the request exists: delete it however we leave (error, Ctrl-C, success).
  if [[ "$KEEP" == 0 ]]; then
    trap delete_slice EXIT
    trap 'exit 130' INT TERM
  fi
  wait_until_active
  copy_repository
  install_on_workers
  train_on_workers
  [[ -z "$EXPORT_OUT" ]] || export_from_worker0
  if [[ "$KEEP" == 1 ]]; then
    echo "tpu_pod.sh: --keep: slice $NAME left running; delete it with:" >&2
    echo "  gcloud compute tpus queued-resources delete $NAME $(quote_all "${GCLOUD_COMMON[@]}") --force" >&2
  fi
}

main "$@"
