"""Namespaces, mounts and capabilities for a submission's process (see `zygote`), through libc.

`enter_namespaces` moves the calling process into new user, mount, network, IPC, UTS and cgroup namespaces
(its next child starts a new PID namespace), with empty tmpfs mounts of its own on /scratch, /tmp and
/dev/shm and every other writable mount made read-only; `drop_privileges` then gives up every capability, and
`forbid_new_user_namespaces` closes the way back to any (a user namespace of its own would give the process
capabilities over new mounts, such as a cgroup hierarchy). `shared_writable_mappings` finds memory a fork
would share between the zygote's children.
The grader also calls both once in a throwaway sandbox before grading, to say early when a machine does not
allow them (`autograder.grading.sandbox.namespace_problem`).
"""
import ctypes
import os

CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x02000000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 0x1, 0x2, 0x4, 0x8, 0x20
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 0x40000
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 1, 4, 24, 38, 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
CAPABILITY_VERSION_3 = 0x20080522
PRIVATE_MOUNTS = {"/scratch": "mode=0700", "/tmp": "mode=1777", "/dev/shm": "mode=1777"}

_libc = ctypes.CDLL(None, use_errno=True)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _check(result: int, doing: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{doing}: {os.strerror(error)}")


def prctl(option: int, value: int) -> int:
    return _libc.prctl(option, ctypes.c_ulong(value), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))


def enter_namespaces(tmpfs_megabytes: int) -> None:
    """Move this process into new user, mount, network, IPC, UTS and cgroup namespaces (its next child is PID 1
    of a new PID namespace), as the same user, with empty tmpfs mounts on the PRIVATE_MOUNTS."""
    uid, gid = os.geteuid(), os.getegid()
    _check(_libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
                         | CLONE_NEWCGROUP), "unshare (creating namespaces)")
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as handle:
            handle.write(text)
    _check(_libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "making the mounts private")
    kept = {path: os.open(path, os.O_PATH | os.O_DIRECTORY) for path in mounts_under(PRIVATE_MOUNTS)}
    for path, mode in PRIVATE_MOUNTS.items():
        options = f"size={tmpfs_megabytes}m,{mode}".encode()
        _check(_libc.mount(b"tmpfs", path.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, options), f"mounting {path}")
    for path, fd in kept.items():  # the read-only folders mounted under them (the judge's inputs in /tmp)
        os.makedirs(path, exist_ok=True)
        _check(_libc.mount(f"/proc/self/fd/{fd}".encode(), path.encode(), None, MS_BIND | MS_REC, None),
               f"mounting {path} again")
        _check(_libc.mount(None, path.encode(), None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV,
                           None), f"making {path} read-only")
        os.close(fd)
    for path, flags in shared_writable_mounts():  # "/" and /dev are bubblewrap's tmpfs, shared with the zygote
        _check(_libc.mount(None, path.encode(), None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags, None),
               f"making {path} read-only")


MOUNT_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": 0x400,
               "nodiratime": 0x800, "relatime": 0x200000, "strictatime": 0x1000000}


def mounts() -> list[tuple[str, list[str]]]:
    """Every mount of this process's mount namespace: (mount point, its per-mount options), from mountinfo."""
    with open("/proc/self/mountinfo") as handle:
        return [(point.encode().decode("unicode_escape"), options.split(","))
                for point, options in (line.split()[4:6] for line in handle)]


def shared_writable_mounts() -> list[tuple[str, int]]:
    """The writable folder mounts other than this child's own tmpfs (and /proc), with the flags to keep."""
    return [(point, sum(MOUNT_FLAGS.get(option, 0) for option in options)) for point, options in mounts()
            if "rw" in options and point not in PRIVATE_MOUNTS and os.path.isdir(point)
            and point != "/proc" and not point.startswith("/proc/")]


def mounts_under(folders) -> list[str]:
    """The mount points inside `folders` (not the folders themselves), outermost first."""
    return sorted({point for point, _ in mounts() for f in folders if point.startswith(f.rstrip("/") + "/")},
                  key=len)


def drop_privileges() -> None:
    """Give up every capability for good (bounding, ambient, effective, permitted, inheritable) and the right
    to gain any through exec."""
    with open("/proc/sys/kernel/cap_last_cap") as handle:
        last = int(handle.read())
    for capability in range(last + 1):
        _check(prctl(PR_CAPBSET_DROP, capability), f"dropping capability {capability}")
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    header, data = _CapHeader(CAPABILITY_VERSION_3, 0), (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), ctypes.byref(data)), "dropping the capabilities")
    _check(prctl(PR_SET_NO_NEW_PRIVS, 1), "setting no_new_privs")


def shared_writable_mappings() -> list[str]:
    """The writable shared memory mappings of this process (`rw-s` in /proc/self/maps): a process forked from it
    maps the same pages, and so would every later one, a channel from one submission to the next."""
    with open("/proc/self/maps") as handle:
        return [line.strip() for line in handle if line.split()[1][1] == "w" and line.split()[1][3] == "s"]


# seccomp: a classic BPF program over struct seccomp_data {int nr; u32 arch; u64 ip; u64 args[6];}
_BPF_LD_ABS, _BPF_JEQ, _BPF_JSET, _BPF_JGE, _BPF_RET = 0x20, 0x15, 0x45, 0x35, 0x06
_RET_ALLOW, _RET_ERRNO = 0x7FFF0000, 0x00050000
_EPERM, _ENOSYS = 1, 38
_X32_SYSCALL_BIT = 0x40000000
# architecture -> (unshare, clone, clone3) system call numbers
_SYSCALLS = {0xC000003E: (272, 56, 435),  # x86_64
             0x40000003: (310, 120, 435),  # i386 (32-bit calls on an x86_64 kernel)
             0xC00000B7: (97, 220, 435)}  # aarch64
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def _user_namespace_filter() -> list[tuple[int, int, int, int]]:  # (code, jt, jf, k)
    """The program: unshare or clone with CLONE_NEWUSER -> EPERM; clone3 (whose flags a filter cannot read) and
    x32 calls -> ENOSYS (glibc then uses clone); everything else, and other architectures, allowed."""
    block_length = 11
    program = [(_BPF_LD_ABS, 0, 0, 4)]  # the architecture
    for index, arch in enumerate(_SYSCALLS):  # a match jumps over the other tests, the ALLOW and earlier blocks
        program.append((_BPF_JEQ, len(_SYSCALLS) - index + index * block_length, 0, arch))
    program.append((_BPF_RET, 0, 0, _RET_ALLOW))
    for unshare, clone, clone3 in _SYSCALLS.values():
        program += [(_BPF_LD_ABS, 0, 0, 0),  # 0: the call's number
                    (_BPF_JGE, 8, 0, _X32_SYSCALL_BIT),  # 1: -> 10
                    (_BPF_JEQ, 3, 0, unshare),  # 2: -> 6
                    (_BPF_JEQ, 2, 0, clone),  # 3: -> 6
                    (_BPF_JEQ, 5, 0, clone3),  # 4: -> 10
                    (_BPF_RET, 0, 0, _RET_ALLOW),  # 5
                    (_BPF_LD_ABS, 0, 0, 16),  # 6: the flags, the low half of the first argument
                    (_BPF_JSET, 0, 1, CLONE_NEWUSER),  # 7: -> 8, else 9
                    (_BPF_RET, 0, 0, _RET_ERRNO | _EPERM),  # 8
                    (_BPF_RET, 0, 0, _RET_ALLOW),  # 9
                    (_BPF_RET, 0, 0, _RET_ERRNO | _ENOSYS)]  # 10
    return program


def forbid_new_user_namespaces() -> None:
    """Install `_user_namespace_filter` for this process and everything it starts (needs no_new_privs)."""
    instructions = _user_namespace_filter()
    array = (_SockFilter * len(instructions))(*[_SockFilter(*instruction) for instruction in instructions])
    program = _SockFprog(len(instructions), array)
    _check(_libc.prctl(PR_SET_SECCOMP, ctypes.c_ulong(SECCOMP_MODE_FILTER), ctypes.byref(program),
                       ctypes.c_ulong(0), ctypes.c_ulong(0)), "installing the seccomp filter")
