"""The hidden checks of Part 2 against the solution, realistic buggy answers (mutants) and correct variants.

Same rules as for Part 1 (`tests/test_checks.py`): a mutant loses points on its own test cell and keeps full
points on every other check that can reach the function it replaces; a variant gets full marks everywhere.
"""
import sys

import pytest

from catalogue import (
    assert_full_marks,
    assert_mutant_loses_on_its_own_test_only,
    assert_untouched_release_scores_zero,
    assert_variant_gets_full_marks,
    grade_cells_silently,
    graded_cells,
)
from autograder.checks import all_checks, run_check
from autograder.checks import analysis, ppo, reward_model
from autograder.mutants import MUTANTS, PART2_MUTANTS, PART2_VARIANTS, VARIANTS, namespace_with

CHECKS = reward_model.CHECKS + ppo.CHECKS + analysis.CHECKS
PART2_TEST_POINTS = {
    "test_to_implicit_prompt_preferences": 0.5, "test_reward_model": 0.5, "test_ppo": 2, "test_logprob_analysis": 0.5,
}


@pytest.fixture(scope="module", name="graded_cells")
def graded_cells_fixture():
    return graded_cells()


# ---------------------------------------------------------------- the catalogue itself

def test_checks_match_the_part2_test_cells_and_points(graded_cells):
    checks = all_checks()
    assert {check.grade_id for check in CHECKS} == set(PART2_TEST_POINTS)
    for grade_id, points in PART2_TEST_POINTS.items():
        assert checks[grade_id].points == points == graded_cells[grade_id].metadata["nbgrader"]["points"]
        for function in checks[grade_id].functions:
            assert graded_cells[function].metadata["nbgrader"]["solution"], function


def test_part2_catalogue_is_large_enough_and_names_real_cells(graded_cells):
    assert len(PART2_MUTANTS) >= 8 and len(PART2_VARIANTS) >= 3
    assert not set(PART2_MUTANTS) & set(MUTANTS) and not set(PART2_VARIANTS) & set(VARIANTS)
    replaced = [(m["grade_id"], m["source"]) for m in PART2_MUTANTS.values()]
    replaced += [item for variant in PART2_VARIANTS.values() for item in variant.items()]
    for cell_id, source in replaced:
        assert graded_cells[cell_id].metadata["nbgrader"]["solution"], cell_id
        assert f"def {cell_id}(" in source, f"the replacement of {cell_id} must define {cell_id}"
    assert {m["loses"] for m in PART2_MUTANTS.values()} == set(PART2_TEST_POINTS)
    ppo_functions = set(all_checks()["test_ppo"].functions)
    assert ppo_functions <= {m["grade_id"] for m in PART2_MUTANTS.values()}, "a mutant for each PPO function"


# ---------------------------------------------------------------- grading the solution, mutants, variants

@pytest.mark.parametrize("grade_id", sorted(PART2_TEST_POINTS))
def test_solution_gets_full_marks(solution, context, grade_id):
    assert_full_marks(grade_id, solution, context, PART2_TEST_POINTS[grade_id])


@pytest.mark.parametrize("name", sorted(PART2_MUTANTS))
def test_mutant_loses_points_on_its_own_test_only(solution, context, name):
    results = assert_mutant_loses_on_its_own_test_only(name, PART2_MUTANTS[name], solution, context)
    ppo = results.get("test_ppo")
    assert ppo is None or ppo.score > 0, f"{name} loses all of test_ppo:\n{ppo.feedback}"


@pytest.mark.parametrize("name", sorted(PART2_VARIANTS))
def test_correct_variant_gets_full_marks(solution, context, name):
    checked = assert_variant_gets_full_marks(name, PART2_VARIANTS[name], solution, context)
    assert set(checked) & set(PART2_TEST_POINTS)


def test_a_part1_bug_does_not_cost_points_in_the_analysis(solution, context):
    # sequence_log_probs calls get_log_prob, which test_get_log_prob grades: the check swaps in a reference,
    # even though the solution's sequence_log_probs is wrapped by @torch.no_grad().
    namespace = namespace_with(solution, {"get_log_prob": MUTANTS["logp_mean_over_tokens"]["source"]})
    assert run_check("test_get_log_prob", namespace, context).status == "failed"
    assert run_check("test_logprob_analysis", namespace, context).status == "passed"


def test_untouched_release_scores_zero_without_raising(env, context):
    assert_untouched_release_scores_zero(PART2_TEST_POINTS, env, context)


def test_checks_leave_the_shared_tokenizer_alone(solution, context):
    tokenizer = context.tokenizer
    before = (tokenizer.pad_token, tokenizer.padding_side, tokenizer.truncation_side, len(tokenizer))
    source = '''
def tokenize_prompt(example, tokenizer):
    tokenizer.padding_side = "right"
    tokenizer.add_special_tokens({"pad_token": "[PAD]"})
    messages = [{"role": "user", "content": example["prompt"]}]
    return {"input_ids": tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)}
'''
    result = run_check("test_ppo", namespace_with(solution, {"tokenize_prompt": source}), context)
    assert result.status == "passed", result.feedback  # a tokenizer that was changed is not lent again
    assert (tokenizer.pad_token, tokenizer.padding_side, tokenizer.truncation_side, len(tokenizer)) == before


def test_grade_cell_is_silent_and_returns_points(solution, context, capfd):
    broken = PART2_MUTANTS["ppo_trainer_arguments_in_our_order"]
    namespace = namespace_with(solution, {broken["grade_id"]: broken["source"]})
    # a real TRL PPO update, which logs and warns
    (full, partial, analysis), out = grade_cells_silently(
        capfd, context, ("test_ppo", solution), ("test_ppo", namespace), ("test_logprob_analysis", solution))
    assert full == 2.0 and analysis == 0.5 and 0 < partial < 2
    assert "[test_ppo]" in out and "raised" in out
    assert sys.stderr is not None
