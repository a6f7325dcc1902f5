"""``grade --device cuda``: which device nodes and driver libraries go into the sandbox, checked on a
CPU with a fake /dev and a fake ``ldconfig -p`` listing; and the one line when there is no GPU."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from autograder import gpu, sandbox
from grading import ENV, autograder, needs_sandbox  # tests/grading.py

LISTING = """\
1234 libs found in cache `/etc/ld.so.cache'
\tlibnvidia-ml.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1
\tlibcudart.so.12 (libc6,x86-64) => /opt/cuda/lib64/libcudart.so.12
\tlibcuda.so.1 (libc6,x86-64) => {driver}/libcuda.so.1
\tlibcuda.so (libc6,x86-64) => {driver}/libcuda.so
\tlibnvidia-ptxjitcompiler.so.1 (libc6,x86-64) => {driver}/libnvidia-ptxjitcompiler.so.1
\tlibcudnn.so.9 (libc6,x86-64) => /opt/cudnn/libcudnn.so.9
\tlibc.so.6 (libc6,x86-64, OS ABI: Linux 3.2.0) => /lib/x86_64-linux-gnu/libc.so.6
\tlibnvidia-ml.so.1 (libc6) => /usr/lib/i386-linux-gnu/libnvidia-ml.so.1
"""


def fake_dev(folder: Path, names: list[str]) -> Path:
    """A /dev with character devices ``names`` and, beside them, NVIDIA-named things that are not."""
    folder.mkdir()
    for minor, name in enumerate(names):
        try:
            os.mknod(folder / name, stat.S_IFCHR | 0o666, os.makedev(195, minor))
        except PermissionError:
            pytest.skip("making a device node needs root (CI runs as root)")
    (folder / "nvidia-caps").mkdir()  # a folder
    (folder / "nvidia9").symlink_to("/etc/passwd")  # a link: never followed
    (folder / "nvidia-uvm-tools").write_text("")  # a plain file
    os.mknod(folder / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))  # not NVIDIA's
    return folder


def driver_folder(folder: Path) -> Path:
    driver = folder / "driver"
    driver.mkdir()
    (driver / "libcuda.so.560.35").write_text("")
    (driver / "libcuda.so.1").symlink_to("libcuda.so.560.35")
    (driver / "libcuda.so").symlink_to("libcuda.so.1")
    (driver / "libnvidia-ptxjitcompiler.so.1").write_text("")
    return driver


def test_bind_list_holds_the_nvidia_devices_and_driver_libraries_only(tmp_path: Path) -> None:
    dev = fake_dev(tmp_path / "dev", ["nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "nvidia-modeset"])
    driver = driver_folder(tmp_path)
    args = gpu.bind_args(dev, LISTING.format(driver=driver))
    triples = [tuple(args[i:i + 3]) for i in range(0, len(args), 3)]
    assert triples == [
        ("--dev-bind", str(dev / "nvidia-modeset"), "/dev/nvidia-modeset"),
        ("--dev-bind", str(dev / "nvidia-uvm"), "/dev/nvidia-uvm"),
        ("--dev-bind", str(dev / "nvidia0"), "/dev/nvidia0"),
        ("--dev-bind", str(dev / "nvidia1"), "/dev/nvidia1"),
        ("--dev-bind", str(dev / "nvidiactl"), "/dev/nvidiactl"),
        # libcuda.so and libcuda.so.1: the file they lead to, and each link; /usr's libnvidia-ml is
        # already in the sandbox; libcudart and libcudnn are not the driver's.
        ("--ro-bind", str(driver / "libcuda.so.560.35"), str(driver / "libcuda.so.560.35")),
        ("--symlink", str(driver / "libcuda.so.560.35"), str(driver / "libcuda.so")),
        ("--symlink", str(driver / "libcuda.so.560.35"), str(driver / "libcuda.so.1")),
        ("--ro-bind", str(driver / "libnvidia-ptxjitcompiler.so.1"), str(driver / "libnvidia-ptxjitcompiler.so.1")),
    ]
    command = sandbox.bwrap_command(["python"], tmp_path, [], tmp_path, {}, devices=args)
    at = command.index("--dev")
    assert command[at:at + 2 + len(args)] == ["--dev", "/dev", *args]  # after the fresh /dev, not under it
    assert "nvidia" not in " ".join(sandbox.bwrap_command(["python"], tmp_path, [], tmp_path, {}))


@pytest.mark.parametrize("names, listing, message", [
    ([], "", "no NVIDIA GPU here"),
    (["nvidiactl"], "", "no NVIDIA GPU here"),  # the control device without a GPU
    (["nvidia0", "nvidiactl"], "\tlibnvidia-ml.so.1 (libc6,x86-64) => /usr/lib/libnvidia-ml.so.1\n",
     "ldconfig -p lists no libcuda.so"),
])
def test_no_gpu_or_no_driver_is_one_line(tmp_path: Path, names: list[str], listing: str, message: str) -> None:
    dev = fake_dev(tmp_path / "dev", names)
    with pytest.raises(gpu.GpuError, match=message) as raised:
        gpu.bind_args(dev, listing)
    assert "\n" not in str(raised.value) and "--device cpu" in str(raised.value)


@pytest.mark.skipif(Path("/dev/nvidiactl").exists(), reason="this machine has a GPU")
def test_grade_device_cuda_without_a_gpu_says_so_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "submissions").mkdir()
    proc = subprocess.run(autograder("grade", tmp_path / "submissions", "--assignment", "logit_difference", "--out",
                                     tmp_path / "out", "--device", "cuda"), env=ENV, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --device cuda: no NVIDIA GPU here")
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_the_kernel_sees_no_gpu_unless_asked(tmp_path: Path) -> None:
    from autograder.grade import Grader

    limits = sandbox.Limits()
    cpu = Grader("logit_difference", tmp_path / "a", "ioi-mini", "none", 60, 60, limits).kernel_env()
    assert cpu["CUDA_VISIBLE_DEVICES"] == "" and cpu["AUTOGRADER_DEVICE"] == "cpu"
    cuda = Grader("logit_difference", tmp_path / "b", "ioi-mini", "none", 60, 60, limits, "cuda").kernel_env()
    assert "CUDA_VISIBLE_DEVICES" not in cuda and cuda["AUTOGRADER_DEVICE"] == "cuda"


@needs_sandbox
def test_bubblewrap_takes_the_bind_list(tmp_path: Path) -> None:
    """The arguments run in a real sandbox: the device nodes and libraries are there, nothing else of /dev."""
    dev = fake_dev(tmp_path / "dev", ["nvidia0", "nvidiactl", "nvidia-uvm"])
    driver = driver_folder(tmp_path)
    args = gpu.bind_args(dev, LISTING.format(driver=driver))
    (tmp_path / "scratch").mkdir()
    command = sandbox.bwrap_command(["/bin/sh", "-c", f"ls /dev; ls {driver}; readlink {driver}/libcuda.so.1"],
                                    tmp_path / "scratch", [], tmp_path, {"PATH": "/usr/bin:/bin"}, devices=args)
    proc = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    seen = proc.stdout.split()
    assert {"nvidia0", "nvidiactl", "nvidia-uvm"} <= set(seen) and "nvidia9" not in seen and "nvidia-caps" not in seen
    assert {"libcuda.so", "libcuda.so.1", "libcuda.so.560.35", "libnvidia-ptxjitcompiler.so.1"} <= set(seen)
    assert seen[-1] == str(driver / "libcuda.so.560.35")
