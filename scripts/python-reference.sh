#!/usr/bin/env bash
# Makes a Python virtual environment with the reference stack (torch, transformers, peft, gguf;
# pinned in scripts/requirements-reference.txt, about 6 GB, from PyPI) and prints its python.
#
#   KILN_PEFT_PYTHON=$(./scripts/python-reference.sh) cargo test --release ...
#
# With KILN_PEFT_PYTHON set, the tests check the adapter format both ways: adapters and merged
# models saved by kiln load in Python PEFT / transformers with kiln's logits
# (`kiln_saved_adapters_for_python`), and the adapter the reduced main job trains on SmolLM2
# gives kiln's greedy answers in PEFT (`scripts/peft_generate.py`).
#
# The environment goes to $KILN_PYREF (default target/pyref); an existing one is reused when it
# already holds the pinned versions.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
venv="${KILN_PYREF:-target/pyref}"
requirements=scripts/requirements-reference.txt
stamp="$venv/requirements.txt"
if ! cmp -s "$requirements" "$stamp" 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" >&2
  cp "$requirements" "$stamp"
fi
"$venv/bin/python" -c "import torch, transformers, peft, gguf" >&2
echo "$(cd "$venv" && pwd)/bin/python"
