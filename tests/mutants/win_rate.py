"""Mutants and correct variants of the starred win-rate and diversity task (`win_rate`, `distinct_n`, `mean_token_entropy`), graded by `autograder/checks/win_rate.py`."""
from mutants.catalogue import mutant


MUTANTS: dict[str, dict] = {
    # ------------------------------------------------------------ win_rate
    "win_rate_ties_count_as_losses": mutant("win_rate", "test_win_rate_diversity", '''
def win_rate(prompts, answers, baseline_answers, judge):
    scores, baseline_scores = judge(prompts, answers), judge(prompts, baseline_answers)
    return sum(float(s > b) for s, b in zip(scores, baseline_scores)) / len(prompts)
'''),
    "win_rate_compares_mean_scores": mutant("win_rate", "test_win_rate_diversity", '''
def win_rate(prompts, answers, baseline_answers, judge):
    mean, baseline_mean = np.mean(judge(prompts, answers)), np.mean(judge(prompts, baseline_answers))
    return 1.0 if mean > baseline_mean else 0.5 if mean == baseline_mean else 0.0
'''),
    "win_rate_of_the_baseline": mutant("win_rate", "test_win_rate_diversity", '''
def win_rate(prompts, answers, baseline_answers, judge):
    scores, baseline_scores = np.asarray(judge(prompts, answers)), np.asarray(judge(prompts, baseline_answers))
    return float(np.mean((baseline_scores > scores) + 0.5 * (baseline_scores == scores)))
'''),
    "win_rate_ties_count_as_wins": mutant("win_rate", "test_win_rate_diversity", '''
def win_rate(prompts, answers, baseline_answers, judge):
    scores, baseline_scores = judge(prompts, answers), judge(prompts, baseline_answers)
    return sum(float(s >= b) for s, b in zip(scores, baseline_scores)) / len(prompts)
'''),
    "win_rate_ties_within_tolerance": mutant("win_rate", "test_win_rate_diversity", '''
def win_rate(prompts, answers, baseline_answers, judge):
    scores = np.asarray(judge(prompts, answers), dtype=np.float64)
    baseline_scores = np.asarray(judge(prompts, baseline_answers), dtype=np.float64)
    ties = np.isclose(scores, baseline_scores)  # float scores: compare with a tolerance
    return float(np.mean(np.where(ties, 0.5, (scores > baseline_scores).astype(float))))
'''),
    # ------------------------------------------------------------ distinct_n
    "distinct_n_mean_over_answers": mutant("distinct_n", "test_win_rate_diversity", '''
def distinct_n(texts, n):
    ratios = []
    for text in texts:
        words = text.split()
        ngrams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
        if ngrams:
            ratios.append(len(set(ngrams)) / len(ngrams))
    return sum(ratios) / len(ratios) if ratios else 0.0
'''),
    "distinct_n_across_answers": mutant("distinct_n", "test_win_rate_diversity", '''
def distinct_n(texts, n):
    words = " ".join(texts).split()
    ngrams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return len(set(ngrams)) / len(ngrams) if ngrams else 0.0
'''),
    "distinct_n_of_characters": mutant("distinct_n", "test_win_rate_diversity", '''
def distinct_n(texts, n):
    ngrams = [gram for text in texts for gram in zip(*[text[i:] for i in range(n)])]
    return len(set(ngrams)) / len(ngrams) if ngrams else 0.0
'''),
    # ------------------------------------------------------------ mean_token_entropy
    "entropy_log_of_probabilities": mutant("mean_token_entropy", "test_win_rate_diversity", '''
def mean_token_entropy(logits, mask):
    probs = torch.softmax(logits.float(), dim=-1)
    entropies = -(probs * probs.log()).sum(-1)
    return float(entropies[mask.bool()].mean())
'''),
    "entropy_over_padding_too": mutant("mean_token_entropy", "test_win_rate_diversity", '''
def mean_token_entropy(logits, mask):
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    return float(-(log_probs.exp() * log_probs).sum(-1).mean())
'''),
    "entropy_mean_of_answer_means": mutant("mean_token_entropy", "test_win_rate_diversity", '''
def mean_token_entropy(logits, mask):
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    entropies = -(log_probs.exp() * log_probs).sum(-1)
    mask = mask.float()
    per_answer = (entropies * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    return float(per_answer[mask.sum(-1) > 0].mean())
'''),
    "entropy_masked_but_mean_over_padding": mutant("mean_token_entropy", "test_win_rate_diversity", '''
def mean_token_entropy(logits, mask):
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    entropies = -(log_probs.exp() * log_probs).sum(-1)
    return float((entropies * mask).mean())
'''),
    "entropy_indexed_by_integer_mask": mutant("mean_token_entropy", "test_win_rate_diversity", '''
def mean_token_entropy(logits, mask):
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    entropies = -(log_probs.exp() * log_probs).sum(-1)
    return entropies[mask].mean().item()
'''),
}


VARIANTS: dict[str, dict[str, str]] = {}  # the variants that reach these checks replace `f_dpo_loss` too: see fdpo.py
