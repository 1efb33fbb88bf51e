#!/usr/bin/env bash
# Set up .venv for cldst: torch first (torch==$CLDST_TORCH_VERSION, default 2.13.0), then the package with its test
# extras. Which torch build that is comes from pip's configuration: find-links offering the CPU wheel give the CPU
# build; plain PyPI gives the multi-GB CUDA one (docs/getting-started.md). Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check "torch==${CLDST_TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
