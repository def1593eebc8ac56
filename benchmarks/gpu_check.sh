#!/usr/bin/env bash
# GPU check: a small real sweep on NVIDIA GPUs, then per-run training throughput and MFU.
#
#   bash benchmarks/gpu_check.sh                  set up, run, print (needs nvidia-smi and a GPU)
#   bash benchmarks/gpu_check.sh --print-spec [N] only print the sweep spec for N GPUs (no GPU)
#
# The sweep: the built-in ladder w2s-tiny-2, -3, -4 on the synthetic task (3 ground-truth and
# 3 weak-to-strong runs, xent, one seed), train.dtype bf16, one GPU per worker; w2s-tiny-2 and -3
# with ZeRO-2, w2s-tiny-4 with ZeRO-3. Workers per run: 1, or with more GPUs (nvidia-smi -L) the
# largest power of two up to 8 that they hold, so ZeRO really shards. Bounded: `w2sray run` is
# stopped after GPU_CHECK_TIMEOUT seconds (default 480); on one GPU the sweep should take a few
# minutes, most of it Ray / DeepSpeed start-up per run (benchmarks/RESULTS.md). A fresh machine
# also spends the time scripts/setup.sh needs to install torch.
#
# Output: benchmarks/mfu.py's table (tokens/s from each run's metrics.json, MFU against the GPU's
# dense bf16 peak: H100 SXM / H200 989e12, A100 312e12, L4 121e12, else set PEAK_BF16_FLOPS).
# The temporary store is deleted at the end unless KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/.."

write_spec() {  # write_spec STORE WORKERS: the sweep spec on stdout
  cat <<YAML
# written by benchmarks/gpu_check.sh
name: gpu-check
storage: $1
datasets:
  - name: synthetic
    n_gt: 4000
    n_weak: 4000
    n_test: 1000
models:
  - w2s-tiny-2
  - w2s-tiny-3
  - name: w2s-tiny-4
    resources: {zero_stage: 3}
methods:
  - xent
seeds: [0]
train:
  epochs: 1
  batch_size: 32
  eval_batch_size: 256
  lr: 1.0e-3
  lr_warmup_frac: 0.1
  max_length: 64
  dtype: bf16
resources:
  workers: $2
  cpus_per_worker: 1
  gpus_per_worker: 1
  zero_stage: 2
YAML
}

workers_for() {  # workers_for NGPU: the largest power of two <= min(NGPU, 8), at least 1
  local w=1
  while [ $((w * 2)) -le "$1" ] && [ $((w * 2)) -le 8 ]; do w=$((w * 2)); done
  echo "$w"
}

if [ "${1:-}" = "--print-spec" ]; then
  write_spec "${GPU_CHECK_STORE:-/tmp/w2s-gpu-check/store}" "$(workers_for "${2:-1}")"
  exit 0
fi

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_check: no NVIDIA GPU here (nvidia-smi -L fails); this check needs one" >&2
  exit 1
fi
ngpu=$(nvidia-smi -L | wc -l)
gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)
workers=$(workers_for "$ngpu")
echo "gpu_check: $ngpu x $gpu_name; $workers worker(s) per run"

scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
python - <<'PY'
import sys, torch
if not torch.cuda.is_available():
    sys.exit("gpu_check: .venv's torch has no CUDA (a CPU build?): rm -rf .venv and rerun, "
             "or set TORCH_SPEC for scripts/setup.sh")
if not torch.cuda.is_bf16_supported():
    sys.exit(f"gpu_check: {torch.cuda.get_device_name()} has no bf16; this check trains in bf16")
print(f"gpu_check: torch {torch.__version__}, CUDA {torch.version.cuda}")
PY

tmp=$(mktemp -d "${TMPDIR:-/tmp}/w2s-gpu-check.XXXXXX")
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$tmp"' EXIT
store="$tmp/store"
write_spec "$store" "$workers" > "$tmp/spec.yaml"

rc=0
start=$(date +%s)
timeout "${GPU_CHECK_TIMEOUT:-480}" w2sray run "$tmp/spec.yaml" --no-report || rc=$?
echo "gpu_check: w2sray run exited $rc after $(($(date +%s) - start)) s"
if [ "$rc" = 124 ]; then
  echo "gpu_check: stopped after ${GPU_CHECK_TIMEOUT:-480} s (leftover Ray processes: ray stop)" >&2
fi

echo
mfu_rc=0
python benchmarks/mfu.py "$store" --gpu-name "$gpu_name" || mfu_rc=$?
if [ "${KEEP:-0}" = 1 ]; then
  echo "gpu_check: spec and store kept in $tmp"
fi
[ "$rc" != 0 ] || rc=$mfu_rc
exit "$rc"
