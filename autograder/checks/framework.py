"""The machinery of the hidden checks: weighted cases, student-facing feedback, silent grading.

A *check* grades one nbgrader test cell (its grade id) and is a list of named, weighted *cases*. A case is a
function `case(ns, ctx)` that receives the student's namespace (the notebook's globals) and the shared
`CheckContext` (the real tokenizer and the tiny model); it returns when the student's code is right and
raises `CheckFailure(case, expected, seen, hint)` when it is not. The check's score is
`points * (weight of the passed cases / weight of all cases)`.

Student functions are always called through `student(ns, name)`, so that whatever they raise
(`NotImplementedError` from `todo()`, a shape error...) fails only the case that called them, with feedback
that names the exception and the line of the student's code. Anything else that goes wrong inside a case is
a bug of the grader: that case scores 0 and the feedback says so, but the run never crashes.
"""
import contextlib
import io
import logging
import math
import os
import sys
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

from autograder.grading.exercise import runtime as _runtime

rebound_namespace = _runtime.rebound_namespace  # the notebook-copy helper, for the catalogue and its tests

STATUS_PASSED, STATUS_FAILED, STATUS_ERROR, STATUS_TIMEOUT = "passed", "failed", "error", "timeout"


class CheckFailure(Exception):
    """The student's code ran but gave a wrong result: what was expected, what was seen, and a hint."""

    def __init__(self, case: str, expected, seen, hint: str = ""):
        self.case, self.expected, self.seen, self.hint = case, expected, seen, hint
        super().__init__(f"{case}: expected {expected}, seen {seen}")

    def feedback(self) -> str:
        lines = [f"expected: {shorten(self.expected)}", f"seen:     {shorten(self.seen)}"]
        if self.hint:
            lines.append(f"hint:     {self.hint}")
        return "\n".join(lines)


class MissingFunction(Exception):
    """The namespace has no callable under the name a check needs."""

    def __init__(self, name: str):
        self.name = name
        super().__init__(name)

    def feedback(self) -> str:
        return (f"`{self.name}` is not defined — did you run its cell / rename it? "
                f"Keep the names and signatures given in the notebook.")


class StudentError(Exception):
    """A student function raised an exception."""

    def __init__(self, name: str, error: BaseException, action: str | None = None):
        self.name, self.error = name, error
        self.action = action or f"calling `{name}`"
        super().__init__(f"{name}: {error!r}")

    def feedback(self) -> str:
        message = str(self.error).strip() or "(no message)"
        type_name = getattr(self.error, "type_name", type(self.error).__name__)
        if isinstance(self.error, NotImplementedError) or getattr(self.error, "not_implemented", False):
            return f"NotImplementedError: {shorten(message, 300)}"
        where = getattr(self.error, "where", None) or student_frame(self.error)
        return (f"{self.action} raised {type_name}: {shorten(message, 400)}"
                + (f"\n          (last line of notebook code that ran: {where})" if where else ""))


def shorten(value, limit: int = 600) -> str:
    """A one-value description short enough for feedback."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 15] + " ... (cut)"


def student_frame(error: BaseException) -> str:
    """`file:line` of the deepest traceback frame that belongs to notebook code, or ''."""
    frames = traceback.extract_tb(error.__traceback__)
    grader_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    notebook = [f for f in frames if "site-packages" not in f.filename and not f.filename.startswith(grader_dir)
                and "/lib/python" not in f.filename and f.filename not in ("<string>", "<frozen runpy>")]
    if not notebook:
        return ""
    frame = notebook[-1]
    return f"line {frame.lineno}: {frame.line}" if frame.line else f"{frame.filename}, line {frame.lineno}"


class StudentFunction:
    """A notebook function as the judge sees it: called on the other side of a `Runner`, results as data.

    Whatever the call raises there becomes a StudentError (or MissingFunction when the name is not defined),
    so it fails only the case that called it, with feedback that names the exception and the notebook line.
    `isolate` maps names of other notebook functions to the judge's stand-ins (served as oracles) or to
    values, so that a bug graded elsewhere is not punished twice.
    """

    def __init__(self, runner, name: str, isolate: dict | None = None):
        self.runner, self.name, self.isolate = runner, name, isolate

    def __call__(self, *args, **kwargs):
        return self.reply(args, kwargs).value

    def reply(self, args=(), kwargs=None, keep: bool = False, backward: list | None = None, grads: tuple = ()):
        """The full `Reply` (value, gradients, kept reference) of one call."""
        from autograder.grading.remote import MissingName, RemoteError

        try:
            return self.runner.call(self.name, args, kwargs or {}, isolate=self.isolate, keep=keep,
                                    backward=backward, grads=grads)
        except MissingName as missing:
            raise MissingFunction(missing.name) from None
        except RemoteError as error:
            action = None if error.during.startswith("calling") else f"{error.during} of `{self.name}`"
            raise StudentError(self.name, error, action) from None

    def with_grads(self, args, kwargs=None, backward=(0,), grads: tuple = ()):
        """Call, back-propagate from the output at `backward` (its sum, if it has several elements) and return
        (value, gradients of `grads`); the gradients are None when back-propagating failed."""
        reply = self.reply(args, kwargs, backward=list(backward), grads=grads)
        return reply.value, reply.grads


def student(runner, name: str, isolate: dict | None = None) -> StudentFunction:
    """The student's function `name` behind `runner` (see `StudentFunction`)."""
    return StudentFunction(as_runner(runner), name, isolate)


def shared_answer(ns, key, ask: Callable):
    """`ask()` once per submission for the cases that ask the same question of student code (the same call on
    the same inputs, whose result is data: models as the judge sees them, never a kept object); an exception is
    not remembered, so each case that asks gets it. Calls are seeded alike in every case, so a second call
    would give the same answer, only slower."""
    memo = getattr(ns, "shared_answers", None)
    if memo is None:  # an in-process namespace: a new runner per call, nothing to share
        return ask()
    if key not in memo:
        memo[key] = ask()
    return memo[key]


def as_runner(namespace_or_runner):
    """A `Runner` for a namespace (in-process exercise) or the runner itself."""
    from autograder.grading.remote import LocalRunner, Runner

    if isinstance(namespace_or_runner, Runner):
        return namespace_or_runner
    if isinstance(namespace_or_runner, dict):
        return LocalRunner(namespace_or_runner)
    raise TypeError(f"expected a notebook namespace or a Runner, got {type(namespace_or_runner).__name__}")


def call_student(name: str, action: str, function: Callable, *args, **kwargs):
    """Run one more request about student code (a method, an iteration); its errors become StudentErrors."""
    from autograder.grading.remote import MissingName, RemoteError

    try:
        return function(*args, **kwargs)
    except MissingName as missing:
        raise MissingFunction(missing.name) from None
    except RemoteError as error:
        raise StudentError(name, error, action) from None


@dataclass
class Case:
    """One weighted, named property of a student function."""

    name: str
    weight: float
    run: Callable[[dict, "object"], None]


@dataclass
class Check:
    """The hidden check of one nbgrader test cell."""

    grade_id: str
    points: float
    functions: tuple[str, ...]  # the notebook functions it grades, in the order students write them
    cases: list[Case] = field(default_factory=list)
    extra_credit: bool = False  # a starred task: its points come on top of the homework's maximum

    def case(self, name: str, weight: float = 1.0):
        """Decorator that appends a case to this check."""
        def register(function):
            self.cases.append(Case(name, weight, function))
            return function
        return register


@dataclass
class CaseResult:
    name: str
    weight: float
    passed: bool
    kind: str  # "passed", "wrong", "missing", "exception", "timeout", "crash", "internal"
    message: str = ""


@dataclass
class CheckResult:
    grade_id: str
    score: float
    max_score: float
    status: str  # "passed" | "failed" | "error" | "timeout"
    feedback: str
    cases: list[CaseResult] = field(default_factory=list)


_RUN_SALT = 0


def set_run_salt(salt: int) -> None:
    """Vary the random inputs of the checks per grading run (0, the default, keeps them fixed for tests)."""
    global _RUN_SALT
    _RUN_SALT = int(salt) % (2**31)


def salted(seed: int) -> int:
    """A seed for random check inputs: `seed` shifted by this run's salt."""
    return (int(seed) + _RUN_SALT) % (2**31)


def run_case(case: Case, runner, context) -> CaseResult:
    """Run one case, turning every outcome into a CaseResult (never raises, except KeyboardInterrupt and the
    runner's own failures, which the caller handles)."""
    import torch

    from autograder.grading.remote import ExerciseFailure

    try:
        with torch.random.fork_rng(devices=[]), torch.enable_grad(), contextlib.redirect_stdout(io.StringIO()):
            torch.manual_seed(salted(0))
            case.run(runner, context)
    except (KeyboardInterrupt, SystemExit):
        raise
    except ExerciseFailure as failure:
        kind = "timeout" if failure.kind == "timeout" else "crash"
        return CaseResult(case.name, case.weight, False, kind, str(failure))
    except CheckFailure as failure:
        return CaseResult(case.name, case.weight, False, "wrong", failure.feedback())
    except MissingFunction as missing:
        return CaseResult(case.name, case.weight, False, "missing", missing.feedback())
    except StudentError as error:
        return CaseResult(case.name, case.weight, False, "exception", error.feedback())
    except BaseException as error:  # noqa: BLE001 (a bug of the grader must not crash the grading)
        message = (f"internal error of the grader, not of your code ({type(error).__name__}: "
                   f"{shorten(str(error), 300)}); please tell the course staff")
        return CaseResult(case.name, case.weight, False, "internal", message)
    finally:
        with contextlib.suppress(Exception):
            runner.release()
    return CaseResult(case.name, case.weight, True, "passed")


def run_check(check: Check, ns, context) -> CheckResult:
    """Run every case of `check` against a notebook namespace (exercised in this process) or a `Runner`.

    The cases run on one CPU thread: their tensors are tiny, and on a busy machine several threads per
    process spend more time waiting for each other than computing (ten times slower on 2 shared cores).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runner = as_runner(ns)
        results = []
        for case in check.cases:
            stopped = next((r for r in results if r.kind in ("timeout", "crash")), None)
            if stopped is None:
                results.append(run_case(case, runner, context))
            else:  # the rest of a check that hung or crashed is not run again
                reason = "timed out" if stopped.kind == "timeout" else "stopped the process"
                results.append(CaseResult(case.name, case.weight, False, stopped.kind,
                                          f"not run: an earlier case of this check {reason}"))
    finally:
        torch.set_num_threads(threads)
    total = sum(r.weight for r in results)
    passed = sum(r.weight for r in results if r.passed)
    score = round(check.points * passed / total, 6) if total else 0.0
    if passed == total:
        status = STATUS_PASSED
    elif all(r.kind == "timeout" for r in results if not r.passed):
        status = STATUS_TIMEOUT
    elif any(r.kind in ("missing", "exception", "crash", "internal") for r in results):
        status = STATUS_ERROR
    else:
        status = STATUS_FAILED
    return CheckResult(check.grade_id, score, check.points, status, format_feedback(check, results, score),
                       results)


def format_feedback(check: Check, results: list[CaseResult], score: float) -> str:
    """Feedback for students: one line per case, details under the failed ones."""
    names = ", ".join(f"`{name}`" for name in check.functions)
    lines = [f"[{check.grade_id}] hidden checks of {names}: {format_points(score)} / "
             f"{format_points(check.points)} points"]
    for result in results:
        mark = "ok  " if result.passed else "FAIL"
        lines.append(f"  {mark} {result.name} (weight {format_points(result.weight)})")
        if not result.passed:
            lines.extend("         " + line for line in result.message.splitlines())
    missing = [r for r in results if r.kind == "missing"]
    if missing and len(missing) == len(results):
        lines.append("  Nothing could be checked: " + missing[0].message)
    return "\n".join(lines)


def format_points(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".") if not math.isclose(value, round(value)) else str(round(value))


@contextlib.contextmanager
def quiet():
    """Keep everything off stderr: Python-level and file-descriptor-level writes, warnings, logging, bars.

    In an nbgrader test cell any stderr output costs all the points of the cell, so the checks run with
    stderr sent to a scratch file, warnings ignored, logging disabled and progress bars switched off.
    """
    saved_env = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    previous_disable = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    restore_bars = silence_progress_bars()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    scratch = open(os.devnull, "w")
    saved_fd = None
    with contextlib.suppress(Exception):
        saved_fd = os.dup(2)
        os.dup2(scratch.fileno(), 2)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        if saved_fd is not None:
            with contextlib.suppress(Exception):
                os.dup2(saved_fd, 2)
                os.close(saved_fd)
        scratch.close()
        restore_bars()
        logging.disable(previous_disable)
        if saved_env is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = saved_env


def silence_progress_bars() -> Callable[[], None]:
    """Switch off the progress bars of transformers and datasets; returns a function that restores them."""
    restore = []
    with contextlib.suppress(Exception):
        from transformers.utils import logging as hf_logging

        if hf_logging.is_progress_bar_enabled():
            hf_logging.disable_progress_bar()
            restore.append(hf_logging.enable_progress_bar)
    with contextlib.suppress(Exception):
        import datasets

        if datasets.is_progress_bar_enabled():
            datasets.disable_progress_bars()
            restore.append(datasets.enable_progress_bars)

    def undo():
        for function in restore:
            with contextlib.suppress(Exception):
                function()

    return undo
