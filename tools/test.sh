#!/usr/bin/env bash
# The whole test suite, as CI runs it:   bash tools/test.sh [pytest arguments]
#
# Makes (once) and uses the virtual environment .venv-test (TEST_VENV=DIR for another) and runs
# `python -m pytest -q` in it. Where ComfyUI's source and its environment script sit beside this
# clone (SHARED=DIR, default ../shared: DIR/comfyui and DIR/tools/comfyui-venv.sh, as in CI), that
# environment runs ComfyUI on the CPU and the node and example-workflow tests run against a fresh
# writable copy of DIR/comfyui (COMFYUI_PATH); without them those tests skip, saying why.
# For the library and command-line tests alone, in an environment of your own:
#   pip install -c constraints.txt -e ".[test]" && python -m pytest -q
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${TEST_VENV:-.venv-test}
shared=${SHARED:-../shared}
comfy=
if [ -f "$shared/comfyui/main.py" ] && [ -f "$shared/tools/comfyui-venv.sh" ]; then
    comfy=$shared/comfyui
fi
if [ -n "$comfy" ] && [ -x "$venv/bin/python" ] && [ ! -f "$venv/comfy-req.txt" ]; then
    echo "$venv was made without ComfyUI's requirements: making it again" >&2
    rm -rf "$venv"
fi
if [ ! -x "$venv/bin/python" ]; then
    if [ -n "$comfy" ]; then
        bash "$shared/tools/comfyui-venv.sh" "$venv"
    else
        python3 -m venv "$venv"
        "$venv/bin/python" -m pip install -q --upgrade pip
        "$venv/bin/python" -m pip install -q -c constraints.txt torch
    fi
fi
"$venv/bin/python" -m pip install -q -c constraints.txt -e ".[test]"
if [ -n "$comfy" ]; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    cp -R "$comfy" "$work/comfyui"
    chmod -R u+w "$work/comfyui"
    export COMFYUI_PATH=$work/comfyui COMFYUI_PYTHON=$PWD/$venv/bin/python
fi
"$venv/bin/python" -m pytest -q "$@"
