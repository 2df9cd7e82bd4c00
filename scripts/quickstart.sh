#!/usr/bin/env bash
# The quickstart: installs what it needs, then runs the quickstart experiment.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/testbed quickstart "$@"
