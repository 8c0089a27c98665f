"""Hidden checks of Part 1 (DPO from scratch), one per nbgrader test cell.

Every check calls the student's functions on the real SmolLM2 tokenizer and the tiny random model, and
compares them with the independent references of `autograder.checks.reference` and with properties the
right answer must have (truncation sides, masks that keep `<|im_end|>` although it is the pad token, ties
that count as wrong, gradients that flow to the policy only...). A function that another test cell grades is
replaced by a reference while this one is graded, so one bug costs points in one place.
"""
import math

import torch

from autograder.checks import reference as ref
from autograder.checks.compare import expect_gradient, expect_model_gradients
from autograder.checks.framework import Check, CheckFailure, call_student, salted, shorten, student
from autograder.grading.remote import Provided

EXAMPLES = [
    {"prompt": "Do you like rainy days?",
     "chosen": "I love them! ☔ The sound of rain on the window is so cozy. Do you?",
     "rejected": "As an AI language model, I do not experience weather."},
    {"prompt": "Line one.\nLine two: what's \"quoted\" here, and why?",
     "chosen": "Ha, two lines 😄\nThe quoted bit is just emphasis!",
     "rejected": "I cannot determine the intent of the quotation."},
    {"prompt": "Quick one: cats or dogs? 🐱🐶",
     "chosen": "Dogs, no doubt! 🐕 They're always so happy to see you.",
     "rejected": "I do not have preferences."},
    {"prompt": "What's the best thing you've eaten this week? I had amazing ramen on Tuesday night.",
     "chosen": "Ooh, ramen! 🍜 Nothing beats a rich broth on a cold night.",
     "rejected": "As an artificial intelligence, I do not eat food, so I cannot answer this question."},
]


# ---------------------------------------------------------------- conversions of student outputs

def int_lists(value, case: str, what: str, mask: bool = False):
    """A (nested) sequence of integers as Python lists (or an int); CheckFailure for anything else.

    Token ids must have an integer dtype (the embedding needs it); a `mask` may also be a float tensor of
    whole numbers (torch.ones/zeros default to float32, and the model accepts such masks).
    """
    if isinstance(value, torch.Tensor):
        if value.is_complex() or (value.is_floating_point() and not (mask and torch.equal(value, value.round()))):
            raise CheckFailure(case, f"{what} holding integers", f"a {value.dtype} tensor",
                               "token ids must have an integer dtype (torch.long)")
        return value.long().tolist()
    if hasattr(value, "tolist") and not isinstance(value, (list, tuple)):  # numpy arrays and scalars
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [int_lists(v, case, what) for v in value]
    if isinstance(value, int):  # bool included
        return int(value)
    raise CheckFailure(case, f"{what} holding integers (a list or tensor of token ids)",
                       f"{type(value).__name__}: {shorten(repr(value), 80)}")


def scalar(value, case: str, what: str) -> float:
    """A Python float from a number, a 0-d tensor or a one-element tensor (detached or not)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise CheckFailure(case, f"{what} as a single number (a scalar)", f"a tensor of shape {tuple(value.shape)}",
                               "average over the batch: the loss and the statistics are one number each")
        return float(value.detach().reshape(()))
    try:
        return float(value)
    except (TypeError, ValueError):
        raise CheckFailure(case, f"{what} as a number", f"{type(value).__name__}: {value!r}") from None


def triple(value, case: str, what: str) -> tuple:
    """The (loss, reward_accuracies, reward_margins) triple."""
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        length = f" of length {len(value)}" if hasattr(value, "__len__") else ""
        raise CheckFailure(case, f"{what} to return a tuple (loss, reward_accuracies, reward_margins)",
                           f"{type(value).__name__}{length}")
    return tuple(value)


def close(seen: float, expected: float, atol: float, rtol: float = 1e-4) -> bool:
    return math.isfinite(seen) and abs(seen - expected) <= atol + rtol * abs(expected)


def difference(name: str, expected, seen) -> tuple[str, str]:
    """Expected/seen descriptions of two (nested) lists that point at their first difference."""
    if expected and isinstance(expected[0], list):
        if not (isinstance(seen, list) and len(seen) == len(expected) and all(isinstance(r, list) for r in seen)):
            return f"{name} with {len(expected)} rows", f"{name} = {shorten_list(seen)}"
        for b, (e, s) in enumerate(zip(expected, seen)):
            if e != s:
                return difference(f"{name}[{b}]", e, s)
        return f"{name} = {shorten_list(expected)}", f"{name} = {shorten_list(seen)}"
    if len(expected) != len(seen):
        return (f"{name} of length {len(expected)}: {shorten_list(expected)}",
                f"length {len(seen)}: {shorten_list(seen)}")
    first = next((i for i, (e, s) in enumerate(zip(expected, seen)) if e != s), 0)
    return (f"{name} = {shorten_list(expected, first)} (first difference at position {first})",
            f"{name} = {shorten_list(seen, first)}")


def shorten_list(values, around: int = 0, width: int = 14) -> str:
    """A long list cut to a window around one position."""
    if not isinstance(values, list) or len(values) <= width + 4:
        return repr(values)
    start = max(0, min(around - 4, len(values) - width))
    stop = start + width
    inner = ", ".join(repr(v) for v in values[start:stop])
    return ("[" if start == 0 else f"[... {start} values ..., ") + inner + ("]" if stop >= len(values) else ", ...]")


def fmt(values) -> str:
    if isinstance(values, (list, tuple)):
        return "[" + ", ".join(fmt(v) for v in values) + "]"
    return f"{values:.5g}" if isinstance(values, float) else repr(values)


# ================================================================ test_apply_chat_template

apply_check = Check("test_apply_chat_template", 0.2, ("apply_chat_template",))


def formatted_by_student(ns, ctx, case, example):
    out = student(ns, "apply_chat_template")(dict(example), tokenizer=ctx.tokenizer)
    if not isinstance(out, dict):
        raise CheckFailure(case, "a dict with 'prompt', 'chosen' and 'rejected'", f"{type(out).__name__}")
    missing = [k for k in ("prompt", "chosen", "rejected") if k not in out]
    if missing:
        raise CheckFailure(case, "a dict with 'prompt', 'chosen' and 'rejected'", f"keys {list(out)}",
                           f"add the missing keys {missing}")
    for key in ("prompt", "chosen", "rejected"):
        if not isinstance(out[key], str):
            raise CheckFailure(case, f"'{key}' to be text (str)", f"{type(out[key]).__name__}",
                               "render with tokenizer.apply_chat_template(..., tokenize=False)")
    return out


@apply_check.case("returns a dict of texts 'prompt', 'chosen', 'rejected'", weight=1)
def _(ns, ctx):
    formatted_by_student(ns, ctx, "returns a dict of texts", EXAMPLES[0])


@apply_check.case("the prompt ends with the generation prompt (assistant header)", weight=2)
def _(ns, ctx):
    case = "prompt ends with the generation prompt"
    for example in EXAMPLES[:2]:
        prompt = formatted_by_student(ns, ctx, case, example)["prompt"]
        if not prompt.endswith(ref.ASSISTANT_HEADER):
            raise CheckFailure(case, f"a prompt ending with {ref.ASSISTANT_HEADER!r}", f"...{prompt[-60:]!r}",
                               "pass add_generation_prompt=True when you render the user turn")


@apply_check.case("the prompt is the chat template's rendering of the user turn", weight=1)
def _(ns, ctx):
    case = "prompt is the rendered user turn"
    for example in EXAMPLES[:2]:
        expected = ref.format_example(example, ctx.tokenizer)["prompt"]
        prompt = formatted_by_student(ns, ctx, case, example)["prompt"]
        if prompt != expected:
            raise CheckFailure(case, repr(expected), repr(prompt),
                               "let tokenizer.apply_chat_template write the special tokens; this template adds a "
                               "default system message, which belongs to the prompt")


@apply_check.case("the answers start right after the assistant header, without it", weight=2)
def _(ns, ctx):
    case = "answers exclude the assistant header"
    for example in EXAMPLES[:2]:
        out = formatted_by_student(ns, ctx, case, example)
        for key in ("chosen", "rejected"):
            if not out[key].startswith(example[key]):
                raise CheckFailure(case, f"'{key}' starting with the answer text {example[key][:30]!r}...",
                                   repr(out[key][:80]),
                                   "cut the rendered prompt (with its generation prompt) off the full conversation")


@apply_check.case("the answers are exactly the rest of the conversation (end-of-turn token included)", weight=2)
def _(ns, ctx):
    case = "answers are the rest of the conversation"
    for example in EXAMPLES:
        expected = ref.format_example(example, ctx.tokenizer)
        out = formatted_by_student(ns, ctx, case, example)
        for key in ("chosen", "rejected"):
            if out[key] != expected[key]:
                raise CheckFailure(case, f"{key} = {expected[key]!r}", f"{key} = {out[key]!r}",
                                   "the answer is the full rendered conversation minus the prompt; it ends with "
                                   f"the end-of-turn token {ctx.tokenizer.eos_token!r} and what follows it")


# ================================================================ test_tokenize_row

tokenize_check = Check("test_tokenize_row", 0.2, ("tokenize_row",))
ID_KEYS = ("prompt_input_ids", "chosen_input_ids", "rejected_input_ids")


def tokenized_by_student(ns, ctx, case, formatted, **limits):
    out = student(ns, "tokenize_row")(dict(formatted), tokenizer=ctx.tokenizer, **limits)
    if not isinstance(out, dict) or any(k not in out for k in ID_KEYS):
        seen = f"keys {list(out)}" if isinstance(out, dict) else type(out).__name__
        raise CheckFailure(case, f"a dict with the keys {list(ID_KEYS)}", seen)
    row = {key: int_lists(out[key], case, key) for key in ID_KEYS}
    for key in ID_KEYS:
        if not isinstance(row[key], list) or any(not isinstance(v, int) for v in row[key]):
            raise CheckFailure(case, f"{key} as a flat list of token ids", shorten(repr(row[key]), 120),
                               "tokenizer(text)['input_ids'] is already a flat list for one text")
    return row


def compare_rows(case, expected, seen, hint):
    for key in ID_KEYS:
        if seen[key] != expected[key]:
            raise CheckFailure(case, *difference(key, expected[key], seen[key]), hint)


@tokenize_check.case("returns the three id lists", weight=1)
def _(ns, ctx):
    formatted = ref.format_example(EXAMPLES[0], ctx.tokenizer)
    tokenized_by_student(ns, ctx, "returns the three id lists", formatted,
                         max_prompt_length=None, max_completion_length=None)


@tokenize_check.case("without limits: the tokenizer's ids, no special tokens added", weight=2)
def _(ns, ctx):
    case = "without limits"
    for example in EXAMPLES[:3]:
        formatted = ref.format_example(example, ctx.tokenizer)
        expected = ref.tokenized_row(formatted, ctx.tokenizer, None, None)
        seen = tokenized_by_student(ns, ctx, case, formatted, max_prompt_length=None, max_completion_length=None)
        compare_rows(case, expected, seen, "tokenize each text with tokenizer(text, add_special_tokens=False); "
                                           "None means no truncation")


@tokenize_check.case("a long prompt keeps its LAST tokens, so the assistant header survives", weight=2)
def _(ns, ctx):
    case = "prompt truncation"
    formatted = ref.format_example(EXAMPLES[3], ctx.tokenizer)
    header = ref.token_ids(ref.ASSISTANT_HEADER, ctx.tokenizer)
    for limit in (6, 11):
        seen = tokenized_by_student(ns, ctx, case, formatted, max_prompt_length=limit, max_completion_length=None)
        expected = ref.tokenized_row(formatted, ctx.tokenizer, limit, None)
        if seen["prompt_input_ids"] != expected["prompt_input_ids"]:
            kept_header = seen["prompt_input_ids"][-len(header):] == header
            raise CheckFailure(case, f"the last {limit} prompt tokens {expected['prompt_input_ids']}",
                               f"{seen['prompt_input_ids']}" + ("" if kept_header else " (assistant header lost)"),
                               "cut long prompts from the left: ids[-max_prompt_length:]")


@tokenize_check.case("long answers keep their FIRST tokens", weight=2)
def _(ns, ctx):
    case = "answer truncation"
    formatted = ref.format_example(EXAMPLES[3], ctx.tokenizer)
    for limit in (1, 5):
        seen = tokenized_by_student(ns, ctx, case, formatted, max_prompt_length=None, max_completion_length=limit)
        expected = ref.tokenized_row(formatted, ctx.tokenizer, None, limit)
        for key in ("chosen_input_ids", "rejected_input_ids"):
            if seen[key] != expected[key]:
                raise CheckFailure(case, f"{key} = the first {limit} tokens {expected[key]}", f"{key} = {seen[key]}",
                                   "cut long answers from the right: ids[:max_completion_length]")


@tokenize_check.case("generous limits and the defaults (512-token prompts, whole answers)", weight=1)
def _(ns, ctx):
    case = "limits and defaults"
    formatted = ref.format_example(EXAMPLES[1], ctx.tokenizer)
    seen = tokenized_by_student(ns, ctx, case, formatted, max_prompt_length=10_000, max_completion_length=10_000)
    compare_rows(case, ref.tokenized_row(formatted, ctx.tokenizer, None, None), seen,
                 "limits longer than the text keep everything")
    long_example = dict(EXAMPLES[0], prompt=" ".join(f"word{i}" for i in range(400)))
    formatted = ref.format_example(long_example, ctx.tokenizer)
    seen = tokenized_by_student(ns, ctx, case, formatted)
    compare_rows(case, ref.tokenized_row(formatted, ctx.tokenizer, 512, None), seen,
                 "keep the defaults of the signature: max_prompt_length=512, max_completion_length=None")


# ================================================================ test_pad

pad_check = Check("test_pad", 0.1, ("pad",))
PAD_INPUTS = [[3, 1, 4, 1, 5], [9], [2, 6], [5, 3, 5, 8, 9]]


def padded_by_student(ns, case, sequences, *args, **kwargs):
    tensors = [torch.tensor(s, dtype=torch.long) for s in sequences]
    out = student(ns, "pad")(tensors, *args, **kwargs)
    if not isinstance(out, torch.Tensor):
        raise CheckFailure(case, "a torch.Tensor", type(out).__name__, "stack the padded rows into one tensor")
    if out.is_floating_point():
        raise CheckFailure(case, "the integer dtype of the inputs", str(out.dtype))
    return out.tolist()


@pad_check.case("right padding", weight=2)
def _(ns, ctx):
    seen = padded_by_student(ns, "right padding", PAD_INPUTS, padding_value=-1, padding_side="right")
    expected = ref.padded_lists(PAD_INPUTS, -1, "right")
    if seen != expected:
        raise CheckFailure("right padding", expected, seen, "write each sequence at the start of its row")


@pad_check.case("left padding", weight=2)
def _(ns, ctx):
    seen = padded_by_student(ns, "left padding", PAD_INPUTS, padding_value=7, padding_side="left")
    expected = ref.padded_lists(PAD_INPUTS, 7, "left")
    if seen != expected:
        raise CheckFailure("left padding", expected, seen,
                           "with padding_side='left' the padding goes before each sequence, so all rows end together")


@pad_check.case("default arguments pad with 0 on the right", weight=1)
def _(ns, ctx):
    seen = padded_by_student(ns, "defaults", PAD_INPUTS[:3])
    expected = ref.padded_lists(PAD_INPUTS[:3], 0, "right")
    if seen != expected:
        raise CheckFailure("defaults", expected, seen, "keep the defaults padding_value=0, padding_side='right'")


@pad_check.case("one sequence, and sequences of equal length, stay as they are", weight=1)
def _(ns, ctx):
    for sequences in ([[4, 2]], [[1, 2, 3], [4, 5, 6]]):
        for side in ("left", "right"):
            seen = padded_by_student(ns, "nothing to pad", sequences, padding_value=0, padding_side=side)
            if seen != sequences:
                raise CheckFailure("nothing to pad", sequences, seen, f"padding_side={side!r}")


# ================================================================ test_pad_collate_fn

collate_check = Check("test_pad_collate_fn", 0.2, ("pad_collate_fn", "make_dataloader"))
COLLATE_KEYS = [f"{k}_{s}" for k in ("prompt", "chosen", "rejected") for s in ("input_ids", "attn_mask")]
ISOLATE_COLLATE = {"pad": ref.isolated_pad}


def chat_rows(ctx, examples=EXAMPLES) -> list[dict[str, list[int]]]:
    """Tokenized rows of real chat examples (the answers end with <|im_end|>, which is also the pad token)."""
    return ctx.cached(("rows", len(examples)), lambda: [
        ref.tokenized_row(ref.format_example(e, ctx.tokenizer), ctx.tokenizer, None, None) for e in examples
    ])


def collated_by_student(ns, ctx, case, rows):
    batch = [{key: torch.tensor(row[key], dtype=torch.long) for key in ID_KEYS} for row in rows]
    out = student(ns, "pad_collate_fn", ISOLATE_COLLATE)(batch, pad_token_id=ctx.pad_id)
    return collated_lists(case, out, len(rows))


def collated_lists(case, out, n):
    if not isinstance(out, dict) or any(key not in out for key in COLLATE_KEYS):
        seen = f"keys {list(out)}" if isinstance(out, dict) else type(out).__name__
        raise CheckFailure(case, f"a dict with the keys {COLLATE_KEYS}", seen)
    lists = {}
    for key in COLLATE_KEYS:
        if not isinstance(out[key], torch.Tensor) or out[key].dim() != 2 or out[key].shape[0] != n:
            shape = tuple(out[key].shape) if isinstance(out[key], torch.Tensor) else type(out[key]).__name__
            raise CheckFailure(case, f"{key} as a [batch_size={n}, length] tensor", shape)
        lists[key] = int_lists(out[key], case, key, mask=key.endswith("_mask"))
    for key in ("prompt", "chosen", "rejected"):
        if len(lists[f"{key}_input_ids"][0]) != len(lists[f"{key}_attn_mask"][0]):
            raise CheckFailure(case, f"{key}_input_ids and {key}_attn_mask of the same shape",
                               f"{tuple(out[key + '_input_ids'].shape)} and {tuple(out[key + '_attn_mask'].shape)}")
    return lists


@collate_check.case("returns the six [batch, length] tensors", weight=1)
def _(ns, ctx):
    collated_by_student(ns, ctx, "returns the six tensors", chat_rows(ctx)[:2])


def expect_collated(case, seen, expected, keys, ids_hint, mask_hint):
    for key in keys:
        if seen[key] != expected[key]:
            raise CheckFailure(case, *difference(key, expected[key], seen[key]),
                               ids_hint if key.endswith("_input_ids") else mask_hint)


MASK_HINT = ("the mask is 1 on each sequence's own tokens and 0 on the padding; build it from the sequence lengths "
             "(<|im_end|> is also the pad token, so `ids != pad_token_id` hides real tokens)")


@collate_check.case("prompts are padded on the LEFT with pad_token_id", weight=2)
def _(ns, ctx):
    case = "prompts padded on the left"
    rows = chat_rows(ctx)
    expect_collated(case, collated_by_student(ns, ctx, case, rows), ref.collated(rows, ctx.pad_id),
                    ("prompt_input_ids", "prompt_attn_mask"),
                    "pad prompts on the left with pad_token_id, so that every prompt ends where its answer starts",
                    MASK_HINT)


@collate_check.case("answers are padded on the right with pad_token_id", weight=2)
def _(ns, ctx):
    case = "answers padded on the right"
    rows = chat_rows(ctx)
    expect_collated(case, collated_by_student(ns, ctx, case, rows), ref.collated(rows, ctx.pad_id),
                    ("chosen_input_ids", "chosen_attn_mask", "rejected_input_ids", "rejected_attn_mask"),
                    "pad answers on the right with pad_token_id", MASK_HINT)


@collate_check.case("masks count <|im_end|> as a real token although it is also the pad token", weight=2)
def _(ns, ctx):
    case = "masks keep <|im_end|>"
    pad = ctx.pad_id
    rows = [
        {"prompt_input_ids": [11, pad, 12], "chosen_input_ids": [21, 22, pad, 198], "rejected_input_ids": [pad]},
        {"prompt_input_ids": [13], "chosen_input_ids": [pad], "rejected_input_ids": [31, pad, 32, pad, 198]},
    ]
    seen, expected = collated_by_student(ns, ctx, case, rows), ref.collated(rows, pad)
    expect_collated(case, seen, expected, ("prompt_attn_mask", "chosen_attn_mask", "rejected_attn_mask"), "",
                    f"the pad id {pad} is also <|im_end|>, which ends every answer: build the masks from the "
                    "sequence lengths, not from `ids != pad_token_id`")


@collate_check.case("make_dataloader yields these batches, in order, with the tokenizer's pad id", weight=2)
def _(ns, ctx):
    from datasets import Dataset

    case = "make_dataloader"
    rows = chat_rows(ctx)
    dataset = Dataset.from_list([{key: row[key] for key in ID_KEYS} for row in rows])
    function = student(ns, "make_dataloader", ISOLATE_COLLATE)
    reply = function.reply((dataset, ctx.tokenizer), {"batch_size": 3, "shuffle": False}, keep=True)
    batches = call_student("make_dataloader", "iterating the DataLoader of `make_dataloader`",
                           ns.iterate, reply.ref, 8)
    if len(batches) != 2:
        raise CheckFailure(case, "2 batches for 4 examples with batch_size=3", f"{len(batches)} batches")
    for index, chunk in enumerate((rows[:3], rows[3:])):
        seen = collated_lists(case, batches[index], len(chunk))
        expected = ref.collated(chunk, ctx.pad_id)
        expected = {f"batch {index}: {key}": value for key, value in expected.items()}
        seen = {f"batch {index}: {key}": value for key, value in seen.items()}
        expect_collated(case, seen, expected, list(expected),
                        f"pad with tokenizer.pad_token_id ({ctx.pad_id}) and keep the order when shuffle=False",
                        MASK_HINT)


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


PROMPT_KEEP_EQUAL, PROMPT_KEEP_PADDED, ANSWER_KEEP = (10, 10, 10, 10), (13, 6, 10, 8), 9


def training_rows(ctx, padded: bool):
    """Four real chat pairs, cut short to keep the checks fast: the prompts keep their last tokens (all the
    same number, or different numbers so that they need left padding), the answers their first tokens."""
    keep = PROMPT_KEEP_PADDED if padded else PROMPT_KEEP_EQUAL
    return [{"prompt_input_ids": row["prompt_input_ids"][-n:],
             "chosen_input_ids": row["chosen_input_ids"][:ANSWER_KEEP],
             "rejected_input_ids": row["rejected_input_ids"][:ANSWER_KEEP]} for row, n in zip(chat_rows(ctx), keep)]


def batch_tensors(rows, pad_id):
    return {key: torch.tensor(value) for key, value in ref.collated(rows, pad_id).items()}


def policy_and_reference(ctx, same=False, trainable_reference=False):
    policy = ctx.model(requires_grad=True, noise=0.0 if same else 0.05, seed=1)
    reference = ctx.model(requires_grad=trainable_reference)
    return policy, reference


def batch_loss_by_student(ns, ctx, case, rows, beta, max_seq_len, same=False, trainable_reference=False):
    policy, reference = policy_and_reference(ctx, same, trainable_reference)
    function = student(ns, "dpo_batch_loss", ISOLATE_BATCH_LOSS)
    out = triple(function(policy, reference, batch_tensors(rows, ctx.pad_id), beta, max_seq_len), case,
                 "dpo_batch_loss")
    return out, policy, reference


def expected_batch(ctx, key, rows, beta, max_seq_len):
    def compute():
        policy, reference = policy_and_reference(ctx)
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
    (loss, accuracy, margin), _, _ = batch_loss_by_student(ns, ctx, case, training_rows(ctx, False), 0.1, None,
                                                           same=True)
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
    seen, _, _ = batch_loss_by_student(ns, ctx, case, rows, 0.5, None)
    expect_batch_numbers(case, expected, seen,
                         "score the answer tokens only (loss_mask), run both models on chosen and rejected, and "
                         "pass beta on to dpo_loss")


@training_check.case("dpo_batch_loss with left-padded prompts of different lengths", weight=1)
def _(ns, ctx):
    case = "left-padded prompts"
    rows = training_rows(ctx, True)
    expected = expected_batch(ctx, "batch-padded", rows, 0.5, None)
    seen, _, _ = batch_loss_by_student(ns, ctx, case, rows, 0.5, None)
    expect_batch_numbers(case, expected, seen,
                         "padding must not change the result: pass the attention mask (sequence_logits does)")


@training_check.case("dpo_batch_loss passes max_seq_len on (answers cut at the end)", weight=1)
def _(ns, ctx):
    case = "max_seq_len"
    rows = training_rows(ctx, True)
    max_seq_len = max(len(row["prompt_input_ids"]) for row in rows) + 4
    expected = expected_batch(ctx, "batch-cut", rows, 0.5, max_seq_len)
    seen, _, _ = batch_loss_by_student(ns, ctx, case, rows, 0.5, max_seq_len)
    expect_batch_numbers(case, expected, seen,
                         f"with max_seq_len={max_seq_len} only the first 4 tokens of each answer count: give "
                         "max_seq_len to concat_prompt_completion")


def expected_policy_gradients(ctx, rows, beta):
    def compute():
        policy, reference = policy_and_reference(ctx)
        policy.requires_grad_(True)
        ref.batch_dpo_loss(policy, reference, rows, beta, None).backward()
        return {name: p.grad.detach().clone() for name, p in policy.named_parameters()}
    return ctx.cached(("policy-grads", beta), compute)


@training_check.case("gradients reach the policy (the reference values), never the reference model", weight=2)
def _(ns, ctx):
    case = "gradients"
    rows = training_rows(ctx, False)
    policy, reference = policy_and_reference(ctx, trainable_reference=True)
    policy_ref, reference_ref = ns.new(ctx.model_spec(True, 0.05, 1)), ns.new(ctx.model_spec(True))
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


CHECKS = [apply_check, tokenize_check, pad_check, collate_check, loss_check, logp_check, training_check]
