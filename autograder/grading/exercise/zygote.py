"""The sandbox's first process: import the libraries once, then fork one private child per submission.

The judge starts it (inside bubblewrap, see `autograder.grading.sandbox.Zygote`) with one end of a Unix
datagram socket and sends it JSON control messages, one per datagram:

- `preload` (the first one; no reply): load the grading model and copy the tokenizers the checks lend
  (`resources.preload`), then freeze the heap, so that every child starts with all that in memory;
- `spawn`, carrying two file descriptors (requests in, replies out): end the previous child if it still
  runs, then fork a child that serves one submission on them (`runtime.serve`) -> `{"child": its id,
  "fork_s": seconds, "startup": how this process started}`, or `{"error": why it could not}`;
- `end` with a child's id: let the child end (the judge closed its pipes) or kill it with everything it
  started, and wait until all of it is gone -> `{"code": its exit code, negative for a signal}`.

Each child is three processes. The first (`keeper`) stays in this process's namespaces, enters new ones for
the rest (`enter_namespaces`) and waits. The second (`reaper`) is PID 1 of the new PID namespace, in a
session of its own: when it ends, the kernel kills every process in that namespace. It only waits, like
bubblewrap's own init. The third (`worker`, PID 2) runs the submission. Inside, the child is `nobody` in a
user namespace of its own, has no capability at all (`drop_privileges`) and cannot create a user namespace
to get any (`forbid_new_user_namespaces`): it cannot signal or trace a process outside its PID namespace,
reach a network (its network namespace has only a loopback), share IPC objects or abstract sockets with
anyone, or write anywhere but its own empty tmpfs mounts on /scratch (its HOME), /tmp and /dev/shm: every
other writable mount (bubblewrap's root and /dev, which the zygote and every child share) is made read-only
for it, and the mounts it inherited are locked to it (they came from a more privileged mount namespace), so it
cannot unmount its tmpfs to reach what is under them. This process holds no writable shared memory when it
forks (it refuses to fork if it does: tqdm's multiprocessing lock was such a page, shared by every child).
This process and the keeper are not dumpable, so /proc gives the child nothing of them either.
"""
import contextlib
import gc
import json
import os
import signal
import socket
import sys
import tempfile
import time

from . import resources, runtime
from .namespaces import (PR_SET_DUMPABLE, PR_SET_PDEATHSIG, drop_privileges, enter_namespaces,
                         forbid_new_user_namespaces, prctl, shared_writable_mappings)

MESSAGE_BYTES = 1 << 16
END_GRACE_S = 0.5  # how long `end` lets a child whose pipes were closed end by itself


def enter_private_folder() -> None:
    """Without namespaces (--unsafe-no-sandbox): a fresh folder of its own as HOME, TMPDIR and output folder."""
    folder = tempfile.mkdtemp(prefix="submission-", dir=os.environ.get("HOME"))
    os.environ.update(HOME=folder, TMPDIR=folder, HW2_OUTPUT_DIR=os.path.join(folder, "outputs"))
    tempfile.tempdir = folder
    os.chdir(folder)


def renew_thread_pools() -> None:
    """Give torch a thread pool of this process's own before any thread of student code asks for one.

    A fork leaves torch's pool unusable and torch replaces it on first use, without a lock: two threads that
    start computing at once (model loading runs a thread pool) can find no pool and fail an internal assert.
    """
    import torch

    torch.set_num_threads(1)


def exit_code(status: int) -> int:
    """A wait status as an exit code: the code, or 128 + the signal that killed the process."""
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def reaper(worker: int) -> int:
    """PID 1 of a child's namespace: reap every process until the worker ends, then return its exit code."""
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 70
        if pid == worker:
            return exit_code(status)


def keeper(request_fd: int, reply_fd: int, report_fd: int, isolate: bool, tmpfs_megabytes: int) -> int:
    """The first process of a child: isolate the rest, start it, report the reaper's PID, wait for it."""
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    try:
        if isolate:
            enter_namespaces(tmpfs_megabytes)
        reaper_pid = os.fork()
    except BaseException as error:  # noqa: BLE001 (reported to the judge, which tells the instructor)
        os.write(report_fd, json.dumps({"error": f"{type(error).__name__}: {error}"}).encode())
        return 70
    if reaper_pid == 0:
        os.close(report_fd)
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        os.setsid()  # a session and process group of its own: kill(0), PRIO_PGRP, autogroup reach no further
        if isolate:
            drop_privileges()
            forbid_new_user_namespaces()
            prctl(PR_SET_DUMPABLE, 0)
        worker = os.fork()
        if worker == 0:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            prctl(PR_SET_DUMPABLE, 1)
            code = 70
            try:
                os.chdir("/scratch") if isolate else enter_private_folder()
                renew_thread_pools()
                code = runtime.serve(request_fd, reply_fd)
            finally:
                os._exit(code)
        os.close(request_fd)
        os.close(reply_fd)
        os._exit(reaper(worker))
    os.close(request_fd)
    os.close(reply_fd)
    os.write(report_fd, json.dumps({"pid": reaper_pid}).encode())
    os.close(report_fd)
    _, status = os.waitpid(reaper_pid, 0)
    return exit_code(status)


class Zygote:
    """The control loop: one child at a time, each forked from this process's loaded state."""

    def __init__(self, control: socket.socket, isolate: bool, tmpfs_megabytes: int):
        self.control, self.isolate, self.tmpfs_megabytes = control, isolate, tmpfs_megabytes
        self.children: dict[int, int] = {}  # keeper PID -> reaper PID
        self.startup: dict = {}

    def spawn(self, fds: list[int]) -> dict:
        for child in list(self.children):
            self.end(child)
        shared = shared_writable_mappings()
        if shared:  # every child would map these pages: a channel between submissions
            for fd in fds:
                os.close(fd)
            return {"error": f"the zygote holds writable shared memory, which its children would share: {shared[0]}"}
        if len(fds) != 2:
            for fd in fds:
                os.close(fd)
            return {"error": f"spawn needs 2 file descriptors, got {len(fds)}"}
        started = time.perf_counter()
        report_read, report_write = os.pipe()
        keeper_pid = os.fork()
        if keeper_pid == 0:
            code = 70
            try:
                self.control.close()
                os.close(report_read)
                code = keeper(fds[0], fds[1], report_write, self.isolate, self.tmpfs_megabytes)
            finally:
                os._exit(code)
        for fd in (*fds, report_write):
            os.close(fd)
        with os.fdopen(report_read, "rb") as report:
            said = report.read(MESSAGE_BYTES)
        try:
            reply = json.loads(said or b"{}")
        except ValueError:
            reply = {}
        if "pid" not in reply:
            self.children[keeper_pid] = 0
            code = self.end(keeper_pid)["code"]
            return {"error": reply.get("error") or f"the child's first process ended with code {code}"}
        self.children[keeper_pid] = int(reply["pid"])
        return {"child": keeper_pid, "fork_s": time.perf_counter() - started, "startup": self.startup}

    def end(self, child: int) -> dict:
        """Wait a moment for the child to end by itself (the judge closed its pipes first), else kill its reaper,
        which takes down its whole PID namespace; the keeper ends once that is gone."""
        reaper_pid = self.children.pop(child, None)
        if reaper_pid is None:
            return {"code": None, "error": "no such child"}
        deadline = time.monotonic() + END_GRACE_S
        while True:
            pid, status = os.waitpid(child, os.WNOHANG)
            if pid or time.monotonic() > deadline:
                break
            time.sleep(0.005)
        if not pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(reaper_pid or child, signal.SIGKILL)
            _, status = os.waitpid(child, 0)
        return {"code": signed(exit_code(status))}

    def serve(self) -> int:
        while True:
            try:
                message, fds, _, _ = socket.recv_fds(self.control, MESSAGE_BYTES, 4)
            except OSError:
                return 0
            if not message:
                return 0
            try:
                request = json.loads(message)
            except ValueError:
                request = {}
            op = request.get("op")
            if op == "preload":
                self.preload(request)
                continue
            if op == "spawn":
                reply = self.spawn(list(fds))
            else:
                for fd in fds:
                    os.close(fd)
                reply = self.end(request.get("child")) if op == "end" else {"error": f"unknown op {op!r}"}
            self.control.send(json.dumps(reply).encode())

    def preload(self, request: dict) -> None:
        started = time.perf_counter()
        if request.get("model_dir"):
            try:
                resources.preload(str(request["model_dir"]), list(request.get("tokenizers") or []))
            except Exception:  # noqa: BLE001 (the checks that need the model report it)
                pass
        gc.freeze()  # what is loaded stays: a full collection (TRL's trainers run them) then skips it all
        self.startup["preload_s"] = time.perf_counter() - started
        self.startup["cpu_s"] = time.process_time()


def signed(code: int) -> int:
    """An exit code as the judge reads it: negative for a signal (as `subprocess` does)."""
    return -(code - 128) if code > 128 else code


def main(control_fd: int, isolate: bool, tmpfs_megabytes: int) -> int:
    """Import the libraries, then serve the control socket until the judge closes it."""
    started_at = time.time()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    if devnull > 2:
        os.close(devnull)
    sys.stdout = sys.stderr = open(os.devnull, "w")
    prctl(PR_SET_DUMPABLE, 0)
    control = socket.socket(fileno=control_fd)
    importing = time.perf_counter()
    import tqdm.std  # its first progress bar would create a multiprocessing lock: a semaphore in shared memory

    tqdm.std.TqdmDefaultWriteLock.mp_lock = None  # a thread lock only, in this process and every child
    runtime.preimport()
    import torch

    torch.set_num_threads(1)
    zygote = Zygote(control, isolate, tmpfs_megabytes)
    zygote.startup.update(started_at=started_at, imports_s=time.perf_counter() - importing)
    return zygote.serve()
