"""Grade one submission in the current process: `python -m autograder.worker SUBMISSION RESULT_JSON`.

The grading CLI (`autograder.grade`) starts this module in a sandboxed child process, one per submission.
It assembles the submission (instructor cells + the student's answer cells), runs every hidden check with a
time limit and writes the result file after each check, so that whatever the student's code does later
(exit, hang, exhaust memory) the checks already done keep their honest result.
"""
import contextlib
import io
import json
import os
import signal
import sys
import traceback
import types
from pathlib import Path

OUTPUT_LIMIT = 64 * 1024  # characters of student output kept (the rest is dropped)
GUARDED_MODULES = ("torch", "torch.nn.functional", "numpy", "math", "builtins")


class CheckTimeout(KeyboardInterrupt):
    """Raised by the alarm when one check runs too long. A KeyboardInterrupt so that student code's
    `except Exception` cannot swallow it and the framework lets it through."""


class CappedOutput(io.TextIOBase):
    """A text stream that keeps the first OUTPUT_LIMIT characters written to it and drops the rest."""

    def __init__(self):
        self.kept = io.StringIO()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        room = OUTPUT_LIMIT - self.kept.tell()
        if room > 0:
            self.kept.write(text[:room])
        return len(text)


def snapshot_modules() -> dict:
    """The attributes of the modules (and of torch.Tensor) that checks rely on, to undo monkeypatching."""
    import torch

    snapshot = {name: dict(vars(sys.modules[name])) for name in GUARDED_MODULES if name in sys.modules}
    snapshot["torch.Tensor"] = dict(vars(torch.Tensor))
    return snapshot


def restore_modules(snapshot: dict) -> list[str]:
    """Put back every attribute replaced since `snapshot`; returns the names that had been replaced.

    Attributes that appear later are left alone: libraries add submodules lazily, and a new name cannot
    change what the checks call.
    """
    import torch

    changed = []
    for name, saved in snapshot.items():
        target = torch.Tensor if name == "torch.Tensor" else sys.modules[name]
        current = vars(target)
        for attr, value in saved.items():
            if current.get(attr, value) is not value and not isinstance(value, types.ModuleType):
                with contextlib.suppress(AttributeError, TypeError):
                    setattr(target, attr, value)
                    changed.append(f"{name}.{attr}")
    return changed


@contextlib.contextmanager
def time_limit(seconds: float):
    def on_alarm(signum, frame):
        raise CheckTimeout(f"more than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def write_result(path: Path, result: dict) -> None:
    """Replace the result file atomically (a crash never leaves half a JSON)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, path)


def exec_cells(assembly, namespace: dict, cell_timeout: float) -> tuple[list[str], dict]:
    """Execute the assembled cells one by one; a failing student cell is reported, not fatal.

    Returns the notes and a snapshot of the guarded modules taken just before the first student cell, after
    the instructor's imports (importing libraries legitimately rebinds a few torch functions).
    """
    notes, snapshot = [], None
    for cell in assembly.cells:
        if cell.grade_id is not None and snapshot is None:
            snapshot = snapshot_modules()
        try:
            with time_limit(cell_timeout):
                exec(compile(cell.source, f"<{cell.name}>", "exec"), namespace)
        except CheckTimeout:
            notes.append(f"{cell.name} was stopped after {cell_timeout:g} s (an endless loop at the top level?)")
        except BaseException as error:  # noqa: BLE001 (SystemExit and friends included: report, go on)
            where = traceback.extract_tb(error.__traceback__)[-1]
            notes.append(f"{cell.name} raised {type(error).__name__}: {str(error).strip()[:300]} "
                         f"(line {where.lineno})")
    for gid in assembly.missing_answers:
        notes.append(f"the answer cell '{gid}' is missing from the submission (deleted or its metadata changed)")
    return notes, snapshot or snapshot_modules()


def grade(submission: Path, result_path: Path, check_timeout: float) -> None:
    from autograder.submission import assemble, read_answers, autograded_tests

    tests = autograded_tests()
    result = {"score": 0.0, "max_score": sum(tests.values()), "tests": {}, "notes": []}
    try:
        answers = read_answers(submission)
    except ValueError as error:
        result["notes"].append(str(error))
        for gid, points in tests.items():
            result["tests"][gid] = {"score": 0.0, "max_score": points, "status": "error", "feedback": str(error)}
        write_result(result_path, result)
        return

    from autograder.checks import all_checks, run_check
    from autograder.checks.framework import quiet

    namespace: dict = {"__name__": "hw2_submission"}
    with quiet():
        notes, snapshot = exec_cells(assemble(answers), namespace, check_timeout)
    result["notes"] += notes
    tampered = restore_modules(snapshot)
    if tampered:
        result["notes"].append(f"your code replaced library functions, which were put back: {', '.join(tampered[:8])}")
    write_result(result_path, result)

    checks = all_checks()
    for gid, points in tests.items():
        entry = {"score": 0.0, "max_score": points}
        if gid not in checks:
            entry.update(status="error", feedback=f"[{gid}] this grader has no automatic check for this test; "
                                                  "grade it with `nbgrader autograde`")
            result["tests"][gid] = entry
            continue
        try:
            with time_limit(check_timeout), quiet():
                check = run_check(gid, namespace)
            entry.update(score=min(float(check.score), points), status=check.status, feedback=check.feedback)
        except CheckTimeout:
            entry.update(status="timeout", feedback=f"[{gid}] your code ran for more than {check_timeout:g} s; "
                                                    "look for an endless loop or a far too large computation")
        except BaseException as error:  # noqa: BLE001 (SystemExit raised by student code inside a check)
            entry.update(status="error", feedback=f"[{gid}] grading stopped with {type(error).__name__}: "
                                                  f"{str(error)[:300]} (did your code call exit()?)")
        changed = restore_modules(snapshot)
        if changed:
            entry["feedback"] += f"\n  note: your code replaced {', '.join(changed[:8])} during this check; restored"
        if entry["status"] != "passed" and result["notes"]:
            entry["feedback"] += "\n  note: " + "\n  note: ".join(result["notes"])
        result["tests"][gid] = entry
        result["score"] = round(sum(t["score"] for t in result["tests"].values()), 6)
        write_result(result_path, result)


def main(argv: list[str]) -> int:
    submission, result_path, check_timeout = Path(argv[0]), Path(argv[1]), float(argv[2])
    sys.stdout = sys.stderr = CappedOutput()
    import torch

    torch.set_num_threads(1)
    grade(submission, result_path, check_timeout)
    return 0


if __name__ == "__main__":
    os._exit(main(sys.argv[1:]))
