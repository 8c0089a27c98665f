"""Mutants and correct variants of DPO training (`concat_prompt_completion`, `dpo_batch_loss`), graded by `autograder/checks/dpo_training.py`."""
from mutants.catalogue import mutant


MUTANTS: dict[str, dict] = {
    # ------------------------------------------------------------ concat_prompt_completion
    "concat_loss_mask_includes_prompt": mutant("concat_prompt_completion", "test_dpo_training", '''
def concat_prompt_completion(prompt_input_ids, prompt_attn_mask, completion_input_ids, completion_attn_mask,
                             max_seq_len=None):
    input_ids = torch.cat([prompt_input_ids, completion_input_ids], dim=1)
    attention_mask = torch.cat([prompt_attn_mask, completion_attn_mask], dim=1)
    loss_mask = attention_mask.clone()
    if max_seq_len is not None:
        input_ids, attention_mask, loss_mask = input_ids[:, :max_seq_len], attention_mask[:, :max_seq_len], loss_mask[:, :max_seq_len]
    return input_ids, attention_mask, loss_mask
'''),
    "concat_truncates_from_left": mutant("concat_prompt_completion", "test_dpo_training", '''
def concat_prompt_completion(prompt_input_ids, prompt_attn_mask, completion_input_ids, completion_attn_mask,
                             max_seq_len=None):
    input_ids = torch.cat([prompt_input_ids, completion_input_ids], dim=1)
    attention_mask = torch.cat([prompt_attn_mask, completion_attn_mask], dim=1)
    loss_mask = torch.cat([torch.zeros_like(prompt_attn_mask), completion_attn_mask], dim=1)
    if max_seq_len is not None:
        input_ids, attention_mask, loss_mask = input_ids[:, -max_seq_len:], attention_mask[:, -max_seq_len:], loss_mask[:, -max_seq_len:]
    return input_ids, attention_mask, loss_mask
'''),
    "concat_ignores_max_seq_len": mutant("concat_prompt_completion", "test_dpo_training", '''
def concat_prompt_completion(prompt_input_ids, prompt_attn_mask, completion_input_ids, completion_attn_mask,
                             max_seq_len=None):
    input_ids = torch.cat([prompt_input_ids, completion_input_ids], dim=1)
    attention_mask = torch.cat([prompt_attn_mask, completion_attn_mask], dim=1)
    loss_mask = torch.cat([torch.zeros_like(prompt_attn_mask), completion_attn_mask], dim=1)
    return input_ids, attention_mask, loss_mask
'''),
    # ------------------------------------------------------------ dpo_batch_loss
    "batch_loss_reference_with_gradients": mutant("dpo_batch_loss", "test_dpo_training", '''
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
    "batch_loss_policy_under_no_grad": mutant("dpo_batch_loss", "test_dpo_training", '''
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
    "batch_loss_default_beta": mutant("dpo_batch_loss", "test_dpo_training", '''
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
    "batch_loss_max_seq_len_not_passed": mutant("dpo_batch_loss", "test_dpo_training", '''
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
    "batch_loss_chosen_rejected_swapped": mutant("dpo_batch_loss", "test_dpo_training", '''
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
    "batch_loss_chosen_policy_detached": mutant("dpo_batch_loss", "test_dpo_training", '''
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
    "batch_loss_rejected_policy_under_no_grad": mutant("dpo_batch_loss", "test_dpo_training", '''
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
    "batch_loss_logits_through_data": mutant("dpo_batch_loss", "test_dpo_training", '''
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
}


VARIANTS: dict[str, dict[str, str]] = {
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
