"""A student's submission as the grader sees it: the instructor's cells with the student's answers put in.

Like `nbgrader autograde`, the grader never trusts the submitted notebook for anything but the answer cells:
setup, helpers and tests come from the instructor notebook, matched by nbgrader grade id. Deleting or
rewriting a test cell therefore changes nothing.
"""
import json
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from autograder.layout import LIBRARY_TAG, SOURCE_NOTEBOOK


def grade_id(cell: nbformat.NotebookNode) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def is_answer_cell(cell: nbformat.NotebookNode) -> bool:
    """An autograded answer: a code cell the student writes (nbgrader solution, not a graded cell)."""
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return cell.get("cell_type") == "code" and meta.get("solution", False) and not meta.get("grade", False)


def autograded_tests(source: Path = SOURCE_NOTEBOOK) -> dict[str, float]:
    """Autograded test cells of the instructor notebook: grade id -> points, in notebook order."""
    return graded_cells("code", source)


def graded_by_hand(source: Path = SOURCE_NOTEBOOK) -> dict[str, float]:
    """Graded cells of the instructor notebook that a person grades (written answers, the bonus): id -> points."""
    return graded_cells("markdown", source)


def graded_cells(cell_type: str, source: Path) -> dict[str, float]:
    notebook = nbformat.read(source, as_version=4)
    return {
        grade_id(cell): float(cell.metadata["nbgrader"]["points"])
        for cell in notebook.cells
        if cell.cell_type == cell_type and cell.metadata.get("nbgrader", {}).get("grade")
    }


def read_answers(path: Path) -> dict[str, str]:
    """The student's answer cells by grade id. Raises ValueError with a readable reason if the file is broken."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        cells = raw["cells"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"the notebook file cannot be read as a Jupyter notebook ({error})") from error
    if not isinstance(cells, list):
        raise ValueError("the notebook file cannot be read as a Jupyter notebook (its 'cells' are not a list)")
    answers = {}
    for cell in cells:
        answer = _answer(cell)
        if answer is not None:
            answers[answer[0]] = answer[1]
    return answers


def _answer(cell) -> tuple[str, str] | None:
    """(grade id, source) of a well-formed answer cell; None for any other cell, malformed ones included (a
    metadata that is not a dict, a source of numbers...): such an answer counts as missing."""
    try:
        if not (isinstance(cell, dict) and is_answer_cell(cell)):
            return None
        gid, source = grade_id(cell), cell.get("source", "")
    except (AttributeError, TypeError):
        return None
    if not isinstance(gid, str) or not gid:
        return None
    if isinstance(source, list) and all(isinstance(line, str) for line in source):
        return gid, "".join(source)
    return (gid, source) if isinstance(source, str) else None


@dataclass
class AssembledCell:
    """One cell to execute: its origin (`grade_id` of a student answer, or None for instructor code)."""

    source: str
    name: str
    grade_id: str | None = None


@dataclass
class Assembly:
    cells: list[AssembledCell]
    missing_answers: list[str] = field(default_factory=list)


def assemble(answers: dict[str, str], source: Path = SOURCE_NOTEBOOK) -> Assembly:
    """The library cells of the instructor notebook, with each answer cell replaced by the student's version.

    An answer cell the submission lacks keeps the release stub behaviour: its functions are left undefined,
    and the checks report them as missing.
    """
    notebook = nbformat.read(source, as_version=4)
    cells, missing = [], []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code" or LIBRARY_TAG not in cell.metadata.get("tags", []):
            continue
        if is_answer_cell(cell):
            gid = grade_id(cell)
            if gid in answers:
                cells.append(AssembledCell(answers[gid], f"your answer cell '{gid}'", gid))
            else:
                missing.append(gid)
        else:
            cells.append(AssembledCell(cell.source, f"instructor cell {index} ({grade_id(cell) or 'setup'})"))
    return Assembly(cells, missing)


def without_solution_markers(source: str) -> str:
    """An instructor answer cell as a student would hand it in: the solution without nbgrader's markers."""
    return "\n".join(line for line in source.splitlines() if line.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION"))


def solution_answers(source: Path = SOURCE_NOTEBOOK) -> dict[str, str]:
    """The instructor's answer cells by grade id, markers removed."""
    notebook = nbformat.read(source, as_version=4)
    return {grade_id(c): without_solution_markers(c.source) for c in notebook.cells if is_answer_cell(c)}


def fill_answers(release: Path, answers: dict[str, str]) -> nbformat.NotebookNode:
    """The student notebook at `release` with the answer cells named in `answers` filled in."""
    notebook = nbformat.read(release, as_version=4)
    for cell in notebook.cells:
        if is_answer_cell(cell) and grade_id(cell) in answers:
            cell.source = answers[grade_id(cell)]
    return notebook
