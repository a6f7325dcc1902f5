"""``grade --device cuda``: an NVIDIA GPU inside the sandbox, and nothing else of the machine.

The sandbox (:mod:`autograder.sandbox`) gets, besides what it always has, the NVIDIA device nodes
(``/dev/nvidiactl``, ``/dev/nvidia0`` ..., ``/dev/nvidia-uvm``, ``/dev/nvidia-uvm-tools``,
``/dev/nvidia-modeset``: character devices only, links never followed) and the driver's user-space
libraries (``libcuda``, ``libnvidia-*``, as ``ldconfig -p`` lists them) where the system folders
already bound do not hold them. The learner's kernel is told ``AUTOGRADER_DEVICE=cuda``: the grading
models of the hidden tests load there, and ``patchlab.load_model`` picks the GPU by itself. Without
``--device cuda`` the kernel sees no GPU (``CUDA_VISIBLE_DEVICES`` empty), even with ``--sandbox none``.
"""

from __future__ import annotations

import re
import stat
import subprocess
from pathlib import Path

DEVICES = ("cpu", "cuda")
DEVICE_NODE = re.compile(r"nvidia(\d+|ctl|-uvm|-uvm-tools|-modeset)")
DRIVER_LIBRARY = re.compile(r"lib(cuda|nvidia-[\w.-]+)\.so[\w.]*")
SYSTEM_FOLDERS = (Path("/usr"), Path("/lib"), Path("/lib32"), Path("/lib64"), Path("/libx32"))  # always bound


class GpuError(RuntimeError):
    """No usable GPU for ``--device cuda``; the message says what to do."""


def device_nodes(dev: Path = Path("/dev")) -> list[Path]:
    """The NVIDIA character devices in ``dev``, sorted; links and other files are left out."""
    found = []
    for entry in sorted(dev.iterdir()) if dev.is_dir() else []:
        if DEVICE_NODE.fullmatch(entry.name) and not entry.is_symlink() and stat.S_ISCHR(entry.lstat().st_mode):
            found.append(entry)
    return found


def ldconfig_listing() -> str:
    """``ldconfig -p``'s output ('' where it cannot run)."""
    for ldconfig in ("/sbin/ldconfig", "/usr/sbin/ldconfig", "ldconfig"):
        try:
            return subprocess.run([ldconfig, "-p"], capture_output=True, text=True, timeout=30).stdout
        except OSError:
            continue
    return ""


def driver_libraries(listing: str) -> list[Path]:
    """The driver's libraries in an ``ldconfig -p`` listing (``name (flags) => path`` lines), sorted."""
    found = set()
    for line in listing.splitlines():
        name, arrow, path = line.strip().partition(" => ")
        if arrow and DRIVER_LIBRARY.fullmatch(name.split(" ", 1)[0]) and path.startswith("/"):
            found.add(Path(path))
    return sorted(found)


def bind_args(dev: Path = Path("/dev"), listing: str | None = None) -> list[str]:
    """bubblewrap's arguments that give a sandbox the GPU: each device node bound as a device, each
    driver library outside the system folders bound read-only (its link's target, and the link).
    Raises :class:`GpuError` when there is no GPU or no driver to give."""
    nodes = device_nodes(dev)
    if not any(n.name == "nvidiactl" for n in nodes) or not any(n.name[len("nvidia") :].isdigit() for n in nodes):
        raise GpuError(
            f"--device cuda: no NVIDIA GPU here (no {dev}/nvidiactl and {dev}/nvidia0 character "
            "devices): grade with --device cpu, or on a machine with the NVIDIA driver"
        )
    libraries = driver_libraries(ldconfig_listing() if listing is None else listing)
    if not any(p.name.startswith("libcuda.") for p in libraries):
        raise GpuError(
            "--device cuda: ldconfig -p lists no libcuda.so: install the NVIDIA driver's libraries "
            "(or run ldconfig), or grade with --device cpu"
        )
    args, bound = [], set()
    for node in nodes:
        args += ["--dev-bind", str(node), f"/dev/{node.name}"]
    for library in libraries:
        if any(folder in library.parents for folder in SYSTEM_FOLDERS):
            continue  # already in the sandbox, read-only
        target = library.resolve()
        if target not in bound:
            args += ["--ro-bind", str(target), str(target)]
            bound.add(target)
        if target != library:
            args += ["--symlink", str(target), str(library)]
    return args


def check_torch() -> None:
    """The grader's own torch sees the GPU (the references are computed here), or :class:`GpuError`."""
    import torch

    if not torch.cuda.is_available():
        raise GpuError(
            f"--device cuda: this Python's torch {torch.__version__} sees no GPU: install a CUDA build "
            "of torch, or grade with --device cpu"
        )
