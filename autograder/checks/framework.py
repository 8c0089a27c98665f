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
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

STATUS_PASSED, STATUS_FAILED, STATUS_ERROR = "passed", "failed", "error"


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
        return (f"function `{self.name}` is not defined — did you run its cell / rename it? "
                f"Keep the name and signature given in the notebook.")


class StudentError(Exception):
    """A student function raised an exception."""

    def __init__(self, name: str, error: BaseException, action: str | None = None):
        self.name, self.error = name, error
        self.action = action or f"calling `{name}`"
        super().__init__(f"{name}: {error!r}")

    def feedback(self) -> str:
        message = str(self.error).strip() or "(no message)"
        if isinstance(self.error, NotImplementedError):
            return f"NotImplementedError: {shorten(message, 300)}"
        where = student_frame(self.error)
        return (f"{self.action} raised {type(self.error).__name__}: {shorten(message, 400)}"
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


def lookup(ns: dict, name: str) -> Callable:
    """The callable `name` of the namespace; MissingFunction if there is none."""
    value = ns.get(name)
    if value is None or not callable(value):
        raise MissingFunction(name)
    return value


def rebind(function: Callable, new_globals: dict, old_globals: dict) -> Callable:
    """`function` re-created so that it looks up global names in `new_globals` (if it used `old_globals`).

    A Python function resolves the global names it uses (other notebook functions) in the dict it was
    defined in, its `__globals__`. Copying the namespace is not enough to swap a dependency: the copied
    functions still read the original dict. Re-creating them with the copy as globals is.
    """
    if not isinstance(function, types.FunctionType) or function.__globals__ is not old_globals:
        return function
    clone = types.FunctionType(function.__code__, new_globals, function.__name__, function.__defaults__,
                               function.__closure__)
    clone.__kwdefaults__ = dict(function.__kwdefaults__) if function.__kwdefaults__ else None
    clone.__dict__.update(function.__dict__)
    clone.__qualname__, clone.__doc__ = function.__qualname__, function.__doc__
    return clone


def rebound_namespace(ns: dict, overrides: dict | None = None) -> dict:
    """A copy of `ns` whose functions use the copy as globals, with `overrides` put in place.

    Every plain function defined in the notebook (its globals are `ns`) is re-created on the copy, so a
    function of the copy that calls `get_log_prob` calls `overrides["get_log_prob"]` when given. Decorated
    functions (whose wrapper was defined elsewhere) keep their original globals.
    """
    copy = dict(ns)
    for name, value in ns.items():
        copy[name] = rebind(value, copy, ns)
    copy.update(overrides or {})
    return copy


def student(ns: dict, name: str, isolate: dict | None = None) -> Callable:
    """The student's function `name`, wrapped so that any exception it raises becomes a StudentError.

    `isolate` maps names of other functions to reference implementations the student function should call
    instead of the student's own, so that a bug graded elsewhere is not punished twice.
    """
    function = lookup(ns, name)
    if isolate:
        function = rebound_namespace(ns, isolate).get(name, function)

    def call(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as error:  # noqa: BLE001 (anything the student's code does is reported)
            raise StudentError(name, error) from error

    return call


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
    kind: str  # "passed", "wrong", "missing", "exception", "internal"
    message: str = ""


@dataclass
class CheckResult:
    grade_id: str
    score: float
    max_score: float
    status: str  # "passed" | "failed" | "error"
    feedback: str
    cases: list[CaseResult] = field(default_factory=list)


def run_case(case: Case, ns: dict, context) -> CaseResult:
    """Run one case, turning every outcome into a CaseResult (never raises, except KeyboardInterrupt)."""
    import torch

    try:
        with torch.random.fork_rng(devices=[]), torch.enable_grad(), contextlib.redirect_stdout(io.StringIO()):
            torch.manual_seed(0)
            case.run(ns, context)
    except (KeyboardInterrupt, SystemExit):
        raise
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
    return CaseResult(case.name, case.weight, True, "passed")


def run_check(check: Check, ns: dict, context) -> CheckResult:
    """Run every case of `check` against the namespace `ns`.

    The cases run on one CPU thread: their tensors are tiny, and on a busy machine several threads per
    process spend more time waiting for each other than computing (ten times slower on 2 shared cores).
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = [run_case(case, ns, context) for case in check.cases]
    finally:
        torch.set_num_threads(threads)
    total = sum(r.weight for r in results)
    passed = sum(r.weight for r in results if r.passed)
    score = round(check.points * passed / total, 6) if total else 0.0
    if passed == total:
        status = STATUS_PASSED
    elif any(r.kind in ("missing", "exception", "internal") for r in results):
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
