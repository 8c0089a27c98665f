"""Hidden checks of the starred LoRA DPO task (extra credit): adapters, parameter counts, the reference for free.

Every case runs real peft adapters on the tiny model with the real tokenizer. The references are independent of
the notebook: the adapted layer's output is recomputed in float64 from its weights as W x + (alpha / r) B A x,
parameter counts deduplicate shared tensors by storage, and log-probs come from one unpadded forward pass per
answer (`reference.answer_log_prob`) on a plain copy of the model, never through peft or the notebook's batching.

`lora_reference_logps` reaches the notebook's `precompute_reference_logps`, whose batches go through the
student's `pad_collate_fn` (graded in Part 1): a reference collate function and the CPU stand in for it and for
the notebook's device while this check runs, so that one bug costs points in one place.
"""
import inspect
import math
import types

import torch
import torch.nn.functional as F

from autograder.checks import reference as ref
from autograder.checks.framework import Check, CheckFailure, rebind, rebound_namespace, shorten, student
from autograder.checks.part1 import ID_KEYS, chat_rows, fmt

RANK, ALPHA = 4, 8  # alpha / r = 2: swapping the two gives 0.5 and rank-8 matrices
TARGETS = ("q_proj", "down_proj")  # one attention and one MLP layer, neither of them peft's default pair
LAYERS = 2  # of the tiny model
PROMPT_KEEP, ANSWER_KEEP = (10, 13, 6, 8), 9  # rows cut short to keep the forward passes small


# ================================================================ references

def isolated_pad_collate_fn(batch, pad_token_id):
    """Stand-in for the student's pad_collate_fn: prompts padded on the left, answers on the right."""
    rows = [{key: [int(v) for v in torch.as_tensor(example[key]).tolist()] for key in ID_KEYS} for example in batch]
    return {key: torch.tensor(value) for key, value in ref.collated(rows, pad_token_id).items()}


ISOLATE = {"pad_collate_fn": isolated_pad_collate_fn, "DEVICE": "cpu", "AMP_DTYPE": torch.float32}


def isolated_student(ns: dict, name: str):
    """The student's `name` on a namespace where ISOLATE replaces the Part 1 answers and the device.

    The notebook's `dataset_logps` is wrapped by `@torch.no_grad()`, whose wrapper keeps the notebook's globals;
    it is re-created on the isolated namespace (and wrapped again) so that its batches use the stand-ins too.
    """
    namespace = rebound_namespace(ns, ISOLATE)
    decorated = ns.get("dataset_logps")
    inner = inspect.unwrap(decorated) if decorated is not None else None
    if isinstance(inner, types.FunctionType) and inner is not decorated and inner.__globals__ is ns:
        namespace["dataset_logps"] = torch.no_grad()(rebind(inner, namespace, ns))
    return student(namespace, name)


def short_rows(ctx, count: int = 4) -> list[dict[str, list[int]]]:
    """Real chat pairs (answers end with <|im_end|>), prompts cut to their last tokens, answers to their first."""
    return [{"prompt_input_ids": row["prompt_input_ids"][-keep:],
             "chosen_input_ids": row["chosen_input_ids"][:ANSWER_KEEP],
             "rejected_input_ids": row["rejected_input_ids"][:ANSWER_KEEP]}
            for row, keep in zip(chat_rows(ctx)[:count], PROMPT_KEEP)]


def expected_logps(model, rows, max_seq_len: int | None = None) -> dict[str, list[float]]:
    """log p(answer | prompt) of every pair, one unpadded pass each; `max_seq_len` cuts each answer after
    max_seq_len - (its own prompt's length) tokens, as the notebook's `pair_logps` does."""
    out = {"ref_chosen_logps": [], "ref_rejected_logps": []}
    for row in rows:
        prompt = row["prompt_input_ids"]
        keep = None if max_seq_len is None else max(0, max_seq_len - len(prompt))
        for key in ("chosen", "rejected"):
            answer = row[f"{key}_input_ids"][:keep]
            out[f"ref_{key}_logps"].append(ref.answer_log_prob(model, prompt, answer))
    return out


def answer_logps_with_grad(model, rows) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable log-probs [n] of the chosen and of the rejected answers, one unpadded pass each."""
    logps = {"chosen": [], "rejected": []}
    for row in rows:
        for key in logps:
            ids = torch.tensor([row["prompt_input_ids"] + row[f"{key}_input_ids"]])
            log_probs = F.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
            start = len(row["prompt_input_ids"])
            targets = ids[0, start:]
            logps[key].append(log_probs[start - 1: -1].gather(-1, targets.unsqueeze(-1)).sum())
    return torch.stack(logps["chosen"]), torch.stack(logps["rejected"])


def lora_tensors(model) -> dict[str, torch.nn.Parameter]:
    """The adapter parameters of a model, by name (peft names them `<layer>.lora_A.<adapter>.weight`)."""
    return {name: p for name, p in model.named_parameters() if ".lora_A." in name or ".lora_B." in name}


def layer_path(name: str) -> str:
    """`layers.0.self_attn.q_proj` from the name of one of its adapter tensors, whatever the wrapping prefix."""
    path = name.split(".lora_")[0]
    return path[path.index("layers."):] if "layers." in path else path


def unique_count(model, trainable_only: bool) -> int:
    """Parameter values of a model, each storage once (state_dict lists tied weights under two names)."""
    seen, total = set(), 0
    for tensor in model.state_dict(keep_vars=True).values():
        if not isinstance(tensor, torch.nn.Parameter) or tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        if tensor.requires_grad or not trainable_only:
            total += tensor.numel()
    return total


def reference_lora_model(ctx):
    """The tiny model with rank-RANK adapters on TARGETS, built with peft directly."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(task_type="CAUSAL_LM", r=RANK, lora_alpha=ALPHA, target_modules=list(TARGETS),
                        lora_dropout=0.0)
    return get_peft_model(ctx.model(requires_grad=True), config)


def move_adapters(model, seed: int = 3, scale: float = 0.5) -> None:
    """Give every B matrix seeded random values, as if the adapters had trained."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(lora_tensors(model).items()):
            if ".lora_B." in name:
                p.copy_(scale * torch.randn(p.shape, generator=generator))


# ================================================================ student calls

def adapted_by_student(ns, ctx, case, targets=TARGETS, rank=RANK, alpha=ALPHA):
    """The student's add_lora_adapters on a fresh, trainable tiny model, in eval mode (peft creates its dropout
    modules in training mode); the model must carry adapters."""
    model = student(ns, "add_lora_adapters")(ctx.model(requires_grad=True), r=rank, alpha=alpha,
                                             target_modules=list(targets))
    if not isinstance(model, torch.nn.Module):
        raise CheckFailure(case, "a model (the PeftModel returned by get_peft_model)", type(model).__name__,
                           "return get_peft_model(model, config)")
    if not lora_tensors(model):
        raise CheckFailure(case, f"adapter weights (lora_A, lora_B) on {list(targets)}", "no adapter parameter",
                           "build a LoraConfig and apply it with get_peft_model")
    return model.eval()


def counts_by_student(ns, case, model) -> tuple[int, int]:
    out = student(ns, "count_parameters")(model)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise CheckFailure(case, "a tuple (trainable, total) of two integers", shorten(repr(out), 120))
    try:
        values = tuple(int(v) for v in out)
    except (TypeError, ValueError):
        raise CheckFailure(case, "a tuple (trainable, total) of two integers", shorten(repr(out), 120)) from None
    if any(float(v) != value for v, value in zip(out, values)):
        raise CheckFailure(case, "whole numbers of parameter values", shorten(repr(out), 120))
    return values


def reference_columns_by_student(ns, ctx, case, model, rows, max_seq_len=None) -> dict[str, list[float]]:
    from datasets import Dataset

    out = isolated_student(ns, "lora_reference_logps")(model, Dataset.from_list(rows), ctx.tokenizer, 2, max_seq_len)
    columns = getattr(out, "column_names", None)
    if columns is None or any(key not in columns for key in ("ref_chosen_logps", "ref_rejected_logps")):
        raise CheckFailure(case, "the dataset with the columns ref_chosen_logps and ref_rejected_logps",
                           f"{type(out).__name__} with columns {columns}",
                           "return what precompute_reference_logps returns")
    if len(out) != len(rows):
        raise CheckFailure(case, f"a dataset of {len(rows)} rows", f"{len(out)} rows")
    return {key: [float(v) for v in out[key]] for key in ("ref_chosen_logps", "ref_rejected_logps")}


def expect_columns(case, expected, seen, hint, atol=1e-3):
    for key in expected:
        if not all(math.isfinite(s) and abs(s - e) <= atol for s, e in zip(seen[key], expected[key])):
            raise CheckFailure(case, f"{key} = {fmt(expected[key])}", f"{key} = {fmt(seen[key])}", hint)


# ================================================================ test_lora_dpo

lora_check = Check("test_lora_dpo", 1, ("add_lora_adapters", "count_parameters", "lora_reference_logps"),
                   extra_credit=True)


@lora_check.case("add_lora_adapters: rank-r adapters on exactly the target modules", weight=2)
def _(ns, ctx):
    case = "adapters on the target modules"
    model = adapted_by_student(ns, ctx, case)
    expected = sorted(f"layers.{i}.{block}.{name}" for i in range(LAYERS)
                      for block, name in (("self_attn", "q_proj"), ("mlp", "down_proj")))
    tensors = lora_tensors(model)
    seen = sorted({layer_path(name) for name in tensors})
    if seen != expected:
        raise CheckFailure(case, f"adapters on {expected}", f"adapters on {seen}",
                           "pass target_modules on to LoraConfig (without it peft picks its own default layers)")
    for name, p in tensors.items():
        module = model.get_submodule(name.split(".lora_")[0])
        in_features, out_features = module.in_features, module.out_features
        shape = (RANK, in_features) if ".lora_A." in name else (out_features, RANK)
        if tuple(p.shape) != shape:
            raise CheckFailure(case, f"{name.split('.lora_')[1].split('.')[0]} of shape {shape} (r = {RANK})",
                               f"shape {tuple(p.shape)}", "the rank is LoraConfig's r; alpha is lora_alpha")


@lora_check.case("add_lora_adapters: only the adapters are trainable, every pretrained weight is frozen", weight=2)
def _(ns, ctx):
    case = "only the adapters train"
    model = adapted_by_student(ns, ctx, case)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    frozen_adapters = [name for name, p in lora_tensors(model).items() if not p.requires_grad]
    base = [name for name in trainable if ".lora_" not in name]
    if base or frozen_adapters:
        seen = (f"{len(base)} trainable pretrained tensors (e.g. {base[0]})" if base
                else f"frozen adapter tensors (e.g. {frozen_adapters[0]})")
        raise CheckFailure(case, "requires_grad=True on the lora_A / lora_B tensors only", seen,
                           "get_peft_model freezes the pretrained weights; do not switch them back on")


@lora_check.case("add_lora_adapters: the layer computes W x + (alpha / r) B A x, with B starting at zero", weight=2)
def _(ns, ctx):
    case = "W x + (alpha / r) B A x"
    weight = ctx.model().model.layers[0].self_attn.q_proj.weight.detach().double()
    model = adapted_by_student(ns, ctx, case)
    tensors = {name.split(".lora_")[1][0]: p for name, p in lora_tensors(model).items()
               if layer_path(name) == "layers.0.self_attn.q_proj"}
    if set(tensors) != {"A", "B"}:
        raise CheckFailure(case, "one lora_A and one lora_B on layers.0.self_attn.q_proj", f"{sorted(tensors)}")
    module = model.get_submodule(next(name for name in lora_tensors(model)
                                      if layer_path(name) == "layers.0.self_attn.q_proj").split(".lora_")[0])
    x = torch.randn(3, weight.shape[1], generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        start = module(x).double()
        if not torch.allclose(start, x.double() @ weight.T, atol=1e-5):
            raise CheckFailure(case, "the pretrained output W x before training (B = 0)",
                               f"a difference of {float((start - x.double() @ weight.T).abs().max()):.3g}",
                               "keep peft's initialisation: B starts at zero, so training starts from the base model")
        move_adapters(model)
        a, b = tensors["A"].detach().double(), tensors["B"].detach().double()
        seen = module(x).double()
    for label, scaling in (("alpha / r", ALPHA / RANK), ("r / alpha", RANK / ALPHA), ("no scaling", 1.0)):
        expected = x.double() @ weight.T + scaling * (x.double() @ a.T @ b.T)
        if torch.allclose(seen, expected, atol=1e-4):
            break
    else:
        label = "something else"
    if label != "alpha / r":
        raise CheckFailure(case, f"the adapter's update scaled by alpha / r = {ALPHA / RANK:g}",
                           f"an update scaled by {label}",
                           "LoraConfig(r=r, lora_alpha=alpha): check which argument gets which value")


@lora_check.case("add_lora_adapters: no dropout in the adapters (lora_dropout=0)", weight=1)
def _(ns, ctx):
    case = "no dropout"
    model = adapted_by_student(ns, ctx, case)
    move_adapters(model)
    model.train()
    ids = torch.tensor([short_rows(ctx, 1)[0]["prompt_input_ids"]])
    with torch.no_grad():
        first, second = (model(input_ids=ids).logits for _ in range(2))
    if not torch.equal(first, second):
        raise CheckFailure(case, "the same logits from two forward passes in training mode",
                           f"logits that differ by up to {float((first - second).abs().max()):.3g}",
                           "set lora_dropout=0.0: DPO compares log-probs, and dropout makes them noisy")


@lora_check.case("count_parameters: a plain model, tied embeddings counted once", weight=1)
def _(ns, ctx):
    case = "plain model"
    model = ctx.model(requires_grad=True)
    expected = (unique_count(model, True), unique_count(model, False))
    seen = counts_by_student(ns, case, model)
    hint = ("the tiny model ties its output layer to its input embeddings: count each tensor once "
            "(model.parameters() does, model.state_dict() does not)")
    if seen != expected:
        raise CheckFailure(case, f"(trainable, total) = {expected}", f"{seen}", hint)
    model.get_input_embeddings().requires_grad_(False)  # the tied output layer freezes with it
    expected = (unique_count(model, True), unique_count(model, False))
    seen = counts_by_student(ns, case, model)
    if seen != expected:
        raise CheckFailure(case, f"(trainable, total) = {expected} with the embeddings frozen", f"{seen}",
                           "count as trainable only the tensors with requires_grad=True")


@lora_check.case("count_parameters: a LoRA model", weight=1)
def _(ns, ctx):
    case = "LoRA model"
    model = reference_lora_model(ctx)
    adapters = sum(p.numel() for p in lora_tensors(model).values())
    expected = (adapters, unique_count(model, False))
    seen = counts_by_student(ns, case, model)
    if seen != expected:
        raise CheckFailure(case, f"(trainable, total) = {expected}: the adapters, and every value once", f"{seen}",
                           "trainable = the values with requires_grad=True; total = all of them, shared ones once")


@lora_check.case("lora_reference_logps: the base model's log-probs after the adapters have moved", weight=3)
def _(ns, ctx):
    case = "reference = base model"
    rows = short_rows(ctx)
    expected = ctx.cached("lora-base-logps", lambda: expected_logps(ctx.model(), rows))
    model = adapted_by_student(ns, ctx, case)
    move_adapters(model)
    adapted = expected_logps(model, rows[:1])
    if abs(adapted["ref_chosen_logps"][0] - expected["ref_chosen_logps"][0]) < 1e-2:
        raise CheckFailure(case, "moved adapters that change the model", "the same log-probs as the base model",
                           "add_lora_adapters must return the model that carries the adapters")
    seen = reference_columns_by_student(ns, ctx, case, model, rows)
    expect_columns(case, expected, seen,
                   "compute them inside `with model.disable_adapter():` so that the adapters do not count")


@lora_check.case("lora_reference_logps passes max_seq_len on", weight=1)
def _(ns, ctx):
    case = "max_seq_len"
    rows = short_rows(ctx)
    max_seq_len = max(len(row["prompt_input_ids"]) for row in rows) + 3
    expected = ctx.cached("lora-base-logps-cut", lambda: expected_logps(ctx.model(), rows, max_seq_len))
    model = adapted_by_student(ns, ctx, case)
    move_adapters(model)
    seen = reference_columns_by_student(ns, ctx, case, model, rows, max_seq_len)
    expect_columns(case, expected, seen,
                   f"with max_seq_len={max_seq_len} each answer keeps max_seq_len - (its prompt's length) tokens: "
                   "pass batch_size and max_seq_len on to precompute_reference_logps")


@lora_check.case("lora_reference_logps switches the adapters back on", weight=1)
def _(ns, ctx):
    case = "adapters on again"
    rows = short_rows(ctx, 2)
    model = adapted_by_student(ns, ctx, case)
    move_adapters(model)
    before = expected_logps(model, rows)
    reference_columns_by_student(ns, ctx, case, model, rows)
    after = expected_logps(model, rows)
    expect_columns(case, before, after,
                   "after the call the model must compute with its adapters again (it still gave the base model's "
                   "log-probs): use the context manager `with model.disable_adapter():`, which switches them back "
                   "on, or enable them again yourself", atol=1e-5)


@lora_check.case("the first DPO step: the loss is log 2, then only the adapters change", weight=2)
def _(ns, ctx):
    case = "first DPO step"
    rows = short_rows(ctx, 2)
    model = adapted_by_student(ns, ctx, case, targets=("q_proj", "v_proj", "down_proj"))
    reference = reference_columns_by_student(ns, ctx, case, model, rows)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    model.train()
    chosen, rejected = answer_logps_with_grad(model, rows)
    margins = 0.1 * ((chosen - torch.tensor(reference["ref_chosen_logps"]))
                     - (rejected - torch.tensor(reference["ref_rejected_logps"])))
    loss = -F.logsigmoid(margins).mean()
    if abs(float(loss.detach()) - math.log(2)) > 1e-4:
        raise CheckFailure(case, f"the DPO loss log 2 = {math.log(2):.5f} before the first update",
                           f"{float(loss.detach()):.5f}", "before training the adapters add nothing (B = 0) and the "
                           "reference is the same base model, so every implicit reward is 0")
    if not loss.requires_grad:
        raise CheckFailure(case, "a loss with gradients for the adapters after lora_reference_logps",
                           "a loss that no parameter influences", "the adapters must be on (and trainable) again "
                           "when lora_reference_logps returns: `with model.disable_adapter():` does that")
    loss.backward()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)  # as train_dpo builds it
    optimizer.step()
    changed = [name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])]
    base = [name for name in changed if ".lora_" not in name]
    if base or not changed:
        raise CheckFailure(case, "an optimizer step over model.parameters() that changes the adapters only",
                           f"{len(base)} pretrained tensors changed (e.g. {base[0]})" if base else "nothing changed",
                           "only lora_A and lora_B may have requires_grad=True")


CHECKS = [lora_check]
