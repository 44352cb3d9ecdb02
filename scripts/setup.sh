#!/usr/bin/env bash
# Installs naf-export and its test tools on a fresh machine, CPU only.
# Usage: bash scripts/setup.sh            (from the repository root)
# Environment: TORCH_SPEC overrides the torch requirement (default: the CPU build torch==2.13.0;
# on machines whose pip would pick a CUDA wheel, point pip at the CPU wheel index first).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

"$PY" -m pip install --upgrade pip >/dev/null
# torch first and pinned: an unpinned requirement would pull gigabytes of CUDA wheels.
"$PY" -m pip install "${TORCH_SPEC:-torch==2.13.0}"
# The package itself; its CMake build compiles the native plugins (ONNX Runtime headers are
# fetched from the npm registry into ~/.cache/naf-export on first build).
"$PY" -m pip install ".[test]"
# Test oracles whose declared requirements would otherwise drag in CUDA wheels.
"$PY" -m pip install --no-build-isolation "natten==0.21.7"
"$PY" -m pip install --no-deps "kernel-lens==2.0.1"
echo "naf-export installed: run 'naf-export' for the default export, 'python -m pytest' for the tests."
