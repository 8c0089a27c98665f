"""Hidden checks of Part 2, PPO with TRL: `test_ppo` (`tokenize_prompt`, `load_ppo_models`, `make_ppo_config`,
`build_ppo_trainer`).

Student code runs on the other side of the runner (`autograder.grading.remote`); what comes back is data
(models as `RemoteModel`, configurations as their fields, kept objects as handles). The tokenizers and model
folders handed to student code come from `autograder.checks.models`. Functions graded by another test cell
and the device constants are replaced while a function is graded, so one bug costs points in one place.

The check builds the four models, the configuration, the tokenizer and the datasets on the other side, lets
the student's `build_ppo_trainer` wire them, trains that trainer there for one update (about two seconds) and
compares the trained policy and value model with a judge-side TRL run on the same inputs and seed: TRL's PPO
is deterministic on the CPU.
"""
import shutil
import tempfile
import types
import uuid
from collections.abc import Mapping
from pathlib import Path

import torch

from autograder.checks import reference as ref
from autograder.checks.compare import close
from autograder.checks.framework import (Check, CheckFailure, StudentError, call_student, shared_answer, shorten,
                                         student)
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
    pad_ids,
    reward_spec,
    source_weights,
    tokenizer_spec,
    weight_report,
)
from autograder.checks.reference import EXAMPLES, generation_prompt_ids
from autograder.grading.exercise import resources
from autograder.grading.remote import Ref, RemoteConfig, RemoteModel, tag






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
    policy_id = str(policy_id or ctx.model_dir)
    out = shared_answer(ns, ("load_ppo_models", pad, policy_id), lambda: student(ns, "load_ppo_models", CPU)(
        policy_id, checkpoints(ctx)["reward"], make_tokenizer(ctx, pad, "left")))
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
# PPOConfig as student code gets it while graded (under any name): TRL's, except that bf16=True on a machine without a bfloat16 GPU
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


def same_number(seen, expected) -> bool:
    """Whether a config field holds the constant's value: the same number, or None for None (no EOS penalty)."""
    if expected is None:
        return seen is None
    return (isinstance(seen, (int, float)) and not isinstance(seen, bool)
            and close(float(seen), float(expected), 0, 1e-9))


def expect_ppo_fields(case, config, constants: dict, hint: str):
    seen = {}
    for constant, field in PPO_FIELDS.items():
        if constant == "PPO_BATCH_SIZE":
            sizes = (config.get("per_device_train_batch_size"), config.get("gradient_accumulation_steps"))
            seen[constant] = sizes[0] * sizes[1] if all(isinstance(s, int) for s in sizes) else sizes
        else:
            seen[constant] = config.get(field)
    wrong = [c for c, value in seen.items() if not same_number(value, constants[c])]
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
        both_float32 = value.dtype == want.dtype == torch.float32  # then float32 differences are exact enough
        difference = ((value - want) if both_float32 else (value.double() - want.double())).abs()
        count = int((difference > UPDATE_TOLERANCE).sum())
        if count and example is None:
            example = f"{name}: largest difference {float(difference.max()):.3g}"
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


CHECKS = [ppo_check]
