"""Inputs the judge hands to student functions, built the same way on both sides of the sandbox.

A *spec* is a small JSON description of an input that is too large or too alive to send as data: a tokenizer
variant, a model from a checkpoint folder (optionally with seeded noise on its weights), a dataset of rows,
a PPO configuration (or the PPOConfig class student code builds one with while graded).
The judge builds its own copy from the spec to compute the expected values; the sandboxed exercise builds the
copy that the student's code receives. Both call the functions below, so both copies are equal.
"""
import copy
from pathlib import Path

CHAT_SAFE_CANDIDATES = ("<|endoftext|>",)
ADDED_PAD = "[PAD]"  # a token the tokenizer does not have: models must grow an embedding row for it

_BASE_TOKENIZERS: dict = {}
_BASE_MODELS: dict = {}
_PPO_CONFIG_CLASS: list = []


def base_tokenizer(path: str):
    """The tokenizer of the folder `path`, loaded once per process (pad token = end-of-turn token)."""
    if path not in _BASE_TOKENIZERS:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        _BASE_TOKENIZERS[path] = tokenizer
    return _BASE_TOKENIZERS[path]


def chat_safe_pad(tokenizer) -> str:
    """A pad token that never occurs in rendered chat text: the unknown token of SmolLM (`<|endoftext|>`)."""
    messages = [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello 👋"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    used = set(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    for candidate in (tokenizer.unk_token, *CHAT_SAFE_CANDIDATES):
        if candidate and tokenizer.convert_tokens_to_ids(candidate) not in used:
            return candidate
    raise RuntimeError("the grading tokenizer has no chat-safe pad token")


_LENT_TOKENIZERS: dict = {}


def tokenizer_state(tokenizer) -> tuple:
    """What student code could change on a tokenizer it was handed (compared after each use)."""
    return (tokenizer.padding_side, tokenizer.truncation_side, tokenizer.pad_token, tokenizer.eos_token,
            len(tokenizer), tokenizer.model_max_length, tokenizer.chat_template,
            repr(sorted(tokenizer.special_tokens_map.items())))


def lent_tokenizer(spec: dict):
    """The tokenizer of `spec`, reused across calls (a deep copy costs about half a second) unless the last
    user changed it, in which case a fresh copy is made."""
    key = repr(sorted(spec.items()))
    cached = _LENT_TOKENIZERS.get(key)
    if cached is not None and tokenizer_state(cached[0]) == cached[1]:
        return cached[0]
    tokenizer = tokenizer_from_spec(spec)
    _LENT_TOKENIZERS[key] = (tokenizer, tokenizer_state(tokenizer))
    return tokenizer


def tokenizer_from_spec(spec: dict):
    """A private tokenizer. `pad`: None (as loaded), "eos", "safe" (chat-safe) or "added" (a new [PAD] token)."""
    tokenizer = copy.deepcopy(base_tokenizer(str(spec["path"])))
    pad = spec.get("pad")
    if pad == "eos":
        tokenizer.pad_token = tokenizer.eos_token
    elif pad == "safe":
        tokenizer.pad_token = chat_safe_pad(tokenizer)
    elif pad == "added":
        tokenizer.add_special_tokens({"pad_token": ADDED_PAD})
    elif pad is not None:
        raise ValueError(f"unknown pad {pad!r}")
    if spec.get("side"):
        tokenizer.padding_side = spec["side"]
    return tokenizer


def _base_model(path: str, auto: str):
    key = (path, auto)
    if key not in _BASE_MODELS:
        import torch
        import transformers

        loader = getattr(transformers, auto)
        model = loader.from_pretrained(path, dtype=torch.float32, **({"num_labels": 1} if "Sequence" in auto else {}))
        model.eval().requires_grad_(False)
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        _BASE_MODELS[key] = model
    return _BASE_MODELS[key]


def known_weights(path: str) -> dict:
    """The weights of the causal LM in the folder `path`, loaded once per process. The judge and the sandbox
    both hold them, so a model's weight equal to one of them travels as its name only (see `describe_model`)."""
    return _base_model(path, "AutoModelForCausalLM").state_dict()


def known_name(name: str) -> str:
    """The name a weight has in the plain model: a PeftModel's `base_model.model.` prefix and the `base_layer.`
    of a layer with adapters removed."""
    return name.removeprefix("base_model.model.").replace(".base_layer.", ".")


MODEL_CLASSES = ("AutoModelForCausalLM", "AutoModelForSequenceClassification")


def preload(path: str, tokenizers: list[dict]) -> None:
    """Load the tokenizer and both model classes of the folder `path`, which the specs of the checks copy, and
    make the copies of the `tokenizers` (specs) that `lent_tokenizer` lends (about 0.3 s each)."""
    base_tokenizer(path)
    for auto in MODEL_CLASSES:
        _base_model(path, auto)
    for spec in tokenizers:
        lent_tokenizer(dict(spec))


def model_from_spec(spec: dict):
    """A fresh float32 model in eval mode (dropout off) from `spec`:

    path, auto (one of MODEL_CLASSES), noise and seed (seeded Gaussian noise added to every weight),
    head_seed (a classifier's score head re-drawn from this seed), pad_token_id (written into the config),
    requires_grad, lora (peft LoRA adapters on top, see `lora_adapted`).
    """
    import torch

    auto = spec.get("auto", "AutoModelForCausalLM")
    if auto not in MODEL_CLASSES:
        raise ValueError(f"unknown model class {auto!r}")
    model = copy.deepcopy(_base_model(str(spec["path"]), auto))
    with torch.no_grad():
        if spec.get("head_seed") is not None:
            generator = torch.Generator().manual_seed(int(spec["head_seed"]))
            model.score.weight.copy_(0.5 * torch.randn(model.score.weight.shape, generator=generator))
        if spec.get("noise"):
            generator = torch.Generator().manual_seed(int(spec.get("seed", 0)))
            for parameter in model.parameters():
                parameter.add_(float(spec["noise"]) * torch.randn(parameter.shape, generator=generator))
    if spec.get("pad_token_id") is not None:
        model.config.pad_token_id = int(spec["pad_token_id"])
    model.requires_grad_(bool(spec.get("requires_grad", False)))
    if spec.get("lora"):
        model = lora_adapted(model, spec["lora"])
    return model


def lora_adapted(model, lora: dict):
    """`model` wrapped in peft LoRA adapters, in eval mode: `lora` gives r, alpha and targets (module names).

    As a LoRA answer builds it (task_type CAUSAL_LM, no dropout): the pretrained weights frozen, B at zero.
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(task_type="CAUSAL_LM", r=int(lora["r"]), lora_alpha=float(lora["alpha"]),
                        target_modules=[str(t) for t in lora["targets"]], lora_dropout=0.0)
    return get_peft_model(model, config).eval()


def dataset_from_rows(rows: list):
    from datasets import Dataset

    return Dataset.from_list(list(rows))


def ppo_config_class():
    """TRL's PPOConfig, changed so that bf16=True on a machine without a bfloat16 GPU sets use_cpu instead of raising.

    It lets the checks judge a configuration's GPU branch (DEVICE='cuda', AMP_DTYPE=bfloat16) on a CPU: the fields
    are the ones the student's code chose. The class is changed in place, in the process that runs student code, so
    that it gets the same behaviour however it reaches the class: the notebook's name, an alias, or an import inside
    the function. Where the real class would not raise, nothing changes.
    """
    from transformers.utils import is_torch_bf16_gpu_available
    from trl.experimental.ppo import PPOConfig

    if not _PPO_CONFIG_CLASS:
        trl_post_init = PPOConfig.__post_init__

        def __post_init__(self):
            wants_bf16 = not self.fp16 if self.bf16 is None else bool(self.bf16)
            if (wants_bf16 or self.bf16_full_eval) and not is_torch_bf16_gpu_available():
                self.use_cpu = True
            trl_post_init(self)

        PPOConfig.__post_init__ = __post_init__
        _PPO_CONFIG_CLASS.append(PPOConfig)
    return _PPO_CONFIG_CLASS[0]


def ppo_config(fields: dict):
    """TRL's PPOConfig with these fields (a configuration the judge chose)."""
    from trl.experimental.ppo import PPOConfig

    return PPOConfig(**dict(fields))


def build(spec: dict):
    """The object a spec describes (tokenizer, model, dataset, path, PPO configuration or its class)."""
    kind = spec.get("kind")
    if kind == "tokenizer":
        return lent_tokenizer(spec)
    if kind == "model":
        return model_from_spec(spec)
    if kind == "dataset":
        return dataset_from_rows(spec["rows"])
    if kind == "path":
        return Path(spec["path"])
    if kind == "ppo_config":
        return ppo_config(spec["fields"])
    if kind == "ppo_config_class":
        return ppo_config_class()
    raise ValueError(f"unknown spec kind {kind!r}")
