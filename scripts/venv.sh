# Shared by scripts/test.sh and scripts/demo.sh (sourced, not run): where the virtual environment is,
# which torch goes in first, and how the environment is made.
#
# Environment knobs: PYTHON (interpreter that creates the venv, default python3), VENV (default
# .venv), TORCH_PACKAGES (default "torch==2.14.1": the version the project is tested with; a bare
# `torch` requirement would pull whatever pip finds), TORCHVISION_PACKAGES (default
# "torchvision==0.29.1", the release built for that torch; installed by scripts/test.sh only, for the
# test extra's timm, which would otherwise pull the newest torchvision and with it the newest torch).

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
TORCH_PACKAGES="${TORCH_PACKAGES:-torch==2.14.1}"
TORCHVISION_PACKAGES="${TORCHVISION_PACKAGES:-torchvision==0.29.1}"
PY="$VENV/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_PROGRESS_BAR=off

# make_venv: create $VENV with $PYTHON (>= 3.10), or reuse it when it exists.
make_venv() {
    if [ -x "$VENV/bin/python" ]; then
        echo "reusing $VENV ($("$VENV/bin/python" --version))"
    else
        "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
            || { echo "error: $PYTHON is older than Python 3.10" >&2; return 1; }
        "$PYTHON" -m venv "$VENV" || return
        echo "created $VENV ($("$VENV/bin/python" --version))"
    fi
}
