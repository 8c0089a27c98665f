"""The grading JSON: one record per submission, and everything written from it (feedback.md, grades.csv).

`record(...)` is the only place that builds a result; the CLI writes `<student>.json`, `<student>.feedback.md`
and `grades.csv` from the same records, so they cannot disagree. Scores are clamped to [0, max] per test.
"""
import csv
import hashlib
import json
import math
import re
from pathlib import Path

STATUSES = ("passed", "failed", "error", "timeout")
BONUS_PREFIX = "bonus_"  # graded-by-hand cells whose points come on top of the homework's (the model cards)


def homework_points(tests: dict[str, float], extra_credit: set[str]) -> dict[str, float]:
    """What the homework is out of, from the instructor notebook's graded cells: the one definition every output
    uses. `homework` = `autograded` (the CLI's `max_score`) + `by_hand` (written answers); `starred` (the CLI's
    `extra_credit_max`) and `bonus` are extra; nbgrader's maximum counts all four (`nbgrader_max`)."""
    from autograder.grading.submission import graded_by_hand

    manual = graded_by_hand()
    table = {
        "autograded": sum(p for gid, p in tests.items() if gid not in extra_credit),
        "by_hand": sum(p for gid, p in manual.items() if not gid.startswith(BONUS_PREFIX)),
        "starred": sum(p for gid, p in tests.items() if gid in extra_credit),
        "bonus": sum(p for gid, p in manual.items() if gid.startswith(BONUS_PREFIX)),
    }
    table = {name: round(value, 6) for name, value in table.items()}
    table["homework"] = round(table["autograded"] + table["by_hand"], 6)
    table["nbgrader_max"] = round(table["homework"] + table["starred"] + table["bonus"], 6)
    return table


def test_entry(points: float, score: float, status: str, feedback: str, extra_credit: bool = False) -> dict:
    """One test's entry, with the score clamped to [0, points] and a known status."""
    score = float(score) if isinstance(score, (int, float)) and math.isfinite(score) else 0.0
    entry = {"score": round(min(max(score, 0.0), float(points)), 6), "max_score": float(points),
             "status": status if status in STATUSES else "error", "feedback": str(feedback)[:20_000]}
    if extra_credit:
        entry["extra_credit"] = True
    return entry


def record(student: str, submission: Path | None, tests: dict[str, float], entries: dict[str, dict],
           extra_credit: set[str], notes: list[str], seconds: float, key: str, timings: dict | None = None) -> dict:
    """The grading JSON of one submission: every test of `tests`, in order, with a score and a status."""
    ordered = {}
    for grade_id, points in tests.items():
        entry = entries.get(grade_id) or test_entry(points, 0, "error", f"[{grade_id}] not graded")
        ordered[grade_id] = test_entry(points, entry["score"], entry["status"], entry["feedback"],
                                       grade_id in extra_credit)
    scheme = homework_points(tests, extra_credit)
    return {
        "score": round(sum(t["score"] for t in ordered.values()), 6),
        "max_score": scheme["autograded"], "extra_credit_max": scheme["starred"], "points": scheme,
        "tests": ordered, "notes": [str(n)[:1000] for n in notes][:30], "student": student,
        "submission": str(submission) if submission else None,
        "submission_sha256": digest(submission) if submission and submission.is_file() else None,
        "grader_key": key, "seconds": round(seconds, 1), "timings": timings or {},
    }


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def feedback_markdown(result: dict) -> str:
    lines = [f"# Feedback for {result['student']}", "",
             f"Automatic score: **{result['score']:g} / {result['max_score']:g}**"
             + (f", starred tasks included (up to {result['extra_credit_max']:g} extra points)"
                if result.get("extra_credit_max") else ""), "", *points_sentence(result.get("points")), ""]
    for note in result.get("notes", []):
        lines.append(quoted(str(note)))
    lines += ["", "| test | score | status |", "| --- | --- | --- |"]
    lines += [f"| `{gid}`{' (extra credit)' if t.get('extra_credit') else ''} | {t['score']:g} / {t['max_score']:g} "
              f"| {t['status']} |" for gid, t in result["tests"].items()]
    for gid, test in result["tests"].items():
        lines += ["", f"## {gid}", "", *fenced(test["feedback"])]
    return "\n".join(lines) + "\n"


def points_sentence(scheme: dict | None) -> list[str]:
    """How the automatic score fits in the homework's total, in words."""
    if not scheme:
        return []
    return [f"The homework is out of {scheme['homework']:g} points: {scheme['autograded']:g} checked automatically "
            f"(above) and {scheme['by_hand']:g} for the written answers, graded by hand. On top of that come up to "
            f"{scheme['starred']:g} extra points for the starred tasks (checked automatically) and "
            f"{scheme['bonus']:g} for the model-card bonus (graded by hand); nbgrader adds everything up, so its "
            f"total is out of {scheme['nbgrader_max']:g}."]


def _lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def quoted(text: str) -> str:
    """`text` as one markdown block quote: every line quoted, so that a note (which may carry a message of the
    student's code) cannot end the quote and write headings or scores of its own into the feedback."""
    return "\n".join(f"> {line}" for line in _lines(text))


def fenced(text: str) -> list[str]:
    """`text` in a code fence longer than any run of backticks inside it, so that it cannot close the fence."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence, *_lines(text), fence]


def save(out: Path, result: dict) -> None:
    (out / f"{result['student']}.json").write_text(json.dumps(result, indent=1))
    (out / f"{result['student']}.feedback.md").write_text(feedback_markdown(result))


def write_csv(out: Path, results: list[dict], tests: list[str]) -> None:
    with open(out / "grades.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["student", "score", "max_score", "extra_credit_max", *tests])
        for result in sorted(results, key=lambda r: r["student"]):
            writer.writerow([result["student"], result["score"], result["max_score"], result["extra_credit_max"],
                             *(result["tests"][gid]["score"] for gid in tests)])


def stored(out: Path, student: str, submission: Path, tests: dict[str, float], key: str) -> dict | None:
    """The stored result of an unchanged submission graded by this grader version, for resuming."""
    try:
        result = json.loads((out / f"{student}.json").read_text())
    except (OSError, ValueError):
        return None
    fresh = (isinstance(result, dict) and result.get("grader_key") == key
             and result.get("submission_sha256") == digest(submission)
             and isinstance(result.get("tests"), dict) and list(result["tests"]) == list(tests))
    return result if fresh else None
