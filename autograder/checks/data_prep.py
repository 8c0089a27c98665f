"""Hidden checks of Part 1, data preparation: `test_apply_chat_template`, `test_tokenize_row`, `test_pad`,
`test_pad_collate_fn`.

Every check calls the student's functions on the real SmolLM2 tokenizer and the tiny random model and
compares them with the independent references of `autograder.checks.reference` and with properties the right
answer must have. A function that another test cell grades is replaced by a reference while this one is
graded, so one bug costs points in one place.
"""
import torch

from autograder.checks import reference as ref
from autograder.checks.compare import difference, int_lists
from autograder.checks.framework import Check, CheckFailure, call_student, shorten, student
from autograder.checks.reference import EXAMPLES, ID_KEYS, chat_rows






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


CHECKS = [apply_check, tokenize_check, pad_check, collate_check]
