#!/usr/bin/env bash
# Set up w2sray in ./.venv: torch first (a CPU build on a CPU machine), then the package.
#   scripts/setup.sh          runtime only
#   scripts/setup.sh --dev    plus pytest and ruff
# TORCH_SPEC overrides the torch requirement (default: torch==2.13.0 without a GPU, the
# latest torch with one). Set PIP_INDEX_URL/PIP_EXTRA_INDEX_URL as usual for other wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"

if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip

if ! python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    spec="${TORCH_SPEC:-torch}"
  else
    # Never let pip resolve an unpinned torch on a CPU machine: that is a multi-GB CUDA build.
    spec="${TORCH_SPEC:-torch==2.13.0}"
  fi
  echo "setup: installing $spec"
  python -m pip install -q "$spec"
fi

echo "setup: installing w2sray$extras"
# torch is installed by now, so w2sray's dependencies that need it (deepspeed, peft, accelerate)
# take that torch instead of resolving one of their own.
python -m pip install -q -e ".$extras"

# DeepSpeed compiles its CPU shared-memory collective op on first use (~80 s on 2 cores, once
# per machine, cached in ~/.cache/torch_extensions). Build it here, not inside the first run.
python - <<'PY'
import time, torch
t = time.time()
if not torch.cuda.is_available():
    from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder
    ShareMemCommBuilder().load(verbose=False)
    print(f"setup: DeepSpeed CPU comm op ready ({time.time() - t:.0f}s)")
PY
echo "setup: done. Activate with: . .venv/bin/activate"
