"""The starred tasks' notebook functions: f-DPO and its loss variants, win rate and diversity.

The notebook's functions run on real components: hand-derived values for each divergence and loss, the tiny
model's forward passes and generations with the real tokenizer, and a real one-label reward model. Their hidden
checks are graded against the catalogue by `tests/test_catalogue.py`.
"""
import math
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F

DIVERGENCES = ("reverse_kl", "forward_kl", "js", "alpha")
LOSS_TYPES = ("sigmoid", "hinge", "ipo")


def logps(*values):
    return [torch.tensor(v, dtype=torch.float32) for v in values]


# ---------------------------------------------------------------- f_dpo_loss

@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_reverse_kl_sigmoid_equals_dpo_loss_with_gradients(solution, beta):
    generator = torch.Generator().manual_seed(0)
    values = [(-20 * torch.rand(8, generator=generator)).requires_grad_(True) for _ in range(4)]
    dpo = solution["dpo_loss"](*values, beta=beta)
    dpo[0].backward()
    dpo_grads = [v.grad.clone() for v in values[:2]]
    for v in values:
        v.grad = None
    f_dpo = solution["f_dpo_loss"](*values, beta=beta)  # the defaults: reverse KL, sigmoid loss
    f_dpo[0].backward()
    for expected, seen in zip(dpo, f_dpo):
        assert torch.allclose(seen, expected, atol=1e-6)
    for expected, v in zip(dpo_grads, values[:2]):
        assert torch.allclose(v.grad, expected, atol=1e-7)


def test_each_divergence_matches_hand_derived_values(solution):
    # log-ratios t_w = 1, t_l = -1 (u_w = e, u_l = 1/e) and the reverse pair, beta = 0.5
    values = logps([-3.0, -6.0], [-5.0, -4.0], [-4.0, -5.0], [-4.0, -5.0])
    e = math.e
    h_first = {  # f'(u_w) - f'(u_l) of the first pair, from the f(u) table of Wang et al. (2023)
        "reverse_kl": 2.0,
        "forward_kl": -1 / e + e,
        "js": math.log(2 * e / (1 + e)) - math.log(2 / e / (1 + 1 / e)),
        "alpha": (1 - e ** -0.5) / 0.5 - (1 - e ** 0.5) / 0.5,
    }
    for divergence, h in h_first.items():
        loss, accuracy, margin = solution["f_dpo_loss"](*values, beta=0.5, divergence=divergence, alpha=0.5)
        # the second pair is the mirror image: margins +0.5 h and -0.5 h
        expected = (math.log1p(math.exp(-0.5 * h)) + math.log1p(math.exp(0.5 * h))) / 2
        assert float(loss) == pytest.approx(expected, rel=1e-5), divergence
        assert float(accuracy) == 0.5 and float(margin) == pytest.approx(0.0, abs=1e-6), divergence


def test_hinge_and_ipo_match_hand_derived_values(solution):
    values = logps([-3.0, -6.0], [-5.0, -4.0], [-4.0, -5.0], [-4.0, -5.0])  # reverse KL: h = [2, -2]
    hinge, _, _ = solution["f_dpo_loss"](*values, beta=0.25, loss_type="hinge")
    assert float(hinge) == pytest.approx((max(0, 1 - 0.5) + max(0, 1 + 0.5)) / 2)
    ipo, accuracy, margin = solution["f_dpo_loss"](*values, beta=0.25, loss_type="ipo")
    assert float(ipo) == pytest.approx(((2 - 2) ** 2 + (-2 - 2) ** 2) / 2)  # target 1 / (2 * 0.25) = 2
    assert float(accuracy) == 0.5 and float(margin) == pytest.approx(0.0, abs=1e-6)
    forward_ipo, _, _ = solution["f_dpo_loss"](*values, beta=0.25, divergence="forward_kl", loss_type="ipo")
    h = math.e - 1 / math.e
    assert float(forward_ipo) == pytest.approx(((h - 2) ** 2 + (-h - 2) ** 2) / 2, rel=1e-5)


def test_ties_count_as_wrong_for_every_divergence(solution):
    values = logps([-2.0, -1.0, -3.0], [-2.0, -5.0, -3.0], [-2.0, -2.0, -3.0], [-2.0, -2.0, -3.0])
    for divergence in DIVERGENCES:
        _, accuracy, _ = solution["f_dpo_loss"](*values, divergence=divergence)
        assert float(accuracy) == pytest.approx(1 / 3), divergence


def test_alpha_divergence_tends_to_reverse_and_forward_kl(solution):
    values = logps([-4.0, -6.0, -5.0], [-7.0, -5.0, -5.5], [-5.0, -5.0, -5.0], [-5.0, -5.0, -5.0])
    margin_of = {name: float(solution["f_dpo_loss"](*values, divergence=name)[2])
                 for name in ("reverse_kl", "forward_kl")}
    near_zero = float(solution["f_dpo_loss"](*values, divergence="alpha", alpha=1e-4)[2])
    near_one = float(solution["f_dpo_loss"](*values, divergence="alpha", alpha=1 - 1e-4)[2])
    assert near_zero == pytest.approx(margin_of["reverse_kl"], rel=1e-3)
    assert near_one == pytest.approx(margin_of["forward_kl"], rel=1e-3)


@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_losses_and_gradients_stay_finite_at_log_ratios_of_1e4(solution, divergence, loss_type):
    chosen = torch.tensor([-1e4, 0.0, 1e4, -1e4, 80.0], requires_grad=True)
    rejected = torch.tensor([1e4, -1e4, 0.0, -1e4, -80.0], requires_grad=True)
    loss, accuracy, margin = solution["f_dpo_loss"](chosen, rejected, torch.zeros(5), torch.zeros(5), beta=0.1,
                                                    divergence=divergence, loss_type=loss_type)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(accuracy) and torch.isfinite(margin)
    assert torch.isfinite(chosen.grad).all() and torch.isfinite(rejected.grad).all()


def test_saturated_divergences_give_large_or_vanishing_losses(solution):
    for divergence in ("forward_kl", "alpha"):
        worse, _, _ = solution["f_dpo_loss"](*logps([-1e4], [0.0], [0.0], [0.0]), divergence=divergence)
        better, _, _ = solution["f_dpo_loss"](*logps([0.0], [-1e4], [0.0], [0.0]), divergence=divergence)
        assert 1e6 < float(worse) < math.inf and float(better) == pytest.approx(0.0, abs=1e-12)
    js, _, _ = solution["f_dpo_loss"](*logps([-1e4], [0.0], [0.0], [0.0]), beta=0.1, divergence="js")
    assert float(js) == pytest.approx(0.1 * (1e4 - math.log(2)), rel=1e-5)  # -logsigmoid(beta (-1e4 + log 2))


def test_unknown_names_raise_value_error(solution):
    values = logps([-1.0], [-2.0], [-1.5], [-1.5])
    with pytest.raises(ValueError, match="divergence"):
        solution["f_dpo_loss"](*values, divergence="kl")
    with pytest.raises(ValueError, match="loss_type"):
        solution["f_dpo_loss"](*values, loss_type="logistic")


def test_training_step_takes_the_f_dpo_loss(solution, fixtures):
    nb = solution
    set_seed, tokenizer = nb["set_seed"], nb["load_tokenizer"](str(fixtures.tiny))
    set_seed(0)
    model = nb["load_causal_lm"](str(fixtures.tiny), trainable=True)
    pairs = nb["held_out_split"](str(fixtures.preferences), size=4)[1]
    data = nb["precompute_reference_logps"](model, nb["tokenized_preferences"](pairs, tokenizer), tokenizer, 4, 128)
    batch = next(iter(nb["make_bucketed_dataloader"](data, tokenizer, batch_size=4, shuffle=False)))
    # the model is its own reference: every f' is equal, the margins are 0 and the sigmoid loss is log 2
    loss, accuracy, margin = nb["fast_dpo_batch_loss"](model, batch, 0.1, 128,
                                                       loss_fn=partial(nb["f_dpo_loss"], divergence="forward_kl"))
    assert float(loss.detach()) == pytest.approx(math.log(2), abs=1e-4) and float(accuracy) == 0.0
    assert float(margin) == pytest.approx(0.0, abs=1e-4)
    ipo, _, _ = nb["fast_dpo_batch_loss"](model, batch, 0.1, 128, loss_fn=partial(nb["f_dpo_loss"], loss_type="ipo"))
    assert float(ipo.detach()) == pytest.approx((1 / 0.2) ** 2, rel=1e-4)
    ipo.backward()
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in model.parameters())


# ---------------------------------------------------------------- win rate and diversity

def test_win_rate_with_a_judge_that_prefers_longer_answers(solution):
    def longer(prompts, answers):
        return [len(answer) for answer in answers]

    prompts = ["a", "b", "c", "d"]
    answers, baseline = ["long answer", "x", "same", "yes"], ["short", "longer", "same", "no"]  # win, loss, tie, win
    assert solution["win_rate"](prompts, answers, baseline, longer) == pytest.approx(2.5 / 4)
    assert solution["win_rate"](prompts, baseline, answers, longer) == pytest.approx(1.5 / 4)
    assert solution["win_rate"](prompts, answers, answers, longer) == 0.5


def test_win_rate_of_a_model_against_itself_is_half_with_a_reward_model(solution, fixtures):
    from transformers import AutoModelForSequenceClassification

    tokenizer = solution["set_chat_safe_pad_token"](solution["load_tokenizer"](str(fixtures.tiny)))
    torch.manual_seed(0)
    reward_model = AutoModelForSequenceClassification.from_pretrained(str(fixtures.tiny), num_labels=1)
    reward_model.config.pad_token_id = tokenizer.pad_token_id
    judge = solution["reward_model_judge"](reward_model, tokenizer)
    prompts = ["Do you like rain?", "Cats or dogs?", "What's for dinner?"]
    answers = ["I love it! ☔", "Dogs, always 🐶", "As an AI, I do not eat."]
    scores = judge(prompts, answers)
    assert isinstance(scores, np.ndarray) and scores.shape == (3,) and len(set(scores.tolist())) == 3
    # a pair judged again, alone or in another batch, gets exactly the same score: equal answers always tie
    assert judge(prompts[1:], answers[1:]).tolist() == scores[1:].tolist()
    assert solution["win_rate"](prompts, answers, answers, judge) == 0.5
    flipped = solution["win_rate"](prompts, answers, answers[::-1], judge)
    assert flipped == pytest.approx(np.mean([scores[0] > scores[2], 0.5, scores[2] > scores[0]]))


def test_distinct_n_matches_hand_counts(solution):
    texts = ["the cat sat on the mat", "the cat ran", ""]
    assert solution["distinct_n"](texts, 1) == pytest.approx(6 / 9)  # the, cat, sat, on, mat, ran of 9 words
    assert solution["distinct_n"](texts, 2) == pytest.approx(6 / 7)  # 'the cat' twice among 7 bigrams
    assert solution["distinct_n"](texts, 3) == pytest.approx(5 / 5)
    assert solution["distinct_n"](["a b", "b a"], 2) == 1.0  # no bigram 'b b' across the two answers
    assert solution["distinct_n"](["hi"], 2) == 0.0 and solution["distinct_n"]([], 1) == 0.0


def test_mean_token_entropy_of_uniform_peaked_and_padded_logits(solution):
    entropy = solution["mean_token_entropy"]
    assert entropy(torch.zeros(1, 2, 8), torch.ones(1, 2)) == pytest.approx(math.log(8), rel=1e-6)
    peaked = torch.tensor([[[0.0, 0.0, -1e4], [30.0, -1e4, -1e4]]])
    assert entropy(peaked, torch.ones(1, 2)) == pytest.approx(math.log(2) / 2, rel=1e-6)
    padded = torch.zeros(2, 3, 4)
    padded[1, 0, 0] = 1e4  # the second answer has one certain token, then padding
    mask = torch.tensor([[True, True, True], [True, False, False]])
    assert entropy(padded, mask) == pytest.approx(3 * math.log(4) / 4, rel=1e-6)


@pytest.fixture(scope="module")
def tiny_lm(solution, fixtures):
    return solution["load_causal_lm"](str(fixtures.tiny), trainable=False)


def test_sample_answers_is_reproducible_and_stops_at_the_end_of_turn(solution, fixtures, tiny_lm):
    tokenizer = solution["load_tokenizer"](str(fixtures.tiny), padding_side="left")
    prompts = ["Hi!", "Tell me about your favourite book, and why you like it so much?", "Tea?"]
    first = solution["sample_answers"](tiny_lm, tokenizer, prompts, max_new_tokens=6, batch_size=2)
    again = solution["sample_answers"](tiny_lm, tokenizer, prompts, max_new_tokens=6, batch_size=2)
    answers, entropy = first
    assert first == again and len(answers) == 3 and all(isinstance(a, str) for a in answers)
    assert tokenizer.eos_token not in "".join(answers)
    assert 0 < entropy <= math.log(len(tokenizer))


def test_sample_answers_entropy_equals_a_teacher_forced_pass(solution, fixtures, tiny_lm):
    """The entropy measured during batched, left-padded generation is the model's entropy at each answer token,
    as one unpadded forward pass over prompt + answer computes it."""
    tokenizer = solution["load_tokenizer"](str(fixtures.tiny), padding_side="left")
    prompts = ["Hi!", "Tell me about your favourite book, and why you like it so much?"]
    _, batched = solution["sample_answers"](tiny_lm, tokenizer, prompts, max_new_tokens=5, seed=7)
    solution["set_seed"](7)  # the same draws: sample_answers seeds itself and generates one batch
    inputs = tokenizer.apply_chat_template([[{"role": "user", "content": p}] for p in prompts],
                                           add_generation_prompt=True, padding=True, return_tensors="pt",
                                           return_dict=True)
    generated = tiny_lm.generate(**inputs, max_new_tokens=5, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    width = inputs["input_ids"].shape[1]
    total, count = 0.0, 0
    for row, mask in zip(generated, inputs["attention_mask"]):
        prompt, answer = row[:width][mask.bool()].tolist(), row[width:].tolist()
        if tokenizer.eos_token_id in answer:
            answer = answer[: answer.index(tokenizer.eos_token_id) + 1]
        with torch.no_grad():
            logits = tiny_lm(input_ids=torch.tensor([prompt + answer])).logits[0, len(prompt) - 1: -1]
        log_probs = F.log_softmax(logits.double(), dim=-1)
        total += float(-(log_probs.exp() * log_probs).sum())
        count += len(answer)
    assert batched == pytest.approx(total / count, rel=1e-4)
