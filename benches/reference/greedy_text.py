"""Greedy continuations of a few prompts from three implementations of the same GGUF: kiln
(`kiln generate`, with its default 16-bit inputs and with `--quant-inputs q8`), llama.cpp
(llama-cpp-python, 8-bit activations) and transformers (the dequantized weights in f32, a greedy
loop over full forward passes), and which agree.

    python benches/reference/greedy_text.py --model assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
"""

import argparse
import os
import subprocess

import torch
from llama_cpp import Llama
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPTS = [
    "The capital of France is",
    "What does P0300 mean?",
    "Once upon a time, in a small village,",
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--kiln", default="target/release/kiln")
    ap.add_argument("--new-tokens", type=int, default=60)
    args = ap.parse_args()
    d, f = os.path.split(args.model)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    hf = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32)
    llm = Llama(model_path=args.model, n_ctx=512, n_threads=2, verbose=False)
    for prompt in PROMPTS:
        ids = tok(prompt, return_tensors="pt").input_ids
        n = ids.shape[1]
        with torch.no_grad():
            for _ in range(args.new_tokens):
                nxt = hf(ids).logits[0, -1].argmax()
                ids = torch.cat([ids, nxt.view(1, 1)], 1)
                if nxt.item() == tok.eos_token_id:
                    break
        ref = tok.decode(ids[0, n:], skip_special_tokens=True).strip()
        cpp = llm(prompt, max_tokens=args.new_tokens, temperature=0.0, top_k=1,
                  repeat_penalty=1.0)["choices"][0]["text"].strip()
        def kiln(inputs):
            return subprocess.run(
                [args.kiln, "generate", "--model", args.model, "--prompt", prompt,
                 "--max-new-tokens", str(args.new_tokens), "--quant-inputs", inputs],
                capture_output=True, text=True, check=True).stdout.strip()
        k16, k8 = kiln("q16"), kiln("q8")
        eq = lambda a, b: "=" if a == b else "!="
        print(f"{prompt!r}: kiln q16 {eq(k16, ref)} transformers, kiln q8 {eq(k8, ref)} "
              f"transformers, kiln q8 {eq(k8, cpp)} llama.cpp, llama.cpp {eq(cpp, ref)} transformers")
        for name, text in [("transformers", ref), ("kiln q16", k16), ("kiln q8", k8),
                           ("llama.cpp", cpp)]:
            print(f"  {name:>12}: {text[:200]!r}")

if __name__ == "__main__":
    main()
