#!/usr/bin/env bash
# The README's "Results on real data": every lesson that fits two CPU cores, each at its own
# settings unless said, one after the other. Resumable: run it again and every run continues
# where it stopped (--resume auto); a finished one only prints its final line again.
#
#   jobs/cpu_results.sh [DATA_DIR] [OUT_DIR]      # defaults: ../shared/data runs/results
#
# DATA_DIR holds MNIST/raw, FashionMNIST/raw and cifar10/ (the PNG copy, or torchvision's
# cifar-10-batches-py in DATA_DIR/cifar10). Each run's log is OUT_DIR/NAME.log, its final JSON
# line OUT_DIR/NAME.json; the whole takes about two hours on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data}
OUT=${2:-runs/results}
PY=${PYTHON:-python}
mkdir -p "$OUT"

source jobs/steps.sh  # step NAME COMMAND...
# fp32 (--amp off), as the README's figures were measured: bf16 is the default on CPUs with
# bf16 units (docs/speed.md), and changes the numbers a run computes
train() { local name=$1 script=$2; shift 2; step "$name" "$PY" "$script" --out_dir "$OUT/$name" --resume auto --amp off "$@"; }
measure() { local name=$1; shift; step "$name" "$PY" metrics.py "$@"; }

# judges of the digits and clothes the GANs draw: the CS231n DCGAN's discriminator as a classifier
train judge_mnist train_baseline.py --arch infogan --dataset mnist --data_dir "$DATA" \
    --augment none --lr 1e-3 --epochs 2
train judge_fashion train_baseline.py --arch infogan --dataset fashion_mnist --data_dir "$DATA" \
    --augment none --lr 1e-3 --epochs 5
# the CS231n lessons, whole
train cs231n-gan train_gan.py --recipe cs231n-gan --data_dir "$DATA"
train cs231n-lsgan train_gan.py --recipe cs231n-lsgan --data_dir "$DATA"
train cs231n-dcgan train_gan.py --recipe cs231n-dcgan --data_dir "$DATA"
train cs231n-dcgan-fashion train_gan.py --recipe cs231n-dcgan --dataset fashion_mnist --data_dir "$DATA"
for run in cs231n-gan cs231n-lsgan cs231n-dcgan; do
    measure "metrics_$run" "$OUT/$run" --metrics cfid,cconf --classifier "$OUT/judge_mnist/cifar10.model" \
        --real mnist --split test --data_dir "$DATA" --n_samples 10000
done
measure metrics_cs231n-dcgan-fashion "$OUT/cs231n-dcgan-fashion" --metrics cfid,cconf \
    --classifier "$OUT/judge_fashion/cifar10.model" --real fashion_mnist --split test \
    --data_dir "$DATA" --n_samples 10000
measure floor_mnist mnist --metrics cfid,cconf --classifier "$OUT/judge_mnist/cifar10.model" \
    --real mnist --split test --data_dir "$DATA" --n_samples 10000
measure floor_fashion fashion_mnist --metrics cfid,cconf --classifier "$OUT/judge_fashion/cifar10.model" \
    --real fashion_mnist --split test --data_dir "$DATA" --n_samples 10000
# the assignment's classifier at width 64 for 15 epochs (its schedule scaled: lr / 10 from
# the 8th epoch, / 100 from the 12th), and its ACGAN + WGAN-GP at width 32 for 8 epochs
train classifier train_baseline.py --data_dir "$DATA/cifar10" --width 64 --epochs 15
train acgan train_gan.py --data_dir "$DATA/cifar10" --width 32 --epochs 8
measure metrics_acgan "$OUT/acgan" --metrics cfid,cacc,cconf --classifier "$OUT/classifier/cifar10.model" \
    --real cifar10 --split test --data_dir "$DATA/cifar10" --n_samples 10000
measure floor_cifar10 cifar10 --metrics cfid,cconf --classifier "$OUT/classifier/cifar10.model" \
    --real cifar10 --split test --data_dir "$DATA/cifar10" --n_samples 10000
# Part 2 on both CIFAR-10 discriminators
step part2 "$PY" visualize.py all --run_dir "$OUT/acgan" --baseline_model "$OUT/classifier/cifar10.model"
# WGAN with weight clipping at its recipe's settings, 25 of its 100 epochs (about 24 s each;
# its learning rate is constant, so a later --epochs 100 continues it exactly)
train wgan-clip train_gan.py --recipe wgan-clip --data_dir "$DATA/cifar10" --epochs 25
measure metrics_wgan-clip "$OUT/wgan-clip" --metrics cfid,cconf --classifier "$OUT/classifier/cifar10.model" \
    --real cifar10 --split test --data_dir "$DATA/cifar10" --n_samples 10000
echo "$(date '+%H:%M:%S') done" >&2
