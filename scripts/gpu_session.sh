#!/usr/bin/env bash
# One lent-GPU session (see /work/.library/device), one call. Two tasks:
#
# TASK=e2e (default; issue #16): end-to-end speed at the real model shapes, under 10 minutes on an H200.
#   1. benchmarks/e2e.py on random-weight LLaDA-8B and Dream-7B in bf16: every cache x torch/triton kernels x
#      eager/CUDA graphs at batch 1, the dual cache at batch 16 (LLaDA) -> e2e.json, e2e.txt
#   2. the same for torch.compile on LLaDA-8B, dual cache, batch 1 (its compile time may not fit: the JSON keeps
#      what finished) -> e2e_compile.json, appended to e2e.txt
#   3. the compiled-path equality check: tests/test_compiled.py (real CUDA graphs on the tiny models, float32 and
#      bf16, both kernel paths) and the e2e smoke test -> compiled.txt
#   4. benchmarks/kernels.py, Triton vs PyTorch per kernel -> kernels.txt
#   5. continuous vs static batching on the device: scripts/check_continuous.py (tiny LLaDA every cache, tiny Dream
#      none/dual, bf16 and fp32; tokens and seq_nfe per prompt, then each prompt alone) -> continuous.json,
#      continuous.txt; the results file's "continuous_identical" says identical in every cell (true), different
#      in one (false) or not checked to the end (null)
#   6. continuous vs static batching throughput on the device: benchmarks/batching.py --device cuda (tiny LLaDA,
#      batch 16, mixed and benchmark-order synthetic workloads, interleaved rounds) -> batching.txt
#   Then everything is gathered into one results file, $OUT/gpu_session.json, and copied to
#   $RESULTS_DIR (default benchmarks/results/) as gpu_session-<date>-<device>.json. Each step has its own time
#   limit (E2E_SECONDS, COMPILE_SECONDS, CHECK_SECONDS, KERNEL_SECONDS, CONT_SECONDS, BATCH_SECONDS; 0 skips a
#   step); the defaults add up to 9.25 minutes at most. QUICK=1 is the CPU dry run of the same steps: e2e.py --quick on small shapes,
#   COMPILE_SECONDS=0 (torch.compile takes minutes on a small CPU; set it to try), kernels.py's interpreter check,
#   check_continuous.py --quick.
#
# TASK=workload (issue #12): train the shipped workload model (scripts/train_workload.py) for TRAIN_SECONDS
#   (default 420) on the GPU with a prebuilt example pool, then score the best checkpoint on the shipped test
#   sets (threshold 0.9 + dual cache, LIMIT problems each) -> workload.tgz (checkpoint + log + eval tables).
#   Ship it with: tar xzf workload.tgz -C runs && python scripts/train_workload.py --out runs/workload-llada --ship
#   Smoke test on a CPU machine (scores HumanEval-format only and does not touch dllm/assets): DEVICE=cpu
#   TRAIN_SECONDS=20 HIDDEN=32 LAYERS=2 HEADS=2 POOL=200 WORKERS=2 BATCH=8 LIMIT=2 NGSM=2000 NHE=1000
#
# TASK=frontier (issue #13's target, once the shipped workload model is trained): benchmarks/frontier.py on the
#   GSM8K- and HumanEval-format test sets with the dual cache, every policy swept, LIMIT examples each (default 100),
#   each bench under FRONTIER_SECONDS (default 270) -> frontier.tgz (JSON reports, tables, plots). POLICIES narrows
#   the list. CPU smoke test: DEVICE=cpu LIMIT=1 POLICIES=threshold FRONTIER_SECONDS=120
#
# TASK=train: time the kernels, then train four tiny variants side by side (SET=llada|dream) -> A.tgz..D.tgz
#   (E.tgz..H.tgz). On a CPU machine, DEVICE=cpu TRAIN_SECONDS=20 runs it as a smoke test.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-/tmp/gpu-session}; mkdir -p "$OUT"
PY=${PY:-python3}
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv 2>&1 | tee "$OUT/gpu.txt"
$PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" 2>&1 | tee -a "$OUT/gpu.txt"

if [ "${TASK:-e2e}" = e2e ]; then
  if [ "${QUICK:-0}" = 1 ]; then
    e2e=(--quick ${BANDWIDTH:+--bandwidth "$BANDWIDTH"})  # a CPU has no table entry: no bound unless BANDWIDTH
    e2e_compile=(--quick --run llada-quick:1:dual:torch:none,compile ${BANDWIDTH:+--bandwidth "$BANDWIDTH"})
    : "${COMPILE_SECONDS:=0}" "${CHECK_SECONDS:=240}" "${KERNEL_SECONDS:=120}"
    cont=(--quick); batching=(--quick)
  else
    e2e=(--repeats 2 --prompt-length 512
         --run llada-8b:1:none,prefix,dual,delayed:torch,triton:none,cudagraph
         --run llada-8b:16:dual:torch,triton:none,cudagraph
         --run dream-7b:1:none,prefix,dual,delayed:torch,triton:none,cudagraph)
    e2e_compile=(--repeats 2 --prompt-length 512 --run llada-8b:1:dual:triton:none,compile)
    cont=(); batching=(--device cuda --rounds 3)
  fi
  step() {  # step NAME SECONDS LOG [tee -a] COMMAND...: run under a time limit, record the exit status
    local name=$1 seconds=$2 log=$3; shift 3
    if [ "$seconds" = 0 ]; then echo "== $name: skipped" | tee -a "$OUT/steps.txt"; return; fi
    echo "== $name (limit ${seconds}s)" | tee -a "$log"
    local t0=$SECONDS
    timeout "$seconds" "$@" 2>&1 | tee -a "$log"
    echo "$name rc=${PIPESTATUS[0]} seconds=$((SECONDS - t0))" | tee -a "$OUT/steps.txt"
  }
  step e2e "${E2E_SECONDS:-225}" "$OUT/e2e.txt" $PY benchmarks/e2e.py "${e2e[@]}" --out "$OUT/e2e.json"
  step e2e_compile "${COMPILE_SECONDS:-75}" "$OUT/e2e.txt" $PY benchmarks/e2e.py "${e2e_compile[@]}" --out "$OUT/e2e_compile.json"
  step compiled_check "${CHECK_SECONDS:-90}" "$OUT/compiled.txt" $PY -m pytest -q -p no:cacheprovider tests/test_compiled.py tests/test_e2e_bench.py
  step kernels "${KERNEL_SECONDS:-60}" "$OUT/kernels.txt" $PY benchmarks/kernels.py
  step continuous "${CONT_SECONDS:-60}" "$OUT/continuous.txt" $PY scripts/check_continuous.py ${cont[@]+"${cont[@]}"} --out "$OUT/continuous.json"
  step batching "${BATCH_SECONDS:-45}" "$OUT/batching.txt" $PY benchmarks/batching.py "${batching[@]}"
  # one results file: the e2e rows, every log, the exit status and duration of each step
  $PY - "$OUT" "${RESULTS_DIR:-benchmarks/results}" "${QUICK:-0}" <<'EOF'
import datetime, json, re, sys
from pathlib import Path
out, results, quick = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
def text(name):
    f = out / name
    return f.read_text(errors="replace") if f.is_file() else None
def data(name):
    f = out / name
    return json.loads(f.read_text()) if f.is_file() else None
steps = {}
for line in (text("steps.txt") or "").splitlines():
    m = re.match(r"(\S+) rc=(\d+) seconds=(\d+)", line)
    if m:
        steps[m[1]] = {"rc": int(m[2]), "seconds": int(m[3]), "timed_out": m[2] == "124"}
    elif line.endswith(": skipped"):
        steps[line[3:-9]] = {"skipped": True}
e2e, cont = data("e2e.json"), data("continuous.json")
device = (e2e or {}).get("meta", {}).get("device") or (cont or {}).get("meta", {}).get("device") or "unknown"
session = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "quick": quick,
           "device": device, "gpu": text("gpu.txt"), "steps": steps, "e2e": e2e, "e2e_compile": data("e2e_compile.json"),
           # true only when every cell finished and matched, false as soon as one differs, else null
           "continuous_identical": False if (cont or {}).get("identical") is False else
                                   (True if (cont or {}).get("complete") and cont.get("identical") else None),
           "continuous": cont,
           "logs": {name: text(name) for name in ("e2e.txt", "compiled.txt", "kernels.txt", "continuous.txt",
                                                  "batching.txt")}}
(out / "gpu_session.json").write_text(json.dumps(session, indent=1) + "\n")
slug = re.sub(r"[^A-Za-z0-9]+", "-", device).strip("-").lower()[:40]
results.mkdir(parents=True, exist_ok=True)
name = f"gpu_session-{session['date'][:10]}-{slug}{'-quick' if quick else ''}.json"
(results / name).write_text(json.dumps(session, indent=1) + "\n")
print(f"results: {out / 'gpu_session.json'} and {results / name}")
for step, s in steps.items():
    print(f"  {step}: " + ("skipped" if s.get("skipped") else f"rc {s['rc']}{' (timed out)' if s['timed_out'] else ''}, {s['seconds']} s"))
print("  continuous batching vs static: " + {True: "identical", False: "DIFFERENT", None: "not checked"}[session["continuous_identical"]])
EOF
  rm -f "$OUT/steps.txt" "$OUT"/*.tmp
  ls -la "$OUT"
  exit 0
fi

if [ "${TASK:-e2e}" = workload ]; then
  DEVICE=${DEVICE:-cuda}; run="$OUT/workload-llada"; mkdir -p "$run"
  $PY scripts/train_workload.py --out "$run" --device "$DEVICE" --time-limit "${TRAIN_SECONDS:-420}" \
      --hidden "${HIDDEN:-224}" --layers "${LAYERS:-8}" --heads "${HEADS:-7}" --batch-size "${BATCH:-128}" \
      --buckets 2 --lr "${LR:-1.5e-3}" --warmup 300 --workers "${WORKERS:-14}" --pool "${POOL:-300000}" \
      --n-gsm8k "${NGSM:-200000}" --n-humaneval "${NHE:-60000}" --val-every 200 --log-every 50 --save-every 120 --threads 4 \
      --seed "${SEED:-0}" 2>&1 | tee "$OUT/workload_train.txt" | grep -E "val loss|prebuilt|done|rror"
  if [ "$DEVICE" = cpu ]; then  # smoke test: leave the package's shipped model alone
    benches=humaneval; model=(--model "$run/best" --data dllm/assets/workload/humaneval_format_test.jsonl)
  else  # this machine's copy of the repo only: dllm eval then runs the shipped test sets by default
    $PY scripts/train_workload.py --out "$run" --ship; benches="gsm8k humaneval"; model=()
  fi
  for bench in $benches; do
    timeout "${EVAL_SECONDS:-60}" $PY -m dllm eval --bench "$bench" "${model[@]}" --device "$DEVICE" \
        --policy threshold --cache none,dual --limit "${LIMIT:-100}" --batch-size 16 --no-progress \
        --out "$OUT/eval" 2>&1 | tee -a "$OUT/workload_eval.txt"
  done
  rm -f "$run/train_state.pt"; rm -rf "$run/last"
  tar czf "$OUT/workload.tgz" -C "$OUT" workload-llada workload_train.txt workload_eval.txt
  rm -rf "$run" "$OUT/eval"
  ls -la "$OUT"
  exit 0
fi

if [ "${TASK:-e2e}" = frontier ]; then
  DEVICE=${DEVICE:-cuda}; mkdir -p "$OUT/frontier"
  for bench in gsm8k humaneval; do
    timeout "${FRONTIER_SECONDS:-270}" $PY benchmarks/frontier.py --bench "$bench" --cache dual --device "$DEVICE" \
        --limit "${LIMIT:-100}" --batch-size "${FBATCH:-32}" ${POLICIES:+--policies "$POLICIES"} \
        --out "$OUT/frontier/$bench" --json "$OUT/frontier/$bench.json" --png "$OUT/frontier/$bench.png" \
        2>&1 | grep -v "^\[" | tee "$OUT/frontier/$bench.txt"
    echo "frontier $bench rc ${PIPESTATUS[0]}" | tee -a "$OUT/frontier/status.txt"
  done
  tar czf "$OUT/frontier.tgz" -C "$OUT/frontier" --exclude="gsm8k" --exclude="humaneval" .
  rm -rf "$OUT/frontier"
  ls -la "$OUT"
  exit 0
fi

mkdir -p "$OUT/runs"
DEVICE=${DEVICE:-cuda}; T=${TRAIN_SECONDS:-330}
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
