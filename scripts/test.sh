#!/usr/bin/env bash
# Install napari-sine with its test extra into ./.venv, then lint and test it.
#
# This is THE test command: the README tells people to run `bash scripts/test.sh`, and CI's .ci/run
# runs exactly this script, so the two cannot drift apart. Extra arguments go to pytest, e.g.
# `bash scripts/test.sh -k pooling -x`.
#
# Steps (each one timed):
#   1. system libraries for Qt tests on a virtual screen (Xvfb + the xcb libraries Qt 6 needs), via
#      apt-get when some are missing and we are root (or have sudo); otherwise a warning;
#   2. a virtual environment in ./.venv (reused when it already exists);
#   3. torch + torchvision at the pinned versions FIRST (a bare `torch` requirement would pull
#      whatever pip finds; 2.14.1/0.29.1 are the versions the project is tested with; torchvision only
#      because the test extra's timm needs one);
#   4. `pip install -e ".[test]"`;
#   5. `ruff check .`;
#   6. `python -m pytest -q` (pytest's exit code is kept: no tests collected, exit 5, is a failure).
#
# Environment knobs (PYTHON, VENV, TORCH_PACKAGES, TORCHVISION_PACKAGES): scripts/venv.sh.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/venv.sh
source scripts/venv.sh

# Debian packages for Qt 6 (PyQt6) on Xvfb.
APT_PACKAGES=(
    xvfb libxcb-icccm4 libxcb-keysyms1 libxkbcommon-x11-0 libxcb-xinerama0 libxcb-cursor0
    libxcb-image0 libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xkb1
    libgl1 libegl1 libfontconfig1 libdbus-1-3 libglib2.0-0
)

STEP_NAMES=()
STEP_SECONDS=()
TOTAL_START=$(date +%s)

summary() {
    local status=$?
    echo
    echo "== step durations =="
    local i
    for i in "${!STEP_NAMES[@]}"; do
        printf '  %6ss  %s\n' "${STEP_SECONDS[$i]}" "${STEP_NAMES[$i]}"
    done
    printf '  %6ss  total (exit status %s)\n' "$(( $(date +%s) - TOTAL_START ))" "$status"
}
trap summary EXIT

# step NAME COMMAND...: run a command, print and record how long it took.
step() {
    local name=$1
    shift
    echo
    echo "== ${name} =="
    local start rc=0
    start=$(date +%s)
    # Note: `set -e` does not apply inside "$@" here, so the functions below check their own steps.
    "$@" || rc=$?
    local took=$(( $(date +%s) - start ))
    if [ "$rc" -ne 0 ]; then
        STEP_NAMES+=("$name  ** FAILED (exit $rc) **")
        STEP_SECONDS+=("$took")
        echo "-- ${name}: FAILED with exit status $rc after ${took}s" >&2
        exit "$rc"
    fi
    STEP_NAMES+=("$name")
    STEP_SECONDS+=("$took")
    echo "-- ${name}: ${took}s"
}

install_system_packages() {
    if ! command -v dpkg-query >/dev/null 2>&1; then
        echo "warning: not a Debian-like system; install Xvfb and Qt's xcb libraries yourself" \
             "(needed by the napari/Qt tests)." >&2
        return 0
    fi
    local missing=() pkg
    for pkg in "${APT_PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$pkg")
        fi
    done
    if [ ${#missing[@]} -eq 0 ]; then
        echo "all present"
        return 0
    fi
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo=(sudo)
        else
            echo "warning: missing ${missing[*]} and not root; the napari/Qt tests need them:" \
                 "apt-get install ${missing[*]}" >&2
            return 0
        fi
    fi
    echo "installing: ${missing[*]}"
    "${sudo[@]}" apt-get update -q || return
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${missing[@]}"
}

step "system packages (Xvfb, Qt xcb libraries)" install_system_packages
step "virtual environment" make_venv
# shellcheck disable=SC2086  # the package lists are space-separated on purpose
step "torch first ($TORCH_PACKAGES $TORCHVISION_PACKAGES)" "$PY" -m pip install $TORCH_PACKAGES \
    $TORCHVISION_PACKAGES
step "pip install -e .[test]" "$PY" -m pip install -e ".[test]"
step "ruff check" "$PY" -m ruff check .
step "pytest" "$PY" -m pytest -q "$@"
