"""`python -m autograder grade PATH... --out DIR`: grade a class of submissions, each in its own sandbox.

Outputs in DIR: `<student>.json` (the grading JSON), `<student>.feedback.md` and `grades.csv`, all written
from the same records. A bad file in one student's folder is that student's problem, never the batch's.
"""
import argparse
import secrets
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from autograder.grading import result as results
from autograder.grading.judge import JudgeSettings, Submission, grader_key, judge, start_sandbox
from autograder.grading.sandbox import INSTALL_HINT, bwrap_path, clean_leftovers, namespace_problem
from autograder.layout import ASSIGNMENT, NOTEBOOK_NAME


def student_of(candidate: Path, root: Path | None) -> str:
    """The student a notebook belongs to: in nbgrader's layout, the folder above the OUTERMOST assignment folder
    between `root` (the folder named on the command line, itself included) and the notebook; elsewhere the
    notebook's name.

    The outermost, not the nearest: a student's own folder may hold anything, including a folder
    `<classmate>/hw2_dpo_ppo/hw2_dpo_ppo.ipynb` or a notebook named `<someone>.ipynb`, and must not be able to
    submit for a classmate or invent a student (a folder named like the assignment that holds the students'
    folders is not nbgrader's layout: name `submitted/` or the student folders themselves).
    """
    if root is None:
        parent = candidate.parent
        return parent.parent.name if parent.name == ASSIGNMENT else candidate.stem
    base = root.absolute()
    folders = [base] + [base.joinpath(*candidate.relative_to(root).parts[:i + 1])
                        for i in range(len(candidate.relative_to(root).parts) - 1)]
    for folder in folders:
        if folder.name == ASSIGNMENT:
            return folder.parent.name
    return candidate.stem


def unusable(path: Path, found_in_folder: bool) -> str | None:
    """Why a notebook file cannot be graded, or None. A link found in a student's folder is never followed: it
    could point at the instructor's solution or at a classmate's notebook on the grading machine."""
    if found_in_folder and path.is_symlink():
        return "a symbolic link, not a notebook"
    if not path.is_file():
        return "not a readable file (a broken link or a special file)"
    return None


def find_submissions(paths: list[Path]) -> tuple[list[Submission], list[str]]:
    """Submissions named on the command line or found under folders, and warnings about what was skipped.

    In nbgrader's layout (`<student>/<assignment>/*.ipynb`) the student id is the folder above the
    assignment (see `student_of`), and a student with several notebooks is graded on `hw2_dpo_ppo.ipynb` (the
    one nearest to the assignment folder; else the first one by name), the others named in a note. Elsewhere
    the id is the notebook's name. A `.ipynb` that is a link (found in a folder), a broken link or not a
    regular file gives that student an error result; a folder named `*.ipynb` is skipped.
    """
    found: dict[str, list[tuple[Path, bool]]] = {}
    warnings = []
    for path in paths:
        if path.is_dir():
            candidates = sorted(p for p in path.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
            root = path
        elif path.suffix == ".ipynb" and (path.is_file() or path.is_symlink()):
            candidates, root = [path], None
        else:
            warnings.append(f"skipped {path}: neither a notebook (.ipynb) nor a folder of notebooks")
            continue
        for candidate in candidates:
            if candidate.is_dir() and not candidate.is_symlink():
                warnings.append(f"skipped the folder {candidate}: its name ends in .ipynb")
                continue
            found.setdefault(student_of(candidate, root), []).append((candidate, root is not None))
    submissions = []
    for student, entries in sorted(found.items()):
        problems = {path: unusable(path, in_folder) for path, in_folder in entries}
        candidates = [path for path, _ in entries]
        readable = [p for p in candidates if problems[p] is None]
        notes = [f"{p.name!r} is {problems[p]} and was ignored" for p in candidates if problems[p] and readable]
        if not readable:
            first = candidates[0]
            submissions.append(Submission(student, first, f"the submission {first.name!r} is {problems[first]}: "
                                                           "submit the notebook itself"))
            continue
        chosen = min(readable, key=lambda p: (p.name != NOTEBOOK_NAME, len(p.parts), str(p)))
        extra = [p.name if p.parent == chosen.parent else str(p) for p in readable if p != chosen]
        if extra:
            notes.append(f"graded {chosen.name}; also found and ignored: {', '.join(repr(e) for e in extra)}")
        submissions.append(Submission(student, chosen.resolve(), None, notes))
    return submissions, warnings


def setup_problems(unsafe: bool) -> list[str]:
    """What is wrong with the grader's own setup (each a sentence with the fix), before any grading."""
    from autograder.fixtures.build import fixture_paths
    from autograder.layout import SOURCE_NOTEBOOK

    problems = []
    if not unsafe and bwrap_path() is None:
        problems.append(INSTALL_HINT)
    elif not unsafe and (problem := namespace_problem()) is not None:
        problems.append(problem)
    tiny = fixture_paths().tiny
    if not (tiny / "config.json").is_file():
        problems.append(f"the grading fixtures are missing ({tiny}): build them with `python -m autograder fixtures`")
    try:
        from autograder.grading.submission import autograded_tests

        if not autograded_tests():
            problems.append(f"the instructor notebook {SOURCE_NOTEBOOK} has no autograded test cells")
    except Exception as error:  # noqa: BLE001
        problems.append(f"the instructor notebook {SOURCE_NOTEBOOK} cannot be read ({error}): run "
                        "`python -m autograder release`")
    return problems


_WORKER_STATE: dict = {}


def _init_worker(tests, extra_credit, settings, key) -> None:
    """Set up a judge process: launch its sandbox zygote, which imports the libraries while this process imports
    the checks' own; the judge's own library warnings and progress bars are of no use to anyone."""
    import logging
    import os
    import warnings

    from autograder.grading.sandbox import die_with_parent

    die_with_parent()  # a judge process never outlives the CLI (and its sandboxes die with it)
    start_sandbox(settings)
    os.environ["TQDM_DISABLE"] = "1"
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    _WORKER_STATE.update(tests=tests, extra_credit=extra_credit, settings=settings, key=key)


def _judge_in_worker(submission: Submission) -> dict:
    state = _WORKER_STATE
    try:
        return judge(submission, state["tests"], state["extra_credit"], state["settings"], state["key"])
    except Exception as error:  # noqa: BLE001 (a grader bug: this submission gets an honest error, others go on)
        entries = {gid: results.test_entry(p, 0, "error", f"[{gid}] internal error of the grader "
                                                          f"({type(error).__name__}: {error}); tell the course staff")
                   for gid, p in state["tests"].items()}
        return results.record(submission.student, submission.notebook, state["tests"], entries,
                              state["extra_credit"], ["internal error of the grader"], 0.0, state["key"])


def grade_all(todo: list[Submission], jobs: int, initargs: tuple):
    """Judge every submission in `jobs` judge processes and yield their records as they finish.

    A judge process that dies (killed for memory, say) never takes the batch with it: its submissions are
    graded again one at a time, and the one that kills a judge of its own gets an error record.
    """
    import multiprocessing
    from concurrent.futures.process import BrokenProcessPool

    queue, solo = list(todo), jobs <= 1
    while queue:
        workers = 1 if solo else jobs
        pool = ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=initargs,
                                   mp_context=multiprocessing.get_context("spawn"))
        futures = [(submission, pool.submit(_judge_in_worker, submission)) for submission in queue]
        queue, culprit_found = [], False
        for submission, future in futures:
            try:
                yield future.result()
            except BrokenProcessPool:
                if solo and not culprit_found:  # one judge, in order: this submission was running
                    culprit_found = True
                    yield crashed_judge_record(submission, initargs)
                else:
                    queue.append(submission)
        pool.shutdown(wait=True, cancel_futures=True)
        solo = True


def crashed_judge_record(submission: Submission, initargs: tuple) -> dict:
    tests, extra_credit, _, key = initargs
    message = ("the grading process died while judging this submission (out of memory?); it was graded "
               "alone and died again, so nothing could be checked: ask the course staff")
    entries = {gid: results.test_entry(p, 0, "error", f"[{gid}] {message}") for gid, p in tests.items()}
    return results.record(submission.student, submission.notebook, tests, entries, extra_credit, [message], 0.0, key)


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    problems = setup_problems(args.unsafe_no_sandbox)
    if problems:
        print("error: grading cannot start:\n" + "\n".join(f"  - {p}" for p in problems), file=sys.stderr)
        return 2
    if args.gradebook is not None and not args.gradebook.is_file():
        print(f"error: no nbgrader gradebook at {args.gradebook}: run `nbgrader autograde` in the course folder "
              "first (it creates gradebook.db there)", file=sys.stderr)
        return 2
    if args.unsafe_no_sandbox:
        print("WARNING: --unsafe-no-sandbox: submissions run WITHOUT isolation; their grades can be forged",
              file=sys.stderr)
    clean_leftovers()
    from autograder.checks import all_checks
    from autograder.grading.submission import autograded_tests

    tests = autograded_tests()
    checks = all_checks()
    extra_credit = {gid for gid in tests if gid in checks and checks[gid].extra_credit}
    submissions, warnings = find_submissions(args.paths)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if not submissions:
        print("error: no submissions (.ipynb files) found", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    key = grader_key()
    done, todo = [], []
    for submission in submissions:
        previous = None
        if not args.force and submission.problem is None:
            previous = results.stored(args.out, submission.student, submission.notebook, tests, key)
        (done.append(previous) if previous else todo.append(submission))
    if done:
        print(f"{len(done)} submissions already graded (use --force to grade them again)")
    salt = args.seed if args.seed is not None else secrets.randbelow(2**31)
    settings = JudgeSettings(args.timeout, args.check_timeout, args.memory_gb, args.unsafe_no_sandbox, salt)
    start = time.perf_counter()
    with tqdm(total=len(todo), desc="grading", unit="nb") as bar:
        for record in grade_all(todo, args.jobs, (tests, extra_credit, settings, key)):
            results.save(args.out, record)
            done.append(record)
            bar.set_postfix(last=f"{record['student']} {record['score']:g}/{record['max_score']:g}")
            bar.update(1)
    clean_leftovers()
    results.write_csv(args.out, done, list(tests))
    width = max(len(r["student"]) for r in done)
    print(f"\n{'student':<{width}}  score")
    for record in sorted(done, key=lambda r: r["student"]):
        print(f"{record['student']:<{width}}  {record['score']:g} / {record['max_score']:g}"
              + (f" (+ up to {record['extra_credit_max']:g} extra)" if record.get("extra_credit_max") else ""))
    print("\n".join(["", *results.points_sentence(done[0].get("points"))]))
    if todo:
        print(f"\ngraded {len(todo)} submissions in {time.perf_counter() - start:.1f} s with {args.jobs} job(s); "
              f"results in {args.out}")
    if args.gradebook is not None:
        from autograder.grading.gradebook import write_scores

        written, gradebook_warnings = write_scores(args.gradebook, done)
        for warning in gradebook_warnings:
            print(f"warning: {warning}", file=sys.stderr)
        print(f"wrote {written} grades into the nbgrader gradebook {args.gradebook}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("grade", help="grade submissions, each in its own sandbox")
    parser.add_argument("paths", nargs="+", type=Path, help="submission notebooks or folders of them")
    parser.add_argument("--out", type=Path, required=True, help="folder for <student>.json, feedback and grades.csv")
    parser.add_argument("--jobs", type=int, default=1, help="submissions graded in parallel")
    parser.add_argument("--timeout", type=float, default=600, help="wall-clock seconds per submission")
    parser.add_argument("--check-timeout", type=float, default=120,
                        help="seconds for one call of the student's code (a check has several)")
    parser.add_argument("--memory-gb", type=float, default=8, help="address-space limit per submission")
    parser.add_argument("--force", action="store_true", help="grade again submissions graded before")
    parser.add_argument("--seed", type=int, default=None,
                        help="fix the random inputs of the checks (default: new ones each run)")
    parser.add_argument("--unsafe-no-sandbox", action="store_true",
                        help="run submissions without bubblewrap (their grades can be forged; marked in every output)")
    parser.add_argument("--gradebook", type=Path, default=None,
                        help="nbgrader's gradebook.db: write these scores over `nbgrader autograde`'s (whose hidden "
                             "tests run in the student's kernel and can be forged); run after autograde")
    parser.set_defaults(func=run)
