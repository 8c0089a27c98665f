"""A real nbgrader round trip on a course folder made by `python -m autograder course`, compared with our CLI.

One class goes through `nbgrader autograde` and `generate_feedback` with credentials in nbgrader's environment,
then through `python -m autograder grade --gradebook`. Besides honest students it holds a cheater whose first
answer cell prints the environment and replaces `autograder.checks.grade_cell`: autograde, whose hidden tests
run in the student's kernel, gives it forged marks (the hole the CLI closes), the CLI its honest ones.
"""
import json
import re
import shutil
import subprocess
import sys

import nbformat
import pytest

from autograder.grading.submission import autograded_tests, fill_answers, solution_answers
from autograder.layout import ASSIGNMENT, NOTEBOOK_NAME, RELEASE_NOTEBOOK, REPO_ROOT
from autograder.notebook.build import nbgrader_command, nbgrader_env
from autograder.notebook.course import init_course

from mutants import MUTANTS

MUTANT = "loss_sign_flipped" if "loss_sign_flipped" in MUTANTS else sorted(MUTANTS)[0]
NOTEBOOK_ID = NOTEBOOK_NAME.removesuffix(".ipynb")
# credentials an instructor may well have in the shell that runs nbgrader
SECRETS = {"HF_TOKEN": "hf_SECRETdoNotLeak0123456789", "HUGGING_FACE_HUB_TOKEN": "hf_SECRETtoo0123456789",
           "WANDB_API_KEY": "wandbSECRET0123456789", "COURSE_DB_PASSWORD": "pwSECRET0123456789",
           "OPENAI_API_KEY": "sk-SECRET0123456789", "AWS_SECRET_ACCESS_KEY": "awsSECRET0123456789"}
CHEATED_ANSWER = "apply_chat_template"  # the cheater answers this one honestly, and nothing else
CHEAT = '''
import os as _os
print("LEAK-PROBE env:", dict(_os.environ))
print("LEAK-PROBE HF_TOKEN:", _os.environ.get("HF_TOKEN"))
try:
    from huggingface_hub import get_token as _get_token
    print("LEAK-PROBE hub token:", _get_token())
except Exception as _error:  # noqa: BLE001
    print("LEAK-PROBE hub:", _error)
try:  # not a leak, a fact: the parent's environment as it started (os.environ edits do not change it)
    with open(f"/proc/{_os.getppid()}/environ", "rb") as _parent:
        print("LEAK-PROBE parent environ has HF_TOKEN:", b"HF_TOKEN=" in _parent.read())
except OSError as _error:
    print("LEAK-PROBE parent:", _error)
try:  # under nbgrader autograde the hidden tests run in this kernel: make each one print nothing (full marks)
    import autograder.checks as _checks
    _checks.grade_cell = lambda grade_id, namespace, context=None: None
except ImportError:
    pass
'''


def nbgrader(course, *args, env):
    run = subprocess.run(nbgrader_command(*args), cwd=course, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def course(fixtures, tmp_path_factory):
    root = tmp_path_factory.mktemp("course")
    init_course(root)
    env = {**nbgrader_env(), "HW2_GRADING_OUTPUT_DIR": str(root / "outputs"), **SECRETS}
    nbgrader(root, "generate_assignment", ASSIGNMENT, "--force", env=env)
    solution = solution_answers()
    mutant = MUTANTS[MUTANT]
    students = {
        "perfect": solution,
        "empty": {},
        "mutant": {**solution, mutant["grade_id"]: mutant["source"]},
        "cheater": {CHEATED_ANSWER: solution[CHEATED_ANSWER] + CHEAT},
    }
    for student, answers in students.items():
        path = root / "submitted" / student / ASSIGNMENT / NOTEBOOK_NAME
        path.parent.mkdir(parents=True)
        nbformat.write(fill_answers(RELEASE_NOTEBOOK, answers), path)
    nbgrader(root, "autograde", ASSIGNMENT, env=env)
    shutil.copy(root / "gradebook.db", root / "autograde-gradebook.db")  # autograde's own scores, kept
    nbgrader(root, "generate_feedback", ASSIGNMENT, env=env)
    return root, students, env


@pytest.fixture(scope="module")
def cli(course, tmp_path_factory):
    """`python -m autograder grade ... --gradebook gradebook.db --seed 0` on the class, then the feedback again."""
    if shutil.which("bwrap") is None:
        pytest.skip("the grading sandbox needs bubblewrap: apt-get install -y bubblewrap")
    root, students, env = course
    out = tmp_path_factory.mktemp("grades")
    run = subprocess.run([sys.executable, "-m", "autograder", "grade", str(root / "submitted"), "--out", str(out),
                          "--jobs", "2", "--seed", "0", "--gradebook", str(root / "gradebook.db")],
                         cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert f"wrote {len(students) * len(autograded_tests())} grades into the nbgrader gradebook" in run.stdout
    nbgrader(root, "generate_feedback", ASSIGNMENT, "--force", "--student", "cheater", env=env)
    records = {student: json.loads((out / f"{student}.json").read_text()) for student in students}
    return out, records


def nbgrader_scores(root, student, db="gradebook.db"):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / db}") as gradebook:
        return {gid: gradebook.find_grade(gid, NOTEBOOK_ID, ASSIGNMENT, student).score for gid in autograded_tests()}


def autograde_scores(root, student):
    """The scores `nbgrader autograde` itself gave (before the CLI wrote its own)."""
    return nbgrader_scores(root, student, "autograde-gradebook.db")


def cli_scores(record):
    return {gid: test["score"] for gid, test in record["tests"].items()}


def test_release_made_in_the_course_matches_the_committed_one(course):
    root, _, _ = course
    released = nbformat.read(root / "release" / ASSIGNMENT / NOTEBOOK_NAME, as_version=4)
    assert released == nbformat.read(RELEASE_NOTEBOOK, as_version=4)


def test_autograde_gives_the_solution_full_marks_and_the_release_zero(course):
    root, _, _ = course
    tests = autograded_tests()
    assert autograde_scores(root, "perfect") == pytest.approx(tests)
    assert sum(autograde_scores(root, "empty").values()) == 0


def test_autograde_gives_partial_credit_to_a_mutant(course):
    root, _, _ = course
    scores, tests = autograde_scores(root, "mutant"), autograded_tests()
    lost = MUTANTS[MUTANT]["loses"]
    assert 0 < scores[lost] < tests[lost], "the visible asserts fail, yet the hidden checks' partial credit counts"
    assert all(scores[gid] == pytest.approx(points) for gid, points in tests.items() if gid != lost)


def test_feedback_is_generated_for_every_student(course):
    root, students, _ = course
    for student in students:
        assert (root / "feedback" / student / ASSIGNMENT / f"{ASSIGNMENT}.html").stat().st_size > 0


def test_autograde_scores_can_be_forged_by_the_submission(course):
    """The hole: the hidden tests run in the student's kernel, so a replaced grade_cell gives full marks."""
    root, _, _ = course
    assert autograde_scores(root, "cheater") == pytest.approx(autograded_tests())


def test_no_credential_reaches_the_autograded_notebook_or_the_feedback(course):
    root, _, _ = course
    autograded = (root / "autograded" / "cheater" / ASSIGNMENT / NOTEBOOK_NAME).read_text()
    feedback = (root / "feedback" / "cheater" / ASSIGNMENT / f"{ASSIGNMENT}.html").read_text()
    for text in (autograded, feedback):
        assert "LEAK-PROBE HF_TOKEN: None" in text, "the probe printed the environment"
        assert "LEAK-PROBE hub token: None" in text, "the Hub found no token either (HF_TOKEN_PATH is a scratch file)"
        for name, secret in SECRETS.items():
            assert secret not in text, f"{name} leaked"


def test_grading_cli_agrees_with_nbgrader_on_honest_students(course, cli):
    root, students, _ = course
    _, records = cli
    for student in students:
        if student != "cheater":
            assert cli_scores(records[student]) == pytest.approx(autograde_scores(root, student)), student


def test_cli_gives_the_cheater_its_honest_scores_in_the_gradebook(course, cli):
    root, _, _ = course
    out, records = cli
    tests = autograded_tests()
    honest = nbgrader_scores(root, "cheater")
    assert honest[f"test_{CHEATED_ANSWER}"] == pytest.approx(tests[f"test_{CHEATED_ANSWER}"])
    assert sum(score for gid, score in honest.items() if gid != f"test_{CHEATED_ANSWER}") == 0
    feedback = (root / "feedback" / "cheater" / ASSIGNMENT / f"{ASSIGNMENT}.html").read_text()
    total = re.search(rf"{NOTEBOOK_ID} \(Score: ([0-9.]+) /", feedback)
    assert total and float(total.group(1)) == pytest.approx(sum(honest.values()), abs=0.01), "feedback uses them"
    for path in out.iterdir():
        assert not any(secret in path.read_text() for secret in SECRETS.values()), path


def test_gradebook_holds_the_cli_scores_of_every_student(course, cli):
    root, students, _ = course
    _, records = cli
    for student in students:
        assert nbgrader_scores(root, student) == pytest.approx(cli_scores(records[student])), student


@pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")  # from nbgrader's add_submission
def test_write_scores_touches_autograded_tests_only_and_warns_about_missing_students(tmp_path, monkeypatch):
    """The gradebook writer alone, on a gradebook built with nbgrader's API (no nbgrader run)."""
    from nbgrader.api import Gradebook

    from autograder.grading.gradebook import write_scores

    monkeypatch.setenv("PATH", nbgrader_env()["PATH"])  # a new gradebook asks `alembic` for its schema version
    path = tmp_path / "gradebook.db"
    with Gradebook(f"sqlite:///{path}") as gradebook:
        gradebook.add_assignment(ASSIGNMENT)
        gradebook.add_notebook(NOTEBOOK_ID, ASSIGNMENT)
        gradebook.add_grade_cell("test_x", NOTEBOOK_ID, ASSIGNMENT, max_score=1, cell_type="code")
        gradebook.add_grade_cell("answer_q", NOTEBOOK_ID, ASSIGNMENT, max_score=1, cell_type="markdown")
        gradebook.add_solution_cell("answer_q", NOTEBOOK_ID, ASSIGNMENT)
        gradebook.add_student("alice")
        gradebook.add_submission(ASSIGNMENT, "alice")
        for grade_id, manual in (("test_x", 0.9), ("answer_q", 0.5)):
            grade = gradebook.find_grade(grade_id, NOTEBOOK_ID, ASSIGNMENT, "alice")
            grade.auto_score, grade.manual_score = 1.0, manual
        gradebook.db.commit()
    records = [{"student": student, "tests": {"test_x": {"score": 0.25}, "answer_q": {"score": 0.0}}}
               for student in ("alice", "bob")]
    written, warnings = write_scores(path, records)
    assert written == 1
    assert len(warnings) == 1 and warnings[0].startswith("bob has no")
    with Gradebook(f"sqlite:///{path}") as gradebook:
        test = gradebook.find_grade("test_x", NOTEBOOK_ID, ASSIGNMENT, "alice")
        answer = gradebook.find_grade("answer_q", NOTEBOOK_ID, ASSIGNMENT, "alice")
        assert (test.auto_score, test.manual_score, test.score) == (0.25, None, 0.25)
        assert (answer.manual_score, answer.score) == (0.5, 0.5), "a manually graded answer is left alone"
