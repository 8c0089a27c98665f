"""The committed notebooks are what the sources generate, and the student release hides every solution."""
import json
import subprocess
import sys

import nbformat
import pytest

from autograder.layout import RELEASE_NOTEBOOK, REPO_ROOT, SOURCE_NOTEBOOK
from autograder.notebook.build import build_source_notebook

PART1_TEST_IDS = [
    "test_apply_chat_template", "test_tokenize_row", "test_pad", "test_pad_collate_fn",
    "test_dpo_loss", "test_get_log_prob", "test_dpo_training",
]


def nbgrader_cells(path):
    return {c.metadata["nbgrader"]["grade_id"]: c for c in nbformat.read(path, 4).cells if "nbgrader" in c.metadata}


def test_committed_notebooks_are_up_to_date():
    result = subprocess.run([sys.executable, "-m", "autograder", "release", "--check"],
                            cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_source_notebook_has_no_outputs_and_stable_ids():
    raw = json.loads(SOURCE_NOTEBOOK.read_text())
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in raw["cells"] if c["cell_type"] == "code")
    assert [c["id"] for c in raw["cells"]] == [c["id"] for c in build_source_notebook().cells]


@pytest.mark.parametrize("grade_id", PART1_TEST_IDS)
def test_release_keeps_test_cells_locked_and_graded(grade_id):
    cell = nbgrader_cells(RELEASE_NOTEBOOK)[grade_id]
    assert cell.metadata["nbgrader"]["locked"] and cell.metadata["nbgrader"]["grade"]
    assert cell.metadata["nbgrader"]["points"] > 0


def test_release_replaces_every_solution_with_a_todo():
    source, release = nbgrader_cells(SOURCE_NOTEBOOK), nbgrader_cells(RELEASE_NOTEBOOK)
    assert source.keys() == release.keys()
    for grade_id, cell in release.items():
        assert "BEGIN SOLUTION" not in cell.source and "BEGIN HIDDEN TESTS" not in cell.source, grade_id
        if cell.metadata["nbgrader"]["solution"] and cell.cell_type == "code":
            assert "todo()" in cell.source and "# ========== TODO ==========" in cell.source, grade_id
    truncation_answer = source["answer_prompt_truncation"].source
    assert truncation_answer not in RELEASE_NOTEBOOK.read_text()


def test_points_per_section_match_the_spec():
    points = {gid: c.metadata["nbgrader"].get("points", 0) for gid, c in nbgrader_cells(SOURCE_NOTEBOOK).items()}
    data_prep = ["test_apply_chat_template", "test_tokenize_row", "test_pad", "test_pad_collate_fn",
                 "answer_prompt_truncation", "answer_prompt_padding"]
    assert sum(points[g] for g in data_prep) == pytest.approx(1)
    assert points["test_dpo_loss"] + points["test_get_log_prob"] == pytest.approx(2)
    assert points["test_dpo_training"] == pytest.approx(2)


def test_student_bundle_holds_exactly_the_public_files(tmp_path):
    from autograder.notebook.build import BUNDLE_FILES, write_bundle

    bundle = tmp_path / "dist" / "student"
    (bundle / "stale").mkdir(parents=True)  # whatever an earlier release left there goes
    write_bundle(bundle)
    assert sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*")) == sorted(BUNDLE_FILES)
    assert (bundle / RELEASE_NOTEBOOK.name).read_text() == RELEASE_NOTEBOOK.read_text()
    assert (bundle / "requirements.txt").read_text() == (REPO_ROOT / "requirements.txt").read_text()
    for path in bundle.iterdir():
        text = path.read_text()
        for secret in ("BEGIN HIDDEN TESTS", "BEGIN SOLUTION", "grade_cell", "autograder", ".fixtures"):
            assert secret not in text, (path.name, secret)
    nbformat.validate(nbformat.read(bundle / RELEASE_NOTEBOOK.name, 4))
    assert "public" in (bundle / "README.md").read_text()
    with pytest.raises(ValueError):
        write_bundle(REPO_ROOT)
