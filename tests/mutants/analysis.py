"""Mutants and correct variants of the model analysis (`sequence_log_probs`), graded by `autograder/checks/analysis.py`."""
from mutants.catalogue import mutant


MUTANTS: dict[str, dict] = {
    # ------------------------------------------------------------ sequence_log_probs
    "logprob_mean_not_normalised": mutant("sequence_log_probs", "test_logprob_analysis", '''
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
    "logprob_counts_the_first_token": mutant("sequence_log_probs", "test_logprob_analysis", '''
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
    "logprob_padding_scored": mutant("sequence_log_probs", "test_logprob_analysis", '''
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
    "logprob_no_truncation": mutant("sequence_log_probs", "test_logprob_analysis", '''
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
    "logprob_sorted_by_length": mutant("sequence_log_probs", "test_logprob_analysis", '''
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


VARIANTS: dict[str, dict[str, str]] = {
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
}
