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
}


VARIANTS: dict[str, dict[str, str]] = {
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
