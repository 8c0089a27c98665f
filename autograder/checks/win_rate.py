"""Hidden check of the starred win-rate and diversity task (extra credit): `test_win_rate_diversity`.

The references count n-grams with index arithmetic and compute entropies in float64 one position at a time.
The win-rate judges are functions of the checks that student code calls back (the runner serves them as
oracles); one of them is a real reward model (a one-label classifier on the tiny model, as in the reward-model
checks) that scores one unpadded conversation at a time, so its scores do not depend on how a student batches
the calls.
"""
import math

import numpy as np
import torch

from autograder.checks.compare import close, fmt, scalar
from autograder.checks.framework import Check, CheckFailure, student
from autograder.checks.models import make_tokenizer, reward_spec
from autograder.checks.reference import EXAMPLES, chat_rows, scored_conversation_ids
from autograder.grading.exercise import resources






def distinct_reference(texts: list[str], n: int) -> float:
    """Pooled distinct-n with explicit index arithmetic, n-grams within each text."""
    seen, total = set(), 0
    for text in texts:
        words = text.split()
        for start in range(0, len(words) - n + 1):
            seen.add(" ".join(words[start + k] for k in range(n)))
            total += 1
    return len(seen) / total if total else 0.0


def entropy_reference(logits: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean entropy over the masked positions, one position at a time in float64 (0 log 0 = 0)."""
    total, count = 0.0, 0
    for b in range(logits.shape[0]):
        for t in range(logits.shape[1]):
            if not bool(mask[b, t]):
                continue
            log_probs = torch.log_softmax(logits[b, t].double(), dim=-1)
            probs = log_probs.exp()
            total += float(-(probs[probs > 0] * log_probs[probs > 0]).sum())
            count += 1
    return total / count


def win_rate_reference(scores: list[float], baseline_scores: list[float]) -> float:
    points = [1.0 if s > b else 0.5 if s == b else 0.0 for s, b in zip(scores, baseline_scores)]
    return sum(points) / len(points)


# ================================================================ test_win_rate_diversity

diversity_check = Check("test_win_rate_diversity", 1, ("win_rate", "distinct_n", "mean_token_entropy"),
                        extra_credit=True)


def word_count_judge(prompts: list[str], answers: list[str]) -> list[int]:
    """Prefers longer answers."""
    return [len(answer.split()) for answer in answers]


def reward_judge(ctx):
    """The reward model of the checks as a judge: one unpadded conversation at a time.

    The reward model of `autograder.checks.models.reward_spec` (a one-label classifier on the tiny model with a
    seeded score head), built once per context; it runs in the judge when student code calls it. Each judge
    remembers its own scores only (one case): the answers it scores may come from student code, and nothing
    of one submission is kept for the next.
    """
    tokenizer = make_tokenizer(ctx, "safe", "right")
    model = ctx.cached("starred-reward-model", lambda: resources.model_from_spec(reward_spec(ctx)))
    scored = {}

    def judge(prompts, answers):
        scores = []
        for prompt, answer in zip(prompts, answers):
            if (prompt, answer) not in scored:
                ids = scored_conversation_ids(prompt, answer, tokenizer)
                with torch.no_grad():
                    logits = model(input_ids=torch.tensor([ids])).logits
                scored[prompt, answer] = float(logits[0, 0])
            scores.append(scored[prompt, answer])
        return np.array(scores, dtype=np.float32)

    return judge


def win_rate_by_student(ns, case, prompts, answers, baseline, judge) -> float:
    value = student(ns, "win_rate")(list(prompts), list(answers), list(baseline), judge)
    return scalar(value, case, "the win rate")


@diversity_check.case("win_rate: a judge that prefers longer answers, on a hand example", weight=2)
def _(ns, ctx):
    case = "win rate, hand example"
    prompts = ["Hi!", "Tea or coffee?", "Any plans?", "Favourite colour?", "Cats?"]
    answers = ["Hello there, friend!", "Tea.", "A long hike with friends", "Blue", "Yes"]
    baseline = ["Hi", "Coffee, always and forever", "A long hike with friends", "Deep green", "I love them"]
    expected = win_rate_reference(word_count_judge(prompts, answers), word_count_judge(prompts, baseline))
    seen = win_rate_by_student(ns, case, prompts, answers, baseline, word_count_judge)
    if not close(seen, expected, 1e-9):
        raise CheckFailure(case, f"{expected} (word counts {word_count_judge(prompts, answers)} against "
                           f"{word_count_judge(prompts, baseline)}: 1 win, 3 losses, 1 tie)", seen,
                           "a prompt is a win (1) when the answer's score is higher than the baseline's, a tie (0.5) "
                           "when they are equal, a loss (0) otherwise; average over the prompts")


@diversity_check.case("win_rate: a model against itself scores 0.5 with a reward-model judge", weight=1)
def _(ns, ctx):
    case = "against itself"
    prompts = [e["prompt"] for e in EXAMPLES]
    for key in ("chosen", "rejected"):
        answers = [e[key] for e in EXAMPLES]
        seen = win_rate_by_student(ns, case, prompts, answers, answers, reward_judge(ctx))
        if not close(seen, 0.5, 1e-9):
            raise CheckFailure(case, "0.5: every prompt is a tie, which counts half", seen,
                               "equal scores are a tie worth 0.5, neither a win nor a loss")


@diversity_check.case("win_rate: the reward model's scores of each pair decide", weight=2)
def _(ns, ctx):
    case = "reward-model judge"
    judge = reward_judge(ctx)
    prompts = [e["prompt"] for e in EXAMPLES]
    chosen, rejected = [e["chosen"] for e in EXAMPLES], [e["rejected"] for e in EXAMPLES]
    mixed = chosen[:3] + rejected[3:]  # with the seeded judge: 2 wins, 1 loss, 1 tie against `rejected`
    for answers, baseline in ((mixed, rejected), (rejected, mixed), (chosen, [rejected[0], chosen[1], *rejected[2:]])):
        expected = win_rate_reference(list(judge(prompts, answers)), list(judge(prompts, baseline)))
        seen = win_rate_by_student(ns, case, prompts, answers, baseline, judge)
        if not close(seen, expected, 1e-9):
            raise CheckFailure(case, f"{expected} (scores {fmt([float(s) for s in judge(prompts, answers)])} against "
                               f"{fmt([float(s) for s in judge(prompts, baseline)])})", seen,
                               "compare the two scores of each prompt (the judge returns a numpy array); do not "
                               "compare averages")


@diversity_check.case("win_rate: only equal scores tie; a difference of 1e-6 decides", weight=1)
def _(ns, ctx):
    case = "ties are equal scores"
    table = {"mine": [0.5, 0.500001, 0.250001, 1.0], "theirs": [0.5, 0.5, 0.25, 1.0]}

    def close_scores(prompts, answers):  # each answer's score by its name: a tie, two narrow wins, a tie
        return [table[answer][int(prompt)] for prompt, answer in zip(prompts, answers)]

    prompts = ["0", "1", "2", "3"]
    seen = win_rate_by_student(ns, case, prompts, ["mine"] * 4, ["theirs"] * 4, close_scores)
    expected = win_rate_reference(table["mine"], table["theirs"])
    if not close(seen, expected, 1e-9):
        raise CheckFailure(case, f"{expected} (scores {table['mine']} against {table['theirs']}: two ties and two "
                           "wins by 1e-6)", seen,
                           "a tie is two EQUAL scores (==), worth 0.5; a higher score, however little higher, is a "
                           "win (not np.isclose, not rounded scores)")


@diversity_check.case("win_rate: each answer is judged together with its own prompt", weight=1)
def _(ns, ctx):
    case = "prompts and answers stay paired"

    def on_topic(prompts, answers):  # 1 when the answer names the last word of its own prompt
        return [float(p.rstrip("?").split()[-1].lower() in a.lower()) for p, a in zip(prompts, answers)]

    prompts = ["Do you like cats?", "Do you like dogs?", "Do you like rain?"]
    answers = ["Cats are great", "Dogs are great", "I like sunshine"]
    baseline = ["Dogs are great", "Cats are great", "I like sunshine"]
    seen = win_rate_by_student(ns, case, prompts, answers, baseline, on_topic)
    if not close(seen, 5 / 6, 1e-9):
        raise CheckFailure(case, f"{5 / 6:.4f} (two wins and a tie for a judge that checks the answer names the "
                           "topic of its prompt)", seen, "call judge(prompts, answers) and judge(prompts, "
                           "baseline_answers): the judge needs the prompt of each answer")


def distinct_by_student(ns, case, texts, n) -> float:
    return scalar(student(ns, "distinct_n")(list(texts), n), case, f"distinct-{n}")


def expect_distinct(ns, case, texts, n, hint):
    expected = distinct_reference(texts, n)
    seen = distinct_by_student(ns, case, texts, n)
    if not close(seen, expected, 1e-9):
        raise CheckFailure(case, f"distinct-{n} of {texts!r} = {expected:.4f}", f"{seen}", hint)


@diversity_check.case("distinct_n: hand counts for n = 1, 2, 3", weight=2)
def _(ns, ctx):
    case = "hand counts"
    texts = ["the cat sat on the mat", "the cat ran", "on the mat the cat sat down"]
    for n in (1, 2, 3):
        expect_distinct(ns, case, texts, n, "count the n-grams of words (text.split()) of every answer, pool them, "
                        "and divide the number of different ones by the number of all of them")


@diversity_check.case("distinct_n: no n-gram runs from one answer into the next", weight=1)
def _(ns, ctx):
    expect_distinct(ns, "within one answer", ["a b", "b a", "a b"], 2,
                    "take the n-grams of each answer separately (here (a, b), (b, a), (a, b)): joining the answers "
                    "first creates n-grams that no answer contains")


@diversity_check.case("distinct_n: counted over all answers together, not averaged per answer", weight=1)
def _(ns, ctx):
    expect_distinct(ns, "pooled", ["yes yes yes yes", "no"], 1,
                    "distinct-n is corpus-level: 2 different words among 5, not the mean of 1/4 and 1/1")


@diversity_check.case("distinct_n: short answers add nothing, no n-gram at all gives 0", weight=1)
def _(ns, ctx):
    case = "short answers"
    for texts, n in ((["one", "two words"], 2), (["", "hi"], 2), ([], 1), (["a b a b a"], 5)):
        expect_distinct(ns, case, texts, n, "an answer with fewer than n words has no n-gram; return 0.0 when "
                        "there are none at all (no division by zero)")


@diversity_check.case("distinct_n: words are text.split(), case-sensitive", weight=0.5)
def _(ns, ctx):
    expect_distinct(ns, "words", ["Hi  hi\nHI 😊", "😊 hi"], 1,
                    "split on any whitespace with text.split() and keep the case: 'Hi', 'hi' and 'HI' differ")


def entropy_by_student(ns, case, logits, mask) -> float:
    return scalar(student(ns, "mean_token_entropy")(logits.clone(), mask.clone()), case, "the mean entropy")


def expect_entropy(ns, case, logits, mask, hint, atol=1e-4):
    expected = entropy_reference(logits, mask)
    seen = entropy_by_student(ns, case, logits, mask)
    if not close(seen, expected, atol, 1e-4):
        raise CheckFailure(case, f"mean entropy {expected:.5f} nats over {int(mask.sum())} answer tokens",
                           f"{seen}", hint)


@diversity_check.case("mean_token_entropy: uniform logits give log(vocab)", weight=1)
def _(ns, ctx):
    case = "uniform logits"
    for vocab in (2, 50):
        seen = entropy_by_student(ns, case, torch.full((2, 3, vocab), 1.5), torch.ones(2, 3, dtype=torch.long))
        if not close(seen, math.log(vocab), 1e-5):
            raise CheckFailure(case, f"log {vocab} = {math.log(vocab):.5f} (in nats)", seen,
                               "H = -sum p log p with the natural logarithm")


@diversity_check.case("mean_token_entropy: hand-computed, padding positions left out", weight=2)
def _(ns, ctx):
    generator = torch.Generator().manual_seed(3)
    logits = 2 * torch.randn(2, 4, 6, generator=generator)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    expect_entropy(ns, "padding left out", logits, mask,
                   "average only over the positions where mask == 1: the steps after an answer ended are padding")


@diversity_check.case("mean_token_entropy: every answer token counts once (not a mean of per-answer means)",
                      weight=1)
def _(ns, ctx):
    logits = torch.zeros(2, 3, 4)
    logits[1, :, 0] = 50.0  # the second answer's one token is certain: entropy about 0
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    expect_entropy(ns, "each token once", logits, mask,
                   "sum the entropies of all answer tokens and divide by their number (3 log 4 / 4 here)")


@diversity_check.case("mean_token_entropy: finite for peaked logits whose small probabilities underflow", weight=1)
def _(ns, ctx):
    logits = torch.tensor([[[0.0, 0.0, -300.0, -1e4], [20.0, -500.0, -500.0, -500.0]]])
    expect_entropy(ns, "peaked logits", logits, torch.ones(1, 2, dtype=torch.long),
                   "probs.log() is -inf where a probability underflows to 0, and 0 * -inf is nan: take log p "
                   "from torch.log_softmax")


@diversity_check.case("mean_token_entropy: the tiny model's logits over its vocabulary, with a bool mask", weight=1)
def _(ns, ctx):
    row = chat_rows(ctx)[0]  # the chosen answer of the first example, as in the checks of get_log_prob
    ids = torch.tensor([row["prompt_input_ids"] + row["chosen_input_ids"]])
    with torch.no_grad():
        logits = ctx.cached("tiny_logits_row0", lambda: ctx.model()(input_ids=ids).logits)
    mask = torch.zeros(ids.shape, dtype=torch.bool)
    mask[0, len(row["prompt_input_ids"]):] = True
    expect_entropy(ns, "tiny model", logits, mask,
                   "softmax over the last dimension (the vocabulary), averaged over the positions where the mask is "
                   "True")


CHECKS = [diversity_check]
