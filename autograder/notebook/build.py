"""Build the instructor notebook from its sources and the student release from the instructor notebook.

The instructor notebook `solutions/hw2_dpo_ppo.ipynb` is generated from the jupytext "percent" files in
`solutions/src/` (read them, edit them, never the JSON). A cell header carries its grading role:

    # %% kind="solution" id="dpo_loss"                 autograded answer (code with solution regions)
    # %% kind="test" id="test_dpo_loss" points=2       autograded test cell (locked, may hold hidden tests)
    # %% [markdown] kind="manual" id="q_truncation" points=0.5    manually graded answer
    # %% kind="readonly" id="config"                   locked cell students must not edit

and the tag `library` marks cells that only define names (imports, helpers, TODO functions): tests,
benchmarks and the grader execute exactly those (see `autograder.notebook.execute`).

The student notebook `hw2_dpo_ppo.ipynb` is what `nbgrader generate_assignment` makes of the instructor
notebook with the shipped `nbgrader_config.py`.

`release --bundle DIR` (what `make release` runs, with `dist/student`) also writes the student bundle, the one
folder to publish to students: the student notebook, `requirements.txt` and a short README (`STUDENT_README`).
Nothing else goes there: no solutions, no `autograder/` package, no hidden tests, no fixtures.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jupytext
import nbformat

from autograder.layout import (
    ASSIGNMENT,
    NBGRADER_CONFIG,
    NOTEBOOK_NAME,
    RELEASE_NOTEBOOK,
    REPO_ROOT,
    SOURCE_NOTEBOOK,
    SOURCE_PARTS_DIR,
)
from autograder.notebook.course import init_course

# The files of the student bundle, in the bundle: the student notebook, the pinned requirements, a README.
BUNDLE_FILES = (NOTEBOOK_NAME, "requirements.txt", "README.md")
STUDENT_README = f"""# Homework 2: align a small language model with DPO and PPO

This folder is the whole assignment:

- `{NOTEBOOK_NAME}`: the notebook. Fill in every `# ========== TODO ==========` cell; do not edit the locked
  test cells. Run it in Colab or Kaggle (a GPU runtime) or on your own machine.
- `requirements.txt`: the packages the notebook needs next to torch. In Colab or Kaggle the notebook's first
  cell installs them; on your own machine run `pip install -r requirements.txt`.

What to hand in:

1. The notebook with your answers, run from top to bottom.
2. Your three checkpoints on the Hugging Face Hub: the notebook pushes `<username>/llm-course-hw2-dpo`,
   `-ppo` and `-reward-model` with their model cards, as **public** repositories so that reviewers can read
   them. If you make them private, share them with the course staff as the notebook explains.
"""
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


def nbgrader_metadata(kind: str, grade_id: str, points: float | None) -> dict:
    """nbgrader cell metadata (schema 3) for one of our cell kinds."""
    flags = {
        "solution": dict(solution=True, grade=False, locked=False),
        "manual": dict(solution=True, grade=True, locked=False),
        "test": dict(solution=False, grade=True, locked=True),
        "readonly": dict(solution=False, grade=False, locked=True),
    }
    if kind not in flags:
        raise ValueError(f"unknown cell kind {kind!r}: use one of {sorted(flags)}")
    meta = {"grade_id": grade_id, "schema_version": 3, "task": False, **flags[kind]}
    if meta["grade"]:
        if points is None:
            raise ValueError(f"graded cell {grade_id!r} needs points=...")
        meta["points"] = points
    return meta


def convert_cell(cell: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Turn jupytext cell metadata (kind/id/points/tags) into clean notebook metadata."""
    source_meta = dict(cell.metadata)
    metadata: dict = {}
    kind = source_meta.pop("kind", None)
    grade_id = source_meta.pop("id", None)
    points = source_meta.pop("points", None)
    tags = source_meta.pop("tags", None)
    source_meta.pop("lines_to_next_cell", None)
    if source_meta:
        raise ValueError(f"unexpected cell metadata {sorted(source_meta)} in cell:\n{cell.source[:200]}")
    if kind is not None:
        if grade_id is None:
            raise ValueError(f"cell of kind {kind!r} has no id:\n{cell.source[:200]}")
        metadata["nbgrader"] = nbgrader_metadata(kind, grade_id, points)
    if tags:
        metadata["tags"] = list(tags)
    if cell.cell_type == "code":
        return nbformat.v4.new_code_cell(cell.source, metadata=metadata)
    return nbformat.v4.new_markdown_cell(cell.source, metadata=metadata)


def build_source_notebook() -> nbformat.NotebookNode:
    """Concatenate `solutions/src/*.py` (sorted by name) into the instructor notebook."""
    parts = sorted(SOURCE_PARTS_DIR.glob("*.py"))
    if not parts:
        raise FileNotFoundError(f"no notebook sources in {SOURCE_PARTS_DIR}")
    cells = []
    for part in parts:
        cells += [convert_cell(c) for c in jupytext.read(part, fmt="py:percent").cells]
    grade_ids = [c.metadata["nbgrader"]["grade_id"] for c in cells if "nbgrader" in c.metadata]
    duplicated = sorted({g for g in grade_ids if grade_ids.count(g) > 1})
    if duplicated:
        raise ValueError(f"duplicated grade ids: {duplicated}")
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata = {"kernelspec": KERNELSPEC, "language_info": {"name": "python"}}
    for index, cell in enumerate(notebook.cells):
        cell["id"] = f"cell-{index:03d}"
    return notebook


def write_notebook(notebook: nbformat.NotebookNode, path: Path) -> None:
    """Write a notebook in a stable form (sorted keys, one trailing newline) so git diffs stay small."""
    path.write_text(json.dumps(notebook, indent=1, sort_keys=True, ensure_ascii=False) + "\n")


def nbgrader_command(*args: str) -> list[str]:
    """An nbgrader command line run by this Python (nbgrader also needs the venv's `alembic` on PATH)."""
    return [sys.executable, "-m", "nbgrader", *args]


def nbgrader_env() -> dict[str, str]:
    """The environment for nbgrader: this Python's bin folder first on PATH (nbgrader calls `alembic`)."""
    return {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}


def generate_release(source: Path, destination: Path) -> None:
    """Run `nbgrader generate_assignment` on `source` in a scratch course and copy the result."""
    with tempfile.TemporaryDirectory() as tmp:
        course = Path(tmp)
        init_course(course, source)
        result = subprocess.run(nbgrader_command("generate_assignment", ASSIGNMENT, "--force", "--no-db"),
                                cwd=course, capture_output=True, text=True, env=nbgrader_env())
        released = course / "release" / ASSIGNMENT / NOTEBOOK_NAME
        if result.returncode != 0 or not released.exists():
            raise RuntimeError(f"nbgrader generate_assignment failed:\n{result.stdout}\n{result.stderr}")
        notebook = nbformat.read(released, as_version=4)
        if "# ========== TODO ==========" not in released.read_text():
            raise RuntimeError(f"nbgrader did not load the kit's configuration {NBGRADER_CONFIG}:\n{result.stderr}")
        write_notebook(notebook, destination)


def build_all(source_out: Path = SOURCE_NOTEBOOK, release_out: Path = RELEASE_NOTEBOOK) -> None:
    """Regenerate the instructor notebook and the student release."""
    write_notebook(build_source_notebook(), source_out)
    generate_release(source_out, release_out)


def write_bundle(destination: Path, notebook: Path = RELEASE_NOTEBOOK) -> list[Path]:
    """Write the student bundle to `destination` (emptied first): `BUNDLE_FILES` and nothing else."""
    destination = Path(destination).resolve()
    if destination in (REPO_ROOT, *REPO_ROOT.parents) or destination == Path.home():
        raise ValueError(f"refusing to empty {destination}: give a folder of its own, such as dist/student")
    if destination.exists():
        shutil.rmtree(destination)
    destination.mkdir(parents=True)
    shutil.copyfile(notebook, destination / NOTEBOOK_NAME)
    shutil.copyfile(REPO_ROOT / "requirements.txt", destination / "requirements.txt")
    (destination / "README.md").write_text(STUDENT_README, encoding="utf-8")
    return [destination / name for name in BUNDLE_FILES]


def run(args: argparse.Namespace) -> int:
    if not args.check:
        build_all()
        print(f"wrote {SOURCE_NOTEBOOK.relative_to(REPO_ROOT)} and {RELEASE_NOTEBOOK.relative_to(REPO_ROOT)}")
        if args.bundle is not None:
            files = write_bundle(args.bundle)
            print(f"student bundle: {', '.join(str(path) for path in files)}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        source, release = Path(tmp) / "source.ipynb", Path(tmp) / "release.ipynb"
        build_all(source, release)
        stale = [str(p.relative_to(REPO_ROOT)) for p, fresh in ((SOURCE_NOTEBOOK, source), (RELEASE_NOTEBOOK, release))
                 if not p.exists() or p.read_text() != fresh.read_text()]
    if stale:
        print(f"out of date: {', '.join(stale)}; run `make release`")
        return 1
    print("notebooks are up to date")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("release", help="build solutions/hw2_dpo_ppo.ipynb and the student release")
    parser.add_argument("--check", action="store_true", help="only check that the committed notebooks are fresh")
    parser.add_argument("--bundle", type=Path, metavar="DIR",
                        help="also write the student bundle (notebook, requirements.txt, README.md) to DIR, "
                             "emptied first (make release: dist/student)")
    parser.set_defaults(func=run)
