"""Hidden checks of the homework, one per nbgrader test cell (grade id), with partial credit.

One module per notebook section (`data_prep`, `dpo_loss`, `dpo_training`, `reward_model`, `ppo`, `analysis`,
`fdpo`, `win_rate`, `lora`) holds the checks of its test cells; `reference` holds the independent references
and the chat examples they share, `models` the models and tokenizers handed to student code, `compare` the
comparisons and conversions of student outputs, `framework` the `Check` machinery, `context` the grading
resources.

Use in a hidden test cell of the instructor notebook (the last expression is the cell's score in points,
which nbgrader reads as partial credit; the feedback goes to stdout, nothing to stderr):

    ### BEGIN HIDDEN TESTS
    from autograder.checks import grade_cell
    grade_cell("test_dpo_loss", globals())
    ### END HIDDEN TESTS

From Python: `run_check("test_dpo_loss", namespace)` returns a `CheckResult` (score, max_score, status,
feedback, per-case results); `run_all(namespace)` runs every check. The grading model and tokenizer come
from the tiny fixture (see `CheckContext`).
"""
from autograder.checks.context import CheckContext, default_context
from autograder.checks.framework import (
    Case,
    Check,
    CheckFailure,
    CheckResult,
    MissingFunction,
    StudentError,
    quiet,
    rebound_namespace,
)
from autograder.checks.framework import run_check as _run_check

__all__ = [
    "Case", "Check", "CheckContext", "CheckFailure", "CheckResult", "GraderSetupError", "MissingFunction",
    "StudentError", "all_checks", "grade_cell", "quiet", "rebound_namespace", "run_all", "run_check",
]


class GraderSetupError(RuntimeError):
    """The grading resources (tokenizer, tiny model) cannot be loaded: a problem of the grader's machine."""


def all_checks() -> dict:
    """Every check by grade id (imported on first use: the checks need torch and transformers)."""
    from autograder.checks import (analysis, data_prep, dpo_loss, dpo_training, fdpo, lora, ppo, reward_model,
                                   win_rate)

    sections = (data_prep, dpo_loss, dpo_training, reward_model, ppo, analysis, fdpo, win_rate, lora)
    return {check.grade_id: check for section in sections for check in section.CHECKS}


def _ready_context(context: CheckContext | None) -> CheckContext:
    context = context or default_context()
    try:
        context.tokenizer  # noqa: B018 (load it now: a broken setup must not look like a student's bug)
    except Exception as error:  # noqa: BLE001
        raise GraderSetupError(f"cannot load the grading tokenizer: {error}") from error
    return context


def run_check(grade_id: str, namespace: dict, context: CheckContext | None = None) -> CheckResult:
    """Grade the functions behind the test cell `grade_id` in `namespace` (the notebook's globals)."""
    checks = all_checks()
    if grade_id not in checks:
        raise KeyError(f"no hidden check for the grade id {grade_id!r}; known: {sorted(checks)}")
    return _run_check(checks[grade_id], namespace, _ready_context(context))


def run_all(namespace: dict, context: CheckContext | None = None) -> dict[str, CheckResult]:
    """Every check against `namespace`, by grade id."""
    context = _ready_context(context)
    return {grade_id: _run_check(check, namespace, context) for grade_id, check in all_checks().items()}


def grade_cell(grade_id: str, namespace: dict, context: CheckContext | None = None) -> float:
    """Run the check of `grade_id` silently, print its feedback and return the score in points.

    Made for nbgrader hidden test cells: nothing reaches stderr (which would cost the whole cell), the
    feedback is printed to stdout, and the returned float, the cell's last expression, is its partial credit.
    """
    with quiet():
        result = run_check(grade_id, namespace, context)
    print(result.feedback)
    return float(result.score)
