"""Run one command in a sandbox, with limits: the only place where learner code is started.

``bwrap`` (bubblewrap, Debian package ``bubblewrap``) gives the command its own mount, PID, network,
IPC, UTS and user namespaces: it sees a read-only Python environment (the interpreter, the venv,
the ``patchlab`` package, the grader's in-kernel modules), its own scratch folder (read-write,
the only place it can write apart from a private ``/tmp``), and nothing else: not the submissions
folder, not the output folder or gradebook, not ``solutions/``, not other learners; no network
(the new network namespace holds only loopback); every process it starts ends when it ends (its PID
namespace dies with it). No capabilities are kept. Limits: address space per process
(``RLIMIT_AS``), CPU seconds per process (``RLIMIT_CPU``), size of any file written
(``RLIMIT_FSIZE``), number of processes (a ``pids`` cgroup where one can be made, else
``RLIMIT_NPROC``, which the kernel does not apply to root), and wall-clock time (the whole sandbox
is killed).

``none`` runs the same command without isolation (the same limits, except the process count where
no cgroup can be made): for machines without bubblewrap, chosen knowingly by the instructor.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

KINDS = ("auto", "bwrap", "none")
INSTALL_HINT = ("bubblewrap is not installed: install it (Debian/Ubuntu: `sudo apt-get install bubblewrap`) or "
                "pass `--sandbox none` to run learner code with your own rights")
CGROUP_ROOTS = (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup"))


class SandboxError(RuntimeError):
    """The sandbox asked for cannot be used here; the message says what to do."""


class Stopped(RuntimeError):
    """The group was stopped: no sandbox of it starts any more."""


class Group:
    """The sandboxes of one grading run. :meth:`stop` kills those running and refuses to start more:
    a sandbox being started at that moment is either killed with the others or never started."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen] = set()
        self._stopped = False

    def start(self, command: list[str], **popen: object) -> subprocess.Popen:
        with self._lock:
            if self._stopped:
                raise Stopped("the grading run was stopped")
            proc = subprocess.Popen(command, **popen)
            self._running.add(proc)
            return proc

    def ended(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._running.discard(proc)

    def stop(self) -> None:
        """Kill every sandbox still running (the grader was interrupted) and start no more."""
        with self._lock:
            self._stopped = True
            for proc in self._running:
                _kill_group(None, proc)  # its cgroup, if any, is emptied as its run() returns


@dataclass(frozen=True)
class Limits:
    """What one sandboxed run may use."""

    memory_mib: int = 6144  # address space per process
    cpu_seconds: int = 1800  # CPU time per process
    processes: int = 64
    file_mib: int = 64  # largest file it may write
    wall_seconds: float = 900.0


@dataclass
class Result:
    """How a sandboxed run ended: ``returncode`` (negative: killed by that signal), ``killed`` (why
    the sandbox killed it, or ""), what it printed (cut to ``max_output`` characters)."""

    returncode: int
    output: str
    seconds: float
    killed: str = ""


def resolve_kind(kind: str) -> str:
    """``bwrap`` or ``none``: ``auto`` is ``bwrap`` when it works here, else an error that says how to
    install it or to pass ``--sandbox none``."""
    if kind not in KINDS:
        raise SandboxError(f"unknown sandbox {kind!r}: choose one of {', '.join(KINDS)}")
    if kind == "none":
        return "none"
    if shutil.which("bwrap") is None:
        raise SandboxError(INSTALL_HINT)
    probe = subprocess.run(["bwrap", "--unshare-all", "--ro-bind", "/", "/", "--", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        raise SandboxError(f"bubblewrap cannot create namespaces here ({probe.stderr.strip()[:200]}): allow "
                           "unprivileged user namespaces, or pass `--sandbox none` to run learner code with "
                           "your own rights")
    return "bwrap"


def _system_binds() -> list[str]:
    """The read-only system folders a dynamically linked Python needs (merged /usr or not)."""
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        path = Path(top)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), top]
        elif path.is_dir():
            args += ["--ro-bind", top, top]
    for name in ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "alternatives", "fonts"):
        if (Path("/etc") / name).exists():
            args += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    return args


GRADER_DIR = "/grader"  # where the sandbox sees the grader's own in-kernel modules
TMP_BYTES = 512 * 1024 * 1024  # the private /tmp is memory: capped


def bwrap_command(argv: list[str], scratch: Path, read_only: list[Path], grader: Path, env: dict[str, str],
                  devices: Sequence[str] = ()) -> list[str]:
    """The ``bwrap`` command line running ``argv`` with ``scratch`` as ``/submission`` (its working
    folder, read-write), ``grader`` as ``/grader``, each of ``read_only`` at its own path, and the
    bubblewrap arguments ``devices`` (a GPU's, :func:`autograder.gpu.bind_args`) after ``/dev``."""
    args = ["bwrap", "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--uid", "1000", "--gid", "1000", "--hostname", "sandbox", *_system_binds(),
            "--size", str(TMP_BYTES), "--tmpfs", "/tmp", "--proc", "/proc", "--dev", "/dev", *devices]
    bound = list(dict.fromkeys(Path(p).resolve() for p in read_only))
    for path in bound:
        args += ["--ro-bind", str(path), str(path)]
    # A path reached through a symbolic link (a venv that is a link, as sys.executable names it) is the
    # same link inside, unless a bound folder already holds it.
    for path in dict.fromkeys(Path(os.path.abspath(p)) for p in read_only):
        if path not in bound and not any(folder in path.parents for folder in bound):
            args += ["--symlink", str(path.resolve()), str(path)]
    args += ["--ro-bind", str(grader), GRADER_DIR, "--bind", str(scratch), "/submission", "--chdir", "/submission",
             "--clearenv"]
    for key, value in env.items():
        args += ["--setenv", key, value]
    return [*args, "--", *argv]


def _pids_cgroup(limit: int) -> Path | None:
    """A fresh ``pids`` cgroup (v1 or v2) limited to ``limit`` processes, or None where none can be made."""
    for root in CGROUP_ROOTS:
        if not (root / "cgroup.procs").exists():
            continue
        group = root / f"autograder-{os.getpid()}-{time.monotonic_ns()}"
        try:
            group.mkdir()
            (group / "pids.max").write_text(str(limit))
            return group
        except OSError:
            try:
                group.rmdir()
            except OSError:
                pass
    return None


def _kill_group(cgroup: Path | None, proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if cgroup is not None:
        for pid in (cgroup / "cgroup.procs").read_text().split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


def run(kind: str, argv: list[str], scratch: Path, read_only: list[Path], grader: Path, env: dict[str, str],
        limits: Limits = Limits(), max_output: int = 20_000, group: Group | None = None,
        devices: Sequence[str] = ()) -> Result:
    """Run ``argv`` in the sandbox ``kind`` (``bwrap`` or ``none``) with ``limits``, one of ``group``
    (raises :class:`Stopped` when it was stopped); never raises for what the command does.
    ``{grader}`` in ``argv`` and ``env`` is where ``grader`` is seen. Under ``none`` the command runs
    in ``scratch`` with ``env`` alone."""
    seen = GRADER_DIR if kind == "bwrap" else str(grader)
    argv = [a.replace("{grader}", seen) for a in argv]
    env = {k: v.replace("{grader}", seen) for k, v in env.items()}
    cgroup = _pids_cgroup(limits.processes)
    # RLIMIT_NPROC counts every process of the user: allow the ones already running.
    nproc = limits.processes + (_processes_of(os.geteuid()) if os.geteuid() else 0)

    def child_setup() -> None:  # in the child, before exec: limits, own process group, cgroup
        os.setsid()
        if cgroup is not None:
            (cgroup / "cgroup.procs").write_text(str(os.getpid()))
        mib = 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_mib * mib,) * 2)
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds,) * 2)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_mib * mib,) * 2)
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc,) * 2)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    command = bwrap_command(argv, scratch, read_only, grader, env, devices) if kind == "bwrap" else argv
    group = group or Group()
    start = time.monotonic()
    try:
        proc = group.start(command, cwd=scratch, env=env if kind == "none" else {"PATH": os.environ["PATH"]},
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           preexec_fn=child_setup)
    except BaseException:  # stopped, or it could not start: no cgroup left behind
        if cgroup is not None:
            cgroup.rmdir()
        raise
    killed = ""
    try:
        output, _ = proc.communicate(timeout=limits.wall_seconds)
    except subprocess.TimeoutExpired:
        killed = f"it ran past the {limits.wall_seconds:g} s limit"
        _kill_group(cgroup, proc)
        output, _ = proc.communicate()
    except BaseException:  # Ctrl-C in the grader: nothing of the learner's may outlive it
        _kill_group(cgroup, proc)
        proc.wait()
        raise
    finally:
        group.ended(proc)
        if cgroup is not None:
            _kill_group(cgroup, proc)
            for _ in range(50):
                try:
                    cgroup.rmdir()
                    break
                except OSError:
                    time.sleep(0.05)
    text = output.decode("utf-8", "replace")
    if len(text) > max_output:
        text = text[:max_output] + f"\n[... {len(text) - max_output} more characters cut]"
    return Result(proc.returncode, text, time.monotonic() - start, killed)


def enforced_limits(kind: str) -> list[str]:
    """What a run of ``kind`` here isolates and limits, for the record of a grading run."""
    limits = ["memory", "cpu time", "file size", "wall time"]
    if os.geteuid() != 0 or any((root / "cgroup.procs").exists() and os.access(root, os.W_OK)
                                for root in CGROUP_ROOTS):
        limits.append("processes")
    isolation = ["filesystem", "network", "processes outlive nothing", "no capabilities"] if kind == "bwrap" else []
    return isolation + limits


def _processes_of(uid: int) -> int:
    """How many processes ``uid`` runs now."""
    count = 0
    for entry in Path("/proc").iterdir():
        try:
            count += entry.name.isdigit() and entry.stat().st_uid == uid
        except OSError:
            pass
    return count


def python_read_only_paths() -> list[Path]:
    """The interpreter and environment that run the grading kernels: this venv and the Python it
    was made from, and the folder ``patchlab`` is imported from (an editable install points outside
    the venv)."""
    import patchlab

    paths = [Path(sys.prefix), Path(sys.base_prefix), Path(patchlab.__file__).resolve().parent]
    real = Path(os.path.realpath(sys.executable)).parent.parent
    return [*paths, real]
