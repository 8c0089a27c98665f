"""The judge's cache of references (`CheckContext.cached`): the values of a fresh computation, copies that a
check may change freely, and submissions graded one after another on one cache that keep their own grades.
The same on the sandboxed CLI: `test_a_judge_reuses_its_references_and_each_submission_keeps_its_grade` in
`tests/test_grade.py`."""
import pytest
import torch

from autograder.checks import CheckContext, run_check
from autograder.checks.analysis import TEXTS, expected_log_probs
from autograder.checks.dpo_training import expected_batch, expected_policy_gradients, training_rows
from autograder.checks.framework import set_run_salt
from autograder.checks.lora import base_weights
from autograder.checks.reference import chat_rows

from mutants import MUTANTS
from mutants.catalogue import namespace_with


def references(ctx: CheckContext) -> dict:
    """Cached references of every kind: token ids, numbers, gradients, weights."""
    rows = training_rows(ctx, False)
    return {"rows": chat_rows(ctx), "batch": expected_batch(ctx, "batch-equal", rows, 0.5, None),
            "gradients": expected_policy_gradients(ctx, rows, 0.5), "log-probs": expected_log_probs(ctx, TEXTS),
            "weights": base_weights(ctx)}


def same(a, b) -> bool:
    """Equal values, tensors element by element, containers of the same type."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.fixture(scope="module")
def computed(fixtures) -> dict:
    """The references computed by a context of their own, never read from a cache."""
    return references(CheckContext(fixtures.tiny))


def test_cached_references_equal_fresh_ones(fixtures, computed):
    ctx = CheckContext(fixtures.tiny)
    first = references(ctx)
    count = ctx.cached_count()
    assert count >= len(first)
    assert same(first, computed) and same(references(ctx), computed)
    assert ctx.cached_count() == count  # the second time, everything came from the cache


def test_a_new_run_salt_computes_its_own_references(fixtures, computed):
    ctx = CheckContext(fixtures.tiny)
    references(ctx)
    count = ctx.cached_count()
    set_run_salt(12345)
    try:
        salted = references(ctx)
    finally:
        set_run_salt(0)
    assert ctx.cached_count() == 2 * count
    assert same(salted, computed)  # these references draw nothing at random


def test_changing_what_a_check_got_leaves_the_next_submissions_reference_intact(fixtures, computed):
    ctx = CheckContext(fixtures.tiny)
    got = references(ctx)
    got["rows"][0]["prompt_input_ids"].append(0)
    got["rows"].pop()
    got["batch"]["loss"] = 0.0
    got["batch"]["logps"]["chosen"][0] = 0.0
    for tensor in got["gradients"].values():
        tensor.zero_()
    for tensor in got["weights"].values():
        tensor.add_(1.0)
    got["log-probs"]["total"].clear()
    assert same(references(ctx), computed)


def test_submissions_graded_one_after_another_keep_their_own_grades(fixtures, solution):
    """A wrong submission first (its grading fills the cache), then a right one, then the wrong one again."""
    ctx = CheckContext(fixtures.tiny)
    bug = MUTANTS["batch_loss_default_beta"]
    wrong = namespace_with(solution, {bug["grade_id"]: bug["source"]})
    first, right, again = (run_check(bug["loses"], namespace, ctx) for namespace in (wrong, solution, wrong))
    assert ctx.cached_count() > 0
    assert right.status == "passed" and right.score == right.max_score, right.feedback
    assert first.status == again.status == "failed" and 0 < first.score == again.score < first.max_score
    assert first.feedback == again.feedback
