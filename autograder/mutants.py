'''Realistic student answers for Part 1: buggy ones (mutants) and correct ones written differently (variants).

They keep the hidden checks honest: every mutant must lose points on its own test cell and on no other
(`tests/test_checks.py`), every variant must get full marks.

- `MUTANTS[name] = {"grade_id": answer cell, "source": the cell as a student would write it, "loses": test cell}`
- `VARIANTS[name] = {answer cell: source, ...}` (a variant may replace several cells)

`namespace_with(base, replacements)` builds the namespace of such a student from the solution's namespace:
it copies the namespace, re-creates every notebook function on the copy (a function looks up the names it
calls in the dict it was defined in, so a plain copy would keep calling the solution's helpers), then
executes the replacement cells in the copy. After that `dpo_batch_loss` of the copy calls the copy's,
i.e. the mutated, `get_log_prob`, exactly as in a student's kernel.
'''
from autograder.checks.framework import rebound_namespace


def namespace_with(base: dict, replacements: dict[str, str]) -> dict:
    """A copy of the notebook namespace `base` in which the cells `replacements` (id -> source) were run."""
    namespace = rebound_namespace(base)
    for cell_id, source in replacements.items():
        exec(compile(source, f"<answer cell {cell_id}>", "exec"), namespace)
    return namespace


def _mutant(grade_id: str, loses: str, source: str) -> dict:
    return {"grade_id": grade_id, "source": source.strip() + "\n", "loses": loses}


MUTANTS: dict[str, dict] = {
    # ------------------------------------------------------------ apply_chat_template
    "chat_no_generation_prompt": _mutant("apply_chat_template", "test_apply_chat_template", '''
def apply_chat_template(example, tokenizer):
    user = [{"role": "user", "content": example["prompt"]}]
    prompt = tokenizer.apply_chat_template(user, tokenize=False)
    out = {"prompt": prompt}
    for key in ("chosen", "rejected"):
        full = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": example[key]}], tokenize=False)
        out[key] = full[len(prompt):]
    return out
'''),
    "chat_answer_rendered_alone": _mutant("apply_chat_template", "test_apply_chat_template", '''
def apply_chat_template(example, tokenizer):
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": example["prompt"]}], tokenize=False,
                                           add_generation_prompt=True)
    chosen = tokenizer.apply_chat_template([{"role": "assistant", "content": example["chosen"]}], tokenize=False)
    rejected = tokenizer.apply_chat_template([{"role": "assistant", "content": example["rejected"]}], tokenize=False)
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}
'''),
    "chat_special_tokens_by_hand": _mutant("apply_chat_template", "test_apply_chat_template", '''
def apply_chat_template(example, tokenizer):
    return {
        "prompt": f"<|im_start|>user\\n{example['prompt']}<|im_end|>\\n<|im_start|>assistant\\n",
        "chosen": f"{example['chosen']}<|im_end|>\\n",
        "rejected": f"{example['rejected']}<|im_end|>\\n",
    }
'''),
    "chat_answer_without_end_of_turn": _mutant("apply_chat_template", "test_apply_chat_template", '''
def apply_chat_template(example, tokenizer):
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": example["prompt"]}], tokenize=False,
                                           add_generation_prompt=True)
    return {"prompt": prompt, "chosen": example["chosen"], "rejected": example["rejected"]}
'''),
    # ------------------------------------------------------------ tokenize_row
    "tokenize_prompt_truncated_right": _mutant("tokenize_row", "test_tokenize_row", '''
def tokenize_row(example, tokenizer, max_prompt_length=512, max_completion_length=None):
    row = {}
    for key, limit in (("prompt", max_prompt_length), ("chosen", max_completion_length),
                       ("rejected", max_completion_length)):
        ids = tokenizer(example[key], add_special_tokens=False)["input_ids"]
        row[f"{key}_input_ids"] = ids if limit is None else ids[:limit]
    return row
'''),
    "tokenize_completion_truncated_left": _mutant("tokenize_row", "test_tokenize_row", '''
def tokenize_row(example, tokenizer, max_prompt_length=512, max_completion_length=None):
    row = {}
    for key, limit in (("prompt", max_prompt_length), ("chosen", max_completion_length),
                       ("rejected", max_completion_length)):
        ids = tokenizer(example[key], add_special_tokens=False)["input_ids"]
        row[f"{key}_input_ids"] = ids if limit is None else ids[-limit:]
    return row
'''),
    "tokenize_none_limit_crashes": _mutant("tokenize_row", "test_tokenize_row", '''
def tokenize_row(example, tokenizer, max_prompt_length=512, max_completion_length=None):
    prompt = tokenizer(example["prompt"], add_special_tokens=False)["input_ids"][-max_prompt_length:]
    chosen = tokenizer(example["chosen"], add_special_tokens=False)["input_ids"][:max_completion_length]
    rejected = tokenizer(example["rejected"], add_special_tokens=False)["input_ids"][:max_completion_length]
    return {"prompt_input_ids": prompt, "chosen_input_ids": chosen, "rejected_input_ids": rejected}
'''),
    # ------------------------------------------------------------ pad
    "pad_ignores_padding_side": _mutant("pad", "test_pad", '''
def pad(tensors, padding_value=0, padding_side="right"):
    return torch.nn.utils.rnn.pad_sequence(tensors, batch_first=True, padding_value=padding_value)
'''),
    "pad_left_rows_reversed": _mutant("pad", "test_pad", '''
def pad(tensors, padding_value=0, padding_side="right"):
    if padding_side == "left":
        tensors = [t.flip(0) for t in tensors]
    return torch.nn.utils.rnn.pad_sequence(tensors, batch_first=True, padding_value=padding_value)
'''),
    # ------------------------------------------------------------ pad_collate_fn / make_dataloader
    "collate_prompt_padded_right": _mutant("pad_collate_fn", "test_pad_collate_fn", '''
def pad_collate_fn(batch, pad_token_id):
    out = {}
    for key in ("prompt", "chosen", "rejected"):
        ids = [example[f"{key}_input_ids"] for example in batch]
        out[f"{key}_input_ids"] = pad(ids, pad_token_id, "right")
        out[f"{key}_attn_mask"] = pad([torch.ones_like(t) for t in ids], 0, "right")
    return out
'''),
    "collate_mask_from_pad_id": _mutant("pad_collate_fn", "test_pad_collate_fn", '''
def pad_collate_fn(batch, pad_token_id):
    out = {}
    for key, side in (("prompt", "left"), ("chosen", "right"), ("rejected", "right")):
        ids = pad([example[f"{key}_input_ids"] for example in batch], pad_token_id, side)
        out[f"{key}_input_ids"] = ids
        out[f"{key}_attn_mask"] = (ids != pad_token_id).long()
    return out
'''),
    "collate_answers_padded_left": _mutant("pad_collate_fn", "test_pad_collate_fn", '''
def pad_collate_fn(batch, pad_token_id):
    out = {}
    for key in ("prompt", "chosen", "rejected"):
        ids = [example[f"{key}_input_ids"] for example in batch]
        out[f"{key}_input_ids"] = pad(ids, pad_token_id, "left")
        out[f"{key}_attn_mask"] = pad([torch.ones_like(t) for t in ids], 0, "left")
    return out
'''),
    "dataloader_pads_with_zero": _mutant("make_dataloader", "test_pad_collate_fn", '''
def make_dataloader(dataset, tokenizer, batch_size, shuffle=True):
    collate_fn = partial(pad_collate_fn, pad_token_id=0)
    return DataLoader(dataset.with_format("torch"), batch_size=batch_size, shuffle=shuffle, collate_fn=collate_fn)
'''),
    # ------------------------------------------------------------ dpo_loss
    "loss_sign_flipped": _mutant("dpo_loss", "test_dpo_loss", '''
def dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    chosen_rewards = beta * (chosen_logps - ref_chosen_logps)
    rejected_rewards = beta * (rejected_logps - ref_rejected_logps)
    loss = -F.logsigmoid(rejected_rewards - chosen_rewards).mean()
    accuracy = (chosen_rewards > rejected_rewards).float().mean()
    return loss, accuracy, (chosen_rewards - rejected_rewards).mean()
'''),
    "loss_beta_outside_sigmoid": _mutant("dpo_loss", "test_dpo_loss", '''
def dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    log_ratio_diff = (chosen_logps - ref_chosen_logps) - (rejected_logps - ref_rejected_logps)
    loss = -(beta * F.logsigmoid(log_ratio_diff)).mean()
    margins = beta * log_ratio_diff
    return loss, (margins > 0).float().mean(), margins.mean()
'''),
    "loss_ties_count_as_right": _mutant("dpo_loss", "test_dpo_loss", '''
def dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    chosen_rewards = beta * (chosen_logps - ref_chosen_logps)
    rejected_rewards = beta * (rejected_logps - ref_rejected_logps)
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards).mean()
    accuracy = (chosen_rewards >= rejected_rewards).float().mean()
    return loss, accuracy, (chosen_rewards - rejected_rewards).mean()
'''),
    "loss_summed_over_batch": _mutant("dpo_loss", "test_dpo_loss", '''
def dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    chosen_rewards = beta * (chosen_logps - ref_chosen_logps)
    rejected_rewards = beta * (rejected_logps - ref_rejected_logps)
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards).sum()
    accuracy = (chosen_rewards > rejected_rewards).float().mean()
    return loss, accuracy, (chosen_rewards - rejected_rewards).mean()
'''),
    "loss_margin_without_beta": _mutant("dpo_loss", "test_dpo_loss", '''
def dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    log_ratio_diff = (chosen_logps - ref_chosen_logps) - (rejected_logps - ref_rejected_logps)
    loss = -F.logsigmoid(beta * log_ratio_diff).mean()
    return loss, (log_ratio_diff > 0).float().mean(), log_ratio_diff.mean()
'''),
    # ------------------------------------------------------------ get_log_prob
    "logp_no_label_shift": _mutant("get_log_prob", "test_get_log_prob", '''
def get_log_prob(logits, labels, mask):
    log_probs = logits.log_softmax(-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    return (log_probs * mask).sum(-1)
'''),
    "logp_mean_over_tokens": _mutant("get_log_prob", "test_get_log_prob", '''
def get_log_prob(logits, labels, mask):
    log_probs = logits[:, :-1].log_softmax(-1).gather(-1, labels[:, 1:].unsqueeze(-1)).squeeze(-1)
    mask = mask[:, 1:].float()
    return (log_probs * mask).sum(-1) / mask.sum(-1)
'''),
    "logp_mask_not_shifted": _mutant("get_log_prob", "test_get_log_prob", '''
def get_log_prob(logits, labels, mask):
    log_probs = logits[:, :-1].log_softmax(-1).gather(-1, labels[:, 1:].unsqueeze(-1)).squeeze(-1)
    return (log_probs * mask[:, :-1]).sum(-1)
'''),
    "logp_through_item": _mutant("get_log_prob", "test_get_log_prob", '''
def get_log_prob(logits, labels, mask):
    totals = []
    for b in range(labels.shape[0]):
        log_probs = torch.log_softmax(logits[b, :-1], dim=-1)
        total = 0.0
        for t in range(1, labels.shape[1]):
            if mask[b, t]:
                total += log_probs[t - 1, labels[b, t]].item()
        totals.append(total)
    return torch.tensor(totals)
'''),
    # ------------------------------------------------------------ concat_prompt_completion
    "concat_loss_mask_includes_prompt": _mutant("concat_prompt_completion", "test_dpo_training", '''
def concat_prompt_completion(prompt_input_ids, prompt_attn_mask, completion_input_ids, completion_attn_mask,
                             max_seq_len=None):
    input_ids = torch.cat([prompt_input_ids, completion_input_ids], dim=1)
    attention_mask = torch.cat([prompt_attn_mask, completion_attn_mask], dim=1)
    loss_mask = attention_mask.clone()
    if max_seq_len is not None:
        input_ids, attention_mask, loss_mask = input_ids[:, :max_seq_len], attention_mask[:, :max_seq_len], loss_mask[:, :max_seq_len]
    return input_ids, attention_mask, loss_mask
'''),
    "concat_truncates_from_left": _mutant("concat_prompt_completion", "test_dpo_training", '''
def concat_prompt_completion(prompt_input_ids, prompt_attn_mask, completion_input_ids, completion_attn_mask,
                             max_seq_len=None):
    input_ids = torch.cat([prompt_input_ids, completion_input_ids], dim=1)
    attention_mask = torch.cat([prompt_attn_mask, completion_attn_mask], dim=1)
    loss_mask = torch.cat([torch.zeros_like(prompt_attn_mask), completion_attn_mask], dim=1)
    if max_seq_len is not None:
        input_ids, attention_mask, loss_mask = input_ids[:, -max_seq_len:], attention_mask[:, -max_seq_len:], loss_mask[:, -max_seq_len:]
    return input_ids, attention_mask, loss_mask
'''),
    "concat_ignores_max_seq_len": _mutant("concat_prompt_completion", "test_dpo_training", '''
def concat_prompt_completion(prompt_input_ids, prompt_attn_mask, completion_input_ids, completion_attn_mask,
                             max_seq_len=None):
    input_ids = torch.cat([prompt_input_ids, completion_input_ids], dim=1)
    attention_mask = torch.cat([prompt_attn_mask, completion_attn_mask], dim=1)
    loss_mask = torch.cat([torch.zeros_like(prompt_attn_mask), completion_attn_mask], dim=1)
    return input_ids, attention_mask, loss_mask
'''),
    # ------------------------------------------------------------ dpo_batch_loss
    "batch_loss_reference_with_gradients": _mutant("dpo_batch_loss", "test_dpo_training", '''
def dpo_batch_loss(model, ref_model, batch, beta, max_seq_len=None):
    logps = {}
    for answer in ("chosen", "rejected"):
        ids, attn, loss_mask = concat_prompt_completion(batch["prompt_input_ids"], batch["prompt_attn_mask"],
                                                        batch[f"{answer}_input_ids"], batch[f"{answer}_attn_mask"],
                                                        max_seq_len)
        logps[answer] = get_log_prob(sequence_logits(model, ids, attn), ids, loss_mask)
        logps["ref_" + answer] = get_log_prob(sequence_logits(ref_model, ids, attn), ids, loss_mask)
    return dpo_loss(logps["chosen"], logps["rejected"], logps["ref_chosen"], logps["ref_rejected"], beta)
'''),
    "batch_loss_policy_under_no_grad": _mutant("dpo_batch_loss", "test_dpo_training", '''
def dpo_batch_loss(model, ref_model, batch, beta, max_seq_len=None):
    logps = {}
    with torch.no_grad():
        for answer in ("chosen", "rejected"):
            ids, attn, loss_mask = concat_prompt_completion(
                batch["prompt_input_ids"], batch["prompt_attn_mask"], batch[f"{answer}_input_ids"],
                batch[f"{answer}_attn_mask"], max_seq_len)
            logps[answer] = get_log_prob(sequence_logits(model, ids, attn), ids, loss_mask)
            logps["ref_" + answer] = get_log_prob(sequence_logits(ref_model, ids, attn), ids, loss_mask)
    return dpo_loss(logps["chosen"], logps["rejected"], logps["ref_chosen"], logps["ref_rejected"], beta)
'''),
    "batch_loss_default_beta": _mutant("dpo_batch_loss", "test_dpo_training", '''
def dpo_batch_loss(model, ref_model, batch, beta, max_seq_len=None):
    logps = {}
    for answer in ("chosen", "rejected"):
        ids, attn, loss_mask = concat_prompt_completion(batch["prompt_input_ids"], batch["prompt_attn_mask"],
                                                        batch[f"{answer}_input_ids"], batch[f"{answer}_attn_mask"],
                                                        max_seq_len)
        logps[answer] = get_log_prob(sequence_logits(model, ids, attn), ids, loss_mask)
        with torch.no_grad():
            logps["ref_" + answer] = get_log_prob(sequence_logits(ref_model, ids, attn), ids, loss_mask)
    return dpo_loss(logps["chosen"], logps["rejected"], logps["ref_chosen"], logps["ref_rejected"])
'''),
    "batch_loss_max_seq_len_not_passed": _mutant("dpo_batch_loss", "test_dpo_training", '''
def dpo_batch_loss(model, ref_model, batch, beta, max_seq_len=None):
    logps = {}
    for answer in ("chosen", "rejected"):
        ids, attn, loss_mask = concat_prompt_completion(batch["prompt_input_ids"], batch["prompt_attn_mask"],
                                                        batch[f"{answer}_input_ids"], batch[f"{answer}_attn_mask"])
        logps[answer] = get_log_prob(sequence_logits(model, ids, attn), ids, loss_mask)
        with torch.no_grad():
            logps["ref_" + answer] = get_log_prob(sequence_logits(ref_model, ids, attn), ids, loss_mask)
    return dpo_loss(logps["chosen"], logps["rejected"], logps["ref_chosen"], logps["ref_rejected"], beta)
'''),
    "batch_loss_chosen_rejected_swapped": _mutant("dpo_batch_loss", "test_dpo_training", '''
def dpo_batch_loss(model, ref_model, batch, beta, max_seq_len=None):
    logps = {}
    for answer in ("chosen", "rejected"):
        ids, attn, loss_mask = concat_prompt_completion(batch["prompt_input_ids"], batch["prompt_attn_mask"],
                                                        batch[f"{answer}_input_ids"], batch[f"{answer}_attn_mask"],
                                                        max_seq_len)
        logps[answer] = get_log_prob(sequence_logits(model, ids, attn), ids, loss_mask)
        with torch.no_grad():
            logps["ref_" + answer] = get_log_prob(sequence_logits(ref_model, ids, attn), ids, loss_mask)
    return dpo_loss(logps["rejected"], logps["chosen"], logps["ref_rejected"], logps["ref_chosen"], beta)
'''),
    # Right values, wrong gradients: each runs part of the policy's computation without a graph.
    "batch_loss_chosen_policy_detached": _mutant("dpo_batch_loss", "test_dpo_training", '''
def dpo_batch_loss(model, ref_model, batch, beta, max_seq_len=None):
    logps = {}
    for answer in ("chosen", "rejected"):
        ids, attn, loss_mask = concat_prompt_completion(batch["prompt_input_ids"], batch["prompt_attn_mask"],
                                                        batch[f"{answer}_input_ids"], batch[f"{answer}_attn_mask"],
                                                        max_seq_len)
        logps[answer] = get_log_prob(sequence_logits(model, ids, attn), ids, loss_mask)
        with torch.no_grad():
            logps["ref_" + answer] = get_log_prob(sequence_logits(ref_model, ids, attn), ids, loss_mask)
    return dpo_loss(logps["chosen"].detach(), logps["rejected"], logps["ref_chosen"], logps["ref_rejected"], beta)
'''),
    "batch_loss_rejected_policy_under_no_grad": _mutant("dpo_batch_loss", "test_dpo_training", '''
def dpo_batch_loss(model, ref_model, batch, beta, max_seq_len=None):
    logps = {}
    for answer in ("chosen", "rejected"):
        ids, attn, loss_mask = concat_prompt_completion(batch["prompt_input_ids"], batch["prompt_attn_mask"],
                                                        batch[f"{answer}_input_ids"], batch[f"{answer}_attn_mask"],
                                                        max_seq_len)
        with torch.set_grad_enabled(answer == "chosen"):
            logps[answer] = get_log_prob(sequence_logits(model, ids, attn), ids, loss_mask)
        with torch.no_grad():
            logps["ref_" + answer] = get_log_prob(sequence_logits(ref_model, ids, attn), ids, loss_mask)
    return dpo_loss(logps["chosen"], logps["rejected"], logps["ref_chosen"], logps["ref_rejected"], beta)
'''),
    "batch_loss_logits_through_data": _mutant("dpo_batch_loss", "test_dpo_training", '''
def dpo_batch_loss(model, ref_model, batch, beta, max_seq_len=None):
    logps = {}
    for answer in ("chosen", "rejected"):
        ids, attn, loss_mask = concat_prompt_completion(batch["prompt_input_ids"], batch["prompt_attn_mask"],
                                                        batch[f"{answer}_input_ids"], batch[f"{answer}_attn_mask"],
                                                        max_seq_len)
        logits = sequence_logits(model, ids, attn)
        if answer == "rejected":
            logits = logits.data  # "saves memory"
        logps[answer] = get_log_prob(logits, ids, loss_mask)
        with torch.no_grad():
            logps["ref_" + answer] = get_log_prob(sequence_logits(ref_model, ids, attn), ids, loss_mask)
    return dpo_loss(logps["chosen"], logps["rejected"], logps["ref_chosen"], logps["ref_rejected"], beta)
'''),
    "dpo_loss_rejected_term_detached": _mutant("dpo_loss", "test_dpo_loss", '''
def dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    chosen_rewards = beta * (chosen_logps - ref_chosen_logps)
    rejected_rewards = (beta * (rejected_logps - ref_rejected_logps)).detach()
    margins = chosen_rewards - rejected_rewards
    loss = -F.logsigmoid(margins).mean()
    return loss, (margins > 0).float().mean(), margins.mean()
'''),
    "dpo_loss_gradient_scaled_by_beta_twice": _mutant("dpo_loss", "test_dpo_loss", '''
def dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    margins = beta * ((chosen_logps - ref_chosen_logps) - (rejected_logps - ref_rejected_logps))
    loss = -F.logsigmoid(margins).mean()
    loss = loss.detach() + beta * (loss - loss.detach())  # the loss's value, beta times its gradient
    return loss, (margins > 0).float().mean(), margins.mean()
'''),
    "logp_normaliser_detached": _mutant("get_log_prob", "test_get_log_prob", '''
def get_log_prob(logits, labels, mask):
    logits = logits[:, :-1]
    log_probs = logits - torch.logsumexp(logits, dim=-1, keepdim=True).detach()  # log_softmax by hand
    picked = log_probs.gather(-1, labels[:, 1:].unsqueeze(-1)).squeeze(-1)
    return (picked * mask[:, 1:]).sum(-1)
'''),
}


VARIANTS: dict[str, dict[str, str]] = {
    # Cross-entropy instead of log_softmax + gather, and the loss through softplus instead of logsigmoid.
    "log_probs_by_cross_entropy_loss_by_softplus": {
        "get_log_prob": """
def get_log_prob(logits, labels, mask):
    vocab = logits.shape[-1]
    per_token = -F.cross_entropy(logits[:, :-1].reshape(-1, vocab), labels[:, 1:].reshape(-1), reduction="none")
    return (per_token.view(labels.shape[0], -1) * mask[:, 1:].to(per_token.dtype)).sum(dim=1)
""",
        "dpo_loss": """
def dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    margins = beta * ((chosen_logps - rejected_logps) - (ref_chosen_logps - ref_rejected_logps))
    return F.softplus(-margins).mean(), (margins > 0).float().mean(), margins.mean()
""",
    },
    # Split at the assistant header with str.partition-free slicing, ids as tensors through tokenizer.encode
    # (whose default add_special_tokens=True adds nothing for SmolLM), torch slicing for the truncation.
    "strings_by_removeprefix_ids_as_tensors": {
        "apply_chat_template": '''
def apply_chat_template(example, tokenizer):
    turn = [{"role": "user", "content": example["prompt"]}]
    prompt = tokenizer.apply_chat_template(turn, add_generation_prompt=True, tokenize=False)
    result = {"prompt": prompt}
    for name in ["chosen", "rejected"]:
        text = tokenizer.apply_chat_template(turn + [{"role": "assistant", "content": example[name]}], tokenize=False)
        assert text.startswith(prompt)
        result[name] = text.removeprefix(prompt)
    return result
''',
        "tokenize_row": '''
def tokenize_row(example, tokenizer, max_prompt_length=512, max_completion_length=None):
    prompt = torch.tensor(tokenizer.encode(example["prompt"]))
    chosen = torch.tensor(tokenizer.encode(example["chosen"]))
    rejected = torch.tensor(tokenizer.encode(example["rejected"]))
    if max_prompt_length:
        prompt = prompt[max(0, len(prompt) - max_prompt_length):]
    if max_completion_length:
        chosen, rejected = chosen[:max_completion_length], rejected[:max_completion_length]
    return {"prompt_input_ids": prompt, "chosen_input_ids": chosen, "rejected_input_ids": rejected}
''',
    },
    # Truncation by the tokenizer itself, switching its truncation side; the answer split at the header.
    "tokenizer_truncation_sides": {
        "apply_chat_template": '''
def apply_chat_template(example, tokenizer):
    header = "<|im_start|>assistant\\n"
    out = {}
    for key in ("chosen", "rejected"):
        conversation = [{"role": "user", "content": example["prompt"]}, {"role": "assistant", "content": example[key]}]
        text = tokenizer.apply_chat_template(conversation, tokenize=False)
        before, _, after = text.rpartition(header)
        out["prompt"], out[key] = before + header, after
    return out
''',
        "tokenize_row": '''
def tokenize_row(example, tokenizer, max_prompt_length=512, max_completion_length=None):
    def encode(text, limit, side):
        tokenizer.truncation_side = side
        return tokenizer(text, add_special_tokens=False, truncation=limit is not None, max_length=limit).input_ids
    return {
        "prompt_input_ids": encode(example["prompt"], max_prompt_length, "left"),
        "chosen_input_ids": encode(example["chosen"], max_completion_length, "right"),
        "rejected_input_ids": encode(example["rejected"], max_completion_length, "right"),
    }
''',
    },
    # pad_sequence with flips for the left side; boolean masks; the collate function as a lambda.
    "pad_sequence_flips_bool_masks": {
        "pad": '''
def pad(tensors, padding_value=0, padding_side="right"):
    from torch.nn.utils.rnn import pad_sequence
    if padding_side == "right":
        return pad_sequence(tensors, batch_first=True, padding_value=padding_value)
    flipped = pad_sequence([t.flip(0) for t in tensors], batch_first=True, padding_value=padding_value)
    return flipped.flip(1)
''',
        "pad_collate_fn": '''
def pad_collate_fn(batch, pad_token_id):
    sides = {"prompt": "left", "chosen": "right", "rejected": "right"}
    out = {}
    for name, side in sides.items():
        seqs = [torch.as_tensor(ex[name + "_input_ids"]) for ex in batch]
        out[name + "_input_ids"] = pad(seqs, padding_value=pad_token_id, padding_side=side)
        out[name + "_attn_mask"] = pad([torch.ones(len(s), dtype=torch.bool) for s in seqs],
                                       padding_value=False, padding_side=side)
    return out
''',
        "make_dataloader": '''
def make_dataloader(dataset, tokenizer, batch_size, shuffle=True):
    collate_fn = lambda examples: pad_collate_fn(examples, tokenizer.pad_token_id)
    return DataLoader(dataset.with_format("torch"), batch_size=batch_size, shuffle=shuffle, collate_fn=collate_fn)
''',
    },
    # Plain Python lists all the way, one tensor at the end; no call to pad at all.
    "collate_with_python_lists": {
        "pad": '''
def pad(tensors, padding_value=0, padding_side="right"):
    longest = max(t.shape[0] for t in tensors)
    rows = []
    for t in tensors:
        fill = [padding_value] * (longest - t.shape[0])
        rows.append(fill + t.tolist() if padding_side == "left" else t.tolist() + fill)
    return torch.tensor(rows, dtype=tensors[0].dtype)
''',
        "pad_collate_fn": '''
def pad_collate_fn(batch, pad_token_id):
    result = {}
    for name in ("prompt", "chosen", "rejected"):
        seqs = [list(map(int, ex[f"{name}_input_ids"])) for ex in batch]
        width = max(len(s) for s in seqs)
        if name == "prompt":
            ids = [[pad_token_id] * (width - len(s)) + s for s in seqs]
            masks = [[0] * (width - len(s)) + [1] * len(s) for s in seqs]
        else:
            ids = [s + [pad_token_id] * (width - len(s)) for s in seqs]
            masks = [[1] * len(s) + [0] * (width - len(s)) for s in seqs]
        result[f"{name}_input_ids"] = torch.tensor(ids)
        result[f"{name}_attn_mask"] = torch.tensor(masks)
    return result
''',
    },
    # Float masks (torch.ones / torch.zeros default to float32), pad_sequence's own padding_side argument.
    "float_masks_and_pad_sequence_sides": {
        "pad": '''
def pad(tensors, padding_value=0, padding_side="right"):
    return torch.nn.utils.rnn.pad_sequence(tensors, batch_first=True, padding_value=padding_value,
                                           padding_side=padding_side)
''',
        "pad_collate_fn": '''
def pad_collate_fn(batch, pad_token_id):
    out = {}
    for key, side in (("prompt", "left"), ("chosen", "right"), ("rejected", "right")):
        ids = [x[key + "_input_ids"] for x in batch]
        out[key + "_input_ids"] = pad(ids, pad_token_id, side)
        out[key + "_attn_mask"] = pad([torch.ones(len(t)) for t in ids], 0.0, side)
    return out
''',
        "concat_prompt_completion": '''
def concat_prompt_completion(prompt_input_ids, prompt_attn_mask, completion_input_ids, completion_attn_mask,
                             max_seq_len=None):
    input_ids = torch.cat([prompt_input_ids, completion_input_ids], dim=-1)
    attention_mask = torch.cat([prompt_attn_mask, completion_attn_mask], dim=-1)
    loss_mask = torch.cat([torch.zeros(prompt_attn_mask.shape), completion_attn_mask], dim=-1)
    if max_seq_len:
        input_ids = input_ids[:, :max_seq_len]
        attention_mask = attention_mask[:, :max_seq_len]
        loss_mask = loss_mask[:, :max_seq_len]
    return input_ids, attention_mask, loss_mask
''',
    },
    # softplus(-x) for the loss, -log(sigmoid(x)) would be fine too; metrics as one-element tensors with grad.
    "softplus_loss_and_log_softmax_loop": {
        "dpo_loss": '''
def dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    logits = (chosen_logps - rejected_logps) - (ref_chosen_logps - ref_rejected_logps)
    losses = F.softplus(-beta * logits)
    margins = beta * logits
    return losses.mean(), (margins > 0).float().mean(dim=0, keepdim=True), margins.mean(dim=0, keepdim=True)
''',
        "get_log_prob": '''
def get_log_prob(logits, labels, mask):
    result = []
    for row_logits, row_labels, row_mask in zip(logits, labels, mask):
        log_probs = F.log_softmax(row_logits[:-1], dim=-1)
        token_log_probs = log_probs[torch.arange(len(row_labels) - 1), row_labels[1:]]
        result.append(token_log_probs[row_mask[1:].bool()].sum())
    return torch.stack(result)
''',
    },
    # -log(sigmoid) and a logsumexp on the whole tensor.
    "log_sigmoid_by_hand_and_logsumexp": {
        "dpo_loss": '''
def dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    chosen_rewards = beta * (chosen_logps - ref_chosen_logps)
    rejected_rewards = beta * (rejected_logps - ref_rejected_logps)
    loss = torch.mean(-torch.log(torch.sigmoid(chosen_rewards - rejected_rewards)))
    return loss, torch.mean((chosen_rewards > rejected_rewards).to(torch.float32)), torch.mean(chosen_rewards - rejected_rewards)
''',
        "get_log_prob": '''
def get_log_prob(logits, labels, mask):
    shifted = logits[..., :-1, :]
    chosen_logits = shifted.gather(2, labels[..., 1:, None])[..., 0]
    token_logps = chosen_logits - shifted.logsumexp(dim=2)
    return torch.where(mask[..., 1:] == 1, token_logps, torch.zeros_like(token_logps)).sum(dim=1)
''',
    },
    # TRL style: chosen and rejected in one forward pass of 2B rows; the reference detached instead of no_grad.
    "single_forward_trl_style": {
        "concat_prompt_completion": '''
def concat_prompt_completion(prompt_input_ids, prompt_attn_mask, completion_input_ids, completion_attn_mask,
                             max_seq_len=None):
    ids = torch.cat((prompt_input_ids, completion_input_ids), 1)
    attention = torch.cat((prompt_attn_mask, completion_attn_mask), 1)
    loss_mask = torch.cat((prompt_attn_mask * 0, completion_attn_mask), 1)
    length = ids.shape[1] if max_seq_len is None else min(max_seq_len, ids.shape[1])
    return ids.narrow(1, 0, length), attention.narrow(1, 0, length), loss_mask.narrow(1, 0, length)
''',
        "dpo_batch_loss": '''
def dpo_batch_loss(model, ref_model, batch, beta, max_seq_len=None):
    width = max(batch["chosen_input_ids"].shape[1], batch["rejected_input_ids"].shape[1])
    def widen(t, value):
        return F.pad(t, (0, width - t.shape[1]), value=value)
    completions = torch.cat([widen(batch["chosen_input_ids"], 0), widen(batch["rejected_input_ids"], 0)])
    completion_mask = torch.cat([widen(batch["chosen_attn_mask"], 0), widen(batch["rejected_attn_mask"], 0)])
    prompts = batch["prompt_input_ids"].repeat(2, 1)
    prompt_mask = batch["prompt_attn_mask"].repeat(2, 1)
    ids, attention, loss_mask = concat_prompt_completion(prompts, prompt_mask, completions, completion_mask, max_seq_len)
    policy_logps = get_log_prob(sequence_logits(model, ids, attention), ids, loss_mask)
    reference_logps = get_log_prob(sequence_logits(ref_model, ids, attention), ids, loss_mask).detach()
    n = batch["prompt_input_ids"].shape[0]
    return dpo_loss(policy_logps[:n], policy_logps[n:], reference_logps[:n], reference_logps[n:], beta=beta)
''',
    },
}


# ==================================================================================================== Part 2
# Realistic answers of Part 2 (reward model, PPO with TRL, log-prob analysis), in the same format as above.
# They live in their own dictionaries so that the Part 1 catalogue and its tests stay as they are;
# `tests/test_checks_part2.py` grades them.

PART2_MUTANTS: dict[str, dict] = {
    # ------------------------------------------------------------ to_implicit_prompt_preferences
    "implicit_prompt_left_out": _mutant("to_implicit_prompt_preferences", "test_to_implicit_prompt_preferences", '''
def to_implicit_prompt_preferences(example):
    return {key: [{"role": "assistant", "content": example[key]}] for key in ("chosen", "rejected")}
'''),
    "implicit_roles_swapped": _mutant("to_implicit_prompt_preferences", "test_to_implicit_prompt_preferences", '''
def to_implicit_prompt_preferences(example):
    out = {}
    for key in ("chosen", "rejected"):
        out[key] = [{"role": "assistant", "content": example["prompt"]}, {"role": "user", "content": example[key]}]
    return out
'''),
    "implicit_keeps_prompt_key": _mutant("to_implicit_prompt_preferences", "test_to_implicit_prompt_preferences", '''
def to_implicit_prompt_preferences(example):
    user = {"role": "user", "content": example["prompt"]}
    return {
        "prompt": example["prompt"],
        "chosen": [user, {"role": "assistant", "content": example["chosen"]}],
        "rejected": [user, {"role": "assistant", "content": example["rejected"]}],
    }
'''),
    "implicit_strips_the_text": _mutant("to_implicit_prompt_preferences", "test_to_implicit_prompt_preferences", '''
def to_implicit_prompt_preferences(example):
    user = {"role": "user", "content": example["prompt"].strip()}
    return {key: [user, {"role": "assistant", "content": example[key].strip()}] for key in ("chosen", "rejected")}
'''),
    # ------------------------------------------------------------ build_reward_model
    "reward_two_labels": _mutant("build_reward_model", "test_reward_model", '''
def build_reward_model(model_id, tokenizer):
    model = AutoModelForSequenceClassification.from_pretrained(model_id, dtype=torch.float32)
    cover_tokenizer(model, tokenizer)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model
'''),
    "reward_pad_id_not_set": _mutant("build_reward_model", "test_reward_model", '''
def build_reward_model(model_id, tokenizer):
    model = AutoModelForSequenceClassification.from_pretrained(model_id, num_labels=1, dtype=torch.float32)
    return cover_tokenizer(model, tokenizer)
'''),
    "reward_pad_is_end_of_turn": _mutant("build_reward_model", "test_reward_model", '''
def build_reward_model(model_id, tokenizer):
    model = AutoModelForSequenceClassification.from_pretrained(model_id, num_labels=1, dtype=torch.float32)
    cover_tokenizer(model, tokenizer)
    model.config.pad_token_id = tokenizer.eos_token_id
    return model
'''),
    "reward_checkpoint_dtype": _mutant("build_reward_model", "test_reward_model", '''
def build_reward_model(model_id, tokenizer):
    model = AutoModelForSequenceClassification.from_pretrained(model_id, num_labels=1)
    cover_tokenizer(model, tokenizer)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model
'''),
    "reward_embeddings_not_resized": _mutant("build_reward_model", "test_reward_model", '''
def build_reward_model(model_id, tokenizer):
    model = AutoModelForSequenceClassification.from_pretrained(model_id, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model
'''),
    "reward_weights_from_config": _mutant("build_reward_model", "test_reward_model", '''
def build_reward_model(model_id, tokenizer):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_id, num_labels=1, pad_token_id=tokenizer.pad_token_id)
    model = AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)  # a fresh reward model
    return cover_tokenizer(model, tokenizer)
'''),
    "reward_backbone_frozen": _mutant("build_reward_model", "test_reward_model", '''
def build_reward_model(model_id, tokenizer):
    model = AutoModelForSequenceClassification.from_pretrained(model_id, num_labels=1, dtype=torch.float32)
    cover_tokenizer(model, tokenizer)
    model.config.pad_token_id = tokenizer.pad_token_id
    for parameter in model.base_model.parameters():  # only the new head has to learn
        parameter.requires_grad = False
    return model
'''),
    # ------------------------------------------------------------ tokenize_prompt
    "prompt_ids_as_batch_encoding": _mutant("tokenize_prompt", "test_ppo", '''
def tokenize_prompt(example, tokenizer):
    messages = [{"role": "user", "content": example["prompt"]}]
    return {"input_ids": tokenizer.apply_chat_template(messages, add_generation_prompt=True)}
'''),
    "prompt_ids_as_tensor": _mutant("tokenize_prompt", "test_ppo", '''
def tokenize_prompt(example, tokenizer):
    messages = [{"role": "user", "content": example["prompt"]}]
    encoding = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    return {"input_ids": encoding["input_ids"]}
'''),
    "prompt_without_generation_prompt": _mutant("tokenize_prompt", "test_ppo", '''
def tokenize_prompt(example, tokenizer):
    messages = [{"role": "user", "content": example["prompt"]}]
    return {"input_ids": tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]}
'''),
    # ------------------------------------------------------------ load_ppo_models
    "ppo_reference_is_the_policy": _mutant("load_ppo_models", "test_ppo", '''
def load_ppo_models(policy_id, reward_model_path, tokenizer):
    value_model = AutoModelForSequenceClassification.from_pretrained(reward_model_path, num_labels=1, dtype=torch.float32)
    reward_model = AutoModelForSequenceClassification.from_pretrained(reward_model_path, num_labels=1, dtype=torch.float32)
    reward_model.eval().requires_grad_(False)
    policy = AutoModelForCausalLM.from_pretrained(policy_id, dtype=torch.float32)
    ref_policy = policy
    for model in (value_model, reward_model, policy):
        cover_tokenizer(model, tokenizer)
    return value_model, reward_model, policy, ref_policy
'''),
    "ppo_value_model_from_the_policy": _mutant("load_ppo_models", "test_ppo", '''
def load_ppo_models(policy_id, reward_model_path, tokenizer):
    value_model = AutoModelForSequenceClassification.from_pretrained(policy_id, num_labels=1, dtype=torch.float32)
    reward_model = AutoModelForSequenceClassification.from_pretrained(reward_model_path, num_labels=1, dtype=torch.float32)
    policy = AutoModelForCausalLM.from_pretrained(policy_id, dtype=torch.float32)
    ref_policy = AutoModelForCausalLM.from_pretrained(policy_id, dtype=torch.float32)
    for model in (reward_model, ref_policy):
        model.eval().requires_grad_(False)
    for model in (value_model, reward_model, policy, ref_policy):
        cover_tokenizer(model, tokenizer)
    return value_model, reward_model, policy, ref_policy
'''),
    "ppo_nothing_frozen": _mutant("load_ppo_models", "test_ppo", '''
def load_ppo_models(policy_id, reward_model_path, tokenizer):
    value_model = AutoModelForSequenceClassification.from_pretrained(reward_model_path, num_labels=1, dtype=torch.float32)
    reward_model = AutoModelForSequenceClassification.from_pretrained(reward_model_path, num_labels=1, dtype=torch.float32)
    policy = AutoModelForCausalLM.from_pretrained(policy_id, dtype=torch.float32)
    ref_policy = AutoModelForCausalLM.from_pretrained(policy_id, dtype=torch.float32)
    for model in (value_model, reward_model, policy, ref_policy):
        cover_tokenizer(model, tokenizer)
    return value_model, reward_model, policy, ref_policy
'''),
    "ppo_models_in_checkpoint_dtype": _mutant("load_ppo_models", "test_ppo", '''
def load_ppo_models(policy_id, reward_model_path, tokenizer):
    value_model = AutoModelForSequenceClassification.from_pretrained(reward_model_path, num_labels=1)
    reward_model = AutoModelForSequenceClassification.from_pretrained(reward_model_path, num_labels=1)
    policy = AutoModelForCausalLM.from_pretrained(policy_id)
    ref_policy = AutoModelForCausalLM.from_pretrained(policy_id)
    for model in (reward_model, ref_policy):
        model.eval().requires_grad_(False)
    for model in (value_model, reward_model, policy, ref_policy):
        cover_tokenizer(model, tokenizer)
    return value_model, reward_model, policy, ref_policy
'''),
    # ------------------------------------------------------------ make_ppo_config
    "ppo_config_bf16_forced": _mutant("make_ppo_config", "test_ppo", '''
def make_ppo_config(output_dir):
    return PPOConfig(
        output_dir=str(output_dir), learning_rate=PPO_LR, per_device_train_batch_size=PPO_BATCH_SIZE,
        num_ppo_epochs=PPO_EPOCHS, total_episodes=PPO_TOTAL_EPISODES, response_length=PPO_RESPONSE_LENGTH,
        stop_token="eos", kl_coef=PPO_KL_COEF, missing_eos_penalty=PPO_MISSING_EOS_PENALTY,
        num_sample_generations=PPO_SAMPLE_GENERATIONS, save_strategy="no", report_to="none", bf16=True,
    )
'''),
    "ppo_config_values_copied": _mutant("make_ppo_config", "test_ppo", '''
def make_ppo_config(output_dir):
    return PPOConfig(
        output_dir=str(output_dir), learning_rate=1e-5, per_device_train_batch_size=16, num_ppo_epochs=4,
        total_episodes=8000, response_length=96, stop_token="eos", kl_coef=0.05, missing_eos_penalty=1.0,
        save_strategy="no", report_to="none", **trainer_precision(),
    )
'''),
    "ppo_config_without_stop_token": _mutant("make_ppo_config", "test_ppo", '''
def make_ppo_config(output_dir):
    return PPOConfig(
        output_dir=str(output_dir), learning_rate=PPO_LR, per_device_train_batch_size=PPO_BATCH_SIZE,
        num_ppo_epochs=PPO_EPOCHS, total_episodes=PPO_TOTAL_EPISODES, response_length=PPO_RESPONSE_LENGTH,
        kl_coef=PPO_KL_COEF, missing_eos_penalty=PPO_MISSING_EOS_PENALTY,
        num_sample_generations=PPO_SAMPLE_GENERATIONS, save_strategy="no", report_to="none", **trainer_precision(),
    )
'''),
    "ppo_config_precision_off_everywhere": _mutant("make_ppo_config", "test_ppo", '''
def make_ppo_config(output_dir):
    return PPOConfig(
        output_dir=str(output_dir), learning_rate=PPO_LR, per_device_train_batch_size=PPO_BATCH_SIZE,
        num_ppo_epochs=PPO_EPOCHS, total_episodes=PPO_TOTAL_EPISODES, response_length=PPO_RESPONSE_LENGTH,
        stop_token="eos", kl_coef=PPO_KL_COEF, missing_eos_penalty=PPO_MISSING_EOS_PENALTY,
        num_sample_generations=PPO_SAMPLE_GENERATIONS, save_strategy="no", report_to="none", bf16=False, fp16=False,
    )
'''),
    "ppo_config_sample_generations_left_out": _mutant("make_ppo_config", "test_ppo", '''
def make_ppo_config(output_dir):
    return PPOConfig(
        output_dir=str(output_dir), learning_rate=PPO_LR, per_device_train_batch_size=PPO_BATCH_SIZE,
        num_ppo_epochs=PPO_EPOCHS, total_episodes=PPO_TOTAL_EPISODES, response_length=PPO_RESPONSE_LENGTH,
        stop_token="eos", kl_coef=PPO_KL_COEF, missing_eos_penalty=PPO_MISSING_EOS_PENALTY,
        save_strategy="no", report_to="none", **trainer_precision(),
    )
'''),
    "ppo_config_values_of_this_run": _mutant("make_ppo_config", "test_ppo", '''
def make_ppo_config(output_dir):
    # the values the hyper-parameter cell printed in this (fast) run
    return PPOConfig(
        output_dir=str(output_dir), learning_rate=1e-4, per_device_train_batch_size=2, num_ppo_epochs=1,
        total_episodes=4, response_length=8, stop_token="eos", kl_coef=0.05, missing_eos_penalty=1.0,
        num_sample_generations=0, save_strategy="no", report_to="none", **trainer_precision(),
    )
'''),
    "ppo_config_hparams_splatted": _mutant("make_ppo_config", "test_ppo", '''
def make_ppo_config(output_dir):
    return PPOConfig(output_dir=str(output_dir), **PPO_HPARAMS, stop_token="eos",
                     num_sample_generations=PPO_SAMPLE_GENERATIONS, save_strategy="no", report_to="none",
                     **trainer_precision())
'''),
    "ppo_config_fp16_on_every_gpu": _mutant("make_ppo_config", "test_ppo", '''
def make_ppo_config(output_dir):
    return PPOConfig(
        output_dir=str(output_dir), learning_rate=PPO_LR, per_device_train_batch_size=PPO_BATCH_SIZE,
        num_ppo_epochs=PPO_EPOCHS, total_episodes=PPO_TOTAL_EPISODES, response_length=PPO_RESPONSE_LENGTH,
        stop_token="eos", kl_coef=PPO_KL_COEF, missing_eos_penalty=PPO_MISSING_EOS_PENALTY,
        num_sample_generations=PPO_SAMPLE_GENERATIONS, save_strategy="no", report_to="none",
        bf16=False, fp16=DEVICE == "cuda",  # half precision on any GPU
    )
'''),
    "ppo_config_both_flags_on_recent_gpus": _mutant("make_ppo_config", "test_ppo", '''
def make_ppo_config(output_dir):
    return PPOConfig(
        output_dir=str(output_dir), learning_rate=PPO_LR, per_device_train_batch_size=PPO_BATCH_SIZE,
        num_ppo_epochs=PPO_EPOCHS, total_episodes=PPO_TOTAL_EPISODES, response_length=PPO_RESPONSE_LENGTH,
        stop_token="eos", kl_coef=PPO_KL_COEF, missing_eos_penalty=PPO_MISSING_EOS_PENALTY,
        num_sample_generations=PPO_SAMPLE_GENERATIONS, save_strategy="no", report_to="none",
        bf16=DEVICE == "cuda" and AMP_DTYPE == torch.bfloat16, fp16=DEVICE == "cuda",
    )
'''),
    # ------------------------------------------------------------ build_ppo_trainer
    "ppo_trainer_policy_and_reference_swapped": _mutant("build_ppo_trainer", "test_ppo", '''
def build_ppo_trainer(args, tokenizer, value_model, reward_model, policy, ref_policy, train_dataset, eval_dataset):
    return PPOTrainer(args=args, processing_class=tokenizer, model=ref_policy, ref_model=policy,
                      reward_model=reward_model, value_model=value_model, train_dataset=train_dataset,
                      eval_dataset=eval_dataset)
'''),
    "ppo_trainer_reward_and_value_swapped": _mutant("build_ppo_trainer", "test_ppo", '''
def build_ppo_trainer(args, tokenizer, value_model, reward_model, policy, ref_policy, train_dataset, eval_dataset):
    return PPOTrainer(args=args, processing_class=tokenizer, model=policy, ref_model=ref_policy,
                      reward_model=value_model, value_model=reward_model, train_dataset=train_dataset,
                      eval_dataset=eval_dataset)
'''),
    "ppo_trainer_arguments_in_our_order": _mutant("build_ppo_trainer", "test_ppo", '''
def build_ppo_trainer(args, tokenizer, value_model, reward_model, policy, ref_policy, train_dataset, eval_dataset):
    return PPOTrainer(args, tokenizer, value_model, reward_model, policy, ref_policy, train_dataset, eval_dataset)
'''),
    "ppo_trainer_evaluates_on_training_prompts": _mutant("build_ppo_trainer", "test_ppo", '''
def build_ppo_trainer(args, tokenizer, value_model, reward_model, policy, ref_policy, train_dataset, eval_dataset):
    return PPOTrainer(args=args, processing_class=tokenizer, model=policy, ref_model=ref_policy,
                      reward_model=reward_model, value_model=value_model, train_dataset=train_dataset,
                      eval_dataset=train_dataset)
'''),
    "ppo_trainer_pads_prompts_on_the_right": _mutant("build_ppo_trainer", "test_ppo", '''
def build_ppo_trainer(args, tokenizer, value_model, reward_model, policy, ref_policy, train_dataset, eval_dataset):
    tokenizer.padding_side = "right"  # pad like the reward model does
    return PPOTrainer(args=args, processing_class=tokenizer, model=policy, ref_model=ref_policy,
                      reward_model=reward_model, value_model=value_model, train_dataset=train_dataset,
                      eval_dataset=eval_dataset)
'''),
    "ppo_trainer_sets_the_learning_rate": _mutant("build_ppo_trainer", "test_ppo", '''
def build_ppo_trainer(args, tokenizer, value_model, reward_model, policy, ref_policy, train_dataset, eval_dataset):
    args.learning_rate = PPO_LR  # make sure the trainer uses our constant
    return PPOTrainer(args=args, processing_class=tokenizer, model=policy, ref_model=ref_policy,
                      reward_model=reward_model, value_model=value_model, train_dataset=train_dataset,
                      eval_dataset=eval_dataset)
'''),
    # ------------------------------------------------------------ sequence_log_probs
    "logprob_mean_not_normalised": _mutant("sequence_log_probs", "test_logprob_analysis", '''
@torch.no_grad()
def sequence_log_probs(model, tokenizer, texts, batch_size=8, max_length=128):
    totals, counts = [], []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start: start + batch_size], return_tensors="pt", padding=True, padding_side="right",
                          truncation=True, max_length=max_length, add_special_tokens=False).to(model.device)
        logits = model(**batch).logits.float()
        totals.append(get_log_prob(logits, batch["input_ids"], batch["attention_mask"]).cpu())
        counts.append(batch["attention_mask"][:, 1:].sum(-1).cpu())
    total = torch.cat(totals).double().numpy()
    return {"total": total, "mean": total, "num_tokens": torch.cat(counts).double().numpy()}
'''),
    "logprob_counts_the_first_token": _mutant("sequence_log_probs", "test_logprob_analysis", '''
@torch.no_grad()
def sequence_log_probs(model, tokenizer, texts, batch_size=8, max_length=128):
    totals, counts = [], []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start: start + batch_size], return_tensors="pt", padding=True, padding_side="right",
                          truncation=True, max_length=max_length, add_special_tokens=False).to(model.device)
        logits = model(**batch).logits.float()
        totals.append(get_log_prob(logits, batch["input_ids"], batch["attention_mask"]).cpu())
        counts.append(batch["attention_mask"].sum(-1).cpu())
    total, num_tokens = torch.cat(totals).double().numpy(), torch.cat(counts).double().numpy()
    return {"total": total, "mean": total / num_tokens, "num_tokens": num_tokens}
'''),
    "logprob_padding_scored": _mutant("sequence_log_probs", "test_logprob_analysis", '''
@torch.no_grad()
def sequence_log_probs(model, tokenizer, texts, batch_size=8, max_length=128):
    totals, counts = [], []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start: start + batch_size], return_tensors="pt", padding=True, padding_side="right",
                          truncation=True, max_length=max_length, add_special_tokens=False).to(model.device)
        logits = model(**batch).logits.float()
        totals.append(get_log_prob(logits, batch["input_ids"], torch.ones_like(batch["input_ids"])).cpu())
        counts.append(batch["attention_mask"][:, 1:].sum(-1).cpu())
    total, num_tokens = torch.cat(totals).double().numpy(), torch.cat(counts).double().numpy()
    return {"total": total, "mean": total / np.maximum(num_tokens, 1), "num_tokens": num_tokens}
'''),
    "logprob_no_truncation": _mutant("sequence_log_probs", "test_logprob_analysis", '''
@torch.no_grad()
def sequence_log_probs(model, tokenizer, texts, batch_size=8, max_length=128):
    totals, counts = [], []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start: start + batch_size], return_tensors="pt", padding=True, padding_side="right",
                          add_special_tokens=False).to(model.device)
        logits = model(**batch).logits.float()
        totals.append(get_log_prob(logits, batch["input_ids"], batch["attention_mask"]).cpu())
        counts.append(batch["attention_mask"][:, 1:].sum(-1).cpu())
    total, num_tokens = torch.cat(totals).double().numpy(), torch.cat(counts).double().numpy()
    return {"total": total, "mean": total / np.maximum(num_tokens, 1), "num_tokens": num_tokens}
'''),
    "logprob_sorted_by_length": _mutant("sequence_log_probs", "test_logprob_analysis", '''
@torch.no_grad()
def sequence_log_probs(model, tokenizer, texts, batch_size=8, max_length=128):
    texts = sorted(texts, key=len)  # similar lengths in a batch waste less padding
    totals, counts = [], []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start: start + batch_size], return_tensors="pt", padding=True, padding_side="right",
                          truncation=True, max_length=max_length, add_special_tokens=False).to(model.device)
        logits = model(**batch).logits.float()
        totals.append(get_log_prob(logits, batch["input_ids"], batch["attention_mask"]).cpu())
        counts.append(batch["attention_mask"][:, 1:].sum(-1).cpu())
    total, num_tokens = torch.cat(totals).double().numpy(), torch.cat(counts).double().numpy()
    return {"total": total, "mean": total / np.maximum(num_tokens, 1), "num_tokens": num_tokens}
'''),
}


PART2_VARIANTS: dict[str, dict[str, str]] = {
    # Messages built with dict(...) in a loop; the reward model cast with .float() after loading, the embeddings
    # grown by hand and the pad id looked up from the pad token's string.
    "messages_loop_and_float_cast": {
        "to_implicit_prompt_preferences": '''
def to_implicit_prompt_preferences(example):
    pair = {}
    for answer in ["chosen", "rejected"]:
        pair[answer] = [dict(role="user", content=example["prompt"]), dict(role="assistant", content=example[answer])]
    return pair
''',
        "build_reward_model": '''
def build_reward_model(model_id, tokenizer):
    model = AutoModelForSequenceClassification.from_pretrained(model_id, num_labels=1).float()
    if model.get_input_embeddings().weight.shape[0] < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.convert_tokens_to_ids(tokenizer.pad_token)
    return model
''',
    },
    # The prompt rendered to text and tokenized by the tokenizer; copies of loaded models for the frozen ones; the
    # precision flags spelled out; the trainer built with keywords in another order.
    "rendered_text_and_deepcopies": {
        "tokenize_prompt": '''
def tokenize_prompt(example, tokenizer):
    text = tokenizer.apply_chat_template([{"role": "user", "content": example["prompt"]}], tokenize=False,
                                         add_generation_prompt=True)
    return {"input_ids": tokenizer(text, add_special_tokens=False)["input_ids"]}
''',
        "load_ppo_models": '''
def load_ppo_models(policy_id, reward_model_path, tokenizer):
    import copy
    value_model = cover_tokenizer(AutoModelForSequenceClassification.from_pretrained(reward_model_path, dtype=torch.float32), tokenizer)
    reward_model = copy.deepcopy(value_model).eval().requires_grad_(False)
    policy = cover_tokenizer(AutoModelForCausalLM.from_pretrained(policy_id, dtype=torch.float32), tokenizer)
    ref_policy = copy.deepcopy(policy).eval().requires_grad_(False)
    return value_model, reward_model, policy, ref_policy
''',
        "make_ppo_config": '''
def make_ppo_config(output_dir):
    settings = dict(learning_rate=PPO_LR, per_device_train_batch_size=PPO_BATCH_SIZE, num_ppo_epochs=PPO_EPOCHS,
                    total_episodes=PPO_TOTAL_EPISODES, response_length=PPO_RESPONSE_LENGTH, kl_coef=PPO_KL_COEF,
                    missing_eos_penalty=PPO_MISSING_EOS_PENALTY, num_sample_generations=PPO_SAMPLE_GENERATIONS)
    return PPOConfig(output_dir=output_dir, stop_token="eos", save_strategy="no", report_to="none",
                     bf16=DEVICE == "cuda" and AMP_DTYPE == torch.bfloat16,
                     fp16=DEVICE == "cuda" and AMP_DTYPE == torch.float16, **settings)
''',
        "build_ppo_trainer": '''
def build_ppo_trainer(args, tokenizer, value_model, reward_model, policy, ref_policy, train_dataset, eval_dataset):
    return PPOTrainer(value_model=value_model, reward_model=reward_model, ref_model=ref_policy, model=policy,
                      processing_class=tokenizer, args=args, eval_dataset=eval_dataset, train_dataset=train_dataset)
''',
    },
    # return_dict=False for a plain list; TRL's own copy of the policy as the reference (ref_model=None); the
    # log-probs of one unpadded text at a time, as Python lists.
    "plain_lists_and_one_text_at_a_time": {
        "tokenize_prompt": '''
def tokenize_prompt(example, tokenizer):
    ids = tokenizer.apply_chat_template([{"role": "user", "content": example["prompt"]}], add_generation_prompt=True,
                                        return_dict=False)
    return {"input_ids": [int(i) for i in ids]}
''',
        "build_ppo_trainer": '''
def build_ppo_trainer(args, tokenizer, value_model, reward_model, policy, ref_policy, train_dataset, eval_dataset):
    return PPOTrainer(args=args, processing_class=tokenizer, model=policy, ref_model=None, reward_model=reward_model,
                      value_model=value_model, train_dataset=train_dataset, eval_dataset=eval_dataset)
''',
        "sequence_log_probs": '''
def sequence_log_probs(model, tokenizer, texts, batch_size=8, max_length=128):
    totals, counts = [], []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_length]
        if len(ids) < 2:
            totals.append(0.0)
            counts.append(0)
            continue
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids], device=model.device)).logits[0]
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        totals.append(sum(log_probs[t - 1, ids[t]].item() for t in range(1, len(ids))))
        counts.append(len(ids) - 1)
    return {"total": totals, "mean": [t / c if c else 0.0 for t, c in zip(totals, counts)], "num_tokens": counts}
''',
    },
    # Batches padded by hand with pad_sequence, an own gather instead of get_log_prob, torch tensors out, and
    # torch.inference_mode() as the decorator.
    "pad_sequence_and_own_gather": {
        "sequence_log_probs": '''
@torch.inference_mode()
def sequence_log_probs(model, tokenizer, texts, batch_size=8, max_length=128):
    from torch.nn.utils.rnn import pad_sequence
    encoded = [torch.tensor(tokenizer.encode(t, add_special_tokens=False)[:max_length]) for t in texts]
    total, count = [], []
    for i in range(0, len(encoded), batch_size):
        chunk = encoded[i:i + batch_size]
        ids = pad_sequence(chunk, batch_first=True, padding_value=tokenizer.pad_token_id).to(model.device)
        mask = pad_sequence([torch.ones_like(c) for c in chunk], batch_first=True).to(model.device)
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
        token_log_probs = logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        scored = mask[:, 1:]
        total.append((token_log_probs * scored).sum(-1).cpu())
        count.append(scored.sum(-1).cpu())
    total, count = torch.cat(total), torch.cat(count)
    return {"total": total, "mean": total / count.clamp(min=1), "num_tokens": count}
''',
    },
    # The reward model's config built first (num_labels in it); the four PPO models from one helper,
    # frozen parameter by parameter; the batch as gradient accumulation of single episodes; precision flags from an
    # if/else; the reference policy as a deep copy of the policy, made before training.
    "configs_first_and_copied_reference": {
        "build_reward_model": '''
def build_reward_model(model_id, tokenizer):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_id, num_labels=1)
    model = AutoModelForSequenceClassification.from_pretrained(model_id, config=config, dtype=torch.float32)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id  # after resizing: a new [PAD] needs its row first
    return model
''',
        "load_ppo_models": '''
def load_ppo_models(policy_id, reward_model_path, tokenizer):
    def load(auto_class, path, trainable):
        model = cover_tokenizer(auto_class.from_pretrained(path, dtype=torch.float32), tokenizer)
        if not trainable:
            model.eval()
            for parameter in model.parameters():
                parameter.requires_grad = False
        return model

    return (load(AutoModelForSequenceClassification, reward_model_path, True),
            load(AutoModelForSequenceClassification, reward_model_path, False),
            load(AutoModelForCausalLM, policy_id, True), load(AutoModelForCausalLM, policy_id, False))
''',
        "make_ppo_config": '''
def make_ppo_config(output_dir):
    if DEVICE == "cuda" and AMP_DTYPE == torch.bfloat16:
        flags = {"bf16": True, "fp16": False}
    elif DEVICE == "cuda" and AMP_DTYPE == torch.float16:
        flags = {"bf16": False, "fp16": True}
    else:
        flags = {"bf16": False, "fp16": False}
    return PPOConfig(output_dir=str(output_dir), learning_rate=PPO_LR, per_device_train_batch_size=1,
                     gradient_accumulation_steps=PPO_BATCH_SIZE, num_ppo_epochs=PPO_EPOCHS,
                     total_episodes=PPO_TOTAL_EPISODES, response_length=PPO_RESPONSE_LENGTH, stop_token="eos",
                     kl_coef=PPO_KL_COEF, missing_eos_penalty=PPO_MISSING_EOS_PENALTY,
                     num_sample_generations=PPO_SAMPLE_GENERATIONS, save_strategy="no",
                     report_to=["wandb"] if ENABLE_WANDB else [], **flags)
''',
        "build_ppo_trainer": '''
def build_ppo_trainer(args, tokenizer, value_model, reward_model, policy, ref_policy, train_dataset, eval_dataset):
    import copy

    frozen_copy = copy.deepcopy(policy).eval()  # the policy as it is before PPO moves it
    return PPOTrainer(args=args, processing_class=tokenizer, model=policy, ref_model=frozen_copy,
                      reward_model=reward_model, value_model=value_model, train_dataset=train_dataset,
                      eval_dataset=eval_dataset)
''',
    },
    # The prompt encoded from its rendered text with tokenizer.encode; the configuration's arguments gathered in a
    # dict (trainer_precision merged in, a Path as output_dir) and the trainer's in another.
    "keyword_dicts_and_encode": {
        "tokenize_prompt": '''
def tokenize_prompt(example, tokenizer):
    text = tokenizer.apply_chat_template([{"role": "user", "content": example["prompt"]}], tokenize=False,
                                         add_generation_prompt=True)
    return {"input_ids": tokenizer.encode(text, add_special_tokens=False)}
''',
        "make_ppo_config": '''
def make_ppo_config(output_dir):
    kwargs = {"output_dir": output_dir, "learning_rate": PPO_LR, "per_device_train_batch_size": PPO_BATCH_SIZE,
              "num_ppo_epochs": PPO_EPOCHS, "total_episodes": PPO_TOTAL_EPISODES,
              "response_length": PPO_RESPONSE_LENGTH, "kl_coef": PPO_KL_COEF,
              "missing_eos_penalty": PPO_MISSING_EOS_PENALTY, "num_sample_generations": PPO_SAMPLE_GENERATIONS,
              "stop_token": "eos", "save_strategy": "no", "report_to": "none"}
    kwargs.update(trainer_precision())
    return PPOConfig(**kwargs)
''',
        "build_ppo_trainer": '''
def build_ppo_trainer(args, tokenizer, value_model, reward_model, policy, ref_policy, train_dataset, eval_dataset):
    models = {"model": policy, "ref_model": ref_policy, "reward_model": reward_model, "value_model": value_model}
    data = {"train_dataset": train_dataset, "eval_dataset": eval_dataset}
    return PPOTrainer(args=args, processing_class=tokenizer, **models, **data)
''',
    },
}


# ==================================================================================================== Starred
# Realistic answers of the starred tasks (f-DPO, win rate and diversity), in the same format as above;
# `tests/test_starred.py` grades them.

_F_DPO_HEAD = '''
def f_dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1, divergence="reverse_kl",
               alpha=0.5, loss_type="sigmoid"):
    if divergence not in F_DIVERGENCES or loss_type not in F_DPO_LOSS_TYPES:
        raise ValueError(f"unknown divergence {divergence!r} or loss_type {loss_type!r}")
    t_w, t_l = chosen_logps - ref_chosen_logps, rejected_logps - ref_rejected_logps
'''


def _f_dpo_mutant(body: str) -> dict:
    """A mutant of f_dpo_loss: the shared head (checks, log-ratios) plus its own body."""
    return _mutant("f_dpo_loss", "test_f_dpo_loss", _F_DPO_HEAD.strip("\n") + "\n" + body.strip("\n"))


_F_PRIME_RIGHT = '''
    def f_prime(t):
        if divergence == "reverse_kl":
            return t
        if divergence == "forward_kl":
            return -torch.exp(torch.clamp(-t, max=F_DPO_MAX_EXPONENT))
        if divergence == "js":
            return F.logsigmoid(t)
        return (1 - torch.exp(torch.clamp(-alpha * t, max=F_DPO_MAX_EXPONENT))) / alpha
'''
_F_DPO_TAIL_RIGHT = '''
    chosen_rewards, rejected_rewards = beta * f_prime(t_w), beta * f_prime(t_l)
    margins = chosen_rewards - rejected_rewards
    h = f_prime(t_w) - f_prime(t_l)
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(margins)
    elif loss_type == "hinge":
        losses = torch.relu(1 - margins)
    else:
        losses = (h - 1 / (2 * beta)) ** 2
    return losses.mean(), (chosen_rewards > rejected_rewards).float().mean(), margins.mean().detach()
'''

STARRED_MUTANTS: dict[str, dict] = {
    # ------------------------------------------------------------ f_dpo_loss
    "fdpo_ratio_computed_with_exp": _f_dpo_mutant('''
    def f_prime(t):
        u = torch.exp(t)
        if divergence == "reverse_kl":
            return torch.log(u)
        if divergence == "forward_kl":
            return -1 / u
        if divergence == "js":
            return torch.log(2 * u / (1 + u))
        return (1 - u ** -alpha) / alpha
''' + _F_DPO_TAIL_RIGHT),
    "fdpo_exp_without_cap": _f_dpo_mutant('''
    def f_prime(t):
        if divergence == "reverse_kl":
            return t
        if divergence == "forward_kl":
            return -torch.exp(-t)
        if divergence == "js":
            return F.logsigmoid(t)
        return -torch.expm1(-alpha * t) / alpha
''' + _F_DPO_TAIL_RIGHT),
    "fdpo_forward_kl_sign": _f_dpo_mutant('''
    def f_prime(t):
        if divergence == "reverse_kl":
            return t
        if divergence == "forward_kl":
            return torch.exp(torch.clamp(-t, max=F_DPO_MAX_EXPONENT))  # 1/u
        if divergence == "js":
            return F.logsigmoid(t)
        return (1 - torch.exp(torch.clamp(-alpha * t, max=F_DPO_MAX_EXPONENT))) / alpha
''' + _F_DPO_TAIL_RIGHT),
    "fdpo_js_softplus_sign": _f_dpo_mutant('''
    def f_prime(t):
        if divergence == "reverse_kl":
            return t
        if divergence == "forward_kl":
            return -torch.exp(torch.clamp(-t, max=F_DPO_MAX_EXPONENT))
        if divergence == "js":
            return math.log(2) + t - F.softplus(-t)  # log 2u - log(1 + u), with the wrong softplus
        return (1 - torch.exp(torch.clamp(-alpha * t, max=F_DPO_MAX_EXPONENT))) / alpha
''' + _F_DPO_TAIL_RIGHT),
    "fdpo_alpha_not_divided": _f_dpo_mutant('''
    def f_prime(t):
        if divergence == "reverse_kl":
            return t
        if divergence == "forward_kl":
            return -torch.exp(torch.clamp(-t, max=F_DPO_MAX_EXPONENT))
        if divergence == "js":
            return F.logsigmoid(t)
        return 1 - torch.exp(torch.clamp(-alpha * t, max=F_DPO_MAX_EXPONENT))
''' + _F_DPO_TAIL_RIGHT),
    "fdpo_ipo_target_one_over_beta": _f_dpo_mutant(_F_PRIME_RIGHT + _F_DPO_TAIL_RIGHT.replace(
        "(h - 1 / (2 * beta)) ** 2", "(h - 1 / beta) ** 2")),
    "fdpo_ipo_on_the_scaled_margin": _f_dpo_mutant(_F_PRIME_RIGHT + _F_DPO_TAIL_RIGHT.replace(
        "(h - 1 / (2 * beta)) ** 2", "(margins - 1 / (2 * beta)) ** 2")),
    "fdpo_hinge_without_beta": _f_dpo_mutant(_F_PRIME_RIGHT + _F_DPO_TAIL_RIGHT.replace(
        "torch.relu(1 - margins)", "torch.relu(1 - h)")),
    "fdpo_ties_count_as_right": _f_dpo_mutant(_F_PRIME_RIGHT + _F_DPO_TAIL_RIGHT.replace(
        "(chosen_rewards > rejected_rewards)", "(chosen_rewards >= rejected_rewards)")),
    # Right values, wrong gradients: the overflow guarded with torch.where, whose dropped branch still computes
    # exp(1e4) = inf and back-propagates 0 * inf = nan.
    "fdpo_where_guard_nan_gradient": _f_dpo_mutant('''
    def f_prime(t):
        if divergence == "reverse_kl":
            return t
        if divergence == "forward_kl":
            return torch.where(-t > F_DPO_MAX_EXPONENT, -math.exp(F_DPO_MAX_EXPONENT), -torch.exp(-t))
        if divergence == "js":
            return F.logsigmoid(t)
        capped = (1 - math.exp(F_DPO_MAX_EXPONENT)) / alpha
        return torch.where(-alpha * t > F_DPO_MAX_EXPONENT, capped, -torch.expm1(-alpha * t) / alpha)
''' + _F_DPO_TAIL_RIGHT),
    # Right values, no gradient: the margins detached for the statistics, then used for the loss as well.
    "fdpo_margins_detached_before_the_loss": _f_dpo_mutant(_F_PRIME_RIGHT + '''
    chosen_rewards, rejected_rewards = beta * f_prime(t_w), beta * f_prime(t_l)
    margins = (chosen_rewards - rejected_rewards).detach()  # a statistic: no gradient needed
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(margins)
    elif loss_type == "hinge":
        losses = torch.relu(1 - margins)
    else:
        losses = (margins / beta - 1 / (2 * beta)) ** 2
    return losses.mean(), (chosen_rewards > rejected_rewards).float().mean(), margins.mean()
'''),
    # ------------------------------------------------------------ win_rate
    "win_rate_ties_count_as_losses": _mutant("win_rate", "test_win_rate_diversity", '''
def win_rate(prompts, answers, baseline_answers, judge):
    scores, baseline_scores = judge(prompts, answers), judge(prompts, baseline_answers)
    return sum(float(s > b) for s, b in zip(scores, baseline_scores)) / len(prompts)
'''),
    "win_rate_compares_mean_scores": _mutant("win_rate", "test_win_rate_diversity", '''
def win_rate(prompts, answers, baseline_answers, judge):
    mean, baseline_mean = np.mean(judge(prompts, answers)), np.mean(judge(prompts, baseline_answers))
    return 1.0 if mean > baseline_mean else 0.5 if mean == baseline_mean else 0.0
'''),
    "win_rate_of_the_baseline": _mutant("win_rate", "test_win_rate_diversity", '''
def win_rate(prompts, answers, baseline_answers, judge):
    scores, baseline_scores = np.asarray(judge(prompts, answers)), np.asarray(judge(prompts, baseline_answers))
    return float(np.mean((baseline_scores > scores) + 0.5 * (baseline_scores == scores)))
'''),
    "win_rate_ties_count_as_wins": _mutant("win_rate", "test_win_rate_diversity", '''
def win_rate(prompts, answers, baseline_answers, judge):
    scores, baseline_scores = judge(prompts, answers), judge(prompts, baseline_answers)
    return sum(float(s >= b) for s, b in zip(scores, baseline_scores)) / len(prompts)
'''),
    "win_rate_ties_within_tolerance": _mutant("win_rate", "test_win_rate_diversity", '''
def win_rate(prompts, answers, baseline_answers, judge):
    scores = np.asarray(judge(prompts, answers), dtype=np.float64)
    baseline_scores = np.asarray(judge(prompts, baseline_answers), dtype=np.float64)
    ties = np.isclose(scores, baseline_scores)  # float scores: compare with a tolerance
    return float(np.mean(np.where(ties, 0.5, (scores > baseline_scores).astype(float))))
'''),
    # ------------------------------------------------------------ distinct_n
    "distinct_n_mean_over_answers": _mutant("distinct_n", "test_win_rate_diversity", '''
def distinct_n(texts, n):
    ratios = []
    for text in texts:
        words = text.split()
        ngrams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
        if ngrams:
            ratios.append(len(set(ngrams)) / len(ngrams))
    return sum(ratios) / len(ratios) if ratios else 0.0
'''),
    "distinct_n_across_answers": _mutant("distinct_n", "test_win_rate_diversity", '''
def distinct_n(texts, n):
    words = " ".join(texts).split()
    ngrams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return len(set(ngrams)) / len(ngrams) if ngrams else 0.0
'''),
    "distinct_n_of_characters": _mutant("distinct_n", "test_win_rate_diversity", '''
def distinct_n(texts, n):
    ngrams = [gram for text in texts for gram in zip(*[text[i:] for i in range(n)])]
    return len(set(ngrams)) / len(ngrams) if ngrams else 0.0
'''),
    # ------------------------------------------------------------ mean_token_entropy
    "entropy_log_of_probabilities": _mutant("mean_token_entropy", "test_win_rate_diversity", '''
def mean_token_entropy(logits, mask):
    probs = torch.softmax(logits.float(), dim=-1)
    entropies = -(probs * probs.log()).sum(-1)
    return float(entropies[mask.bool()].mean())
'''),
    "entropy_over_padding_too": _mutant("mean_token_entropy", "test_win_rate_diversity", '''
def mean_token_entropy(logits, mask):
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    return float(-(log_probs.exp() * log_probs).sum(-1).mean())
'''),
    "entropy_mean_of_answer_means": _mutant("mean_token_entropy", "test_win_rate_diversity", '''
def mean_token_entropy(logits, mask):
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    entropies = -(log_probs.exp() * log_probs).sum(-1)
    mask = mask.float()
    per_answer = (entropies * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    return float(per_answer[mask.sum(-1) > 0].mean())
'''),
    "entropy_masked_but_mean_over_padding": _mutant("mean_token_entropy", "test_win_rate_diversity", '''
def mean_token_entropy(logits, mask):
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    entropies = -(log_probs.exp() * log_probs).sum(-1)
    return float((entropies * mask).mean())
'''),
    "entropy_indexed_by_integer_mask": _mutant("mean_token_entropy", "test_win_rate_diversity", '''
def mean_token_entropy(logits, mask):
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    entropies = -(log_probs.exp() * log_probs).sum(-1)
    return entropies[mask].mean().item()
'''),
}


STARRED_VARIANTS: dict[str, dict[str, str]] = {
    # f' from a dict of lambdas with softplus and torch.where, the losses as softplus / clamp / pow; the win
    # rate in a Python loop; distinct-n with a Counter; the entropy from torch.distributions.
    "dict_of_lambdas_and_distributions": {
        "f_dpo_loss": '''
def f_dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1, divergence="reverse_kl",
               alpha=0.5, loss_type="sigmoid"):
    cap = F_DPO_MAX_EXPONENT
    links = {
        "reverse_kl": lambda t: t,
        "forward_kl": lambda t: -torch.exp(torch.minimum(-t, torch.full_like(t, cap))),
        "js": lambda t: math.log(2.0) + t - F.softplus(t),
        "alpha": lambda t: (1.0 - torch.exp(torch.minimum(-alpha * t, torch.full_like(t, cap)))) / alpha,
    }
    losses = {
        "sigmoid": lambda h: F.softplus(-beta * h),
        "hinge": lambda h: torch.clamp(1.0 - beta * h, min=0.0),
        "ipo": lambda h: (h - 0.5 / beta).pow(2),
    }
    if divergence not in links:
        raise ValueError(f"unknown divergence {divergence}")
    if loss_type not in losses:
        raise ValueError(f"unknown loss_type {loss_type}")
    f_chosen = links[divergence](chosen_logps - ref_chosen_logps)
    f_rejected = links[divergence](rejected_logps - ref_rejected_logps)
    h = f_chosen - f_rejected
    accuracy = torch.where(beta * f_chosen > beta * f_rejected, 1.0, 0.0).mean()
    return losses[loss_type](h).mean(), accuracy, (beta * h).mean()
''',
        "win_rate": '''
def win_rate(prompts, answers, baseline_answers, judge):
    points = 0.0
    for mine, theirs in zip(judge(prompts, answers), judge(prompts, baseline_answers)):
        if mine > theirs:
            points += 1
        elif mine == theirs:
            points += 0.5
    return points / len(prompts)
''',
        "distinct_n": '''
def distinct_n(texts, n):
    from collections import Counter
    counts = Counter()
    for text in texts:
        tokens = text.split()
        counts.update(zip(*(tokens[i:] for i in range(n))))
    total = sum(counts.values())
    return len(counts) / total if total else 0.0
''',
        "mean_token_entropy": '''
def mean_token_entropy(logits, mask):
    entropy = torch.distributions.Categorical(logits=logits).entropy()
    return (entropy * mask).sum().item() / mask.sum().item()
''',
    },
    # f' written with torch.where branches on the divergence name, IPO through the margin divided by beta; the win
    # rate with numpy signs; distinct-n with a set and a counter; the entropy as logsumexp minus the expected logit.
    "signs_and_logsumexp": {
        "f_dpo_loss": '''
def f_dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1, divergence="reverse_kl",
               alpha=0.5, loss_type="sigmoid"):
    def link(log_ratio):
        if divergence == "reverse_kl":
            return log_ratio
        if divergence == "forward_kl":
            return -(-log_ratio).clamp(max=F_DPO_MAX_EXPONENT).exp()
        if divergence == "js":
            return -F.softplus(-log_ratio)
        if divergence == "alpha":
            return -torch.expm1((-alpha * log_ratio).clamp(max=F_DPO_MAX_EXPONENT)) / alpha
        raise ValueError(divergence)

    r_chosen = beta * link(chosen_logps - ref_chosen_logps)
    r_rejected = beta * link(rejected_logps - ref_rejected_logps)
    margin = r_chosen - r_rejected
    if loss_type == "sigmoid":
        loss = F.softplus(-margin).mean()
    elif loss_type == "hinge":
        loss = (1 - margin).clamp(min=0).mean()
    elif loss_type == "ipo":
        loss = ((margin / beta - 1 / (2 * beta)) ** 2).mean()
    else:
        raise ValueError(loss_type)
    return loss, (margin > 0).float().mean(), margin.mean()
''',
        "win_rate": '''
def win_rate(prompts, answers, baseline_answers, judge):
    scores = np.array(judge(prompts, answers), dtype=float)
    difference = scores - np.array(judge(prompts, baseline_answers), dtype=float)
    return float(np.mean((np.sign(difference) + 1) / 2))
''',
        "distinct_n": '''
def distinct_n(texts, n):
    different, total = set(), 0
    for text in texts:
        words = text.split()
        for i in range(len(words) - n + 1):
            different.add(tuple(words[i:i + n]))
            total += 1
    return len(different) / total if total > 0 else 0.0
''',
        "mean_token_entropy": '''
def mean_token_entropy(logits, mask):
    logits = logits.double()
    entropies = torch.logsumexp(logits, -1) - (torch.softmax(logits, -1) * logits).sum(-1)
    keep = mask.bool()
    return entropies[keep].mean().item()
''',
    },
    # The log-ratio clamped instead of the exponent, softplus written out with abs and relu, the hinge with
    # torch.where; the win rate with statistics.fmean of signs; distinct-n with a set of zipped words; the entropy
    # from torch.special.entr.
    "clamped_log_ratios_and_entr": {
        "f_dpo_loss": '''
def f_dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1, divergence="reverse_kl",
               alpha=0.5, loss_type="sigmoid"):
    if divergence not in F_DIVERGENCES or loss_type not in F_DPO_LOSS_TYPES:
        raise ValueError(f"divergence must be in {F_DIVERGENCES} and loss_type in {F_DPO_LOSS_TYPES}")
    log_ratios = torch.stack([chosen_logps - ref_chosen_logps, rejected_logps - ref_rejected_logps])
    if divergence == "reverse_kl":
        f = log_ratios
    elif divergence == "forward_kl":
        f = -torch.exp(-torch.clamp(log_ratios, min=-F_DPO_MAX_EXPONENT))
    elif divergence == "js":
        f = -F.softplus(-log_ratios)
    else:
        f = -torch.expm1(-alpha * torch.clamp(log_ratios, min=-F_DPO_MAX_EXPONENT / alpha)) / alpha
    h = f[0] - f[1]
    z = beta * h
    if loss_type == "sigmoid":
        per_pair = torch.log1p(torch.exp(-z.abs())) + torch.relu(-z)
    elif loss_type == "hinge":
        per_pair = torch.where(z < 1, 1 - z, torch.zeros_like(z))
    else:
        per_pair = torch.square(h - 0.5 / beta)
    return per_pair.mean(), (z > 0).float().mean(), z.mean().detach()
''',
        "win_rate": '''
def win_rate(prompts, answers, baseline_answers, judge):
    import statistics

    pairs = zip(judge(prompts, answers), judge(prompts, baseline_answers))
    return statistics.fmean(0.5 * (1.0 + float(a > b) - float(a < b)) for a, b in pairs)
''',
        "distinct_n": '''
def distinct_n(texts, n):
    grams = [gram for text in texts for gram in zip(*(text.split()[i:] for i in range(n)))]
    return len(set(grams)) / len(grams) if grams else 0.0
''',
        "mean_token_entropy": '''
def mean_token_entropy(logits, mask):
    entropies = torch.special.entr(torch.softmax(logits.double(), dim=-1)).sum(-1)
    return float(entropies.masked_select(mask.bool()).mean())
''',
    },
}


# ==================================================================================================== LoRA DPO
# Realistic answers of the starred LoRA task, in the same format as above; `tests/test_starred_lora.py` grades them.

_LORA_CONFIG = '''
def add_lora_adapters(model, r, alpha, target_modules):
    config = LoraConfig(task_type="CAUSAL_LM", r=r, lora_alpha=alpha, target_modules=list(target_modules),
                        lora_dropout=0.0)
    return get_peft_model(model, config)
'''

LORA_MUTANTS: dict[str, dict] = {
    # ------------------------------------------------------------ add_lora_adapters
    "lora_base_not_frozen": _mutant("add_lora_adapters", "test_lora_dpo", '''
def add_lora_adapters(model, r, alpha, target_modules):
    config = LoraConfig(task_type="CAUSAL_LM", r=r, lora_alpha=alpha, target_modules=list(target_modules),
                        lora_dropout=0.0)
    peft_model = get_peft_model(model, config)
    for parameter in peft_model.parameters():  # make sure the model trains
        parameter.requires_grad = True
    return peft_model
'''),
    "lora_target_modules_ignored": _mutant("add_lora_adapters", "test_lora_dpo", '''
def add_lora_adapters(model, r, alpha, target_modules):
    return get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=r, lora_alpha=alpha, lora_dropout=0.0))
'''),
    "lora_rank_and_alpha_swapped": _mutant("add_lora_adapters", "test_lora_dpo", _LORA_CONFIG.replace(
        "r=r, lora_alpha=alpha", "r=alpha, lora_alpha=r")),
    "lora_dropout_left_on": _mutant("add_lora_adapters", "test_lora_dpo", _LORA_CONFIG.replace(
        "lora_dropout=0.0", "lora_dropout=0.05")),
    "lora_targets_hardcoded_attention": _mutant("add_lora_adapters", "test_lora_dpo", _LORA_CONFIG.replace(
        "target_modules=list(target_modules)", 'target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]')),
    # a trainable copy of the output layer, as reward-model LoRA recipes save their score head
    "lora_output_layer_trained_too": _mutant("add_lora_adapters", "test_lora_dpo", _LORA_CONFIG.replace(
        "lora_dropout=0.0)", 'lora_dropout=0.0,\n                        modules_to_save=["lm_head"])')),
    # PiSSA initialisation: the adapters start from the principal components, which it removes from the base
    # weights; the model computes what it did, but with the adapters off it is no longer the pretrained model
    "lora_pissa_initialisation": _mutant("add_lora_adapters", "test_lora_dpo", _LORA_CONFIG.replace(
        "lora_dropout=0.0)", 'lora_dropout=0.0,\n                        init_lora_weights="pissa_niter_4")')),
    # ------------------------------------------------------------ count_parameters
    "count_parameters_from_state_dict": _mutant("count_parameters", "test_lora_dpo", '''
def count_parameters(model):
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(tensor.numel() for tensor in model.state_dict().values())
    return trainable, total
'''),
    # ------------------------------------------------------------ lora_reference_logps
    "lora_reference_with_adapters_on": _mutant("lora_reference_logps", "test_lora_dpo", '''
def lora_reference_logps(model, dataset, tokenizer, batch_size, max_seq_len=None):
    return precompute_reference_logps(model, dataset, tokenizer, batch_size, max_seq_len)
'''),
    "lora_adapters_left_disabled": _mutant("lora_reference_logps", "test_lora_dpo", '''
def lora_reference_logps(model, dataset, tokenizer, batch_size, max_seq_len=None):
    model.base_model.disable_adapter_layers()
    return precompute_reference_logps(model, dataset, tokenizer, batch_size, max_seq_len)
'''),
    "lora_reference_max_seq_len_dropped": _mutant("lora_reference_logps", "test_lora_dpo", '''
def lora_reference_logps(model, dataset, tokenizer, batch_size, max_seq_len=None):
    with model.disable_adapter():
        return precompute_reference_logps(model, dataset, tokenizer, batch_size)
'''),
    # get_base_model() is the wrapped transformers model, whose layers still carry the (active) adapters
    "lora_reference_from_get_base_model": _mutant("lora_reference_logps", "test_lora_dpo", '''
def lora_reference_logps(model, dataset, tokenizer, batch_size, max_seq_len=None):
    return precompute_reference_logps(model.get_base_model(), dataset, tokenizer, batch_size, max_seq_len)
'''),
    # unload() gives the base model back by taking the adapter layers out of the model: the reference is right,
    # but there is nothing left to train
    "lora_reference_after_unload": _mutant("lora_reference_logps", "test_lora_dpo", '''
def lora_reference_logps(model, dataset, tokenizer, batch_size, max_seq_len=None):
    base = model.unload()
    return precompute_reference_logps(base, dataset, tokenizer, batch_size, max_seq_len)
'''),
}


LORA_VARIANTS: dict[str, dict[str, str]] = {
    # transformers' own adapter support instead of a PeftModel: add_adapter, num_parameters, and the adapters
    # switched off and on by hand.
    "transformers_add_adapter": {
        "add_lora_adapters": '''
def add_lora_adapters(model, r, alpha, target_modules):
    model.add_adapter(LoraConfig(r=r, lora_alpha=alpha, target_modules=list(target_modules), lora_dropout=0.0))
    return model
''',
        "count_parameters": '''
def count_parameters(model):
    return model.num_parameters(only_trainable=True), model.num_parameters()
''',
        "lora_reference_logps": '''
def lora_reference_logps(model, dataset, tokenizer, batch_size, max_seq_len=None):
    model.disable_adapters()
    try:
        return precompute_reference_logps(model, dataset, tokenizer, batch_size, max_seq_len)
    finally:
        model.enable_adapters()
''',
    },
    # peft's TaskType enum and bias="none"; a loop over named_parameters; the adapter layers switched off on the
    # LoraModel with try/finally, calling dataset_logps and adding the columns itself.
    "task_type_enum_and_layers_by_hand": {
        "add_lora_adapters": '''
def add_lora_adapters(model, r, alpha, target_modules):
    from peft import TaskType

    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=target_modules, lora_dropout=0.0, bias="none",
                        task_type=TaskType.CAUSAL_LM)
    return get_peft_model(model, config)
''',
        "count_parameters": '''
def count_parameters(model):
    trainable = total = 0
    for _, parameter in model.named_parameters():  # a shared tensor is listed once
        total += parameter.numel()
        if parameter.requires_grad:
            trainable += parameter.numel()
    return trainable, total
''',
        "lora_reference_logps": '''
def lora_reference_logps(model, dataset, tokenizer, batch_size, max_seq_len=None):
    model.base_model.disable_adapter_layers()
    try:
        chosen, rejected = dataset_logps(model, dataset, tokenizer, batch_size, max_seq_len)
    finally:
        model.base_model.enable_adapter_layers()
    dataset = dataset.remove_columns([c for c in ("ref_chosen_logps", "ref_rejected_logps") if c in dataset.column_names])
    return dataset.add_column("ref_chosen_logps", chosen.tolist()).add_column("ref_rejected_logps", rejected.tolist())
''',
    },
    # peft's inject_adapter_in_model on the transformers model itself (no PeftModel around it), parameters counted
    # by storage, and the adapter layers switched off and on one by one.
    "injected_layers_toggled_by_hand": {
        "add_lora_adapters": '''
def add_lora_adapters(model, r, alpha, target_modules):
    from peft import inject_adapter_in_model

    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(target_modules), lora_dropout=0.0)
    return inject_adapter_in_model(config, model)
''',
        "count_parameters": '''
def count_parameters(model):
    tensors = {p.data_ptr(): p for p in model.state_dict(keep_vars=True).values() if isinstance(p, torch.nn.Parameter)}
    return (sum(p.numel() for p in tensors.values() if p.requires_grad), sum(p.numel() for p in tensors.values()))
''',
        "lora_reference_logps": '''
def lora_reference_logps(model, dataset, tokenizer, batch_size, max_seq_len=None):
    from peft.tuners.lora import LoraLayer

    layers = [module for module in model.modules() if isinstance(module, LoraLayer)]
    for layer in layers:
        layer.enable_adapters(False)
    try:
        return precompute_reference_logps(model, dataset, tokenizer, batch_size, max_seq_len)
    finally:
        for layer in layers:
            layer.enable_adapters(True)
''',
    },
}
