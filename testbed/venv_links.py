"""Make the distribution's Mininet library importable from this virtual environment.

Debian/Ubuntu ship Mininet (with ``mnexec``) as ``python3-mininet`` under the
system dist-packages. We link only the ``mininet`` package into the venv's
site-packages rather than exposing all system packages, which would shadow
the venv's pinned numpy/torch.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys

SYSTEM_DIRS = ["/usr/lib/python3/dist-packages", "/usr/local/lib/python3/dist-packages"]


def find_system_mininet() -> str | None:
    for d in SYSTEM_DIRS:
        cand = os.path.join(d, "mininet")
        if os.path.isfile(os.path.join(cand, "__init__.py")):
            return cand
    try:  # ask the system interpreter
        out = subprocess.run(
            ["/usr/bin/python3", "-c", "import mininet,os;print(os.path.dirname(mininet.__file__))"],
            capture_output=True, text=True, timeout=20,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return None


def link_mininet() -> str:
    target = find_system_mininet()
    if target is None:
        raise SystemExit("venv_links: Mininet's Python library not found; install it with 'apt-get install mininet'")
    site_dir = site.getsitepackages()[0]
    link = os.path.join(site_dir, "mininet")
    if os.path.islink(link) and os.readlink(link) == target:
        return link
    if os.path.lexists(link):
        if not os.path.islink(link):
            return link  # a real installed copy: leave it
        os.unlink(link)
    os.symlink(target, link)
    return link


if __name__ == "__main__":
    print(f"mininet linked: {link_mininet()}", file=sys.stderr)
