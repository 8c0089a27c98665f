"""A real nbgrader round trip on a course folder made by `python -m autograder course`, compared with our CLI.

One class goes through `nbgrader autograde` and `generate_feedback` with credentials in nbgrader's environment
and a Hub token file in the instructor's home, then through `python -m autograder grade --gradebook`. Besides
honest students it holds a cheater whose first answer cell looks for those credentials everywhere it can
(variables, every visible process's environment, the token file) and replaces `autograder.checks.grade_cell`.
The kernel is sandboxed, so it finds nothing; but the hidden tests still run in that kernel, so autograde
gives it forged marks (the hole the CLI closes), and the CLI gives it its honest ones.
"""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

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
TOKEN_FILE_SECRET = "hf_SECRETinTheTokenFile0123456789"
CHEATED_ANSWER = "apply_chat_template"  # the cheater answers this one honestly, and nothing else
CHEAT_TEMPLATE = '''
import os as _os
print("LEAK-PROBE env:", dict(_os.environ))
print("LEAK-PROBE HF_TOKEN:", _os.environ.get("HF_TOKEN"))
try:
    from huggingface_hub import get_token as _get_token
    print("LEAK-PROBE hub token:", _get_token())
except Exception as _error:  # noqa: BLE001
    print("LEAK-PROBE hub:", _error)
import glob as _glob
_environs = []
for _path in _glob.glob("/proc/[0-9]*/environ"):  # every process it can see, nbgrader's own included
    try:
        with open(_path, "rb") as _file:
            _environs.append(_file.read())
    except OSError:
        pass
print("LEAK-PROBE processes seen:", len(_environs), "with HF_TOKEN:", sum(b"HF_TOKEN=" in _e for _e in _environs))
try:  # the instructor's Hub login, at the path the test gives it (a student would guess ~/.cache/...)
    print("LEAK-PROBE token file:", open({token_file!r}).read())
except OSError as _error:
    print("LEAK-PROBE token file unreadable:", type(_error).__name__)
try:  # under nbgrader autograde the hidden tests run in this kernel: make each one print nothing (full marks)
    import autograder.checks as _checks
    _checks.grade_cell = lambda grade_id, namespace, context=None: None
except ImportError:
    pass
'''


def cheat(token_file):
    return CHEAT_TEMPLATE.replace("{token_file!r}", repr(str(token_file)))


def nbgrader(course, *args, env):
    run = subprocess.run(nbgrader_command(*args), cwd=course, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def course(fixtures, tmp_path_factory):
    if shutil.which("bwrap") is None:
        pytest.skip("nbgrader's kernel runs in the grading sandbox, which needs bubblewrap: apt-get install -y bubblewrap")
    root = tmp_path_factory.mktemp("course")
    init_course(root)
    home = tmp_path_factory.mktemp("instructor-home")  # logged in to the Hub, as an instructor would be
    token_file = home / ".cache" / "huggingface" / "token"
    token_file.parent.mkdir(parents=True)
    token_file.write_text(TOKEN_FILE_SECRET)
    env = {**nbgrader_env(), "HOME": str(home), "HW2_GRADING_OUTPUT_DIR": str(root / "outputs"), **SECRETS}
    nbgrader(root, "generate_assignment", ASSIGNMENT, "--force", env=env)
    solution = solution_answers()
    mutant = MUTANTS[MUTANT]
    students = {
        "perfect": solution,
        "empty": {},
        "mutant": {**solution, mutant["grade_id"]: mutant["source"]},
        "cheater": {CHEATED_ANSWER: solution[CHEATED_ANSWER] + cheat(token_file)},
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
    """The kernel nbgrader starts is sandboxed (autograder/grading/kernel.py): no variable, no process, no file."""
    root, _, _ = course
    autograded = (root / "autograded" / "cheater" / ASSIGNMENT / NOTEBOOK_NAME).read_text()
    feedback = (root / "feedback" / "cheater" / ASSIGNMENT / f"{ASSIGNMENT}.html").read_text()
    for text in (autograded, feedback):
        assert "LEAK-PROBE HF_TOKEN: None" in text, "the probe printed the environment"
        assert "LEAK-PROBE hub token: None" in text, "the Hub found no token either"
        assert "with HF_TOKEN: 0" in text, "no process the kernel can see (nbgrader included) holds the token"
        assert "LEAK-PROBE token file unreadable: FileNotFoundError" in text, "the instructor's home is not there"
        for name, secret in {**SECRETS, "token file": TOKEN_FILE_SECRET}.items():
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


def refused_autograde(tmp_path, **env):
    """`nbgrader autograde` in a fresh course folder with `env` changed: (exit code, last output line)."""
    init_course(tmp_path / "course")
    run = subprocess.run(nbgrader_command("autograde", ASSIGNMENT), cwd=tmp_path / "course", capture_output=True,
                         text=True, env={**nbgrader_env(), "HW2_GRADING_OUTPUT_DIR": str(tmp_path / "out"), **env})
    return run.returncode, (run.stdout + run.stderr).strip().splitlines()[-1]


def test_autograde_refuses_to_start_without_fixtures(tmp_path):
    code, message = refused_autograde(tmp_path, HW2_FIXTURES_DIR=str(tmp_path / "no-fixtures"))
    assert code != 0
    assert "fixtures are missing" in message and "python -m autograder fixtures" in message


def test_autograde_refuses_to_start_without_the_sandbox(tmp_path):
    venv_only = str(Path(sys.executable).parent)  # nbgrader's own tools, and no bwrap
    code, message = refused_autograde(tmp_path, PATH=venv_only)
    assert code != 0
    assert "apt-get install -y bubblewrap" in message and "HW2_UNSAFE_NO_SANDBOX=1" in message


def run_grading_kernel(connection_file, cwd):
    return subprocess.run([sys.executable, "-m", "autograder.grading.kernel", str(connection_file)], cwd=cwd,
                          capture_output=True, text=True, env={**nbgrader_env(), "PYTHONPATH": str(REPO_ROOT)},
                          timeout=60)


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap: apt-get install -y bubblewrap")
def test_grading_kernel_refuses_network_sockets_and_too_wide_a_folder(tmp_path):
    """The sandboxed kernel has no network, so TCP cannot work; and it must not be handed `/` as its folder."""
    connection = {"transport": "tcp", "ip": "127.0.0.1", "shell_port": 5000, "key": "k"}
    (tmp_path / "tcp.json").write_text(json.dumps(connection))
    run = run_grading_kernel(tmp_path / "tcp.json", tmp_path)
    assert run.returncode != 0 and "c.KernelManager.transport = 'ipc'" in run.stderr
    (tmp_path / "ipc.json").write_text(json.dumps({**connection, "transport": "ipc", "ip": str(tmp_path / "k")}))
    run = run_grading_kernel(tmp_path / "ipc.json", "/")
    assert run.returncode == 2 and "too wide" in run.stderr


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap: apt-get install -y bubblewrap")
def test_grading_kernel_stops_and_cleans_up_when_nbgrader_dies(tmp_path):
    """nbgrader killed mid-run: its sandboxed kernel must not live on, and its scratch folder must go."""
    import os
    import signal
    import tempfile
    import time

    connection = {"transport": "ipc", "ip": str(tmp_path / "kernel"), "key": "k", "signature_scheme": "hmac-sha256",
                  **{f"{name}_port": port for port, name in enumerate(("shell", "iopub", "stdin", "control", "hb"), 1)}}
    (tmp_path / "connection.json").write_text(json.dumps(connection))
    (tmp_path / "work").mkdir()
    launcher = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-m', 'autograder.grading.kernel', "
                f"{str(tmp_path / 'connection.json')!r}]); time.sleep(600)")
    parent = subprocess.Popen([sys.executable, "-c", launcher], cwd=tmp_path / "work",
                              env={**nbgrader_env(), "PYTHONPATH": str(REPO_ROOT)})
    deadline = time.monotonic() + 120
    while not (tmp_path / "kernel-1").exists() and time.monotonic() < deadline:  # the kernel bound its sockets
        time.sleep(0.5)
    assert (tmp_path / "kernel-1").exists(), "the sandboxed kernel did not start"
    try:
        wrapper = next(int(pid) for pid in os.listdir("/proc") if pid.isdigit()
                       and Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[1:3]
                       == [b"-m", b"autograder.grading.kernel"]
                       and f"{tmp_path}".encode() in Path(f"/proc/{pid}/cmdline").read_bytes())
        scratch = list(Path(tempfile.gettempdir()).glob(f"hw2-kernel-{wrapper}-*"))
        assert scratch, "the wrapper's scratch folder"
    finally:
        parent.send_signal(signal.SIGKILL)  # nbgrader dies
        parent.wait()
    deadline = time.monotonic() + 30
    while Path(f"/proc/{wrapper}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not Path(f"/proc/{wrapper}").exists() or b"zombie" in Path(f"/proc/{wrapper}/status").read_bytes().lower()
    assert not any(path.exists() for path in scratch), "the scratch folder is removed"
    leftovers = [pid for pid in os.listdir("/proc") if pid.isdigit()
                 and f"{tmp_path}".encode() in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert leftovers == [], "no process of the sandbox is left"
