"""Hidden checks of Part 2 (reward model, PPO with TRL, log-prob analysis), one per nbgrader test cell.

The checks call the student's functions on the real SmolLM2 tokenizer and the tiny random model, like those of
Part 1, and compare them with the independent references at the top of this module. The PPO check builds a
real `PPOTrainer` around reference models and runs one update on the tiny model (about two seconds).

Every tokenizer handed to student code is a private copy: whatever a student's function does to it (switch its
padding side, add a token) cannot leak into another case or into the Part 1 checks, which share the context's
tokenizer. Functions graded by another test cell (`get_log_prob`) and the device constants are replaced by
references while a function is graded, so one bug costs points in one place, and the checks run on the CPU
even where the notebook picked a GPU.
"""
import contextlib
import inspect
import shutil
import tempfile
import types
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F

from autograder.checks import reference as ref
from autograder.checks.framework import (
    Check,
    CheckFailure,
    StudentError,
    lookup,
    rebind,
    rebound_namespace,
    shorten,
    student,
)
from autograder.checks.part1 import EXAMPLES, close, fmt

CPU = {"DEVICE": "cpu", "AMP_DTYPE": torch.float32}  # the checks run on the CPU even where the notebook has a GPU
ADDED_PAD = "[PAD]"  # a token the tokenizer does not have: models must grow an embedding row for it


# ================================================================ references and shared resources

def user_turn(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def implicit_conversation(prompt: str, answer: str) -> list[dict[str, str]]:
    """The expected conversation of one answer, spelled out message by message."""
    messages = user_turn(prompt)
    messages.append({"role": "assistant", "content": answer})
    return messages


def chat_safe_pad(tokenizer) -> str:
    """A pad token that never occurs in rendered chat text: the unknown token of SmolLM (`<|endoftext|>`)."""
    rendered = tokenizer.apply_chat_template(implicit_conversation("Hi!", "Hello 👋"), tokenize=False)
    used = set(ref.token_ids(rendered, tokenizer))
    for candidate in (tokenizer.unk_token, "<|endoftext|>"):
        if candidate and tokenizer.convert_tokens_to_ids(candidate) not in used:
            return candidate
    raise RuntimeError("the grading tokenizer has no chat-safe pad token")


def make_tokenizer(ctx, pad: str, side: str):
    """A private copy of the grading tokenizer.

    pad: "eos" (what `load_tokenizer` gives, the end-of-turn token), "safe" (what `set_chat_safe_pad_token` gives)
    or "added" (a brand-new `[PAD]` token, one more than the model has embeddings for).
    """
    import copy

    tokenizer = copy.deepcopy(ctx.tokenizer)
    if pad == "eos":
        tokenizer.pad_token = tokenizer.eos_token
    elif pad == "safe":
        tokenizer.pad_token = chat_safe_pad(tokenizer)
    elif pad == "added":
        tokenizer.add_special_tokens({"pad_token": ADDED_PAD})
    else:
        raise ValueError(pad)
    tokenizer.padding_side = side
    return tokenizer


def tokenizer_state(tokenizer) -> tuple:
    return (tokenizer.padding_side, tokenizer.truncation_side, tokenizer.pad_token, len(tokenizer),
            tokenizer.model_max_length, tokenizer.chat_template)


@contextlib.contextmanager
def lent_tokenizer(ctx, pad: str, side: str):
    """A cached private tokenizer for student code; thrown away afterwards if the student's code changed it."""
    pool = ctx.cached("part2-tokenizers", dict)
    key = (pad, side)
    if key not in pool:
        pool[key] = make_tokenizer(ctx, pad, side)
    tokenizer = pool[key]
    state = tokenizer_state(tokenizer)
    try:
        yield tokenizer
    finally:
        if tokenizer_state(tokenizer) != state:
            pool.pop(key, None)


def pad_ids(ctx, pad: str) -> int:
    """The pad id of the tokenizers of `make_tokenizer` (without lending one)."""
    if pad == "eos":
        return ctx.tokenizer.eos_token_id
    if pad == "safe":
        return ctx.tokenizer.convert_tokens_to_ids(chat_safe_pad(ctx.tokenizer))
    return len(ctx.tokenizer)  # the added [PAD] gets the next free id


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


def checkpoints(ctx) -> dict:
    """Model folders the checks load from, written once per context into a temporary folder.

    - "bf16": the tiny model saved in bfloat16, as many Hub checkpoints are (transformers 5 loads a checkpoint
      in its stored dtype unless `dtype=` says otherwise);
    - "reward": a reward model (one-label sequence classifier) with a recognisable, seeded score head and the
      chat-safe pad token in its config, as the notebook saves its trained reward model;
    - "classifier": that reward model in memory, frozen, to copy from.
    """
    def build():
        from transformers import AutoModelForSequenceClassification

        folder = tempfile.TemporaryDirectory(prefix="hw2-part2-checks-")
        root = Path(folder.name)
        ctx.model().to(torch.bfloat16).save_pretrained(root / "bf16")
        ctx.tokenizer.save_pretrained(root / "bf16")
        classifier = AutoModelForSequenceClassification.from_pretrained(ctx.model_dir, num_labels=1,
                                                                        dtype=torch.float32)
        generator = torch.Generator().manual_seed(7)
        with torch.no_grad():
            classifier.score.weight.copy_(0.5 * torch.randn(classifier.score.weight.shape, generator=generator))
        classifier.config.pad_token_id = pad_ids(ctx, "safe")
        classifier.save_pretrained(root / "reward")
        make_tokenizer(ctx, "safe", "right").save_pretrained(root / "reward")
        for module in classifier.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        return {"folder": folder, "bf16": root / "bf16", "reward": root / "reward",
                "classifier": classifier.eval().requires_grad_(False)}

    return ctx.cached("part2-checkpoints", build)


def weights_of(model) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()}


def same_weights(model, expected: dict[str, torch.Tensor]) -> bool:
    """Whether `model` holds the weights `expected` (an embedding grown for added tokens compares its old rows)."""
    seen = model.state_dict()
    for name, tensor in expected.items():
        if name not in seen:
            return False
        value = seen[name].detach().cpu()
        if value.shape != tensor.shape:
            if value.dim() != tensor.dim() or value.shape[1:] != tensor.shape[1:] or value.shape[0] < tensor.shape[0]:
                return False
            value = value[: tensor.shape[0]]
        if not torch.equal(value.to(tensor.dtype), tensor):
            return False
    return True


def shares_storage(a, b) -> bool:
    return bool({p.data_ptr() for p in a.parameters()} & {p.data_ptr() for p in b.parameters()})


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


def reference_ppo_config(output_dir: Path):
    """A one-update PPO configuration on the CPU-sized model (no checkpoints, no reporting, no sample tables)."""
    from trl.experimental.ppo import PPOConfig

    checkpointing = ("activation_checkpointing" if "activation_checkpointing" in PPOConfig.__dataclass_fields__
                     else "gradient_checkpointing")
    kwargs = dict(
        output_dir=str(output_dir), learning_rate=1e-3, per_device_train_batch_size=2, gradient_accumulation_steps=1,
        num_mini_batches=1, num_ppo_epochs=1, total_episodes=2, response_length=6, stop_token="eos",
        num_sample_generations=0, logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
        bf16=False, fp16=False, seed=0, **{checkpointing: False},
    )
    return PPOConfig(**kwargs)


def reference_ppo_models(ctx) -> tuple:
    """(value_model, reward_model, policy, ref_policy) as PPO needs them, copied from memory (no disk)."""
    import copy

    classifier = checkpoints(ctx)["classifier"]
    value_model = copy.deepcopy(classifier).requires_grad_(True)
    reward_model = copy.deepcopy(classifier).eval().requires_grad_(False)
    policy = ctx.model(requires_grad=True)
    ref_policy = ctx.model()
    return value_model, reward_model, policy, ref_policy


def prompt_dataset(ctx, prompts: list[str]):
    from datasets import Dataset

    tokenizer = ctx.tokenizer
    return Dataset.from_list([{"input_ids": generation_prompt_ids(p, tokenizer)} for p in prompts])


def unwrapped_student(ns: dict, name: str, isolate: dict):
    """Like `student(ns, name, isolate)`, also for a function decorated with `@torch.no_grad()`.

    `framework.student` cannot make a decorated function call the references: the decorator's wrapper was
    defined in torch, so only the function inside it looks names up in the notebook. This re-creates the
    inner function on the isolated namespace and runs it under `torch.no_grad()`, which is what the usual
    decorators (`torch.no_grad`, `torch.inference_mode`) are for.
    """
    function = lookup(ns, name)
    inner = inspect.unwrap(function)
    if inner is function or not isinstance(inner, types.FunctionType) or inner.__globals__ is not ns:
        return student(ns, name, isolate)
    namespace = rebound_namespace(ns, isolate)
    rebound = rebind(inner, namespace, ns)

    def call(*args, **kwargs):
        with torch.no_grad():
            return rebound(*args, **kwargs)

    call.__name__ = name
    namespace[name] = call
    return student(namespace, name)


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
    try:
        mapped = Dataset.from_list(EXAMPLES[:3]).map(function, remove_columns=["prompt"])
    except StudentError:
        raise
    except Exception as error:  # noqa: BLE001 (datasets failed on what the student's function returned)
        raise StudentError("to_implicit_prompt_preferences", error,
                           "dataset.map(to_implicit_prompt_preferences, remove_columns=['prompt'])") from error
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


def reward_model_by_student(ns, ctx, case, pad="safe", model_dir=None):
    from transformers import PreTrainedModel

    with lent_tokenizer(ctx, pad, "right") as tokenizer:
        model = student(ns, "build_reward_model", CPU)(str(model_dir or ctx.model_dir), tokenizer)
    if not isinstance(model, PreTrainedModel):
        raise CheckFailure(case, "a transformers model (AutoModelForSequenceClassification.from_pretrained)",
                           type(model).__name__)
    return model.eval()


def expect_classifier(case, model, what="the reward model"):
    name = type(model).__name__
    if not name.endswith("ForSequenceClassification"):
        raise CheckFailure(case, f"{what} as a sequence classifier (AutoModelForSequenceClassification)", name,
                           "a reward model is the language model with a classification head instead of the LM head")
    if model.config.num_labels != 1:
        raise CheckFailure(case, f"{what} with num_labels = 1 (one reward per sequence)",
                           f"num_labels = {model.config.num_labels}",
                           "AutoModelForSequenceClassification gives 2 labels unless told num_labels=1")


def scores_of_student_model(model, rows, pad_id, action):
    try:
        return classifier_scores(model, rows, pad_id)
    except Exception as error:  # noqa: BLE001 (the model is the student's)
        raise StudentError("build_reward_model", error, action) from error


@reward_check.case("a sequence classifier with exactly one output (num_labels=1)", weight=2)
def _(ns, ctx):
    case = "one-label classifier"
    model = reward_model_by_student(ns, ctx, case)
    expect_classifier(case, model)
    row = scored_conversation_ids(REWARD_PROMPT, REWARD_ANSWERS[0], ctx.tokenizer)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([row])).logits
    if tuple(logits.shape) != (1, 1):
        raise CheckFailure(case, "logits of shape (1, 1): one reward for one conversation", tuple(logits.shape))


@reward_check.case("config.pad_token_id is the tokenizer's chat-safe pad token id", weight=2)
def _(ns, ctx):
    case = "config.pad_token_id"
    expected = pad_ids(ctx, "safe")
    model = reward_model_by_student(ns, ctx, case)
    if model.config.pad_token_id != expected:
        pad_token = chat_safe_pad(ctx.tokenizer)
        raise CheckFailure(case, f"config.pad_token_id = {expected} (the tokenizer's pad token {pad_token!r})",
                           f"config.pad_token_id = {model.config.pad_token_id}",
                           "the classifier scores the last token that is not config.pad_token_id: set it to "
                           "tokenizer.pad_token_id (not the end-of-turn token, which ends every turn)")


@reward_check.case("float32 weights, also when the checkpoint is stored in bfloat16", weight=1)
def _(ns, ctx):
    case = "float32"
    model = reward_model_by_student(ns, ctx, case, model_dir=checkpoints(ctx)["bf16"])
    dtypes = sorted({str(p.dtype) for p in model.parameters()})
    if dtypes != ["torch.float32"]:
        raise CheckFailure(case, "every parameter in torch.float32", f"parameters in {dtypes}",
                           "pass dtype=torch.float32 to from_pretrained: transformers 5 otherwise keeps the "
                           "checkpoint's dtype (bfloat16 for SmolLM)")


@reward_check.case("embeddings and config cover a tokenizer with an added [PAD] token", weight=1)
def _(ns, ctx):
    case = "added pad token"
    pad_id = pad_ids(ctx, "added")
    model = reward_model_by_student(ns, ctx, case, pad="added")
    rows = model.get_input_embeddings().num_embeddings
    if rows < pad_id + 1:
        raise CheckFailure(case, f"at least {pad_id + 1} embedding rows (len(tokenizer))", f"{rows} rows",
                           "a new token needs an embedding row: cover_tokenizer(model, tokenizer) resizes the "
                           "embeddings when the tokenizer is longer")
    if model.config.pad_token_id != pad_id:
        raise CheckFailure(case, f"config.pad_token_id = {pad_id} ({ADDED_PAD})",
                           f"config.pad_token_id = {model.config.pad_token_id}",
                           "take the id from the tokenizer you are given, do not hard-code it")
    batch = [scored_conversation_ids(REWARD_PROMPT, answer, ctx.tokenizer) for answer in REWARD_ANSWERS[:2]]
    scores_of_student_model(model, batch, pad_id, f"scoring a batch padded with {ADDED_PAD}")


@reward_check.case("the reward depends on the answer, and padding a batch does not change it", weight=2)
def _(ns, ctx):
    case = "reward of the answer"
    pad_id = pad_ids(ctx, "safe")
    model = reward_model_by_student(ns, ctx, case)
    rows = [scored_conversation_ids(REWARD_PROMPT, answer, ctx.tokenizer) for answer in REWARD_ANSWERS]
    alone = [scores_of_student_model(model, [row], pad_id, "scoring one conversation")[0] for row in rows]
    batched = scores_of_student_model(model, rows, pad_id, "scoring a right-padded batch")
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


def prompt_ids_by_student(ns, ctx, case, prompt):
    example = {"prompt": prompt, "chosen": "Sure! 😊", "rejected": "No."}
    with lent_tokenizer(ctx, "safe", "left") as tokenizer:
        out = student(ns, "tokenize_prompt")(example, tokenizer=tokenizer)
    if not isinstance(out, Mapping) or "input_ids" not in out:
        seen = f"keys {sorted(out)}" if isinstance(out, Mapping) else type(out).__name__
        raise CheckFailure(case, "a dict {'input_ids': [token ids]}", seen)
    ids = out["input_ids"]
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        kind = (f"a {type(ids).__name__} of shape {tuple(ids.shape)}" if isinstance(ids, torch.Tensor)
                else f"a {type(ids).__name__}" if not isinstance(ids, list)
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


def ppo_models_by_student(ns, ctx, case, pad="safe", policy_id=None):
    from transformers import PreTrainedModel

    with lent_tokenizer(ctx, pad, "left") as tokenizer:
        out = student(ns, "load_ppo_models", CPU)(str(policy_id or ctx.model_dir), checkpoints(ctx)["reward"],
                                                  tokenizer)
    if not isinstance(out, (tuple, list)) or len(out) != 4:
        length = f" of length {len(out)}" if hasattr(out, "__len__") else ""
        raise CheckFailure(case, "a tuple (value_model, reward_model, policy, ref_policy)",
                           f"{type(out).__name__}{length}")
    for name, model in zip(("value_model", "reward_model", "policy", "ref_policy"), out):
        if not isinstance(model, PreTrainedModel):
            raise CheckFailure(case, f"{name} as a transformers model", type(model).__name__)
    return tuple(out)


@ppo_check.case("load_ppo_models returns (value_model, reward_model, policy, ref_policy) of the right kinds",
                weight=2)
def _(ns, ctx):
    case = "four models"
    value_model, reward_model, policy, ref_policy = ppo_models_by_student(ns, ctx, case)
    expect_classifier(case, value_model, "value_model")
    expect_classifier(case, reward_model, "reward_model")
    for name, model in (("policy", policy), ("ref_policy", ref_policy)):
        if not type(model).__name__.endswith("ForCausalLM"):
            raise CheckFailure(case, f"{name} as a causal LM (AutoModelForCausalLM)", type(model).__name__,
                               "the policy and its reference generate text: they keep the LM head")


@ppo_check.case("value and reward models come from the reward model, policy and reference from policy_id, "
                "as four separate models", weight=2)
def _(ns, ctx):
    case = "where the weights come from"
    models = ppo_models_by_student(ns, ctx, case)
    classifier = ctx.cached("part2-classifier-weights", lambda: weights_of(checkpoints(ctx)["classifier"]))
    base = ctx.cached("part2-base-weights", lambda: weights_of(ctx.model()))
    names = ("value_model", "reward_model", "policy", "ref_policy")
    for name, model, expected, source in zip(names, models, (classifier, classifier, base, base),
                                             ("reward_model_path", "reward_model_path", "policy_id", "policy_id")):
        if not same_weights(model, expected):
            hint = ("the critic starts from the trained reward model: load it from reward_model_path too"
                    if name == "value_model" else f"load {name} with from_pretrained({source}, ...)")
            raise CheckFailure(case, f"{name} with the weights saved at {source}", "different weights", hint)
    for i, j in ((0, 1), (2, 3), (0, 2), (1, 3)):
        if models[i] is models[j] or shares_storage(models[i], models[j]):
            raise CheckFailure(case, f"{names[i]} and {names[j]} as separate models",
                               "the same model (or shared weight tensors)",
                               "PPO trains the policy and the value model while the reference and the reward model "
                               "stay as they were: load each one separately (or copy.deepcopy it)")


@ppo_check.case("the reward model and the reference are frozen, the policy and the value model trainable",
                weight=2)
def _(ns, ctx):
    case = "frozen and trainable models"
    models = ppo_models_by_student(ns, ctx, case)
    for name, model, trainable in zip(("value_model", "reward_model", "policy", "ref_policy"), models,
                                      (True, False, True, False)):
        flags = [p.requires_grad for p in model.parameters()]
        if trainable and not all(flags):
            raise CheckFailure(case, f"{name} trainable (requires_grad=True everywhere)",
                               f"{flags.count(False)} of {len(flags)} tensors frozen", "PPO trains this model")
        if not trainable and any(flags):
            raise CheckFailure(case, f"{name} frozen (requires_grad=False everywhere)",
                               f"{flags.count(True)} of {len(flags)} tensors trainable",
                               f"call {name}.requires_grad_(False) (and .eval())")


@ppo_check.case("float32 models whose embeddings cover the tokenizer", weight=1)
def _(ns, ctx):
    case = "float32 and embeddings"
    rows = len(ctx.tokenizer) + 1
    models = ppo_models_by_student(ns, ctx, case, pad="added", policy_id=checkpoints(ctx)["bf16"])
    for name, model in zip(("value_model", "reward_model", "policy", "ref_policy"), models):
        dtypes = sorted({str(p.dtype) for p in model.parameters()})
        if dtypes != ["torch.float32"]:
            raise CheckFailure(case, f"{name} in torch.float32 (the policy checkpoint here is bfloat16)",
                               f"parameters in {dtypes}", "pass dtype=torch.float32 to every from_pretrained")
        size = model.get_input_embeddings().num_embeddings
        if size < rows:
            raise CheckFailure(case, f"{name} with at least {rows} embedding rows (len(tokenizer), which has an "
                                     f"added {ADDED_PAD} token)", f"{size} rows",
                               "call cover_tokenizer(model, tokenizer) on each of the four models")


PPO_CONSTANTS = {
    "PPO_LR": 3e-4, "PPO_BATCH_SIZE": 4, "PPO_EPOCHS": 3, "PPO_TOTAL_EPISODES": 12, "PPO_RESPONSE_LENGTH": 20,
    "PPO_KL_COEF": 0.07, "PPO_MISSING_EOS_PENALTY": 0.5, "PPO_SAMPLE_GENERATIONS": 0, "ENABLE_WANDB": False,
}
PPO_CONSTANTS["PPO_HPARAMS"] = dict(
    learning_rate=PPO_CONSTANTS["PPO_LR"], batch_size=PPO_CONSTANTS["PPO_BATCH_SIZE"],
    num_ppo_epochs=PPO_CONSTANTS["PPO_EPOCHS"], total_episodes=PPO_CONSTANTS["PPO_TOTAL_EPISODES"],
    response_length=PPO_CONSTANTS["PPO_RESPONSE_LENGTH"], kl_coef=PPO_CONSTANTS["PPO_KL_COEF"],
    missing_eos_penalty=PPO_CONSTANTS["PPO_MISSING_EOS_PENALTY"],
)
CONFIG_DIR_NAME = "hw2-check-ppo-config"


def ppo_config_by_student(ns, case, device="cpu", amp_dtype=torch.float32):
    from trl.experimental.ppo import PPOConfig

    output_dir = Path(tempfile.gettempdir()) / CONFIG_DIR_NAME
    isolate = {**PPO_CONSTANTS, "DEVICE": device, "AMP_DTYPE": amp_dtype}
    try:
        config = student(ns, "make_ppo_config", isolate)(output_dir)
    except StudentError as error:
        message = str(error.error)
        if isinstance(error.error, ValueError) and "bf16" in message:  # TrainingArguments refuses bf16 here
            raise CheckFailure(case, f"a PPOConfig that can be built with DEVICE={device!r}, AMP_DTYPE={amp_dtype}",
                               f"PPOConfig(...) raised ValueError: {shorten(message, 160)}",
                               "TRL switches bf16 on by default, which CPUs and older GPUs cannot run: pass "
                               "**trainer_precision()") from None
        raise
    if not isinstance(config, PPOConfig):
        raise CheckFailure(case, "a PPOConfig (from trl.experimental.ppo)", type(config).__name__)
    return config, output_dir


@ppo_check.case("make_ppo_config: a PPOConfig for output_dir with the PPO_* hyper-parameters", weight=2)
def _(ns, ctx):
    case = "hyper-parameters"
    config, output_dir = ppo_config_by_student(ns, case)
    if Path(str(config.output_dir)) != output_dir:
        raise CheckFailure(case, f"output_dir = {str(output_dir)!r}", f"output_dir = {config.output_dir!r}",
                           "write to the output_dir argument")
    constants = PPO_CONSTANTS
    expected = {
        "learning_rate": constants["PPO_LR"], "num_ppo_epochs": constants["PPO_EPOCHS"],
        "total_episodes": constants["PPO_TOTAL_EPISODES"], "response_length": constants["PPO_RESPONSE_LENGTH"],
        "kl_coef": constants["PPO_KL_COEF"], "missing_eos_penalty": constants["PPO_MISSING_EOS_PENALTY"],
        "per_device_train_batch_size * gradient_accumulation_steps": constants["PPO_BATCH_SIZE"],
    }
    seen = {name: getattr(config, name) for name in list(expected)[:-1]}
    seen[list(expected)[-1]] = config.per_device_train_batch_size * config.gradient_accumulation_steps
    wrong = {name: value for name, value in seen.items()
             if not (isinstance(value, (int, float)) and close(float(value), float(expected[name]), 0, 1e-9))}
    if wrong:
        raise CheckFailure(case, ", ".join(f"{name}={expected[name]}" for name in wrong),
                           ", ".join(f"{name}={value}" for name, value in wrong.items()),
                           "use the constants PPO_LR, PPO_BATCH_SIZE, PPO_EPOCHS, PPO_TOTAL_EPISODES, "
                           "PPO_RESPONSE_LENGTH, PPO_KL_COEF and PPO_MISSING_EOS_PENALTY, not copies of their values")


def precision(config) -> dict[str, bool]:
    return {"bf16": bool(config.bf16), "fp16": bool(config.fp16)}


@ppo_check.case("make_ppo_config: no mixed precision on a CPU", weight=2)
def _(ns, ctx):
    case = "precision on a CPU"
    config, _ = ppo_config_by_student(ns, case)
    if precision(config) != {"bf16": False, "fp16": False}:
        raise CheckFailure(case, "bf16=False, fp16=False when DEVICE is 'cpu'", str(precision(config)),
                           "pass **trainer_precision()")


@ppo_check.case("make_ppo_config: fp16 on a GPU without bfloat16 (DEVICE='cuda', AMP_DTYPE=float16)", weight=1)
def _(ns, ctx):
    case = "precision on an older GPU"
    config, _ = ppo_config_by_student(ns, case, device="cuda", amp_dtype=torch.float16)
    if precision(config) != {"bf16": False, "fp16": True}:
        raise CheckFailure(case, "bf16=False, fp16=True on a T4-class GPU", str(precision(config)),
                           "the flags follow DEVICE and AMP_DTYPE: pass **trainer_precision()")


@ppo_check.case("make_ppo_config: answers stop at the end-of-turn token, no checkpoints are saved", weight=1)
def _(ns, ctx):
    case = "stop token and saving"
    config, _ = ppo_config_by_student(ns, case)
    stops = config.stop_token == "eos" or (config.stop_token is None
                                           and config.stop_token_id == ctx.tokenizer.eos_token_id)
    if not stops:
        raise CheckFailure(case, "stop_token='eos'",
                           f"stop_token={config.stop_token!r}, stop_token_id={config.stop_token_id!r}",
                           "without a stop token every answer runs to response_length and gets the "
                           "missing-EOS penalty")
    if str(getattr(config.save_strategy, "value", config.save_strategy)) != "no":
        raise CheckFailure(case, "save_strategy='no'", f"save_strategy={config.save_strategy!r}",
                           "PPO checkpoints of the four models fill the disk; the notebook saves the policy itself")


def ppo_trainer_by_student(ns, ctx, case, output_dir: Path, tokenizer):
    """The student's build_ppo_trainer on reference models, configuration and datasets; returns it and them."""
    from trl.experimental.ppo import PPOTrainer

    config = reference_ppo_config(output_dir)
    value_model, reward_model, policy, ref_policy = reference_ppo_models(ctx)
    train = prompt_dataset(ctx, PPO_PROMPTS[:2])
    evaluation = prompt_dataset(ctx, PPO_PROMPTS[2:3])
    trainer = student(ns, "build_ppo_trainer", CPU)(config, tokenizer, value_model, reward_model, policy, ref_policy,
                                                    train, evaluation)
    if not isinstance(trainer, PPOTrainer):
        raise CheckFailure(case, "a PPOTrainer (from trl.experimental.ppo)", type(trainer).__name__)
    given = {"value_model": value_model, "reward_model": reward_model, "policy": policy, "ref_policy": ref_policy,
             "config": config, "tokenizer": tokenizer, "train": train, "eval": evaluation}
    return trainer, given


@contextlib.contextmanager
def scratch_dir():
    path = Path(tempfile.mkdtemp(prefix="hw2-check-ppo-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@ppo_check.case("build_ppo_trainer puts each model, the tokenizer and the datasets in their slots", weight=3)
def _(ns, ctx):
    case = "trainer wiring"
    with scratch_dir() as output_dir, lent_tokenizer(ctx, "safe", "left") as tokenizer:
        trainer, given = ppo_trainer_by_student(ns, ctx, case, output_dir, tokenizer)
        slots = (("model (the policy)", trainer.policy_model, "policy"), ("ref_model", trainer.ref_model, "ref_policy"),
                 ("reward_model", trainer.reward_model, "reward_model"),
                 ("value_model", trainer.value_model, "value_model"))
        names = {id(model): name for name, model in given.items()}
        reference_weights = weights_of(given["ref_policy"])
        for slot, model, expected in slots:
            if expected == "ref_policy" and model is not None and id(model) not in names and same_weights(
                    model, reference_weights):
                continue  # ref_model=None: TRL made its own frozen copy of the initial policy, which is as good
            if model is not given[expected]:
                seen = names.get(id(model), type(model).__name__)
                raise CheckFailure(case, f"{slot} = {expected}", f"{slot} = {seen}",
                                   "PPOTrainer(model=policy, ref_model=ref_policy, reward_model=reward_model, "
                                   "value_model=value_model, ...): pass them by keyword, the positional order of "
                                   "PPOTrainer differs from ours")
        if trainer.processing_class is not given["tokenizer"]:
            raise CheckFailure(case, "processing_class = the tokenizer argument",
                               type(trainer.processing_class).__name__)
        if trainer.train_dataset is not given["train"] or trainer.eval_dataset is not given["eval"]:
            raise CheckFailure(case, "train_dataset and eval_dataset as given",
                               f"train_dataset={names.get(id(trainer.train_dataset), 'another dataset')}, "
                               f"eval_dataset={names.get(id(trainer.eval_dataset), 'another dataset')}")
        args = trainer.args
        if args is not given["config"] and (args.response_length, args.learning_rate) != (
                given["config"].response_length, given["config"].learning_rate):
            raise CheckFailure(case, "args = the configuration argument", "another configuration",
                               "pass args=args")


@ppo_check.case("one PPO update changes the policy and leaves the reference and the reward model alone", weight=2)
def _(ns, ctx):
    case = "one PPO update"
    with scratch_dir() as output_dir, lent_tokenizer(ctx, "safe", "left") as tokenizer:
        trainer, given = ppo_trainer_by_student(ns, ctx, case, output_dir, tokenizer)
        before = {name: weights_of(given[name]) for name in ("policy", "ref_policy", "reward_model")}
        try:
            trainer.train()
        except Exception as error:  # noqa: BLE001 (the trainer was built by the student's code)
            raise StudentError("build_ppo_trainer", error,
                               "training the PPOTrainer of `build_ppo_trainer` for one update") from error
        if trainer.state.global_step != 1:
            raise CheckFailure(case, "1 optimizer step (2 episodes, batch size 2)",
                               f"global_step = {trainer.state.global_step}")
        if same_weights(given["policy"], before["policy"]):
            raise CheckFailure(case, "a policy that changed after one update", "the same policy weights",
                               "the trainer's `model` must be the policy")
        for name in ("ref_policy", "reward_model"):
            if not same_weights(given[name], before[name]):
                raise CheckFailure(case, f"{name} unchanged by training", f"{name} changed",
                                   "only the policy and the value model are trained")


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
    with lent_tokenizer(ctx, "eos", side) as tokenizer:
        out = unwrapped_student(ns, "sequence_log_probs", ISOLATE_LOGPROBS)(ctx.model(), tokenizer, list(texts),
                                                                           **kwargs)
    if not isinstance(out, Mapping) or any(key not in out for key in RESULT_KEYS):
        seen = f"keys {sorted(out)}" if isinstance(out, Mapping) else type(out).__name__
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
