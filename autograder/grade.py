"""`python -m autograder grade PATH... --out DIR [--jobs N] [--timeout S]`: grade a class of submissions.

Each submission is graded by `autograder.worker` in its own process: a scratch HOME and working folder, no
credentials in its environment, the Hub and W&B offline, an address-space limit, one thread, a wall-clock
limit, and (when the grader runs as root) an unprivileged user that cannot write to the kit or the fixtures.
Whatever a submission does, the others are graded normally, and its own result says what happened.

Outputs in DIR: `<student>.json` (the grading JSON), `<student>.feedback.md` and `grades.csv`.
"""
import argparse
import csv
import functools
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from autograder.notebook import grading_env
from autograder.paths import REPO_ROOT
from autograder.release import ASSIGNMENT
from autograder.submission import autograded_tests

UNPRIVILEGED_UID = 65534  # nobody
KEPT_VARIABLES = ("PATH", "LANG", "LC_ALL", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


@dataclass(frozen=True)
class Submission:
    student: str
    notebook: Path


def find_submissions(paths: list[Path]) -> list[Submission]:
    """Notebooks named on the command line or found under folders (nbgrader's submitted/<student>/<assignment>/ too).

    The student id is the folder above `<assignment>/` when the notebook sits in nbgrader's layout, else the
    notebook's file name without `.ipynb`.
    """
    notebooks = []
    for path in paths:
        if path.is_dir():
            notebooks += sorted(p for p in path.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
        elif path.suffix == ".ipynb" and path.is_file():
            notebooks.append(path)
        else:
            raise SystemExit(f"error: {path} is neither a notebook (.ipynb) nor a folder of notebooks")
    submissions, seen = [], set()
    for notebook in notebooks:
        parent = notebook.parent
        student = parent.parent.name if parent.name == ASSIGNMENT else notebook.stem
        if student in seen:
            raise SystemExit(f"error: two submissions map to the student id {student!r}; grade them separately")
        seen.add(student)
        submissions.append(Submission(student, notebook.resolve()))
    return submissions


def sandbox_env(home: Path) -> dict[str, str]:
    """A minimal environment: no tokens or keys, offline Hub and W&B, one thread, scratch HOME."""
    env = {key: os.environ[key] for key in KEPT_VARIABLES if key in os.environ}
    env.update(grading_env(home / "outputs"))
    env.update({
        "HOME": str(home), "TMPDIR": str(home), "HF_HOME": str(home / "hf"), "MPLCONFIGDIR": str(home / "mpl"),
        "PYTHONPATH": str(REPO_ROOT), "WANDB_DISABLED": "true",
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1",
    })
    return env


def limit_child(memory_gb: float, drop_privileges: bool):
    """preexec_fn for the worker: new session (so the whole group can be killed), memory cap, no root."""
    def apply():
        os.setsid()
        limit = int(memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if drop_privileges:
            os.setgroups([])
            os.setgid(UNPRIVILEGED_UID)
            os.setuid(UNPRIVILEGED_UID)
    return apply


@functools.cache
def can_drop_privileges() -> bool:
    """Whether the worker can run as `nobody`: we are root and that user can start this Python."""
    if os.geteuid() != 0:
        return False
    try:
        probe = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True, cwd="/",
                               preexec_fn=limit_child(memory_gb=8, drop_privileges=True))
    except OSError:
        return False
    return probe.returncode == 0


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def finish_missing(result: dict, tests: dict[str, float], status: str, reason: str) -> dict:
    """Give every test the worker did not reach an honest status and explanation."""
    for gid, points in tests.items():
        if gid not in result["tests"]:
            result["tests"][gid] = {"score": 0.0, "max_score": points, "status": status, "feedback": f"[{gid}] {reason}"}
    result["score"] = round(sum(t["score"] for t in result["tests"].values()), 6)
    return result


def extra_credit_tests(tests: dict[str, float]) -> set[str]:
    """The grade ids of the starred tasks: their points come on top of `max_score`."""
    from autograder.checks import all_checks

    checks = all_checks()
    return {gid for gid in tests if gid in checks and checks[gid].extra_credit}


def grade_one(
    submission: Submission, tests: dict[str, float], timeout: float, check_timeout: float, memory_gb: float,
    extra_credit: frozenset[str] = frozenset(),
) -> dict:
    """Grade one submission in a sandboxed worker process and return its grading JSON (`tests`: id -> points).

    `score` sums every test; `max_score` leaves out the `extra_credit` tests, whose points are summed in
    `extra_credit_max` and whose entries carry `"extra_credit": true`.
    """
    drop = can_drop_privileges()
    home = Path(tempfile.mkdtemp(prefix=f"hw2-grade-{submission.student}-"))
    try:
        notebook = home / "submission.ipynb"
        shutil.copy(submission.notebook, notebook)
        result_path = home / "result.json"
        if drop:
            for path in (home, notebook):
                os.chown(path, UNPRIVILEGED_UID, UNPRIVILEGED_UID)
        start = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "autograder.worker", str(notebook), str(result_path), str(check_timeout)],
            cwd=home, env=sandbox_env(home), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, preexec_fn=limit_child(memory_gb, drop),
        )
        try:
            code = process.wait(timeout=timeout)
            status, reason = "error", (
                f"grading stopped before this test: the process ended with code {code}"
                + (" (killed: probably out of memory)" if code == -signal.SIGKILL else "")
                + " while running your code; earlier tests kept their results"
            )
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            status, reason = "timeout", f"not reached: the whole submission ran longer than {timeout:g} s"
        try:
            result = json.loads(result_path.read_text())
        except (OSError, ValueError):
            result = {"tests": {}, "notes": ["the grading process ended before it could start the checks"]}
        result = {
            "score": 0.0, "max_score": sum(points for gid, points in tests.items() if gid not in extra_credit),
            "extra_credit_max": sum(points for gid, points in tests.items() if gid in extra_credit),
            "tests": {gid: entry for gid, entry in result.get("tests", {}).items() if gid in tests},
            "notes": [str(note) for note in result.get("notes", [])][:20],
        }
        result = finish_missing(result, tests, status, reason)
        result["tests"] = {gid: result["tests"][gid] for gid in tests}
        for gid in extra_credit:
            result["tests"][gid]["extra_credit"] = True
        result.update(student=submission.student, submission=str(submission.notebook),
                      submission_sha256=digest(submission.notebook), seconds=round(time.perf_counter() - start, 1))
        return result
    finally:
        shutil.rmtree(home, ignore_errors=True)


def feedback_markdown(result: dict) -> str:
    lines = [f"# Feedback for {result['student']}", "",
             f"Automatic score: **{result['score']:g} / {result['max_score']:g}**"
             + (f", starred tasks included (up to {result['extra_credit_max']:g} extra points)"
                if result.get("extra_credit_max") else "")
             + " (manually graded answers not included)", ""]
    for note in result.get("notes", []):
        lines.append(f"> {note}")
    lines += ["", "| test | score | status |", "| --- | --- | --- |"]
    lines += [f"| `{gid}`{' (extra credit)' if t.get('extra_credit') else ''} | {t['score']:g} / {t['max_score']:g} "
              f"| {t['status']} |" for gid, t in result["tests"].items()]
    for gid, test in result["tests"].items():
        lines += ["", f"## {gid}", "", "```", test["feedback"], "```"]
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, results: list[dict], tests: list[str]) -> None:
    with open(out / "grades.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["student", "score", "max_score", *tests])
        for result in sorted(results, key=lambda r: r["student"]):
            writer.writerow([result["student"], result["score"], result["max_score"],
                             *(result["tests"][gid]["score"] for gid in tests)])


def previous_result(out: Path, submission: Submission, tests: dict[str, float]) -> dict | None:
    """The stored result of an unchanged submission graded with the same tests, for resuming."""
    path = out / f"{submission.student}.json"
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    fresh = result.get("submission_sha256") == digest(submission.notebook) and set(result.get("tests", {})) == set(tests)
    return result if fresh else None


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    tests = autograded_tests()
    extra_credit = frozenset(extra_credit_tests(tests))
    submissions = find_submissions(args.paths)
    if not submissions:
        print("error: no submissions (.ipynb files) found")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    results, todo = [], []
    for submission in submissions:
        stored = None if args.force else previous_result(args.out, submission, tests)
        (results.append(stored) if stored else todo.append(submission))
    if len(todo) < len(submissions):
        print(f"{len(submissions) - len(todo)} submissions already graded (use --force to grade them again)")

    def grade_and_save(submission: Submission) -> dict:
        result = grade_one(submission, tests, args.timeout, args.check_timeout, args.memory_gb, extra_credit)
        (args.out / f"{submission.student}.json").write_text(json.dumps(result, indent=1))
        (args.out / f"{submission.student}.feedback.md").write_text(feedback_markdown(result))
        return result

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool, tqdm(total=len(todo), desc="grading", unit="nb") as bar:
        for result in pool.map(grade_and_save, todo):
            results.append(result)
            bar.set_postfix(last=f"{result['student']} {result['score']:g}/{result['max_score']:g}")
            bar.update(1)
    write_outputs(args.out, results, list(tests))
    width = max(len(r["student"]) for r in results)
    print(f"\n{'student':<{width}}  score")
    for result in sorted(results, key=lambda r: r["student"]):
        print(f"{result['student']:<{width}}  {result['score']:g} / {result['max_score']:g}")
    if todo:
        print(f"\ngraded {len(todo)} submissions in {time.perf_counter() - start:.1f} s with {args.jobs} job(s); "
              f"results in {args.out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("grade", help="grade submissions in sandboxed processes")
    parser.add_argument("paths", nargs="+", type=Path, help="submission notebooks or folders of them")
    parser.add_argument("--out", type=Path, required=True, help="folder for <student>.json, feedback and grades.csv")
    parser.add_argument("--jobs", type=int, default=1, help="submissions graded in parallel")
    parser.add_argument("--timeout", type=float, default=600, help="wall-clock seconds per submission")
    parser.add_argument("--check-timeout", type=float, default=120, help="seconds per hidden check")
    parser.add_argument("--memory-gb", type=float, default=8, help="address-space limit per submission")
    parser.add_argument("--force", action="store_true", help="grade again submissions graded before")
    parser.set_defaults(func=run)
