"""The grading sandbox: one bubblewrap zygote per judge process, one private child of it per submission.

The zygote (`python -m hw2_exercise.zygote` in effect) sees, read-only: the system's `/usr`, the Python
installation and virtual environment that run the grader, the offline fixtures, the judge's shared input
folder and the exercise package (mounted alone at /grader/hw2_exercise); read-write: a scratch folder and a
private /tmp. Nothing else of the machine exists for it: not the kit's `autograder/`, not `solutions/`, not
other students' files, not the grader's environment or home folder. It runs as `nobody` in new user, PID,
network, IPC, UTS and cgroup namespaces (no network at all, a private loopback only), with an address-space
limit and a process-count limit (a pids cgroup, where the machine has one). When the judge process dies,
every process of the sandbox is killed: the PID namespace ends with its first process.

The zygote imports the libraries and loads the grading model once, before any submission. For each
submission it forks a child that enters namespaces of its own below the zygote's (see
`autograder/grading/exercise/zygote.py`): no capability, its own PID namespace, network, IPC objects and
empty tmpfs mounts on /scratch (HOME), /tmp and /dev/shm, the only places it can write. That child serves
one submission only, with a time limit per request, and the zygote kills it, with every process it started,
before it forks the next one. So a submission starts in a fraction of a second instead of the ten seconds of
importing torch, transformers and TRL, and still finds nothing any other submission did.
"""
import atexit
import contextlib
import fcntl
import json
import math
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from autograder.grading.exercise import resources, wire
from autograder.grading.exercise.namespaces import PR_SET_PDEATHSIG, prctl
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
NAMESPACE_HINT = (" (the sandbox forks each submission into new user, PID, mount and network namespaces: "
                  "check that /proc/sys/user/max_user_namespaces is above 0 and that unprivileged user "
                  "namespaces are allowed, or grade with --unsafe-no-sandbox, WITHOUT isolation)")
UNSAFE_WARNING = ("WARNING: graded with --unsafe-no-sandbox: the submission's code ran without isolation, so this "
                  "grade can be forged; do not trust it")


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot run submissions on this machine (not the submission's fault)."""


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


def zygote_command(settings: SandboxSettings, scratch: Path, entry: str) -> list[str]:
    """The bwrap command line that runs the zygote's Python `entry` (see `Zygote.launch`)."""
    command = bwrap_base(scratch)
    for path in settings.read_only:
        command += ["--ro-bind", str(path), str(path)]
    command += ["--ro-bind", str(EXERCISE_PACKAGE), MOUNTED_PACKAGE,
                "--bind", str(scratch / "home"), SCRATCH, "--proc", "/proc", "--dev", "/dev",
                "--chdir", SCRATCH, "--clearenv"]
    for key, value in sandbox_environment(settings).items():
        command += ["--setenv", key, value]
    return command + [sys.executable, "-I", "-c", entry]


def namespace_problem() -> str | None:
    """Why this machine cannot run the sandbox (None: it can): bubblewrap starts, and a process in it can enter
    the namespaces of a submission's process and drop its capabilities, as the zygote's children do."""
    scratch = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-"))
    try:
        write_identity_files(scratch)
        entry = ("import sys; sys.path.insert(0, '/grader'); from hw2_exercise.namespaces import drop_privileges, "
                 "enter_namespaces; enter_namespaces(16); drop_privileges()")
        done = subprocess.run(zygote_command(SandboxSettings(), scratch, entry), capture_output=True, text=True,
                              timeout=120, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"the grading sandbox could not start ({type(error).__name__}: {error})"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if done.returncode != 0:
        lines = (done.stderr.strip() or f"exit code {done.returncode}").splitlines()
        return f"the grading sandbox does not work on this machine: {lines[-1][:300]}{NAMESPACE_HINT}"
    return None


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
    prctl(PR_SET_PDEATHSIG, sig)


def confinement(memory_gb: float, cgroup: PidsCgroup, oom_score_adj: int | None = None):
    """What a sandbox's process does before bubblewrap starts (Popen's preexec_fn): die with its parent, an
    address-space limit, no core files, join the pids cgroup and, if given, an `oom_score_adj`."""
    memory = int(memory_gb * 2**30)

    def confine():
        import resource

        die_with_parent()
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        cgroup.join_from_child()
        if oom_score_adj is not None:
            with contextlib.suppress(OSError):
                Path("/proc/self/oom_score_adj").write_text(str(oom_score_adj))

    return confine


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


class Zygote:
    """The judge process's handle on its sandbox: one bubblewrap process (`hw2_exercise.zygote`) that imports
    the libraries and loads the grading model once, then forks a fresh, private child per submission.

    `launch()` starts it and returns at once (the judge process calls it first thing, so that the imports run
    beside its own); `spawn` hands it the two pipe ends of a submission's runner and gets the child's id;
    `end` kills that child with everything it started and returns its exit code. A zygote that died (killed
    for memory, say) is launched again by the next `spawn`.
    """

    def __init__(self, settings: SandboxSettings):
        self.settings = settings
        self.process = self.control = self.cgroup = self.scratch = None
        self.spawned = 0  # children spawned by the current process (the first one waited for its start)

    def launch(self) -> None:
        self.close()
        self.scratch = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-"))
        write_identity_files(self.scratch)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.cgroup = PidsCgroup(self.settings.max_processes)
        # out of memory, the kernel kills a sandbox before any judge
        confine = confinement(self.settings.memory_gb, self.cgroup, oom_score_adj=1000)

        isolate = not self.settings.unsafe_no_sandbox
        tmpfs_megabytes = int(self.settings.memory_gb * 1024 / 3)  # HOME, /tmp and /dev/shm: memory_gb in all
        entry = (f"import sys; sys.path.insert(0, {'/grader' if isolate else str(self.scratch / 'pkg')!r}); "
                 f"from hw2_exercise.zygote import main; import os; "
                 f"os._exit(main({theirs.fileno()}, {isolate}, {tmpfs_megabytes}))")
        if isolate:
            env, command, cwd = {}, zygote_command(self.settings, self.scratch, entry), "/"
        else:
            home = self.scratch / "home"
            env = {**sandbox_environment(self.settings), "HOME": str(home), "TMPDIR": str(home),
                   "HF_HOME": str(home / "hf"), "MPLCONFIGDIR": str(home / "mpl"),
                   "HW2_OUTPUT_DIR": str(home / "outputs"), "PYTHONPATH": str(self.scratch / "pkg")}
            shutil.copytree(EXERCISE_PACKAGE, self.scratch / "pkg" / "hw2_exercise")
            command, cwd = [sys.executable, "-c", entry], home
        self.process = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        pass_fds=(theirs.fileno(),), preexec_fn=confine,
                                        start_new_session=True)
        theirs.close()
        self.control, self.spawned = ours, 0
        with contextlib.suppress(OSError):  # it reads this once it has imported the libraries
            ours.send(json.dumps({"op": "preload", **self.settings.preload}).encode())

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ask(self, document: dict, fds: tuple = (), timeout: float = 60.0) -> dict:
        """Send one control message (with file descriptors) and return the zygote's reply."""
        self.control.settimeout(timeout)
        message = json.dumps(document).encode()
        socket.send_fds(self.control, [message], list(fds)) if fds else self.control.send(message)
        reply = self.control.recv(1 << 16)
        if not reply:
            raise EOFError("the zygote closed its socket")
        return json.loads(reply)

    def spawn(self, request_read: int, reply_write: int) -> dict:
        """Fork a child that serves requests on these pipe ends (the zygote gets copies): `{"child": id,
        "fork_s": ..., "startup": ...}`. Launches the zygote first when it is not running."""
        errors = []
        for _ in range(2):
            if not self.alive():
                self.launch()
            try:
                reply = self.ask({"op": "spawn"}, (request_read, reply_write), timeout=2 * CELL_TIMEOUT)
            except (OSError, EOFError, ValueError):
                self.close()
                continue
            if "error" in reply:
                errors.append(str(reply["error"]))
                time.sleep(1)  # the processes of the child before may still be leaving (a fork bomb's)
                continue
            self.spawned += 1
            return reply
        if errors:
            raise SandboxUnavailable(f"the grading sandbox could not start a submission's process: {errors[-1]}"
                                     f"{NAMESPACE_HINT}")
        raise SandboxUnavailable("the grading sandbox's process died twice while starting; run the grader with "
                                 "--jobs 1 and check the machine's memory")

    def end(self, child: int) -> int | None:
        """End a child and all it started (it ends by itself once its pipes are closed, else the zygote kills
        it); its exit code (negative: the signal that ended it), None if unknown."""
        if not self.alive():
            return None
        try:
            return self.ask({"op": "end", "child": child}).get("code")
        except (OSError, EOFError, ValueError):
            self.close()
            return None

    def close(self) -> None:
        if self.process is not None:
            with contextlib.suppress(OSError):
                os.killpg(self.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
            self.process = None
        if self.cgroup is not None:
            self.cgroup.kill_all()
            self.cgroup = None
        if self.control is not None:
            self.control.close()
            self.control = None
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None


def zygote_key(settings: SandboxSettings) -> str:
    """What makes two settings need different zygotes (all but the per-request time limit)."""
    return json.dumps([[str(p) for p in settings.read_only], settings.environment, settings.memory_gb,
                       settings.max_processes, settings.unsafe_no_sandbox, settings.preload], sort_keys=True,
                      default=str)


_ZYGOTE: dict[str, Zygote] = {}  # this process's zygote, by `zygote_key` (one at most)


def zygote_for(settings: SandboxSettings) -> Zygote:
    """This process's zygote for `settings`, launched now unless it was before (another one is closed)."""
    key = zygote_key(settings)
    if key not in _ZYGOTE:
        close_zygote()
        _ZYGOTE[key] = Zygote(settings)
    zygote = _ZYGOTE[key]
    if not zygote.alive():
        zygote.launch()
    return zygote


def close_zygote() -> None:
    """Stop this process's zygote and every child of it (at exit, and before a zygote of other settings)."""
    while _ZYGOTE:
        _ZYGOTE.popitem()[1].close()


atexit.register(close_zygote)


class SandboxRunner(Runner):
    """Requests to an exerciser in a fresh child of the zygote; restarts it (cells included) after a crash or
    a timeout. `start(cells)` forks the child and runs the submission's cells in it."""

    MAX_STARTS = 20  # a crash or a timeout costs one check, which starts the next one afresh

    def __init__(self, settings: SandboxSettings):
        super().__init__()
        self.settings, self.cells = settings, []  # the cells: given to `start`, run again by a restart
        self.zygote: Zygote | None = None
        self.child: int | None = None
        self.check_child = False
        self.channel = None
        self.starts = 0
        self.traffic = Traffic()
        self.timings: dict = {}  # how the last start went (see `start`)

    # ------------------------------------------------------------ lifetime

    def launch(self) -> dict:
        """Fork a fresh child from the zygote (launched first if needed); returns the zygote's reply."""
        self.close()
        if self.starts >= self.MAX_STARTS:
            raise ExerciseFailure(f"your code stopped the grading process {self.starts} times; "
                                  "the remaining checks were not run", "crash")
        self.starts += 1
        self.zygote = zygote_for(self.settings)
        request_read, request_write = widened_pipe()
        reply_read, reply_write = widened_pipe()
        try:
            reply = self.zygote.spawn(request_read, reply_write)
        except BaseException:
            for fd in (request_write, reply_read):
                os.close(fd)
            raise
        finally:
            os.close(request_read)
            os.close(reply_write)
        self.child = reply["child"]
        self.channel = FdChannel(reply_read, request_write, self.traffic)
        return reply

    def start(self, cells: list[dict] | None = None) -> list[str]:
        """Fork a child and run the cells in it; returns the notes on failed cells.

        `timings` then says how the start went: the seconds this call waited for the child (`waited_s`: the
        fork, plus the zygote's own start for a judge's first submission), the zygote's part of that
        (`fork_s`), how the zygote started if this child was its first one (`zygote`: imports, model load,
        CPU seconds) and the cells' seconds (`cells_s`).
        """
        if cells is not None:
            self.cells = list(cells)
        cell_timeout = max(self.settings.request_timeout, CELL_TIMEOUT)
        waiting = time.perf_counter()
        spawned = self.launch()
        waited = time.perf_counter() - waiting
        init = {"op": "init", "cells": self.cells, "cell_timeout": cell_timeout}
        model_dir = self.settings.preload.get("model_dir")
        if model_dir:  # the grading model's weights, which the models student code returns may then name
            self.known = resources.known_weights(str(model_dir))
            init["known_weights"] = str(model_dir)
        reply, _ = self.exchange_once(init, [], timeout=2 * cell_timeout)
        startup = spawned.get("startup") if isinstance(spawned.get("startup"), dict) else {}
        self.timings = {"forked": True, "waited_s": round(waited, 2), "fork_s": seconds(spawned.get("fork_s")),
                        "cells_s": seconds(reply.get("cells_s"))}
        if self.zygote.spawned == 1:
            self.timings["zygote"] = {"imports_s": seconds(startup.get("imports_s")),
                                      "model_load_s": seconds(startup.get("preload_s")),
                                      "cpu_s": seconds(startup.get("cpu_s"))}
        return [str(note)[:500] for note in reply.get("notes", [])][:20] if isinstance(reply.get("notes"), list) else []

    def close(self) -> int | None:
        """End the child (if any) and close the pipes; returns its exit code when it is known."""
        code = None
        if self.channel is not None:  # first: a child that sees its pipes closed ends by itself
            for fd in (self.channel.read_fd, self.channel.write_fd):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self.channel = None
        if self.child is not None:
            code = self.zygote.end(self.child)
            self.child = None
        return code

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------ requests

    def release(self) -> None:
        super().release()
        self.check_child = True  # a case ended: before the next one, make sure the child still runs

    def exchange(self, document: dict, tensors: list) -> tuple[dict, list]:
        if self.child is not None and self.check_child:
            self.check_child = False
            if select.select([self.channel.read_fd], [], [], 0)[0]:  # it died (or wrote what nobody asked for)
                self.close()  # between two cases: the next one starts afresh
        if self.child is None:
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
            code = self.close()
            reason = {-signal.SIGKILL: " (killed: probably out of memory)"}.get(code, "")
            raise ExerciseFailure(f"the process running your code stopped{reason} during this check "
                                  f"({type(error).__name__}); did your code call exit() or crash Python?",
                                  "crash") from None
