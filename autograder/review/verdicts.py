"""The review's verdicts: each check of a checkpoint measured against the base model, pass, warn or fail."""
import math
import re

from tqdm.auto import tqdm

from autograder.checks.reference import format_example
from autograder.review.findings import FAIL, INCOMPLETE, PASS, WARN, CheckpointReview
from autograder.review.load import MAX_HELD_OUT_PROMPTS, SOURCE_PROBLEMS, Loader, LoadFailure, normalise
from autograder.review.measure import (
    MAX_ANSWER_TOKENS,
    MAX_PROMPT_TOKENS,
    answer_log_probs,
    beta_from_card,
    card_metrics_in_body,
    conversation,
    describe_style,
    generate_answers,
    is_degenerate,
    mean,
    repetition_ratio,
    reward_scores,
    sequence_kl,
    style_figures,
)

DEFAULT_BETA = 0.1
# Held-out accuracy thresholds of trained models: (pass at or above, warn at or above; below, it fails). With
# --expect smoke an accuracy above chance or a positive mean margin passes and nothing below fails.
ACCURACY_THRESHOLDS = {"dpo": (0.7, 0.55), "reward-model": (0.8, 0.6)}
KL_PER_TOKEN_WARN = 2.0  # nats: a trained policy that far from the base model often writes degenerate text


class Reviewer(Loader):
    """Runs the checks of each checkpoint on what the `Loader` provides."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.base_answers: list[dict] | None = None
        self.reward: tuple | None = None  # (model, tokenizer) of a usable reward model, for the PPO check

    def check_tokenizer(self, review: CheckpointReview, model, classifier: bool):
        """The checkpoint's tokenizer (or the base model's when it has none that works)."""
        from transformers import AutoTokenizer

        source = review.source
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, **self.hub_kwargs(source))
        except Exception as error:  # noqa: BLE001
            first = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
            review.add("tokenizer", FAIL, f"no tokenizer saved with the checkpoint ({first}); the review uses the "
                                          "base model's")
            return self.base_tokenizer
        if not tokenizer.chat_template:
            review.add("tokenizer", FAIL, "the tokenizer has no chat template (save the instruct model's tokenizer); "
                                          "the review uses the base model's")
            return self.base_tokenizer
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            review.add("tokenizer", FAIL, f"the tokenizer has {len(tokenizer)} tokens but the model only "
                                          f"{model.get_input_embeddings().num_embeddings} embeddings (resize them)")
            return self.base_tokenizer
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        detail = f"{type(tokenizer).__name__} with a chat template, {len(tokenizer)} tokens"
        if classifier:
            probe = [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello! 😊"}]
            chat_ids = tokenizer.apply_chat_template(probe, tokenize=True, return_dict=True)["input_ids"]
            pad_id = model.config.pad_token_id
            if pad_id is None:
                review.add("tokenizer", WARN, f"{detail}; but config.pad_token_id is not set, so batches of more than "
                                              "one conversation fail (scored one at a time here)")
            elif pad_id in chat_ids:
                token = tokenizer.convert_ids_to_tokens(pad_id)
                review.add("tokenizer", WARN, f"{detail}; but the pad token {token!r} occurs in chat text, so the "
                                              "score may be read at the wrong token", pad_token=token)
            else:
                review.add("tokenizer", PASS, f"{detail}, pad token {tokenizer.convert_ids_to_tokens(pad_id)!r} "
                                              "never occurs in chat text")
            return tokenizer
        review.add("tokenizer", PASS, detail)
        return tokenizer

    def check_weights_differ(self, review: CheckpointReview, model, backbone_only: bool) -> bool:
        """Compare the parameters shared with the base model; False when they are all identical."""
        if self.base_model is None:
            review.add("differs from base", WARN, f"not compared: {self.base_error}")
            return True
        base = dict(self.base_model.named_parameters())
        compared, reshaped, largest = 0, 0, 0.0
        for name, parameter in model.named_parameters():
            reference = base.get(name)
            if reference is None:
                continue
            if reference.shape != parameter.shape:
                reshaped += 1
                continue
            compared += 1
            # Compare in the dtype the checkpoint was saved in, so that bf16 rounding alone is no difference.
            expected = reference.detach().to(model.stored_dtype).float()
            largest = max(largest, float((parameter.detach().float() - expected).abs().max()))
        metrics = dict(tensors_compared=compared, tensors_resized=reshaped, max_abs_diff=largest)
        if compared == 0:
            review.add("differs from base", WARN, f"no parameter in common with the base model {self.base_id!r}: was "
                                                  "it fine-tuned from it?", **metrics)
            return True
        if largest == 0.0 and reshaped == 0:
            if backbone_only:
                review.add("differs from base", WARN, "the transformer is identical to the base model's: only the "
                                                      "new reward head was trained", **metrics)
            else:
                review.add("differs from base", FAIL, "identical to the base model: was it trained/saved?", **metrics)
            return False
        what = "the transformer differs" if backbone_only else "differs"
        review.add("differs from base", PASS, f"{what} from the base model: max |Δ| = {largest:.3g} over {compared} "
                                              f"tensors" + (f", {reshaped} resized" if reshaped else ""), **metrics)
        return True

    def base_generations(self, prompts: list[str]) -> list[dict]:
        if self.base_answers is None:
            self.base_answers = generate_answers(self.base_model, self.base_tokenizer, prompts, self.max_new_tokens,
                                                 "base: generating", self.progress)
        return self.base_answers

    def check_generations(self, review: CheckpointReview, model, tokenizer) -> list[dict] | None:
        """Greedy answers to the review prompts and held-out prompts, next to the base model's; style figures."""
        prompts = self.prompts + [pair["prompt"] for pair in self.pairs[:MAX_HELD_OUT_PROMPTS]]
        if not prompts:
            review.add("generations", WARN, "no prompts to answer (--prompts 0 and no held-out pairs)")
            return None
        answers = generate_answers(model, tokenizer, prompts, self.max_new_tokens, f"{review.kind}: generating",
                                   self.progress)
        texts = [answer["text"] for answer in answers]
        base_texts = [a["text"] for a in self.base_generations(prompts)] if self.base_model is not None else None
        review.generations = [
            {"prompt": prompt, "base": base_texts[i] if base_texts else "", review.kind: texts[i]}
            for i, prompt in enumerate(self.prompts)
        ]
        style = style_figures(texts)
        same = sum(a == b for a, b in zip(texts, base_texts)) if base_texts else 0
        held_out = len(prompts) - len(self.prompts)
        detail = (f"{len(prompts)} greedy answers ({len(self.prompts)} review prompts, {held_out} held-out prompts), "
                  f"{self.max_new_tokens} new tokens at most")
        repeating = [(prompt, text) for prompt, text in zip(prompts, texts) if is_degenerate(text)]
        if self.expect == "trained" and repeating:
            prompt, text = repeating[0]
            status = FAIL if len(repeating) > len(texts) / 2 else WARN
            shown = text if len(text) <= 160 else text[:160] + "…"
            review.add("generations", status, f"{detail}; {len(repeating)} repeat themselves (degenerate text), e.g. "
                                              f"the answer to {prompt!r} ({repetition_ratio(text):.0%} repeated "
                                              f"3-grams): {shown!r}", prompts=len(prompts), identical_to_base=same,
                       repeating=[p for p, _ in repeating])
        elif self.expect == "trained" and style["empty_rate"] > 0.5:
            review.add("generations", WARN, f"{detail}; {style['empty_rate']:.0%} are empty: does generation stop "
                                            "at once?", prompts=len(prompts), identical_to_base=same)
        elif self.expect == "trained" and base_texts and same == len(texts):
            review.add("generations", WARN, f"{detail}; every answer is identical to the base model's",
                       prompts=len(prompts), identical_to_base=same)
        else:
            review.add("generations", PASS, f"{detail}; {same} identical to the base model's",
                       prompts=len(prompts), identical_to_base=same)
        if base_texts is None:
            review.add("style", WARN, f"{describe_style(style)} (base model not available for comparison)", model=style)
            return answers
        base_style = style_figures(base_texts)
        detail = f"{describe_style(style)} (base: {describe_style(base_style)})"
        warmer = style["emoji_rate"] > base_style["emoji_rate"] or style["as_an_ai_rate"] < base_style["as_an_ai_rate"]
        if self.expect == "trained" and not warmer:
            review.add("style", WARN, f"{detail}: no move towards the preferred style (more emoji, less \"as an AI\")",
                       model=style, base=base_style)
        else:
            review.add("style", PASS, detail, model=style, base=base_style)
        return answers

    def check_drift(self, review: CheckpointReview, model, tokenizer, answers: list[dict] | None) -> None:
        """Sequence-level KL(model || base) along the model's own greedy answers to the held-out prompts."""
        if self.base_model is None or not answers:
            review.add("KL drift", WARN, "not measured: " + (self.base_error or "no answers"))
            return
        held_out = answers[len(self.prompts):] or answers
        rows = [(answer["prompt_ids"], answer["answer_ids"]) for answer in held_out if answer["answer_ids"]]
        if not rows:
            review.add("KL drift", WARN, "not measured: every answer is empty")
            return
        totals, counts = sequence_kl(model, self.base_model, rows, tokenizer.pad_token_id)
        per_sequence, per_token = mean(totals), sum(totals) / max(sum(counts), 1)
        where = "held-out prompts" if answers[len(self.prompts):] else "review prompts"
        detail = (f"KL(model || base) along its own greedy answers to {len(rows)} {where}: {per_sequence:.3g} nats "
                  f"per answer, {per_token:.3g} per token")
        metrics = dict(kl_per_sequence=per_sequence, kl_per_token=per_token, answers=len(rows))
        if not math.isfinite(per_sequence):
            review.add("KL drift", FAIL, f"{detail}: not finite (NaN or inf weights?)", **metrics)
        elif per_sequence == 0 and self.expect == "trained":
            review.add("KL drift", WARN, f"{detail}: it has not moved from the base model", **metrics)
        elif per_token > KL_PER_TOKEN_WARN and self.expect == "trained":
            review.add("KL drift", WARN, f"{detail}: far from the base model, look for degenerate text", **metrics)
        else:
            review.add("KL drift", PASS, detail, **metrics)

    def check_card(self, review: CheckpointReview, card, problem: str | None) -> None:
        """The bonus task: a card that parses and names the base model, the dataset and held-out metrics."""
        found = dict(present=card is not None, parses=card is not None, base_model=None, datasets=[],
                     metrics=False, hyperparameters=False, samples=False, complete=False)
        if card is None:
            found["present"] = problem is not None and "does not parse" in problem
            if problem is not None and "cannot be reached" in problem:
                review.add("model card", INCOMPLETE, problem, **found)
                return
            review.add("model card", WARN, f"{problem}: bonus criteria not met", **found)
            return
        data = card.data.to_dict()
        base_model = data.get("base_model")
        datasets = data.get("datasets") or []
        datasets = [datasets] if isinstance(datasets, str) else list(datasets)
        text = card.text
        found.update(
            base_model=base_model, datasets=datasets,
            metrics=bool(data.get("model-index") or data.get("eval_results") or data.get("metrics"))
            or card_metrics_in_body(text),
            hyperparameters=bool(re.search(r"(?i)hyper-?\s?param|learning[ _]rate", text)),
            samples=bool(re.search(r"(?i)sample|generation|example|prompt", text)),
        )
        missing = [label for label, ok in (("base_model in the metadata", base_model),
                                           ("datasets in the metadata", datasets),
                                           ("held-out metrics", found["metrics"])) if not ok]
        found["complete"] = not missing
        if missing:
            review.add("model card", WARN, f"the card lacks {', '.join(missing)}: bonus criteria not met", **found)
            return
        notes = []
        named = [str(item).rstrip("/") for item in (base_model if isinstance(base_model, list) else [base_model])]
        if self.base_id not in [normalise(item) for item in named]:
            notes.append(f"its base_model {', '.join(named)} is not the reviewed base {self.base_id}")
        if not found["hyperparameters"]:
            notes.append("no hyper-parameters listed")
        if not found["samples"]:
            notes.append("no sample generations")
        detail = f"base_model {', '.join(named)}, datasets {', '.join(map(str, datasets))}, held-out metrics"
        if notes:
            review.add("model card", WARN, f"{detail}; but {'; '.join(notes)}", **found)
        else:
            review.add("model card", PASS, f"{detail}, hyper-parameters and samples", **found)

    # ---- per kind

    def review_checkpoint(self, kind: str, source: str | None) -> CheckpointReview:
        review = CheckpointReview(kind, source)
        if source is None:
            review.error = "not given: no target and no --" + kind
            review.add("loads", WARN, review.error)
            return review
        card, card_problem = None, None
        try:
            if kind == "reward-model":
                self.review_reward_model(review)
            else:
                card, card_problem = self.load_card(source)
                self.review_policy(review, card)
        except LoadFailure as failure:
            review.error = str(failure)
            # The Hub could not be reached: the reviewer's problem, so not a failure of the checkpoint.
            review.add("loads", INCOMPLETE if failure.unreachable else FAIL, review.error)
            if any(problem in review.error for problem in SOURCE_PROBLEMS):
                return review  # there is nothing to read a model card from either
        except Exception as error:  # noqa: BLE001 (a crash of one review must not stop the others)
            review.error = f"the review crashed: {type(error).__name__}: {str(error).strip()[:300]}"
            review.add("review", FAIL, review.error)
        if card is None and card_problem is None:
            card, card_problem = self.load_card(source)
        self.check_card(review, card, card_problem)
        return review

    def review_policy(self, review: CheckpointReview, card) -> None:
        model = self.load_checkpoint(review, classifier=False)
        if model is None:
            return
        tokenizer = self.check_tokenizer(review, model, classifier=False)
        trained = self.check_weights_differ(review, model, backbone_only=False)
        if tokenizer is None:
            return
        answers = self.check_generations(review, model, tokenizer)
        if review.kind == "dpo":
            self.check_implicit_reward(review, model, tokenizer, card, trained)
        self.check_drift(review, model, tokenizer, answers)
        if review.kind == "ppo":
            self.check_ppo_reward(review, answers)

    def check_implicit_reward(self, review: CheckpointReview, model, tokenizer, card, trained: bool) -> None:
        """Held-out accuracy and margin of r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x))."""
        if self.base_model is None or not self.pairs:
            review.add("implicit reward", WARN, "not measured: " + (self.base_error or self.pairs_error or "no pairs"))
            return
        beta = beta_from_card(card.text) if card is not None else None
        beta_note = "from the model card" if beta is not None else "default"
        beta = beta if beta is not None else DEFAULT_BETA
        rows = {"chosen": [], "rejected": []}
        for pair in tqdm(self.pairs, desc="dpo: implicit reward", unit="pair", disable=not self.progress, leave=False):
            formatted = format_example(pair, tokenizer)
            prompt = tokenizer(formatted["prompt"], add_special_tokens=False)["input_ids"][-MAX_PROMPT_TOKENS:]
            for answer in rows:
                ids = tokenizer(formatted[answer], add_special_tokens=False)["input_ids"][:MAX_ANSWER_TOKENS]
                rows[answer].append((prompt, ids))
        pad_id = tokenizer.pad_token_id
        rewards = {answer: beta * (answer_log_probs(model, rows[answer], pad_id)
                                   - answer_log_probs(self.base_model, rows[answer], pad_id)) for answer in rows}
        margins = (rewards["chosen"] - rewards["rejected"]).tolist()
        accuracy = mean((m > 0) + 0.5 * (m == 0) for m in margins)
        margin = mean(margins)
        detail = (f"accuracy {accuracy:.3f}, mean margin {margin:.4g} on {len(margins)} held-out pairs "
                  f"(beta {beta:g}, {beta_note})")
        metrics = dict(accuracy=accuracy, margin=margin, pairs=len(margins), beta=beta)
        if not trained or all(m == 0 for m in margins):
            review.add("implicit reward", FAIL, f"{detail}: every margin is 0, the model prefers nothing", **metrics)
        else:
            self.add_quality(review, "implicit reward", detail, metrics)

    def add_quality(self, review: CheckpointReview, name: str, detail: str, metrics: dict) -> None:
        """Pass/warn/fail of a held-out accuracy against the course thresholds; with --expect smoke it is reported,
        not judged: a couple of steps on preferences with noisy labels need not find the direction yet."""
        accuracy, margin = metrics["accuracy"], metrics["margin"]
        if self.expect == "smoke":
            review.add(name, PASS, f"{detail} (a smoke run: measured, not judged)", **metrics)
            return
        good, fair = ACCURACY_THRESHOLDS[review.kind]
        if accuracy >= good and margin > 0:
            review.add(name, PASS, detail, **metrics)
        elif accuracy >= fair:
            review.add(name, WARN, f"{detail}: weak (a trained model reaches {good:.2f})", **metrics)
        else:
            review.add(name, FAIL, f"{detail}: no better than chance", **metrics)

    def review_reward_model(self, review: CheckpointReview) -> None:
        model = self.load_checkpoint(review, classifier=True)
        if model is None:
            return
        tokenizer = self.check_tokenizer(review, model, classifier=True)
        self.check_weights_differ(review, model, backbone_only=True)
        if tokenizer is None:
            return
        if not self.pairs:
            review.add("pairwise accuracy", WARN, f"not measured: {self.pairs_error}")
            return
        conversations = [conversation(pair["prompt"], pair[answer]) for answer in ("chosen", "rejected")
                         for pair in self.pairs]
        scores = reward_scores(model, tokenizer, conversations, "reward model: scoring", self.progress)
        chosen, rejected = scores[:len(self.pairs)], scores[len(self.pairs):]
        margins = [c - r for c, r in zip(chosen, rejected)]
        accuracy, margin = mean(m > 0 for m in margins), mean(margins)
        detail = f"accuracy {accuracy:.3f}, mean margin {margin:.4g} on {len(margins)} held-out pairs"
        metrics = dict(accuracy=accuracy, margin=margin, pairs=len(margins))
        self.add_quality(review, "pairwise accuracy", detail, metrics)
        self.check_answer_dependence(review, chosen, rejected)
        if review.checks[-1].status != FAIL:
            self.reward = (model, tokenizer)

    def check_answer_dependence(self, review: CheckpointReview, chosen: list[float], rejected: list[float]) -> None:
        """Different answers to the same prompt must get different scores, else the score is read in the prompt."""
        scores = chosen + rejected
        spread = math.sqrt(mean((s - mean(scores)) ** 2 for s in scores))
        differences = [abs(c - r) for c, r in zip(chosen, rejected)]
        tolerance = 1e-6 * max(1.0, max(abs(s) for s in scores))
        metrics = dict(score_std=spread, mean_abs_answer_difference=mean(differences))
        if not all(map(math.isfinite, scores)):
            review.add("score depends on the answer", FAIL, "some scores are NaN or infinite", **metrics)
        elif max(differences) <= tolerance:
            review.add("score depends on the answer", FAIL,
                       "the chosen and rejected answers to each prompt get the same score: the reward is read inside "
                       "the prompt (check the pad token and config.pad_token_id)", **metrics)
        else:
            review.add("score depends on the answer", PASS,
                       f"answers to the same prompt differ by {mean(differences):.3g} on average (score std "
                       f"{spread:.3g})", **metrics)

    def check_ppo_reward(self, review: CheckpointReview, answers: list[dict] | None) -> None:
        if self.reward is None or self.base_model is None or not answers:
            reason = "no usable reward model" if self.reward is None else self.base_error or "no answers"
            review.add("reward vs base", WARN, f"not measured: {reason}")
            return
        model, tokenizer = self.reward
        prompts = self.prompts + [pair["prompt"] for pair in self.pairs[:MAX_HELD_OUT_PROMPTS]]
        base_texts = [answer["text"] for answer in self.base_generations(prompts)]
        texts = [answer["text"] for answer in answers]
        conversations = [conversation(p, t) for p, t in zip(prompts, texts)]
        conversations += [conversation(p, t) for p, t in zip(prompts, base_texts)]
        scores = reward_scores(model, tokenizer, conversations, "ppo: reward", self.progress)
        policy_scores, base_scores = scores[:len(prompts)], scores[-len(prompts):]
        tie = 1e-5 * max(1.0, max(abs(score) for score in scores))
        wins = mean((p - b > tie) + 0.5 * (abs(p - b) <= tie) for p, b in zip(policy_scores, base_scores))
        ppo_mean, base_mean = mean(policy_scores), mean(base_scores)
        detail = (f"reward model's mean score {ppo_mean:.4g} vs {base_mean:.4g} for the base model over "
                  f"{len(prompts)} prompts (PPO better on {wins:.0%})")
        metrics = dict(ppo_mean=ppo_mean, base_mean=base_mean, win_rate=wins, prompts=len(prompts))
        if ppo_mean > base_mean or self.expect == "smoke":
            review.add("reward vs base", PASS, detail, **metrics)
        else:
            review.add("reward vs base", WARN, f"{detail}: PPO did not raise the reward", **metrics)
