#!/usr/bin/env bash
# The one prepared script for a session that is lent a GPU machine (see the `device` tool):
#   run(command="bash benchmarks/gpu_check.sh", timeout_s=540)
# It uses the machine's own torch (never installs one), puts this checkout on PYTHONPATH, and
# prints: the device, the throughput ratio at 227 px / batch 128 on CUDA in fp32 and bf16 autocast,
# then the 2-process data-parallel test (on the CPU with gloo: nccl refuses two ranks on one GPU,
# so nccl needs a machine of 2+ GPUs) and `agemetric run --device cuda` (the quick preset on the
# GPU). Copy the printed tables into docs/benchmarks.md with the device named. Not run yet: no GPU
# has been lent to this project's sessions so far.
set -u
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# The machine has no network: missing packages travel as wheels in .whl/ (device README, "nvidia-h200").
if [ -d .whl ]; then python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"; fi
python3 -c "import torch, torchvision, faiss, typer, rich, pluggy, tomli_w, sklearn, matplotlib, pytest" || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
timeout 300 python3 benchmarks/throughput.py --device cuda --sizes 227 --batches 128 --precisions fp32,bf16 \
    --steps 10 --repeat 2 --memory-batches 2048
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_distributed.py
timeout 120 python3 -m agemetric run --epochs 2 --device cuda --out /tmp/gpu-run --set figures=false
