"""Run one command in a sandbox, with limits: the only place where learner code is started.

``bwrap`` (bubblewrap, Debian package ``bubblewrap``) gives the command its own mount, PID, network,
IPC, UTS and user namespaces: it sees a read-only Python environment (the interpreter, the venv,
the ``patchlab`` package, the grader's in-kernel modules), its own scratch folder (read-write,
the only place it can write apart from a private ``/tmp`` and ``/dev/shm``; ``/`` and ``/dev`` are
read-only), and nothing else: not the submissions folder, not the output folder or gradebook, not
``solutions/``, not other learners; no network (the new network namespace holds only loopback);
every process it starts ends when it ends (its PID namespace dies with it). No capabilities are kept.

Limits of the submission as a whole: memory of all its processes and in-memory files together (a
memory cgroup, v2 or v1, where one can be made; else only the sizes of ``/tmp`` and ``/dev/shm``
and the per-process limit below), number of processes (a ``pids`` cgroup where one can be made,
else ``RLIMIT_NPROC``, which the kernel does not apply to root), the scratch folder's size (a sized
tmpfs mounted there, :class:`Scratch`, where the grader may mount: as root), what it prints (read
while it runs, kept up to a byte cap, the rest dropped), and wall-clock time (the whole sandbox is
killed). Per process: address space (``RLIMIT_AS``), CPU seconds (``RLIMIT_CPU``), size of any file
written (``RLIMIT_FSIZE``). :func:`whole_limits` says which of them this machine enforces.

``none`` runs the same command without isolation (the same limits, except the process count and
memory where no cgroup can be made): for machines without bubblewrap, chosen knowingly by the instructor.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Sequence

KINDS = ("auto", "bwrap", "none")
INSTALL_HINT = (
    "bubblewrap is not installed: install it (Debian/Ubuntu: `sudo apt-get install bubblewrap`) or "
    "pass `--sandbox none` to run learner code with your own rights"
)
CGROUP_V2 = (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified"))
CGROUP_V1 = {"pids": Path("/sys/fs/cgroup/pids"), "memory": Path("/sys/fs/cgroup/memory")}
MIB = 2**20


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

    def start(self, command: list[str], **popen: Any) -> subprocess.Popen:
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
    """What one submission may use (its sandboxed run, and the notebook it hands in)."""

    memory_mib: int = 6144  # address space per process
    cpu_seconds: int = 1800  # CPU time per process
    processes: int = 64
    file_mib: int = 64  # largest file it may write
    wall_seconds: float = 900.0
    submission_memory_mib: int = 4096  # all its processes and in-memory files together (memory cgroup)
    scratch_mib: int = 1024  # its scratch folder (a sized tmpfs)
    tmp_mib: int = 512  # its /tmp, and its /dev/shm (each a sized tmpfs)
    output_kib: int = 1024  # of what it prints (stdout and stderr), kept; the rest is read and dropped
    notebook_mib: int = 20  # the submitted notebook, checked before anything runs
    cells: int = 2000  # cells of the submitted notebook, checked before anything runs


@dataclass
class Result:
    """How a sandboxed run ended: ``returncode`` (negative: killed by that signal), ``killed`` (why
    the sandbox killed it, or ""), what it printed (cut to ``max_output`` characters), ``oom_kills``:
    processes its memory cgroup killed."""

    returncode: int
    output: str
    seconds: float
    killed: str = ""
    oom_kills: int = 0
    peak_mib: int | None = None  # the most memory its processes and in-memory files held together


def resolve_kind(kind: str) -> str:
    """``bwrap`` or ``none``: ``auto`` is ``bwrap`` when it works here, else an error that says how to
    install it or to pass ``--sandbox none``."""
    if kind not in KINDS:
        raise SandboxError(f"unknown sandbox {kind!r}: choose one of {', '.join(KINDS)}")
    if kind == "none":
        return "none"
    if shutil.which("bwrap") is None:
        raise SandboxError(INSTALL_HINT)
    probe = subprocess.run(
        ["bwrap", "--unshare-all", "--ro-bind", "/", "/", "--", "true"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        raise SandboxError(
            f"bubblewrap cannot create namespaces here ({probe.stderr.strip()[:200]}): allow "
            "unprivileged user namespaces, or pass `--sandbox none` to run learner code with "
            "your own rights"
        )
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


def bwrap_command(
    argv: list[str],
    scratch: Path,
    read_only: list[Path],
    grader: Path,
    env: dict[str, str],
    limits: Limits = Limits(),
    devices: Sequence[str] = (),
) -> list[str]:
    """The ``bwrap`` command line running ``argv`` with ``scratch`` as ``/submission`` (its working
    folder, read-write), ``grader`` as ``/grader`` and each of ``read_only`` at its own path; its
    ``/tmp`` and ``/dev/shm`` in memory of a fixed size, ``/`` and ``/dev`` read-only, and the
    bubblewrap arguments ``devices`` (a GPU's, :func:`autograder.gpu.bind_args`) after ``/dev``."""
    tmp = str(limits.tmp_mib * MIB)
    args = [
        "bwrap",
        "--unshare-all",
        "--unshare-user",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--uid",
        "1000",
        "--gid",
        "1000",
        "--hostname",
        "sandbox",
        *_system_binds(),
        "--size",
        tmp,
        "--tmpfs",
        "/tmp",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        *devices,
        "--size",
        tmp,
        "--tmpfs",
        "/dev/shm",
    ]
    bound = list(dict.fromkeys(Path(p).resolve() for p in read_only))
    for path in bound:
        args += ["--ro-bind", str(path), str(path)]
    # A path reached through a symbolic link (a venv that is a link, as sys.executable names it) is the
    # same link inside, unless a bound folder already holds it.
    for path in dict.fromkeys(Path(os.path.abspath(p)) for p in read_only):
        if path not in bound and not any(folder in path.parents for folder in bound):
            args += ["--symlink", str(path.resolve()), str(path)]
    args += [
        "--ro-bind",
        str(grader),
        GRADER_DIR,
        "--bind",
        str(scratch),
        "/submission",
        "--remount-ro",
        "/dev",
        "--remount-ro",
        "/",
        "--chdir",
        "/submission",
        "--clearenv",
    ]
    for key, value in env.items():
        args += ["--setenv", key, value]
    return [*args, "--", *argv]


class Cgroups:
    """The cgroups one run is put in: ``pids`` (``processes``) and ``memory`` (``submission_memory_mib``,
    no swap), each made in cgroup v2 where it offers the controller, else in v1, else not at all."""

    def __init__(self, limits: Limits) -> None:
        self.paths: list[Path] = []
        self.controllers: dict[str, str] = {}  # controller: "cgroup v2" / "cgroup v1"
        memory = str(limits.submission_memory_mib * MIB)
        name = f"autograder-{os.getpid()}-{time.monotonic_ns()}"
        wanted = {
            "pids": [("pids.max", str(limits.processes))],
            "memory": [("memory.max", memory), ("memory.swap.max", "0")],
        }
        for root in CGROUP_V2:
            if not (root / "cgroup.subtree_control").exists() or not os.access(root, os.W_OK):
                continue
            offered = (root / "cgroup.subtree_control").read_text().split()  # what a child group gets
            settings = [pair for controller in wanted if controller in offered for pair in wanted[controller]]
            group = self._make(root / name, settings) if settings else None
            if group is not None:
                self.controllers.update({c: "cgroup v2" for c in wanted if c in offered})
                break
        v1 = {
            "pids": [("pids.max", str(limits.processes))],
            "memory": [("memory.limit_in_bytes", memory), ("memory.memsw.limit_in_bytes", memory)],
        }
        for controller, settings in v1.items():
            root = CGROUP_V1[controller]
            if controller not in self.controllers and (root / "cgroup.procs").exists() and os.access(root, os.W_OK):
                if self._make(root / name, settings) is not None:
                    self.controllers[controller] = "cgroup v1"

    @staticmethod
    def _sweep(root: Path) -> None:
        """Remove the empty groups that graders killed before they could (their process is gone)."""
        for group in root.glob("autograder-*-*"):
            pid = group.name.split("-")[1]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                _rmdir(group)  # only an empty group can be removed

    def _make(self, group: Path, settings: list[tuple[str, str]]) -> Path | None:
        """``group`` made with ``settings`` (a missing ``memory.swap.max``/``memsw`` file, where the kernel
        has no swap accounting, is skipped), or None (nothing left behind)."""
        self._sweep(group.parent)
        try:
            group.mkdir()
        except OSError:
            return None
        try:
            for file, value in settings:
                if file.endswith(("swap.max", "memsw.limit_in_bytes")) and not (group / file).exists():
                    continue
                (group / file).write_text(value)
        except OSError:
            _rmdir(group)
            return None
        self.paths.append(group)
        return group

    def join(self) -> None:
        """Put the calling process in every group (in the child, before exec)."""
        for group in self.paths:
            (group / "cgroup.procs").write_text(str(os.getpid()))

    def kill(self) -> None:
        for group in self.paths:
            try:
                pids = (group / "cgroup.procs").read_text().split()
            except OSError:
                continue
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def oom_kills(self) -> int:
        """Processes killed for the memory limit (v2: ``memory.events``; v1: ``memory.oom_control``)."""
        for group in self.paths:
            for file in ("memory.events", "memory.oom_control"):
                try:
                    lines = (group / file).read_text().splitlines()
                except OSError:
                    continue
                counts = dict(line.split()[:2] for line in lines if len(line.split()) >= 2)
                if "oom_kill" in counts:
                    return int(counts["oom_kill"])
        return 0

    def peak_mib(self) -> int | None:
        for group in self.paths:
            for file in ("memory.peak", "memory.max_usage_in_bytes"):
                try:
                    return int((group / file).read_text()) // MIB
                except (OSError, ValueError):
                    continue
        return None

    def remove(self) -> None:
        """Kill what is left and remove the groups (retried while the kernel reaps the last processes)."""
        for group in self.paths:
            for _ in range(50):
                self.kill()
                if _rmdir(group):
                    break
                time.sleep(0.05)
        self.paths = []


def _rmdir(path: Path) -> bool:
    try:
        path.rmdir()
        return True
    except OSError:
        return False


def _kill_group(cgroups: Cgroups | None, proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if cgroups is not None:
        cgroups.kill()


class _Reader(threading.Thread):
    """Reads a pipe to its end as it is written, keeping its last ``cap`` bytes (where an error is
    told): what came before is counted and dropped, so a run that prints gigabytes costs the grader
    at most twice ``cap`` bytes."""

    def __init__(self, pipe: IO[bytes], cap: int) -> None:
        super().__init__(daemon=True)
        self.pipe, self.cap = pipe, cap
        self.kept = bytearray()
        self.dropped = 0

    def run(self) -> None:
        try:
            while chunk := os.read(self.pipe.fileno(), 1 << 16):
                self.kept += chunk
                if len(self.kept) > 2 * self.cap:
                    self.dropped += len(self.kept) - self.cap
                    del self.kept[: -self.cap]
        except (OSError, ValueError):  # closed under it: what was read is kept
            pass


def run(
    kind: str,
    argv: list[str],
    scratch: Path,
    read_only: list[Path],
    grader: Path,
    env: dict[str, str],
    limits: Limits = Limits(),
    max_output: int = 20_000,
    group: Group | None = None,
    devices: Sequence[str] = (),
) -> Result:
    """Run ``argv`` in the sandbox ``kind`` (``bwrap`` or ``none``) with ``limits``, one of ``group``
    (raises :class:`Stopped` when it was stopped); never raises for what the command does.
    ``{grader}`` in ``argv`` and ``env`` is where ``grader`` is seen. Under ``none`` the command runs
    in ``scratch`` with ``env`` alone. Of its output the last ``limits.output_kib`` are kept as it
    is read, the last ``max_output`` characters of them returned."""
    seen = GRADER_DIR if kind == "bwrap" else str(grader)
    argv = [a.replace("{grader}", seen) for a in argv]
    env = {k: v.replace("{grader}", seen) for k, v in env.items()}
    cgroups = Cgroups(limits)
    # RLIMIT_NPROC counts every process of the user: allow the ones already running.
    nproc = limits.processes + (_processes_of(os.geteuid()) if os.geteuid() else 0)

    def child_setup() -> None:  # in the child, before exec: limits, own process group, cgroups
        os.setsid()
        cgroups.join()
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_mib * MIB,) * 2)
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds,) * 2)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_mib * MIB,) * 2)
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc,) * 2)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    command = bwrap_command(argv, scratch, read_only, grader, env, limits, devices) if kind == "bwrap" else argv
    group = group or Group()
    start = time.monotonic()
    try:
        proc = group.start(
            command,
            cwd=scratch,
            env=env if kind == "none" else {"PATH": os.environ["PATH"]},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=child_setup,
        )
    except BaseException:  # stopped, or it could not start: no cgroup left behind
        cgroups.remove()
        raise
    assert proc.stdout is not None  # stdout=subprocess.PIPE above
    reader = _Reader(proc.stdout, limits.output_kib * 1024)
    reader.start()
    killed = ""
    try:
        proc.wait(timeout=limits.wall_seconds)
    except subprocess.TimeoutExpired:
        killed = f"it ran past the {limits.wall_seconds:g} s limit"
        _kill_group(cgroups, proc)
        proc.wait()
    except BaseException:  # Ctrl-C in the grader: nothing of the learner's may outlive it
        _kill_group(cgroups, proc)
        proc.wait()
        raise
    finally:
        group.ended(proc)
        _kill_group(cgroups, proc)
        oom_kills, peak = cgroups.oom_kills(), cgroups.peak_mib()
        cgroups.remove()
        reader.join(timeout=10)  # the pipe ends with its last writer: all are dead (a pipe kept open elsewhere
        proc.stdout.close()  # under `none`, by a process outside any cgroup, is not waited for)
    text = bytes(reader.kept).decode("utf-8", "replace")
    cut = reader.dropped + max(len(text) - max_output, 0)
    if cut:
        text = f"[... {cut} earlier characters cut]\n" + text[-max_output:]
    return Result(proc.returncode, text, time.monotonic() - start, killed, oom_kills, peak)


class Scratch:
    """A run's scratch folder ``path``, made fresh: a tmpfs of ``limits.scratch_mib`` mounted there where
    the grader may mount one (as root), else a plain folder. On leaving, unmounted (lazily: never
    blocked) and removed whatever is in it (:func:`autograder.untrusted.remove_tree`); ``left`` is
    False when something could not be removed."""

    def __init__(self, path: Path, limits: Limits) -> None:
        self.path, self.limits = path, limits
        self.mounted = False
        self.left = False

    def __enter__(self) -> Scratch:
        from autograder.untrusted import remove_tree

        remove_tree(self.path)
        self.path.mkdir(parents=True)
        self.mounted = mount_tmpfs(self.path, self.limits.scratch_mib)
        return self

    def __exit__(self, *exc: object) -> None:
        from autograder.untrusted import remove_tree

        if self.mounted:
            subprocess.run(["umount", "--lazy", str(self.path)], capture_output=True)
        self.left = not remove_tree(self.path)


def mount_tmpfs(path: Path, mib: int) -> bool:
    """Mount a tmpfs of ``mib`` MiB (and as many inodes as 4 KiB files would fill) on ``path``; False
    where this process may not mount."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    options = f"size={mib}m,nr_inodes={max(mib * 256, 1024)},mode=0755,nosuid,nodev"
    return (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "autograder-scratch", str(path)], capture_output=True
        ).returncode
        == 0
    )


def unmount_below(folder: Path) -> None:
    """Lazily unmount every mount below ``folder`` (scratch folders a killed run left mounted)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return
    prefix = str(folder.resolve()) + "/"
    unescape = lambda text: re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)  # noqa: E731 (\040: space)
    points = [unescape(line.split()[4]) for line in lines if len(line.split()) > 4]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", point], capture_output=True)


def probe_controllers() -> dict[str, str]:
    """The cgroup controllers a run gets here ({"pids": "cgroup v1", ...}), from a group made and removed."""
    probe = Cgroups(Limits())
    probe.remove()
    return probe.controllers


def whole_limits(kind: str) -> dict[str, str]:
    """How each whole-submission limit is enforced on this machine (for ``run.json``), from a probe."""
    controllers = probe_controllers()
    with tempfile.TemporaryDirectory(prefix="autograder-probe-") as folder:
        tmpfs = mount_tmpfs(Path(folder), 1)
        if tmpfs:
            subprocess.run(["umount", "--lazy", folder], capture_output=True)
    sized = "sized tmpfs" if kind == "bwrap" else "NOT bounded (no sandbox: the machine's own)"
    return {
        "memory": (
            f"{controllers['memory']}: all processes and in-memory files together"
            if "memory" in controllers
            else "NOT as a whole (no memory cgroup here): address space per process; /tmp and /dev/shm: " + sized
        ),
        "processes": (
            controllers["pids"]
            if "pids" in controllers
            else "RLIMIT_NPROC (not applied to root)"
            if os.geteuid() == 0
            else "RLIMIT_NPROC"
        ),
        "scratch": "sized tmpfs" if tmpfs else "NOT as a whole (the grader may not mount): each file up to file_mib",
        "tmp": sized,
        "output": "read with a byte cap",
        "notebook": "size and cells checked before it runs",
    }


def enforced_limits(kind: str) -> list[str]:
    """What a run of ``kind`` here isolates and limits, for the record of a grading run."""
    limits = ["memory", "cpu time", "file size", "wall time"]
    if os.geteuid() != 0 or "pids" in probe_controllers():
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
