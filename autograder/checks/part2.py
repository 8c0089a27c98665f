"""Hidden checks of Part 2 (reward model, PPO with TRL, log-prob analysis), one per nbgrader test cell.

Student code runs on the other side of the runner (`autograder.grading.remote`); what comes back is data:
models as their class, config, weights and trainable parameters (`RemoteModel`), configurations as their
fields, kept objects as handles. Forward passes of a returned model run on a judge-side copy rebuilt from
those weights (`RemoteModel.materialize`).

Tokenizers travel as specs (`autograder.grading.exercise.resources`): every call of student code gets a copy
that no earlier call changed, so whatever the code does to it (switch its padding side, add a token) stays
with that call, and the judge's own copies are never handed out. The model
folders student code loads are written once into the context's shared folder. The PPO check builds the four
models, the configuration, the tokenizer and the datasets on the other side, lets the student's
`build_ppo_trainer` wire them, trains that trainer there for one update (about two seconds) and compares the
trained policy and value model with a judge-side TRL run on the same inputs and seed: TRL's PPO is
deterministic on the CPU. Functions graded by another test cell (`get_log_prob`) and the device constants are
replaced while a function is graded, so one bug costs points in one place, and the checks run on the CPU even
where the notebook picked a GPU.
"""
import shutil
import tempfile
import types
import uuid
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F

from autograder.checks import reference as ref
from autograder.checks.framework import Check, CheckFailure, StudentError, call_student, shorten, student
from autograder.checks.part1 import EXAMPLES, close, fmt
from autograder.grading.exercise import resources
from autograder.grading.remote import Ref, RemoteConfig, RemoteModel, tag

CPU = {"DEVICE": "cpu", "AMP_DTYPE": torch.float32}  # the checks run on the CPU even where the notebook has a GPU
ADDED_PAD = resources.ADDED_PAD  # a token the tokenizer does not have: models must grow an embedding row for it
REWARD_HEAD_SEED = 7  # the score head of the checks' reward model checkpoint


# ================================================================ references and shared resources

def user_turn(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def implicit_conversation(prompt: str, answer: str) -> list[dict[str, str]]:
    """The expected conversation of one answer, spelled out message by message."""
    messages = user_turn(prompt)
    messages.append({"role": "assistant", "content": answer})
    return messages


def tokenizer_spec(ctx, pad: str | None, side: str) -> dict:
    """pad: "eos" (what `load_tokenizer` gives, the end-of-turn token), "safe" (what `set_chat_safe_pad_token`
    gives) or "added" (a brand-new `[PAD]` token, one more than the model has embeddings for)."""
    return {"kind": "tokenizer", "path": str(ctx.model_dir), "pad": pad, "side": side}


def make_tokenizer(ctx, pad: str, side: str):
    """The judge's copy of a grading tokenizer (see `tokenizer_spec`), loaded once per context.

    Handed to student code it travels as its spec: the other side builds (or reuses an unchanged) copy of it.
    """
    spec = tokenizer_spec(ctx, pad, side)
    return ctx.cached(("part2-tokenizer", pad, side),
                      lambda: tag(resources.tokenizer_from_spec(spec), spec))


def pad_ids(ctx, pad: str) -> int:
    """The pad id of the tokenizers of `make_tokenizer`."""
    return make_tokenizer(ctx, pad, "right").pad_token_id


def generation_prompt_ids(prompt: str, tokenizer) -> list[int]:
    """Token ids of a user turn followed by the assistant header, through the rendered text."""
    text = tokenizer.apply_chat_template(user_turn(prompt), tokenize=False, add_generation_prompt=True)
    return ref.token_ids(text, tokenizer)


def scored_conversation_ids(prompt: str, answer: str, tokenizer) -> list[int]:
    """Token ids of a conversation up to the end-of-turn token that closes the answer, without the newline the
    template writes after it: the token the notebook's reward model is trained to score and PPO reads."""
    text = tokenizer.apply_chat_template(implicit_conversation(prompt, answer), tokenize=False)
    cut = text.rindex(tokenizer.eos_token) + len(tokenizer.eos_token)
    return ref.token_ids(text[:cut], tokenizer)


def reward_spec(ctx, requires_grad: bool = False) -> dict:
    """The checks' reward model: the tiny model as a one-label classifier with a seeded score head and the
    chat-safe pad token in its config, as the notebook saves its trained reward model."""
    return {"kind": "model", "path": str(ctx.model_dir), "auto": "AutoModelForSequenceClassification",
            "head_seed": REWARD_HEAD_SEED, "pad_token_id": pad_ids(ctx, "safe"), "requires_grad": requires_grad}


def checkpoints(ctx) -> dict:
    """Model folders student code loads, written once per context into its shared folder (read-only there).

    - "bf16": the tiny model saved in bfloat16, as many Hub checkpoints are (transformers 5 loads a checkpoint
      in its stored dtype unless `dtype=` says otherwise);
    - "reward": the reward model of `reward_spec` with its tokenizer.
    """
    def build():
        root = ctx.shared_dir / "part2"
        resources.model_from_spec(ctx.model_spec()).to(torch.bfloat16).save_pretrained(root / "bf16")
        resources.tokenizer_from_spec(tokenizer_spec(ctx, None, "right")).save_pretrained(root / "bf16")
        resources.model_from_spec(reward_spec(ctx)).save_pretrained(root / "reward")
        resources.tokenizer_from_spec(tokenizer_spec(ctx, "safe", "right")).save_pretrained(root / "reward")
        return {"bf16": root / "bf16", "reward": root / "reward"}

    return ctx.cached("part2-checkpoints", build)


def source_weights(ctx, source: str) -> dict[str, torch.Tensor]:
    """The weights a model loaded from `source` holds: "base" (the tiny model's folder), "bf16" (its bfloat16
    checkpoint, in float32) or "reward" (the reward model checkpoint)."""
    def compute():
        model = resources.model_from_spec(reward_spec(ctx) if source == "reward" else ctx.model_spec())
        state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
        if source == "bf16":
            state = {name: tensor.to(torch.bfloat16).float() for name, tensor in state.items()}
        return state

    return ctx.cached(("part2-weights", source), compute)


def checked_names(expected: dict, backbone_only: bool = False) -> list[str]:
    """A few named tensors that say where weights come from: the embeddings, the first attention and last MLP
    matrix, the final norm and the head (all of them for a model without these names)."""
    layers = sorted({int(name.split(".")[2]) for name in expected if name.startswith("model.layers.")})
    wanted = ["model.embed_tokens.weight", "model.norm.weight"]
    if layers:
        wanted += [f"model.layers.{layers[0]}.self_attn.q_proj.weight",
                   f"model.layers.{layers[-1]}.mlp.down_proj.weight"]
    if not backbone_only:
        wanted += ["score.weight", "lm_head.weight"]
    names = [name for name in wanted if name in expected]
    return names or list(expected)


def weight_report(model: RemoteModel, expected: dict, names) -> str | None:
    """None when `model` holds `expected` under each of `names`, compared exactly at the model's own precision
    (an embedding grown for added tokens compares its old rows); else the first difference."""
    for name in names:
        seen, want = model.state.get(name), expected[name]
        if not isinstance(seen, torch.Tensor):
            return f"no tensor {name}"
        if seen.dim() != want.dim() or seen.shape[1:] != want.shape[1:] or seen.shape[0] < want.shape[0]:
            return f"{name} of shape {tuple(seen.shape)} instead of {tuple(want.shape)}"
        seen = seen[: want.shape[0]]
        want = want.to(seen.dtype) if seen.is_floating_point() else want
        if not torch.equal(seen, want):
            largest = float((seen.double() - want.double()).abs().max())
            return f"{name} differs from it (largest difference {largest:.3g})"
    return None


def is_model(value) -> bool:
    return isinstance(value, RemoteModel) and value.is_a("PreTrainedModel")


def kind_of(value) -> str:
    return getattr(value, "type_name", None) or type(value).__name__


def num_labels(model: RemoteModel):
    if "num_labels" in model.config:
        return model.config["num_labels"]
    labels = model.config.get("id2label")
    return len(labels) if isinstance(labels, Mapping) else None


def frozen_parameters(model: RemoteModel) -> list[str]:
    trainable = set(model.trainable)
    return [name for name in model.parameters if name not in trainable]


def materialized(case: str, model: RemoteModel, what: str):
    """A judge-side copy of a returned model with its weights, to run forward passes on."""
    try:
        return model.materialize()
    except Exception as error:  # noqa: BLE001 (a class or config the judge cannot rebuild)
        raise CheckFailure(case, f"{what} as a transformers model with a consistent config and weights",
                           f"{model.type_name}: {shorten(str(error), 200)}") from None


@torch.no_grad()
def classifier_scores(model, rows: list[list[int]], pad_id: int) -> list[float]:
    """Scores of a right-padded batch (explicit attention mask), as a reward model trainer feeds it."""
    width = max(len(row) for row in rows)
    ids = torch.tensor([row + [pad_id] * (width - len(row)) for row in rows])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])
    logits = model(input_ids=ids, attention_mask=mask).logits
    return [float(v) for v in logits[:, 0]]


@torch.no_grad()
def text_log_prob(model, ids: list[int]) -> float:
    """Sum of log p(ids[t] | ids[:t]) for t >= 1, from one unpadded forward pass, one position at a time."""
    if len(ids) < 2:
        return 0.0
    logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    total = 0.0
    for t in range(1, len(ids)):
        total += float(F.log_softmax(logits[t - 1], dim=-1)[ids[t]])
    return total


def plain(value):
    """A returned value as plain dicts, lists and strings (what a datasets row holds)."""
    if isinstance(value, Mapping):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, str):
        return str.__str__(value)
    return value


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
    model = student(ns, "build_reward_model", CPU)(str(model_dir or ctx.model_dir), make_tokenizer(ctx, pad, "right"))
    if not is_model(model):
        raise CheckFailure(case, "a transformers model (AutoModelForSequenceClassification.from_pretrained)",
                           kind_of(model))
    return model


def expect_classifier(case, model: RemoteModel, what="the reward model"):
    name = model.type_name
    if not name.endswith("ForSequenceClassification"):
        raise CheckFailure(case, f"{what} as a sequence classifier (AutoModelForSequenceClassification)", name,
                           "a reward model is the language model with a classification head instead of the LM head")
    if num_labels(model) != 1:
        raise CheckFailure(case, f"{what} with num_labels = 1 (one reward per sequence)",
                           f"num_labels = {num_labels(model)}",
                           "AutoModelForSequenceClassification gives 2 labels unless told num_labels=1")


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


# ================================================================ test_ppo

ppo_check = Check("test_ppo", 2, ("tokenize_prompt", "load_ppo_models", "make_ppo_config", "build_ppo_trainer"))
PPO_PROMPTS = [example["prompt"] for example in EXAMPLES] + ["  Any plans for the weekend? 🌞\n"]
ASSISTANT_HEADER = "<|im_start|>assistant\n"
PPO_MODELS = ("value_model", "reward_model", "policy", "ref_policy")


def prompt_ids_by_student(ns, ctx, case, prompt):
    example = {"prompt": prompt, "chosen": "Sure! 😊", "rejected": "No."}
    out = student(ns, "tokenize_prompt")(example, tokenizer=make_tokenizer(ctx, "safe", "left"))
    if not isinstance(out, Mapping) or "input_ids" not in out:
        seen = f"keys {sorted(out)}" if isinstance(out, Mapping) else kind_of(out)
        raise CheckFailure(case, "a dict {'input_ids': [token ids]}", seen)
    ids = out["input_ids"]
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        kind = (f"a {type(ids).__name__} of shape {tuple(ids.shape)}" if isinstance(ids, torch.Tensor)
                else f"a {kind_of(ids)}" if not isinstance(ids, list)
                else "a list holding " + ", ".join(sorted({type(i).__name__ for i in ids})))
        raise CheckFailure(case, "input_ids as a flat list of Python ints", f"{kind}: {shorten(repr(ids), 120)}",
                           "in transformers 5 apply_chat_template(..., tokenize=True) returns a dict-like "
                           "BatchEncoding: take its 'input_ids' (or pass return_dict=False), no tensors")
    return ids


@ppo_check.case("tokenize_prompt returns {'input_ids': a flat list of ints}", weight=1)
def _(ns, ctx):
    prompt_ids_by_student(ns, ctx, "input_ids type", PPO_PROMPTS[0])


@ppo_check.case("tokenize_prompt: the chat-formatted user turn plus the generation prompt", weight=3)
def _(ns, ctx):
    case = "prompt tokens"
    header = ref.token_ids(ASSISTANT_HEADER, ctx.tokenizer)
    for prompt in PPO_PROMPTS:
        expected = generation_prompt_ids(prompt, ctx.tokenizer)
        seen = prompt_ids_by_student(ns, ctx, case, prompt)
        if seen == expected:
            continue
        if seen[-len(header):] != header:
            hint = (f"the ids must end with the generation prompt {ASSISTANT_HEADER!r}, the header the policy "
                    "continues from: add_generation_prompt=True")
        else:
            hint = "render the user turn with the chat template (system message included), prompt text unchanged"
        raise CheckFailure(case, f"{ctx.tokenizer.decode(expected)!r}", f"{ctx.tokenizer.decode(seen)!r}", hint)


def ppo_models_by_student(ns, ctx, case, pad="safe", policy_id=None) -> tuple:
    out = student(ns, "load_ppo_models", CPU)(str(policy_id or ctx.model_dir), checkpoints(ctx)["reward"],
                                              make_tokenizer(ctx, pad, "left"))
    if not isinstance(out, (tuple, list)) or len(out) != 4:
        length = f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""
        raise CheckFailure(case, "a tuple (value_model, reward_model, policy, ref_policy)", f"{kind_of(out)}{length}")
    for name, model in zip(PPO_MODELS, out):
        if not is_model(model):
            raise CheckFailure(case, f"{name} as a transformers model", kind_of(model))
    return tuple(out)


@ppo_check.case("load_ppo_models returns (value_model, reward_model, policy, ref_policy) of the right kinds",
                weight=2)
def _(ns, ctx):
    case = "four models"
    value_model, reward_model, policy, ref_policy = ppo_models_by_student(ns, ctx, case)
    expect_classifier(case, value_model, "value_model")
    expect_classifier(case, reward_model, "reward_model")
    for name, model in (("policy", policy), ("ref_policy", ref_policy)):
        if not model.type_name.endswith("ForCausalLM"):
            raise CheckFailure(case, f"{name} as a causal LM (AutoModelForCausalLM)", model.type_name,
                               "the policy and its reference generate text: they keep the LM head")


@ppo_check.case("value and reward models come from the reward model, policy and reference from policy_id, "
                "as four separate models", weight=2)
def _(ns, ctx):
    case = "where the weights come from"
    models = ppo_models_by_student(ns, ctx, case)
    classifier, base = source_weights(ctx, "reward"), source_weights(ctx, "base")
    for name, model, expected, source in zip(PPO_MODELS, models, (classifier, classifier, base, base),
                                             ("reward_model_path", "reward_model_path", "policy_id", "policy_id")):
        report = weight_report(model, expected, checked_names(expected))
        if report is not None:
            hint = ("the critic starts from the trained reward model: load it from reward_model_path too"
                    if name == "value_model" else f"load {name} with from_pretrained({source}, ...)")
            raise CheckFailure(case, f"{name} with the weights saved at {source}", report, hint)
    for i, j in ((0, 1), (2, 3), (0, 2), (1, 3)):
        if set(models[i].storages) & set(models[j].storages):
            raise CheckFailure(case, f"{PPO_MODELS[i]} and {PPO_MODELS[j]} as separate models",
                               "the same model (or shared weight tensors)",
                               "PPO trains the policy and the value model while the reference and the reward model "
                               "stay as they were: load each one separately (or copy.deepcopy it)")


@ppo_check.case("the reward model and the reference are frozen, the policy and the value model trainable",
                weight=2)
def _(ns, ctx):
    case = "frozen and trainable models"
    models = ppo_models_by_student(ns, ctx, case)
    for name, model, trainable in zip(PPO_MODELS, models, (True, False, True, False)):
        frozen, total = frozen_parameters(model), len(model.parameters)
        if trainable and frozen:
            raise CheckFailure(case, f"{name} trainable (requires_grad=True everywhere)",
                               f"{len(frozen)} of {total} tensors frozen", "PPO trains this model")
        if not trainable and len(frozen) != total:
            raise CheckFailure(case, f"{name} frozen (requires_grad=False everywhere)",
                               f"{total - len(frozen)} of {total} tensors trainable",
                               f"call {name}.requires_grad_(False) (and .eval())")


@ppo_check.case("float32 models whose embeddings cover the tokenizer", weight=1)
def _(ns, ctx):
    case = "float32 and embeddings"
    rows = pad_ids(ctx, "added") + 1
    models = ppo_models_by_student(ns, ctx, case, pad="added", policy_id=checkpoints(ctx)["bf16"])
    for name, model in zip(PPO_MODELS, models):
        if model.dtypes != ["float32"]:
            raise CheckFailure(case, f"{name} in torch.float32 (the policy checkpoint here is bfloat16)",
                               f"parameters in {model.dtypes}", "pass dtype=torch.float32 to every from_pretrained")
        if model.num_embeddings is None or model.num_embeddings < rows:
            raise CheckFailure(case, f"{name} with at least {rows} embedding rows (len(tokenizer), which has an "
                                     f"added {ADDED_PAD} token)", f"{model.num_embeddings} rows",
                               "call cover_tokenizer(model, tokenizer) on each of the four models")


# ---------------------------------------------------------------- make_ppo_config

PPO_FIELDS = {  # PPO_* constant -> the PPOConfig field it sets
    "PPO_LR": "learning_rate", "PPO_BATCH_SIZE": "per_device_train_batch_size * gradient_accumulation_steps",
    "PPO_EPOCHS": "num_ppo_epochs", "PPO_TOTAL_EPISODES": "total_episodes",
    "PPO_RESPONSE_LENGTH": "response_length", "PPO_KL_COEF": "kl_coef",
    "PPO_MISSING_EOS_PENALTY": "missing_eos_penalty", "PPO_SAMPLE_GENERATIONS": "num_sample_generations",
}
OTHER_PPO_CONSTANTS = {  # values no profile of the notebook uses: a copied number cannot match them
    "PPO_LR": 3.3e-4, "PPO_BATCH_SIZE": 6, "PPO_EPOCHS": 3, "PPO_TOTAL_EPISODES": 18, "PPO_RESPONSE_LENGTH": 21,
    "PPO_KL_COEF": 0.07, "PPO_MISSING_EOS_PENALTY": 0.35, "PPO_SAMPLE_GENERATIONS": 2,
}
OTHER_PPO_CONSTANTS["PPO_HPARAMS"] = dict(
    learning_rate=OTHER_PPO_CONSTANTS["PPO_LR"], batch_size=OTHER_PPO_CONSTANTS["PPO_BATCH_SIZE"],
    num_ppo_epochs=OTHER_PPO_CONSTANTS["PPO_EPOCHS"], total_episodes=OTHER_PPO_CONSTANTS["PPO_TOTAL_EPISODES"],
    response_length=OTHER_PPO_CONSTANTS["PPO_RESPONSE_LENGTH"], kl_coef=OTHER_PPO_CONSTANTS["PPO_KL_COEF"],
    missing_eos_penalty=OTHER_PPO_CONSTANTS["PPO_MISSING_EOS_PENALTY"],
)
CONSTANTS_HINT = ("use the constants PPO_LR, PPO_BATCH_SIZE, PPO_EPOCHS, PPO_TOTAL_EPISODES, PPO_RESPONSE_LENGTH, "
                  "PPO_KL_COEF, PPO_MISSING_EOS_PENALTY and PPO_SAMPLE_GENERATIONS, not copies of their values")
CONFIG_DIR_NAME = "hw2-check-ppo-config"
# PPOConfig as student code gets it while graded: TRL's, except that bf16=True on a machine without a bfloat16 GPU
# does not raise, so that the GPU branch of the configuration can be judged on a CPU (see resources.ppo_config_class)
PPO_CONFIG_CLASS = tag(types.SimpleNamespace(), {"kind": "ppo_config_class"})
PRECISION_ERRORS = ("bf16", "fp16")


def ppo_config_by_student(ns, case, device="cpu", amp_dtype=torch.float32, constants=None):
    output_dir = Path(tempfile.gettempdir()) / CONFIG_DIR_NAME
    isolate = {**(constants or {}), "DEVICE": device, "AMP_DTYPE": amp_dtype, "PPOConfig": PPO_CONFIG_CLASS}
    try:
        config = student(ns, "make_ppo_config", isolate)(output_dir)
    except StudentError as error:
        message = str(error.error)
        if getattr(error.error, "type_name", "") == "ValueError" and any(w in message for w in PRECISION_ERRORS):
            raise CheckFailure(case, f"a PPOConfig that can be built with DEVICE={device!r}, AMP_DTYPE={amp_dtype}",
                               f"PPOConfig(...) raised ValueError: {shorten(message, 160)}",
                               "the precision flags follow DEVICE and AMP_DTYPE, and at most one is on (TRL "
                               "switches bf16 on by default): pass **trainer_precision()") from None
        raise
    if not isinstance(config, RemoteConfig) or not config.is_a("PPOConfig"):
        raise CheckFailure(case, "a PPOConfig (from trl.experimental.ppo)", kind_of(config))
    return config, output_dir


def notebook_constants(ns) -> dict:
    return {name: call_student(name, f"reading the notebook constant {name}", ns.get, name) for name in PPO_FIELDS}


def expect_ppo_fields(case, config, constants: dict, hint: str):
    seen = {}
    for constant, field in PPO_FIELDS.items():
        if constant == "PPO_BATCH_SIZE":
            sizes = (config.get("per_device_train_batch_size"), config.get("gradient_accumulation_steps"))
            seen[constant] = sizes[0] * sizes[1] if all(isinstance(s, int) for s in sizes) else sizes
        else:
            seen[constant] = config.get(field)
    wrong = [c for c, value in seen.items() if not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                                    and close(float(value), float(constants[c]), 0, 1e-9))]
    if wrong:
        raise CheckFailure(case, ", ".join(f"{PPO_FIELDS[c]}={constants[c]} ({c})" for c in wrong),
                           ", ".join(f"{PPO_FIELDS[c]}={seen[c]}" for c in wrong), hint)


@ppo_check.case("make_ppo_config: a PPOConfig for output_dir with the notebook's PPO_* hyper-parameters", weight=2)
def _(ns, ctx):
    case = "hyper-parameters"
    config, output_dir = ppo_config_by_student(ns, case)
    if Path(str(config.get("output_dir"))) != output_dir:
        raise CheckFailure(case, f"output_dir = {str(output_dir)!r}", f"output_dir = {config.get('output_dir')!r}",
                           "write to the output_dir argument")
    expect_ppo_fields(case, config, notebook_constants(ns), CONSTANTS_HINT)


@ppo_check.case("make_ppo_config reads the PPO_* constants when it runs (other values, other config)", weight=1)
def _(ns, ctx):
    case = "constants read at call time"
    config, _ = ppo_config_by_student(ns, case, constants=OTHER_PPO_CONSTANTS)
    expect_ppo_fields(case, config, OTHER_PPO_CONSTANTS,
                      "with other values of the PPO_* constants the configuration must follow them: "
                      + CONSTANTS_HINT)


def precision(config) -> dict[str, bool]:
    return {"bf16": bool(config.get("bf16")), "fp16": bool(config.get("fp16"))}


@ppo_check.case("make_ppo_config: no mixed precision on a CPU", weight=2)
def _(ns, ctx):
    case = "precision on a CPU"
    config, _ = ppo_config_by_student(ns, case)
    if precision(config) != {"bf16": False, "fp16": False}:
        raise CheckFailure(case, "bf16=False, fp16=False when DEVICE is 'cpu'", str(precision(config)),
                           "TRL switches bf16 on by default: pass **trainer_precision()")


@ppo_check.case("make_ppo_config: fp16 on a GPU without bfloat16 (DEVICE='cuda', AMP_DTYPE=float16)", weight=1)
def _(ns, ctx):
    case = "precision on an older GPU"
    config, _ = ppo_config_by_student(ns, case, device="cuda", amp_dtype=torch.float16)
    if precision(config) != {"bf16": False, "fp16": True}:
        raise CheckFailure(case, "bf16=False, fp16=True on a T4-class GPU", str(precision(config)),
                           "the flags follow DEVICE and AMP_DTYPE: pass **trainer_precision()")


@ppo_check.case("make_ppo_config: bf16 on a GPU with bfloat16 (DEVICE='cuda', AMP_DTYPE=bfloat16)", weight=1)
def _(ns, ctx):
    case = "precision on a recent GPU"
    config, _ = ppo_config_by_student(ns, case, device="cuda", amp_dtype=torch.bfloat16)
    if precision(config) != {"bf16": True, "fp16": False}:
        raise CheckFailure(case, "bf16=True, fp16=False on an Ampere-class (or newer) GPU", str(precision(config)),
                           "the flags follow DEVICE and AMP_DTYPE: pass **trainer_precision()")


@ppo_check.case("make_ppo_config: answers stop at the end-of-turn token, no checkpoints are saved", weight=1)
def _(ns, ctx):
    case = "stop token and saving"
    config, _ = ppo_config_by_student(ns, case)
    stop_token, stop_token_id = config.get("stop_token"), config.get("stop_token_id")
    if not (stop_token == "eos" or (stop_token is None and stop_token_id == ctx.tokenizer.eos_token_id)):
        raise CheckFailure(case, "stop_token='eos'", f"stop_token={stop_token!r}, stop_token_id={stop_token_id!r}",
                           "without a stop token every answer runs to response_length and gets the "
                           "missing-EOS penalty")
    if str(config.get("save_strategy")) != "no":
        raise CheckFailure(case, "save_strategy='no'", f"save_strategy={config.get('save_strategy')!r}",
                           "PPO checkpoints of the four models fill the disk; the notebook saves the policy itself")


# ---------------------------------------------------------------- build_ppo_trainer

TRAINER_ARGUMENTS = ("config", "tokenizer", "value_model", "reward_model", "policy", "ref_policy", "train", "eval")
TRAINER_SLOTS = (("model (the policy)", "policy_model", "policy"), ("ref_model", "ref_model", "ref_policy"),
                 ("reward_model", "reward_model", "reward_model"), ("value_model", "value_model", "value_model"))
UPDATE_TOLERANCE, UPDATE_MISMATCH = 1e-5, 1e-3  # per value; the fraction of values allowed to differ


def reference_ppo_fields(output_dir: Path) -> dict:
    """A one-update PPO configuration on the CPU-sized model (no checkpoints, no reporting, no sample tables)."""
    from trl.experimental.ppo import PPOConfig

    checkpointing = ("activation_checkpointing" if "activation_checkpointing" in PPOConfig.__dataclass_fields__
                     else "gradient_checkpointing")
    return dict(output_dir=str(output_dir), learning_rate=1e-3, per_device_train_batch_size=2,
                gradient_accumulation_steps=1, num_mini_batches=1, num_ppo_epochs=1, total_episodes=2,
                response_length=6, stop_token="eos", num_sample_generations=0, logging_steps=1, save_strategy="no",
                report_to="none", disable_tqdm=True, bf16=False, fp16=False, seed=0, **{checkpointing: False})


def ppo_input_specs(ctx, output_dir: Path) -> dict[str, dict]:
    """What build_ppo_trainer gets, as specs: both sides build equal copies from them."""
    def prompts(texts):
        return {"kind": "dataset", "rows": [{"input_ids": generation_prompt_ids(p, ctx.tokenizer)} for p in texts]}

    return {"config": {"kind": "ppo_config", "fields": reference_ppo_fields(output_dir)},
            "tokenizer": tokenizer_spec(ctx, "safe", "left"),
            "value_model": reward_spec(ctx, requires_grad=True), "reward_model": reward_spec(ctx),
            "policy": ctx.model_spec(requires_grad=True), "ref_policy": ctx.model_spec(),
            "train": prompts(PPO_PROMPTS[:2]), "eval": prompts(PPO_PROMPTS[2:3])}


def reference_ppo_update(ctx) -> dict[str, dict[str, torch.Tensor]]:
    """The policy and value weights after one update of a PPOTrainer wired by the judge on equal inputs."""
    def compute():
        from trl.experimental.ppo import PPOTrainer

        with tempfile.TemporaryDirectory(prefix="hw2-ppo-reference-") as folder, torch.random.fork_rng(devices=[]):
            specs = ppo_input_specs(ctx, Path(folder))
            built = {name: resources.build(spec) for name, spec in specs.items()}
            built["tokenizer"] = resources.tokenizer_from_spec(specs["tokenizer"])  # private, not a lent one
            trainer = PPOTrainer(args=built["config"], processing_class=built["tokenizer"], model=built["policy"],
                                 ref_model=built["ref_policy"], reward_model=built["reward_model"],
                                 value_model=built["value_model"], train_dataset=built["train"],
                                 eval_dataset=built["eval"])
            trainer.train()
            return {name: {key: tensor.detach().clone() for key, tensor in built[name].state_dict().items()}
                    for name in ("policy", "value_model")}

    return ctx.cached("part2-ppo-reference", compute)


def ppo_trainer_by_student(ns, ctx, case, output_dir: Path) -> tuple[Ref, dict[str, Ref]]:
    """The student's build_ppo_trainer on inputs built on the other side; the trainer and the inputs, kept."""
    inputs = {name: ns.new(spec) for name, spec in ppo_input_specs(ctx, output_dir).items()}
    reply = student(ns, "build_ppo_trainer", CPU).reply(tuple(inputs[name] for name in TRAINER_ARGUMENTS), keep=True)
    classes = getattr(reply.value, "mro", None) or [kind_of(reply.value)]
    if "PPOTrainer" not in classes or reply.ref is None:
        raise CheckFailure(case, "a PPOTrainer (from trl.experimental.ppo)", kind_of(reply.value))
    return reply.ref, inputs


def scratch_dir() -> Path:
    """A fresh output folder for a trainer (under /tmp, which is writable on the other side too)."""
    return Path("/tmp") / f"hw2-check-ppo-{uuid.uuid4().hex[:12]}"


def trainer_attributes(ns, trainer: Ref, names: list[str]) -> dict:
    return call_student("build_ppo_trainer", "reading the attributes of the PPOTrainer of `build_ppo_trainer`",
                        ns.attrs, trainer, names)


def described(value, names: dict[int, str]) -> str:
    if isinstance(value, Ref):
        return names.get(value.handle, f"another {value.type_name}")
    if isinstance(value, Mapping) and "missing attribute" in value:
        return "no such attribute"
    if isinstance(value, RemoteModel):
        return f"a copy of a model ({value.type_name})"
    return kind_of(value)


@ppo_check.case("build_ppo_trainer puts each model, the tokenizer and the datasets in their slots", weight=3)
def _(ns, ctx):
    case = "trainer wiring"
    output_dir = scratch_dir()
    try:
        trainer, inputs = ppo_trainer_by_student(ns, ctx, case, output_dir)
        names = {reference.handle: name for name, reference in inputs.items()}
        seen = trainer_attributes(ns, trainer, [attribute for _, attribute, _ in TRAINER_SLOTS]
                                  + ["processing_class", "train_dataset", "eval_dataset", "args"])
    finally:
        shutil.rmtree(output_dir, ignore_errors=True)
    base = source_weights(ctx, "base")
    for slot, attribute, expected in TRAINER_SLOTS:
        value = seen[attribute]
        if isinstance(value, Ref) and value.handle == inputs[expected].handle:
            continue
        if expected == "ref_policy" and is_model(value) and weight_report(value, base, checked_names(base)) is None:
            continue  # ref_model=None (TRL's own copy of the initial policy) or a copy of the policy: as good
        raise CheckFailure(case, f"{slot} = {expected}", f"{slot} = {described(value, names)}",
                           "PPOTrainer(model=policy, ref_model=ref_policy, reward_model=reward_model, "
                           "value_model=value_model, ...): pass them by keyword, the positional order of "
                           "PPOTrainer differs from ours")
    tokenizer = seen["processing_class"]
    if not (isinstance(tokenizer, Ref) and tokenizer.handle == inputs["tokenizer"].handle):
        raise CheckFailure(case, "processing_class = the tokenizer argument",
                           f"processing_class = {described(tokenizer, names)}")
    datasets = (seen["train_dataset"], seen["eval_dataset"])
    if [getattr(d, "handle", None) for d in datasets] != [inputs["train"].handle, inputs["eval"].handle]:
        raise CheckFailure(case, "train_dataset = train_dataset, eval_dataset = eval_dataset",
                           f"train_dataset = {described(datasets[0], names)}, "
                           f"eval_dataset = {described(datasets[1], names)}")
    args, given = seen["args"], reference_ppo_fields(output_dir)
    same = isinstance(args, Ref) and args.handle == inputs["config"].handle
    if not same and not (isinstance(args, RemoteConfig) and all(
            args.get(key) == given[key] for key in ("learning_rate", "response_length", "total_episodes"))):
        raise CheckFailure(case, "args = the configuration argument", f"args = {described(args, names)}",
                           "pass args=args")


def update_report(seen: RemoteModel, expected: dict[str, torch.Tensor]) -> str | None:
    """None when `seen` holds `expected` (the reference update) up to a few rounding-level differences."""
    differing, total, example = 0, 0, None
    for name, want in expected.items():
        value = seen.state.get(name)
        if not isinstance(value, torch.Tensor) or value.shape != want.shape:
            return f"no tensor {name} of shape {tuple(want.shape)}"
        off = (value.double() - want.double()).abs() > UPDATE_TOLERANCE
        count = int(off.sum())
        if count and example is None:
            example = f"{name}: largest difference {float((value.double() - want.double()).abs().max()):.3g}"
        differing, total = differing + count, total + want.numel()
    if differing > UPDATE_MISMATCH * total:
        return f"{100 * differing / total:.3g}% of its values differ from it (e.g. {example})"
    return None


@ppo_check.case("one PPO update trains the policy and the value model exactly as TRL's reference run does, and "
                "leaves the reference and the reward model alone", weight=3)
def _(ns, ctx):
    case = "one PPO update"
    output_dir = scratch_dir()
    try:
        trainer, inputs = ppo_trainer_by_student(ns, ctx, case, output_dir)
        call_student("build_ppo_trainer", "training the PPOTrainer of `build_ppo_trainer` for one update",
                     ns.method, trainer, "train")
        step = trainer_attributes(ns, trainer, ["state.global_step"])["state.global_step"]
        after = {name: call_student("build_ppo_trainer", f"reading the {name} after training", ns.export,
                                    inputs[name]) for name in PPO_MODELS}
    finally:
        shutil.rmtree(output_dir, ignore_errors=True)
    if step != 1:
        raise CheckFailure(case, "1 optimizer step (2 episodes, batch size 2)", f"global_step = {step!r}",
                           "build the trainer with the configuration you are given (args=args)")
    for name, source in (("ref_policy", "base"), ("reward_model", "reward")):
        expected = source_weights(ctx, source)
        report = weight_report(after[name], expected, list(expected))
        if report is not None:
            raise CheckFailure(case, f"{name} unchanged by training", f"{name} changed: {report}",
                               "only the policy and the value model are trained")
    base = source_weights(ctx, "base")
    if weight_report(after["policy"], base, list(base)) is None:
        raise CheckFailure(case, "a policy that changed after one update", "the same policy weights",
                           "the trainer's `model` must be the policy")
    reference = reference_ppo_update(ctx)
    for name in ("policy", "value_model"):
        report = update_report(after[name], reference[name])
        if report is not None:
            raise CheckFailure(case, f"the {name} after one update of a PPOTrainer wired as the notebook says, on "
                                     "the same models, prompts, configuration and seed", f"the {name}: {report}",
                               "build the trainer from exactly the arguments you are given: do not change the "
                               "configuration, the tokenizer (its padding side) or the datasets")


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


CHECKS = [implicit_check, reward_check, ppo_check, logprob_check]
