"""llama.cpp's prefill and greedy decoding throughput (llama-cpp-python), the reference of
`kiln bench decode`: the same prompt tokens, `(7919·i + 13) mod vocab`, and the same counts.

    python benches/reference/decode_llama_cpp.py --model M.gguf --prompt-tokens 128 --new-tokens 100

Prints per run on stderr, and as the last line on stdout
`prefill_tokens_per_s=... decode_tokens_per_s=...` (medians after a warm-up run) and the
generated token ids.
"""

import argparse
import statistics
import sys
import time

import llama_cpp
import numpy as np
from llama_cpp import Llama


def last_argmax(llm, vocab):
    """The greedy token after the last evaluated position."""
    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(vocab,))
    return int(logits.argmax())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    n_ctx = args.prompt_tokens + args.new_tokens + 8
    llm = Llama(
        model_path=args.model,
        n_ctx=n_ctx,
        n_batch=min(2048, max(args.prompt_tokens, 32)),
        n_ubatch=min(512, max(args.prompt_tokens, 32)),
        n_threads=args.threads,
        n_threads_batch=args.threads,
        verbose=False,
    )
    vocab = llm.n_vocab()
    prompt = [(7919 * i + 13) % vocab for i in range(args.prompt_tokens)]
    prefill, decode = [], []
    tokens = []
    for run in range(args.runs + 1):
        llm.reset()
        start = time.perf_counter()
        llm.eval(prompt)
        tok = last_argmax(llm, vocab)
        first = time.perf_counter()
        out = [tok]
        for _ in range(args.new_tokens - 1):
            llm.eval([tok])
            tok = last_argmax(llm, vocab)
            out.append(tok)
        end = time.perf_counter()
        p = args.prompt_tokens / (first - start)
        d = (args.new_tokens - 1) / (end - first)
        kind = "warm-up" if run == 0 else "run"
        print(f"{kind} {run}: prefill {p:.1f} tokens/s, decode {d:.1f} tokens/s", file=sys.stderr)
        if run > 0:
            prefill.append(p)
            decode.append(d)
        tokens = out
    print(f"tokens: {tokens}", file=sys.stderr)
    print(
        f"prefill_tokens_per_s={statistics.median(prefill):.1f} "
        f"decode_tokens_per_s={statistics.median(decode):.1f}"
    )


if __name__ == "__main__":
    main()
