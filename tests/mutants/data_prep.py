"""Mutants and correct variants of data preparation (`apply_chat_template`, `tokenize_row`, `pad`, `pad_collate_fn`, `make_dataloader`), graded by `autograder/checks/data_prep.py`."""
from mutants.catalogue import mutant


MUTANTS: dict[str, dict] = {
    # ------------------------------------------------------------ apply_chat_template
    "chat_no_generation_prompt": mutant("apply_chat_template", "test_apply_chat_template", '''
def apply_chat_template(example, tokenizer):
    user = [{"role": "user", "content": example["prompt"]}]
    prompt = tokenizer.apply_chat_template(user, tokenize=False)
    out = {"prompt": prompt}
    for key in ("chosen", "rejected"):
        full = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": example[key]}], tokenize=False)
        out[key] = full[len(prompt):]
    return out
'''),
    "chat_answer_rendered_alone": mutant("apply_chat_template", "test_apply_chat_template", '''
def apply_chat_template(example, tokenizer):
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": example["prompt"]}], tokenize=False,
                                           add_generation_prompt=True)
    chosen = tokenizer.apply_chat_template([{"role": "assistant", "content": example["chosen"]}], tokenize=False)
    rejected = tokenizer.apply_chat_template([{"role": "assistant", "content": example["rejected"]}], tokenize=False)
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}
'''),
    "chat_special_tokens_by_hand": mutant("apply_chat_template", "test_apply_chat_template", '''
def apply_chat_template(example, tokenizer):
    return {
        "prompt": f"<|im_start|>user\\n{example['prompt']}<|im_end|>\\n<|im_start|>assistant\\n",
        "chosen": f"{example['chosen']}<|im_end|>\\n",
        "rejected": f"{example['rejected']}<|im_end|>\\n",
    }
'''),
    "chat_answer_without_end_of_turn": mutant("apply_chat_template", "test_apply_chat_template", '''
def apply_chat_template(example, tokenizer):
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": example["prompt"]}], tokenize=False,
                                           add_generation_prompt=True)
    return {"prompt": prompt, "chosen": example["chosen"], "rejected": example["rejected"]}
'''),
    # ------------------------------------------------------------ tokenize_row
    "tokenize_prompt_truncated_right": mutant("tokenize_row", "test_tokenize_row", '''
def tokenize_row(example, tokenizer, max_prompt_length=512, max_completion_length=None):
    row = {}
    for key, limit in (("prompt", max_prompt_length), ("chosen", max_completion_length),
                       ("rejected", max_completion_length)):
        ids = tokenizer(example[key], add_special_tokens=False)["input_ids"]
        row[f"{key}_input_ids"] = ids if limit is None else ids[:limit]
    return row
'''),
    "tokenize_completion_truncated_left": mutant("tokenize_row", "test_tokenize_row", '''
def tokenize_row(example, tokenizer, max_prompt_length=512, max_completion_length=None):
    row = {}
    for key, limit in (("prompt", max_prompt_length), ("chosen", max_completion_length),
                       ("rejected", max_completion_length)):
        ids = tokenizer(example[key], add_special_tokens=False)["input_ids"]
        row[f"{key}_input_ids"] = ids if limit is None else ids[-limit:]
    return row
'''),
    "tokenize_none_limit_crashes": mutant("tokenize_row", "test_tokenize_row", '''
def tokenize_row(example, tokenizer, max_prompt_length=512, max_completion_length=None):
    prompt = tokenizer(example["prompt"], add_special_tokens=False)["input_ids"][-max_prompt_length:]
    chosen = tokenizer(example["chosen"], add_special_tokens=False)["input_ids"][:max_completion_length]
    rejected = tokenizer(example["rejected"], add_special_tokens=False)["input_ids"][:max_completion_length]
    return {"prompt_input_ids": prompt, "chosen_input_ids": chosen, "rejected_input_ids": rejected}
'''),
    # ------------------------------------------------------------ pad
    "pad_ignores_padding_side": mutant("pad", "test_pad", '''
def pad(tensors, padding_value=0, padding_side="right"):
    return torch.nn.utils.rnn.pad_sequence(tensors, batch_first=True, padding_value=padding_value)
'''),
    "pad_left_rows_reversed": mutant("pad", "test_pad", '''
def pad(tensors, padding_value=0, padding_side="right"):
    if padding_side == "left":
        tensors = [t.flip(0) for t in tensors]
    return torch.nn.utils.rnn.pad_sequence(tensors, batch_first=True, padding_value=padding_value)
'''),
    # ------------------------------------------------------------ pad_collate_fn / make_dataloader
    "collate_prompt_padded_right": mutant("pad_collate_fn", "test_pad_collate_fn", '''
def pad_collate_fn(batch, pad_token_id):
    out = {}
    for key in ("prompt", "chosen", "rejected"):
        ids = [example[f"{key}_input_ids"] for example in batch]
        out[f"{key}_input_ids"] = pad(ids, pad_token_id, "right")
        out[f"{key}_attn_mask"] = pad([torch.ones_like(t) for t in ids], 0, "right")
    return out
'''),
    "collate_mask_from_pad_id": mutant("pad_collate_fn", "test_pad_collate_fn", '''
def pad_collate_fn(batch, pad_token_id):
    out = {}
    for key, side in (("prompt", "left"), ("chosen", "right"), ("rejected", "right")):
        ids = pad([example[f"{key}_input_ids"] for example in batch], pad_token_id, side)
        out[f"{key}_input_ids"] = ids
        out[f"{key}_attn_mask"] = (ids != pad_token_id).long()
    return out
'''),
    "collate_answers_padded_left": mutant("pad_collate_fn", "test_pad_collate_fn", '''
def pad_collate_fn(batch, pad_token_id):
    out = {}
    for key in ("prompt", "chosen", "rejected"):
        ids = [example[f"{key}_input_ids"] for example in batch]
        out[f"{key}_input_ids"] = pad(ids, pad_token_id, "left")
        out[f"{key}_attn_mask"] = pad([torch.ones_like(t) for t in ids], 0, "left")
    return out
'''),
    "dataloader_pads_with_zero": mutant("make_dataloader", "test_pad_collate_fn", '''
def make_dataloader(dataset, tokenizer, batch_size, shuffle=True):
    collate_fn = partial(pad_collate_fn, pad_token_id=0)
    return DataLoader(dataset.with_format("torch"), batch_size=batch_size, shuffle=shuffle, collate_fn=collate_fn)
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
}
