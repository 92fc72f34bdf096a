"""Install Debian packages a workflow test needs (SLURM, a headless browser) when they are missing.

Tests that need such a package call :func:`ensure_binaries`; when an install is impossible here
(not root, no apt-get, no package source) it raises :class:`Unavailable` and the test skips, saying why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Sequence


class Unavailable(Exception):
    """The packages are missing and cannot be installed on this machine."""


def ensure_binaries(binaries: Sequence[str], packages: Sequence[str], *, no_services: bool = False,
                    timeout: float = 900) -> None:
    """``apt-get install packages`` unless every one of ``binaries`` is on PATH (or in /usr/sbin).

    A failed install (stale or missing package lists on a fresh machine) is retried once after
    ``apt-get update``.  ``no_services``: keep the packages' maintainer scripts from starting their
    daemons (an absent ``/usr/sbin/policy-rc.d`` is provided for the install, then removed).
    """
    def missing() -> list[str]:
        return [b for b in binaries if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]

    if not missing():
        return
    if os.geteuid() != 0:
        raise Unavailable(f"{missing()} missing and not root (cannot apt-get install {' '.join(packages)})")
    if shutil.which("apt-get") is None:
        raise Unavailable(f"{missing()} missing and no apt-get on this machine")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=120", *packages]
    policy = Path("/usr/sbin/policy-rc.d")
    own_policy = no_services and not policy.exists()
    deadline = time.monotonic() + timeout
    try:
        if own_policy:
            policy.write_text("#!/bin/sh\nexit 101\n")
            policy.chmod(0o755)
        proc = subprocess.run(install, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            subprocess.run(["apt-get", "update", "-q", "-o", "DPkg::Lock::Timeout=120"], env=env, capture_output=True,
                           text=True, timeout=max(deadline - time.monotonic(), 1))
            proc = subprocess.run(install, env=env, capture_output=True, text=True,
                                  timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired as exc:
        raise Unavailable(f"apt-get install {' '.join(packages)} timed out after {timeout:.0f} s") from exc
    finally:
        if own_policy:
            policy.unlink(missing_ok=True)
    if proc.returncode != 0:
        raise Unavailable(f"apt-get install {' '.join(packages)} failed ({proc.returncode}): {proc.stderr[-1500:]}")
    if missing():
        raise Unavailable(f"still missing after apt-get install {' '.join(packages)}: {missing()}")
