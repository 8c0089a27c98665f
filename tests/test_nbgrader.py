"""A real nbgrader round trip on a course folder made by `python -m autograder course`, compared with our CLI."""
import json
import subprocess
import sys

import nbformat
import pytest

from autograder.course import init_course
from autograder.mutants import MUTANTS
from autograder.paths import REPO_ROOT
from autograder.release import ASSIGNMENT, NOTEBOOK_NAME, RELEASE_NOTEBOOK, nbgrader_command, nbgrader_env
from autograder.submission import autograded_tests, fill_answers, solution_answers

MUTANT = "loss_sign_flipped" if "loss_sign_flipped" in MUTANTS else sorted(MUTANTS)[0]


def nbgrader(course, *args, env):
    run = subprocess.run(nbgrader_command(*args), cwd=course, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def course(fixtures, tmp_path_factory):
    root = tmp_path_factory.mktemp("course")
    init_course(root)
    env = {**nbgrader_env(), "HW2_GRADING_OUTPUT_DIR": str(root / "outputs")}
    nbgrader(root, "generate_assignment", ASSIGNMENT, "--force", env=env)
    solution = solution_answers()
    mutant = MUTANTS[MUTANT]
    students = {
        "perfect": solution,
        "empty": {},
        "mutant": {**solution, mutant["grade_id"]: mutant["source"]},
    }
    for student, answers in students.items():
        path = root / "submitted" / student / ASSIGNMENT / NOTEBOOK_NAME
        path.parent.mkdir(parents=True)
        nbformat.write(fill_answers(RELEASE_NOTEBOOK, answers), path)
    nbgrader(root, "autograde", ASSIGNMENT, env=env)
    nbgrader(root, "generate_feedback", ASSIGNMENT, env=env)
    return root, students


def nbgrader_scores(root, student):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        return {gid: gradebook.find_grade(gid, NOTEBOOK_NAME.removesuffix(".ipynb"), ASSIGNMENT, student).score
                for gid in autograded_tests()}


def test_release_made_in_the_course_matches_the_committed_one(course):
    root, _ = course
    released = nbformat.read(root / "release" / ASSIGNMENT / NOTEBOOK_NAME, as_version=4)
    assert released == nbformat.read(RELEASE_NOTEBOOK, as_version=4)


def test_autograde_gives_the_solution_full_marks_and_the_release_zero(course):
    root, _ = course
    tests = autograded_tests()
    assert nbgrader_scores(root, "perfect") == pytest.approx(tests)
    assert sum(nbgrader_scores(root, "empty").values()) == 0


def test_autograde_gives_partial_credit_to_a_mutant(course):
    root, _ = course
    scores, tests = nbgrader_scores(root, "mutant"), autograded_tests()
    lost = MUTANTS[MUTANT]["loses"]
    assert 0 < scores[lost] < tests[lost], "the visible asserts fail, yet the hidden checks' partial credit counts"
    assert all(scores[gid] == pytest.approx(points) for gid, points in tests.items() if gid != lost)


def test_feedback_is_generated_for_every_student(course):
    root, students = course
    for student in students:
        assert (root / "feedback" / student / ASSIGNMENT / f"{ASSIGNMENT}.html").stat().st_size > 0


def test_grading_cli_agrees_with_nbgrader(course, tmp_path):
    root, students = course
    out = tmp_path / "grades"
    run = subprocess.run([sys.executable, "-m", "autograder", "grade", str(root / "submitted"), "--out", str(out),
                          "--jobs", "2"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    for student in students:
        ours = {gid: t["score"] for gid, t in json.loads((out / f"{student}.json").read_text())["tests"].items()}
        assert ours == pytest.approx(nbgrader_scores(root, student)), student
