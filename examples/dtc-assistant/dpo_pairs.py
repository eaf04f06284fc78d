#!/usr/bin/env python3
"""Preference pairs for DPO after the main job, against hallucination.

Reads the main job's data folder (`runs/dtc-assistant/data`: train.jsonl, the test sets and
codes.jsonl) and writes `preference.jsonl` in TRL's plain preference format:

* every forward training question: chosen its answer (a description, or "I do not know" for the
  codes taught as unknown), rejected the same code with another code's description (from the
  same subsystem when there is one): the invention the tuned model makes. A question shown with
  passages ("Reference information: ...") rejects "I do not know" instead: with the answer in
  front of it, declining is the mistake;
* `--abstain N` further codes, outside the training, validation and test codes, asked with two
  question forms: chosen "CODE: I do not know this code; ...", rejected an invented description.

The pairs are shuffled with `--seed`. Usage:

    python3 examples/dtc-assistant/dpo_pairs.py runs/dtc-assistant/data --abstain 96
"""

import argparse
import json
import pathlib
import random

UNKNOWN = "I do not know this code; check the vehicle's service information."
QUESTIONS = ["What does {} mean?", "What is OBD-II code {}?", "Explain the trouble code {}.",
             "My scanner shows {}, what is it?"]


def read(path):
    return [json.loads(line) for line in open(path) if line.strip()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=pathlib.Path)
    ap.add_argument("--abstain", type=int, default=96)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    codes = read(args.data / "codes.jsonl")
    description = {c["code"]: c["description"] for c in codes}
    subsystem_of = lambda code: code[:3]  # family letter and the first two digits
    by_prefix = {}
    for c in codes:
        by_prefix.setdefault(subsystem_of(c["code"]), []).append(c["code"])

    def invented(code):
        pool = [c for c in by_prefix[subsystem_of(code)]
                if c != code and description[c] != description.get(code)]
        if not pool:
            pool = [c for c in description if c != code]
        return f"{code}: {description[rng.choice(pool)]}"

    train = read(args.data / "train.jsonl")
    used = {r["code"] for f in ["train", "validation", "test_phrasing", "test_unseen_codes"]
            if (args.data / f"{f}.jsonl").exists() for r in read(args.data / f"{f}.jsonl")}
    def rejected(r):
        if r["prompt"].startswith("Reference information") and UNKNOWN not in r["completion"]:
            return f"{r['code']}: {UNKNOWN}"
        return invented(r["code"])

    pairs = [{"prompt": r["prompt"], "chosen": r["completion"], "rejected": rejected(r),
              "code": r["code"]} for r in train if r["direction"] == "forward"]
    fresh = sorted(c for c in description if c not in used)
    for code in rng.sample(fresh, min(args.abstain, len(fresh))):
        for q in rng.sample(QUESTIONS, 2):
            pairs.append({"prompt": q.format(code), "chosen": f"{code}: {UNKNOWN}",
                          "rejected": invented(code), "code": code})
    rng.shuffle(pairs)
    out = args.data / "preference.jsonl"
    with open(out, "w") as f:
        for p in pairs:
            f.write(json.dumps(p) + "\n")
    print(f"{len(pairs)} pairs written to {out}")


if __name__ == "__main__":
    main()
