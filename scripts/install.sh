#!/usr/bin/env bash
# Installs everything the testbed needs on a Debian/Ubuntu machine, as root:
# system packages (Mininet, iperf3, iproute2, iptables) and the project's
# virtual environment at .venv/ with the pinned CPU torch wheel.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (sudo bash scripts/install.sh): Mininet needs root" >&2
    exit 1
fi

# openssh-server: cluster mode tests start their own sshd on loopback (no system sshd is enabled)
# dataset-fashion-mnist: the default dataset of the quickstart and paper experiments (IDX files, offline)
APT_PACKAGES="mininet iperf3 openssh-server iproute2 iptables ethtool iputils-ping util-linux procps psmisc python3-venv python3-pip dataset-fashion-mnist"
missing=""
for p in $APT_PACKAGES; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo ">> apt-get install$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo ">> creating .venv with $($PY --version)"
    $PY -m venv .venv
fi
stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -f "$stamp" ]; then
    echo ">> pip install -e .[dev] (torch==2.13.0 CPU wheel)"
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e '.[dev]'
    rm -f .venv/.installed-*
    touch "$stamp"
fi
# Mininet's Python library comes from the distribution package; make it (and
# only it) importable from the venv. mnexec is on PATH from the same package.
.venv/bin/python -m testbed.venv_links
.venv/bin/testbed doctor --quiet
