#!/usr/bin/env bash
# Rebuilds the checkpoints shipped in testbed/models/shipped/ (what the quickstart, the paper
# experiments and the tests load instead of training) and their SHA256SUMS.
# Usage: bash scripts/build_checkpoints.sh [fashion|digits32|digits16 ...] [--force]
set -euo pipefail
cd "$(dirname "$0")/.."
exec nice -n 10 .venv/bin/python testbed/models/shipped/build.py "$@"
