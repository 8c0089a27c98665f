"""The grading CLI on real submissions: correct, empty, broken and adversarial ones, graded side by side."""
import json
import shutil
import subprocess
import sys

import nbformat
import pytest

from autograder.checks import all_checks
from autograder.grading.submission import autograded_tests, fill_answers, graded_by_hand, solution_answers
from autograder.layout import RELEASE_NOTEBOOK, REPO_ROOT

SOLUTION = solution_answers()

if shutil.which("bwrap") is None:
    pytest.skip("the grading sandbox needs bubblewrap: apt-get install -y bubblewrap", allow_module_level=True)


def extra_credit_tests(tests):
    checks = all_checks()
    return {gid for gid in tests if checks[gid].extra_credit}

ADVERSARIAL = {
    # an endless loop inside a graded function: that test times out, the others are graded
    "loops": {"pad": "def pad(tensors, padding_value=0, padding_side='right'):\n    while True:\n        pass\n"},
    # kills the grading process from inside dpo_loss: tests graded before keep their points
    "exits": {"dpo_loss": "import os\n\ndef dpo_loss(*args, **kwargs):\n    os._exit(3)\n"},
    # a wrong dpo_loss that monkeypatches torch in its own process: the judge, in another process, is untouched
    "patches_torch": {"dpo_loss": (
        "import torch\ntorch.allclose = lambda *a, **k: True\ntorch.isclose = lambda a, b, **k: torch.ones_like(a, dtype=torch.bool)\n"
        "def dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):\n"
        "    zero = chosen_logps.sum() * 0\n    return zero, zero, zero\n"
    )},
    # floods the output and asks for far too much memory at the top level of an answer cell
    "floods_and_hogs": {"pad_collate_fn": SOLUTION["pad_collate_fn"] + (
        "\nprint('spam ' * 10_000_000)\ntry:\n    hog = bytearray(64 * 2**30)\nexcept MemoryError:\n    pass\n"
    )},
    # calls exit() at the top level of an answer cell
    "sys_exit": {"tokenize_row": SOLUTION["tokenize_row"] + "\nimport sys\nsys.exit(0)\n"},
}


def write_submission(folder, student, answers, delete_tests=False):
    notebook = fill_answers(RELEASE_NOTEBOOK, answers)
    if delete_tests:
        notebook.cells = [c for c in notebook.cells if not c.metadata.get("nbgrader", {}).get("grade")]
    path = folder / student / "hw2_dpo_ppo" / "hw2_dpo_ppo.ipynb"
    path.parent.mkdir(parents=True)
    nbformat.write(notebook, path)
    return path


@pytest.fixture(scope="module")
def graded(fixtures, tmp_path_factory):
    submitted = tmp_path_factory.mktemp("submitted")
    write_submission(submitted, "perfect", SOLUTION)
    write_submission(submitted, "empty", {})
    write_submission(submitted, "no_tests", SOLUTION, delete_tests=True)
    for student, answers in ADVERSARIAL.items():
        write_submission(submitted, student, {**SOLUTION, **answers})
    (submitted / "garbage" / "hw2_dpo_ppo").mkdir(parents=True)
    (submitted / "garbage" / "hw2_dpo_ppo" / "hw2_dpo_ppo.ipynb").write_text("{ not json")
    out = tmp_path_factory.mktemp("grades")
    command = [sys.executable, "-m", "autograder", "grade", str(submitted), "--out", str(out), "--jobs", "2",
               "--check-timeout", "20", "--timeout", "300", "--seed", "0"]
    run = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    return run, out, command


def result(out, student):
    return json.loads((out / f"{student}.json").read_text())


def test_cli_exits_zero_and_writes_every_result(graded):
    run, out, _ = graded
    assert run.returncode == 0, run.stderr[-2000:]
    students = {"perfect", "empty", "no_tests", "garbage", *ADVERSARIAL}
    assert {p.stem for p in out.glob("*.json")} == students
    assert {p.name.removesuffix(".feedback.md") for p in out.glob("*.feedback.md")} == students
    rows = (out / "grades.csv").read_text().splitlines()
    assert rows[0].split(",")[:3] == ["student", "score", "max_score"] and len(rows) == len(students) + 1


def test_grading_json_schema(graded):
    _, out, _ = graded
    data, tests = result(out, "perfect"), autograded_tests()
    assert set(data) >= {"score", "max_score", "extra_credit_max", "tests"}
    assert list(data["tests"]) == list(tests)
    for entry in data["tests"].values():
        assert set(entry) - {"extra_credit"} == {"score", "max_score", "status", "feedback"}
        assert entry["status"] in {"passed", "failed", "error", "timeout"}
    starred = {gid for gid, entry in data["tests"].items() if entry.get("extra_credit")}
    assert starred == extra_credit_tests(tests)
    assert data["max_score"] == pytest.approx(sum(p for gid, p in tests.items() if gid not in starred))
    assert data["extra_credit_max"] == pytest.approx(sum(tests[gid] for gid in starred))


def test_one_definition_of_the_maximum_in_json_feedback_and_nbgrader(graded):
    """The JSON's `points`, the feedback's sentence and nbgrader's maximum (every graded cell) agree."""
    _, out, _ = graded
    data = result(out, "perfect")
    points = data["points"]
    assert points["autograded"] == data["max_score"] and points["starred"] == data["extra_credit_max"]
    assert points["homework"] == pytest.approx(points["autograded"] + points["by_hand"])
    every_graded_cell = {**autograded_tests(), **graded_by_hand()}  # what nbgrader sums up
    assert points["nbgrader_max"] == pytest.approx(sum(every_graded_cell.values()))
    assert points["bonus"] == pytest.approx(graded_by_hand()["bonus_model_cards"])
    feedback = (out / "perfect.feedback.md").read_text()
    assert f"The homework is out of {points['homework']:g} points" in feedback
    assert f"its total is out of {points['nbgrader_max']:g}" in feedback


def test_solution_gets_full_marks_and_release_gets_zero(graded):
    _, out, _ = graded
    perfect, empty = result(out, "perfect"), result(out, "empty")
    assert perfect["score"] == pytest.approx(perfect["max_score"] + perfect["extra_credit_max"])
    assert all(t["status"] == "passed" for t in perfect["tests"].values())
    assert empty["score"] == 0 and empty["max_score"] == perfect["max_score"]
    assert "not written yet" in empty["tests"]["test_dpo_loss"]["feedback"]


def test_deleting_test_cells_changes_nothing(graded):
    _, out, _ = graded
    assert result(out, "no_tests")["score"] == pytest.approx(result(out, "perfect")["score"])


def test_a_judge_reuses_its_references_and_each_submission_keeps_its_grade(graded):
    """Two judge processes grade the nine submissions in order, so the later ones (`perfect` among them) are
    compared with references an earlier, wrong or broken, submission's grading computed."""
    _, out, _ = graded
    timings = {path.stem: json.loads(path.read_text())["timings"] for path in out.glob("*.json")}
    first = [student for student, t in timings.items() if t.get("cached_references") == 0]
    assert len(first) <= 2, first  # one first submission per judge process
    perfect, patched = result(out, "perfect"), result(out, "patches_torch")
    assert timings["perfect"]["cached_references"] > 0 and timings["patches_torch"]["cached_references"] > 0
    assert perfect["score"] == pytest.approx(perfect["max_score"] + perfect["extra_credit_max"])
    assert patched["tests"]["test_dpo_loss"]["status"] == "failed"
    assert all(t["status"] == "passed" for gid, t in patched["tests"].items() if gid != "test_dpo_loss")


def test_unreadable_notebook_is_reported_not_fatal(graded):
    _, out, _ = graded
    garbage = result(out, "garbage")
    assert garbage["score"] == 0
    assert all(t["status"] == "error" and "cannot be read" in t["feedback"] for t in garbage["tests"].values())


def test_endless_loop_times_out_only_its_own_test(graded):
    _, out, _ = graded
    loops = result(out, "loops")
    assert loops["tests"]["test_pad"]["status"] == "timeout"
    assert loops["tests"]["test_dpo_loss"]["status"] == "passed"


def test_exiting_process_keeps_earlier_results(graded):
    _, out, _ = graded
    exits = result(out, "exits")
    order = list(autograded_tests())
    before = order[: order.index("test_dpo_loss")]
    assert all(exits["tests"][gid]["status"] == "passed" for gid in before)
    assert exits["tests"]["test_dpo_loss"]["status"] == "error" and exits["tests"]["test_dpo_loss"]["score"] == 0
    assert "stopped" in exits["tests"]["test_dpo_loss"]["feedback"]
    after = order[order.index("test_dpo_loss") + 1:]
    assert all(exits["tests"][gid]["status"] == "passed" for gid in after), "the sandbox is restarted"


def test_monkeypatching_torch_does_not_buy_points(graded):
    _, out, _ = graded
    patched = result(out, "patches_torch")
    assert patched["tests"]["test_dpo_loss"]["score"] < patched["tests"]["test_dpo_loss"]["max_score"] / 2
    assert patched["tests"]["test_get_log_prob"]["status"] == "passed"


def test_output_flood_memory_hog_and_exit_are_contained(graded):
    _, out, _ = graded
    full_marks = result(out, "perfect")["score"]
    assert result(out, "floods_and_hogs")["score"] == pytest.approx(full_marks)
    sys_exit = result(out, "sys_exit")
    assert sys_exit["score"] == pytest.approx(full_marks)
    assert any("SystemExit" in note for note in sys_exit["notes"])


def test_regrading_resumes_unless_forced(graded):
    _, out, command = graded
    before = (out / "perfect.json").stat().st_mtime_ns
    again = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    assert again.returncode == 0 and "already graded" in again.stdout
    assert (out / "perfect.json").stat().st_mtime_ns == before


def run_cli(args, env_changes, tmp_path):
    import os

    env = {**os.environ, **env_changes}
    return subprocess.run([sys.executable, "-m", "autograder", "grade", *args, "--out", str(tmp_path / "out")],
                          cwd=REPO_ROOT, capture_output=True, text=True, env=env)


def test_grading_refuses_to_start_without_fixtures(tmp_path):
    notebook = write_submission(tmp_path / "submitted", "alice", {})
    run = run_cli([str(notebook)], {"HW2_FIXTURES_DIR": str(tmp_path / "no-fixtures")}, tmp_path)
    assert run.returncode == 2
    assert "python -m autograder fixtures" in run.stderr and not (tmp_path / "out").exists()


def test_grading_refuses_to_start_without_bubblewrap(tmp_path):
    notebook = write_submission(tmp_path / "submitted", "alice", {})
    run = run_cli([str(notebook)], {"PATH": str(tmp_path)}, tmp_path)
    assert run.returncode == 2 and "apt-get install -y bubblewrap" in run.stderr


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process."""
    from pathlib import Path

    table = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            args = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        table[int(proc.name)] = (parent, args)
    return table


def sandboxes_under(grader_pid: int) -> list[int]:
    """The sandbox processes started by the grader's judge processes: each judge's bubblewrap zygote (named by
    its scratch folder on its command line) and every process under it (the children it forked)."""
    table = process_table()

    def descendants(roots: set[int]) -> set[int]:
        family, grew = set(roots), True
        while grew:
            grew = False
            for pid, (parent, _) in table.items():
                if parent in family and pid not in family:
                    family.add(pid)
                    grew = True
        return family

    family = descendants({grader_pid})
    return sorted(descendants({pid for pid in family if any(f"hw2-sandbox-{judge}-" in table[pid][1]
                                                            for judge in family)}))


def forked_children(pids: list[int]) -> list[int]:
    """The processes among `pids` forked by a zygote for a submission (a zygote's command line, and so its
    children's, names the zygote module; the first of them is the zygote itself)."""
    table = process_table()
    return [pid for pid in pids if pid in table and "hw2_exercise.zygote" in table[pid][1]
            and "hw2_exercise.zygote" in table.get(table[pid][0], (0, ""))[1]]


def sandbox_scratches(pids: list[int]) -> set[str]:
    """The scratch folders named on the command lines of these sandbox processes (one per zygote)."""
    import re

    table = process_table()
    return {match for pid in pids if pid in table for match in re.findall(r"hw2-sandbox-\d+-[^/\s]+", table[pid][1])}


def test_a_killed_grader_leaves_no_sandbox_and_the_next_run_cleans_up(tmp_path):
    """Killed while a child of its zygote runs a submission: the zygote, the child and all under them die."""
    import tempfile
    import time
    from pathlib import Path

    from autograder.grading.sandbox import SCRATCH_PREFIX, clean_leftovers

    write_submission(tmp_path / "submitted", "a_sleeper", {"pad": "import time\ntime.sleep(120)\n"})
    write_submission(tmp_path / "submitted", "b_next", {})
    before = set(Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*"))
    grader = subprocess.Popen([sys.executable, "-m", "autograder", "grade", str(tmp_path / "submitted"), "--out",
                               str(tmp_path / "out"), "--jobs", "1"], cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline, sandboxes = time.monotonic() + 240, []
        while not forked_children(sandboxes) and time.monotonic() < deadline:
            time.sleep(0.5)
            sandboxes = sandboxes_under(grader.pid)
        time.sleep(1)
        sandboxes = sandboxes_under(grader.pid)
        assert forked_children(sandboxes), "the grader's zygote never forked the submission's process"
        assert len(sandbox_scratches(sandboxes)) == 1, "one zygote per judge process"
    finally:
        grader.kill()
        grader.wait()
    deadline = time.monotonic() + 20
    while any(Path(f"/proc/{pid}").exists() for pid in sandboxes) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(Path(f"/proc/{pid}").exists() for pid in sandboxes), "a sandbox process outlived the grader"
    leftovers = set(Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*")) - before
    assert leftovers, "a killed grader leaves its scratch folder (the next run removes it)"
    clean_leftovers()
    assert not any(path.exists() for path in leftovers)


# Every place where a submission could leave something for the next one: a file in every folder it can write
# to (on every writable mount, after trying to unmount its private tmpfs mounts and to make the shared ones
# writable again, also from a user namespace of its own), files through the root folders of other processes
# (/proc/PID/root), a daemon that goes on planting them, writable shared memory, the nice value and autogroup of
# its process group and session, an environment variable, attributes of torch, of builtins and of the exercise's
# own module, a module of its own in sys.modules; it also sends SIGTERM to its whole process group (the
# zygote's, if it shared it: the one-zygote assertion below would then fail). The cell plants them all after
# checking that none is there yet; `pad` is right only while the cell's own markers are in place (so the
# markers demonstrably work) and nothing of an earlier submission was found.
LEAK_MARKERS = """
import builtins, ctypes, os, pathlib, signal, sys, time, types
import torch
import hw2_exercise.resources as _exercise_module

_MARKER = "hw2-leak-marker"
_libc = ctypes.CDLL(None, use_errno=True)

def _writable_folders():
    folders = []
    for line in open("/proc/self/mountinfo"):
        mount, options = line.split()[4:6]
        if "rw" not in options.split(",") or mount.startswith(("/proc", "/sys")):
            continue
        device = os.stat(mount).st_dev
        for root, dirs, _ in os.walk(mount):
            dirs[:] = [d for d in dirs if os.lstat(os.path.join(root, d)).st_dev == device]
            if os.access(root, os.W_OK) and _MARKER not in root:
                folders.append(root)
    return sorted(set(folders))

def _through_other_roots():
    me = os.readlink("/proc/self")  # this process's number as /proc counts (its namespace may be another)
    return [f"/proc/{pid}/root/{folder}" for pid in os.listdir("/proc") if pid.isdigit() and pid != me
            for folder in ("tmp", "scratch", "dev/shm")]

def _unmount_private_mounts():
    for path in ("/scratch", "/tmp", "/dev/shm"):
        _libc.umount2(path.encode(), 2)
    if os.fork() == 0:  # the same from a user and mount namespace of its own, planting where it worked
        try:
            _libc.unshare(0x10000000 | 0x00020000)
            _plant([path for path in ("/scratch", "/tmp", "/dev/shm") if _libc.umount2(path.encode(), 2) == 0])
            _plant([path for path in ("/", "/dev")  # MS_REMOUNT | MS_BIND: writable again?
                    if _libc.mount(None, path.encode(), None, 0x20 | 0x1000, None) == 0])
        finally:
            os._exit(0)
    os.wait()

def _plant(folders):
    for folder in folders:
        try:
            pathlib.Path(folder, _MARKER).write_text("planted")
        except OSError:
            pass

def _shared_pages():
    pages = []
    for line in open("/proc/self/maps"):
        span, mode = line.split()[:2]
        if mode[1] == "w" and mode[3] == "s":
            pages.append(int(span.split("-")[0], 16))
    return pages

def _plant_in_shared_memory():
    with open("/proc/self/mem", "r+b", buffering=0) as memory:
        for address in _shared_pages():
            memory.seek(address)
            memory.write(_MARKER.encode())

def _markers_found():
    found = [os.path.join(f, _MARKER) for f in _writable_folders() if os.path.exists(os.path.join(f, _MARKER))]
    with open("/proc/self/mem", "rb", buffering=0) as memory:
        for address in _shared_pages():
            memory.seek(address)
            found += ["shared memory"] * (memory.read(len(_MARKER)) == _MARKER.encode())
    found += [f"nice {os.getpriority(os.PRIO_PROCESS, 0)}"] * (os.getpriority(os.PRIO_PROCESS, 0) != _NICE)
    found += [f"autogroup {open('/proc/self/autogroup').read().split()[-1]}"] * (
        open("/proc/self/autogroup").read().split()[-1] != "0")
    found += ["environment variable"] * ("HW2_LEAK_MARKER" in os.environ)
    found += ["torch attribute"] * hasattr(torch, "hw2_leak_marker")
    found += ["builtins attribute"] * hasattr(builtins, "hw2_leak_marker")
    found += ["exercise module attribute"] * hasattr(_exercise_module, "hw2_leak_marker")
    found += ["module"] * ("hw2_leak_module" in sys.modules)
    return found

_NICE = 0
_unmount_private_mounts()
_LEFT_BY_EARLIER = _markers_found() + [os.path.join(p, _MARKER) for p in _through_other_roots()
                                        if os.path.exists(os.path.join(p, _MARKER))]
_FOLDERS = _writable_folders()
_plant(_FOLDERS + _through_other_roots())
if os.fork() == 0:  # a daemon that goes on planting for a minute
    try:
        os.setsid()
        if os.fork() == 0:
            for _ in range(300):
                _plant(_FOLDERS + _through_other_roots())
                time.sleep(0.2)
    finally:
        os._exit(0)
os.wait()
_plant_in_shared_memory()
for _renice in (lambda: os.setpriority(os.PRIO_PGRP, 0, 7), lambda: open("/proc/self/autogroup", "w").write("13")):
    try:  # the process group and the session: its own, or the zygote's and so the next submission's
        _renice()
    except OSError:
        pass
_NICE = os.getpriority(os.PRIO_PROCESS, 0)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
os.kill(0, signal.SIGTERM)  # every process of its process group: the zygote too, if it shared it
os.environ["HW2_LEAK_MARKER"] = "planted"
torch.hw2_leak_marker = builtins.hw2_leak_marker = _exercise_module.hw2_leak_marker = True
sys.modules["hw2_leak_module"] = types.ModuleType("hw2_leak_module")
_PLANTED = _markers_found()
_right_pad = pad

def pad(*args, **kwargs):
    if _LEFT_BY_EARLIER:
        raise RuntimeError(f"found what an earlier submission left: {_LEFT_BY_EARLIER}")
    if _markers_found() != _PLANTED or len(_PLANTED) < 8:  # (autogroup and nice markers may be its own)
        raise RuntimeError(f"the markers of this submission did not stay in place: {_markers_found()}")
    return _right_pad(*args, **kwargs)
"""


def test_submissions_of_one_judge_share_nothing_and_leave_nothing(tmp_path):
    """One judge process (--jobs 1) grades two submissions that plant markers everywhere, then an unreadable
    one. Each runs in its own child of the judge's one zygote and finds nothing of the one before; after the
    run no sandbox process and no scratch folder is left."""
    import tempfile
    import time
    from pathlib import Path

    from autograder.grading.sandbox import SCRATCH_PREFIX

    for student in ("a_leaker", "b_leaker"):
        write_submission(tmp_path / "submitted", student, {**SOLUTION, "pad": SOLUTION["pad"] + LEAK_MARKERS})
    (tmp_path / "submitted" / "z_garbage" / "hw2_dpo_ppo").mkdir(parents=True)
    (tmp_path / "submitted" / "z_garbage" / "hw2_dpo_ppo" / "hw2_dpo_ppo.ipynb").write_text("{ not json")
    before = set(Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*"))
    grader = subprocess.Popen([sys.executable, "-m", "autograder", "grade", str(tmp_path / "submitted"), "--out",
                               str(tmp_path / "out"), "--jobs", "1", "--seed", "0"], cwd=REPO_ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    pids, scratches = set(), set()
    while grader.poll() is None:  # the zygote lives as long as its judge process
        found = sandboxes_under(grader.pid)
        pids |= set(found)
        scratches |= sandbox_scratches(found)
        time.sleep(0.2)
    assert grader.returncode == 0, grader.stderr.read()[-2000:]
    assert len(scratches) == 1, f"expected the one zygote of the one judge process, saw {scratches}"
    for student in ("a_leaker", "b_leaker"):
        graded = result(tmp_path / "out", student)
        assert graded["timings"]["sandbox"]["forked"], f"{student}'s process was not forked by the zygote"
        assert graded["tests"]["test_pad"]["status"] == "passed", graded["tests"]["test_pad"]["feedback"]
        assert graded["score"] == pytest.approx(graded["max_score"] + graded["extra_credit_max"])
    assert "zygote" in result(tmp_path / "out", "a_leaker")["timings"]["sandbox"]
    assert "zygote" not in result(tmp_path / "out", "b_leaker")["timings"]["sandbox"]
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids), "a sandbox process outlived the grader"
    assert set(Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*")) <= before, "a scratch folder was left"
    assert not Path(tempfile.gettempdir(), "hw2-leak-marker").exists(), "a marker reached the machine's /tmp"


def test_unsafe_no_sandbox_grades_but_marks_every_output(tmp_path):
    from autograder.grading.sandbox import UNSAFE_WARNING

    notebook = write_submission(tmp_path / "submitted", "alice", {"pad": SOLUTION["pad"]})
    run = run_cli([str(notebook), "--unsafe-no-sandbox", "--seed", "0"], {}, tmp_path)
    assert run.returncode == 0 and "WITHOUT isolation" in run.stderr
    alice = json.loads((tmp_path / "out" / "alice.json").read_text())
    assert alice["tests"]["test_pad"]["status"] == "passed" and alice["tests"]["test_dpo_loss"]["score"] == 0
    assert alice["notes"][0] == UNSAFE_WARNING
    assert UNSAFE_WARNING in (tmp_path / "out" / "alice.feedback.md").read_text()
