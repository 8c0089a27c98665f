"""Hidden checks of the starred LoRA DPO task (extra credit): adapters, parameter counts, the reference for free.

Every case runs real peft adapters on the tiny model with the real tokenizer, on the other side of the runner:
the student's `add_lora_adapters` wraps a model built there from its spec, and the judge only ever sees data
about it (its weights, which parameters train, its adapter config, the outputs and gradients of calls made
there). The adapters are moved by loading seeded B matrices into the model (`load_state_dict`), as if they had
trained.

The references are independent of the notebook and of peft: the adapted layer's output is recomputed in
float64 from the weights as W x + (alpha / r) B A x; parameter counts deduplicate shared tensors by storage;
log-probs come from one unpadded forward pass per answer (`reference.answer_log_prob`) of a plain copy of the
model; the gradients of a DPO step come from the base model with the student's adapter matrices added to its
layers by forward hooks, in float64.

`lora_reference_logps` reaches the notebook's `precompute_reference_logps`, whose batches go through the
student's `pad_collate_fn` (graded in Part 1): a reference collate function (an oracle of the judge) and the
CPU stand in for it and for the notebook's device while this check runs, so that one bug costs points in one
place.
"""
import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from autograder.checks import reference as ref
from autograder.checks.compare import close, expect_model_gradients, fmt, scalar, triple
from autograder.checks.framework import Check, CheckFailure, call_student, salted, shorten, student
from autograder.checks.reference import ID_KEYS, chat_rows
from autograder.grading.remote import Ref, RemoteModel

RANK, ALPHA = 4, 8  # alpha / r = 2: swapping the two gives 0.5 and rank-8 matrices
TARGETS = ("q_proj", "down_proj")  # one attention and one MLP layer, neither of them peft's default pair
STEP_TARGETS = ("q_proj", "v_proj", "down_proj")  # the adapters of the DPO step
LAYERS = 2  # of the tiny model
PROMPT_KEEP, ANSWER_KEEP = (6, 8, 3, 5), 6  # rows cut short to keep the forward passes small
REFERENCE_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")
BASE_NOISE = 0.02  # the model handed to add_lora_adapters in the base-weights case: not the checkpoint's weights
BASE_TENSORS = ("model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                "model.layers.1.mlp.down_proj.weight", "model.layers.1.mlp.up_proj.weight",
                "model.layers.0.input_layernorm.weight", "model.norm.weight")
STEP_BETA = 0.5


# ================================================================ references

def isolated_pad_collate_fn(batch, pad_token_id):
    """Stand-in for the student's pad_collate_fn: prompts padded on the left, answers on the right."""
    rows = [{key: [int(v) for v in torch.as_tensor(example[key]).tolist()] for key in ID_KEYS} for example in batch]
    return {key: torch.tensor(value) for key, value in ref.collated(rows, pad_token_id).items()}


ISOLATE = {"pad_collate_fn": isolated_pad_collate_fn, "DEVICE": "cpu", "AMP_DTYPE": torch.float32}


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
    with torch.no_grad():
        for row in rows:
            prompt = row["prompt_input_ids"]
            keep = None if max_seq_len is None else max(0, max_seq_len - len(prompt))
            for key in ("chosen", "rejected"):
                answer = row[f"{key}_input_ids"][:keep]
                out[f"ref_{key}_logps"].append(ref.answer_log_prob(model, prompt, answer))
    return out


def base_logps(ctx, count: int = 4, max_seq_len: int | None = None) -> dict[str, list[float]]:
    """The pretrained model's log-probs of `short_rows(ctx, count)`, once per context."""
    return ctx.cached(("lora-base-logps", count, max_seq_len),
                      lambda: expected_logps(ctx.model(), short_rows(ctx, count), max_seq_len))


def base_weights(ctx) -> dict[str, torch.Tensor]:
    return ctx.cached("lora-base-weights", lambda: {k: v.detach().clone() for k, v in ctx.model().state_dict().items()})


def answer_logps_float64(model, rows) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable log-probs [n] of the chosen and of the rejected answers, one unpadded pass each."""
    logps = {"chosen": [], "rejected": []}
    for row in rows:
        for key in logps:
            ids = torch.tensor([row["prompt_input_ids"] + row[f"{key}_input_ids"]])
            log_probs = F.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
            start = len(row["prompt_input_ids"])
            targets = ids[0, start:]
            logps[key].append(log_probs[start - 1: -1].gather(-1, targets.unsqueeze(-1)).sum())
    return torch.stack(logps["chosen"]), torch.stack(logps["rejected"])


def is_adapter(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


def layer_path(name: str) -> str:
    """`layers.0.self_attn.q_proj` from the name of one of its adapter tensors, whatever the wrapping prefix."""
    path = name.split(".lora_")[0]
    return path[path.index("layers."):] if "layers." in path else path


def adapter_label(name: str) -> str:
    """`layers.0.self_attn.q_proj.lora_A` from the name of that tensor, whatever its prefix and adapter name
    (`base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight` in a PeftModel)."""
    return f"{layer_path(name)}.lora_{name.split('.lora_')[1][0]}"


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


def adapter_scaling(model: RemoteModel) -> float:
    """The factor of B A in the student's adapted layers, from the adapter config the model carries (alpha / r,
    or alpha / sqrt(r) with rsLoRA); the reference setup's when the model carries none."""
    configs = list((model.peft_config or {}).values())
    config = configs[0] if configs and isinstance(configs[0], Mapping) else {}
    r, alpha = config.get("r", RANK), config.get("lora_alpha", ALPHA)
    try:
        r, alpha = float(r), float(alpha)
    except (TypeError, ValueError):
        r, alpha = float(RANK), float(ALPHA)
    return alpha / (math.sqrt(r) if config.get("use_rslora") else r)


def reference_dpo_step(ctx, case, adapters: dict[str, torch.Tensor], scaling: float, rows, reference, beta: float):
    """The DPO loss of `rows` and its gradients on the adapter matrices, for the pretrained model with the
    adapters `adapters` (label -> matrix) added to its layers as `scaling * B A x`, in float64."""
    model = ctx.model().double()
    leaves, hooks = {}, []
    for path in sorted({label.rsplit(".lora_", 1)[0] for label in adapters}):
        if f"{path}.lora_A" not in adapters or f"{path}.lora_B" not in adapters:
            raise CheckFailure(case, f"one lora_A and one lora_B on {path}", f"{sorted(adapters)}")
        try:
            module = model.get_submodule(f"model.{path}")
        except AttributeError:
            raise CheckFailure(case, "adapters on the layers of the model", f"an adapter on {path}") from None
        a, b = (adapters[f"{path}.lora_{k}"].double().clone().requires_grad_(True) for k in "AB")
        leaves[f"{path}.lora_A"], leaves[f"{path}.lora_B"] = a, b
        hooks.append(module.register_forward_hook(
            lambda _module, inputs, output, a=a, b=b: output + scaling * (inputs[0] @ a.T) @ b.T))
    try:
        chosen, rejected = answer_logps_float64(model, rows)
    finally:
        for hook in hooks:
            hook.remove()
    reference = {key: torch.tensor(value, dtype=torch.float64) for key, value in reference.items()}
    margins = beta * ((chosen - reference["ref_chosen_logps"]) - (rejected - reference["ref_rejected_logps"]))
    loss = F.softplus(-margins).mean()
    loss.backward()
    return float(loss.detach()), {label: leaf.grad.float() for label, leaf in leaves.items()}


# ================================================================ the student's model, seen from the judge

@dataclass
class Adapted:
    """What add_lora_adapters returned, kept on the other side (`ref`), and its description (`model`)."""

    ref: Ref
    model: RemoteModel

    @property
    def adapters(self) -> dict[str, torch.Tensor]:
        return {name: tensor for name, tensor in self.model.state.items() if is_adapter(name)}

    def module_of(self, path: str) -> str | None:
        """The name, in the student's model, of the adapted layer `layers.N.block.name`."""
        return next((name.split(".lora_")[0] for name in self.adapters if layer_path(name) == path), None)


def adapted_by_student(ns, ctx, case, targets=TARGETS, rank=RANK, alpha=ALPHA, base=None) -> Adapted:
    """The student's add_lora_adapters on a fresh, trainable tiny model (or `base`), put in eval mode (peft
    creates its dropout modules in training mode); the model must carry adapters."""
    base = base if base is not None else ns.new(ctx.model_spec(requires_grad=True))
    reply = student(ns, "add_lora_adapters").reply((base,), {"r": rank, "alpha": alpha,
                                                             "target_modules": list(targets)}, keep=True)
    model = call_student("add_lora_adapters", "describing the model that `add_lora_adapters` returned",
                         ns.export, reply.ref)
    if not isinstance(model, RemoteModel):
        raise CheckFailure(case, "a model (the PeftModel returned by get_peft_model)",
                           getattr(model, "type_name", type(model).__name__), "return get_peft_model(model, config)")
    adapted = Adapted(reply.ref, model)
    if not adapted.adapters:
        raise CheckFailure(case, f"adapter weights (lora_A, lora_B) on {list(targets)}", "no adapter parameter",
                           "build a LoraConfig and apply it with get_peft_model")
    call_student("add_lora_adapters", "calling .eval() on the model of `add_lora_adapters`", ns.method, reply.ref,
                 "eval")
    return adapted


def move_adapters(ns, adapted: Adapted, seed: int = 3, scale: float = 0.5) -> dict[str, torch.Tensor]:
    """Load seeded random B matrices into the student's model, as if the adapters had trained; returns every
    adapter matrix by label (`layers.0.self_attn.q_proj.lora_A`) as the model now has it."""
    generator = torch.Generator().manual_seed(salted(seed))
    moved = {}
    for name, tensor in sorted(adapted.adapters.items()):
        if ".lora_B." in name:
            moved[name] = scale * torch.randn(tensor.shape, generator=generator)
    call_student("add_lora_adapters", "loading adapter weights into the model with load_state_dict", ns.method,
                 adapted.ref, "load_state_dict", (moved,), {"strict": False})
    return {adapter_label(name): moved.get(name, tensor) for name, tensor in adapted.adapters.items()}


def remote_logits(ns, case, adapted: Adapted, ids: torch.Tensor) -> torch.Tensor:
    """The logits of the student's model on `ids`, computed where the model lives."""
    # return_dict=False: a tuple (logits, ...); a ModelOutput is a dataclass, whose tensors its description leaves out
    out = call_student("add_lora_adapters", "running the model of `add_lora_adapters`", ns.method, adapted.ref,
                       "__call__", (), {"input_ids": ids, "use_cache": False, "return_dict": False}).value
    logits = None
    if isinstance(out, (tuple, list)) and out:
        logits = out[0]
    elif isinstance(out, Mapping):
        logits = out.get("logits")
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape[:2]) != tuple(ids.shape):
        raise CheckFailure(case, "a causal LM whose forward pass returns logits", shorten(repr(out), 120))
    return logits.detach().double()


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


def reference_columns_by_student(ns, ctx, case, adapted: Adapted, rows, max_seq_len=None) -> dict[str, list[float]]:
    from datasets import Dataset

    function = student(ns, "lora_reference_logps", ISOLATE)
    out = function(adapted.ref, Dataset.from_list(rows), ctx.tokenizer, 2, max_seq_len)
    columns = getattr(out, "column_names", None)
    if columns is None or any(key not in columns for key in REFERENCE_COLUMNS):
        raise CheckFailure(case, "the dataset with the columns ref_chosen_logps and ref_rejected_logps",
                           f"{getattr(out, 'type_name', type(out).__name__)} with columns {columns}",
                           "return what precompute_reference_logps returns")
    if len(out) != len(rows):
        raise CheckFailure(case, f"a dataset of {len(rows)} rows", f"{len(out)} rows")
    try:
        return {key: [float(row[key]) for row in out.rows] for key in REFERENCE_COLUMNS}
    except (TypeError, ValueError, KeyError):
        raise CheckFailure(case, "one number per row in ref_chosen_logps and ref_rejected_logps",
                           shorten(repr(out.rows[:2]), 160)) from None


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
    adapted = adapted_by_student(ns, ctx, case)
    expected = sorted(f"layers.{i}.{block}.{name}" for i in range(LAYERS)
                      for block, name in (("self_attn", "q_proj"), ("mlp", "down_proj")))
    seen = sorted({layer_path(name) for name in adapted.adapters})
    if seen != expected:
        raise CheckFailure(case, f"adapters on {expected}", f"adapters on {seen}",
                           "pass target_modules on to LoraConfig (without it peft picks its own default layers)")
    weights = base_weights(ctx)
    for name, tensor in adapted.adapters.items():
        out_features, in_features = weights[f"model.{layer_path(name)}.weight"].shape
        shape = (RANK, in_features) if ".lora_A." in name else (out_features, RANK)
        if tuple(tensor.shape) != shape:
            raise CheckFailure(case, f"{name.split('.lora_')[1].split('.')[0]} of shape {shape} (r = {RANK})",
                               f"shape {tuple(tensor.shape)}", "the rank is LoraConfig's r; alpha is lora_alpha")


@lora_check.case("add_lora_adapters: only the adapters are trainable, every pretrained weight is frozen", weight=2)
def _(ns, ctx):
    case = "only the adapters train"
    model = adapted_by_student(ns, ctx, case).model
    trainable = set(model.trainable)
    base = [name for name in model.trainable if not is_adapter(name)]
    frozen_adapters = [name for name in model.parameters if is_adapter(name) and name not in trainable]
    if base or frozen_adapters:
        seen = (f"{len(base)} trainable pretrained tensors (e.g. {base[0]})" if base
                else f"frozen adapter tensors (e.g. {frozen_adapters[0]})")
        raise CheckFailure(case, "requires_grad=True on the lora_A / lora_B tensors only", seen,
                           "get_peft_model freezes the pretrained weights; do not switch them (or a copy of a "
                           "layer, modules_to_save) back on")


@lora_check.case("add_lora_adapters: the pretrained weights are those of the model it is given, unchanged", weight=1)
def _(ns, ctx):
    from autograder.grading.exercise.resources import model_from_spec

    case = "pretrained weights unchanged"
    spec = ctx.model_spec(requires_grad=True, noise=BASE_NOISE, seed=salted(17))
    expected = ctx.cached(("lora-noisy-base", spec["seed"]), lambda: {
        name: tensor.detach().clone() for name, tensor in model_from_spec(spec).state_dict().items()
        if name in BASE_TENSORS})
    state = adapted_by_student(ns, ctx, case, base=ns.new(spec)).model.state
    by_name = {name.replace(".base_layer.", "."): tensor for name, tensor in state.items() if not is_adapter(name)}
    for name in BASE_TENSORS:
        found = [key for key in by_name if key == name or key.endswith("." + name)]
        if not found:
            raise CheckFailure(case, f"the pretrained weight {name} in the adapted model", "no such weight",
                               "wrap the model you are given: get_peft_model(model, config)")
        seen = by_name[found[0]]
        if tuple(seen.shape) != tuple(expected[name].shape) or not torch.equal(seen.float(), expected[name]):
            difference = (f"shape {tuple(seen.shape)}" if tuple(seen.shape) != tuple(expected[name].shape) else
                          f"values that differ by up to {float((seen.float() - expected[name]).abs().max()):.3g}")
            raise CheckFailure(case, f"{name} exactly as in the model passed to add_lora_adapters", difference,
                               "add the adapters to the model you are given and leave its weights alone: do not "
                               "load the checkpoint again, merge into it, or initialise the adapters from its "
                               "weights (PiSSA, OLoRA... rewrite the base weights)")


@lora_check.case("add_lora_adapters: the layer computes W x + (alpha / r) B A x, with B starting at zero", weight=2)
def _(ns, ctx):
    case = "W x + (alpha / r) B A x"
    weight = base_weights(ctx)["model.layers.0.self_attn.q_proj.weight"].double()
    adapted = adapted_by_student(ns, ctx, case)
    started = [name for name, tensor in adapted.adapters.items() if ".lora_B." in name and bool(tensor.abs().sum() > 0)]
    if started:
        raise CheckFailure(case, "every lora_B at zero before training", f"a non-zero {started[0]}",
                           "keep peft's default initialisation (init_lora_weights=True): B starts at zero, so "
                           "training starts from the base model")
    module = adapted.module_of("layers.0.self_attn.q_proj")
    labels = {adapter_label(name) for name in adapted.adapters}
    if module is None or not {"layers.0.self_attn.q_proj.lora_A", "layers.0.self_attn.q_proj.lora_B"} <= labels:
        raise CheckFailure(case, "one lora_A and one lora_B on layers.0.self_attn.q_proj", f"{sorted(labels)}")
    layer = call_student("add_lora_adapters", f"reading the layer {module}", ns.method, adapted.ref, "get_submodule",
                         (module,), keep=True).ref
    x = torch.randn(3, weight.shape[1], generator=torch.Generator().manual_seed(salted(5)))

    def output():
        value = call_student("add_lora_adapters", f"running the layer {module}", ns.method, layer, "__call__",
                             (x,)).value
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != (3, weight.shape[0]):
            raise CheckFailure(case, f"the layer's output of shape (3, {weight.shape[0]})", shorten(repr(value), 80))
        return value.double()

    start = output()
    if not torch.allclose(start, x.double() @ weight.T, atol=1e-5):
        raise CheckFailure(case, "the pretrained output W x before training (B = 0)",
                           f"a difference of {float((start - x.double() @ weight.T).abs().max()):.3g}",
                           "keep peft's initialisation: B starts at zero, so training starts from the base model")
    adapters = move_adapters(ns, adapted)
    a, b = (adapters[f"layers.0.self_attn.q_proj.lora_{k}"].double() for k in "AB")
    seen = output()
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
    adapted = adapted_by_student(ns, ctx, case)
    move_adapters(ns, adapted)
    call_student("add_lora_adapters", "calling .train() on the model", ns.method, adapted.ref, "train")
    ids = torch.tensor([short_rows(ctx, 1)[0]["prompt_input_ids"]])
    first, second = (remote_logits(ns, case, adapted, ids) for _ in range(2))
    if not torch.equal(first, second):
        raise CheckFailure(case, "the same logits from two forward passes in training mode",
                           f"logits that differ by up to {float((first - second).abs().max()):.3g}",
                           "set lora_dropout=0.0: DPO compares log-probs, and dropout makes them noisy")


def plain_counts(ctx) -> dict[str, tuple[int, int]]:
    def compute():
        model = ctx.model(requires_grad=True)
        counts = {"all": (unique_count(model, True), unique_count(model, False))}
        model.get_input_embeddings().requires_grad_(False)  # the tied output layer freezes with it
        counts["frozen embeddings"] = (unique_count(model, True), unique_count(model, False))
        return counts
    return ctx.cached("lora-plain-counts", compute)


@lora_check.case("count_parameters: a plain model, tied embeddings counted once", weight=1)
def _(ns, ctx):
    case = "plain model"
    expected = plain_counts(ctx)
    model = ns.new(ctx.model_spec(requires_grad=True))
    seen = counts_by_student(ns, case, model)
    if seen != expected["all"]:
        raise CheckFailure(case, f"(trainable, total) = {expected['all']}", f"{seen}",
                           "the tiny model ties its output layer to its input embeddings: count each tensor once "
                           "(model.parameters() does, model.state_dict() does not)")
    embeddings = ns.method(model, "get_input_embeddings", keep=True).ref
    ns.method(embeddings, "requires_grad_", (False,))
    seen = counts_by_student(ns, case, model)
    if seen != expected["frozen embeddings"]:
        raise CheckFailure(case, f"(trainable, total) = {expected['frozen embeddings']} with the embeddings frozen",
                           f"{seen}", "count as trainable only the tensors with requires_grad=True")


@lora_check.case("count_parameters: a LoRA model", weight=1)
def _(ns, ctx):
    from autograder.grading.exercise.resources import model_from_spec

    case = "LoRA model"
    spec = ctx.model_spec(requires_grad=True, lora={"r": RANK, "alpha": ALPHA, "targets": list(TARGETS)})

    def compute():
        model = model_from_spec(spec)
        adapters = sum(p.numel() for name, p in model.named_parameters() if is_adapter(name))
        return adapters, unique_count(model, False)

    expected = ctx.cached("lora-model-counts", compute)
    seen = counts_by_student(ns, case, ns.new(spec))
    if seen != expected:
        raise CheckFailure(case, f"(trainable, total) = {expected}: the adapters, and every value once", f"{seen}",
                           "trainable = the values with requires_grad=True; total = all of them, shared ones once")


@lora_check.case("lora_reference_logps: the base model's log-probs after the adapters have moved", weight=3)
def _(ns, ctx):
    case = "reference = base model"
    rows = short_rows(ctx)
    expected = base_logps(ctx)
    adapted = adapted_by_student(ns, ctx, case)
    move_adapters(ns, adapted)
    ids = torch.tensor([rows[0]["prompt_input_ids"] + rows[0]["chosen_input_ids"]])
    with torch.no_grad():
        plain = ctx.cached("lora-base-logits-row0", lambda: ctx.model()(input_ids=ids).logits.double())
    if float((remote_logits(ns, case, adapted, ids) - plain).abs().max()) < 1e-3:
        raise CheckFailure(case, "moved adapters that change the model", "the same logits as the base model",
                           "add_lora_adapters must return the model that carries the adapters")
    seen = reference_columns_by_student(ns, ctx, case, adapted, rows)
    expect_columns(case, expected, seen,
                   "compute them inside `with model.disable_adapter():` so that the adapters do not count (the "
                   "model itself, not model.get_base_model(), whose layers still carry the adapters)")


@lora_check.case("lora_reference_logps passes max_seq_len on", weight=1)
def _(ns, ctx):
    case = "max_seq_len"
    rows = short_rows(ctx)
    max_seq_len = max(len(row["prompt_input_ids"]) for row in rows) + 3
    expected = base_logps(ctx, 4, max_seq_len)
    adapted = adapted_by_student(ns, ctx, case)
    move_adapters(ns, adapted)
    seen = reference_columns_by_student(ns, ctx, case, adapted, rows, max_seq_len)
    expect_columns(case, expected, seen,
                   f"with max_seq_len={max_seq_len} each answer keeps max_seq_len - (its prompt's length) tokens: "
                   "pass batch_size and max_seq_len on to precompute_reference_logps")


@lora_check.case("lora_reference_logps switches the adapters back on", weight=1)
def _(ns, ctx):
    case = "adapters on again"
    rows = short_rows(ctx, 2)
    adapted = adapted_by_student(ns, ctx, case)
    move_adapters(ns, adapted)
    ids = torch.tensor([rows[1]["prompt_input_ids"] + rows[1]["rejected_input_ids"]])
    before = remote_logits(ns, case, adapted, ids)
    reference_columns_by_student(ns, ctx, case, adapted, rows)
    after = remote_logits(ns, case, adapted, ids)
    if not torch.allclose(before, after, atol=1e-5):
        raise CheckFailure(case, "the same logits from the adapted model before and after lora_reference_logps",
                           f"logits that differ by up to {float((before - after).abs().max()):.3g}",
                           "after the call the model must compute with its adapters again: use the context manager "
                           "`with model.disable_adapter():`, which switches them back on, or enable them again "
                           "yourself; do not remove them (unload, merge_and_unload)")


@lora_check.case("a DPO step after lora_reference_logps: the reference gradients on the adapters, none elsewhere",
                 weight=2)
def _(ns, ctx):
    case = "DPO step"
    rows = short_rows(ctx, 2)
    adapted = adapted_by_student(ns, ctx, case, targets=STEP_TARGETS)
    adapters = move_adapters(ns, adapted, seed=4, scale=0.3)
    columns = reference_columns_by_student(ns, ctx, case, adapted, rows)
    batch = {key: torch.tensor(value) for key, value in ref.collated(rows, ctx.pad_id).items()}
    batch.update({key: torch.tensor(columns[key], dtype=torch.float32) for key in REFERENCE_COLUMNS})
    target = f"ref:{adapted.ref.handle}"
    # the notebook's provided training step, with the DPO loss of the checks
    out, grads = student(ns, "fast_dpo_batch_loss").with_grads((adapted.ref, batch, STEP_BETA, None),
                                                               {"loss_fn": ref.isolated_dpo_loss},
                                                               backward=(0,), grads=(target,))
    loss = scalar(triple(out, case, "fast_dpo_batch_loss")[0], case, "the DPO loss")
    expected_loss, expected_grads = reference_dpo_step(ctx, case, adapters, adapter_scaling(adapted.model), rows,
                                                       base_logps(ctx, 2), STEP_BETA)
    if not close(loss, expected_loss, 1e-4, 1e-3):
        raise CheckFailure(case, f"the DPO loss {expected_loss:.5f} of the adapted model against the pretrained "
                                 "model's log-probs", f"{loss:.5f}",
                           "lora_reference_logps must give the log-probs of the model with its adapters OFF, and "
                           "leave them ON for training; the policy's log-probs then use the adapters")
    seen = grads.get(target) if isinstance(grads, dict) else None
    if not isinstance(seen, dict):
        raise CheckFailure(case, "gradients on the adapters from the DPO loss", "back-propagating from the loss failed",
                           "the adapters must be on and trainable again when lora_reference_logps returns: "
                           "`with model.disable_adapter():` does that")
    mapped = {adapter_label(name) if is_adapter(name) else name: grad for name, grad in seen.items()}
    expected = {**expected_grads, **{name: None for name in mapped if name not in expected_grads}}
    expect_model_gradients(case, "the adapted model", mapped, expected,
                           "only the adapters may train (every pretrained weight frozen, no copy of a layer "
                           "trained), and the adapters must compute (alpha / r) B A x on the layers they adapt")


CHECKS = [lora_check]
