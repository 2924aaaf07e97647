#!/usr/bin/env bash
# The generation benchmark: set-up, the Rust side (crates/decode/benches/generation.rs) and, with
# --with-hf, the same four cases with Hugging Face transformers (scripts/bench_hf_generate.py) on
# the same model folder and prompts, then both side by side.
#
#   bash scripts/bench-generate.sh [--with-hf] [--threads N] [--reps N]
#
# Run it on an otherwise idle machine: on 2 cores any other load (a build, a test run) distorts
# the numbers, batch 1 most of all.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

TRANSFORMERS_VERSION=5.23.0
python="$root/.detox/venv/bin/python"
with_hf=0
pass=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --with-hf) with_hf=1; shift ;;
    --threads | --reps)
      [[ $# -ge 2 ]] || { echo "$1 needs a value" >&2; exit 2; }
      pass+=("$1" "$2"); shift 2 ;;
    *) echo "unknown argument $1 (expected --with-hf, --threads N, --reps N)" >&2; exit 2 ;;
  esac
done

say() { printf '[bench] %s\n' "$*" >&2; }

bash scripts/setup.sh

out="$root/.detox/bench"
mkdir -p "$out"
rm -f "$out/rust.tsv" "$out/hf.tsv"

say "Rust: cargo bench -p decode --bench generation (bench profile = release settings)"
cargo bench --quiet -p decode --bench generation -- "${pass[@]}" --tsv "$out/rust.tsv"

if [[ "$with_hf" -eq 1 ]]; then
  installed="$("$python" -c 'import importlib.metadata as m; print(m.version("transformers"))' 2>/dev/null || true)"
  if [[ "$installed" != "$TRANSFORMERS_VERSION" ]]; then
    say "installing transformers==$TRANSFORMERS_VERSION into .detox/venv"
    if ! "$python" -m pip install --quiet --disable-pip-version-check "transformers==$TRANSFORMERS_VERSION"; then
      say "transformers==$TRANSFORMERS_VERSION is not available; installing the newest 5.x instead"
      "$python" -m pip install --quiet --disable-pip-version-check "transformers>=5,<6"
    fi
    installed="$("$python" -c 'import importlib.metadata as m; print(m.version("transformers"))')"
    [[ "$installed" == "$TRANSFORMERS_VERSION" ]] ||
      say "NOTE: measuring with transformers $installed, not the issue's $TRANSFORMERS_VERSION"
  fi
  echo
  say "Hugging Face: scripts/bench_hf_generate.py (transformers $installed)"
  "$python" scripts/bench_hf_generate.py "${pass[@]}" --tsv "$out/hf.tsv"

  echo
  echo "## Side by side (same machine, same run of this script)"
  echo
  "$python" - "$out/rust.tsv" "$out/hf.tsv" <<'EOF'
import sys

def load(path):
    rows = {}
    for line in open(path, encoding="utf-8"):
        key, rate, seconds = line.rstrip("\n").split("\t")
        rows[key] = float(rate)
    return rows

rust, hf = load(sys.argv[1]), load(sys.argv[2])
# (label, target as (kind, value)): absolute tok/s, or a multiple of Hugging Face.
cases = [
    ("batch1", "(a) batch 1", ("abs", 26.0)),
    ("batch25", "(b) 25 samples of one prompt", ("ratio", 2.5)),
    ("batch64", "(c) 64 different prompts", ("ratio", 3.0)),
    ("forward_nll", "(d) forward, 32 × 64, with log-softmax", ("ratio", 1.0)),
    ("forward_bare", "(d′) forward, 32 × 64, bare logits", ("ratio", 1.0)),
]
print("| case | Rust tok/s | HF tok/s | Rust / HF | target | met |")
print("|---|---:|---:|---:|---|---|")
for key, label, (kind, value) in cases:
    r, h = rust[key], hf[key]
    ratio = r / h
    if kind == "abs":
        target, met = f"≥ {value:g} tok/s", r >= value
    else:
        target, met = f"≥ {value:g}× HF", ratio >= value
    print(f"| {label} | {r:.1f} | {h:.1f} | {ratio:.2f} | {target} | {'yes' if met else 'no'} |")
EOF
fi
