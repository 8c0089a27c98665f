"""Hidden checks of Part 1, DPO training: `test_dpo_training` (`concat_prompt_completion`, `dpo_batch_loss`).

Every check calls the student's functions on the real SmolLM2 tokenizer and the tiny random model and
compares them with the independent references of `autograder.checks.reference` and with properties the right
answer must have. A function that another test cell grades is replaced by a reference while this one is
graded, so one bug costs points in one place.
"""
import math

import torch

from autograder.checks import reference as ref
from autograder.checks.compare import close, difference, expect_model_gradients, int_lists, scalar, triple
from autograder.checks.framework import Check, CheckFailure, student
from autograder.checks.reference import chat_rows
from autograder.grading.exercise.resources import model_from_spec
from autograder.grading.remote import Provided






# ================================================================ test_dpo_training

training_check = Check("test_dpo_training", 2, ("concat_prompt_completion", "dpo_batch_loss"))
ISOLATE_BATCH_LOSS = {"get_log_prob": ref.isolated_get_log_prob, "dpo_loss": ref.isolated_dpo_loss,
                      "sequence_logits": Provided("sequence_logits"),
                      # the checks run on the CPU even where the notebook picked a GPU
                      "DEVICE": "cpu", "AMP_DTYPE": torch.float32}
PAD = 2  # <|im_end|>, the pad token of SmolLM's tokenizer, also inside the answers below
CONCAT_INPUTS = (
    [[PAD, PAD, 51, 52], [PAD, 53, 54, 55], [56, 57, 58, 59]],
    [[0, 0, 1, 1], [0, 1, 1, 1], [1, 1, 1, 1]],
    [[61, 62, PAD, PAD, PAD], [63, PAD, PAD, PAD, PAD], [64, 65, 66, 67, PAD]],
    [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]],
)


def concat_by_student(ns, case, max_seq_len):
    """The student's concat_prompt_completion on CONCAT_INPUTS; max_seq_len="omit" leaves the argument out."""
    args = [torch.tensor(v, dtype=torch.long) for v in CONCAT_INPUTS]
    if max_seq_len != "omit":
        args.append(max_seq_len)
    out = student(ns, "concat_prompt_completion")(*args)
    if not isinstance(out, (tuple, list)) or len(out) != 3:
        raise CheckFailure(case, "a tuple (input_ids, attention_mask, loss_mask)", type(out).__name__)
    return [int_lists(t, case, name, mask=name.endswith("_mask")) if isinstance(t, torch.Tensor) else
            _not_tensor(case, name, t) for t, name in zip(out, ("input_ids", "attention_mask", "loss_mask"))]


def _not_tensor(case, name, value):
    raise CheckFailure(case, f"{name} as a tensor", type(value).__name__)


def expect_concat(case, seen, max_seq_len, hint):
    expected = ref.glued(*CONCAT_INPUTS, max_seq_len)
    for name, e, s in zip(("input_ids", "attention_mask", "loss_mask"), expected, seen):
        if e != s:
            raise CheckFailure(case, *difference(name, e, s), hint)


@training_check.case("concat: prompt then answer, attention mask, loss mask on answer tokens only", weight=2)
def _(ns, ctx):
    case = "concatenation"
    seen = concat_by_student(ns, case, None)
    expect_concat(case, seen, None,
                  "the loss mask is 0 on the whole prompt and equals the answer's attention mask on the answer; "
                  f"build it from the masks, not from the ids (the pad id {PAD} is also <|im_end|>)")


@training_check.case("concat: max_seq_len cuts the END (the answer's tail)", weight=2)
def _(ns, ctx):
    case = "truncation to max_seq_len"
    for max_seq_len in (6, 9, 20):
        seen = concat_by_student(ns, case, max_seq_len)
        expect_concat(case, seen, max_seq_len, f"with max_seq_len={max_seq_len}, keep the first max_seq_len "
                                               "positions: [:, :max_seq_len]")


@training_check.case("concat: max_seq_len=None (the default) keeps everything", weight=1)
def _(ns, ctx):
    case = "no truncation by default"
    seen = concat_by_student(ns, case, "omit")
    expect_concat(case, seen, None, "max_seq_len defaults to None, which keeps every position")


PROMPT_KEEP_EQUAL, PROMPT_KEEP_PADDED, ANSWER_KEEP = (6, 6, 6, 6), (8, 3, 6, 5), 6


def training_rows(ctx, padded: bool):
    """Four real chat pairs, cut short to keep the checks fast: the prompts keep their last tokens (all the
    same number, or different numbers so that they need left padding), the answers their first tokens."""
    keep = PROMPT_KEEP_PADDED if padded else PROMPT_KEEP_EQUAL
    return [{"prompt_input_ids": row["prompt_input_ids"][-n:],
             "chosen_input_ids": row["chosen_input_ids"][:ANSWER_KEEP],
             "rejected_input_ids": row["rejected_input_ids"][:ANSWER_KEEP]} for row, n in zip(chat_rows(ctx), keep)]


def batch_tensors(rows, pad_id):
    return {key: torch.tensor(value) for key, value in ref.collated(rows, pad_id).items()}


def policy_and_reference(ctx, same=False, trainable_reference=False) -> tuple[dict, dict]:
    """The specs of the policy (the tiny model with seeded noise, unless `same`) and of the reference."""
    return (ctx.model_spec(requires_grad=True, noise=0.0 if same else 0.05, seed=1),
            ctx.model_spec(requires_grad=trainable_reference))


def batch_loss_by_student(ns, ctx, case, rows, beta, max_seq_len, same=False):
    """The student's dpo_batch_loss on models built on the other side: (loss, accuracy, margin)."""
    policy, reference = (ns.new(spec) for spec in policy_and_reference(ctx, same))
    function = student(ns, "dpo_batch_loss", ISOLATE_BATCH_LOSS)
    return triple(function(policy, reference, batch_tensors(rows, ctx.pad_id), beta, max_seq_len), case,
                  "dpo_batch_loss")


def expected_batch(ctx, key, rows, beta, max_seq_len):
    def compute():
        policy, reference = (model_from_spec(spec) for spec in policy_and_reference(ctx))
        return ref.batch_dpo_numbers(policy, reference, rows, beta, max_seq_len)
    return ctx.cached(key, compute)


def expect_batch_numbers(case, expected, seen, hint):
    loss, accuracy, margin = (scalar(v, case, name) for v, name in zip(seen, ("loss", "accuracy", "margin")))
    if not (close(loss, expected["loss"], 2e-4, 1e-3) and close(accuracy, expected["accuracy"], 1e-6)
            and close(margin, expected["margin"], 2e-3, 1e-3)):
        raise CheckFailure(
            case, f"loss {expected['loss']:.5f}, accuracy {expected['accuracy']:.4g}, margin {expected['margin']:.5f}",
            f"loss {loss:.5f}, accuracy {accuracy:.4g}, margin {margin:.5f}", hint)


@training_check.case("dpo_batch_loss: the same model as policy and reference gives log 2, 0, 0", weight=1)
def _(ns, ctx):
    case = "policy = reference"
    loss, accuracy, margin = batch_loss_by_student(ns, ctx, case, training_rows(ctx, False), 0.1, None, same=True)
    seen = [scalar(v, case, name) for v, name in ((loss, "loss"), (accuracy, "accuracy"), (margin, "margin"))]
    if not (close(seen[0], math.log(2), 1e-4) and close(seen[1], 0.0, 1e-6) and close(seen[2], 0.0, 1e-4)):
        raise CheckFailure(case, f"loss log 2 = {math.log(2):.5f}, accuracy 0 (all ties), margin 0",
                           f"loss {seen[0]:.5f}, accuracy {seen[1]:.4g}, margin {seen[2]:.5g}",
                           "identical models give identical log-probs, so every implicit reward is 0")


@training_check.case("dpo_batch_loss matches an unpadded reference (beta=0.5)", weight=3)
def _(ns, ctx):
    case = "matches the reference"
    rows = training_rows(ctx, False)
    expected = expected_batch(ctx, "batch-equal", rows, 0.5, None)
    seen = batch_loss_by_student(ns, ctx, case, rows, 0.5, None)
    expect_batch_numbers(case, expected, seen,
                         "score the answer tokens only (loss_mask), run both models on chosen and rejected, and "
                         "pass beta on to dpo_loss")


@training_check.case("dpo_batch_loss with left-padded prompts of different lengths", weight=1)
def _(ns, ctx):
    case = "left-padded prompts"
    rows = training_rows(ctx, True)
    expected = expected_batch(ctx, "batch-padded", rows, 0.5, None)
    seen = batch_loss_by_student(ns, ctx, case, rows, 0.5, None)
    expect_batch_numbers(case, expected, seen,
                         "padding must not change the result: pass the attention mask (sequence_logits does)")


@training_check.case("dpo_batch_loss passes max_seq_len on (answers cut at the end)", weight=1)
def _(ns, ctx):
    case = "max_seq_len"
    rows = training_rows(ctx, True)
    max_seq_len = max(len(row["prompt_input_ids"]) for row in rows) + 4
    expected = expected_batch(ctx, "batch-cut", rows, 0.5, max_seq_len)
    seen = batch_loss_by_student(ns, ctx, case, rows, 0.5, max_seq_len)
    expect_batch_numbers(case, expected, seen,
                         f"with max_seq_len={max_seq_len} only the first 4 tokens of each answer count: give "
                         "max_seq_len to concat_prompt_completion")


def expected_policy_gradients(ctx, rows, beta):
    def compute():
        policy, reference = (model_from_spec(spec) for spec in policy_and_reference(ctx))
        ref.batch_dpo_loss(policy, reference, rows, beta, None).backward()
        return {name: p.grad.detach().clone() for name, p in policy.named_parameters()}
    return ctx.cached(("policy-grads", beta), compute)


@training_check.case("gradients reach the policy (the reference values), never the reference model", weight=2)
def _(ns, ctx):
    case = "gradients"
    rows = training_rows(ctx, False)
    policy_ref, reference_ref = (ns.new(spec) for spec in policy_and_reference(ctx, trainable_reference=True))
    function = student(ns, "dpo_batch_loss", ISOLATE_BATCH_LOSS)
    out, grads = function.with_grads((policy_ref, reference_ref, batch_tensors(rows, ctx.pad_id), 0.5, None),
                                     backward=(0,), grads=(f"ref:{policy_ref.handle}", f"ref:{reference_ref.handle}"))
    loss = triple(out, case, "dpo_batch_loss")[0]
    if not isinstance(loss, torch.Tensor) or not loss.requires_grad or grads is None:
        raise CheckFailure(case, "a loss that carries gradients to the policy", "a loss with requires_grad=False",
                           "run the policy (`model`) WITH gradients; only the reference runs under torch.no_grad()")
    policy_grads, reference_grads = grads.get(f"ref:{policy_ref.handle}") or {}, grads.get(f"ref:{reference_ref.handle}") or {}
    if not any(g is not None and bool(g.abs().sum() > 0) for g in policy_grads.values()):
        raise CheckFailure(case, "non-zero gradients on the policy's parameters", "no gradient",
                           "the policy's log-probs must keep their graph")
    leaked = [name for name, g in reference_grads.items() if g is not None and bool(g.abs().sum() > 0)]
    if leaked:
        raise CheckFailure(case, "no gradient on the reference model", f"gradients on {len(leaked)} of its tensors "
                           f"(e.g. {leaked[0]})",
                           "run ref_model under torch.no_grad() (or detach its log-probs): it must stay frozen "
                           "even when its parameters have requires_grad=True")
    expect_model_gradients(case, "the policy", policy_grads, expected_policy_gradients(ctx, rows, 0.5),
                           "both answers of the policy (chosen AND rejected) must keep their graph, through "
                           "get_log_prob and dpo_loss; nothing of the policy may run under torch.no_grad()")


CHECKS = [training_check]
