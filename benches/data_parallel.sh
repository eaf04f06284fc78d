#!/usr/bin/env bash
# Data-parallel scaling on one machine: the same LoRA (and full fine-tuning) steps of
# SmolLM2-135M-Instruct on the diagnostics data, trained by
#   - one process with one thread,
#   - two processes of one thread each (`kiln train --nodes 2` over loopback),
#   - one process with two threads (the usual way to use both cores),
# and what each node moved through the all-reduce. Prints a Markdown table. The first steps
# pay for touching fresh memory (slow on some virtual machines), so the median step time after
# the first two is shown too.
#
# Usage: benches/data_parallel.sh [STEPS] [FULL_STEPS]
# Needs `cargo build --release -p kiln-cli`, the assets (scripts/fetch-assets.sh) and the
# diagnostics data (`kiln data obd --out runs/dtc-assistant/data`, or the main job).
set -euo pipefail

STEPS=${1:-8}
FULL_STEPS=${2:-3}
KILN=${KILN:-target/release/kiln}
OUT=${OUT:-runs/bench-data-parallel}
DATA=runs/dtc-assistant/data/train.jsonl
MODEL=assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$DATA" ] || "$KILN" data obd --out runs/dtc-assistant/data >/dev/null
rm -rf "$OUT"
mkdir -p "$OUT"

recipe() { # METHOD STEPS
  local adapter=""
  if [ "$1" = lora ]; then
    adapter='[adapter]
peft_type = "LORA"
r = 16
lora_alpha = 32
lora_dropout = 0.0
target_modules = "all-linear"'
  fi
  cat <<EOF
[model]
path = "$MODEL"

[data]
train = "$DATA"
max_len = 128
truncation = "skip"
format = { format = "prompt_completion" }
style = { style = "chat_template", system = "You are a car diagnostics assistant." }

$adapter

[optimizer]
lr = 1e-4

[schedule]
kind = "constant"

[fit]
batch_size = 8
grad_accum_steps = 2
max_steps = $2
seed = 1
progress = false
plot = false
EOF
}

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

summary() { # DIR -> "steps tokens secs median-step-secs-after-two"
  python3 - "$1" <<'PY'
import json, sys
s = json.load(open(sys.argv[1] + "/run_summary.json"))
t = [json.loads(l)["elapsed_secs"] for l in open(sys.argv[1] + "/metrics.jsonl")]
late = sorted(b - a for a, b in list(zip([0.0] + t, t))[2:])
print(s["steps"], s["input_tokens"], round(s["elapsed_secs"], 1), round(late[len(late) // 2], 2) if late else "-")
PY
}

echo "| method | layout | steps | input tokens | training s | tokens/s | median step s after the first two | all-reduce per step, median (node 0) | bytes sent per step (node 0) |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
for method in lora full; do
  steps=$STEPS
  [ "$method" = full ] && steps=$FULL_STEPS
  recipe "$method" "$steps" > "$OUT/$method.toml"
  for layout in one-thread two-processes two-threads; do
    dir="$OUT/$method-$layout"
    case $layout in
      one-thread)
        RAYON_NUM_THREADS=1 "$KILN" train "$OUT/$method.toml" --set "fit.output_dir=\"$dir\"" \
          > /dev/null 2> "$dir.log"
        extra="—|—" ;;
      two-threads)
        RAYON_NUM_THREADS=2 "$KILN" train "$OUT/$method.toml" --set "fit.output_dir=\"$dir\"" \
          > /dev/null 2> "$dir.log"
        extra="—|—" ;;
      two-processes)
        p=$(port)
        RAYON_NUM_THREADS=1 "$KILN" train "$OUT/$method.toml" --set "fit.output_dir=\"$dir\"" \
          --nodes 2 --node-rank 1 --coordinator "127.0.0.1:$p" > /dev/null 2> "$dir.node1.log" &
        RAYON_NUM_THREADS=1 "$KILN" train "$OUT/$method.toml" --set "fit.output_dir=\"$dir\"" \
          --nodes 2 --node-rank 0 --coordinator "127.0.0.1:$p" > /dev/null 2> "$dir.log"
        wait
        # Node 0's per-step exchange cost, from its metrics log (waiting for node 1 included).
        extra=$(python3 - "$dir/metrics.jsonl" <<'PY'
import json, sys
steps = [json.loads(l) for l in open(sys.argv[1])]
steps = [r["extra"] for r in steps if "allreduce_secs" in r.get("extra", {})]
secs = sorted(r["allreduce_secs"] for r in steps)[len(steps) // 2]
sent = sum(r["allreduce_bytes_sent"] for r in steps) / len(steps)
print(f"{secs:.3f} s|{sent / 2**20:.1f} MiB")
PY
) ;;
    esac
    read -r s tok secs late <<< "$(summary "$dir")"
    tps=$(python3 -c "print(round($tok/$secs))")
    echo "| $method | $layout | $s | $tok | $secs | $tps | $late | ${extra%%|*} | ${extra#*|} |"
  done
done
