#!/usr/bin/env bash
# bash scripts/gpu_check.sh        (from the repository root, on a machine with a CUDA GPU)
# The checks no CPU machine can make: the gpu-marked tests, then the fp32 and bf16 benchmarks for
# minilm and tiny-llama, whose sections land in docs/benchmarks.md. With two or more GPUs
# it also runs a 2-GPU data-parallel smoke run. Takes a few minutes on one modern GPU.
set -euo pipefail
PY=${PYTHON:-python}

"$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible')"
"$PY" -c "import torch; print('GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__, '| CUDA', torch.version.cuda)"

# -n 0: one process, not pyproject's one per core, so that the tests do not share the GPU
"$PY" -m pytest -m gpu -q -n 0 tests/unit/training/test_gpu.py tests/recipes/test_gpu_runs.py

"$PY" scripts/bench.py --backbone minilm --device cuda --precisions fp32,bf16 --json bench-minilm-cuda.json
if [[ -f configs/backbone/tiny-llama.yaml ]]; then
  "$PY" scripts/bench.py --backbone tiny-llama --device cuda --precisions fp32,bf16 --data-root "" --json bench-tiny-llama-cuda.json
else
  echo "configs/backbone/tiny-llama.yaml does not exist yet; its benchmark was skipped" >&2
fi

if [[ $("$PY" -c "import torch; print(torch.cuda.device_count())") -ge 2 ]]; then
  out=$(mktemp -d)
  "$PY" -m torch.distributed.run --standalone --nproc_per_node=2 -m lowres train +task=xquad \
    backbone=minilm trainer=smoke trainer.progress=false trainer.precision=bf16 \
    hydra.run.dir="$out/ddp"
  "$PY" -c "import json, sys; m = json.load(open(sys.argv[1])); print('2-GPU DDP run:', m['device'], m['average'])" "$out/ddp/metrics.json"
fi
echo "gpu_check: all done; see docs/benchmarks.md"
