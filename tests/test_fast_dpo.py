"""The solution's fast DPO path against the simple `dpo_batch_loss`, on the tiny model with real tokens and data."""
import json
import math
import subprocess
import sys
from collections import Counter

import pytest
import torch
from transformers import AutoModelForCausalLM

from autograder.layout import REPO_ROOT, SOURCE_NOTEBOOK
from autograder.notebook.execute import load_namespace, offline_env

BETA = 0.1


@pytest.fixture(scope="module")
def nb(fixtures, tmp_path_factory):
    """The library cells of the solution notebook, loaded with the fast offline profile."""
    return load_namespace(SOURCE_NOTEBOOK, offline_env(fixtures, tmp_path_factory.mktemp("outputs"), "fast"))


@pytest.fixture(scope="module")
def tokenizer(nb, fixtures):
    return nb["load_tokenizer"](str(fixtures.tiny))


@pytest.fixture(scope="module")
def pairs(nb, fixtures, tokenizer):
    """Twelve tokenized pairs of the preference fixture whose prompts have different lengths."""
    raw = nb["load_preferences"](str(fixtures.preferences), "train")
    dataset = nb["tokenized_preferences"](raw.select(range(60)), tokenizer)
    by_prompt_length = {}
    for index, ids in enumerate(dataset["prompt_input_ids"]):
        by_prompt_length.setdefault(len(ids), index)
    chosen = sorted(by_prompt_length.values())[:12]
    selected = dataset.select(chosen)
    assert len({len(ids) for ids in selected["prompt_input_ids"]}) == 12
    return selected


@pytest.fixture(scope="module")
def models(fixtures):
    """A reference model and a policy moved away from it, so margins and gradients are not trivial."""
    torch.manual_seed(0)
    reference = AutoModelForCausalLM.from_pretrained(fixtures.tiny, dtype=torch.float32).eval().requires_grad_(False)
    policy = AutoModelForCausalLM.from_pretrained(fixtures.tiny, dtype=torch.float32).eval()
    with torch.no_grad():
        for parameter in policy.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return policy, reference


def collate(nb, tokenizer, dataset):
    return nb["collate_pairs"]([dataset.with_format("torch")[i] for i in range(len(dataset))], tokenizer.pad_token_id)


def loss_and_grads(policy, compute):
    """(loss, accuracy, margin) of `compute()` and the flattened gradient of the loss."""
    policy.zero_grad(set_to_none=True)
    loss, accuracy, margin = compute()
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in policy.parameters()])
    return torch.stack([loss.detach(), accuracy, margin]), grads


def assert_same(fast, simple, tie_share=0.0):
    """Equal loss, margin and gradients; the accuracies may differ by the share of tied pairs (chosen and rejected
    cut to the same tokens), whose margin is 0 on one path and float noise of either sign on the other."""
    (fast_stats, fast_grads), (simple_stats, simple_grads) = fast, simple
    assert torch.allclose(fast_stats[[0, 2]], simple_stats[[0, 2]], atol=1e-5), (fast_stats, simple_stats)
    assert abs(float(fast_stats[1] - simple_stats[1])) <= tie_share + 1e-6, (fast_stats, simple_stats)
    scale = simple_grads.abs().max()
    assert scale > 0
    assert (fast_grads - simple_grads).abs().max() <= 1e-4 * scale


def test_fast_loss_and_gradients_equal_the_simple_path(nb, tokenizer, pairs, models):
    """Left-padded prompts of twelve different lengths, no truncation: one batch, the same numbers."""
    policy, reference = models
    data = nb["precompute_reference_logps"](reference, pairs, tokenizer, batch_size=5)  # other batches than below
    batch = collate(nb, tokenizer, data)
    fast = loss_and_grads(policy, lambda: nb["fast_dpo_batch_loss"](policy, batch, BETA, None))
    simple = loss_and_grads(policy, lambda: nb["dpo_batch_loss"](policy, reference, batch, BETA, None))
    assert_same(fast, simple)
    assert fast[0][0] != pytest.approx(math.log(2), abs=1e-3), "the policy should differ from the reference"


def test_fast_path_truncates_each_pair_like_the_simple_path_on_that_pair_alone(nb, tokenizer, pairs, models):
    """With max_seq_len cutting the answers, each pair keeps max_seq_len - (its own prompt length) tokens."""
    policy, reference = models
    max_seq_len = min(len(p) for p in pairs["prompt_input_ids"]) + 12
    data = nb["precompute_reference_logps"](reference, pairs, tokenizer, batch_size=5, max_seq_len=max_seq_len)
    batch = collate(nb, tokenizer, data)
    fast = loss_and_grads(policy, lambda: nb["fast_dpo_batch_loss"](policy, batch, BETA, max_seq_len))

    def simple_pair_by_pair():
        results = [nb["dpo_batch_loss"](policy, reference, collate(nb, tokenizer, pairs.select([i])), BETA, max_seq_len)
                   for i in range(len(pairs))]
        return tuple(torch.stack(values).mean() for values in zip(*results))

    kept = [max(0, max_seq_len - len(prompt)) for prompt in pairs["prompt_input_ids"]]
    ties = sum(chosen[:keep] == rejected[:keep]
               for chosen, rejected, keep in zip(pairs["chosen_input_ids"], pairs["rejected_input_ids"], kept))
    assert ties < len(pairs) // 2, "most pairs should still differ after the cut"
    assert_same(fast, loss_and_grads(policy, simple_pair_by_pair), tie_share=ties / len(pairs))


def test_fast_path_equals_the_simple_batch_when_truncation_cuts_equal_prompts(nb, fixtures, tokenizer, models):
    """Prompts cut to one length and answers cut by max_seq_len: batch truncation and per-pair truncation agree."""
    policy, reference = models
    raw = nb["load_preferences"](str(fixtures.preferences), "train").select(range(6))
    rows = [nb["tokenize_row"](nb["apply_chat_template"](example, tokenizer), tokenizer, max_prompt_length=20)
            for example in raw]
    from datasets import Dataset

    dataset = Dataset.from_list(rows)
    max_seq_len = 20 + 15
    assert max(len(r) for r in dataset["chosen_input_ids"]) > 15
    data = nb["precompute_reference_logps"](reference, dataset, tokenizer, batch_size=4, max_seq_len=max_seq_len)
    batch = collate(nb, tokenizer, data)
    fast = loss_and_grads(policy, lambda: nb["fast_dpo_batch_loss"](policy, batch, BETA, max_seq_len))
    simple = loss_and_grads(policy, lambda: nb["dpo_batch_loss"](policy, reference, batch, BETA, max_seq_len))
    assert_same(fast, simple)


def test_packed_rows_keep_every_real_token_once_and_pad_only_at_the_end(nb, tokenizer, pairs):
    batch = collate(nb, tokenizer, pairs)
    packed = nb["pack_pairs"](batch)
    lengths = [len(p) + len(c) + len(r) for p, c, r in
               zip(pairs["prompt_input_ids"], pairs["chosen_input_ids"], pairs["rejected_input_ids"])]
    assert packed["input_ids"].shape == (len(pairs), max(lengths))
    for row, (prompt, chosen, rejected) in enumerate(
            zip(pairs["prompt_input_ids"], pairs["chosen_input_ids"], pairs["rejected_input_ids"])):
        real = lengths[row]
        assert packed["input_ids"][row, :real].tolist() == list(prompt) + list(chosen) + list(rejected)
        assert packed["segment"][row].tolist() == ([0] * len(prompt) + [1] * len(chosen) + [2] * len(rejected)
                                                   + [3] * (max(lengths) - real))
        assert packed["position_ids"][row, :real].tolist() == (
            list(range(len(prompt) + len(chosen))) + list(range(len(prompt), len(prompt) + len(rejected))))


def test_pair_logps_agree_under_sdpa_and_eager_attention_and_refuse_others(nb, fixtures, tokenizer, pairs):
    """The packed rows' custom mask reaches both attention implementations in the form each one reads."""
    batch = collate(nb, tokenizer, pairs)
    logps = {}
    for implementation in ("sdpa", "eager"):
        model = AutoModelForCausalLM.from_pretrained(fixtures.tiny, dtype=torch.float32,
                                                     attn_implementation=implementation).eval()
        with torch.no_grad():
            logps[implementation] = torch.stack(nb["pair_logps"](model, batch))
    assert torch.allclose(logps["sdpa"], logps["eager"], atol=1e-4), logps
    flex = AutoModelForCausalLM.from_pretrained(fixtures.tiny, dtype=torch.float32, attn_implementation="flex_attention")
    with pytest.raises(ValueError, match="attn_implementation='sdpa'.*'flex_attention'"):
        nb["pair_logps"](flex, batch)


def test_precomputed_reference_logps_equal_on_the_fly_ones(nb, tokenizer, pairs, models):
    _, reference = models
    data = nb["precompute_reference_logps"](reference, pairs, tokenizer, batch_size=3)
    assert data.column_names[-2:] == ["ref_chosen_logps", "ref_rejected_logps"]
    for i in range(len(pairs)):
        batch = collate(nb, tokenizer, pairs.select([i]))
        for answer in ("chosen", "rejected"):
            ids, attn, loss_mask = nb["concat_prompt_completion"](
                batch["prompt_input_ids"], batch["prompt_attn_mask"],
                batch[f"{answer}_input_ids"], batch[f"{answer}_attn_mask"],
            )
            with torch.no_grad():
                expected = nb["get_log_prob"](nb["sequence_logits"](reference, ids, attn), ids, loss_mask).item()
            assert data[i][f"ref_{answer}_logps"] == pytest.approx(expected, abs=1e-4)
    again = nb["precompute_reference_logps"](reference, data, tokenizer, batch_size=4)
    assert again.column_names == data.column_names, "recomputing replaces the columns"


def test_bucketed_sampler_covers_every_example_once_per_epoch(nb):
    torch.manual_seed(0)
    lengths = [(int(a), int(b)) for a, b in torch.randint(5, 300, (203, 2))]
    sampler = nb["LengthBucketSampler"](lengths, batch_size=8, bucket_batches=5, seed=3)
    epochs = [list(sampler) for _ in range(3)]
    for batches in epochs:
        assert len(batches) == len(sampler) == math.ceil(203 / 8)
        assert Counter(i for batch in batches for i in batch) == Counter(range(203))
        assert sum(len(batch) < 8 for batch in batches) == 1, "only one short batch per epoch"
    assert epochs[0] != epochs[1], "each epoch is reshuffled"

    def padded(batches):
        return sum(len(batch) * max(lengths[i][0] for i in batch) for batch in batches)

    random_batches = [list(range(203))[i : i + 8] for i in range(0, 203, 8)]
    assert padded(epochs[0]) < 0.8 * padded(random_batches)
    ordered = [i for batch in nb["LengthBucketSampler"](lengths, batch_size=8, shuffle=False) for i in batch]
    assert [lengths[i] for i in ordered] == sorted(lengths)


def test_train_dpo_starts_at_log2_and_learns(nb, fixtures, tokenizer, pairs):
    nb["set_seed"](0)
    model = nb["load_causal_lm"](str(fixtures.tiny), trainable=True)
    data = nb["precompute_reference_logps"](model, pairs, tokenizer, batch_size=4, max_seq_len=nb["MAX_SEQ_LEN"])
    untrained = nb["evaluate_dpo"](model, None, data, tokenizer)
    assert untrained["reward_margin"] == pytest.approx(0.0, abs=1e-6)
    saved = {key: nb[key] for key in ("LR", "GRAD_ACCUM_STEPS", "MICRO_BATCH_SIZE")}
    nb.update(LR=1e-3, GRAD_ACCUM_STEPS=2, MICRO_BATCH_SIZE=3)
    try:
        history = nb["train_dpo"](model, data, tokenizer, total_steps=4)
    finally:
        nb.update(saved)
    assert set(history) == {"loss", "reward_accuracy", "reward_margin", "step_function"} and len(history["loss"]) == 4
    assert history["step_function"] == ["fast_dpo_batch_loss"] * 4  # without my_step_steps, the fast step only
    assert history["loss"][0] == pytest.approx(math.log(2), abs=1e-5)
    assert nb["evaluate_dpo"](model, None, data, tokenizer)["reward_margin"] > 0


def test_bench_dpo_smoke_on_the_tiny_model(fixtures):
    command = [sys.executable, "-m", "autograder", "bench", "dpo", "--steps", "1", "--batch-size", "2",
               "--max-seq-len", "128", "--model", str(fixtures.tiny), "--json"]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["trl_config"] == "both", "TRL's default and its fastest configuration, by default"
    for key in ("ours_tokens_per_s", "trl_tokens_per_s", "trl_fastest_tokens_per_s", "speedup", "speedup_fastest",
                "ours_peak_mem_gb", "trl_peak_mem_gb", "trl_fastest_peak_mem_gb", "ours_final_loss", "trl_final_loss",
                "matmul_gflops", "ours_flops_fraction", "trl_flops_fraction", "trl_fastest_flops_fraction"):
        assert isinstance(result[key], float) and result[key] > 0, key
    assert result["ours_tokens"] == result["trl_tokens"] == result["trl_fastest_tokens"], "the same tokens for all"
    for name in ("ours", "trl", "trl_fastest"):
        assert result[f"{name}_first_loss"] == pytest.approx(math.log(2), abs=1e-4), name
        assert result[f"{name}_flops_fraction"] < 1.5, "model FLOPs per second cannot exceed the matmul ceiling much"
    assert result["flops_per_token"] > 0 and result["trl_fastest_padding_free"] is False  # CPU: no flash-attention


def test_logprob_bench_functions_agree_and_measure(nb):
    from autograder.devtools.bench import fast_log_prob, logprob_child, naive_log_prob, trl_log_prob

    torch.manual_seed(0)
    logits, labels = torch.randn(2, 7, 50), torch.randint(50, (2, 7))
    mask = torch.tensor([[0, 0, 1, 1, 1, 0, 0], [0, 1, 1, 1, 1, 1, 1]])
    expected = nb["get_log_prob"](logits, labels, mask)
    assert torch.allclose(naive_log_prob(logits, labels, mask), expected, atol=1e-5)
    assert torch.allclose(trl_log_prob(logits, labels, mask), expected, atol=1e-5)
    logits = torch.randn(2, 7, 50, requires_grad=True)
    expected = (torch.log_softmax(logits, -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1) * mask).sum(-1)
    expected_grad, = torch.autograd.grad(expected.sum(), logits)
    fast = fast_log_prob(nb["TokenLogProbs"])(logits.detach().clone().requires_grad_(), labels, mask)
    assert torch.allclose(fast, expected.detach(), atol=1e-5)
    leaf = logits.detach().clone().requires_grad_()
    fast_log_prob(nb["TokenLogProbs"])(leaf, labels, mask).sum().backward()
    assert torch.allclose(leaf.grad, expected_grad, atol=1e-6)
    measured = logprob_child("naive", True, (2, 64, 4096), "cpu")
    assert measured["input_gb"] == pytest.approx(2 * 64 * 4096 * 4 / 2**30) and measured["extra_gb"] >= 0
