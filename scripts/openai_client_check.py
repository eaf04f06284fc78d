#!/usr/bin/env python3
"""Talks to a running `kiln serve` through the official `openai` Python package.

For each model it asks (the base and every adapter `/v1/models` lists), it checks that a
chat completion and a text completion come back, and that streaming them gives the same
text as asking without streaming (greedy decoding). Exits non-zero on any difference.

    pip install openai
    kiln serve --model assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --adapter dtc=runs/dtc/adapter &
    python scripts/openai_client_check.py --url http://127.0.0.1:8080/v1
"""

import argparse
import sys

from openai import OpenAI


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080/v1", help="the server's /v1 URL")
    ap.add_argument("--api-key", default="none", help="the server's --api-key, if any")
    ap.add_argument("--question", default="What does the trouble code P0300 mean?")
    ap.add_argument("--max-tokens", type=int, default=32)
    args = ap.parse_args()

    client = OpenAI(base_url=args.url, api_key=args.api_key)
    models = [m.id for m in client.models.list().data]
    print(f"models: {', '.join(models)}")
    failures = 0
    for model in models:
        messages = [{"role": "user", "content": args.question}]
        whole = client.chat.completions.create(
            model=model, messages=messages, temperature=0, max_tokens=args.max_tokens, seed=0
        )
        text = whole.choices[0].message.content
        parts = []
        finish = None
        for chunk in client.chat.completions.create(
            model=model,
            messages=messages,
            temperature=0,
            max_tokens=args.max_tokens,
            seed=0,
            stream=True,
        ):
            if chunk.choices:
                delta = chunk.choices[0].delta
                parts.append(delta.content or "")
                finish = chunk.choices[0].finish_reason or finish
        same = "".join(parts) == text
        failures += not same
        print(
            f"[{model}] chat: {whole.usage.completion_tokens} tokens, finish {whole.choices[0].finish_reason}; "
            f"stream {'==' if same else '!='} whole (finish {finish}): {text!r}"
        )

        prompt = f"Question: {args.question}\nAnswer:"
        comp = client.completions.create(
            model=model, prompt=prompt, temperature=0, max_tokens=args.max_tokens, stop=["\n"]
        )
        ctext = comp.choices[0].text
        streamed = "".join(
            c.choices[0].text
            for c in client.completions.create(
                model=model,
                prompt=prompt,
                temperature=0,
                max_tokens=args.max_tokens,
                stop=["\n"],
                stream=True,
            )
            if c.choices
        )
        same = streamed == ctext and "\n" not in ctext
        failures += not same
        print(f"[{model}] completion: stream {'==' if same else '!='} whole: {ctext!r}")
    print("ok" if failures == 0 else f"{failures} differences")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
