#!/usr/bin/env python3
"""Runs GGUF files (for instance `kiln merge --format gguf` exports) in llama.cpp, through
llama-cpp-python, and compares each greedy continuation with `kiln generate`'s on the same file.

    pip install llama-cpp-python   # builds llama.cpp from source, several minutes
    python scripts/llama_cpp_generate.py --kiln target/release/kiln runs/dtc-merged.gguf

Prompts are plain text (no chat template), 24 new tokens, 2 threads. Exits non-zero when a file
does not load or, with --strict, when any continuation differs. Expect f32 and f16 exports to
agree token for token; with Q8_0/Q4_0 weights llama.cpp quantizes the activations to 8 bits, so
a continuation can part where two tokens are nearly tied.
"""
import argparse
import subprocess
import sys

from llama_cpp import Llama

PROMPTS = ["The capital of France is", "A P0300 code means", "My engine shakes at idle because"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("gguf", nargs="+")
    ap.add_argument("--kiln", default="target/release/kiln", help="the kiln executable")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--strict", action="store_true", help="fail when any continuation differs")
    args = ap.parse_args()
    differ = 0
    for path in args.gguf:
        llm = Llama(model_path=path, n_ctx=256, n_threads=2, verbose=False)
        same = 0
        for p in PROMPTS:
            ours = llm(p, max_tokens=args.max_new_tokens, temperature=0.0, top_k=1)["choices"][0]["text"]
            kiln = subprocess.run(
                [args.kiln, "generate", "--model", path, "--prompt", p,
                 "--max-new-tokens", str(args.max_new_tokens)],
                capture_output=True, text=True, check=True).stdout
            ok = ours.strip() == kiln.strip()
            same += ok
            print(f"{path}: {p!r}\n  llama.cpp: {ours.strip()!r}\n  kiln:      {kiln.strip()!r}\n"
                  f"  {'same' if ok else 'DIFFERENT'}")
        print(f"{path}: {same}/{len(PROMPTS)} continuations identical")
        differ += len(PROMPTS) - same
    sys.exit(1 if args.strict and differ else 0)


if __name__ == "__main__":
    main()
