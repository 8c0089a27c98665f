"""`python -m autograder review <user>/llm-course-hw2`: review a student's three checkpoints in one command.

    python -m autograder review <user>/llm-course-hw2 [--dpo ID_OR_DIR] [--ppo ID_OR_DIR]
        [--reward-model ID_OR_DIR] [--base ID_OR_DIR] [--dataset ID_OR_DIR] [--pairs N] [--prompts N]
        [--max-new-tokens N] [--expect trained|smoke] [--out DIR]

The target is the prefix of the student's Hub repositories (`<prefix>-dpo`, `<prefix>-ppo`,
`<prefix>-reward-model`) or a local folder holding `dpo/`, `ppo/` and `reward-model/` (the notebook's
`HW2_OUTPUT_DIR`); `--dpo`, `--ppo` and `--reward-model` name one checkpoint explicitly. Every checkpoint is
loaded with the ordinary `from_pretrained`, whether it is a Hub id or a local folder, and compared with the
base model (`--base`, default `$HW2_MODEL_ID` or SmolLM-135M-Instruct) on a fixed set of prompts and on
held-out preference pairs (`--dataset`, default `$HW2_DATASET_ID` or the course dataset: its `test` split,
else the notebook's seeded cut of `train`).

Per checkpoint the report has one pass/warn/fail line per check: it loads, has the expected architecture and
a tokenizer with a chat template, differs from the base weights; greedy answers next to the base model's and
their style (emoji rate, "as an AI" rate, length); for DPO the implicit-reward accuracy and margin and the
KL drift from the base; for the reward model its pairwise accuracy and whether its score depends on the
answer; for PPO the reward model's score of its answers against the base model's; and the model card (the
bonus task). A checkpoint that cannot be loaded gets one line saying why; the others are still reviewed.

The Markdown report goes to stdout and, with `--out DIR`, to `DIR/review.md` with `DIR/review.json`. The
exit code is 0 whenever the review ran (failed checks included) and 2 on usage errors.

`--expect smoke` is for fast-dev-run checkpoints (a couple of steps on the tiny model): the quality checks
then ask only for the right direction (better than chance, the pipeline works), not for a trained model.
"""
import argparse
import contextlib
import json
import math
import os
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from autograder.checks.reference import format_example, isolated_get_log_prob, isolated_sequence_logits
from autograder.fixtures.synthetic import has_emoji

if TYPE_CHECKING:  # torch and transformers are imported when a review runs, not when the CLI starts
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_MODEL_ID = "HuggingFaceTB/SmolLM-135M-Instruct"
DEFAULT_DATASET_ID = "HumanLLMs/Human-Like-DPO-Dataset"
KINDS = ("dpo", "ppo", "reward-model")
TITLES = {"dpo": "DPO", "ppo": "PPO", "reward-model": "Reward model"}
EXPECTATIONS = ("trained", "smoke")
PASS, WARN, FAIL = "pass", "warn", "fail"
ICONS = {PASS: "✅", WARN: "⚠️", FAIL: "❌"}

# The prompts every policy answers next to the base model; casual questions like those of the dataset.
REVIEW_PROMPTS = (
    "What's your morning routine like?",
    "Do you have a favourite movie?",
    "How do you feel about rainy days?",
    "What's the best way to spend a lazy Sunday?",
    "Are you more of a cat person or a dog person?",
    "Can you recommend a good book for the summer?",
    "What did you have for breakfast today?",
    "What's your favourite season and why?",
)
HELD_OUT_SIZE, SPLIT_SEED = 200, 42  # the notebook's held-out cut of a dataset without a test split
PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected")
MAX_HELD_OUT_PROMPTS = 16  # held-out prompts the policies also answer (for the KL drift and the PPO reward)
MAX_PROMPT_TOKENS, MAX_ANSWER_TOKENS, MAX_CONVERSATION_TOKENS = 256, 256, 1024
DEFAULT_BETA = 0.1
# Load errors that mean the source itself is unavailable (see explain_load_error).
SOURCE_PROBLEMS = ("no such folder", "repository not found", "gated repository", "revision not found",
                   "cannot be reached")
GENERATION_BATCH, SCORING_BATCH = 8, 4
AS_AN_AI = re.compile(
    r"\bas an (?:ai|artificial intelligence)\b|\bI(?:'m| am) (?:an? )?(?:ai|artificial intelligence)\b"
    r"|\blanguage model\b", re.IGNORECASE,
)

# Held-out accuracy thresholds of trained models: (pass at or above, warn at or above; below, it fails). With
# --expect smoke an accuracy above chance or a positive mean margin passes and nothing below fails.
ACCURACY_THRESHOLDS = {"dpo": (0.7, 0.55), "reward-model": (0.8, 0.6)}
KL_PER_TOKEN_WARN = 2.0  # nats: a trained policy that far from the base model often writes degenerate text


# ---------------------------------------------------------------- report structure

@dataclass
class Check:
    name: str
    status: str
    detail: str
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class CheckpointReview:
    kind: str
    source: str | None
    checks: list[Check] = field(default_factory=list)
    generations: list[dict[str, str]] = field(default_factory=list)
    error: str | None = None

    def add(self, name: str, status: str, detail: str, **metrics) -> Check:
        check = Check(name, status, detail, {key: plain(value) for key, value in metrics.items()})
        self.checks.append(check)
        return check


class LoadFailure(Exception):
    """A checkpoint cannot be loaded; the message is the one line the report shows."""


def plain(value):
    """JSON-friendly numbers: numpy scalars and tensors become Python numbers, floats to 6 significant digits."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float):
        return float(f"{value:.6g}") if math.isfinite(value) else None
    return value


# ---------------------------------------------------------------- sources and errors

def resolve_sources(target: str | Path | None, dpo=None, ppo=None, reward_model=None) -> dict[str, str | None]:
    """Where each checkpoint comes from: the explicit option, else `<dir>/<kind>` or the Hub `<prefix>-<kind>`."""
    explicit = {"dpo": dpo, "ppo": ppo, "reward-model": reward_model}
    sources = {}
    for kind in KINDS:
        if explicit[kind] is not None:
            sources[kind] = str(explicit[kind])
        elif target is None:
            sources[kind] = None
        elif Path(target).expanduser().is_dir():
            sources[kind] = str(Path(target).expanduser() / kind)
        else:
            sources[kind] = f"{str(target).rstrip('/')}-{kind}"
    return sources


def hub_offline() -> bool:
    """Whether huggingface_hub is in offline mode (HF_HUB_OFFLINE=1)."""
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def torch_cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def normalise(source: str | Path) -> str:
    """A local path made absolute (so that a card's base_model can be compared with it); a Hub id as it is."""
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() else str(source).rstrip("/")


def looks_local(source: str) -> bool:
    """Whether `source` names a local path rather than a Hub repository id."""
    return Path(source).expanduser().exists() or source.startswith((".", "/", "~")) or source.count("/") > 1


def error_chain(error: BaseException) -> Iterator[BaseException]:
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def explain_load_error(error: BaseException, source: str) -> tuple[str, bool]:
    """One line saying why `source` did not load, and whether the Hub turned out to be unreachable."""
    from huggingface_hub import errors as hub_errors

    chain = list(error_chain(error))
    text = " ".join(str(e) for e in chain).lower()
    kinds = {type(e).__name__ for e in chain}

    def has(*names: str) -> bool:
        return any(isinstance(e, getattr(hub_errors, name)) for e in chain for name in names)

    if looks_local(source) and not Path(source).expanduser().exists():
        return f"no such folder {source!r}", False
    if "SafetensorError" in kinds or "deserializ" in text or "incomplete metadata" in text \
            or "pytorchstreamreader" in text or "unpickl" in text or "invalid load key" in text:
        reason = str(chain[-1]).strip().splitlines()[0][:160]
        return f"weights file is corrupted or truncated ({reason})", False
    if has("GatedRepoError") or "gated repo" in text:
        return f"cannot load {source!r}: gated repository (accept its terms and set HF_TOKEN)", False
    if has("RepositoryNotFoundError") or "is not a valid model identifier" in text \
            or "not a valid repository name" in text:
        return f"cannot load {source!r}: repository not found (or private: set HF_TOKEN)", False
    if has("RevisionNotFoundError"):
        return f"cannot load {source!r}: revision not found", False
    unreachable = has("LocalEntryNotFoundError", "OfflineModeIsEnabled") or "couldn't connect" in text \
        or any(name.endswith(("ConnectError", "ConnectionError", "Timeout", "TimeoutError")) for name in kinds)
    if unreachable:
        return (f"cannot load {source!r}: not in the local cache and the Hub cannot be reached (offline); "
                "review a local folder instead"), True
    if has("EntryNotFoundError", "RemoteEntryNotFoundError") or "does not appear to have a file named" in text:
        if looks_local(source):
            return f"{source!r} is not a model folder (config.json or the weights are missing)", False
        return f"cannot load {source!r}: the repository has no model files (config.json or weights missing)", False
    if isinstance(error, (ValueError, KeyError)) and ("unrecognized" in text or "model_type" in text):
        return f"cannot load {source!r}: not a transformers checkpoint of a known architecture ({error})", False
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"cannot load {source!r}: {type(error).__name__}: {first[:200]}", False


# ---------------------------------------------------------------- text statistics

def style_figures(answers: list[str]) -> dict[str, float]:
    """The style the assignment is about: share of answers with an emoji, with "as an AI", mean length."""
    n = max(len(answers), 1)
    return {
        "emoji_rate": sum(has_emoji(answer) for answer in answers) / n,
        "as_an_ai_rate": sum(bool(AS_AN_AI.search(answer)) for answer in answers) / n,
        "mean_words": sum(len(answer.split()) for answer in answers) / n,
        "empty_rate": sum(not answer.strip() for answer in answers) / n,
    }


def beta_from_card(text: str) -> float | None:
    """The DPO beta listed in a model card (a table row `| beta | 0.1 |` or `beta: 0.1`), if any."""
    number = r"(\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+)"
    for pattern in (r"(?im)^\|\s*`?beta`?\s*\|\s*" + number + r"\s*\|", r"(?i)\bbeta\b[^0-9a-z\n]{1,6}" + number):
        match = re.search(pattern, text)
        if match:
            try:
                value = float(match.group(1))
            except ValueError:
                continue
            if 0 < value < 100:
                return value
    return None


def card_metrics_in_body(text: str) -> bool:
    """Whether a card's markdown has an evaluation/metrics/results section with numbers in it."""
    sections = re.split(r"(?m)^(#{1,6} .*)$", text)
    for heading, body in zip(sections[1::2], sections[2::2]):
        if re.search(r"(?i)\b(eval\w*|metrics?|results?|quality|performance)\b", heading) and re.search(r"\d", body):
            return True
    return False


# ---------------------------------------------------------------- model computations

def pad_right(rows: list[list[int]], pad_id: int) -> tuple["torch.Tensor", "torch.Tensor"]:
    import torch

    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, :len(row)] = 1
    return ids, mask


def stop_ids(model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase") -> list[int]:
    configured = model.generation_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


def chat_prompt_ids(tokenizer: "PreTrainedTokenizerBase", prompt: str) -> list[int]:
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"][-MAX_PROMPT_TOKENS:]


def generate_answers(model, tokenizer, prompts: list[str], max_new_tokens: int, desc: str,
                     progress: bool) -> list[dict]:
    """Greedy answers (chat template, attention mask, left padding); only the new tokens are kept."""
    import torch
    from transformers import GenerationConfig

    stops = stop_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stops, pad_token_id=pad_id)
    results = []
    batches = range(0, len(prompts), GENERATION_BATCH)
    for start in tqdm(batches, desc=desc, unit="batch", disable=not progress, leave=False):
        prompt_ids = [chat_prompt_ids(tokenizer, prompt) for prompt in prompts[start:start + GENERATION_BATCH]]
        width = max(len(ids) for ids in prompt_ids)
        input_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids in prompt_ids])
        attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prompt_ids])
        with torch.no_grad():
            output = model.generate(input_ids=input_ids.to(model.device),
                                    attention_mask=attention_mask.to(model.device), generation_config=config)
        for ids, row in zip(prompt_ids, output[:, width:].tolist()):
            cut = next((i + 1 for i, token in enumerate(row) if token in stops), len(row))
            answer_ids = row[:cut]
            results.append({"prompt_ids": ids, "answer_ids": answer_ids,
                            "text": tokenizer.decode(answer_ids, skip_special_tokens=True).strip()})
    return results


def answer_log_probs(model, rows: list[tuple[list[int], list[int]]], pad_id: int) -> "torch.Tensor":
    """log p(answer | prompt) of (prompt ids, answer ids) pairs, right-padded batches, answer tokens only."""
    import torch

    totals = []
    for start in range(0, len(rows), SCORING_BATCH):
        batch = rows[start:start + SCORING_BATCH]
        ids, attention = pad_right([prompt + answer for prompt, answer in batch], pad_id)
        answer_mask = torch.zeros_like(ids)
        for i, (prompt, answer) in enumerate(batch):
            answer_mask[i, len(prompt):len(prompt) + len(answer)] = 1
        with torch.no_grad():
            logits = isolated_sequence_logits(model, ids.to(model.device), attention.to(model.device)).float()
            totals.append(isolated_get_log_prob(logits, ids.to(model.device), answer_mask.to(model.device)).cpu())
    return torch.cat(totals).double()


def sequence_kl(policy, base, rows: list[tuple[list[int], list[int]]], pad_id: int) -> tuple[list[float], list[int]]:
    """Sum over each answer's tokens of KL(policy || base) of the next-token distributions, and the token counts."""
    import torch

    totals, counts = [], []
    for start in range(0, len(rows), SCORING_BATCH):
        batch = rows[start:start + SCORING_BATCH]
        ids, attention = pad_right([prompt + answer for prompt, answer in batch], pad_id)
        scored = torch.zeros_like(ids, dtype=torch.bool)  # positions whose NEXT token is an answer token
        for i, (prompt, answer) in enumerate(batch):
            scored[i, len(prompt) - 1:len(prompt) + len(answer) - 1] = True
        with torch.no_grad():
            ids, attention = ids.to(policy.device), attention.to(policy.device)
            on_device = scored.to(policy.device)
            log_p = isolated_sequence_logits(policy, ids, attention).float()[on_device].log_softmax(-1)
            log_q = isolated_sequence_logits(base, ids, attention).float()[on_device].log_softmax(-1)
            per_token = (log_p.exp() * (log_p - log_q)).sum(-1).cpu()
        row_of_position = scored.nonzero()[:, 0].cpu()
        for i in range(len(batch)):
            totals.append(float(per_token[row_of_position == i].sum()))
            counts.append(int((row_of_position == i).sum()))
    return totals, counts


def reward_scores(model, tokenizer, conversations: list[list[dict]], desc: str, progress: bool) -> list[float]:
    """The reward model's own output (num_labels = 1) for each conversation, in right-padded batches."""
    import torch

    pad_id = model.config.pad_token_id
    batch_size = GENERATION_BATCH if pad_id is not None else 1  # transformers refuses batches without a pad id
    scores = []
    for start in tqdm(range(0, len(conversations), batch_size), desc=desc, unit="batch", disable=not progress,
                      leave=False):
        rows = [tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
                for messages in conversations[start:start + batch_size]]
        rows = [row[:MAX_CONVERSATION_TOKENS] for row in rows]
        ids, attention = pad_right(rows, pad_id if pad_id is not None else 0)
        with torch.no_grad():
            logits = model(input_ids=ids.to(model.device), attention_mask=attention.to(model.device)).logits
        scores += logits[:, 0].float().cpu().tolist()
    return scores


def conversation(prompt: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


# ---------------------------------------------------------------- the reviewer

@contextlib.contextmanager
def library_output(progress: bool):
    """Library warnings off for the review; transformers' and datasets' progress bars only with `progress`."""
    import datasets
    import transformers

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    if not progress:
        transformers.logging.disable_progress_bar()
        datasets.disable_progress_bars()
    try:
        import huggingface_hub.utils.logging as hub_logging

        hub_logger = hub_logging.get_logger("huggingface_hub.repocard")
        hub_level = hub_logger.level
        hub_logger.setLevel("ERROR")
    except (ImportError, AttributeError):
        hub_logger = None
    try:
        yield
    finally:
        transformers.logging.set_verbosity(verbosity)
        if not progress:
            transformers.logging.enable_progress_bar()
            datasets.enable_progress_bars()
        if hub_logger is not None:
            hub_logger.setLevel(hub_level)


class Reviewer:
    """Loads the base model, the held-out pairs and each checkpoint, and runs the checks."""

    def __init__(self, base: str, dataset: str, pairs: int, prompts: int, max_new_tokens: int, expect: str,
                 progress: bool):
        self.base_id, self.dataset_id = base, dataset
        self.n_pairs, self.max_new_tokens, self.progress = pairs, max_new_tokens, progress
        self.expect = expect
        self.prompts = list(REVIEW_PROMPTS[:prompts])
        self.hub_unreachable = hub_offline()
        self.device = "cuda" if torch_cuda_available() else "cpu"  # models run in float32 on one device
        self.base_model = self.base_tokenizer = self.base_error = None
        self.pairs: list[dict[str, str]] = []
        self.pairs_error: str | None = None
        self.base_answers: list[dict] | None = None
        self.reward: tuple | None = None  # (model, tokenizer) of a usable reward model, for the PPO check

    # ---- loading

    def hub_kwargs(self, source: str) -> dict:
        return {"local_files_only": True} if self.hub_unreachable and not looks_local(source) else {}

    def guarded(self, source: str, load):
        try:
            return load()
        except Exception as error:  # noqa: BLE001 (every failure becomes one line of the report)
            message, unreachable = explain_load_error(error, source)
            self.hub_unreachable |= unreachable
            raise LoadFailure(message) from error

    def load_base(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            self.base_tokenizer = self.guarded(self.base_id, lambda: AutoTokenizer.from_pretrained(
                self.base_id, **self.hub_kwargs(self.base_id)))
            self.base_model = self.guarded(self.base_id, lambda: AutoModelForCausalLM.from_pretrained(
                self.base_id, dtype=torch.float32, **self.hub_kwargs(self.base_id))).to(self.device).eval()
        except LoadFailure as failure:
            self.base_model = self.base_tokenizer = None
            self.base_error = f"base model: {failure}"

    def load_pairs(self) -> None:
        from datasets import load_dataset

        try:
            data = load_dataset(self.dataset_id)
            if "test" in data:
                held_out = data["test"]
            else:
                held_out = data["train"].train_test_split(test_size=HELD_OUT_SIZE, seed=SPLIT_SEED)["test"]
            missing = [column for column in PREFERENCE_COLUMNS if column not in held_out.column_names]
            if missing:
                raise ValueError(f"the held-out split lacks the columns {missing}")
            held_out = held_out.select(range(min(self.n_pairs, len(held_out))))
            self.pairs = [{column: row[column] for column in PREFERENCE_COLUMNS} for row in held_out]
        except Exception as error:  # noqa: BLE001
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            self.pairs_error = (f"held-out pairs from {self.dataset_id!r} unavailable: {type(error).__name__}: "
                                f"{first[:200]}")

    def load_card(self, source: str):
        """(card, problem): the checkpoint's model card, or why there is none."""
        from huggingface_hub import ModelCard

        if looks_local(source):
            path = Path(source).expanduser() / "README.md"
            if not path.is_file():
                return None, "no model card (README.md) in the folder"
            target = path
        elif self.hub_unreachable:
            return None, "the Hub cannot be reached, so the model card was not read"
        else:
            target = source
        try:
            return ModelCard.load(target), None
        except Exception as error:  # noqa: BLE001
            names = {type(e).__name__ for e in error_chain(error)}
            if names & {"EntryNotFoundError", "RemoteEntryNotFoundError"}:
                return None, "no model card (README.md) in the repository"
            if names & {"LocalEntryNotFoundError", "ConnectError", "ConnectionError"}:
                return None, "the Hub cannot be reached, so the model card was not read"
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            return None, f"the model card does not parse: {first[:200]}"

    # ---- checks shared by every checkpoint

    def load_checkpoint(self, review: CheckpointReview, classifier: bool):
        """Config, architecture and weights; returns the model, or None when the review of it must stop here."""
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

        source = review.source
        config = self.guarded(source, lambda: AutoConfig.from_pretrained(source, **self.hub_kwargs(source)))
        architectures = list(getattr(config, "architectures", None) or [])
        name = ", ".join(architectures) or f"model_type {config.model_type!r}"
        if classifier:
            right = any(a.endswith("ForSequenceClassification") for a in architectures)
            if not right:
                review.add("architecture", FAIL, f"expected a sequence classifier (…ForSequenceClassification), "
                                                 f"the checkpoint is {name}", architectures=architectures)
                return None
            if config.num_labels != 1:
                review.add("architecture", FAIL, f"{name} with {config.num_labels} labels: a reward model outputs "
                                                 "one score (num_labels=1)", num_labels=config.num_labels)
                return None
            review.add("architecture", PASS, f"{name}, one label (a scalar reward)", architectures=architectures)
        else:
            if not any(a.endswith("ForCausalLM") for a in architectures):
                review.add("architecture", FAIL, f"expected a causal language model (…ForCausalLM), the checkpoint "
                                                 f"is {name}", architectures=architectures)
                return None
            review.add("architecture", PASS, name, architectures=architectures)

        auto = AutoModelForSequenceClassification if classifier else AutoModelForCausalLM
        model, info = self.guarded(source, lambda: auto.from_pretrained(
            source, dtype=torch.float32, output_loading_info=True, **self.hub_kwargs(source)))
        model.to(self.device).eval()
        missing = list(info.get("missing_keys") or [])
        stored = str(getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "float32")
        stored = stored.replace("torch.", "")
        size = sum(p.numel() for p in model.parameters())
        if missing:
            review.add("loads", FAIL, f"{len(missing)} weights are missing from the checkpoint and were initialised "
                                      f"at random ({', '.join(missing[:3])}{', …' if len(missing) > 3 else ''})",
                       missing_keys=missing[:20])
            return None
        review.add("loads", PASS, f"{type(model).__name__}, {size / 1e6:.1f}M parameters, saved in {stored}",
                   parameters=size, dtype=stored)
        model.stored_dtype = getattr(torch, stored, torch.float32)
        return model

    def check_tokenizer(self, review: CheckpointReview, model, classifier: bool):
        """The checkpoint's tokenizer (or the base model's when it has none that works)."""
        from transformers import AutoTokenizer

        source = review.source
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, **self.hub_kwargs(source))
        except Exception as error:  # noqa: BLE001
            first = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
            review.add("tokenizer", FAIL, f"no tokenizer saved with the checkpoint ({first}); the review uses the "
                                          "base model's")
            return self.base_tokenizer
        if not tokenizer.chat_template:
            review.add("tokenizer", FAIL, "the tokenizer has no chat template (save the instruct model's tokenizer); "
                                          "the review uses the base model's")
            return self.base_tokenizer
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            review.add("tokenizer", FAIL, f"the tokenizer has {len(tokenizer)} tokens but the model only "
                                          f"{model.get_input_embeddings().num_embeddings} embeddings (resize them)")
            return self.base_tokenizer
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        detail = f"{type(tokenizer).__name__} with a chat template, {len(tokenizer)} tokens"
        if classifier:
            probe = [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello! 😊"}]
            chat_ids = tokenizer.apply_chat_template(probe, tokenize=True, return_dict=True)["input_ids"]
            pad_id = model.config.pad_token_id
            if pad_id is None:
                review.add("tokenizer", WARN, f"{detail}; but config.pad_token_id is not set, so batches of more than "
                                              "one conversation fail (scored one at a time here)")
            elif pad_id in chat_ids:
                token = tokenizer.convert_ids_to_tokens(pad_id)
                review.add("tokenizer", WARN, f"{detail}; but the pad token {token!r} occurs in chat text, so the "
                                              "score may be read at the wrong token", pad_token=token)
            else:
                review.add("tokenizer", PASS, f"{detail}, pad token {tokenizer.convert_ids_to_tokens(pad_id)!r} "
                                              "never occurs in chat text")
            return tokenizer
        review.add("tokenizer", PASS, detail)
        return tokenizer

    def check_weights_differ(self, review: CheckpointReview, model, backbone_only: bool) -> bool:
        """Compare the parameters shared with the base model; False when they are all identical."""
        if self.base_model is None:
            review.add("differs from base", WARN, f"not compared: {self.base_error}")
            return True
        base = dict(self.base_model.named_parameters())
        compared, reshaped, largest = 0, 0, 0.0
        for name, parameter in model.named_parameters():
            reference = base.get(name)
            if reference is None:
                continue
            if reference.shape != parameter.shape:
                reshaped += 1
                continue
            compared += 1
            # Compare in the dtype the checkpoint was saved in, so that bf16 rounding alone is no difference.
            expected = reference.detach().to(model.stored_dtype).float()
            largest = max(largest, float((parameter.detach().float() - expected).abs().max()))
        metrics = dict(tensors_compared=compared, tensors_resized=reshaped, max_abs_diff=largest)
        if compared == 0:
            review.add("differs from base", WARN, f"no parameter in common with the base model {self.base_id!r}: was "
                                                  "it fine-tuned from it?", **metrics)
            return True
        if largest == 0.0 and reshaped == 0:
            if backbone_only:
                review.add("differs from base", WARN, "the transformer is identical to the base model's: only the "
                                                      "new reward head was trained", **metrics)
            else:
                review.add("differs from base", FAIL, "identical to the base model: was it trained/saved?", **metrics)
            return False
        what = "the transformer differs" if backbone_only else "differs"
        review.add("differs from base", PASS, f"{what} from the base model: max |Δ| = {largest:.3g} over {compared} "
                                              f"tensors" + (f", {reshaped} resized" if reshaped else ""), **metrics)
        return True

    def base_generations(self, prompts: list[str]) -> list[dict]:
        if self.base_answers is None:
            self.base_answers = generate_answers(self.base_model, self.base_tokenizer, prompts, self.max_new_tokens,
                                                 "base: generating", self.progress)
        return self.base_answers

    def check_generations(self, review: CheckpointReview, model, tokenizer) -> list[dict] | None:
        """Greedy answers to the review prompts and held-out prompts, next to the base model's; style figures."""
        prompts = self.prompts + [pair["prompt"] for pair in self.pairs[:MAX_HELD_OUT_PROMPTS]]
        if not prompts:
            review.add("generations", WARN, "no prompts to answer (--prompts 0 and no held-out pairs)")
            return None
        answers = generate_answers(model, tokenizer, prompts, self.max_new_tokens, f"{review.kind}: generating",
                                   self.progress)
        texts = [answer["text"] for answer in answers]
        base_texts = [a["text"] for a in self.base_generations(prompts)] if self.base_model is not None else None
        review.generations = [
            {"prompt": prompt, "base": base_texts[i] if base_texts else "", review.kind: texts[i]}
            for i, prompt in enumerate(self.prompts)
        ]
        style = style_figures(texts)
        same = sum(a == b for a, b in zip(texts, base_texts)) if base_texts else 0
        detail = f"{len(prompts)} greedy answers, {self.max_new_tokens} new tokens at most"
        if self.expect == "trained" and style["empty_rate"] > 0.5:
            review.add("generations", WARN, f"{detail}; {style['empty_rate']:.0%} are empty: does generation stop "
                                            "at once?", prompts=len(prompts), identical_to_base=same)
        elif self.expect == "trained" and base_texts and same == len(texts):
            review.add("generations", WARN, f"{detail}; every answer is identical to the base model's",
                       prompts=len(prompts), identical_to_base=same)
        else:
            review.add("generations", PASS, f"{detail}; {same} identical to the base model's",
                       prompts=len(prompts), identical_to_base=same)
        if base_texts is None:
            review.add("style", WARN, f"{describe_style(style)} (base model not available for comparison)", model=style)
            return answers
        base_style = style_figures(base_texts)
        detail = f"{describe_style(style)} (base: {describe_style(base_style)})"
        warmer = style["emoji_rate"] > base_style["emoji_rate"] or style["as_an_ai_rate"] < base_style["as_an_ai_rate"]
        if self.expect == "trained" and not warmer:
            review.add("style", WARN, f"{detail}: no move towards the preferred style (more emoji, less \"as an AI\")",
                       model=style, base=base_style)
        else:
            review.add("style", PASS, detail, model=style, base=base_style)
        return answers

    def check_drift(self, review: CheckpointReview, model, tokenizer, answers: list[dict] | None) -> None:
        """Sequence-level KL(model || base) along the model's own greedy answers to the held-out prompts."""
        if self.base_model is None or not answers:
            review.add("KL drift", WARN, "not measured: " + (self.base_error or "no answers"))
            return
        held_out = answers[len(self.prompts):] or answers
        rows = [(answer["prompt_ids"], answer["answer_ids"]) for answer in held_out if answer["answer_ids"]]
        if not rows:
            review.add("KL drift", WARN, "not measured: every answer is empty")
            return
        totals, counts = sequence_kl(model, self.base_model, rows, tokenizer.pad_token_id)
        per_sequence, per_token = mean(totals), sum(totals) / max(sum(counts), 1)
        where = "held-out prompts" if answers[len(self.prompts):] else "review prompts"
        detail = (f"KL(model || base) along its own greedy answers to {len(rows)} {where}: {per_sequence:.3g} nats "
                  f"per answer, {per_token:.3g} per token")
        metrics = dict(kl_per_sequence=per_sequence, kl_per_token=per_token, answers=len(rows))
        if not math.isfinite(per_sequence):
            review.add("KL drift", FAIL, f"{detail}: not finite (NaN or inf weights?)", **metrics)
        elif per_sequence == 0 and self.expect == "trained":
            review.add("KL drift", WARN, f"{detail}: it has not moved from the base model", **metrics)
        elif per_token > KL_PER_TOKEN_WARN and self.expect == "trained":
            review.add("KL drift", WARN, f"{detail}: far from the base model, look for degenerate text", **metrics)
        else:
            review.add("KL drift", PASS, detail, **metrics)

    def check_card(self, review: CheckpointReview, card, problem: str | None) -> None:
        """The bonus task: a card that parses and names the base model, the dataset and held-out metrics."""
        found = dict(present=card is not None, parses=card is not None, base_model=None, datasets=[],
                     metrics=False, hyperparameters=False, samples=False, complete=False)
        if card is None:
            found["present"] = problem is not None and "does not parse" in problem
            review.add("model card", WARN, f"{problem}: bonus criteria not met", **found)
            return
        data = card.data.to_dict()
        base_model = data.get("base_model")
        datasets = data.get("datasets") or []
        datasets = [datasets] if isinstance(datasets, str) else list(datasets)
        text = card.text
        found.update(
            base_model=base_model, datasets=datasets,
            metrics=bool(data.get("model-index") or data.get("eval_results") or data.get("metrics"))
            or card_metrics_in_body(text),
            hyperparameters=bool(re.search(r"(?i)hyper-?\s?param|learning[ _]rate", text)),
            samples=bool(re.search(r"(?i)sample|generation|example|prompt", text)),
        )
        missing = [label for label, ok in (("base_model in the metadata", base_model),
                                           ("datasets in the metadata", datasets),
                                           ("held-out metrics", found["metrics"])) if not ok]
        found["complete"] = not missing
        if missing:
            review.add("model card", WARN, f"the card lacks {', '.join(missing)}: bonus criteria not met", **found)
            return
        notes = []
        named = [str(item).rstrip("/") for item in (base_model if isinstance(base_model, list) else [base_model])]
        if self.base_id not in [normalise(item) for item in named]:
            notes.append(f"its base_model {', '.join(named)} is not the reviewed base {self.base_id}")
        if not found["hyperparameters"]:
            notes.append("no hyper-parameters listed")
        if not found["samples"]:
            notes.append("no sample generations")
        detail = f"base_model {', '.join(named)}, datasets {', '.join(map(str, datasets))}, held-out metrics"
        if notes:
            review.add("model card", WARN, f"{detail}; but {'; '.join(notes)}", **found)
        else:
            review.add("model card", PASS, f"{detail}, hyper-parameters and samples", **found)

    # ---- per kind

    def review_checkpoint(self, kind: str, source: str | None) -> CheckpointReview:
        review = CheckpointReview(kind, source)
        if source is None:
            review.error = "not given: no target and no --" + kind
            review.add("loads", WARN, review.error)
            return review
        card, card_problem = None, None
        try:
            if kind == "reward-model":
                self.review_reward_model(review)
            else:
                card, card_problem = self.load_card(source)
                self.review_policy(review, card)
        except LoadFailure as failure:
            review.error = str(failure)
            review.add("loads", FAIL, review.error)
            if any(problem in review.error for problem in SOURCE_PROBLEMS):
                return review  # there is nothing to read a model card from either
        except Exception as error:  # noqa: BLE001 (a crash of one review must not stop the others)
            review.error = f"the review crashed: {type(error).__name__}: {str(error).strip()[:300]}"
            review.add("review", FAIL, review.error)
        if card is None and card_problem is None:
            card, card_problem = self.load_card(source)
        self.check_card(review, card, card_problem)
        return review

    def review_policy(self, review: CheckpointReview, card) -> None:
        model = self.load_checkpoint(review, classifier=False)
        if model is None:
            return
        tokenizer = self.check_tokenizer(review, model, classifier=False)
        trained = self.check_weights_differ(review, model, backbone_only=False)
        if tokenizer is None:
            return
        answers = self.check_generations(review, model, tokenizer)
        if review.kind == "dpo":
            self.check_implicit_reward(review, model, tokenizer, card, trained)
        self.check_drift(review, model, tokenizer, answers)
        if review.kind == "ppo":
            self.check_ppo_reward(review, answers)

    def check_implicit_reward(self, review: CheckpointReview, model, tokenizer, card, trained: bool) -> None:
        """Held-out accuracy and margin of r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x))."""
        if self.base_model is None or not self.pairs:
            review.add("implicit reward", WARN, "not measured: " + (self.base_error or self.pairs_error or "no pairs"))
            return
        beta = beta_from_card(card.text) if card is not None else None
        beta_note = "from the model card" if beta is not None else "default"
        beta = beta if beta is not None else DEFAULT_BETA
        rows = {"chosen": [], "rejected": []}
        for pair in tqdm(self.pairs, desc="dpo: implicit reward", unit="pair", disable=not self.progress, leave=False):
            formatted = format_example(pair, tokenizer)
            prompt = tokenizer(formatted["prompt"], add_special_tokens=False)["input_ids"][-MAX_PROMPT_TOKENS:]
            for answer in rows:
                ids = tokenizer(formatted[answer], add_special_tokens=False)["input_ids"][:MAX_ANSWER_TOKENS]
                rows[answer].append((prompt, ids))
        pad_id = tokenizer.pad_token_id
        rewards = {answer: beta * (answer_log_probs(model, rows[answer], pad_id)
                                   - answer_log_probs(self.base_model, rows[answer], pad_id)) for answer in rows}
        margins = (rewards["chosen"] - rewards["rejected"]).tolist()
        accuracy = mean((m > 0) + 0.5 * (m == 0) for m in margins)
        margin = mean(margins)
        detail = (f"accuracy {accuracy:.3f}, mean margin {margin:.4g} on {len(margins)} held-out pairs "
                  f"(beta {beta:g}, {beta_note})")
        metrics = dict(accuracy=accuracy, margin=margin, pairs=len(margins), beta=beta)
        if not trained or all(m == 0 for m in margins):
            review.add("implicit reward", FAIL, f"{detail}: every margin is 0, the model prefers nothing", **metrics)
        else:
            self.add_quality(review, "implicit reward", detail, metrics)

    def add_quality(self, review: CheckpointReview, name: str, detail: str, metrics: dict) -> None:
        """Pass/warn/fail of a held-out accuracy: course thresholds, or only the direction with --expect smoke."""
        accuracy, margin = metrics["accuracy"], metrics["margin"]
        if self.expect == "smoke":
            if accuracy > 0.5 or margin > 0:
                review.add(name, PASS, detail, **metrics)
            else:
                review.add(name, WARN, f"{detail}: not even the right direction", **metrics)
            return
        good, fair = ACCURACY_THRESHOLDS[review.kind]
        if accuracy >= good and margin > 0:
            review.add(name, PASS, detail, **metrics)
        elif accuracy >= fair:
            review.add(name, WARN, f"{detail}: weak (a trained model reaches {good:.2f})", **metrics)
        else:
            review.add(name, FAIL, f"{detail}: no better than chance", **metrics)

    def review_reward_model(self, review: CheckpointReview) -> None:
        model = self.load_checkpoint(review, classifier=True)
        if model is None:
            return
        tokenizer = self.check_tokenizer(review, model, classifier=True)
        self.check_weights_differ(review, model, backbone_only=True)
        if tokenizer is None:
            return
        if not self.pairs:
            review.add("pairwise accuracy", WARN, f"not measured: {self.pairs_error}")
            return
        conversations = [conversation(pair["prompt"], pair[answer]) for answer in ("chosen", "rejected")
                         for pair in self.pairs]
        scores = reward_scores(model, tokenizer, conversations, "reward model: scoring", self.progress)
        chosen, rejected = scores[:len(self.pairs)], scores[len(self.pairs):]
        margins = [c - r for c, r in zip(chosen, rejected)]
        accuracy, margin = mean(m > 0 for m in margins), mean(margins)
        detail = f"accuracy {accuracy:.3f}, mean margin {margin:.4g} on {len(margins)} held-out pairs"
        metrics = dict(accuracy=accuracy, margin=margin, pairs=len(margins))
        self.add_quality(review, "pairwise accuracy", detail, metrics)
        self.check_answer_dependence(review, chosen, rejected)
        if review.checks[-1].status != FAIL:
            self.reward = (model, tokenizer)

    def check_answer_dependence(self, review: CheckpointReview, chosen: list[float], rejected: list[float]) -> None:
        """Different answers to the same prompt must get different scores, else the score is read in the prompt."""
        scores = chosen + rejected
        spread = math.sqrt(mean((s - mean(scores)) ** 2 for s in scores))
        differences = [abs(c - r) for c, r in zip(chosen, rejected)]
        tolerance = 1e-6 * max(1.0, max(abs(s) for s in scores))
        metrics = dict(score_std=spread, mean_abs_answer_difference=mean(differences))
        if not all(map(math.isfinite, scores)):
            review.add("score depends on the answer", FAIL, "some scores are NaN or infinite", **metrics)
        elif max(differences) <= tolerance:
            review.add("score depends on the answer", FAIL,
                       "the chosen and rejected answers to each prompt get the same score: the reward is read inside "
                       "the prompt (check the pad token and config.pad_token_id)", **metrics)
        else:
            review.add("score depends on the answer", PASS,
                       f"answers to the same prompt differ by {mean(differences):.3g} on average (score std "
                       f"{spread:.3g})", **metrics)

    def check_ppo_reward(self, review: CheckpointReview, answers: list[dict] | None) -> None:
        if self.reward is None or self.base_model is None or not answers:
            reason = "no usable reward model" if self.reward is None else self.base_error or "no answers"
            review.add("reward vs base", WARN, f"not measured: {reason}")
            return
        model, tokenizer = self.reward
        prompts = self.prompts + [pair["prompt"] for pair in self.pairs[:MAX_HELD_OUT_PROMPTS]]
        base_texts = [answer["text"] for answer in self.base_generations(prompts)]
        texts = [answer["text"] for answer in answers]
        conversations = [conversation(p, t) for p, t in zip(prompts, texts)]
        conversations += [conversation(p, t) for p, t in zip(prompts, base_texts)]
        scores = reward_scores(model, tokenizer, conversations, "ppo: reward", self.progress)
        policy_scores, base_scores = scores[:len(prompts)], scores[-len(prompts):]
        tie = 1e-5 * max(1.0, max(abs(score) for score in scores))
        wins = mean((p - b > tie) + 0.5 * (abs(p - b) <= tie) for p, b in zip(policy_scores, base_scores))
        ppo_mean, base_mean = mean(policy_scores), mean(base_scores)
        detail = (f"reward model's mean score {ppo_mean:.4g} vs {base_mean:.4g} for the base model over "
                  f"{len(prompts)} prompts (PPO better on {wins:.0%})")
        metrics = dict(ppo_mean=ppo_mean, base_mean=base_mean, win_rate=wins, prompts=len(prompts))
        if ppo_mean > base_mean or self.expect == "smoke":
            review.add("reward vs base", PASS, detail, **metrics)
        else:
            review.add("reward vs base", WARN, f"{detail}: PPO did not raise the reward", **metrics)


def describe_style(style: dict[str, float]) -> str:
    return (f"emoji {style['emoji_rate']:.0%}, \"as an AI\" {style['as_an_ai_rate']:.0%}, "
            f"{style['mean_words']:.1f} words")


# ---------------------------------------------------------------- bonus and rendering

def suggest_bonus(reviews: dict[str, CheckpointReview]) -> tuple[int, str]:
    """1 when all three checkpoints load and their cards name the base model and dataset and report metrics."""
    problems = []
    for kind, review in reviews.items():
        if review.source is None:
            problems.append(f"{kind}: not reviewed")
            continue
        if review.error:
            problems.append(f"{kind}: {review.error}")
        card = next((check for check in review.checks if check.name == "model card"), None)
        if card is None or not card.metrics.get("complete"):
            problems.append(f"{kind} card: {card.detail if card else 'not checked'}")
    if problems:
        return 0, "; ".join(problems)
    return 1, "all three checkpoints load and their model cards name the base model and the dataset and report " \
              "held-out metrics (check the descriptions by eye)"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def render_markdown(report: dict) -> str:
    """The review as Markdown: a summary, then one line per check and the sample answers of each checkpoint."""
    totals = report["summary"]
    lines = [f"# Review of `{report['target'] or 'the given checkpoints'}`", "",
             f"- base model: `{report['base_model']}`",
             f"- held-out pairs: {report['settings']['pairs_used']} from `{report['dataset']}`",
             f"- {plural(report['settings']['prompts'], 'review prompt')}, greedy answers of at most "
             f"{report['settings']['max_new_tokens']} new tokens; expectations: {report['settings']['expect']}",
             f"- reviewed in {report['seconds']:.0f} s",
             f"- **{totals[PASS]} pass, {totals[WARN]} warn, {totals[FAIL]} fail**; suggested bonus: "
             f"**{report['suggested_bonus']}** ({report['bonus_reason']})"]
    for problem in report["problems"]:
        lines.append(f"- ⚠️ {problem}")
    for kind, review in report["checkpoints"].items():
        counts = {status: sum(c["status"] == status for c in review["checks"]) for status in (PASS, WARN, FAIL)}
        source = f"`{review['source']}`" if review["source"] else "(not given)"
        lines += ["", f"## {TITLES[kind]}: {source}", "",
                  f"{counts[PASS]} pass, {counts[WARN]} warn, {counts[FAIL]} fail", ""]
        for check in review["checks"]:
            lines.append(f"- {ICONS[check['status']]} **{check['status']}** · {check['name']}: {check['detail']}")
        if review["generations"]:
            lines += ["", "<details><summary>Greedy answers next to the base model's</summary>", ""]
            for sample in review["generations"]:
                lines += [f"**{sample['prompt']}**", ""]
                for who in ("base", kind):
                    answer = sample[who] or "(empty)"
                    lines += [f"*{who}:*", "", "\n".join(f"> {line}" for line in answer.splitlines() or [""]), ""]
            lines.append("</details>")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- entry points

def review(
    target: str | Path | None = None,
    *,
    dpo: str | Path | None = None,
    ppo: str | Path | None = None,
    reward_model: str | Path | None = None,
    base: str | Path | None = None,
    dataset: str | Path | None = None,
    pairs: int = 64,
    prompts: int = 8,
    max_new_tokens: int = 64,
    expect: str = "trained",
    out: Path | None = None,
    progress: bool = True,
    echo: bool = False,
) -> dict:
    """Review a student's checkpoints and return the report (see the module docstring).

    Args:
        target: the Hub prefix `<user>/llm-course-hw2` or a folder with `dpo/`, `ppo/`, `reward-model/`.
        dpo, ppo, reward_model: a Hub id or folder for one checkpoint, overriding `target`.
        base: the base model (default `$HW2_MODEL_ID` or SmolLM-135M-Instruct).
        dataset: the preference dataset of the held-out pairs (default `$HW2_DATASET_ID` or the course's).
        pairs: held-out pairs to evaluate; prompts: review prompts to answer (at most 8);
        max_new_tokens: the length limit of the greedy answers.
        expect: "trained" (course thresholds) or "smoke" (fast-dev-run checkpoints: only the direction).
        out: when given, `review.md` and `review.json` are written there.
        progress: show progress bars (on stderr); echo: print the Markdown report to stdout.

    Returns:
        The JSON report: target, base_model, dataset, settings, problems (base model or data unavailable),
        checkpoints (per kind: source, error, checks [{name, status, detail, metrics}], generations), summary
        (counts of pass/warn/fail), suggested_bonus (0 or 1) and bonus_reason.
    """
    if expect not in EXPECTATIONS:
        raise ValueError(f"expect must be one of {EXPECTATIONS}, got {expect!r}")
    if pairs < 1 or prompts < 0 or max_new_tokens < 1:
        raise ValueError("pairs and max_new_tokens must be positive and prompts not negative")
    sources = resolve_sources(target, dpo, ppo, reward_model)
    if not any(sources.values()):
        raise ValueError("nothing to review: give a target (Hub prefix or folder) or --dpo/--ppo/--reward-model")
    base = normalise(base or os.environ.get("HW2_MODEL_ID") or DEFAULT_MODEL_ID)
    dataset = normalise(dataset or os.environ.get("HW2_DATASET_ID") or DEFAULT_DATASET_ID)
    start = time.perf_counter()
    reviewer = Reviewer(base, dataset, pairs, min(prompts, len(REVIEW_PROMPTS)), max_new_tokens, expect, progress)
    with library_output(progress):
        reviewer.load_base()
        reviewer.load_pairs()
        reviews = {}
        # The reward model goes first: the PPO check scores answers with it.
        for kind in tqdm(("reward-model", "dpo", "ppo"), desc="reviewing", unit="checkpoint", disable=not progress):
            reviews[kind] = reviewer.review_checkpoint(kind, sources[kind])
        reviewer.reward = reviewer.base_model = None
    reviews = {kind: reviews[kind] for kind in KINDS}
    bonus, reason = suggest_bonus(reviews)
    checks = [check for r in reviews.values() for check in r.checks]
    report = {
        "target": str(target) if target is not None else None,
        "base_model": base,
        "dataset": dataset,
        "settings": {"pairs": pairs, "pairs_used": len(reviewer.pairs), "prompts": len(reviewer.prompts),
                     "max_new_tokens": max_new_tokens, "expect": expect},
        "problems": [problem for problem in (reviewer.base_error, reviewer.pairs_error) if problem],
        "checkpoints": {kind: asdict(r) for kind, r in reviews.items()},
        "summary": {status: sum(c.status == status for c in checks) for status in (PASS, WARN, FAIL)},
        "suggested_bonus": bonus,
        "bonus_reason": reason,
        "seconds": round(time.perf_counter() - start, 1),
    }
    markdown = render_markdown(report)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "review.md").write_text(markdown, encoding="utf-8")
        (out / "review.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if echo:
        print(markdown, flush=True)
    return report


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.target is None and not (args.dpo or args.ppo or args.reward_model):
        parser.error("give the student's Hub prefix (<user>/llm-course-hw2), a local folder, or "
                     "--dpo/--ppo/--reward-model")
    if args.pairs < 1 or args.max_new_tokens < 1 or args.prompts < 0:
        parser.error("--pairs and --max-new-tokens must be at least 1, --prompts at least 0")
    review(args.target, dpo=args.dpo, ppo=args.ppo, reward_model=args.reward_model, base=args.base,
           dataset=args.dataset, pairs=args.pairs, prompts=args.prompts, max_new_tokens=args.max_new_tokens,
           expect=args.expect, out=args.out, progress=not args.no_progress, echo=True)
    if args.out is not None:
        print(f"report written to {args.out / 'review.md'} and {args.out / 'review.json'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "review", help="review a student's DPO, PPO and reward-model checkpoints (Hub or local) and the model cards",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("target", nargs="?", help="Hub prefix <user>/llm-course-hw2, or a folder holding dpo/, ppo/ "
                                                  "and reward-model/")
    parser.add_argument("--dpo", help="Hub id or folder of the DPO model (default: <target>-dpo)")
    parser.add_argument("--ppo", help="Hub id or folder of the PPO policy (default: <target>-ppo)")
    parser.add_argument("--reward-model", help="Hub id or folder of the reward model (default: <target>-reward-model)")
    parser.add_argument("--base", help=f"base model (default: $HW2_MODEL_ID or {DEFAULT_MODEL_ID})")
    parser.add_argument("--dataset", help=f"preference dataset of the held-out pairs (default: $HW2_DATASET_ID or "
                                          f"{DEFAULT_DATASET_ID})")
    parser.add_argument("--pairs", type=int, default=64, help="held-out pairs to evaluate (default 64)")
    parser.add_argument("--prompts", type=int, default=len(REVIEW_PROMPTS),
                        help=f"review prompts to answer, at most {len(REVIEW_PROMPTS)} (default all)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="length limit of the answers (default 64)")
    parser.add_argument("--expect", choices=EXPECTATIONS, default="trained",
                        help="trained: course thresholds; smoke: fast-dev-run checkpoints, only the direction counts")
    parser.add_argument("--out", type=Path, help="write review.md and review.json to this folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=lambda args: run(args, parser))
