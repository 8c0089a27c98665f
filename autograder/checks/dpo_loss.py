"""Hidden checks of Part 1, DPO loss and log-probabilities: `test_dpo_loss`, `test_get_log_prob`.

Every check calls the student's functions on the real SmolLM2 tokenizer and the tiny random model and
compares them with the independent references of `autograder.checks.reference` and with properties the right
answer must have. A function that another test cell grades is replaced by a reference while this one is
graded, so one bug costs points in one place.
"""
import math

import torch

from autograder.checks import reference as ref
from autograder.checks.compare import close, expect_gradient, fmt, scalar, triple
from autograder.checks.framework import Check, CheckFailure, salted, student
from autograder.checks.reference import chat_rows






# ================================================================ test_dpo_loss

loss_check = Check("test_dpo_loss", 1, ("dpo_loss",))


def loss_by_student(ns, case, values, beta, requires_grad=False):
    tensors = [torch.tensor(v, dtype=torch.float32, requires_grad=requires_grad) for v in values]
    out = triple(student(ns, "dpo_loss")(*tensors, beta=beta), case, "dpo_loss")
    return tensors, out


@loss_check.case("returns (loss, accuracy, margin) with a scalar loss tensor", weight=1)
def _(ns, ctx):
    case = "return values"
    _, (loss, accuracy, margin) = loss_by_student(ns, case, ([-1.0, -2.0], [-2.0, -1.0], [-1.5] * 2, [-1.5] * 2),
                                                  beta=0.1, requires_grad=True)
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise CheckFailure(case, "the loss as a one-number torch tensor", repr(loss)[:100],
                           "the training loop calls loss.backward(): keep it a tensor and average over the batch")
    if not loss.requires_grad:
        raise CheckFailure(case, "a loss that carries gradients", "a loss with requires_grad=False",
                           "compute the loss with torch operations, without .item() or torch.no_grad()")
    scalar(accuracy, case, "reward_accuracies")
    scalar(margin, case, "reward_margins")


@loss_check.case("equal log-probs: every margin is 0 and the loss is log 2", weight=1)
def _(ns, ctx):
    case = "zero margins"
    values = ([-3.0, -7.5, -1.0], [-2.0, -4.0, -9.0], [-3.0, -7.5, -1.0], [-2.0, -4.0, -9.0])
    _, (loss, _, margin) = loss_by_student(ns, case, values, beta=0.1)
    loss, margin = scalar(loss, case, "loss"), scalar(margin, case, "reward_margins")
    if not close(loss, math.log(2), 1e-5):
        raise CheckFailure(case, f"loss = -log sigmoid(0) = log 2 = {math.log(2):.5f}", f"loss = {loss:.5f}",
                           "the loss is -log(sigmoid(margin)) averaged over the batch")
    if not close(margin, 0.0, 1e-6):
        raise CheckFailure(case, "reward margin 0", f"{margin:.5g}")


@loss_check.case("a tie (margin exactly 0) does not count as a correct ranking", weight=1)
def _(ns, ctx):
    case = "ties count as wrong"
    values = ([-2.0, -1.0, -3.0, -4.0], [-2.0, -5.0, -3.0, -4.0], [-2.0, -2.0, -3.0, -4.0], [-2.0, -2.0, -3.0, -4.0])
    _, (_, accuracy, _) = loss_by_student(ns, case, values, beta=0.1)
    accuracy = scalar(accuracy, case, "reward_accuracies")
    if not close(accuracy, 0.25, 1e-6):
        raise CheckFailure(case, "accuracy 0.25 (one pair ranked right, three ties)", f"accuracy {accuracy:.4g}",
                           "count r_chosen > r_rejected (strictly) and average over the batch")


def expect_numbers(case, values, beta, seen, hint):
    numbers = ref.dpo_numbers(*values, beta)
    loss, accuracy, margin = (scalar(v, case, name) for v, name in zip(seen, ("loss", "accuracy", "margin")))
    expected = f"loss {numbers['loss']:.5f}, accuracy {numbers['accuracy']:.4g}, margin {numbers['margin']:.5f}"
    observed = f"loss {loss:.5f}, accuracy {accuracy:.4g}, margin {margin:.5f}"
    if not (close(loss, numbers["loss"], 1e-5) and close(accuracy, numbers["accuracy"], 1e-6)
            and close(margin, numbers["margin"], 1e-5)):
        raise CheckFailure(case, expected + f" (margins {fmt(numbers['margins'])}, beta={beta})", observed, hint)


@loss_check.case("hand-computed loss, accuracy and margin", weight=2)
def _(ns, ctx):
    case = "hand-computed values"
    values = ([-4.0, -6.0, -5.0, -10.0], [-7.0, -5.0, -5.5, -9.0], [-5.0, -5.0, -5.0, -12.0],
              [-5.0, -5.0, -5.0, -8.0])
    _, seen = loss_by_student(ns, case, values, beta=0.5)
    expect_numbers(case, values, 0.5, seen,
                   "rewards are beta * (logp - ref_logp); the loss is the mean of -log sigmoid(r_chosen - r_rejected)")


@loss_check.case("beta scales the rewards inside the sigmoid", weight=1)
def _(ns, ctx):
    case = "beta inside the sigmoid"
    values = ([-4.0, -6.0], [-7.0, -5.0], [-5.0, -5.0], [-5.0, -5.0])
    for beta in (2.0, 0.05):
        _, seen = loss_by_student(ns, case, values, beta=beta)
        expect_numbers(case, values, beta, seen,
                       "beta multiplies the log-ratios before the sigmoid: -log sigmoid(beta * (...)), "
                       "not -beta * log sigmoid(...)")


@loss_check.case("the loss is a mean over the batch, not a sum", weight=1)
def _(ns, ctx):
    case = "mean over the batch"
    values = ([-4.0, -6.0, -5.0], [-7.0, -5.0, -5.5], [-5.0] * 3, [-5.0] * 3)
    doubled = tuple(v + v for v in values)
    _, (single, _, _) = loss_by_student(ns, case, values, beta=0.3)
    _, (twice, _, _) = loss_by_student(ns, case, doubled, beta=0.3)
    single, twice = scalar(single, case, "loss"), scalar(twice, case, "loss")
    if not close(twice, single, 1e-5):
        raise CheckFailure(case, f"the same loss ({single:.5f}) for a batch repeated twice", f"{twice:.5f}",
                           "average the per-pair losses with .mean()")


@loss_check.case("gradients raise the chosen log-probs and lower the rejected ones, exactly", weight=2)
def _(ns, ctx):
    case = "gradients"
    generator = torch.Generator().manual_seed(salted(11))
    values = [(-6 * torch.rand(5, generator=generator) - 1).tolist() for _ in range(4)]
    beta = 0.5
    tensors = [torch.tensor(v, dtype=torch.float32, requires_grad=True) for v in values]
    out, grads = student(ns, "dpo_loss").with_grads(tensors, {"beta": beta}, backward=(0,),
                                                    grads=("arg:0", "arg:1", "arg:2", "arg:3"))
    loss = triple(out, case, "dpo_loss")[0]
    if grads is None or not isinstance(loss, torch.Tensor) or not loss.requires_grad:
        raise CheckFailure(case, "a loss tensor that carries gradients", repr(loss)[:80],
                           "compute the loss with torch operations, without .item() or torch.no_grad()")
    inputs = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in values]
    ref.isolated_dpo_loss(*inputs, beta=beta)[0].backward()
    names = ("policy_chosen_logps", "policy_rejected_logps", "reference_chosen_logps", "reference_rejected_logps")
    for index, (name, reference) in enumerate(zip(names, inputs)):
        expect_gradient(case, name, grads.get(f"arg:{index}"), reference.grad.float(),
                        "minimising the loss must make chosen answers likelier and rejected ones less likely: "
                        "check the sign and the order of the terms, beta inside the sigmoid, and the mean")


# ================================================================ test_get_log_prob

logp_check = Check("test_get_log_prob", 1, ("get_log_prob",))


def log_prob_by_student(ns, case, logits, labels, mask):
    out = student(ns, "get_log_prob")(logits, labels.clone(), mask.clone())
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (labels.shape[0],):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise CheckFailure(case, f"a tensor of shape ({labels.shape[0]},): one log-prob per sequence", shape,
                           "sum over the sequence dimension, keep the batch dimension")
    return out


def random_inputs(seed=0, batch=3, length=7, vocab=11):
    generator = torch.Generator().manual_seed(salted(seed))
    logits = 3 * torch.randn(batch, length, vocab, generator=generator)
    labels = torch.randint(0, vocab, (batch, length), generator=generator)
    return logits, labels


def expect_log_probs(case, seen, logits, labels, mask, hint, atol=1e-4):
    expected = ref.loop_log_prob(logits, labels, mask)
    seen_values = seen.detach().double().tolist()
    if not all(close(s, e, atol) for s, e in zip(seen_values, expected)):
        raise CheckFailure(case, fmt(expected), fmt(seen_values), hint)


@logp_check.case("returns one value per sequence", weight=1)
def _(ns, ctx):
    logits, labels = random_inputs()
    log_prob_by_student(ns, "one value per sequence", logits, labels, torch.ones_like(labels))


@logp_check.case("matches a token-by-token log_softmax loop (labels shifted by one)", weight=3)
def _(ns, ctx):
    case = "per-token loop"
    logits, labels = random_inputs(seed=1)
    mask = torch.tensor([[0, 0, 1, 1, 1, 0, 0], [0, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1, 0]])
    seen = log_prob_by_student(ns, case, logits.clone(), labels, mask)
    expect_log_probs(case, seen, logits, labels, mask,
                     "the logits at position t-1 score the label at position t: compare logits[:, :-1] with "
                     "labels[:, 1:] and mask[:, 1:], and SUM the log-probs of the masked tokens")


@logp_check.case("the first position is never scored, and an empty mask gives 0", weight=1)
def _(ns, ctx):
    case = "first position and empty mask"
    logits, labels = random_inputs(seed=2, batch=2)
    mask = torch.tensor([[1, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]])
    seen = log_prob_by_student(ns, case, logits.clone(), labels, mask)
    expect_log_probs(case, seen, logits, labels, mask,
                     "nothing predicts the first token, and a row without answer tokens sums to 0 (use a sum, "
                     "not a mean, which divides by zero here)")


@logp_check.case("a sum over the answer tokens, not a mean", weight=1)
def _(ns, ctx):
    case = "sum, not mean"
    logits, labels = random_inputs(seed=3, batch=2, length=9)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 1, 1, 0]])
    seen = log_prob_by_student(ns, case, logits.clone(), labels, mask)
    expect_log_probs(case, seen, logits, labels, mask,
                     "log p(answer | prompt) is the SUM of the per-token log-probs")


@logp_check.case("real model logits over the 49k-token vocabulary", weight=1)
def _(ns, ctx):
    case = "real model"
    row = chat_rows(ctx)[0]
    ids = torch.tensor([row["prompt_input_ids"] + row["chosen_input_ids"]])
    mask = torch.tensor([[0] * len(row["prompt_input_ids"]) + [1] * len(row["chosen_input_ids"])])
    with torch.no_grad():
        logits = ctx.cached("tiny_logits_row0", lambda: ctx.model()(input_ids=ids).logits)
    seen = log_prob_by_student(ns, case, logits.clone(), ids, mask)
    expect_log_probs(case, seen, logits, ids, mask, "check the shift and the masking on a real vocabulary",
                     atol=1e-3)


@logp_check.case("gradients reach the logits of the scored positions only, with the right values", weight=1)
def _(ns, ctx):
    case = "gradients"
    base, labels = random_inputs(seed=4, batch=2)
    logits = base.clone().requires_grad_(True)
    mask = torch.tensor([[0, 0, 0, 1, 1, 0, 0], [0, 1, 1, 0, 0, 0, 0]])
    seen, grads = student(ns, "get_log_prob").with_grads((logits, labels.clone(), mask.clone()), backward=(),
                                                         grads=("arg:0",))
    if not isinstance(seen, torch.Tensor) or not seen.requires_grad or grads is None:
        raise CheckFailure(case, "log-probs that carry gradients back to the logits", "requires_grad=False",
                           "stay with torch operations (no .item(), .tolist() or torch.no_grad())")
    expected_logits = base.clone().requires_grad_(True)
    ref.isolated_get_log_prob(expected_logits, labels, mask).sum().backward()
    seen_grad = grads.get("arg:0")
    if seen_grad is None:
        raise CheckFailure(case, "gradients on the logits", "no gradient")
    scored = (seen_grad.abs().sum(-1) > 0).tolist()
    expected = [positions + [False] for positions in mask[:, 1:].bool().tolist()]
    if scored != expected:
        raise CheckFailure(case, f"gradients at the positions {expected} (the ones before each answer token)",
                           f"gradients at {scored}", "the logits at t-1 score the token at t; nothing scores the "
                           "last position")
    expect_gradient(case, "the logits", seen_grad, expected_logits.grad,
                    "the gradient of a log-softmax is one-hot(label) - softmax: take the log-softmax of the logits "
                    "themselves (not of detached or rescaled copies)")


CHECKS = [loss_check, logp_check]
