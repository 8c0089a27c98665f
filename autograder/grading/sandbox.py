"""One bubblewrap sandbox per submission, and the `Runner` that talks to the exercise inside it.

The sandboxed process (`python -m hw2_exercise.runtime`) sees, read-only: the system's `/usr`, the Python
installation and virtual environment that run the grader, the offline fixtures, the judge's shared input
folder and the exercise package (mounted alone at /grader/hw2_exercise); read-write: its own scratch folder
(HOME) and a private /tmp. Nothing else of the machine exists for it: not the kit's `autograder/`, not
`solutions/`, not other students' files, not the grader's environment or home folder. It runs as `nobody`
in new user, PID, network, IPC, UTS and cgroup namespaces (no network at all, a private loopback only), with
an address-space limit, a process-count limit (a pids cgroup, where the machine has one) and a time limit
per request. When the submission is done, or the grader dies, every process of the sandbox is killed: the
PID namespace ends with its first process.

A sandbox is launched before it is needed (`SandboxRunner.launch`): its process imports the libraries and
loads the grading model before it reads any request, so a judge launches the sandbox of its next submission
while it judges the current one. A launched sandbox is still fresh and private: it has run no cells and no
request yet, and the submission it serves is the only one it ever sees.
"""
import contextlib
import ctypes
import fcntl
import math
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from autograder.grading.exercise import wire
from autograder.grading.exercise.runtime import CellTimeout, time_limit
from autograder.grading.remote import ExerciseFailure, Runner

EXERCISE_PACKAGE = Path(__file__).resolve().parent / "exercise"
MOUNTED_PACKAGE = "/grader/hw2_exercise"
SCRATCH = "/scratch"
NOBODY = 65534
INSTALL_HINT = ("bubblewrap (`bwrap`) is not installed: install it with `apt-get install -y bubblewrap` (Debian/"
                "Ubuntu) or `dnf install bubblewrap`, or pass --unsafe-no-sandbox to grade WITHOUT isolation")
SCRATCH_PREFIX = "hw2-sandbox-"
INPUTS_PREFIX = "hw2-judge-inputs-"
KERNEL_SCRATCH_PREFIX = "hw2-kernel-"  # the nbgrader kernel's sandbox (kernel.py)
CELL_TIMEOUT = 300  # seconds for one top-level cell at start (the instructor's imports on a busy machine)
PIPE_BYTES = 1 << 20  # the pipes' buffer (the default 64 KiB takes 16 times as many switches per model sent)
CGROUP_ROOT = Path("/sys/fs/cgroup/pids")
UNSAFE_WARNING = ("WARNING: graded with --unsafe-no-sandbox: the submission's code ran without isolation, so this "
                  "grade can be forged; do not trust it")


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


@dataclass
class SandboxSettings:
    """What the sandbox mounts and how much it may use."""

    read_only: list[Path] = field(default_factory=list)  # folders visible at the same path (fixtures, inputs)
    environment: dict[str, str] = field(default_factory=dict)  # variables for the notebook (HW2_*)
    memory_gb: float = 8.0
    max_processes: int = 256
    request_timeout: float = 120.0  # seconds for one request (a check's call, or the cells at start)
    unsafe_no_sandbox: bool = False
    preload: dict = field(default_factory=dict)  # what it loads before any request (`resources.preload`'s arguments)


def system_mounts() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), f"/{name}"]
        elif path.is_dir():
            args += ["--ro-bind", str(path), f"/{name}"]
    for name in ("/etc/ld.so.cache", "/etc/localtime", "/etc/ssl", "/etc/fonts"):
        if Path(name).exists():
            args += ["--ro-bind", name, name]
    return args


def python_mounts() -> list[str]:
    """The Python installation, the virtual environment and any site-packages folder outside them."""
    paths = {Path(sys.base_prefix).resolve(), Path(sys.prefix)}
    paths |= {Path(p) for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()}
    executable = Path(sys.executable)
    paths.add(executable.parent)
    args = []
    for path in sorted(paths, key=lambda p: len(str(p))):
        if str(path).startswith("/usr/") or any(str(path).startswith(str(p) + "/") for p in paths if p != path):
            continue
        args += ["--ro-bind", str(path), str(path)]
    return args


def sandbox_environment(settings: SandboxSettings) -> dict[str, str]:
    """The sandbox's whole environment: nothing inherited but the locale and BLAS settings."""
    env = {key: os.environ[key] for key in ("LANG", "LC_ALL", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
           if key in os.environ}
    env.update(settings.environment)
    env.update({
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": SCRATCH, "TMPDIR": "/tmp", "USER": "nobody",
        "LOGNAME": "nobody", "HF_HOME": f"{SCRATCH}/hf", "MPLCONFIGDIR": f"{SCRATCH}/mpl", "PYTHONPATH": "/grader",
        "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled", "WANDB_DISABLED": "true", "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HW2_OUTPUT_DIR": f"{SCRATCH}/outputs",
    })
    return env


def bwrap_base(scratch: Path) -> list[str]:
    """The start of every sandbox's command line: namespaces, `nobody`, a private /tmp, the system and Python
    read-only, and the passwd/group files of `write_identity_files(scratch)`."""
    return [bwrap_path() or "bwrap", "--unshare-all", "--die-with-parent", "--new-session",
            "--uid", str(NOBODY), "--gid", str(NOBODY), "--hostname", "sandbox",
            "--tmpfs", "/tmp", *system_mounts(), *python_mounts(),
            "--ro-bind", str(scratch / "etc" / "passwd"), "/etc/passwd",
            "--ro-bind", str(scratch / "etc" / "group"), "/etc/group"]


def bwrap_command(settings: SandboxSettings, scratch: Path, read_fd: int, write_fd: int) -> list[str]:
    command = bwrap_base(scratch)
    for path in settings.read_only:
        command += ["--ro-bind", str(path), str(path)]
    command += ["--ro-bind", str(EXERCISE_PACKAGE), MOUNTED_PACKAGE,
                "--bind", str(scratch / "home"), SCRATCH, "--proc", "/proc", "--dev", "/dev",
                "--chdir", SCRATCH, "--clearenv"]
    for key, value in sandbox_environment(settings).items():
        command += ["--setenv", key, value]
    return command + [sys.executable, "-I", "-c",
                      "import sys; sys.path.insert(0, '/grader'); "
                      f"from hw2_exercise.runtime import main; import os; os._exit(main({read_fd}, {write_fd}))"]


def write_identity_files(scratch: Path) -> None:
    """`scratch/home` (the sandbox's HOME) and the passwd/group files that name its one user, `nobody`."""
    (scratch / "home").mkdir()
    (scratch / "etc").mkdir()
    (scratch / "etc" / "passwd").write_text(f"root:x:0:0::/:/bin/false\nnobody:x:{NOBODY}:{NOBODY}::{SCRATCH}:/bin/false\n")
    (scratch / "etc" / "group").write_text(f"nogroup:x:{NOBODY}:\n")


class PidsCgroup:
    """A pids cgroup (v1) that caps the number of processes and lets us kill every one of them at the end."""

    def __init__(self, limit: int):
        self.path = None
        if not (CGROUP_ROOT / "cgroup.procs").exists() or not os.access(CGROUP_ROOT, os.W_OK):
            return
        try:
            path = CGROUP_ROOT / f"hw2-grade-{os.getpid()}-{time.monotonic_ns()}"
            path.mkdir()
            (path / "pids.max").write_text(str(limit))
            self.path = path
        except OSError:
            self.path = None

    def join_from_child(self) -> None:
        """In the child, before exec: move this process (and so everything it starts) into the cgroup."""
        if self.path is not None:
            with open(self.path / "cgroup.procs", "w") as handle:
                handle.write("0")

    def kill_all(self) -> None:
        if self.path is None:
            return
        for _ in range(20):
            try:
                pids = [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
            except OSError:
                break
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.05)
        try:
            self.path.rmdir()
        except OSError:
            pass


def clean_leftovers() -> None:
    """Scratch folders and cgroups of grader processes that died (a crashed run leaves nothing behind)."""
    root = Path(tempfile.gettempdir())
    for prefix in (SCRATCH_PREFIX, INPUTS_PREFIX, KERNEL_SCRATCH_PREFIX):
        for path in root.glob(f"{prefix}*"):
            pid = path.name[len(prefix):].split("-")[0]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(path, ignore_errors=True)
    if CGROUP_ROOT.is_dir():
        for path in CGROUP_ROOT.glob("hw2-grade-*"):
            pid = path.name.split("-")[2]
            if pid.isdigit() and not _alive(int(pid)):
                group = PidsCgroup.__new__(PidsCgroup)
                group.path = path
                group.kill_all()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send `sig` to this process when its parent dies (PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, sig)


@contextlib.contextmanager
def judge_time_limit(seconds: float):
    """Stop a stand-in the judge computes for the sandbox once the request's time is up (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with time_limit(max(seconds, 0.01)):
        yield


@dataclass
class Traffic:
    """What went through a runner's pipes: bytes each way, and the seconds the judge waited on them (for the
    sandbox to compute, or to make room or send data)."""

    sent: int = 0
    received: int = 0
    waited_s: float = 0.0


class FdChannel:
    """Blocking-looking reads and writes on pipe ends, with a deadline."""

    def __init__(self, read_fd: int, write_fd: int, traffic: Traffic | None = None):
        self.read_fd, self.write_fd = read_fd, write_fd
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        self.deadline = float("inf")
        self.traffic = traffic or Traffic()

    def _wait(self, fd: int, writing: bool) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        started = time.perf_counter()
        ready = select.select([], [fd], [], left) if writing else select.select([fd], [], [], left)
        self.traffic.waited_s += time.perf_counter() - started
        if not any(ready):
            raise TimeoutError

    def read(self, size: int) -> bytes:
        while True:
            try:
                data = os.read(self.read_fd, min(size, 1 << 20))
                self.traffic.received += len(data)
                return data
            except BlockingIOError:
                self._wait(self.read_fd, writing=False)

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self.write_fd, view[: 1 << 20])
                self.traffic.sent += written
                view = view[written:]
            except BlockingIOError:
                self._wait(self.write_fd, writing=True)
            except BrokenPipeError:
                raise EOFError("the sandbox closed its end") from None
        return len(data)

    def flush(self) -> None:
        pass


def widened_pipe() -> tuple[int, int]:
    """A pipe with a PIPE_BYTES buffer where the system allows it (else the default one)."""
    read_fd, write_fd = os.pipe()
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    return read_fd, write_fd


def seconds(value) -> float | None:
    """A duration the sandbox reported, as a number of seconds for the timings (None if it is none)."""
    return round(float(value), 2) if isinstance(value, (int, float)) and math.isfinite(value) else None


class SandboxRunner(Runner):
    """Requests to an exerciser in a fresh sandbox; restarts it (cells included) after a crash or a timeout.

    `launch()` starts the sandbox's process, which imports the libraries and loads the grading model without
    waiting for anything; `start(cells)` then runs the submission's cells in it (launching it first unless
    `launch` did). A judge launches the next submission's runner while it judges the current one.
    """

    MAX_STARTS = 20  # a crash or a timeout costs one check, which starts the next one afresh

    def __init__(self, settings: SandboxSettings):
        super().__init__()
        self.settings, self.cells = settings, []  # the cells: given to `start`, run again by a restart
        self.process = None
        self.channel = None
        self.cgroup = None
        self.scratch = None
        self.starts = 0
        self.launched_at = 0.0  # time.time() of the last launch
        self.traffic = Traffic()
        self.timings: dict = {}  # how the last start went (see `start`)

    # ------------------------------------------------------------ lifetime

    def launch(self) -> None:
        """Start a fresh sandbox process and ask it to load the grading model; returns without waiting for it."""
        self.close()
        if self.starts >= self.MAX_STARTS:
            raise ExerciseFailure(f"your code stopped the grading process {self.starts} times; "
                                  "the remaining checks were not run", "crash")
        self.starts += 1
        self.scratch = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-"))
        write_identity_files(self.scratch)
        request_read, request_write = widened_pipe()
        reply_read, reply_write = widened_pipe()
        self.cgroup = PidsCgroup(self.settings.max_processes)
        memory = int(self.settings.memory_gb * 2**30)
        cgroup = self.cgroup

        def prepare_child():
            import resource

            die_with_parent()
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            cgroup.join_from_child()

        if self.settings.unsafe_no_sandbox:
            env = {**sandbox_environment(self.settings), "HOME": str(self.scratch / "home"),
                   "TMPDIR": str(self.scratch / "home"), "HF_HOME": str(self.scratch / "home" / "hf"),
                   "MPLCONFIGDIR": str(self.scratch / "home" / "mpl"),
                   "HW2_OUTPUT_DIR": str(self.scratch / "home" / "outputs"),
                   "PYTHONPATH": str(self.scratch / "pkg")}
            (self.scratch / "pkg").mkdir()
            shutil.copytree(EXERCISE_PACKAGE, self.scratch / "pkg" / "hw2_exercise")
            command = [sys.executable, "-c", f"from hw2_exercise.runtime import main; import os; "
                                             f"os._exit(main({request_read}, {reply_write}))"]
            cwd = self.scratch / "home"
        else:
            env, command, cwd = {}, bwrap_command(self.settings, self.scratch, request_read, reply_write), "/"
        self.launched_at = time.time()
        self.process = subprocess.Popen(command, cwd=cwd, env=env,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, pass_fds=(request_read, reply_write),
                                        preexec_fn=prepare_child, start_new_session=True)
        os.close(request_read)
        os.close(reply_write)
        self.channel = FdChannel(reply_read, request_write, self.traffic)
        self.channel.deadline = time.monotonic() + self.settings.request_timeout
        try:  # a few bytes: they wait in the pipe until the process has imported the libraries
            wire.write_frame(self.channel, {"op": "preload", **self.settings.preload})
        except (TimeoutError, EOFError, OSError):
            pass  # the process died at once: `start` launches another one, or reports it

    def launched(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, cells: list[dict] | None = None) -> list[str]:
        """Run the cells in the sandbox (launched now unless it was before); returns the notes on failed cells.

        `timings` then says how the start went: whether the sandbox was launched before (`prestarted`), the
        seconds from the launch until its Python ran (`python_start_s`), that it spent importing the libraries
        and loading the grading model, the CPU seconds it had used by then (`start_cpu_s`), the seconds this
        call waited for all that (`waited_s`), and the cells' seconds.
        """
        if cells is not None:
            self.cells = list(cells)
        prestarted = self.launched()
        if not prestarted:
            self.launch()
        cell_timeout = max(self.settings.request_timeout, CELL_TIMEOUT)
        waiting = time.perf_counter()
        ready, _ = self.exchange_once(None, [], timeout=2 * cell_timeout)  # the answer to `preload`
        waited = time.perf_counter() - waiting
        reply, _ = self.exchange_once({"op": "init", "cells": self.cells, "cell_timeout": cell_timeout},
                                      [], timeout=2 * cell_timeout)
        reported = ready.get("timings") if isinstance(ready.get("timings"), dict) else {}
        started_at = reported.get("started_at")
        self.timings = {
            "prestarted": prestarted,
            "python_start_s": seconds(started_at - self.launched_at) if seconds(started_at) else None,
            "imports_s": seconds(reported.get("imports_s")), "model_load_s": seconds(reported.get("preload_s")),
            "start_cpu_s": seconds(reported.get("cpu_s")), "waited_s": round(waited, 2),
            "cells_s": seconds(reply.get("cells_s")),
        }
        return [str(note)[:500] for note in reply.get("notes", [])][:20] if isinstance(reply.get("notes"), list) else []

    def close(self) -> None:
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            self.process = None
        if self.cgroup is not None:
            self.cgroup.kill_all()
            self.cgroup = None
        if self.channel is not None:
            for fd in (self.channel.read_fd, self.channel.write_fd):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self.channel = None
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------ requests

    def exchange(self, document: dict, tensors: list) -> tuple[dict, list]:
        if self.process is None or self.process.poll() is not None:
            self.start()
        return self.exchange_once(document, tensors, timeout=self.settings.request_timeout)

    def exchange_once(self, document: dict | None, tensors: list, timeout: float) -> tuple[dict, list]:
        """Send `document` (None: nothing, the request went before) and return the reply, serving oracles."""
        channel = self.channel
        channel.deadline = time.monotonic() + timeout
        try:
            if document is not None:
                wire.write_frame(channel, document, wire.blob_parts(list(tensors)))
            while True:
                reply, blob = wire.read_frame(channel)
                if reply.get("op") in ("oracle", "oracle_backward"):
                    with judge_time_limit(channel.deadline - time.monotonic()):
                        answer, out = self.serve_oracle(reply, wire.unpack_tensors(blob))
                    wire.write_frame(channel, answer, wire.blob_parts(out))
                    continue
                return reply, wire.unpack_tensors(blob)
        except (TimeoutError, CellTimeout):
            self.close()
            raise ExerciseFailure(f"your code ran for more than {timeout:g} s here; look for an endless loop or a "
                                  "far too large computation", "timeout") from None
        except (EOFError, OSError, wire.WireError) as error:
            code = self.process.poll() if self.process is not None else None
            self.close()
            reason = {-signal.SIGKILL: " (killed: probably out of memory)"}.get(code, "")
            raise ExerciseFailure(f"the process running your code stopped{reason} during this check "
                                  f"({type(error).__name__}); did your code call exit() or crash Python?",
                                  "crash") from None
