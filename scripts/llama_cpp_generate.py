#!/usr/bin/env python3
"""Runs GGUF files (for instance `kiln merge --format gguf` exports) in llama.cpp, through
llama-cpp-python, and compares each greedy continuation with `kiln generate`'s on the same file.

    pip install llama-cpp-python   # builds llama.cpp from source, several minutes
    python scripts/llama_cpp_generate.py --kiln target/release/kiln runs/dtc-merged.gguf

Prompts are plain text (no chat template), 24 new tokens, 2 threads. Exits non-zero when a file
does not load or, with --strict, when any continuation differs. Expect f32 and f16 exports to
agree token for token; with Q8_0/Q4_0 weights llama.cpp quantizes the activations to 8 bits, so
a continuation can part where two tokens are nearly tied.

With --dtc FILE (prompt/completion JSONL, e.g. runs/dtc-assistant/data/test_phrasing.jsonl) it
instead answers those questions in llama.cpp through each file's own chat template (with
--system, greedy, up to the first line) and prints the exact match (SQuAD normalization, as
`kiln eval` scores) per file, with the answers in --answers-out as JSON.
"""
import argparse
import json
import string
import subprocess
import sys

from llama_cpp import Llama

PROMPTS = ["The capital of France is", "A P0300 code means", "My engine shakes at idle because"]


def normalize(s):
    """SQuAD answer normalization (lower case, no ASCII punctuation or articles)."""
    s = "".join(c for c in s.lower() if c not in string.punctuation)
    return " ".join(w for w in s.split() if w not in ("a", "an", "the"))


def dtc(args):
    import jinja2

    records = [json.loads(line) for line in open(args.dtc) if line.strip()][: args.limit]
    out = {}
    for path in args.gguf:
        llm = Llama(model_path=path, n_ctx=512, n_threads=2, verbose=False)
        template = jinja2.Environment().from_string(llm.metadata["tokenizer.chat_template"])
        answers, hits = [], 0
        for r in records:
            messages = [{"role": "user", "content": r["prompt"]}]
            if args.system:
                messages.insert(0, {"role": "system", "content": args.system})
            text = template.render(messages=messages, add_generation_prompt=True)
            got = llm(text, max_tokens=64, temperature=0.0, top_k=1, stop=["\n"])["choices"][0]["text"]
            got = got.strip()
            hit = normalize(got) == normalize(r["completion"].strip())
            hits += hit
            answers.append({"prompt": r["prompt"], "reference": r["completion"].strip(), "llama_cpp": got})
        out[path] = answers
        print(f"{path}: exact match {hits / len(records):.3f} ({hits}/{len(records)}) in llama.cpp")
    if args.answers_out:
        with open(args.answers_out, "w") as f:
            json.dump(out, f, indent=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("gguf", nargs="+")
    ap.add_argument("--kiln", default="target/release/kiln", help="the kiln executable")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--strict", action="store_true", help="fail when any continuation differs")
    ap.add_argument("--dtc", help="prompt/completion JSONL: score llama.cpp's chat answers instead")
    ap.add_argument("--system", help="system message for --dtc")
    ap.add_argument("--limit", type=int, default=24, help="questions for --dtc")
    ap.add_argument("--answers-out", help="write --dtc answers to this JSON file")
    args = ap.parse_args()
    if args.dtc:
        return dtc(args)
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
