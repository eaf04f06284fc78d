#!/usr/bin/env python3
"""Load test of `kiln serve`: concurrent clients mixing adapters and the base, against the same
requests sent one at a time.

Starts the server, asks every (model, question) pair of the plan one at a time (the reference
answers, and the one-at-a-time throughput), then runs CLIENTS concurrent clients x REQUESTS
requests each over the same pairs (streamed, greedy). Every concurrent answer must equal the
one-at-a-time answer for its pair, and no request may fail. Prints a Markdown table for
docs/benchmarks.md: throughput both ways, p50/p95 latency and time to first token. Standard
library only.

    python scripts/bench_serve.py --kiln target/release/kiln \
        --model assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --random-adapters
"""

import argparse
import array
import http.client
import json
import os
import random
import re
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

QUESTIONS = [
    f"What does the OBD-II trouble code {c} mean?"
    for c in [
        "P0300", "P0171", "P0420", "P0128", "P0301", "P0442", "P0455", "P0113",
        "P0401", "P0505", "P0700", "P0011", "P0137", "P0340", "P0507", "P0174",
    ]
]

# SmolLM2-135M's projection shapes, for --random-adapters: (module, d_in, d_out).
SMOLLM2_LAYERS = 30
SMOLLM2_TARGETS = {
    "a": [("q_proj", 576, 576), ("v_proj", 576, 192)],
    "b": [("up_proj", 576, 1536), ("down_proj", 1536, 576)],
}


def write_random_lora(path, layers, targets, seed, size=0.05, r=8):
    """A LoRA adapter with small random factors, in PEFT's file format."""
    os.makedirs(path, exist_ok=True)
    rng = random.Random(seed)
    header, blobs, offset = {}, [], 0
    for layer in range(layers):
        for module, d_in, d_out in targets:
            group = "self_attn" if module[0] in "qkvo" and module[1] == "_" else "mlp"
            for part, shape in (("lora_A", [r, d_in]), ("lora_B", [d_out, r])):
                n = shape[0] * shape[1]
                data = array.array("f", (rng.uniform(-size, size) for _ in range(n))).tobytes()
                name = f"base_model.model.model.layers.{layer}.{group}.{module}.{part}.weight"
                header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(data)]}
                blobs.append(data)
                offset += len(data)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    with open(os.path.join(path, "adapter_model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head)
        for b in blobs:
            f.write(b)
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": 2 * r,
        "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False, "use_dora": False,
        "use_rslora": False, "target_modules": [t[0] for t in targets],
        "base_model_name_or_path": "SmolLM2-135M-Instruct",
    }
    with open(os.path.join(path, "adapter_config.json"), "w") as f:
        json.dump(config, f)


def ask(host, port, model, question, max_tokens):
    """One streamed greedy chat request: (answer, latency s, time to first token s, tokens)."""
    body = json.dumps({
        "model": model, "temperature": 0, "max_tokens": max_tokens, "stream": True,
        "messages": [{"role": "user", "content": question}],
    })
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=600)
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:300]!r}")
    parts, first, tokens = [], None, 0
    while True:
        line = resp.readline()
        if not line:
            raise RuntimeError("the stream ended without [DONE]")
        line = line.decode().strip()
        if not line.startswith("data: "):
            continue
        data = line[len("data: "):]
        if data == "[DONE]":
            break
        chunk = json.loads(data)
        if "error" in chunk:
            raise RuntimeError(chunk["error"]["message"])
        delta = chunk["choices"][0]["delta"]
        if delta.get("content"):
            if first is None:
                first = time.perf_counter() - t0
            parts.append(delta["content"])
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
    conn.close()
    latency = time.perf_counter() - t0
    return "".join(parts), latency, first if first is not None else latency, tokens


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kiln", default="target/release/kiln")
    ap.add_argument("--model", required=True)
    ap.add_argument("--adapter", action="append", default=[], help="NAME=DIR, repeatable")
    ap.add_argument("--random-adapters", action="store_true",
                    help="serve two random LoRA adapters with SmolLM2-135M's shapes")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=8, help="per client")
    ap.add_argument("--max-tokens", type=int, default=48)
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="kiln-bench-serve-")
    adapters = list(args.adapter)
    if args.random_adapters:
        for i, (name, targets) in enumerate(SMOLLM2_TARGETS.items()):
            path = os.path.join(tmp, name)
            write_random_lora(path, SMOLLM2_LAYERS, targets, seed=i + 1)
            adapters.append(f"{name}={path}")
    cmd = [args.kiln, "serve", "--model", args.model, "--name", "base", "--port", "0",
           "--max-concurrent", str(args.clients), "--max-queue", "1024"]
    for a in adapters:
        cmd += ["--adapter", a]
    server = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    port = None
    for line in server.stderr:
        sys.stderr.write(line)
        m = re.match(r"listening on http://([\d.]+):(\d+)", line)
        if m:
            host, port = m.group(1), int(m.group(2))
            break
    if port is None:
        sys.exit("kiln serve did not start")
    threading.Thread(target=lambda: [None for _ in server.stderr], daemon=True).start()
    try:
        models = ["base"] + [a.split("=", 1)[0] for a in adapters]
        total = args.clients * args.requests
        plan = [(models[j % len(models)], QUESTIONS[(j // len(models)) % len(QUESTIONS)])
                for j in range(total)]
        pairs = sorted(set(plan), key=plan.index)

        # One at a time: the reference answers.
        reference, seq_lat, seq_ttft, seq_tokens = {}, [], [], 0
        t0 = time.perf_counter()
        for model, q in pairs:
            text, lat, ttft, tokens = ask(host, port, model, q, args.max_tokens)
            reference[(model, q)] = text
            seq_lat.append(lat)
            seq_ttft.append(ttft)
            seq_tokens += tokens
        seq_wall = time.perf_counter() - t0

        # Concurrent clients.
        results, errors, lock = [], [], threading.Lock()

        def client(c):
            for k in range(args.requests):
                model, q = plan[c * args.requests + k]
                try:
                    out = ask(host, port, model, q, args.max_tokens)
                    with lock:
                        results.append((model, q) + out)
                except Exception as e:  # noqa: BLE001 - every failure is counted and shown
                    with lock:
                        errors.append(f"{model}: {e}")

        t0 = time.perf_counter()
        threads = [threading.Thread(target=client, args=(c,)) for c in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        mismatches = [(m, q, text, reference[(m, q)]) for m, q, text, *_ in results
                      if text != reference[(m, q)]]
        tokens = sum(r[5] for r in results)
        lat = [r[3] for r in results]
        ttft = [r[4] for r in results]
        print(f"\nmodels: {', '.join(models)}; {len(pairs)} distinct requests one at a time, "
              f"{total} requests from {args.clients} concurrent clients; max_tokens {args.max_tokens}")
        print("\n| run | requests | errors | answers equal to one-at-a-time | tokens/s | "
              "latency p50 / p95 (s) | first token p50 / p95 (s) |")
        print("|---|---|---|---|---|---|---|")
        print(f"| one at a time | {len(pairs)} | 0 | (reference) | {seq_tokens / seq_wall:.1f} | "
              f"{pct(seq_lat, .5):.2f} / {pct(seq_lat, .95):.2f} | "
              f"{pct(seq_ttft, .5):.3f} / {pct(seq_ttft, .95):.3f} |")
        print(f"| {args.clients} clients x {args.requests} | {total} | {len(errors)} | "
              f"{len(results) - len(mismatches)}/{total} | {tokens / wall:.1f} | "
              f"{pct(lat, .5):.2f} / {pct(lat, .95):.2f} | "
              f"{pct(ttft, .5):.3f} / {pct(ttft, .95):.3f} |")
        print(f"\nthroughput ratio (concurrent / one at a time): {(tokens / wall) / (seq_tokens / seq_wall):.2f}x")
        for e in errors[:5]:
            print(f"error: {e}")
        for m, q, got, want in mismatches[:5]:
            print(f"mismatch [{m}] {q!r}:\n  concurrent: {got!r}\n  alone:      {want!r}")
        return 1 if errors or mismatches else 0
    finally:
        server.terminate()
        server.wait(timeout=120)


if __name__ == "__main__":
    sys.exit(main())
