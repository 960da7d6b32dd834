#!/usr/bin/env bash
# The package as a user gets it: build the wheel and the sdist, install the wheel into a fresh
# virtual environment in a temporary folder outside the checkout, and from yet another folder
# train the shipped MNIST sample for one epoch and print a preset's summary.
# Usage: ci/wheel.sh [PYTHON]   (PYTHON: an interpreter with the `build` module; default python3)
# Prints the wheel's size and what it holds. About 2 minutes when the kernels are cached.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${1:-python3}
# The installed package must stand on its own: a PYTHONPATH to a checkout would also make pip
# think rnnlab is already installed.
unset PYTHONPATH
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$PYTHON" -m build --outdir "$tmp/dist" . >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log"; exit 1; }
wheel=$(ls "$tmp"/dist/rnnlab-*.whl)
ls "$tmp"/dist/rnnlab-*.tar.gz >/dev/null
echo "wheel: $(basename "$wheel"), $(du -k "$wheel" | cut -f1) KiB"

# The files a user needs beside the code: presets, data samples, the kernels' sources.
"$PYTHON" - "$wheel" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
want = {
    "presets": [n for n in names if n.startswith("rnnlab/presets/") and n.endswith(".toml")],
    "data samples": [n for n in names if n.startswith("rnnlab/data/sample/")],
    "kernel sources": [n for n in names if n.startswith("rnnlab/nn/backends/_ext/")
                       and n.endswith((".cpp", ".h"))],
    "python modules": [n for n in names if n.endswith(".py")],
}
missing = [what for what, found in want.items() if not found]
print("wheel holds: " + ", ".join(f"{len(found)} {what}" for what, found in want.items()))
if missing or len(want["kernel sources"]) < 5 or len(want["presets"]) < 6:
    sys.exit(f"wheel: expected presets, data samples and 5 kernel sources, got {want}")
PY

python3 -m venv "$tmp/venv"
pip_install() { "$tmp/venv/bin/pip" install -q "$@" >"$tmp/pip.log" 2>&1 || { cat "$tmp/pip.log"; exit 1; }; }
pip_install torch==2.13.0  # the CPU wheel; a looser pin pulls a multi-GB CUDA build
pip_install "$wheel"
"$tmp/venv/bin/python" -c "import rnnlab, sys; sys.exit('site-packages' not in rnnlab.__file__)"
mkdir "$tmp/elsewhere"
cd "$tmp/elsewhere"
"$tmp/venv/bin/rnnlab" train mnist-sample --set train.epochs=1 --no-progress \
    --out "$tmp/run"
test -f "$tmp/run/report.json"
"$tmp/venv/bin/rnnlab" summary imdb-seed
echo "wheel: installed outside the checkout, train and summary ran"
