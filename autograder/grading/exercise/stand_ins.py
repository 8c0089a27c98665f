"""Stand-ins that run next to the student's code instead of on the judge's side.

A check replaces a student function it does not grade with a stand-in (see `runtime.isolated`). Most
stand-ins are oracles: their code stays with the judge and every call sends its inputs across. The ones here
run in the sandbox, because what they compute is given away by the student notebook anyway (its provided
`TokenLogProbs` is the core of `get_log_prob`) and their inputs are large: as an oracle, `get_log_prob` would
send every [batch, length, vocabulary] logits tensor, and its gradient, through the pipes. Student code can
replace them in its sandbox; that only changes its own results, which the judge compares with values it
computed on its side.
"""
import torch


def isolated_get_log_prob(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Stand-in for the student's `get_log_prob`: [B, T, V] logits, [B, T] labels and mask -> [B] sums of
    log p(label_t | prefix) over the masked positions t >= 1."""
    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = log_probs.gather(-1, labels[:, 1:].long().unsqueeze(-1)).squeeze(-1)
    return (picked * mask[:, 1:].to(picked.dtype)).sum(-1)


BY_NAME = {"get_log_prob": isolated_get_log_prob}
