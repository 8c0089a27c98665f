"""Mutants and correct variants of the DPO loss and log-probabilities (`dpo_loss`, `get_log_prob`), graded by `autograder/checks/dpo_loss.py`."""
from mutants.catalogue import mutant


MUTANTS: dict[str, dict] = {
    # ------------------------------------------------------------ dpo_loss
    "loss_sign_flipped": mutant("dpo_loss", "test_dpo_loss", '''
def dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    chosen_rewards = beta * (chosen_logps - ref_chosen_logps)
    rejected_rewards = beta * (rejected_logps - ref_rejected_logps)
    loss = -F.logsigmoid(rejected_rewards - chosen_rewards).mean()
    accuracy = (chosen_rewards > rejected_rewards).float().mean()
    return loss, accuracy, (chosen_rewards - rejected_rewards).mean()
'''),
    "loss_beta_outside_sigmoid": mutant("dpo_loss", "test_dpo_loss", '''
def dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    log_ratio_diff = (chosen_logps - ref_chosen_logps) - (rejected_logps - ref_rejected_logps)
    loss = -(beta * F.logsigmoid(log_ratio_diff)).mean()
    margins = beta * log_ratio_diff
    return loss, (margins > 0).float().mean(), margins.mean()
'''),
    "loss_ties_count_as_right": mutant("dpo_loss", "test_dpo_loss", '''
def dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    chosen_rewards = beta * (chosen_logps - ref_chosen_logps)
    rejected_rewards = beta * (rejected_logps - ref_rejected_logps)
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards).mean()
    accuracy = (chosen_rewards >= rejected_rewards).float().mean()
    return loss, accuracy, (chosen_rewards - rejected_rewards).mean()
'''),
    "loss_summed_over_batch": mutant("dpo_loss", "test_dpo_loss", '''
def dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    chosen_rewards = beta * (chosen_logps - ref_chosen_logps)
    rejected_rewards = beta * (rejected_logps - ref_rejected_logps)
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards).sum()
    accuracy = (chosen_rewards > rejected_rewards).float().mean()
    return loss, accuracy, (chosen_rewards - rejected_rewards).mean()
'''),
    "loss_margin_without_beta": mutant("dpo_loss", "test_dpo_loss", '''
def dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    log_ratio_diff = (chosen_logps - ref_chosen_logps) - (rejected_logps - ref_rejected_logps)
    loss = -F.logsigmoid(beta * log_ratio_diff).mean()
    return loss, (log_ratio_diff > 0).float().mean(), log_ratio_diff.mean()
'''),
    # ------------------------------------------------------------ get_log_prob
    "logp_no_label_shift": mutant("get_log_prob", "test_get_log_prob", '''
def get_log_prob(logits, labels, mask):
    log_probs = logits.log_softmax(-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    return (log_probs * mask).sum(-1)
'''),
    "logp_mean_over_tokens": mutant("get_log_prob", "test_get_log_prob", '''
def get_log_prob(logits, labels, mask):
    log_probs = logits[:, :-1].log_softmax(-1).gather(-1, labels[:, 1:].unsqueeze(-1)).squeeze(-1)
    mask = mask[:, 1:].float()
    return (log_probs * mask).sum(-1) / mask.sum(-1)
'''),
    "logp_mask_not_shifted": mutant("get_log_prob", "test_get_log_prob", '''
def get_log_prob(logits, labels, mask):
    log_probs = logits[:, :-1].log_softmax(-1).gather(-1, labels[:, 1:].unsqueeze(-1)).squeeze(-1)
    return (log_probs * mask[:, :-1]).sum(-1)
'''),
    "logp_through_item": mutant("get_log_prob", "test_get_log_prob", '''
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
    "dpo_loss_rejected_term_detached": mutant("dpo_loss", "test_dpo_loss", '''
def dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    chosen_rewards = beta * (chosen_logps - ref_chosen_logps)
    rejected_rewards = (beta * (rejected_logps - ref_rejected_logps)).detach()
    margins = chosen_rewards - rejected_rewards
    loss = -F.logsigmoid(margins).mean()
    return loss, (margins > 0).float().mean(), margins.mean()
'''),
    "dpo_loss_gradient_scaled_by_beta_twice": mutant("dpo_loss", "test_dpo_loss", '''
def dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1):
    margins = beta * ((chosen_logps - ref_chosen_logps) - (rejected_logps - ref_rejected_logps))
    loss = -F.logsigmoid(margins).mean()
    loss = loss.detach() + beta * (loss - loss.detach())  # the loss's value, beta times its gradient
    return loss, (margins > 0).float().mean(), margins.mean()
'''),
    "logp_normaliser_detached": mutant("get_log_prob", "test_get_log_prob", '''
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
}
