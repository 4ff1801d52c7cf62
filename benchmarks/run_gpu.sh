#!/usr/bin/env bash
# Every GPU figure of docs/PERFORMANCE.md in one command (about 7 minutes on one H100/H200):
#
#     bash benchmarks/run_gpu.sh [PYTHON]
#
# Each stage has its own time limit so one slow stage cannot hide the others; each script adds its
# run to benchmarks/results/<script>.json and rewrites its table in docs/PERFORMANCE.md.
set -u
PY=${1:-python}
cd "$(dirname "$0")/.."
stage() {  # stage SECONDS DESCRIPTION COMMAND...
    local limit=$1 what=$2; shift 2
    echo "=== $what"
    local tic=$(date +%s)
    timeout "$limit" "$@"
    echo "=== $what: exit $? after $(( $(date +%s) - tic )) s"
    if [ -n "${OUT:-}" ]; then cp benchmarks/results/*.json docs/PERFORMANCE.md "$OUT"/; fi  # keep what is done
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch, torchvision, timm; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__)"

# Correctness on the GPU first: the CUDA-only device-augmentation test and a short fp16 run with t2 on the GPU.
stage 60 "CUDA tests" $PY -m pytest -q -p no:cacheprovider tests/pretrain/test_device_augment.py
stage 60 "fp16 pretraining smoke run" $PY tools/pretrain.py --cfg digits_demo.yaml DEVICE cuda SOLVER.AMP fp16 \
    AUG.AGGRESSIVE_ON device DATA.NUM_WORKERS 4 SOLVER.MAX_STEPS 40 KNN.STEP_PERIOD 0 KNN.AT_START False \
    PROGRESS_BAR False LOG_PERIOD 10 OUTPUT_DIR /tmp/msr_gpu_smoke

# Training step, ResNet-50 at 224 px (the ImageNet setting), bf16 and fp16, with the supervised ceiling.
R50="--backbone resnet50 --width 64 --stem imagenet --image-size 224 --batch 128 --channels-last --reference"
stage 90 "train step R50 bf16" $PY benchmarks/bench_train_step.py --device cuda --amp bf16 $R50 --steps 15 --warmup 5
stage 90 "train step R50 fp16" $PY benchmarks/bench_train_step.py --device cuda --amp fp16 $R50 --steps 15 --warmup 5
# Data pipeline (CPU side per image) and device t2 on the GPU.
stage 60 "data pipeline" $PY benchmarks/bench_data_pipeline.py --device cuda --repeats 3 --batch 256
# Whole steps with the real loader: t2 on the CPU vs on the GPU, by number of loader workers.
stage 90 "loader scaling" $PY benchmarks/bench_loader_scaling.py --device cuda --amp bf16 --workers 0 4 8 \
    --methods msr --batch 256 --epochs 2
# CIFAR-sized step, and the same with torch.compile and the fused optimizer.
R18="--backbone resnet18 --width 64 --stem cifar --image-size 32 --batch 512 --channels-last --reference"
stage 45 "train step R18 bf16" $PY benchmarks/bench_train_step.py --device cuda --amp bf16 $R18 --steps 20 --warmup 5
stage 100 "train step R18 bf16 compile fused" $PY benchmarks/bench_train_step.py --device cuda --amp bf16 $R18 \
    --compile --optimizer-impl fused --steps 20 --warmup 5
# ResNet-50 with the fused optimizer, then with torch.compile as well.
stage 60 "train step R50 bf16 fused" $PY benchmarks/bench_train_step.py --device cuda --amp bf16 $R50 \
    --optimizer-impl fused --steps 15 --warmup 5
stage 200 "train step R50 bf16 compile fused" $PY benchmarks/bench_train_step.py --device cuda --amp bf16 $R50 \
    --compile --optimizer-impl fused --steps 15 --warmup 5
