"""The hidden checks against their mutation catalogue (`tests/mutants/`): one set of rules for every section.

For each notebook section (checks in `autograder/checks/<section>.py`, catalogue in `tests/mutants/<section>.py`):
the checks match the instructor notebook's test cells and points; the catalogue is large enough and replaces
real answer cells; the solution gets full marks; each mutant loses points on its own test cell and keeps full
points on every other check that can reach the function it replaces (a check that cannot reach it cannot be
affected by it and is skipped, see `mutants.catalogue.checks_reaching`); each correct variant gets full marks;
the untouched student release scores zero.
"""
import importlib

import pytest

from autograder.checks import all_checks

from mutants import MUTANTS, SECTIONS, VARIANTS
from mutants.catalogue import (
    assert_full_marks,
    assert_mutant_loses_on_its_own_test_only,
    assert_untouched_release_scores_zero,
    assert_variant_gets_full_marks,
    graded_cells,
)

# The points of each test cell as the assignment announces them; the checks and the notebook must agree.
TEST_POINTS = {
    "test_apply_chat_template": 0.2, "test_tokenize_row": 0.2, "test_pad": 0.1, "test_pad_collate_fn": 0.2,
    "test_dpo_loss": 1, "test_get_log_prob": 1, "test_dpo_training": 2,
    "test_to_implicit_prompt_preferences": 0.5, "test_reward_model": 0.5, "test_ppo": 2, "test_logprob_analysis": 0.5,
    "test_f_dpo_loss": 1, "test_win_rate_diversity": 1, "test_lora_dpo": 1,
}
EXTRA_CREDIT = {"test_f_dpo_loss", "test_win_rate_diversity", "test_lora_dpo"}
# Checks made of many independent cases: one bug must never cost all of their points.
KEEPS_PARTIAL_CREDIT = {"test_ppo"} | EXTRA_CREDIT


def section_checks(section: str) -> list:
    return importlib.import_module(f"autograder.checks.{section}").CHECKS


@pytest.fixture(scope="module", name="graded_cells")
def graded_cells_fixture():
    return graded_cells()


# ---------------------------------------------------------------- the catalogue itself

def test_every_check_has_its_section_and_catalogue():
    by_section = {check.grade_id for section in SECTIONS for check in section_checks(section)}
    assert by_section == set(all_checks()) == set(TEST_POINTS)


@pytest.mark.parametrize("section", SECTIONS)
def test_checks_match_the_test_cells_and_points(graded_cells, section):
    for check in section_checks(section):
        assert check.points == TEST_POINTS[check.grade_id] == graded_cells[check.grade_id].metadata["nbgrader"]["points"]
        assert check.extra_credit == (check.grade_id in EXTRA_CREDIT)
        for function in check.functions:
            assert graded_cells[function].metadata["nbgrader"]["solution"], function


@pytest.mark.parametrize("section", SECTIONS)
def test_catalogue_is_large_enough_and_names_real_cells(graded_cells, section):
    mutants, variants = SECTIONS[section].MUTANTS, SECTIONS[section].VARIANTS
    replaced = [(m["grade_id"], m["source"]) for m in mutants.values()]
    replaced += [item for variant in variants.values() for item in variant.items()]
    for cell_id, source in replaced:
        assert graded_cells[cell_id].metadata["nbgrader"]["solution"], cell_id
        assert f"def {cell_id}(" in source, f"the replacement of {cell_id} must define {cell_id}"
    checks = section_checks(section)
    assert {m["loses"] for m in mutants.values()} == {check.grade_id for check in checks}
    mutated = {m["grade_id"] for m in mutants.values()}
    for check in checks:
        assert sum(m["loses"] == check.grade_id for m in mutants.values()) >= 2, f"{check.grade_id}: too few mutants"
        assert set(check.functions) <= mutated, f"{check.grade_id}: a mutant for each function"
        assert any(set(check.functions) & set(cells) for cells in VARIANTS.values()), f"{check.grade_id}: no variant"


# ---------------------------------------------------------------- grading the solution, mutants, variants

@pytest.mark.parametrize("grade_id", sorted(TEST_POINTS))
def test_solution_gets_full_marks(solution, context, grade_id):
    assert_full_marks(grade_id, solution, context, TEST_POINTS[grade_id])


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_mutant_loses_points_on_its_own_test_only(solution, context, name):
    results = assert_mutant_loses_on_its_own_test_only(name, MUTANTS[name], solution, context)
    own = results[MUTANTS[name]["loses"]]
    if own.grade_id in KEEPS_PARTIAL_CREDIT:
        assert own.score > 0, f"{name} loses all of {own.grade_id}: the other cases should still pass\n{own.feedback}"


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_correct_variant_gets_full_marks(solution, context, name):
    checked = assert_variant_gets_full_marks(name, VARIANTS[name], solution, context)
    own = {grade_id for grade_id, check in all_checks().items() if set(check.functions) & set(VARIANTS[name])}
    assert own <= set(checked)


def test_untouched_release_scores_zero_without_raising(env, context):
    assert_untouched_release_scores_zero(sorted(TEST_POINTS), env, context)
