"""Mutants and correct variants of the starred f-DPO task (`f_dpo_loss`), graded by `autograder/checks/fdpo.py`."""
from mutants.catalogue import mutant

_F_DPO_HEAD = '''
def f_dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=0.1, divergence="reverse_kl",
               alpha=0.5, loss_type="sigmoid"):
    if divergence not in F_DIVERGENCES or loss_type not in F_DPO_LOSS_TYPES:
        raise ValueError(f"unknown divergence {divergence!r} or loss_type {loss_type!r}")
    t_w, t_l = chosen_logps - ref_chosen_logps, rejected_logps - ref_rejected_logps
'''


def _f_dpo_mutant(body: str) -> dict:
    """A mutant of f_dpo_loss: the shared head (checks, log-ratios) plus its own body."""
    return mutant("f_dpo_loss", "test_f_dpo_loss", _F_DPO_HEAD.strip("\n") + "\n" + body.strip("\n"))


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


MUTANTS: dict[str, dict] = {
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
}


VARIANTS: dict[str, dict[str, str]] = {
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
