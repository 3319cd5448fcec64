#!/usr/bin/env bash
# Install napari-sine into ./.venv and run the main job on the bundled sample data, offline.
#
# This is the README's first command. It propagates the bundled CC0 DSB2018 sample (one labelled
# nuclei image, three targets) with the default model — the embedded model shipped in the package,
# unless the official weights were imported — writes the proposals to ./demo_output/ and prints per
# target the object counts, instance F1 and semantic IoU against the bundled labels.
#
# Steps: a virtual environment in ./.venv (reused when it exists; shared with scripts/test.sh), torch at
# the tested version FIRST, `pip install -e .`, then `napari-sine demo` with the network
# switched off for the model (HF_HUB_OFFLINE=1). Extra arguments go to `napari-sine demo`, e.g.
# `bash scripts/demo.sh --adapt 60`.
#
# Environment knobs (PYTHON, VENV, TORCH_PACKAGES): scripts/venv.sh.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/venv.sh
source scripts/venv.sh

make_venv
# shellcheck disable=SC2086  # TORCH_PACKAGES is a space-separated list on purpose
"$PY" -m pip install -q $TORCH_PACKAGES
"$PY" -m pip install -q -e .
HF_HUB_OFFLINE=1 "$VENV/bin/napari-sine" demo --out demo_output --overwrite "$@"
