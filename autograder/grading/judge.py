"""Grade one submission: read -> assemble -> execute -> judge, the trusted side of the sandbox.

The judge never runs the student's code: it starts a sandbox that executes the assembled cells, asks it to
call the student's functions on inputs made here, and judges the data that comes back with the checks of
`autograder.checks`. A check that hangs or crashes the sandbox costs that check only: the sandbox is started
again for the next one (a few times at most).

Each judge process has one sandbox zygote (`autograder.grading.sandbox.Zygote`), started with the process, which
imports the libraries and loads the grading model once; every submission runs in a fresh, private child of it,
which is killed with everything it started before the next one is forked.
"""
import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from autograder.grading import result as results
from autograder.grading.remote import ExerciseFailure
from autograder.grading.sandbox import UNSAFE_WARNING, SandboxRunner, SandboxSettings, seconds, zygote_for


@dataclass
class JudgeSettings:
    timeout: float = 600.0  # seconds for the whole submission
    check_timeout: float = 120.0  # seconds for one request to the sandbox
    memory_gb: float = 8.0
    unsafe_no_sandbox: bool = False
    run_salt: int = 0  # varies the random inputs of the checks


@dataclass
class Submission:
    student: str
    notebook: Path | None
    problem: str | None = None  # why it cannot be graded (a broken link...), for that student's feedback
    notes: list[str] = field(default_factory=list)


def sandbox_settings(settings: JudgeSettings, context) -> SandboxSettings:
    from autograder.fixtures.build import fixture_paths
    from autograder.notebook.execute import grading_env

    environment = grading_env(Path("/scratch/outputs"))
    environment.pop("PYTHONPATH", None)
    return SandboxSettings(read_only=[fixture_paths().root, context.shared_dir], environment=environment,
                           memory_gb=settings.memory_gb, request_timeout=settings.check_timeout,
                           unsafe_no_sandbox=settings.unsafe_no_sandbox, preload=context.preload())


def start_sandbox(settings: JudgeSettings) -> None:
    """Launch this judge process's sandbox zygote now, so that its imports run beside the judge's own."""
    from autograder.checks.context import default_context

    zygote_for(sandbox_settings(settings, default_context()))


def grader_key() -> str:
    """Changes whenever the grader's code, the instructor notebook or the grading fixtures change."""
    from autograder.fixtures.build import fixture_paths
    from autograder.layout import PACKAGE_DIR, REPO_ROOT, SOURCE_NOTEBOOK

    digest = hashlib.sha256()
    files = sorted(PACKAGE_DIR.rglob("*.py")) + [SOURCE_NOTEBOOK]  # every module, in every subpackage
    tiny = fixture_paths().tiny
    files += sorted(p for p in tiny.glob("*") if p.is_file()) if tiny.is_dir() else []
    for path in files:
        digest.update(str(path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path.name).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def judge(submission: Submission, tests: dict[str, float], extra_credit: set[str], settings: JudgeSettings,
          key: str) -> dict:
    """The grading JSON of one submission (never raises for anything the submission does)."""
    from autograder.checks import all_checks
    from autograder.checks.context import default_context
    from autograder.checks.framework import run_check, set_run_salt
    from autograder.grading.submission import assemble, read_answers

    start, cpu_start = time.perf_counter(), time.process_time()
    notes = list(submission.notes)
    if settings.unsafe_no_sandbox:
        notes.insert(0, UNSAFE_WARNING)

    timings: dict = {}

    def finish(entries: dict) -> dict:
        return results.record(submission.student, submission.notebook, tests, entries, extra_credit, notes,
                              time.perf_counter() - start, key, timings)

    # read
    try:
        if submission.problem:
            raise ValueError(submission.problem)
        answers = read_answers(submission.notebook)
    except ValueError as error:
        notes.append(str(error))
        return finish({gid: results.test_entry(p, 0, "error", f"[{gid}] {error}") for gid, p in tests.items()})
    # assemble
    assembly = assemble(answers)
    cells = [{"source": c.source, "name": c.name, "provided": c.grade_id is None} for c in assembly.cells]
    notes += [f"the answer cell '{gid}' is missing from the submission (deleted or its metadata changed)"
              for gid in assembly.missing_answers]
    # execute
    context = default_context()
    set_run_salt(settings.run_salt)
    checks = all_checks()
    entries: dict[str, dict] = {}
    deadline = time.monotonic() + settings.timeout
    timings["prepare_s"] = round(time.perf_counter() - start, 2)
    timings["cached_references"] = context.cached_count()  # 0 for the first submission of this judge process
    with SandboxRunner(sandbox_settings(settings, context)) as runner:
        started = time.perf_counter()
        try:
            notes += runner.start(cells)
        except ExerciseFailure as failure:
            notes.append(f"your notebook's cells could not be run: {failure}")
        timings["sandbox_start_s"] = round(time.perf_counter() - started, 2)
        timings["sandbox"] = dict(runner.timings)
        timings["checks_s"], timings["checks_waited_s"], timings["checks_mb"] = {}, {}, {}
        # judge
        for grade_id, points in tests.items():
            left = deadline - time.monotonic()
            if left <= 1:
                entries[grade_id] = results.test_entry(
                    points, 0, "timeout", f"[{grade_id}] not reached: the whole submission ran longer than "
                                          f"{settings.timeout:g} s")
                continue
            runner.settings.request_timeout = min(settings.check_timeout, left)
            if grade_id not in checks:
                entries[grade_id] = results.test_entry(points, 0, "error", f"[{grade_id}] this grader has no "
                                                                             "automatic check for this test")
                continue
            started, traffic = time.perf_counter(), dict(vars(runner.traffic))
            check = run_check(checks[grade_id], runner, context)
            timings["checks_s"][grade_id] = round(time.perf_counter() - started, 2)
            timings["checks_waited_s"][grade_id] = round(runner.traffic.waited_s - traffic["waited_s"], 2)
            timings["checks_mb"][grade_id] = round((runner.traffic.sent + runner.traffic.received
                                                    - traffic["sent"] - traffic["received"]) / 1e6, 1)
            feedback = check.feedback
            if check.status != "passed" and notes:
                feedback += "\n  note: " + "\n  note: ".join(notes)
            entries[grade_id] = results.test_entry(points, check.score, check.status, feedback)
        timings["judge_cpu_s"] = round(time.process_time() - cpu_start, 2)
        timings["sandbox"]["cpu_s"] = seconds(runner.exercise_cpu_s)
    return finish(entries)
