"""The hidden-check machinery: namespaces of mutated students, partial credit, errors in student code, silent
`grade_cell`, one bug costing points in one place. The catalogue itself is graded by `tests/test_catalogue.py`.
"""
import sys
import warnings

import pytest
import torch

from autograder.checks import run_check
from autograder.checks.framework import Check, CheckFailure, run_check as run_single_check, student

from mutants import MUTANTS, SECTIONS
from mutants.catalogue import grade_cells_silently, namespace_with


def test_namespace_with_rebinds_the_callers_of_a_replaced_function(solution):
    source = "def get_log_prob(logits, labels, mask):\n    return 'mutated'\n"
    mutated = namespace_with(solution, {"get_log_prob": source})
    assert mutated["dpo_batch_loss"].__globals__ is mutated
    assert mutated["dpo_batch_loss"].__globals__["get_log_prob"](None, None, None) == "mutated"
    assert solution["get_log_prob"] is not mutated["get_log_prob"]
    assert solution["dpo_batch_loss"].__globals__ is solution


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
        variants = {name: cells for section in ("data_prep", "dpo_loss", "dpo_training")
                    for name, cells in SECTIONS[section].VARIANTS.items()}
        for name, cells in variants.items():
            seen = pipeline_loss(namespace_with(solution, cells), context)
            assert seen == pytest.approx(expected, abs=1e-4), name
    finally:
        torch.set_num_threads(threads)


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


@pytest.mark.parametrize("mutant", ["ppo_trainer_arguments_in_our_order", "entropy_log_of_probabilities",
                                    "lora_reference_with_adapters_on"])
def test_grade_cell_gives_partial_credit_silently(solution, context, capfd, mutant):
    # a real TRL PPO update logs and warns, peft warns while it wraps a model
    broken = MUTANTS[mutant]
    grade_id = broken["loses"]
    namespace = namespace_with(solution, {broken["grade_id"]: broken["source"]})
    (full, partial), out = grade_cells_silently(capfd, context, (grade_id, solution), (grade_id, namespace))
    assert full == run_check(grade_id, solution, context).max_score and 0 < partial < full
    assert f"[{grade_id}]" in out and ("expected:" in out or "raised" in out)


@pytest.mark.parametrize("cell, mutant, graded_elsewhere", [
    # sequence_log_probs calls get_log_prob, even though the solution's is wrapped by @torch.no_grad()
    ("get_log_prob", "logp_mean_over_tokens", "test_logprob_analysis"),
    # lora_reference_logps batches through the notebook's collate_pairs, which calls pad_collate_fn
    ("pad_collate_fn", "collate_prompt_padded_right", "test_lora_dpo"),
])
def test_a_bug_costs_points_in_one_place_only(solution, context, cell, mutant, graded_elsewhere):
    # the check of a function that calls another test cell's function swaps in a reference for it
    namespace = namespace_with(solution, {cell: MUTANTS[mutant]["source"]})
    assert run_check(MUTANTS[mutant]["loses"], namespace, context).status == "failed"
    assert run_check(graded_elsewhere, namespace, context).status == "passed"


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


def test_ppo_constants_match_numbers_and_a_switched_off_eos_penalty():
    from autograder.checks.ppo import same_number

    assert same_number(3e-5, 3e-5) and same_number(8, 8.0)
    assert same_number(None, None), "the demo profile's PPO_MISSING_EOS_PENALTY = None must match missing_eos_penalty=None"
    assert not same_number(None, 1.0) and not same_number(0.0, None) and not same_number(True, 1)
    assert not same_number(1.0 + 1e-6, 1.0)
