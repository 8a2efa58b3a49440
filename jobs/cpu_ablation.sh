#!/usr/bin/env bash
# The README's measurement of the EMA generator and DiffAugment: the same short ACGAN + WGAN-GP
# run on 10% of MNIST (6,000 images) with each of them on and off, judged by an MNIST
# classifier (cfid against the 10,000 test images, cacc). Resumable as jobs/cpu_results.sh.
#
#   jobs/cpu_ablation.sh [DATA_DIR] [OUT_DIR]     # defaults: ../shared/data runs/ablation
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data}
OUT=${2:-runs/ablation}
PY=${PYTHON:-python}
mkdir -p "$OUT"

source jobs/steps.sh  # step NAME COMMAND...

step judge "$PY" train_baseline.py --arch infogan --dataset mnist --data_dir "$DATA" --augment none \
    --lr 1e-3 --epochs 2 --out_dir "$OUT/judge" --resume auto --amp off  # fp32, as measured
for variant in plain ema diffaugment both; do
    extra=()
    case $variant in
        ema) extra=(--ema 0.999) ;;
        diffaugment) extra=(--diffaugment color,translation,cutout) ;;
        both) extra=(--ema 0.999 --diffaugment color,translation,cutout) ;;
    esac
    step "$variant" "$PY" train_gan.py --dataset mnist --data_dir "$DATA" --subset 6000 --width 16 \
        --batch_size 64 --lr 2e-3 --epochs 10 --augment none --out_dir "$OUT/$variant" \
        --resume auto --amp off ${extra[@]+"${extra[@]}"}  # bash < 4.4: an empty array is unset
    step "metrics_$variant" "$PY" metrics.py "$OUT/$variant" --metrics cfid,cacc \
        --classifier "$OUT/judge/cifar10.model" --real mnist --split test --data_dir "$DATA" \
        --n_samples 10000
done
echo "$(date '+%H:%M:%S') done" >&2
