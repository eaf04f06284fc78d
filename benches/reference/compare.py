#!/usr/bin/env python3
"""Runs `kiln bench train-step` and the PyTorch + PEFT reference on the same configuration, one
method after the other, and prints a Markdown table with the ratios.

    cargo build --release -p kiln-cli
    python benches/reference/compare.py --gguf assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
        --methods lora --batch 4 --seq 256 --steps 3

The runs are sequential so they do not compete for the cores. Needs torch, transformers, peft
and gguf.
"""
import argparse
import os
import subprocess
import sys


def last_line(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()
    fields = dict(kv.split("=") for kv in out[-1].split())
    return {k: float(v) for k, v in fields.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--methods", default="lora")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--kiln", default="target/release/kiln")
    args = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    common = ["--method", None, "--batch", str(args.batch), "--seq", str(args.seq), "--steps", str(args.steps)]
    rows = []
    for method in args.methods.split(","):
        common[1] = method
        k = last_line([args.kiln, "bench", "train-step", "--model", args.gguf] + common)
        p = last_line([sys.executable, os.path.join(here, "train_step.py"), "--gguf", args.gguf] + common)
        rows.append((method, k, p))
        print(f"{method}: kiln {k} pytorch {p}", file=sys.stderr)
    print(f"batch {args.batch} x {args.seq} tokens, fp32, {args.steps} measured steps after 1 warm-up\n")
    print("| method | kiln tokens/s | PyTorch tokens/s | speed ratio | kiln peak RSS MiB | PyTorch peak RSS MiB | memory ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for method, k, p in rows:
        print(f"| {method} | {k['tokens_per_s']:.1f} | {p['tokens_per_s']:.1f} | "
              f"{k['tokens_per_s'] / p['tokens_per_s']:.2f}x | {k['peak_rss_mib']:.0f} | "
              f"{p['peak_rss_mib']:.0f} | {k['peak_rss_mib'] / p['peak_rss_mib']:.2f}x |")


if __name__ == "__main__":
    main()
