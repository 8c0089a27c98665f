"""The catalogue's building blocks and verdicts: how a mutant is written down, how a student's namespace is
built from the solution's, which checks a replaced cell can reach, and the verdicts every mutant (loses points on
its own test cell only), every correct variant (full marks) and every check (the solution's full marks, the
untouched release's zero, a silent `grade_cell`) must get."""
import math
import types

import nbformat

from autograder.checks import all_checks, grade_cell, run_check
from autograder.checks.framework import rebound_namespace
from autograder.layout import RELEASE_NOTEBOOK, SOURCE_NOTEBOOK
from autograder.notebook.execute import load_namespace


def mutant(grade_id: str, loses: str, source: str) -> dict:
    """A buggy answer: the cell `grade_id` as a student would write it, which must lose points on `loses`."""
    return {"grade_id": grade_id, "source": source.strip() + "\n", "loses": loses}


def namespace_with(base: dict, replacements: dict[str, str]) -> dict:
    """A copy of the notebook namespace `base` in which the cells `replacements` (id -> source) were run.

    Every notebook function is re-created on the copy (a function looks up the names it calls in the dict it
    was defined in, so a plain copy would keep calling the solution's helpers) before the replacement cells
    run: after that the copy's `dpo_batch_loss` calls the copy's, i.e. the mutated, `get_log_prob`, exactly as
    in a student's kernel.
    """
    namespace = rebound_namespace(base)
    for cell_id, source in replacements.items():
        exec(compile(source, f"<answer cell {cell_id}>", "exec"), namespace)
    return namespace


def graded_cells() -> dict:
    """The instructor notebook's nbgrader cells by grade id."""
    return {c.metadata["nbgrader"]["grade_id"]: c for c in nbformat.read(SOURCE_NOTEBOOK, 4).cells
            if "nbgrader" in c.metadata}


def called_names(namespace: dict, names) -> set[str]:
    """The notebook functions `names` call, directly or through one another (names in their code objects)."""
    found, todo = set(), list(names)
    while todo:
        name = todo.pop()
        function = namespace.get(name)
        if name in found or not isinstance(function, types.FunctionType):
            continue
        found.add(name)
        while hasattr(function, "__wrapped__"):  # @torch.no_grad() and friends
            function = function.__wrapped__
        codes = [function.__code__]
        while codes:
            code = codes.pop()
            todo.extend(code.co_names)
            codes.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    return found


def checks_reaching(solution: dict, cells) -> list[str]:
    """Grade ids of the checks whose functions can reach one of the replaced cells' functions; the others
    cannot be affected by the replacement and are skipped to keep the tests fast."""
    return [grade_id for grade_id, check in all_checks().items()
            if called_names(solution, check.functions) & set(cells)]


def assert_mutant_loses_on_its_own_test_only(name: str, mutant: dict, solution: dict, context) -> dict:
    """Grade a mutant (`{"grade_id", "source", "loses"}`) on every check it can reach; returns the results."""
    namespace = namespace_with(solution, {mutant["grade_id"]: mutant["source"]})
    affected = checks_reaching(solution, [mutant["grade_id"]])
    assert mutant["loses"] in affected, f"{name}: no check reaches {mutant['grade_id']}"
    results = {}
    for grade_id in affected:
        result = results[grade_id] = run_check(grade_id, namespace, context)
        if grade_id != mutant["loses"]:
            assert result.status == "passed", f"{name} also loses points on {grade_id}:\n{result.feedback}"
            continue
        assert result.score < result.max_score, f"{name} keeps full marks:\n{result.feedback}"
        assert result.status in ("failed", "error")
        assert "internal error" not in result.feedback, result.feedback
        if result.status == "failed":
            assert "expected:" in result.feedback and "seen:" in result.feedback, result.feedback
        else:
            assert "raised" in result.feedback, result.feedback
    return results


def assert_variant_gets_full_marks(name: str, replacements: dict[str, str], solution: dict, context) -> list[str]:
    """Grade a correct variant (cell id -> source) on every check it can reach; returns their grade ids."""
    namespace = namespace_with(solution, replacements)
    checked = checks_reaching(solution, replacements)
    assert checked, f"{name}: no check reaches {sorted(replacements)}"
    for grade_id in checked:
        result = run_check(grade_id, namespace, context)
        assert result.status == "passed", f"{name} on {grade_id}:\n{result.feedback}"
    return checked


def assert_full_marks(grade_id: str, solution: dict, context, points: float) -> None:
    """The solution passes the check `grade_id` and gets its `points`."""
    result = run_check(grade_id, solution, context)
    assert result.status == "passed", result.feedback
    assert result.score == result.max_score == points


def assert_untouched_release_scores_zero(grade_ids, env: dict, context) -> None:
    """The student release as generated (every TODO unwritten) scores 0 on each check, with a kind message."""
    release = load_namespace(RELEASE_NOTEBOOK, env)
    for grade_id in grade_ids:
        result = run_check(grade_id, release, context)
        assert result.score == 0 and result.status == "error", result.feedback
        assert "not written yet" in result.feedback and "internal error" not in result.feedback


def grade_cells_silently(capfd, context, *cells: tuple[str, dict]) -> tuple[list[float], str]:
    """`grade_cell` of each (grade id, namespace), as a hidden test cell calls it; asserts that nothing reached
    stderr (nbgrader scores a test cell that writes to stderr 0) and returns the scores and what was printed."""
    capfd.readouterr()
    scores = [grade_cell(grade_id, namespace, context) for grade_id, namespace in cells]
    captured = capfd.readouterr()
    assert captured.err == ""
    assert all(type(score) is float and not math.isnan(score) for score in scores), scores
    return scores, captured.out
