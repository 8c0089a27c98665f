"""`grade --gradebook`: the CLI's trusted scores written into nbgrader's gradebook, over autograde's.

Under `nbgrader autograde` the hidden tests run in the student's kernel, where a submission can forge them;
the CLI judges in its own process. Run it after the last `nbgrader autograde` (which would overwrite these
scores) and before `nbgrader generate_feedback`.
"""
from pathlib import Path

from autograder.layout import ASSIGNMENT, NOTEBOOK_NAME


def write_scores(path: Path, records: list[dict]) -> tuple[int, list[str]]:
    """Set each autograded test's `auto_score` in the sqlite gradebook at `path` to the CLI's score.

    A manual override of those test cells is cleared (manually graded answers are never touched). Returns
    how many grades were written and a warning for each student or grade the gradebook lacks.
    """
    from nbgrader.api import Gradebook, MissingEntry

    notebook = NOTEBOOK_NAME.removesuffix(".ipynb")
    written, warnings = 0, []
    # course_id="": use the gradebook as it is (the default would add a "default_course" row to it)
    with Gradebook(f"sqlite:///{Path(path).resolve()}", course_id="") as gradebook:
        for record in sorted(records, key=lambda r: r["student"]):
            student = record["student"]
            try:
                gradebook.find_submission(ASSIGNMENT, student)
            except MissingEntry:
                warnings.append(f"{student} has no {ASSIGNMENT} submission in the gradebook {path} (not "
                                "collected and autograded by nbgrader?): their scores were not written")
                continue
            for grade_id, test in record["tests"].items():
                try:
                    gradebook.find_solution_cell(grade_id, notebook, ASSIGNMENT)
                    continue  # a manually graded answer, never an autograded test: leave it to the formgrader
                except MissingEntry:
                    pass
                try:
                    grade = gradebook.find_grade(grade_id, notebook, ASSIGNMENT, student)
                except MissingEntry:
                    warnings.append(f"{student}: the gradebook has no grade {grade_id!r} in {notebook}")
                    continue
                if getattr(grade.cell, "cell_type", None) != "code":
                    continue
                grade.auto_score = float(test["score"])
                grade.manual_score = None
                grade.needs_manual_grade = False
                written += 1
            gradebook.db.commit()
    return written, warnings
