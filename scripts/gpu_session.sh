#!/usr/bin/env bash
# One lent-GPU session (see /work/.library/device): time the Triton kernels against PyTorch, then train
# four tiny-llada variants side by side on the one GPU. Everything lands in $OUT (gpu.txt, kernels.txt,
# A.tgz..D.tgz with each run's best checkpoint and log). On a CPU machine, DEVICE=cpu
# TRAIN_SECONDS=20 runs the same script as a smoke test.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-/tmp/gpu-session}; mkdir -p "$OUT/runs"
DEVICE=${DEVICE:-cuda}; T=${TRAIN_SECONDS:-330}; PY=${PY:-python3}
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv 2>&1 | tee "$OUT/gpu.txt"
$PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" 2>&1 | tee -a "$OUT/gpu.txt"
[ "${KERNEL_SECONDS:-150}" = 0 ] || timeout "${KERNEL_SECONDS:-150}" $PY benchmarks/kernels.py 2>&1 | tee "$OUT/kernels.txt"

common=(--kind llada --steps 1000000 --eval-every "${EVAL_EVERY:-500}" --eval-per-family 100 --weighting mean
        --stratified-t --threads 2 --device "$DEVICE" --mix-floor 0.3 --batch-size 512 --time-limit "$T")
skew=copy=0.3,reverse=0.3,sort=1,add=1.5,gsm-mini=3
even=copy=0.5,reverse=0.5,sort=1,add=1.5,gsm-mini=2
train() { local name=$1; shift; $PY -m dllm.cli.app train-tiny "${common[@]}" --out "$OUT/runs/$name" \
          --log-file "$OUT/runs/$name.log" "$@" > "$OUT/runs/$name.stdout" 2>&1 & }
if [ "${SET:-llada}" = llada ]; then  # session 1: continue the shipped model, grow it, two from scratch
  train A --init-from dllm/assets/tiny-llada --lr 3e-4 --warmup 50 --family-weights $skew --seed 31
  train B --init-from dllm/assets/tiny-llada --grow-layers 2 --lr 5e-4 --warmup 100 --family-weights $skew --seed 32
  train C --hidden 160 --layers 6 --heads 4 --lr 1.5e-3 --warmup 300 --family-weights $even --seed 33
  train D --hidden 192 --layers 4 --heads 4 --lr 1.5e-3 --warmup 300 --family-weights $even --seed 34
  RUNS="A B C D"
else  # session 2: Dream-format models from scratch, and a head-dim-32 LLaDA (trains through the torch path)
  train E --kind dream --hidden 160 --layers 6 --heads 4 --lr 1.5e-3 --warmup 300 --family-weights $even --seed 41
  train F --kind dream --hidden 128 --layers 6 --heads 4 --lr 1.5e-3 --warmup 300 --family-weights $even --seed 42
  train G --hidden 128 --layers 6 --heads 4 --lr 1.5e-3 --warmup 300 --family-weights $even --seed 43
  train H --kind dream --hidden 96 --layers 6 --heads 4 --lr 2e-3 --warmup 300 --family-weights $even --seed 44
  RUNS="E F G H"
fi
wait
for n in $RUNS; do echo "== $n"; grep -E "eval step|done in|Error|error" "$OUT/runs/$n.log" "$OUT/runs/$n.stdout" | tail -4; done
# at most 8 files of 16 MiB come back: one archive per run, best checkpoint + logs (last weights left out)
for n in $RUNS; do tar czf "$OUT/$n.tgz" --exclude="$n/last/model.safetensors" -C "$OUT/runs" "$n" "$n.log" "$n.stdout"; done
rm -rf "$OUT/runs"
ls -la "$OUT"
