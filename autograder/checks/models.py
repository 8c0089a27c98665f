"""The models and tokenizers the Part 2 checks hand to student code, and how the judge reads models coming back.

Tokenizers travel as specs (`autograder.grading.exercise.resources`): every call of student code gets a copy
that no earlier call changed, so whatever the code does to it (switch its padding side, add a token) stays with
that call, and the judge's own copies are never handed out. The model folders student code loads are written
once into the context's shared folder. Models come back as `RemoteModel` (class, config, weights, trainable
parameters); forward passes run on a judge-side copy rebuilt from those weights (`RemoteModel.materialize`).
"""
from collections.abc import Mapping

import torch

from autograder.checks.framework import CheckFailure, shorten
from autograder.grading.exercise import resources
from autograder.grading.remote import RemoteModel, tag

CPU = {"DEVICE": "cpu", "AMP_DTYPE": torch.float32}  # the checks run on the CPU even where the notebook has a GPU
ADDED_PAD = resources.ADDED_PAD  # a token the tokenizer does not have: models must grow an embedding row for it
REWARD_HEAD_SEED = 7  # the score head of the checks' reward model checkpoint


def tokenizer_spec(ctx, pad: str | None, side: str) -> dict:
    """pad: "eos" (what `load_tokenizer` gives, the end-of-turn token), "safe" (what `set_chat_safe_pad_token`
    gives) or "added" (a brand-new `[PAD]` token, one more than the model has embeddings for); the pairs handed to
    student code are listed in `autograder.checks.context.LENT_TOKENIZERS`."""
    return ctx.tokenizer_spec(pad, side)


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


def expect_classifier(case, model: RemoteModel, what="the reward model"):
    name = model.type_name
    if not name.endswith("ForSequenceClassification"):
        raise CheckFailure(case, f"{what} as a sequence classifier (AutoModelForSequenceClassification)", name,
                           "a reward model is the language model with a classification head instead of the LM head")
    if num_labels(model) != 1:
        raise CheckFailure(case, f"{what} with num_labels = 1 (one reward per sequence)",
                           f"num_labels = {num_labels(model)}",
                           "AutoModelForSequenceClassification gives 2 labels unless told num_labels=1")
