#!/usr/bin/env bash
# The whole test suite (unit + integration on real Mininet networks), as root.
# Installs what it needs first. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/python -m pytest -ra "$@"
