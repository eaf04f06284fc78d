#!/usr/bin/env python3
"""Interleaved decode comparison: `kiln bench decode` (once per `--quant-inputs` choice) and
llama.cpp (`decode_llama_cpp.py`) on the same GGUF, prompt and thread count, round after round,
so that the machine's drift hits every side alike. Prints each round's rates, then a Markdown
table of the medians, the ratios to llama.cpp and whether each greedy token sequence equals
llama.cpp's.

    cargo build --release -p kiln-cli
    python benches/reference/decode_compare.py --model M.gguf --rounds 4 --inputs q16,q8

Needs llama-cpp-python (built for this CPU) in the running interpreter.
"""
import argparse
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd):
    """Runs `cmd`; returns its last stdout line's `key=value` fields and the token ids."""
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    lines = p.stdout.strip().splitlines()
    rates = {}
    for kv in lines[-1].split():
        if "=" in kv:
            k, v = kv.split("=", 1)
            try:
                rates[k] = float(v)
            except ValueError:
                pass
    tokens = None
    for line in (p.stderr + "\n" + p.stdout).splitlines():
        if line.startswith("tokens: "):
            tokens = line[len("tokens: "):].strip()
    return rates, tokens


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--kiln", default="target/release/kiln")
    ap.add_argument("--inputs", default="q16,q8", help="comma list of kiln --quant-inputs choices")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--runs", type=int, default=3, help="measured runs per call (medians)")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    common = ["--prompt-tokens", str(args.prompt_tokens), "--new-tokens", str(args.new_tokens),
              "--runs", str(args.runs)]
    sides = [(f"kiln {q}", [args.kiln, "bench", "decode", "--model", args.model,
                            "--quant-inputs", q, *common]) for q in args.inputs.split(",")]
    sides.append(("llama.cpp", [sys.executable, os.path.join(HERE, "decode_llama_cpp.py"),
                                "--model", args.model, "--threads", str(args.threads), *common]))
    env_threads = os.environ.get("RAYON_NUM_THREADS")
    if env_threads and int(env_threads) != args.threads:
        sys.exit(f"RAYON_NUM_THREADS={env_threads} differs from --threads {args.threads}")
    results = {name: {"prefill": [], "decode": [], "tokens": set()} for name, _ in sides}
    ratios = {name: [] for name, _ in sides[:-1]}
    for r in range(args.rounds):
        this = {}
        for name, cmd in sides:
            rates, tokens = run(cmd)
            this[name] = rates
            results[name]["prefill"].append(rates["prefill_tokens_per_s"])
            results[name]["decode"].append(rates["decode_tokens_per_s"])
            results[name]["tokens"].add(tokens)
            print(f"round {r}: {name}: prefill {rates['prefill_tokens_per_s']:.1f}, "
                  f"decode {rates['decode_tokens_per_s']:.1f} tokens/s", file=sys.stderr)
        ref = this["llama.cpp"]["decode_tokens_per_s"]
        for name in ratios:
            ratios[name].append(this[name]["decode_tokens_per_s"] / ref)
    ref_tokens = results["llama.cpp"]["tokens"]
    print(f"| side | prefill tok/s | decode tok/s | decode ratio per round | same tokens as llama.cpp |")
    print("|---|---:|---:|---|---|")
    for name, _ in sides:
        res = results[name]
        per_round = ", ".join(f"{x:.2f}" for x in ratios.get(name, []))
        same = "—" if name == "llama.cpp" else ("yes" if res["tokens"] == ref_tokens else "no")
        print(f"| {name} | {statistics.median(res['prefill']):.1f} | "
              f"{statistics.median(res['decode']):.1f} | {per_round or '—'} | {same} |")


if __name__ == "__main__":
    main()
