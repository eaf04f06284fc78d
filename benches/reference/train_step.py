#!/usr/bin/env python3
"""PyTorch + transformers + PEFT reference for `kiln bench train-step`.

Runs the same configuration: full training steps (forward, backward, AdamW) on seeded random
tokens with every position labelled, fp32 on the CPU, and prints the same last line:

    tokens_per_s=... peak_rss_mib=... step_s=...

    python benches/reference/train_step.py --gguf assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
        --method lora --batch 4 --seq 256 --steps 3

Methods: full, lora, rslora, dora, ia3, prefix, prompt (PEFT has no bottleneck adapters).
"""
import argparse
import os
import resource
import sys
import time

import torch
from transformers import AutoModelForCausalLM


def peft_model(model, method, r, targets):
    from peft import (IA3Config, LoraConfig, PrefixTuningConfig, PromptTuningConfig, TaskType,
                      get_peft_model)
    if method == "full":
        return model
    if method in ("lora", "rslora", "dora"):
        cfg = LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets, lora_dropout=0.0,
                         use_rslora=method == "rslora", use_dora=method == "dora",
                         task_type=TaskType.CAUSAL_LM)
    elif method == "ia3":
        cfg = IA3Config(task_type=TaskType.CAUSAL_LM)
    elif method == "prefix":
        cfg = PrefixTuningConfig(num_virtual_tokens=20, task_type=TaskType.CAUSAL_LM)
    elif method == "prompt":
        cfg = PromptTuningConfig(num_virtual_tokens=20, task_type=TaskType.CAUSAL_LM)
    else:
        sys.exit(f"unknown method {method}")
    return get_peft_model(model, cfg)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--method", default="lora")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--r", type=int, default=8)
    ap.add_argument("--targets", default="q_proj,v_proj")
    args = ap.parse_args()

    torch.manual_seed(0)
    folder, name = os.path.split(os.path.abspath(args.gguf))
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.float32)
    model = peft_model(model, args.method, args.r, args.targets.split(","))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    trainable = sum(p.numel() for p in params)
    total = sum(p.numel() for p in model.parameters())
    print(f"trainable params: {trainable} || all params: {total}", file=sys.stderr)
    opt = torch.optim.AdamW(params, lr=1e-5)
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (args.batch, args.seq), generator=g)
    measured = 0.0
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        secs = time.perf_counter() - start
        kind = "warm-up" if step < args.warmup else "step"
        print(f"{kind} {step}: loss {loss.item():.4f}, {secs:.2f} s", file=sys.stderr)
        if step >= args.warmup:
            measured += secs
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    tokens = args.batch * args.seq * args.steps
    print(f"tokens_per_s={tokens / measured:.1f} peak_rss_mib={peak:.0f} step_s={measured / args.steps:.3f}")


if __name__ == "__main__":
    main()
