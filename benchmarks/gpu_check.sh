#!/usr/bin/env bash
# One prepared accelerator check (issue 7): our training step vs the PyTorch peer, DistilBERT-base
# shape, seq 32, bf16, batch 64 and 512, both attention implementations; then the STS suite and
# encode throughput. Run from the repository root on a lent GPU machine:
#
#     bash benchmarks/gpu_check.sh            # writes $OUT/results.jsonl, $OUT/summary.md, logs
#
# Budget: about 8 minutes. Each measurement is its own command under `timeout`, so one failure
# (or a slow torch.compile) costs only that measurement. Knobs: STEPS (default 50),
# BATCHES (default 64,512), PRESET (default distilbert-base; `tiny` to try the script on a CPU),
# PY (default python3), BENCH_TOKENIZER (a tokenizer folder or vocab.txt; needed to time the
# real STS data, see below).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/bench_out}"
mkdir -p "$OUT"
PY="${PY:-python3}"
STEPS="${STEPS:-50}"
BATCHES="${BATCHES:-64,512}"
PRESET="${PRESET:-distilbert-base}"
RESULTS="$OUT/results.jsonl"
# The package runs from the checkout: the device machine reaches no registry, so no `pip install -e .`.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# JAX preallocates 75 % of GPU memory by default; torch runs in the same process and needs room.
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.45}"
status=0

log() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$OUT/gpu_check.log"; }

# Runs one measurement under a time limit; its output goes to stdout and $OUT/<name>.log.
measure() {
  local name=$1 limit=$2
  shift 2
  log "$name: $*"
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || { log "$name FAILED (exit $rc)"; status=1; }
}

log "machine"
{ date -u; nvidia-smi || echo "nvidia-smi: not available"; grep -m1 "model name" /proc/cpuinfo; nproc; } \
  2>&1 | tee "$OUT/machine.txt"

if ! "$PY" -c 'import jax, flax, optax, torch, transformers, scipy' 2>/dev/null; then
  log "missing Python packages: trying pip (may fail offline)"
  "$PY" -m pip install -q -r requirements.txt "jax[cuda12]" torch 2>&1 | tail -5
fi
"$PY" - <<'EOF' 2>&1 | tee -a "$OUT/machine.txt"
import jax, torch
print("jax", jax.__version__, jax.devices())
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "")
EOF

BENCH=("$PY" -m distilface_jax.benchmark --preset "$PRESET" --seq-len 32 --dtype bfloat16
       --steps "$STEPS" --output "$RESULTS")

# 1. The numbers DESIGN.md sets targets for: SimCSE's attention dropout 0.1 (XLA attention).
measure step_xla 270 "${BENCH[@]}" --batch-sizes "$BATCHES" --attention-impl xla --peer torch --peer-compile

# 2. STS suite (7 tasks, test mode) and encode throughput on a DistilBERT-base-sized random model.
#    The real SentEval data only if it travelled with the checkout AND a real WordPiece vocab is
#    given: the generated tiny vocab would spell real words letter by letter (5x the tokens).
STS_DIR=""
for candidate in shared/data/sts ../shared/data/sts; do
  [ -d "$candidate/STS" ] && [ -n "${BENCH_TOKENIZER:-}" ] && { STS_DIR=$candidate; break; }
done
TOKENIZER_ARGS=()
if [ -n "$STS_DIR" ]; then
  TOKENIZER_ARGS=(--tokenizer "$BENCH_TOKENIZER")
  log "STS: real SentEval data in $STS_DIR, tokenizer $BENCH_TOKENIZER"
else
  STS_DIR="$(mktemp -d)/sts"  # not under $OUT: only a few plain files come back from there
  "$PY" -c "from distilface_jax import tiny_data; tiny_data.write_tiny_sts('$STS_DIR')"
  log "STS: generated tiny fixture (set BENCH_TOKENIZER and ship shared/data/sts for the real one)"
fi
measure sts_encode 150 "${BENCH[@]}" --batch-sizes "" --sts-dir "$STS_DIR" --encode 20000 \
  --eval-batch-size 128 "${TOKENIZER_ARGS[@]}"

# 3. The fused attention kernel (cuDNN) only runs without attention-probability dropout, so this
#    run sets it to 0 -- for the peer too (its SDPA then takes the flash path): same model both sides.
measure step_dpa 270 "${BENCH[@]}" --batch-sizes "$BATCHES" --attention-impl dot_product_attention \
  --attention-dropout 0 --peer torch --peer-compile

log "summary"
"$PY" -m distilface_jax.benchmark --summarize "$RESULTS" 2>&1 | tee "$OUT/summary.md"
log "done (status $status)"
exit "$status"
