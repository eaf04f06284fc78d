#!/usr/bin/env python3
"""Loads an adapter written by `kiln train` in Python PEFT and checks that its greedy answers equal
kiln's.

    kiln generate --model assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
        --adapter runs/dtc-assistant/adapter --chat --file prompts.txt \
        --system "You are a car diagnostics assistant." --max-new-tokens 40 > kiln_answers.txt
    python scripts/peft_generate.py --gguf assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
        --adapter runs/dtc-assistant/adapter --prompts prompts.txt \
        --system "You are a car diagnostics assistant." --expected kiln_answers.txt \
        --max-new-tokens 40

Without --adapter it checks a GGUF file by itself, e.g. one exported by `kiln merge --format gguf`
(transformers reads it with its own GGUF loader, which undoes llama.cpp's q/k layout).

Needs torch, transformers, peft and gguf. The base model is the same GGUF file, dequantized to
float32 by transformers; the prompts are wrapped as one user message in the model's chat template,
as `kiln generate --chat` does (after the
--system message, if given). Exits non-zero when an answer differs.
"""
import argparse
import os
import sys

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--adapter", help="a PEFT adapter folder; without it, the GGUF model alone "
                    "(for instance one written by `kiln merge --format gguf`)")
    ap.add_argument("--prompts", required=True, help="one prompt per line")
    ap.add_argument("--expected", help="kiln's answers, one per line, to compare with")
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--system", help="system message, as `kiln generate --system`")
    ap.add_argument("--stop-at-newline", action="store_true",
                    help="cut each answer at its first new line, as kiln's evaluation harness stops")
    args = ap.parse_args()

    folder, name = os.path.split(os.path.abspath(args.gguf))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    base = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.float32)
    model = PeftModel.from_pretrained(base, args.adapter) if args.adapter else base
    model.eval()

    prompts = [l.rstrip("\n") for l in open(args.prompts, encoding="utf-8") if l.strip()]
    expected = None
    if args.expected:
        expected = [l.rstrip("\n") for l in open(args.expected, encoding="utf-8")]
        if len(expected) < len(prompts):
            sys.exit(f"{args.expected} has {len(expected)} lines for {len(prompts)} prompts")
    same = 0
    for i, p in enumerate(prompts):
        messages = [{"role": "system", "content": args.system}] if args.system else []
        messages.append({"role": "user", "content": p})
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tok(text, add_special_tokens=False, return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=args.max_new_tokens, do_sample=False,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
        answer = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        if args.stop_at_newline:
            answer = answer.split("\n", 1)[0]
        answer = answer.replace("\n", " ")
        line = f"{p}\n  peft: {answer}"
        if expected is not None:
            ok = answer.strip() == expected[i].strip()
            same += ok
            line += f"\n  kiln: {expected[i]}\n  {'same' if ok else 'DIFFERENT'}"
        print(line)
    if expected is not None:
        print(f"{same}/{len(prompts)} answers identical")
        sys.exit(0 if same == len(prompts) else 1)


if __name__ == "__main__":
    main()
