"""The hidden checks of Part 1 against the solution, realistic buggy answers (mutants) and correct variants.

A mutant must lose points on its own test cell and keep full points on every other one; a check that cannot
reach the mutated function cannot be affected by it and is skipped (see `tests/catalogue.py`).
"""
import sys
import warnings

import pytest
import torch

from catalogue import (
    assert_full_marks,
    assert_mutant_loses_on_its_own_test_only,
    assert_variant_gets_full_marks,
    grade_cells_silently,
    graded_cells,
)
from autograder.checks import all_checks, run_all, run_check
from autograder.checks.framework import Check, CheckFailure, run_check as run_single_check, student
from autograder.layout import RELEASE_NOTEBOOK
from autograder.mutants import MUTANTS, VARIANTS, namespace_with
from autograder.notebook.execute import load_namespace

PART1_TEST_POINTS = {
    "test_apply_chat_template": 0.2, "test_tokenize_row": 0.2, "test_pad": 0.1, "test_pad_collate_fn": 0.2,
    "test_dpo_loss": 1, "test_get_log_prob": 1, "test_dpo_training": 2,
}


# ---------------------------------------------------------------- the catalogue itself

def test_checks_match_the_part1_test_cells_and_points():
    cells = graded_cells()
    checks = all_checks()
    assert set(PART1_TEST_POINTS) <= set(checks)
    for grade_id, points in PART1_TEST_POINTS.items():
        assert checks[grade_id].points == points == cells[grade_id].metadata["nbgrader"]["points"]


def test_catalogue_is_large_enough_and_names_real_cells():
    cells = graded_cells()
    assert len(MUTANTS) >= 14 and len(VARIANTS) >= 5
    replaced = [(m["grade_id"], m["source"]) for m in MUTANTS.values()]
    replaced += [item for variant in VARIANTS.values() for item in variant.items()]
    for cell_id, source in replaced:
        assert cells[cell_id].metadata["nbgrader"]["solution"], cell_id
        assert f"def {cell_id}(" in source, f"the replacement of {cell_id} must define {cell_id}"
    assert {m["loses"] for m in MUTANTS.values()} == set(PART1_TEST_POINTS)


def test_namespace_with_rebinds_the_callers_of_a_replaced_function(solution):
    source = "def get_log_prob(logits, labels, mask):\n    return 'mutated'\n"
    mutated = namespace_with(solution, {"get_log_prob": source})
    assert mutated["dpo_batch_loss"].__globals__ is mutated
    assert mutated["dpo_batch_loss"].__globals__["get_log_prob"](None, None, None) == "mutated"
    assert solution["get_log_prob"] is not mutated["get_log_prob"]
    assert solution["dpo_batch_loss"].__globals__ is solution


# ---------------------------------------------------------------- grading the solution, mutants, variants

@pytest.mark.parametrize("grade_id", sorted(PART1_TEST_POINTS))
def test_solution_gets_full_marks(solution, context, grade_id):
    assert_full_marks(grade_id, solution, context, PART1_TEST_POINTS[grade_id])


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_mutant_loses_points_on_its_own_test_only(solution, context, name):
    assert_mutant_loses_on_its_own_test_only(name, MUTANTS[name], solution, context)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_correct_variant_gets_full_marks(solution, context, name):
    assert_variant_gets_full_marks(name, VARIANTS[name], solution, context)


def pipeline_loss(namespace, context):
    """The notebook's own data pipeline and training step on four pairs, with the namespace's functions."""
    from datasets import Dataset

    from autograder.checks.reference import EXAMPLES

    dataset = namespace["tokenized_preferences"](Dataset.from_list(EXAMPLES[:3]), context.tokenizer)
    batch = next(iter(namespace["make_dataloader"](dataset, context.tokenizer, batch_size=3, shuffle=False)))
    policy, reference = context.model(requires_grad=True, noise=0.05, seed=3), context.model()
    loss, accuracy, margin = namespace["dpo_batch_loss"](policy, reference, batch, 0.5, 60)
    return loss.item(), accuracy.item(), margin.item()


def test_variants_really_are_correct_end_to_end(solution, context):
    # The checks isolate each function; here each variant runs the notebook's whole pipeline unaided.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is much faster on a busy machine
    try:
        expected = pipeline_loss(solution, context)
        assert abs(expected[2]) > 0.01, "the pairs must not be cut away entirely by max_seq_len"
        for name, cells in VARIANTS.items():
            seen = pipeline_loss(namespace_with(solution, cells), context)
            assert seen == pytest.approx(expected, abs=1e-4), name
    finally:
        torch.set_num_threads(threads)


def test_untouched_release_scores_zero_without_raising(env, context):
    release = load_namespace(RELEASE_NOTEBOOK, env)
    results = run_all(release, context)
    assert set(PART1_TEST_POINTS) <= set(results)
    for grade_id in PART1_TEST_POINTS:
        result = results[grade_id]
        assert result.score == 0 and result.status == "error", result.feedback
        assert "not written yet" in result.feedback and "internal error" not in result.feedback


def test_missing_function_is_named(solution, context):
    namespace = {k: v for k, v in solution.items() if k != "pad"}
    result = run_check("test_pad", namespace, context)
    assert result.score == 0 and result.status == "error"
    assert "`pad` is not defined — did you run its cell / rename it?" in result.feedback


def test_exception_in_student_code_fails_only_that_case(solution, context):
    source = '''
def get_log_prob(logits, labels, mask):
    if logits.shape[-1] > 1000:
        raise RuntimeError("shape mismatch: [1, 40] vs [1, 41]")
    log_probs = logits[:, :-1].log_softmax(-1).gather(-1, labels[:, 1:, None])[..., 0]
    return (log_probs * mask[:, 1:]).sum(-1)
'''
    result = run_check("test_get_log_prob", namespace_with(solution, {"get_log_prob": source}), context)
    assert result.status == "error" and 0 < result.score < result.max_score
    failed = [case for case in result.cases if not case.passed]
    assert [case.name for case in failed] == ["real model logits over the 49k-token vocabulary"]
    assert "raised RuntimeError: shape mismatch" in result.feedback


def test_partial_credit_is_points_times_passed_weight():
    check = Check("test_demo", 2, ("demo",))

    @check.case("passes", weight=1)
    def _(ns, ctx):
        student(ns, "demo")()

    @check.case("wrong", weight=2)
    def _(ns, ctx):
        raise CheckFailure("wrong", expected=1, seen=2, hint="think again")

    @check.case("grader bug", weight=1)
    def _(ns, ctx):
        raise KeyError("oops")

    result = run_single_check(check, {"demo": lambda: None}, context=None)
    assert result.score == pytest.approx(0.5) and result.status == "error"
    assert "expected: 1" in result.feedback and "seen:     2" in result.feedback and "think again" in result.feedback
    assert "internal error of the grader" in result.feedback


def test_grade_cell_is_silent_and_returns_points(solution, context, capfd):
    noisy = '''
def dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    import logging, os, sys, warnings
    warnings.warn("a student warning")
    print("debug output on stderr", file=sys.stderr)
    os.write(2, b"C-level stderr\\n")
    logging.getLogger("student").error("logged error")
    margins = beta * ((chosen_logps - ref_chosen_logps) - (rejected_logps - ref_rejected_logps))
    return -F.logsigmoid(margins).sum(), (margins >= 0).float().mean(), margins.mean()
'''
    namespace = namespace_with(solution, {"dpo_loss": noisy})
    (full, partial), out = grade_cells_silently(capfd, context, ("test_pad", solution), ("test_dpo_loss", namespace))
    assert full == 0.1 and 0 < partial < 1
    assert "[test_pad]" in out and "[test_dpo_loss]" in out and "expected:" in out
    assert sys.stderr is not None
    with warnings.catch_warnings(record=True) as caught:  # the warning filters are restored afterwards
        warnings.simplefilter("always")
        warnings.warn("visible again")
    assert caught
