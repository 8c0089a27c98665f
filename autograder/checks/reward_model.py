"""Hidden checks of Part 2, reward model: `test_to_implicit_prompt_preferences`, `test_reward_model`.

Student code runs on the other side of the runner (`autograder.grading.remote`); what comes back is data
(models as `RemoteModel`, configurations as their fields, kept objects as handles). The tokenizers and model
folders handed to student code come from `autograder.checks.models`. Functions graded by another test cell
and the device constants are replaced while a function is graded, so one bug costs points in one place.
"""
from collections.abc import Mapping

import torch

from autograder.checks import reference as ref
from autograder.checks.compare import close, fmt
from autograder.checks.framework import Check, CheckFailure, shared_answer, shorten, student
from autograder.checks.models import (
    ADDED_PAD,
    CPU,
    checked_names,
    checkpoints,
    expect_classifier,
    frozen_parameters,
    is_model,
    kind_of,
    make_tokenizer,
    materialized,
    pad_ids,
    plain,
    source_weights,
    weight_report,
)
from autograder.checks.reference import EXAMPLES, classifier_scores, implicit_conversation, scored_conversation_ids
from autograder.grading.exercise import resources
from autograder.grading.remote import RemoteModel






# ================================================================ test_to_implicit_prompt_preferences

implicit_check = Check("test_to_implicit_prompt_preferences", 0.5, ("to_implicit_prompt_preferences",))
VERBATIM_EXAMPLE = {
    "prompt": "  Two questions:\n\n1) tabs\tor spaces?\n2) \"quotes\" or 'quotes'?  ",
    "chosen": "\n Tabs!\t😄 And double quotes, always.\n\n(Don't tell anyone.) ",
    "rejected": "I have no preference.",
}


def implicit_by_student(ns, case, example):
    out = student(ns, "to_implicit_prompt_preferences")(dict(example))
    if not isinstance(out, Mapping):
        raise CheckFailure(case, "a dict {'chosen': [messages], 'rejected': [messages]}",
                           f"{type(out).__name__}: {shorten(repr(out), 120)}")
    return out


def expect_conversations(case, example, out):
    for key in ("chosen", "rejected"):
        expected = implicit_conversation(example["prompt"], example[key])
        seen = out.get(key)
        if seen == expected:
            continue
        if isinstance(seen, list) and len(seen) == 1:
            hint = "the prompt is not a column any more: put it inside each conversation as the user turn"
        elif (isinstance(seen, list) and len(seen) == 2 and all(isinstance(m, Mapping) for m in seen)
              and [m.get("role") for m in seen] != ["user", "assistant"]):
            hint = "the user turn comes first (role 'user'), then the answer (role 'assistant')"
        else:
            hint = (f"'{key}' is the user turn with the prompt followed by the assistant turn with the {key} "
                    "answer, both copied unchanged")
        raise CheckFailure(case, f"{key} = {expected!r}", f"{key} = {seen!r}", hint)


@implicit_check.case("returns {'chosen': messages, 'rejected': messages} and nothing else", weight=1)
def _(ns, ctx):
    case = "keys and types"
    out = implicit_by_student(ns, case, EXAMPLES[0])
    if set(out) != {"chosen", "rejected"}:
        raise CheckFailure(case, "exactly the keys ['chosen', 'rejected']", f"keys {sorted(out)}",
                           "with an implicit prompt there is no 'prompt' key: the prompt lives inside the "
                           "conversations (and dataset.map would keep a returned 'prompt' column)")
    for key in ("chosen", "rejected"):
        value = out[key]
        if not isinstance(value, list) or not all(isinstance(m, Mapping) for m in value):
            raise CheckFailure(case, f"'{key}' as a list of message dicts", shorten(repr(value), 160),
                               "a conversation is a list of {'role': ..., 'content': ...} dicts")


@implicit_check.case("each conversation is the user's prompt, then the assistant's answer", weight=3)
def _(ns, ctx):
    case = "user turn then assistant turn"
    for example in EXAMPLES:
        expect_conversations(case, example, implicit_by_student(ns, case, example))


@implicit_check.case("prompts and answers are copied exactly (whitespace, quotes, emoji)", weight=1)
def _(ns, ctx):
    case = "contents copied exactly"
    expect_conversations(case, VERBATIM_EXAMPLE, implicit_by_student(ns, case, VERBATIM_EXAMPLE))


@implicit_check.case("dataset.map(..., remove_columns=['prompt']) gives TRL's conversational format", weight=1)
def _(ns, ctx):
    from datasets import Dataset
    from trl.data_utils import is_conversational

    case = "mapped dataset"
    function = student(ns, "to_implicit_prompt_preferences")
    answers = [plain(function(dict(example))) for example in EXAMPLES[:3]]
    try:  # dataset.map on the answers the student's function gave for these rows
        mapped = Dataset.from_list(EXAMPLES[:3]).map(lambda _, i: answers[i], with_indices=True,
                                                     remove_columns=["prompt"], new_fingerprint="part2-implicit")
    except Exception as error:  # noqa: BLE001 (datasets refused what the student's function returned)
        raise CheckFailure(case, "answers that dataset.map can store as rows",
                           f"dataset.map(to_implicit_prompt_preferences, remove_columns=['prompt']) raised "
                           f"{type(error).__name__}: {shorten(str(error), 200)}",
                           "return a dict of lists of {'role': ..., 'content': ...} dicts") from None
    if sorted(mapped.column_names) != ["chosen", "rejected"]:
        raise CheckFailure(case, "the columns ['chosen', 'rejected']", f"the columns {mapped.column_names}",
                           "return only 'chosen' and 'rejected'")
    for example, row in zip(EXAMPLES, mapped):
        if not is_conversational(row):
            raise CheckFailure(case, "rows that TRL recognises as conversational", shorten(repr(row), 200))
        for key in ("chosen", "rejected"):
            formatted = ref.format_example(example, ctx.tokenizer)
            rendered = ctx.tokenizer.apply_chat_template(row[key], tokenize=False)
            if rendered != formatted["prompt"] + formatted[key]:
                raise CheckFailure(case, f"{key} rendered as {formatted['prompt'] + formatted[key]!r}",
                                   repr(rendered), "the chat template must see the user turn and the answer")


# ================================================================ test_reward_model

reward_check = Check("test_reward_model", 0.5, ("build_reward_model",))
REWARD_PROMPT = "What do you think about rainy days?"
REWARD_ANSWERS = [
    "I love them! ☔ Cozy blankets and tea 😊",
    "As an AI, I do not experience weather.",
    "Rainy days are perfect for reading.\nAnd for long naps, honestly. What about you?",
]


def reward_model_by_student(ns, ctx, case, pad="safe", model_dir=None) -> RemoteModel:
    model_dir = str(model_dir or ctx.model_dir)
    model = shared_answer(ns, ("build_reward_model", pad, model_dir), lambda: student(ns, "build_reward_model", CPU)(
        model_dir, make_tokenizer(ctx, pad, "right")))
    if not is_model(model):
        raise CheckFailure(case, "a transformers model (AutoModelForSequenceClassification.from_pretrained)",
                           kind_of(model))
    return model


def scores_of_student_model(case, model, rows, pad_id, action):
    try:
        return classifier_scores(model, rows, pad_id)
    except Exception as error:  # noqa: BLE001 (the judge's copy of the student's model and config)
        raise CheckFailure(case, f"a reward model that can score {action}",
                           f"{type(error).__name__}: {shorten(str(error), 200)}",
                           "check num_labels, config.pad_token_id and the size of the embeddings") from None


@reward_check.case("a sequence classifier with exactly one output (num_labels=1)", weight=2)
def _(ns, ctx):
    case = "one-label classifier"
    model = reward_model_by_student(ns, ctx, case)
    expect_classifier(case, model)
    row = scored_conversation_ids(REWARD_PROMPT, REWARD_ANSWERS[0], ctx.tokenizer)
    with torch.no_grad():
        logits = materialized(case, model, "the reward model")(input_ids=torch.tensor([row])).logits
    if tuple(logits.shape) != (1, 1):
        raise CheckFailure(case, "logits of shape (1, 1): one reward for one conversation", tuple(logits.shape))


@reward_check.case("the backbone holds model_id's weights, under a new head, and every parameter trains", weight=2)
def _(ns, ctx):
    case = "weights and trainable parameters"
    model = reward_model_by_student(ns, ctx, case)
    base = source_weights(ctx, "base")
    report = weight_report(model, base, checked_names(base, backbone_only=True))
    if report is not None:
        raise CheckFailure(case, f"the weights saved at model_id ({ctx.model_dir.name})", report,
                           "load them with AutoModelForSequenceClassification.from_pretrained(model_id, ...): "
                           "from_config (or a config alone) starts from random weights")
    hidden = base["model.norm.weight"].shape[0] if "model.norm.weight" in base else None
    head = model.state.get("score.weight")
    if hidden is not None and (not isinstance(head, torch.Tensor) or tuple(head.shape) != (1, hidden)):
        raise CheckFailure(case, f"a score head of shape (1, {hidden})",
                           "no score.weight" if head is None else f"score.weight of shape {tuple(head.shape)}")
    frozen = frozen_parameters(model)
    if frozen:
        raise CheckFailure(case, "every parameter trainable (requires_grad=True): RewardTrainer fine-tunes the "
                                 "whole model", f"{len(frozen)} of {len(model.parameters)} tensors frozen, e.g. "
                                               f"{frozen[0]}",
                           "leave requires_grad as from_pretrained sets it; a frozen backbone leaves only the head "
                           "to learn the preferences")


@reward_check.case("config.pad_token_id is the tokenizer's chat-safe pad token id", weight=2)
def _(ns, ctx):
    case = "config.pad_token_id"
    expected = pad_ids(ctx, "safe")
    model = reward_model_by_student(ns, ctx, case)
    if model.config.get("pad_token_id") != expected:
        pad_token = resources.chat_safe_pad(ctx.tokenizer)
        raise CheckFailure(case, f"config.pad_token_id = {expected} (the tokenizer's pad token {pad_token!r})",
                           f"config.pad_token_id = {model.config.get('pad_token_id')}",
                           "the classifier scores the last token that is not config.pad_token_id: set it to "
                           "tokenizer.pad_token_id (not the end-of-turn token, which ends every turn)")


@reward_check.case("float32 weights, also when the checkpoint is stored in bfloat16", weight=1)
def _(ns, ctx):
    case = "float32"
    model = reward_model_by_student(ns, ctx, case, model_dir=checkpoints(ctx)["bf16"])
    if model.dtypes != ["float32"]:
        raise CheckFailure(case, "every parameter in torch.float32", f"parameters in {model.dtypes}",
                           "pass dtype=torch.float32 to from_pretrained: transformers 5 otherwise keeps the "
                           "checkpoint's dtype (bfloat16 for SmolLM)")
    expected = source_weights(ctx, "bf16")
    report = weight_report(model, expected, checked_names(expected, backbone_only=True))
    if report is not None:
        raise CheckFailure(case, "the weights of the bfloat16 checkpoint at model_id, in float32", report,
                           "load model_id with from_pretrained(model_id, num_labels=1, dtype=torch.float32)")


@reward_check.case("embeddings and config cover a tokenizer with an added [PAD] token", weight=1)
def _(ns, ctx):
    case = "added pad token"
    pad_id = pad_ids(ctx, "added")
    model = reward_model_by_student(ns, ctx, case, pad="added")
    rows = model.num_embeddings
    if rows is None or rows < pad_id + 1:
        raise CheckFailure(case, f"at least {pad_id + 1} embedding rows (len(tokenizer))", f"{rows} rows",
                           "a new token needs an embedding row: cover_tokenizer(model, tokenizer) resizes the "
                           "embeddings when the tokenizer is longer")
    if model.config.get("pad_token_id") != pad_id:
        raise CheckFailure(case, f"config.pad_token_id = {pad_id} ({ADDED_PAD})",
                           f"config.pad_token_id = {model.config.get('pad_token_id')}",
                           "take the id from the tokenizer you are given, do not hard-code it")
    batch = [scored_conversation_ids(REWARD_PROMPT, answer, ctx.tokenizer) for answer in REWARD_ANSWERS[:2]]
    scores_of_student_model(case, materialized(case, model, "the reward model"), batch, pad_id,
                            f"a batch padded with {ADDED_PAD}")


@reward_check.case("the reward depends on the answer, and padding a batch does not change it", weight=2)
def _(ns, ctx):
    case = "reward of the answer"
    pad_id = pad_ids(ctx, "safe")
    model = materialized(case, reward_model_by_student(ns, ctx, case), "the reward model")
    rows = [scored_conversation_ids(REWARD_PROMPT, answer, ctx.tokenizer) for answer in REWARD_ANSWERS]
    alone = [scores_of_student_model(case, model, [row], pad_id, "one conversation")[0] for row in rows]
    batched = scores_of_student_model(case, model, rows, pad_id, "a right-padded batch")
    if min(abs(a - b) for i, a in enumerate(alone) for b in alone[i + 1:]) <= 1e-6:
        raise CheckFailure(case, "different rewards for different answers to the same question", fmt(alone),
                           "the score is read from the prompt: check the pad token in the model config")
    if not all(close(b, a, 1e-4, 1e-3) for a, b in zip(alone, batched)):
        raise CheckFailure(case, f"the rewards of the conversations scored alone, {fmt(alone)}",
                           f"in a padded batch: {fmt(batched)}",
                           "with padding the score must still come from the last real token: set "
                           "config.pad_token_id = tokenizer.pad_token_id")


CHECKS = [implicit_check, reward_check]
