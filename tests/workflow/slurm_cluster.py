"""A real single-node SLURM cluster on this machine, for the SLURM profile's end-to-end test.

:func:`ensure_slurm` installs Debian's ``slurm-wlm`` and ``munge`` when they are missing (root,
apt-get, non-interactive, with timeouts); :class:`SlurmCluster` writes a one-node configuration
for this machine (the CPUs and memory ``slurmd -C`` reports, node on 127.0.0.1, munge
authentication, ``proctrack/linuxproc``, ``task/none``, ``select/cons_tres``, a job completion
log), starts ``munged`` (as the munge user, unless a working one is already there),
``slurmctld`` and ``slurmd`` in the foreground as child processes whose PIDs it keeps, and stops
exactly those processes again.

Facts that shape it:

* The executor plugin's job step drops ``SLURM_CONF`` inside jobs, so ``srun`` there reads the
  default ``/etc/slurm/slurm.conf``: the configuration is written there; an existing file is
  backed up and restored by :meth:`SlurmCluster.stop`.
* There is no accounting database, so ``sacct`` fails: the test profile makes the plugin query
  ``squeue``, which reports finished jobs for ``MinJobAge`` seconds (set long here).
* ``JobCompType=jobcomp/filetxt`` logs every finished job (id, name, state) to a file: the proof
  that jobs ran through SLURM.
* Every call has a timeout, so a hung scheduler fails the test rather than CI; the daemons get
  ``PR_SET_PDEATHSIG`` so that even a killed test process takes them down with it.

Run ``python tests/workflow/slurm_cluster.py`` to bring the cluster up, print ``sinfo`` and stop it.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from apt import Unavailable, ensure_binaries

SLURM_CONF = Path("/etc/slurm/slurm.conf")
# One test cluster per machine at a time (it owns /etc/slurm/slurm.conf): an flock, released by
# the kernel even when the holder dies.
LOCK_FILE = Path("/tmp/crossgap-slurm-test-cluster.lock")
MARKER = "# Single-node test cluster written by tests/workflow/slurm_cluster.py"
PACKAGES = ["slurm-wlm", "munge"]
# What the test needs on PATH: the daemons, the clients the plugin calls, munge.
BINARIES = ["slurmctld", "slurmd", "sbatch", "srun", "squeue", "sinfo", "scontrol", "scancel", "munged", "munge"]
MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_SOCKET_DIR = Path("/run/munge")


class SlurmUnavailable(Exception):
    """SLURM cannot be installed or started here (the test skips with this reason)."""


def _sh(cmd: list[str], timeout: float = 30, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stdout[-2000:]} {proc.stderr[-2000:]}")
    return proc


def ensure_slurm(timeout: float = 900) -> None:
    """Install ``slurm-wlm`` and ``munge`` with apt-get when a binary is missing, without starting
    their services; :class:`SlurmUnavailable` when that is impossible here."""
    try:
        ensure_binaries(BINARIES, PACKAGES, no_services=True, timeout=timeout)
    except Unavailable as exc:
        raise SlurmUnavailable(str(exc)) from exc


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """preexec_fn: SIGTERM this daemon when the test process dies (even by SIGKILL)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _slurmstepd_pids() -> set[int]:
    pids = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "comm").read_text().startswith("slurmstepd"):
                    pids.add(int(proc.name))
            except OSError:
                pass
    return pids


def node_line() -> str:
    """This machine as a NodeName line: what ``slurmd -C`` detects (CPUs, topology, RealMemory)."""
    out = _sh([_bin("slurmd"), "-C"], timeout=30).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("NodeName="))
    return line.strip()


def _bin(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


@dataclass
class SlurmCluster:
    """One controller + one compute node on 127.0.0.1, state and logs under ``root``."""

    root: Path
    min_job_age: int = 3600
    def_mem_per_cpu: int = 1000
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    _backup: Path | None = None
    _wrote_conf: bool = False
    _stepds_before: set[int] = field(default_factory=set)
    _lock: object = None

    @property
    def jobcomp(self) -> Path:
        return self.root / "jobcomp.txt"

    @property
    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.procs.items()}

    def config(self, node: str, ctld_port: int, slurmd_port: int) -> str:
        host = re.match(r"NodeName=(\S+)", node).group(1)
        r = self.root
        return "\n".join([
            f"{MARKER} (removed after the test).",
            "ClusterName=crossgap-test",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={slurmd_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CryptoType=crypto/munge",
            "MpiDefault=none",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            f"DefMemPerCPU={self.def_mem_per_cpu}",
            "SchedulerType=sched/builtin",
            "ReturnToService=2",
            # squeue (the plugin's status command here) sees finished jobs for MinJobAge seconds.
            f"MinJobAge={self.min_job_age}",
            "InactiveLimit=0",
            "KillWait=5",
            "Waittime=0",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/filetxt",
            f"JobCompLoc={self.jobcomp}",
            f"StateSaveLocation={r}/state",
            f"SlurmdSpoolDir={r}/spool",
            f"SlurmctldPidFile={r}/slurmctld.pid",
            f"SlurmdPidFile={r}/slurmd.pid",
            f"SlurmctldLogFile={r}/slurmctld.log",
            f"SlurmdLogFile={r}/slurmd.log",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            f"{node} NodeAddr=127.0.0.1 State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
            "",
        ])

    # ---- bring-up ---------------------------------------------------------------------------
    def start(self, timeout: float = 60, lock_timeout: float = 1800) -> None:
        """Write the configuration, start munged/slurmctld/slurmd and wait until the node is idle.

        Waits up to ``lock_timeout`` seconds for another test cluster on this machine to stop.
        """
        ensure_slurm()
        self.root.mkdir(parents=True, exist_ok=True)
        for sub in ("state", "spool"):
            (self.root / sub).mkdir(exist_ok=True)
        self._acquire_lock(lock_timeout)
        try:
            self._stepds_before = _slurmstepd_pids()
            conf = self.config(node_line(), _free_port(), _free_port())
            (self.root / "slurm.conf").write_text(conf)
            # A file of ours left by a killed test run is not restored, just replaced and removed.
            if SLURM_CONF.exists() and not SLURM_CONF.read_text(errors="replace").startswith(MARKER):
                self._backup = self.root / "slurm.conf.orig"
                shutil.copy2(SLURM_CONF, self._backup)
            SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
            SLURM_CONF.write_text(conf)
            self._wrote_conf = True
            self._start_munge()
            self._spawn("slurmctld", [_bin("slurmctld"), "-D", "-c", "-i", "-f", str(SLURM_CONF)])
            self._wait(lambda: _sh(["scontrol", "ping"], check=False, timeout=10).returncode == 0,
                       "slurmctld to answer scontrol ping", timeout)
            self._spawn("slurmd", [_bin("slurmd"), "-D", "-f", str(SLURM_CONF)])
            self._wait(self._node_idle, "the node to be idle in sinfo", timeout)
        except BaseException:
            self.stop()
            raise

    def _acquire_lock(self, timeout: float) -> None:
        handle = open(LOCK_FILE, "a+")
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    handle.close()
                    raise TimeoutError(f"another SLURM test cluster held {LOCK_FILE} for {timeout:.0f} s")
                time.sleep(1)
        self._lock = handle

    def _start_munge(self) -> None:
        if self._munge_works():
            return  # a munged is already serving this machine: use it, leave it alone
        if not MUNGE_KEY.exists():
            _sh(["mungekey", "--create", "--keyfile", str(MUNGE_KEY)], timeout=30)
            shutil.chown(MUNGE_KEY, "munge", "munge")
            MUNGE_KEY.chmod(0o400)
        for d in (MUNGE_SOCKET_DIR, Path("/var/lib/munge"), Path("/var/log/munge")):
            d.mkdir(parents=True, exist_ok=True)
            shutil.chown(d, "munge", "munge")
        MUNGE_SOCKET_DIR.chmod(0o755)
        self._spawn("munged", [_bin("munged"), "--foreground", "--force"], user="munge", group="munge")
        self._wait(self._munge_works, "munged to answer", 20)

    @staticmethod
    def _munge_works() -> bool:
        try:
            cred = subprocess.run(["munge", "-n"], capture_output=True, timeout=10)
            if cred.returncode != 0:
                return False
            return subprocess.run(["unmunge"], input=cred.stdout, capture_output=True, timeout=10).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def _spawn(self, name: str, cmd: list[str], **kwargs) -> None:
        log = open(self.root / f"{name}.out", "wb")
        env = dict(os.environ, SLURM_CONF=str(SLURM_CONF))
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=env, preexec_fn=_die_with_parent, **kwargs)
        log.close()

    def _node_idle(self) -> bool:
        out = _sh(["sinfo", "-h", "-N", "-o", "%t"], check=False, timeout=10).stdout.split()
        return out == ["idle"]

    def _wait(self, ready, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited ({proc.returncode}) while waiting for {what}:\n{self.logs()}")
            try:
                if ready():
                    return
            except subprocess.TimeoutExpired:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}:\n{self.logs()}")

    def logs(self, tail: int = 3000) -> str:
        parts = []
        for name in ("munged.out", "slurmctld.out", "slurmctld.log", "slurmd.out", "slurmd.log"):
            path = self.root / name
            if path.exists() and path.stat().st_size:
                parts.append(f"--- {name}\n{path.read_text(errors='replace')[-tail:]}")
        return "\n".join(parts)

    # ---- queries ----------------------------------------------------------------------------
    def jobcomp_records(self) -> list[dict[str, str]]:
        """The job completion log: one ``{field: value}`` per finished job (JobId, Name, JobState ...)."""
        if not self.jobcomp.exists():
            return []
        return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in self.jobcomp.read_text().splitlines() if line.strip()]

    # ---- tear-down --------------------------------------------------------------------------
    def stop(self, timeout: float = 15) -> None:
        """Cancel remaining jobs, stop the daemons this object started (by PID), restore slurm.conf."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            try:
                ids = _sh(["squeue", "-h", "-o", "%i"], check=False, timeout=10).stdout.split()
                if ids:
                    _sh(["scancel", *ids], check=False, timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
        # Job step daemons of this cluster's jobs (none when every job finished).
        for pid in _slurmstepd_pids() - self._stepds_before:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self._wrote_conf:
            if self._backup is not None:
                shutil.copy2(self._backup, SLURM_CONF)
            else:
                SLURM_CONF.unlink(missing_ok=True)
            self._wrote_conf = False
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    def __enter__(self) -> "SlurmCluster":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":  # manual check: bring up, show, tear down
    import tempfile

    started = time.monotonic()
    with SlurmCluster(Path(tempfile.mkdtemp(prefix="crossgap-slurm-"))) as cluster:
        print(f"up in {time.monotonic() - started:.1f} s, pids {cluster.pids}")
        print(_sh(["sinfo"]).stdout)
        print(_sh(["sbatch", "--parsable", "--wrap", "echo hello; srun -n1 hostname"]).stdout)
        time.sleep(3)
        print(cluster.jobcomp.read_text() if cluster.jobcomp.exists() else "no jobcomp yet")
