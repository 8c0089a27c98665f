"""Hidden check of the model analysis: `test_logprob_analysis` (`sequence_log_probs`).

Student code runs on the other side of the runner (`autograder.grading.remote`); what comes back is data
(models as `RemoteModel`, configurations as their fields, kept objects as handles). The tokenizers and model
folders handed to student code come from `autograder.checks.models`. Functions graded by another test cell
and the device constants are replaced while a function is graded, so one bug costs points in one place.
"""
from collections.abc import Mapping

import torch

from autograder.checks import reference as ref
from autograder.checks.compare import close, fmt
from autograder.checks.framework import Check, CheckFailure, shorten, student
from autograder.checks.models import CPU, kind_of, make_tokenizer
from autograder.checks.reference import text_log_prob






# ================================================================ test_logprob_analysis

logprob_check = Check("test_logprob_analysis", 0.5, ("sequence_log_probs",))
ISOLATE_LOGPROBS = {"get_log_prob": ref.isolated_get_log_prob, **CPU}
TEXTS = [
    "Paris is the capital of France.",
    "Hi",
    "Tin is a chemical element with the symbol Sn. 🙂 It is soft.",
    "Line one.\nLine two, which is a little longer than the first line.",
    "A hash table maps keys to values.",
]
RESULT_KEYS = ("total", "mean", "num_tokens")


def floats(value, case, key, n) -> list[float]:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().tolist()
    elif hasattr(value, "tolist"):
        value = value.tolist()
    try:
        values = [float(v) for v in value]
    except (TypeError, ValueError):
        raise CheckFailure(case, f"'{key}' as {n} numbers (an array or list)", shorten(repr(value), 120)) from None
    if len(values) != n:
        raise CheckFailure(case, f"'{key}' with one value per text ({n})", f"{len(values)} values")
    return values


def log_probs_by_student(ns, ctx, case, texts, side="right", **kwargs):
    # the runtime re-creates a function decorated with @torch.no_grad() so that the stand-ins reach it too
    function = student(ns, "sequence_log_probs", ISOLATE_LOGPROBS)
    out = function(ns.new(ctx.model_spec()), make_tokenizer(ctx, "eos", side), list(texts), **kwargs)
    if not isinstance(out, Mapping) or any(key not in out for key in RESULT_KEYS):
        seen = f"keys {sorted(out)}" if isinstance(out, Mapping) else kind_of(out)
        raise CheckFailure(case, f"a dict with the keys {list(RESULT_KEYS)}", seen)
    return {key: floats(out[key], case, key, len(texts)) for key in RESULT_KEYS}


def expected_log_probs(ctx, texts, max_length=128) -> dict[str, list[float]]:
    def compute():
        model = ctx.model()
        total, count = [], []
        for text in texts:
            ids = ref.token_ids(text, ctx.tokenizer)[:max_length]
            total.append(text_log_prob(model, ids))
            count.append(max(len(ids) - 1, 0))
        return {"total": total, "num_tokens": count,
                "mean": [t / c if c else 0.0 for t, c in zip(total, count)]}

    return ctx.cached(("part2-log-probs", tuple(texts), max_length), compute)


def expect_values(case, expected, seen, keys, hint):
    for key in keys:
        if not all(close(s, e, 1e-3, 1e-4) for s, e in zip(seen[key], expected[key])):
            raise CheckFailure(case, f"{key} = {fmt(expected[key])}", f"{key} = {fmt(seen[key])}", hint)


@logprob_check.case("returns total, mean and num_tokens with one value per text", weight=1)
def _(ns, ctx):
    log_probs_by_student(ns, ctx, "result format", TEXTS[:2], batch_size=2)


@logprob_check.case("total = sum of log p(token | previous tokens), as if each text were scored alone", weight=3)
def _(ns, ctx):
    case = "total log-prob"
    seen = log_probs_by_student(ns, ctx, case, TEXTS, batch_size=2)
    expect_values(case, expected_log_probs(ctx, TEXTS), seen, ("total",),
                  "score tokens 2..n of each text with the logits of the position before, leave the padding out "
                  "of the sum, and keep the texts in their order")


@logprob_check.case("num_tokens = n - 1 and mean = total / num_tokens (0 for a one-token text)", weight=2)
def _(ns, ctx):
    case = "mean and num_tokens"
    seen = log_probs_by_student(ns, ctx, case, TEXTS, batch_size=2)
    expected = expected_log_probs(ctx, TEXTS)
    expect_values(case, expected, seen, ("num_tokens",), "the first token is not scored: n tokens give n - 1 "
                                                          "scores, and padding does not count")
    expect_values(case, expected, seen, ("mean",), "mean = total / num_tokens, the log-prob per scored token")


@logprob_check.case("the same values for any batch size, with a tokenizer that pads on the left", weight=2)
def _(ns, ctx):
    case = "batch size and padding side"
    expected = expected_log_probs(ctx, TEXTS)
    for side, batch_size in (("right", 1), ("left", len(TEXTS))):
        seen = log_probs_by_student(ns, ctx, case, TEXTS, side=side, batch_size=batch_size)
        expect_values(case, expected, seen, RESULT_KEYS,
                      f"with batch_size={batch_size} and a tokenizer whose padding_side is {side!r}: pad on the "
                      "right (padding_side='right' in the tokenizer call) and mask the padding")


@logprob_check.case("texts longer than max_length keep their first max_length tokens", weight=1)
def _(ns, ctx):
    case = "max_length"
    texts = [TEXTS[2], TEXTS[0]]
    seen = log_probs_by_student(ns, ctx, case, texts, batch_size=2, max_length=6)
    expect_values(case, expected_log_probs(ctx, texts, max_length=6), seen, RESULT_KEYS,
                  "tokenize with truncation=True, max_length=max_length (the end of a long text is cut)")


CHECKS = [logprob_check]
