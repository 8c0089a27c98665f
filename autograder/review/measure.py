"""Measurements of models and texts: greedy answers, log-probabilities, KL drift, reward scores, style."""
import re
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from autograder.checks.reference import isolated_get_log_prob, isolated_sequence_logits
from autograder.fixtures.synthetic import has_emoji

if TYPE_CHECKING:  # torch and transformers are imported when a review runs, not when the CLI starts
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

MAX_PROMPT_TOKENS, MAX_ANSWER_TOKENS, MAX_CONVERSATION_TOKENS = 256, 256, 1024
GENERATION_BATCH, SCORING_BATCH = 8, 4
AS_AN_AI = re.compile(
    r"\bas an (?:ai|artificial intelligence)\b|\bI(?:'m| am) (?:an? )?(?:ai|artificial intelligence)\b"
    r"|\blanguage model\b", re.IGNORECASE,
)


def style_figures(answers: list[str]) -> dict[str, float]:
    """The style the assignment is about: share of answers with an emoji, with "as an AI", mean length."""
    n = max(len(answers), 1)
    return {
        "emoji_rate": sum(has_emoji(answer) for answer in answers) / n,
        "as_an_ai_rate": sum(bool(AS_AN_AI.search(answer)) for answer in answers) / n,
        "mean_words": sum(len(answer.split()) for answer in answers) / n,
        "empty_rate": sum(not answer.strip() for answer in answers) / n,
    }


# An answer repeats itself when at least this share of its word 3-grams are repeats of earlier ones (a sentence
# said three times in a row scores 0.6; ordinary prose stays under 0.15). Shorter answers are not judged.
REPEAT_NGRAM, REPEAT_RATIO, REPEAT_MIN_WORDS = 3, 0.5, 12


def repetition_ratio(text: str, n: int = REPEAT_NGRAM) -> float:
    """Share of the word n-grams of `text` that repeat an earlier one (0: none repeats; near 1: one phrase
    over and over). Words are compared case-insensitively, punctuation kept."""
    words = text.lower().split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def is_degenerate(text: str) -> bool:
    """Whether an answer of some length mostly repeats itself (see `REPEAT_RATIO`)."""
    return len(text.split()) >= REPEAT_MIN_WORDS and repetition_ratio(text) >= REPEAT_RATIO


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


def conversation_ids(tokenizer: "PreTrainedTokenizerBase", messages: list[dict]) -> list[int]:
    """A conversation's token ids up to and including the end-of-turn token that closes it.

    The notebook trains the reward model on these ids and PPO scores its answers at that token; ChatML
    templates add a newline after it, and a score read there is not the one the model learnt."""
    ids = list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])
    ends = [i for i, token in enumerate(ids) if token == tokenizer.eos_token_id]
    return ids[:ends[-1] + 1] if ends else ids


def reward_scores(model, tokenizer, conversations: list[list[dict]], desc: str, progress: bool) -> list[float]:
    """The reward model's own output (num_labels = 1) for each conversation, in right-padded batches."""
    import torch

    pad_id = model.config.pad_token_id
    batch_size = GENERATION_BATCH if pad_id is not None else 1  # transformers refuses batches without a pad id
    scores = []
    for start in tqdm(range(0, len(conversations), batch_size), desc=desc, unit="batch", disable=not progress,
                      leave=False):
        rows = [conversation_ids(tokenizer, messages)[-MAX_CONVERSATION_TOKENS:]
                for messages in conversations[start:start + batch_size]]
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


def describe_style(style: dict[str, float]) -> str:
    return (f"emoji {style['emoji_rate']:.0%}, \"as an AI\" {style['as_an_ai_rate']:.0%}, "
            f"{style['mean_words']:.1f} words")
