#!/usr/bin/env bash
# Install napari-sine into ./.venv and run the main job on the bundled sample data, offline.
#
# This is the README's first command. It propagates the bundled CC0 DSB2018 sample (one labelled
# nuclei image, three targets) with the default model — the embedded model shipped in the package,
# unless the official weights were imported — writes the proposals to ./demo_output/ and prints per
# target the object counts, instance F1 and semantic IoU against the bundled labels.
#
# Steps: a virtual environment in ./.venv (reused when it exists; shared with scripts/test.sh), torch +
# torchvision at the tested versions FIRST, `pip install -e .`, then `napari-sine demo` with the network
# switched off for the model (HF_HUB_OFFLINE=1). Extra arguments go to `napari-sine demo`, e.g.
# `bash scripts/demo.sh --adapt 60`.
#
# Environment knobs: PYTHON (interpreter that creates the venv, default python3), VENV (default
# .venv), TORCH_PACKAGES (default "torch==2.14.1 torchvision==0.29.1").
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
TORCH_PACKAGES="${TORCH_PACKAGES:-torch==2.14.1 torchvision==0.29.1}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_PROGRESS_BAR=off

if [ -x "$VENV/bin/python" ]; then
    echo "reusing $VENV ($("$VENV/bin/python" --version))"
else
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
        || { echo "error: $PYTHON is older than Python 3.10" >&2; exit 1; }
    "$PYTHON" -m venv "$VENV"
fi
# shellcheck disable=SC2086  # TORCH_PACKAGES is a space-separated list on purpose
"$VENV/bin/python" -m pip install -q $TORCH_PACKAGES
"$VENV/bin/python" -m pip install -q -e .
HF_HUB_OFFLINE=1 "$VENV/bin/napari-sine" demo --out demo_output --overwrite "$@"
