#!/usr/bin/env python3
"""PyTorch + transformers + PEFT reference for one epoch of chat SFT with `kiln train`.

The workload of `examples/dtc-assistant/recipe.toml`: prompt/completion JSONL rendered with the
model's chat template and a system prompt, loss on the completion only, LoRA r=16 (alpha 32) on
every linear projection, AdamW (lr 2e-3, no weight decay), gradient clipping at 1.0, cosine
schedule with 5% warm-up, batch 8 with dynamic padding (each batch padded to its longest
example), fp32 on the CPU. Examples longer than --max-len tokens are skipped, as the recipe's
`truncation = "skip"` does. Prints the last line

    train_s=... wall_s=... examples=... tokens=... padding_tokens=... first_loss=... last_loss=...

    python benches/reference/chat_sft.py --gguf assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
        --data runs/dtc-assistant/data/train.jsonl
"""
import argparse
import json
import math
import os
import random
import sys
import time

START = time.perf_counter()

import torch  # noqa: E402
from peft import LoraConfig, TaskType, get_peft_model  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--data", required=True, help="prompt/completion JSONL")
    ap.add_argument("--system", default="You are a car diagnostics assistant.")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--r", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--limit", type=int, default=128)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    folder, name = os.path.split(os.path.abspath(args.gguf))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.float32)
    cfg = LoraConfig(r=args.r, lora_alpha=2 * args.r, target_modules="all-linear", lora_dropout=0.0,
                     task_type=TaskType.CAUSAL_LM)
    model = get_peft_model(model, cfg)
    model.train()

    end = tok.convert_tokens_to_ids("<|im_end|>")
    examples = []
    with open(args.data) as f:
        for line in f:
            rec = json.loads(line)
            messages = [{"role": "system", "content": args.system},
                        {"role": "user", "content": rec["prompt"]}]
            prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            p = tok(prompt, add_special_tokens=False)["input_ids"]
            c = tok(rec["completion"], add_special_tokens=False)["input_ids"] + [end]
            if len(p) + len(c) > args.max_len:
                continue
            examples.append((p + c, [-100] * len(p) + c))
            if len(examples) == args.limit:
                break

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    steps = args.epochs * math.ceil(len(examples) / args.batch)
    warmup = int(0.05 * steps)

    def lr_at(step):
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    rng = random.Random(args.seed)
    losses, tokens, padding = [], 0, 0
    train_start = time.perf_counter()
    for _ in range(args.epochs):
        order = list(range(len(examples)))
        rng.shuffle(order)
        for b in range(0, len(order), args.batch):
            batch = [examples[i] for i in order[b:b + args.batch]]
            width = max(len(ids) for ids, _ in batch)
            ids = torch.tensor([i + [pad] * (width - len(i)) for i, _ in batch])
            labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch])
            mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in batch])
            tokens += int(mask.sum())
            padding += int((mask == 0).sum())
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            print(f"step {len(losses)}: loss {losses[-1]:.4f}", file=sys.stderr)
    train_s = time.perf_counter() - train_start
    print(f"train_s={train_s:.1f} wall_s={time.perf_counter() - START:.1f} examples={len(examples)} "
          f"tokens={tokens} padding_tokens={padding} first_loss={losses[0]:.4f} last_loss={losses[-1]:.4f}")


if __name__ == "__main__":
    main()
