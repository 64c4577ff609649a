#!/usr/bin/env bash
# Set up everything splitfed needs in a virtual environment (default .venv beside this repo).
#   bash scripts/setup.sh            # create/refresh the environment
#   SPLITFED_VENV=/path bash scripts/setup.sh
# torch and torchvision are pinned to the pair this project is tested with; pip takes them
# from the local wheel cache where one exists, else from the package index.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${SPLITFED_VENV:-$here/.venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating virtual environment $venv" >&2
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
if ! "$venv/bin/python" -c 'import torch, torchvision, sys; sys.exit(not (torch.__version__.startswith("2.14.1") and torchvision.__version__.startswith("0.29.1")))' 2>/dev/null; then
  echo "setup: installing torch 2.14.1 and torchvision 0.29.1 (this takes a few minutes the first time)" >&2
  "${pip[@]}" install "torch==2.14.1" "torchvision==0.29.1"
fi
echo "setup: installing splitfed and its dependencies" >&2
"${pip[@]}" install -e "$here[dev,preprocess,tensorboard]"
echo "setup: ready: $venv/bin/splitfed" >&2
