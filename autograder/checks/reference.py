"""Independent references the checks compare the student's functions with, and the chat examples they share.

They are written differently from the notebook's solution on purpose (string search instead of a second
rendering, Python loops instead of tensor ops, `math` instead of torch, one unpadded sequence at a time), so
the checks do not inherit a bug of the solution. The `isolated_*` functions are tensor versions with the
notebook's signatures: a check substitutes them for the student's helpers (see `framework.student`) so a
student function is graded on its own, not on the helpers graded by another test cell. The stand-in for
`get_log_prob` runs in the sandbox (`autograder/grading/exercise/stand_ins.py`) and is re-exported here.
"""
import math

import torch
import torch.nn.functional as F

from autograder.grading.exercise.stand_ins import isolated_get_log_prob  # noqa: F401 (the checks use ref.*)

ASSISTANT_HEADER = "<|im_start|>assistant\n"


# ---------------------------------------------------------------- data preparation

def format_example(example: dict[str, str], tokenizer) -> dict[str, str]:
    """Prompt and answers cut out of the rendered full conversations at the LAST assistant header."""
    formatted = {}
    for key in ("chosen", "rejected"):
        messages = [{"role": "user", "content": example["prompt"]}, {"role": "assistant", "content": example[key]}]
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        cut = full.rindex(ASSISTANT_HEADER) + len(ASSISTANT_HEADER)
        prompt, formatted[key] = full[:cut], full[cut:]
        if formatted.setdefault("prompt", prompt) != prompt:
            raise AssertionError("the reference prompt differs between the chosen and rejected conversations")
    return formatted


def token_ids(text: str, tokenizer) -> list[int]:
    """Token ids of `text` without any added special token (through the token strings, not `__call__`)."""
    return [int(i) for i in tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text))]


def tokenized_row(formatted: dict[str, str], tokenizer, max_prompt: int | None, max_completion: int | None):
    """The expected output of tokenize_row, with explicit index arithmetic for the truncation."""
    prompt = token_ids(formatted["prompt"], tokenizer)
    start = max(0, len(prompt) - max_prompt) if max_prompt is not None else 0
    row = {"prompt_input_ids": [prompt[i] for i in range(start, len(prompt))]}
    for key in ("chosen", "rejected"):
        ids = token_ids(formatted[key], tokenizer)
        stop = min(len(ids), max_completion) if max_completion is not None else len(ids)
        row[f"{key}_input_ids"] = [ids[i] for i in range(stop)]
    return row


def padded_lists(sequences: list[list[int]], value, side: str) -> list[list]:
    """Pad Python lists to the longest one, one element at a time."""
    width = max(len(s) for s in sequences)
    rows = []
    for sequence in sequences:
        filler = [value] * (width - len(sequence))
        rows.append(filler + list(sequence) if side == "left" else list(sequence) + filler)
    return rows


def collated(rows: list[dict[str, list[int]]], pad_id: int) -> dict[str, list[list[int]]]:
    """The expected pad_collate_fn output, as nested lists."""
    out = {}
    for key, side in (("prompt", "left"), ("chosen", "right"), ("rejected", "right")):
        sequences = [list(row[f"{key}_input_ids"]) for row in rows]
        out[f"{key}_input_ids"] = padded_lists(sequences, pad_id, side)
        out[f"{key}_attn_mask"] = padded_lists([[1] * len(s) for s in sequences], 0, side)
    return out


def isolated_pad(tensors, padding_value=0, padding_side="right"):
    """Stand-in for the student's `pad` while pad_collate_fn is graded."""
    rows = padded_lists([[x for x in t.tolist()] for t in tensors], padding_value, padding_side)
    return torch.tensor(rows, dtype=tensors[0].dtype, device=tensors[0].device)


# ---------------------------------------------------------------- loss and log-probs

def softplus(x: float) -> float:
    """log(1 + exp(x)) without overflow."""
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def dpo_numbers(chosen, rejected, ref_chosen, ref_rejected, beta: float) -> dict:
    """Loss, accuracy, margin and per-pair gradients of the DPO loss, with the `math` module."""
    n = len(chosen)
    margins = [beta * (c - rc) - beta * (r - rr) for c, r, rc, rr in zip(chosen, rejected, ref_chosen, ref_rejected)]
    sigmoid_neg = [1.0 / (1.0 + math.exp(m)) for m in margins]  # sigma(-m) = -d log sigma(m) / dm
    return {
        "margins": margins,
        "loss": sum(softplus(-m) for m in margins) / n,
        "accuracy": sum(1 for m in margins if m > 0) / n,
        "margin": sum(margins) / n,
        "grad_chosen": [-beta * s / n for s in sigmoid_neg],
        "grad_rejected": [beta * s / n for s in sigmoid_neg],
    }


def isolated_dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    """Stand-in for the student's `dpo_loss` while dpo_batch_loss is graded."""
    margins = beta * ((chosen_logps - ref_chosen_logps) - (rejected_logps - ref_rejected_logps))
    return F.softplus(-margins).mean(), (margins > 0).float().mean().detach(), margins.mean().detach()


def loop_log_prob(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> list[float]:
    """Per-sequence sums of log p(label_t | prefix), one token at a time, in float64."""
    totals = []
    for b in range(labels.shape[0]):
        total = 0.0
        for t in range(1, labels.shape[1]):
            if int(mask[b, t]) != 0:
                log_probs = F.log_softmax(logits[b, t - 1].detach().double(), dim=-1)
                total += float(log_probs[int(labels[b, t])])
        totals.append(total)
    return totals


def isolated_sequence_logits(model, input_ids, attention_mask):
    """Stand-in for the provided `sequence_logits` (in case a student edited it)."""
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    return model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False).logits


# ---------------------------------------------------------------- training step

def glued(prompt_ids, prompt_mask, completion_ids, completion_mask, max_seq_len):
    """The expected concat_prompt_completion output as nested lists, one row at a time."""
    ids, attention, loss = [], [], []
    for b in range(len(prompt_ids)):
        row_ids = list(prompt_ids[b]) + list(completion_ids[b])
        row_attention = list(prompt_mask[b]) + list(completion_mask[b])
        row_loss = [0] * len(prompt_mask[b]) + list(completion_mask[b])
        if max_seq_len is not None:
            row_ids, row_attention, row_loss = (row[:max_seq_len] for row in (row_ids, row_attention, row_loss))
        ids.append(row_ids)
        attention.append(row_attention)
        loss.append(row_loss)
    return ids, attention, loss


@torch.no_grad()
def answer_log_prob(model, prompt: list[int], answer: list[int]) -> float:
    """log p(answer | prompt) from one unpadded forward pass (default positions), in float64."""
    if not answer:
        return 0.0
    ids = torch.tensor([prompt + answer])
    log_probs = F.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
    return float(sum(log_probs[len(prompt) + i - 1, token] for i, token in enumerate(answer)))


def batch_dpo_numbers(policy, reference, rows: list[dict[str, list[int]]], beta: float, max_seq_len: int | None):
    """The expected dpo_batch_loss output, one unpadded sequence at a time.

    With left-padded prompts the glued sequences are `prompt_width` wide before their answers start, where
    `prompt_width` is the longest prompt of the batch; cutting them to `max_seq_len` leaves the first
    `max_seq_len - prompt_width` tokens of each answer.
    """
    prompt_width = max(len(row["prompt_input_ids"]) for row in rows)
    keep = None if max_seq_len is None else max(0, max_seq_len - prompt_width)
    logps = {key: [] for key in ("chosen", "rejected", "ref_chosen", "ref_rejected")}
    for row in rows:
        prompt = list(row["prompt_input_ids"])
        for answer in ("chosen", "rejected"):
            tokens = list(row[f"{answer}_input_ids"])
            tokens = tokens if keep is None else tokens[:keep]
            logps[answer].append(answer_log_prob(policy, prompt, tokens))
            logps[f"ref_{answer}"].append(answer_log_prob(reference, prompt, tokens))
    numbers = dpo_numbers(logps["chosen"], logps["rejected"], logps["ref_chosen"], logps["ref_rejected"], beta)
    return numbers | {"logps": logps}


def answer_log_prob_tensor(model, prompt: list[int], answer: list[int]) -> torch.Tensor:
    """log p(answer | prompt) as a tensor that keeps the graph to the model's parameters (one sequence)."""
    if not answer:
        return torch.zeros(())
    ids = torch.tensor([prompt + answer])
    log_probs = F.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    positions = torch.arange(len(prompt) - 1, len(prompt) + len(answer) - 1)
    return log_probs[positions, torch.tensor(answer)].sum()


def batch_dpo_loss(policy, reference, rows: list[dict[str, list[int]]], beta: float,
                   max_seq_len: int | None) -> torch.Tensor:
    """The DPO loss of `batch_dpo_numbers` as a tensor, differentiable in the policy's parameters."""
    prompt_width = max(len(row["prompt_input_ids"]) for row in rows)
    keep = None if max_seq_len is None else max(0, max_seq_len - prompt_width)
    margins = []
    for row in rows:
        prompt = list(row["prompt_input_ids"])
        ratios = []
        for answer in ("chosen", "rejected"):
            tokens = list(row[f"{answer}_input_ids"])
            tokens = tokens if keep is None else tokens[:keep]
            with torch.no_grad():
                reference_logp = answer_log_prob_tensor(reference, prompt, tokens)
            ratios.append(answer_log_prob_tensor(policy, prompt, tokens) - reference_logp)
        margins.append(beta * (ratios[0] - ratios[1]))
    return F.softplus(-torch.stack(margins)).mean()


# ---------------------------------------------------------------- the chat examples the checks share

# Preference pairs in the dataset's style: emoji, a multi-line prompt with quotes, a long prompt.
EXAMPLES = [
    {"prompt": "Do you like rainy days?",
     "chosen": "I love them! ☔ The sound of rain on the window is so cozy. Do you?",
     "rejected": "As an AI language model, I do not experience weather."},
    {"prompt": "Line one.\nLine two: what's \"quoted\" here, and why?",
     "chosen": "Ha, two lines 😄\nThe quoted bit is just emphasis!",
     "rejected": "I cannot determine the intent of the quotation."},
    {"prompt": "Quick one: cats or dogs? 🐱🐶",
     "chosen": "Dogs, no doubt! 🐕 They're always so happy to see you.",
     "rejected": "I do not have preferences."},
    {"prompt": "What's the best thing you've eaten this week? I had amazing ramen on Tuesday night.",
     "chosen": "Ooh, ramen! 🍜 Nothing beats a rich broth on a cold night.",
     "rejected": "As an artificial intelligence, I do not eat food, so I cannot answer this question."},
]
ID_KEYS = ("prompt_input_ids", "chosen_input_ids", "rejected_input_ids")


def chat_rows(ctx, examples=EXAMPLES) -> list[dict[str, list[int]]]:
    """Tokenized rows of real chat examples (the answers end with <|im_end|>, which is also the pad token)."""
    return ctx.cached(("rows", len(examples)), lambda: [
        tokenized_row(format_example(e, ctx.tokenizer), ctx.tokenizer, None, None) for e in examples
    ])


# ---------------------------------------------------------------- reward model, PPO and analysis

def user_turn(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def implicit_conversation(prompt: str, answer: str) -> list[dict[str, str]]:
    """The expected conversation of one answer, spelled out message by message."""
    messages = user_turn(prompt)
    messages.append({"role": "assistant", "content": answer})
    return messages


def generation_prompt_ids(prompt: str, tokenizer) -> list[int]:
    """Token ids of a user turn followed by the assistant header, through the rendered text."""
    text = tokenizer.apply_chat_template(user_turn(prompt), tokenize=False, add_generation_prompt=True)
    return token_ids(text, tokenizer)


def scored_conversation_ids(prompt: str, answer: str, tokenizer) -> list[int]:
    """Token ids of a conversation up to the end-of-turn token that closes the answer, without the newline the
    template writes after it: the token the notebook's reward model is trained to score and PPO reads."""
    text = tokenizer.apply_chat_template(implicit_conversation(prompt, answer), tokenize=False)
    cut = text.rindex(tokenizer.eos_token) + len(tokenizer.eos_token)
    return token_ids(text[:cut], tokenizer)


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
