#!/usr/bin/env bash
# Installs naf-export and its test tools on a fresh machine, CPU only.
# Usage: bash scripts/setup.sh            (from the repository root)
# Environment: TORCH_SPEC overrides the torch requirement (default: the CPU build torch==2.13.0;
# on machines whose pip would pick a CUDA wheel, point pip at the CPU wheel index first).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# System packages for the native runtimes' tests, where apt is available and we are root (CI's
# fresh Debian machine); elsewhere skipped quietly, and the tests that need them skip with the
# reason: libpng/libjpeg (naf-run reads PNG/JPEG pictures), the aarch64 cross compiler and
# qemu-user (tests/test_aarch64.py: Jetson's CPU code built and run on an Arm instruction set).
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  APT_PACKAGES="libpng-dev libjpeg-dev g++-aarch64-linux-gnu qemu-user"
  # shellcheck disable=SC2086
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $APT_PACKAGES >/dev/null 2>&1; then
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $APT_PACKAGES >/dev/null 2>&1 \
      || echo "setup.sh: could not install $APT_PACKAGES (the tests needing them will skip)"
  fi
fi

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
