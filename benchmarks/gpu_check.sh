#!/usr/bin/env bash
# GPU check: small real sweeps on NVIDIA GPUs: per-run training throughput and MFU, then the
# same sweep with whole GPUs and with fractions of one GPU, compared.
#
#   bash benchmarks/gpu_check.sh                  set up, run both parts, print (needs a GPU)
#   GPU_CHECK_PARTS=fractions bash benchmarks/gpu_check.sh   one part only (mfu, fractions)
#   bash benchmarks/gpu_check.sh --print-spec [N] only print the MFU sweep's spec for N GPUs
#   bash benchmarks/gpu_check.sh --print-fraction-spec [G]   only print the fractions sweep's
#                                                 spec with gpus_per_worker G (default 1)
#
# MFU part: the built-in ladder w2s-tiny-2, -3, -4 on the synthetic task (3 ground-truth and
# 3 weak-to-strong runs, xent, one seed), train.dtype bf16, one GPU per worker; w2s-tiny-2 and -3
# with ZeRO-2, w2s-tiny-4 with ZeRO-3. Workers per run: 1, or with more GPUs (nvidia-smi -L) the
# largest power of two up to 8 that they hold, so ZeRO really shards. Output: benchmarks/mfu.py's
# table (tokens/s from each run's metrics.json, MFU against the GPU's dense bf16 peak: H100 SXM /
# H200 989e12, A100 312e12, L4 121e12, else set PEAK_BF16_FLOPS).
#
# Fractions part: one sweep (w2s-tiny-1..3, 2 seeds: 6 ground-truth then 6 transfer runs, one
# worker each, bf16) run twice on ONE GPU (CUDA_VISIBLE_DEVICES=GPU_CHECK_FRACTION_GPU, default
# 0, so Ray's local cluster sees one): gpus_per_worker 1 (one run at a time) and
# GPU_CHECK_FRACTION (default 0.25: four runs share the GPU, each capped at its share of the
# memory). Each prints benchmarks/sweep_efficiency.py's figures: wall time, training seconds per
# wall second, runs in flight, tokens/s; then the wall-time ratio. Runs in flight also need
# CPUs: cpus_per_worker 1, so a fraction of 0.25 needs 4 free CPUs. A run that trained off the
# GPU, or on a share without its memory cap, fails the check.
#
# Bounded: each `w2sray run` is stopped after GPU_CHECK_TIMEOUT seconds (default 480); on one GPU
# each sweep should take a few minutes, most of it Ray / DeepSpeed start-up per run
# (benchmarks/RESULTS.md). A fresh machine also spends the time scripts/setup.sh needs to
# install torch. The temporary stores are deleted at the end unless KEEP=1.
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

write_fraction_spec() {  # write_fraction_spec STORE GPUS_PER_WORKER: the spec on stdout
  cat <<YAML
# written by benchmarks/gpu_check.sh (fractions part)
name: gpu-fractions
storage: $1
datasets:
  - name: synthetic
    n_gt: 2000
    n_weak: 2000
    n_test: 500
models:
  - w2s-tiny-1
  - w2s-tiny-2
  - w2s-tiny-3
methods:
  - xent
seeds: [0, 1]
train:
  epochs: 1
  batch_size: 32
  eval_batch_size: 256
  lr: 1.0e-3
  lr_warmup_frac: 0.1
  max_length: 64
  dtype: bf16
resources:
  workers: 1
  cpus_per_worker: 1
  gpus_per_worker: $2
  zero_stage: 1
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
if [ "${1:-}" = "--print-fraction-spec" ]; then
  write_fraction_spec "${GPU_CHECK_STORE:-/tmp/w2s-gpu-check/store}" "${2:-1}"
  exit 0
fi

parts=${GPU_CHECK_PARTS:-mfu fractions}
for part in $parts; do
  case "$part" in
    mfu | fractions) ;;
    *) echo "gpu_check: unknown part '$part' in GPU_CHECK_PARTS (mfu, fractions)" >&2; exit 2 ;;
  esac
done
fraction=${GPU_CHECK_FRACTION:-0.25}
if ! awk -v g="$fraction" 'BEGIN { exit !(g > 0 && g < 1) }'; then
  echo "gpu_check: GPU_CHECK_FRACTION must be a fraction in (0, 1), got '$fraction'" >&2
  exit 2
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
timeout_s=${GPU_CHECK_TIMEOUT:-480}

now() { date +%s.%N; }
seconds_since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

run_sweep() {  # run_sweep SPEC: w2sray run under the timeout; its exit code
  local rc=0
  timeout "$timeout_s" w2sray run "$1" --no-report || rc=$?
  if [ "$rc" = 124 ]; then
    echo "gpu_check: stopped after $timeout_s s (leftover Ray processes: ray stop)" >&2
  fi
  return "$rc"
}

rc=0
if [[ " $parts " == *" mfu "* ]]; then
  store="$tmp/mfu/store"
  mkdir -p "$tmp/mfu"
  write_spec "$store" "$workers" > "$tmp/mfu/spec.yaml"
  start=$(now)
  run_rc=0
  run_sweep "$tmp/mfu/spec.yaml" || run_rc=$?
  echo "gpu_check: w2sray run exited $run_rc after $(seconds_since "$start") s"
  echo
  mfu_rc=0
  python benchmarks/mfu.py "$store" --gpu-name "$gpu_name" || mfu_rc=$?
  [ "$run_rc" != 0 ] || run_rc=$mfu_rc
  [ "$run_rc" = 0 ] || rc=$run_rc
fi

if [[ " $parts " == *" fractions "* ]]; then
  gpu=${GPU_CHECK_FRACTION_GPU:-0}
  echo
  echo "gpu_check: fractions on GPU $gpu: gpus_per_worker 1, then $fraction"
  declare -A wall=()
  for g in 1 "$fraction"; do
    dir="$tmp/fraction-$g"
    mkdir -p "$dir"
    write_fraction_spec "$dir/store" "$g" > "$dir/spec.yaml"
    start=$(now)
    run_rc=0
    CUDA_VISIBLE_DEVICES=$gpu run_sweep "$dir/spec.yaml" || run_rc=$?
    wall[$g]=$(seconds_since "$start")
    echo "gpu_check: gpus_per_worker $g: w2sray run exited $run_rc after ${wall[$g]} s"
    eff_rc=0
    python benchmarks/sweep_efficiency.py "$dir/store" --wall "${wall[$g]}" \
      --label "gpus_per_worker $g" --gpus-per-worker "$g" || eff_rc=$?
    [ "$run_rc" != 0 ] || run_rc=$eff_rc
    [ "$run_rc" = 0 ] || rc=$run_rc
  done
  if [ "$rc" = 0 ]; then
    awk -v a="${wall[1]}" -v b="${wall[$fraction]}" -v g="$fraction" \
      'BEGIN { printf "gpu_check: gpus_per_worker %s took %.2fx the wall time of whole GPUs\n", g, b / a }'
  fi
fi

if [ "${KEEP:-0}" = 1 ]; then
  echo "gpu_check: specs and stores kept in $tmp"
fi
exit "$rc"
