#!/usr/bin/env bash
# Sets up a fresh machine: a virtual environment at .venv with the project and its test
# tools, and buf (for `buf lint` of the protos) under .tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
EXTRAS="${ICONICITY_EXTRAS:-scorer,harvester,generator,flows,dev}"

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# Plain pip (not uv or poetry): it takes torch 2.13.0's CPU wheel from this machine's
# local wheel folder instead of downloading a CUDA build (ENVIRONMENT.md).
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[${EXTRAS}]"

if [ ! -x .tools/node_modules/.bin/buf ]; then
    npm install --silent --no-save --no-audit --no-fund --prefix .tools @bufbuild/buf@1.75.0
fi

# Headless Chromium renders the HTML report in its test (ENVIRONMENT.md: Debian's `chromium`).
# Installed where apt can (root); elsewhere the report test says what is missing.
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        (apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
            || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends chromium >/dev/null; }) \
            || echo "setup: could not install chromium with apt-get; the report's browser test will fail" >&2
    else
        echo "setup: chromium is not installed (apt-get install chromium); the report's browser test needs it" >&2
    fi
fi
