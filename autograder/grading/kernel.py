"""A Jupyter kernel inside bubblewrap, for `nbgrader autograde` and `nbgrader validate`.

nbgrader runs a submission's cells, hidden tests included, in a kernel it starts itself. The kit's nbgrader
configuration (`nbgrader_config.py`) makes that kernel this one: `python -m autograder.grading.kernel
CONNECTION_FILE` starts `ipykernel` in a sandbox built the way the grading CLI builds its own (`sandbox.py`).
The kernel sees, read-only, the system's `/usr`, the Python installation and venv, the kit's `autograder/`
package, the fixtures and a copy of its connection file; read-write, the notebook's folder, the sockets'
folder and a scratch HOME; and nothing else: not the instructor's home (no Hub token file), not
`solutions/`, not other students. It runs as `nobody` in new PID, user, network, IPC, UTS and cgroup
namespaces, so `/proc` shows only its own processes (no parent's environment to read), and the only
variables it gets are the `HW2_*` settings, `NBGRADER_EXECUTION` and the offline switches. It talks to
nbgrader over ZeroMQ `ipc` sockets (files in a folder of their own), so it needs no network at all.

What this does NOT do: the hidden tests still run in the student's kernel, so a submission can replace
`grade_cell` and forge its nbgrader scores. Only `python -m autograder grade --gradebook` gives trustworthy
scores (README, "How grading stays honest").
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from autograder.grading.sandbox import (
    KERNEL_SCRATCH_PREFIX, SCRATCH, PidsCgroup, SandboxSettings, bwrap_base, bwrap_path, confinement, die_with_parent,
    sandbox_environment, write_identity_files,
)
from autograder.layout import REPO_ROOT

KERNEL_NAME = "hw2-sandboxed"
MEMORY_GB = 12.0  # the kernel runs the notebook and, under nbgrader, the hidden checks and their references
MAX_PROCESSES = 256
CONNECTION_FILE = "/grader/connection.json"
PASSED_THROUGH = ("NBGRADER_EXECUTION",  # the notebook switches to the grading profile under autograde
                  "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY")
SECRET_NAME_PARTS = ("TOKEN", "SECRET", "PASSWORD", "API_KEY")


def is_secret(name: str) -> bool:
    """Whether an environment variable's name says it holds a credential (HF_TOKEN, WANDB_API_KEY, ...)."""
    name = name.upper()
    return any(part in name for part in SECRET_NAME_PARTS) or name.endswith("_KEY")


def install_kernelspec(jupyter_dir: Path) -> Path:
    """Write this kernel's spec under `jupyter_dir/kernels/`; put `jupyter_dir` on JUPYTER_PATH to use it."""
    folder = jupyter_dir / "kernels" / KERNEL_NAME
    folder.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "autograder.grading.kernel", "{connection_file}"],
        "display_name": "Python 3 (hw2 grading sandbox)",
        "language": "python",
        "interrupt_mode": "message",  # a signal would stop the sandbox's wrapper, not the kernel
        "env": {"PYTHONPATH": str(REPO_ROOT)},
    }
    (folder / "kernel.json").write_text(json.dumps(spec, indent=1))
    return folder


def kernel_environment(inherited: dict[str, str]) -> dict[str, str]:
    """The kernel's whole environment: the `HW2_*` settings and offline switches it inherited, nothing else."""
    chosen = {key: value for key, value in inherited.items()
              if (key.startswith("HW2_") or key in PASSED_THROUGH) and not is_secret(key)}
    env = sandbox_environment(SandboxSettings(environment=chosen))
    env.update({"PYTHONPATH": str(REPO_ROOT), "HF_TOKEN_PATH": f"{SCRATCH}/hf/token"})
    return env


def kernel_command(connection: dict, scratch: Path, workdir: Path, fixtures: Path | None) -> list[str]:
    """The bwrap command line that runs ipykernel on `connection` (a connection file's content) in `workdir`."""
    sockets = Path(connection["ip"]).parent  # ZeroMQ ipc sockets are files named <ip>-<port>
    (scratch / "connection.json").write_text(json.dumps(connection))
    command = [*bwrap_base(scratch),
               "--ro-bind", str(scratch / "connection.json"), CONNECTION_FILE,
               "--ro-bind", str(REPO_ROOT / "autograder"), str(REPO_ROOT / "autograder")]
    if fixtures is not None and fixtures.is_dir():
        command += ["--ro-bind", str(fixtures), str(fixtures)]
    command += ["--bind", str(sockets), str(sockets), "--bind", str(workdir), str(workdir),
                "--bind", str(scratch / "home"), SCRATCH, "--proc", "/proc", "--dev", "/dev",
                "--chdir", str(workdir), "--clearenv"]
    for key, value in kernel_environment(dict(os.environ)).items():
        command += ["--setenv", key, value]
    return command + [sys.executable, "-s", "-m", "ipykernel_launcher", "-f", CONNECTION_FILE]


def read_connection(path: Path) -> dict:
    """The connection file's content; only ipc transport with an absolute socket path works without network."""
    connection = json.loads(path.read_text())
    if connection.get("transport") != "ipc" or not Path(connection.get("ip", "")).is_absolute():
        raise SystemExit("the hw2 grading kernel talks over ZeroMQ ipc sockets: set c.KernelManager.transport = "
                         "'ipc' and an absolute c.KernelManager.ip (the kit's nbgrader_config.py does both)")
    return connection


def remove_stale_sockets(connection: dict) -> None:
    """Unlink whatever sits where this kernel's sockets go (a file or link left by an earlier kernel)."""
    for name, port in connection.items():
        if name.endswith("_port"):
            Path(f"{connection['ip']}-{port}").unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m autograder.grading.kernel CONNECTION_FILE", file=sys.stderr)
        return 2
    if bwrap_path() is None:
        print("the hw2 grading kernel needs bubblewrap: apt-get install -y bubblewrap", file=sys.stderr)
        return 2
    parent = os.getppid()
    die_with_parent(signal.SIGTERM)  # nbgrader gone: stop the kernel (the handler below) and clean up
    if os.getppid() != parent:
        return 1
    connection = read_connection(Path(argv[0]))
    workdir = Path.cwd().resolve()
    if workdir == REPO_ROOT or workdir in {*REPO_ROOT.parents, Path.home().resolve(), Path("/")}:
        print(f"the hw2 grading kernel shares its folder with the submission, and {workdir} is too wide: run "
              "nbgrader from its course folder (nbgrader starts kernels in each notebook's folder)", file=sys.stderr)
        return 2
    fixtures = Path(os.environ["HW2_FIXTURES_DIR"]).resolve() if os.environ.get("HW2_FIXTURES_DIR") else None
    scratch = Path(tempfile.mkdtemp(prefix=f"{KERNEL_SCRATCH_PREFIX}{os.getpid()}-"))
    cgroup = PidsCgroup(MAX_PROCESSES)
    try:
        remove_stale_sockets(connection)
        write_identity_files(scratch)
        process = subprocess.Popen(kernel_command(connection, scratch, workdir, fixtures),
                                   env={}, stdin=subprocess.DEVNULL, preexec_fn=confinement(MEMORY_GB, cgroup))
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # the kernel manager stops us: stop the kernel
            signal.signal(sig, lambda *_: process.kill())
        return process.wait()
    finally:
        cgroup.kill_all()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
