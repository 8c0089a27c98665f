# %% [markdown]
# # Starred tasks [extra credit]
#
# Three optional tasks for those who want to go further (the third, LoRA DPO, follows this section). Each is autograded like the homework and its points
# come on top of the homework's maximum. They reuse what you built: the DPO training loop of Part 1 and the
# reward model and PPO policy of Part 2. If you skip them, the cells below stop with `NotImplementedError`;
# run the summary cell at the end of the notebook on its own to write `metrics.json`.
#
# ## ★ f-DPO: the DPO family beyond reverse KL [1 extra point]
#
# DPO solves the KL-regularised RLHF problem
# $\max_\pi \mathbb{E}[r(x, y)] - \beta\,\mathrm{KL}(\pi \,\|\, \pi_\text{ref})$ in closed form. That KL is the
# *reverse* KL, one member of the family of $f$-divergences
# $D_f(\pi \,\|\, \pi_\text{ref}) = \mathbb{E}_{\pi_\text{ref}}\left[f\left(\pi / \pi_\text{ref}\right)\right]$
# with a convex $f$, $f(1) = 0$. [Wang et al. (2023), "Beyond Reverse KL"](https://arxiv.org/abs/2309.16240) show
# that for every such $f$ whose derivative $f'$ is invertible, with 0 outside its domain, the optimal policy satisfies
#
# $$
# r(x, y) = \beta f'\left(\frac{\pi^*(y \mid x)}{\pi_\text{ref}(y \mid x)}\right) + \text{const}(x),
# $$
#
# so the constant (the partition function) cancels in the Bradley–Terry model just as in DPO, and the loss is
#
# $$
# \mathcal{L}_f = -\mathbb{E}\left[\log \sigma\left(\beta f'(u_w) - \beta f'(u_l)\right)\right],
# \qquad u = \frac{\pi_\theta(y \mid x)}{\pi_\text{ref}(y \mid x)}.
# $$
#
# The implicit reward of an answer is now $r = \beta f'(u)$. The divergences of the paper, with
# $t = \log u$ = `logps - ref_logps` (the additive constants cancel in every difference, so drop them):
#
# | divergence | $f(u)$ | $f'(u)$ | $f'$ in terms of $t = \log u$ |
# | --- | --- | --- | --- |
# | reverse KL (DPO) | $u \log u$ | $\log u + 1$ | $t$ (+ 1) |
# | forward KL | $-\log u$ | $-1/u$ | $-e^{-t}$ |
# | Jensen–Shannon | $u \log u - (u + 1) \log\frac{u + 1}{2}$ | $\log\frac{2u}{1 + u}$ | $\log\sigma(t)$ (+ $\log 2$) |
# | $\alpha$-divergence, $0 < \alpha < 1$ | $\frac{u^{1-\alpha} - (1 - \alpha) u - \alpha}{\alpha(\alpha - 1)}$ | $\frac{1 - u^{-\alpha}}{\alpha}$ | $-\mathrm{expm1}(-\alpha t) / \alpha$ |
#
# Reverse KL gives DPO exactly; $\alpha \to 0$ tends to reverse KL and $\alpha \to 1$ to forward KL. The paper
# finds a trade-off: reverse KL is mode-seeking (the highest reward, the least diverse answers), forward KL
# covers more of the reference's modes (more diverse answers, a lower reward), JS and $\alpha$ lie in between.
# The second starred task measures exactly that.
#
# **Numerics.** $t$ is the log-ratio of a whole answer, tens of nats after some training. $u = e^t$ overflows
# float32 from $t \approx 89$, and then $1/u$ has no gradient and $2u/(1 + u)$ is `inf / inf = nan`. So work with
# $t$ only: $-e^{-t}$, $\log\sigma(t)$ = `F.logsigmoid(t)`, `torch.expm1`, and `F.logsigmoid` for the loss. For
# forward KL and $\alpha$ the value $f'$ itself grows like $e^{-t}$ when the model finds an answer far less likely
# than the reference does ($t \to -\infty$): cap every exponent at `F_DPO_MAX_EXPONENT` = 30, i.e.
# `torch.exp(x.clamp(max=F_DPO_MAX_EXPONENT))`. Past $e^{30}$ the sigmoid is flat anyway, and the cap keeps
# the losses (IPO's square included) and their gradients finite in float32.
#
# **Other losses of the margin.** With $h = f'(u_w) - f'(u_l)$ (for reverse KL the difference of the log-ratios):
#
# - `"sigmoid"`, DPO's logistic loss: $-\log\sigma(\beta h)$;
# - `"hinge"`, the hinge loss of SLiC-HF ([Zhao et al., 2023](https://arxiv.org/abs/2305.10425)) as TRL
#   writes it with a reference model: $\max(0, 1 - \beta h)$; a pair separated by $1/\beta$ stops contributing;
# - `"ipo"`, IPO ([Azar et al., 2023](https://arxiv.org/abs/2310.12036)): $\left(h - \frac{1}{2\beta}\right)^2$.
#   DPO keeps pushing $h$ to infinity on pairs whose preference is certain; IPO regresses it to a finite target.
#
# The papers state hinge and IPO for reverse KL; here `loss_type` combines them with any divergence. Whatever
# the loss, the reward accuracy and margin are those of `dpo_loss` with the rewards $\beta f'(u)$.

# %% tags=["library"] kind="readonly" id="f_dpo_constants"
F_DIVERGENCES = ("reverse_kl", "forward_kl", "js", "alpha")
F_DPO_LOSS_TYPES = ("sigmoid", "hinge", "ipo")
F_DPO_MAX_EXPONENT = 30.0  # caps every argument of exp(): e^30 ≈ 1e13 saturates the sigmoid; its square fits float32

# %% [markdown]
# **TODO: `f_dpo_loss` (★, 1 extra point).**

# %% tags=["library"] kind="solution" id="f_dpo_loss"
def f_dpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    divergence: str = "reverse_kl",
    alpha: float = 0.5,
    loss_type: str = "sigmoid",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The f-DPO loss (Wang et al., 2023) with a choice of loss of the margin, and its reward statistics.

    Args:
        chosen_logps, rejected_logps: [batch_size] log-probs of the answers under the trained model.
        ref_chosen_logps, ref_rejected_logps: [batch_size] log-probs of the answers under the reference model.
        beta: the strength of the pull towards the reference model.
        divergence: one of F_DIVERGENCES, which sets f'(u) of the table above as a function of the log-ratio
            t = logps - ref_logps: "reverse_kl" t, "forward_kl" -exp(-t), "js" logsigmoid(t),
            "alpha" (1 - exp(-alpha * t)) / alpha. Never compute u = exp(t) itself; cap every argument of
            exp() at F_DPO_MAX_EXPONENT.
        alpha: the alpha of the alpha-divergence, 0 < alpha < 1 (used only when divergence == "alpha").
        loss_type: one of F_DPO_LOSS_TYPES, the loss of each pair as a function of h = f'(u_w) - f'(u_l):
            "sigmoid" -logsigmoid(beta * h), "hinge" max(0, 1 - beta * h), "ipo" (h - 1 / (2 * beta)) ** 2.

    Returns:
        loss: scalar, the mean over the batch of the per-pair loss;
        reward_accuracies: scalar, the fraction of pairs with r_chosen > r_rejected, where r = beta * f'(u)
            (ties count as wrong, as in dpo_loss);
        reward_margins: scalar, the mean of r_chosen - r_rejected.
        With divergence="reverse_kl" and loss_type="sigmoid" the three equal those of dpo_loss.

    Raises:
        ValueError: for a divergence or loss_type that is not in the lists above.
    """
    ### BEGIN SOLUTION
    if divergence not in F_DIVERGENCES:
        raise ValueError(f"divergence must be one of {F_DIVERGENCES}, got {divergence!r}")
    if loss_type not in F_DPO_LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {F_DPO_LOSS_TYPES}, got {loss_type!r}")

    def f_prime(log_ratio: torch.Tensor) -> torch.Tensor:
        """f'(u) at u = exp(log_ratio), up to an additive constant."""
        if divergence == "reverse_kl":
            return log_ratio
        if divergence == "forward_kl":
            return -torch.exp((-log_ratio).clamp(max=F_DPO_MAX_EXPONENT))
        if divergence == "js":
            return F.logsigmoid(log_ratio)
        return -torch.expm1((-alpha * log_ratio).clamp(max=F_DPO_MAX_EXPONENT)) / alpha

    chosen_rewards = beta * f_prime(chosen_logps - ref_chosen_logps)
    rejected_rewards = beta * f_prime(rejected_logps - ref_rejected_logps)
    margins = chosen_rewards - rejected_rewards  # beta * h
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(margins)
    elif loss_type == "hinge":
        losses = F.relu(1 - margins)
    else:
        losses = (margins / beta - 1 / (2 * beta)) ** 2
    reward_accuracies = (chosen_rewards > rejected_rewards).float().mean()
    return losses.mean(), reward_accuracies.detach(), margins.mean().detach()
    ### END SOLUTION

# %% kind="test" id="test_f_dpo_loss" points=1
with visible_checks():
    # log-ratios t_w = [1, -1] and t_l = [-1, 1]: the second pair mirrors the first
    _logps = tuple(torch.tensor(_v) for _v in ([-3.0, -6.0], [-5.0, -4.0], [-4.0, -5.0], [-4.0, -5.0]))
    _seen = [float(_v) for _v in f_dpo_loss(*_logps, beta=0.5, divergence="reverse_kl")]
    _expected = [(math.log1p(math.exp(-1.0)) + math.log1p(math.exp(1.0))) / 2, 0.5, 0.0]  # DPO: margins [1, -1]
    assert all(abs(_s - _e) < 1e-5 for _s, _e in zip(_seen, _expected)), (
        f"with reverse KL and the sigmoid loss, f_dpo_loss is dpo_loss: expected (loss, accuracy, margin) = "
        f"{_expected}, got {_seen}"
    )
    # forward KL: h = -e^-1 + e^1 for the first pair, minus that for the second
    _loss, _acc, _margin = f_dpo_loss(*_logps, beta=0.5, divergence="forward_kl")
    _h = -math.exp(-1) + math.exp(1)
    _expected = (-math.log(1 / (1 + math.exp(-0.5 * _h))) - math.log(1 / (1 + math.exp(0.5 * _h)))) / 2
    assert abs(float(_loss) - _expected) < 1e-5, f"forward KL: expected loss {_expected:.5f}, got {float(_loss):.5f}"
    assert abs(float(_acc) - 0.5) < 1e-6 and abs(float(_margin)) < 1e-5, (
        f"forward KL: one pair of two ranked right (accuracy 0.5) and opposite margins (mean 0), got accuracy "
        f"{float(_acc)} and margin {float(_margin):.5f}"
    )
    _ipo, _, _ = f_dpo_loss(*_logps, beta=0.5, loss_type="ipo")
    assert abs(float(_ipo) - ((2 - 1) ** 2 + (-2 - 1) ** 2) / 2) < 1e-5, (
        f"IPO with reverse KL: h = [2, -2] and the target 1 / (2 beta) = 1, so the loss is (1 + 9) / 2 = 5; "
        f"got {float(_ipo):.5f}"
    )
    for _divergence in F_DIVERGENCES:
        _extreme = [torch.tensor(_v, requires_grad=True) for _v in ([-1e4, 0.0, 1e4], [1e4, -1e4, 0.0])]
        _loss, _, _ = f_dpo_loss(*_extreme, torch.zeros(3), torch.zeros(3), beta=0.1, divergence=_divergence)
        _loss.backward()
        _grads = torch.cat([_t.grad for _t in _extreme])
        assert torch.isfinite(_loss) and torch.isfinite(_grads).all(), (
            f"{_divergence}: log-ratios of ±1e4 should give a finite loss and finite gradients, got loss "
            f"{float(_loss)} and gradients {_grads.tolist()}. Work with the log-ratio t, never with exp(t)"
        )
    print("f_dpo_loss looks right")

### BEGIN HIDDEN TESTS
from autograder.checks import grade_cell

grade_cell("test_f_dpo_loss", globals())
### END HIDDEN TESTS

# %% [markdown]
# ### A second DPO model with another divergence
#
# `train_dpo` takes the loss as its `loss_fn` argument (the default is your `dpo_loss`). Train a fresh copy of
# the instruct model on the same pairs, with the same reference log-probs and the same $\beta$, but with the
# divergence `STARRED_DIVERGENCE`; the next task compares it with the other models. Forward KL is the paper's
# most diverse setting; try `"js"` or `"alpha"` as well if you have the time.

# %% tags=["library"] kind="readonly" id="starred_config"
STARRED_DIVERGENCE = "forward_kl"  # the divergence of the second DPO model
STARRED_DPO_STEPS = None  # optimizer steps of the second DPO model; None: as many as the DPO model of Part 1
STARRED_PROMPTS = 64  # held-out prompts the models answer for the win rate and diversity
STARRED_NEW_TOKENS = 128  # the longest answer, in tokens
if PROFILE == "demo":
    STARRED_DPO_STEPS, STARRED_PROMPTS, STARRED_NEW_TOKENS = 4, 16, 48
elif PROFILE == "fast":
    STARRED_PROMPTS, STARRED_NEW_TOKENS = 4, 8
F_DPO_DIR = OUTPUT_DIR / f"dpo-{STARRED_DIVERGENCE}"

# %%
set_seed(42)
f_dpo_model = load_causal_lm(MODEL_ID, trainable=True)
f_dpo_steps = STARRED_DPO_STEPS or total_steps
f_dpo_history = train_dpo(f_dpo_model, train_dataset, tokenizer, f_dpo_steps,
                          loss_fn=partial(f_dpo_loss, divergence=STARRED_DIVERGENCE))
print(f"{STARRED_DIVERGENCE} DPO: {f_dpo_steps} steps, loss {f_dpo_history['loss'][0]:.3f} -> "
      f"{f_dpo_history['loss'][-1]:.3f}, reward accuracy {f_dpo_history['reward_accuracy'][-1]:.2f}")
f_dpo_model.save_pretrained(F_DPO_DIR)
tokenizer.save_pretrained(F_DPO_DIR)
del f_dpo_model

# %% [markdown]
# ## ★ Win rate and diversity [1 extra point]
#
# An aligned model is judged on two axes at once: how good its answers are, and how varied. Alignment tends to
# buy reward with diversity ([Kirk et al., 2023](https://arxiv.org/abs/2310.06452)), and the f-DPO paper plots
# one against the other for each divergence. Build that picture for the models of this notebook.
#
# **Win rate.** A judge scores each model's answer to the same held-out prompt; model A *wins* a prompt when
# its answer gets the higher score, and a tie counts as half a win. The win rate of A against B is the mean over
# prompts, so a model against itself scores exactly 0.5. Benchmarks such as AlpacaEval use a strong LLM as the
# judge; here the judge is your reward model from Part 2. `win_rate` takes the judge as a function of the
# prompts and the answers, so that any judge fits.
#
# **Diversity.** Two measures:
#
# - *distinct-n* ([Li et al., 2016](https://arxiv.org/abs/1510.03055)): the number of different n-grams in all
#   answers together divided by the number of n-grams in all answers together. Words are `text.split()`
#   (case-sensitive), and an n-gram lies within one answer (none runs from the end of one answer into the
#   next). Answers with fewer than n words add nothing; with no n-gram at all, distinct-n is 0.
# - *mean per-token entropy*, the paper's measure: at each token of its answer, the generating model's
#   next-token distribution $p$ has entropy $H = -\sum_v p(v) \log p(v)$ (in nats); average it over every
#   answer token of every answer, each token counting once (not a mean of per-answer means). Generation
#   returns the logits of every step, `[batch, steps, vocab]`, and a mask `[batch, steps]` that is 1 on the
#   answer's tokens (up to and including its end-of-turn token) and 0 on the padding after it. Compute
#   $\log p$ with `log_softmax`: `probs.log()` is `-inf` where a probability underflows to 0, and `0 * -inf` is `nan`.

# %% [markdown]
# **TODO: `win_rate` (★, 1 extra point for the three together: `win_rate`, `distinct_n` and `mean_token_entropy` share one test).**

# %% tags=["library"] kind="solution" id="win_rate"
def win_rate(
    prompts: list[str],
    answers: list[str],
    baseline_answers: list[str],
    judge: Callable[[list[str], list[str]], list[float] | np.ndarray],
) -> float:
    """How often `answers` beat `baseline_answers` in the eyes of `judge`, ties counting half.

    Args:
        prompts: N prompts; answers[i] and baseline_answers[i] both answer prompts[i].
        answers: N answers of the model being evaluated.
        baseline_answers: N answers of the model it is compared with.
        judge: judge(prompts, answers) returns one score per answer (a list or a 1-D numpy array of N floats),
            higher is better.

    Returns:
        The mean over the N prompts of 1 if the answer's score is higher than the baseline answer's, 0.5 if the
        two scores are equal, 0 if it is lower: a float in [0, 1].
    """
    ### BEGIN SOLUTION
    scores = np.asarray(judge(prompts, answers), dtype=np.float64)
    baseline_scores = np.asarray(judge(prompts, baseline_answers), dtype=np.float64)
    return float(np.mean((scores > baseline_scores) + 0.5 * (scores == baseline_scores)))
    ### END SOLUTION


# %% [markdown]
# **TODO: `distinct_n` (★, part of the extra point, with `win_rate` and `mean_token_entropy`).**

# %% tags=["library"] kind="solution" id="distinct_n"
def distinct_n(texts: list[str], n: int) -> float:
    """Corpus-level distinct-n: different n-grams of words over all n-grams of words, in all texts together.

    Args:
        texts: the answers; the words of a text are text.split() (case-sensitive).
        n: the n-gram length (1 for words, 2 for pairs of consecutive words, ...).

    Returns:
        (number of different n-grams) / (number of n-grams), counted over all texts, where every n-gram lies
        within one text; 0.0 when the texts have no n-gram at all.
    """
    ### BEGIN SOLUTION
    ngrams = []
    for text in texts:
        words = text.split()
        ngrams += [tuple(words[i: i + n]) for i in range(len(words) - n + 1)]
    return len(set(ngrams)) / len(ngrams) if ngrams else 0.0
    ### END SOLUTION


# %% [markdown]
# **TODO: `mean_token_entropy` (★, part of the extra point, with `win_rate` and `distinct_n`).**

# %% tags=["library"] kind="solution" id="mean_token_entropy"
def mean_token_entropy(logits: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean entropy (in nats) of the next-token distributions at the answer tokens.

    Args:
        logits: [batch, steps, vocab], the generating model's logits at each generation step.
        mask: [batch, steps], True (or 1) at the steps that produced an answer token, False (or 0) at padding.

    Returns:
        The mean over the positions with mask == 1 of -sum_v p(v) log p(v), p = softmax(logits), each position
        counting once, as a Python float.
    """
    ### BEGIN SOLUTION
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    entropies = -(log_probs.exp() * log_probs).sum(-1)
    mask = mask.to(entropies.dtype)
    return float((entropies * mask).sum() / mask.sum())
    ### END SOLUTION


# %% kind="test" id="test_win_rate_diversity" points=1
with visible_checks():
    _longer_is_better = lambda prompts, answers: [len(answer) for answer in answers]  # noqa: E731
    _prompts = ["Hi!", "Tea or coffee?", "Any plans?", "Favourite colour?"]
    _answers = ["Hello there!", "Tea", "Hiking", "Blue"]
    _baseline = ["Hi", "Coffee", "Hiking", "Green"]  # longer, shorter, tie, shorter
    _rate = win_rate(_prompts, _answers, _baseline, _longer_is_better)
    assert abs(_rate - 0.375) < 1e-9, (
        f"a judge that prefers longer answers: one win, two losses and one tie give (1 + 0.5) / 4 = 0.375, got {_rate}"
    )
    assert abs(win_rate(_prompts, _answers, _answers, _longer_is_better) - 0.5) < 1e-9, (
        "a model against itself ties on every prompt, so its win rate is 0.5"
    )
    _texts = ["the cat sat on the mat", "the cat ran"]
    for _n, _expected in ((1, 6 / 9), (2, 6 / 7)):
        _seen = distinct_n(_texts, _n)
        assert abs(_seen - _expected) < 1e-9, (
            f"distinct-{_n} of {_texts}: expected {_expected:.4f}, got {_seen}. Count the n-grams of each answer "
            "and pool them: 9 words of which 6 are different, 7 bigrams of which 6 are different"
        )
    _uniform = torch.zeros(2, 3, 10)
    _entropy = mean_token_entropy(_uniform, torch.tensor([[1, 1, 0], [1, 0, 0]]))
    assert abs(_entropy - math.log(10)) < 1e-5, (
        f"uniform logits over 10 tokens have entropy log 10 = 2.3026, got {_entropy}"
    )
    _peaked = torch.tensor([[[0.0, 0.0, -300.0], [0.0, -300.0, -300.0]]])
    _entropy = mean_token_entropy(_peaked, torch.ones(1, 2))
    assert abs(_entropy - math.log(2) / 2) < 1e-5, (
        f"entropies log 2 and 0 (the tiny probabilities count as 0) average to {math.log(2) / 2:.4f}, got {_entropy}. "
        "Take log p from log_softmax"
    )
    print("win_rate, distinct_n and mean_token_entropy look right")

### BEGIN HIDDEN TESTS
from autograder.checks import grade_cell

grade_cell("test_win_rate_diversity", globals())
### END HIDDEN TESTS

# %% [markdown]
# ### Reward against diversity
#
# Every model answers the same held-out prompts, sampled at temperature 1 without top-k or top-p (the model's
# own distribution, whose entropy we measure) from the same seed. Generation runs in batches: prompts are
# padded on the left so that all of them end where the answers begin, and the attention mask hides the padding.
# The reward model judges every answer; the win rate is against the reference model's answers.

# %% tags=["library"] kind="readonly" id="sample_answers"
@torch.no_grad()
def sample_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    max_new_tokens: int,
    batch_size: int = 16,
    seed: int = 42,
) -> tuple[list[str], float]:
    """Sampled answers to `prompts` (temperature 1, no top-k/top-p) and the mean per-token entropy along them.

    `tokenizer` must pad on the left. An answer ends with the first end-of-turn token; the entropy is
    `mean_token_entropy` over all answer tokens of all batches.
    """
    was_training = model.training
    model.eval()
    set_seed(seed)
    answers, entropy_sum, token_count = [], 0.0, 0
    for start in range(0, len(prompts), batch_size):
        chats = [[{"role": "user", "content": prompt}] for prompt in prompts[start: start + batch_size]]
        inputs = tokenizer.apply_chat_template(chats, add_generation_prompt=True, padding=True, return_tensors="pt",
                                               return_dict=True).to(model.device)
        output = model.generate(
            **inputs, max_new_tokens=max_new_tokens, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            return_dict_in_generate=True, output_logits=True,
        )
        new_tokens = output.sequences[:, inputs["input_ids"].shape[1]:]
        is_end = (new_tokens == tokenizer.eos_token_id).long()
        answer_mask = (is_end.cumsum(-1) - is_end) == 0  # no end-of-turn token before this step
        count = int(answer_mask.sum())
        entropy_sum += mean_token_entropy(torch.stack(output.logits, dim=1), answer_mask) * count
        token_count += count
        answers += [tokenizer.decode(tokens[keep], skip_special_tokens=True).strip()
                    for tokens, keep in zip(new_tokens, answer_mask)]
    model.train(was_training)
    return answers, entropy_sum / max(token_count, 1)


def reward_model_judge(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> Callable:
    """A judge for `win_rate`: the reward model's score of each (prompt, answer) conversation.

    Each pair is scored once and remembered: judging the reference's answers again for every model costs nothing,
    and two identical answers always get exactly the same score (a tie), whatever batch they were scored in.
    """
    scores: dict[tuple[str, str], float] = {}

    def judge(prompts: list[str], answers: list[str]) -> np.ndarray:
        pairs = list(zip(prompts, answers))
        new = [pair for pair in dict.fromkeys(pairs) if pair not in scores]
        if new:
            conversations = [[{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
                             for prompt, answer in new]
            scores.update(zip(new, reward_scores(model, tokenizer, conversations).tolist()))
        return np.array([scores[pair] for pair in pairs])

    return judge

# %%
starred_prompts = list(eval_pairs["prompt"][:STARRED_PROMPTS])
generation_tokenizer = load_tokenizer(MODEL_ID, padding_side="left")
judge_model = AutoModelForSequenceClassification.from_pretrained(REWARD_MODEL_DIR, dtype=torch.float32)
judge = reward_model_judge(judge_model.to(DEVICE).eval(), load_tokenizer(REWARD_MODEL_DIR))
starred_models = {
    "reference": MODEL_ID,
    "DPO (reverse KL)": OUTPUT_DIR / "dpo",
    f"DPO ({STARRED_DIVERGENCE.replace('_kl', ' KL')})": F_DPO_DIR,
    "PPO": PPO_DIR,
}
starred_answers, starred_table = {}, {}
for name, path in tqdm(starred_models.items(), desc="models"):
    lm = load_causal_lm(path, trainable=False)
    starred_answers[name], entropy = sample_answers(lm, generation_tokenizer, starred_prompts, STARRED_NEW_TOKENS)
    del lm
    starred_table[name] = {
        "mean_reward": float(np.mean(judge(starred_prompts, starred_answers[name]))),
        "win_rate_vs_reference": win_rate(starred_prompts, starred_answers[name], starred_answers["reference"], judge),
        "distinct_1": distinct_n(starred_answers[name], 1),
        "distinct_2": distinct_n(starred_answers[name], 2),
        "entropy": entropy,
    }
del judge_model

print(f"{len(starred_prompts)} held-out prompts, answers of at most {STARRED_NEW_TOKENS} tokens, beta = {BETA}; "
      f"DPO steps: {total_steps} (reverse KL), {f_dpo_steps} ({STARRED_DIVERGENCE})")
headers = ("mean reward", "win rate vs ref.", "distinct-1", "distinct-2", "entropy")
print(f"{'model':<20}" + "".join(f"{header:>18}" for header in headers))
for name, row in starred_table.items():
    print(f"{name:<20}" + "".join(f"{value:>18.3f}" for value in row.values()))
METRICS["starred"] = {
    "divergence": STARRED_DIVERGENCE, "beta": BETA, "dpo_steps": total_steps, "f_dpo_steps": f_dpo_steps,
    "prompts": len(starred_prompts), "max_new_tokens": STARRED_NEW_TOKENS, "models": starred_table,
}

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
for ax, (measure, label) in zip(axes, (("entropy", "mean per-token entropy (nats)"), ("distinct_2", "distinct-2"))):
    for name, row in starred_table.items():
        ax.scatter(row[measure], row["mean_reward"], s=70, alpha=0.8, label=name)
    ax.set_xlabel(label)
    ax.set_ylabel("mean reward-model score")
    ax.set_title(f"reward against {label.split(' (')[0]}")
axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)  # beside the points
fig.tight_layout()
fig.savefig(PLOTS_DIR / "reward_vs_diversity.png", dpi=120)
plt.show()

for name in starred_models:
    print(f"=== {name}: {starred_prompts[0]}\n{starred_answers[name][0]}\n")

# %% [markdown]
# What to look for: the aligned models should sit above the reference (a higher reward, a win rate above 0.5)
# and usually to its left (less diverse); the f-DPO paper finds forward KL to the right of reverse KL at a lower
# reward. With the short runs of the `demo` profile and a few dozen prompts the differences are small and
# noisy: a difference of a few hundredths in entropy or win rate is within the noise of sampling.
