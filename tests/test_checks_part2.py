"""The hidden checks of Part 2 against the solution, realistic buggy answers (mutants) and correct variants.

Same rules as for Part 1 (`tests/test_checks.py`): a mutant loses points on its own test cell and keeps full
points on every other check that can reach the function it replaces; a variant gets full marks everywhere.
"""
import math
import sys
import types

import nbformat
import pytest

from autograder.checks import CheckContext, all_checks, grade_cell, run_check
from autograder.checks.part2 import CHECKS
from autograder.mutants import MUTANTS, PART2_MUTANTS, PART2_VARIANTS, VARIANTS, namespace_with
from autograder.notebook import load_namespace, offline_env
from autograder.release import RELEASE_NOTEBOOK, SOURCE_NOTEBOOK

PART2_TEST_POINTS = {
    "test_to_implicit_prompt_preferences": 0.5, "test_reward_model": 0.5, "test_ppo": 2, "test_logprob_analysis": 0.5,
}


@pytest.fixture(scope="module")
def env(fixtures, tmp_path_factory):
    return offline_env(fixtures, tmp_path_factory.mktemp("outputs"), "fast")


@pytest.fixture(scope="module")
def solution(env):
    return load_namespace(SOURCE_NOTEBOOK, env)


@pytest.fixture(scope="module")
def context(fixtures):
    return CheckContext(fixtures.tiny)


@pytest.fixture(scope="module")
def graded_cells():
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
    return [grade_id for grade_id, check in all_checks().items()
            if called_names(solution, check.functions) & set(cells)]


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
    result = run_check(grade_id, solution, context)
    assert result.status == "passed", result.feedback
    assert result.score == result.max_score == PART2_TEST_POINTS[grade_id]


@pytest.mark.parametrize("name", sorted(PART2_MUTANTS))
def test_mutant_loses_points_on_its_own_test_only(solution, context, name):
    mutant = PART2_MUTANTS[name]
    namespace = namespace_with(solution, {mutant["grade_id"]: mutant["source"]})
    affected = checks_reaching(solution, [mutant["grade_id"]])
    assert mutant["loses"] in affected
    for grade_id in affected:
        result = run_check(grade_id, namespace, context)
        if grade_id == mutant["loses"]:
            assert result.score < result.max_score, f"{name} keeps full marks:\n{result.feedback}"
            assert result.score > 0 or grade_id != "test_ppo", f"{name} loses all of test_ppo:\n{result.feedback}"
            assert result.status in ("failed", "error")
            assert "internal error" not in result.feedback, result.feedback
            if result.status == "failed":
                assert "expected:" in result.feedback and "seen:" in result.feedback, result.feedback
            else:
                assert "raised" in result.feedback, result.feedback
        else:
            assert result.status == "passed", f"{name} also loses points on {grade_id}:\n{result.feedback}"


@pytest.mark.parametrize("name", sorted(PART2_VARIANTS))
def test_correct_variant_gets_full_marks(solution, context, name):
    namespace = namespace_with(solution, PART2_VARIANTS[name])
    checked = checks_reaching(solution, PART2_VARIANTS[name])
    assert set(checked) & set(PART2_TEST_POINTS)
    for grade_id in checked:
        result = run_check(grade_id, namespace, context)
        assert result.status == "passed", f"{name} on {grade_id}:\n{result.feedback}"


def test_a_part1_bug_does_not_cost_points_in_the_analysis(solution, context):
    # sequence_log_probs calls get_log_prob, which test_get_log_prob grades: the check swaps in a reference,
    # even though the solution's sequence_log_probs is wrapped by @torch.no_grad().
    namespace = namespace_with(solution, {"get_log_prob": MUTANTS["logp_mean_over_tokens"]["source"]})
    assert run_check("test_get_log_prob", namespace, context).status == "failed"
    assert run_check("test_logprob_analysis", namespace, context).status == "passed"


def test_untouched_release_scores_zero_without_raising(env, context):
    release = load_namespace(RELEASE_NOTEBOOK, env)
    for grade_id in PART2_TEST_POINTS:
        result = run_check(grade_id, release, context)
        assert result.score == 0 and result.status == "error", result.feedback
        assert "not written yet" in result.feedback and "internal error" not in result.feedback


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
    capfd.readouterr()
    full = grade_cell("test_ppo", solution, context)  # a real TRL PPO update, which logs and warns
    partial = grade_cell("test_ppo", namespace, context)
    analysis = grade_cell("test_logprob_analysis", solution, context)
    captured = capfd.readouterr()
    assert captured.err == ""
    assert type(full) is float and full == 2.0 and analysis == 0.5
    assert type(partial) is float and 0 < partial < 2 and not math.isnan(partial)
    assert "[test_ppo]" in captured.out and "raised" in captured.out
    assert sys.stderr is not None
