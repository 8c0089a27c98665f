"""The starred LoRA DPO task's notebook functions: real peft adapters on the tiny model, the reference with the
adapters off, the memory helpers.

The notebook's functions run on real components (peft, the tiny Llama, the real tokenizer, the Part 1 training
loop). The hidden check is graded against the catalogue by `tests/test_catalogue.py`.
"""
import math
import time

import pytest
import torch

from autograder.checks import rebound_namespace
from autograder.checks.reference import answer_log_prob

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
REFERENCE_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")


@pytest.fixture(scope="module")
def tokenizer(solution, fixtures):
    return solution["load_tokenizer"](str(fixtures.tiny))


@pytest.fixture(scope="module")
def pairs(solution, fixtures, tokenizer):
    """Eight tokenized held-out preference pairs of the offline fixture."""
    raw = solution["held_out_split"](str(fixtures.preferences), size=8)[1]
    return solution["tokenized_preferences"](raw, tokenizer)


def lora_model(solution, fixtures, r=4, alpha=8, targets=TARGETS):
    solution["set_seed"](0)
    base = solution["load_causal_lm"](str(fixtures.tiny), trainable=True)
    return solution["add_lora_adapters"](base, r, alpha, targets)


def move_adapters(model, scale=0.3):
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(scale * torch.randn(parameter.shape, generator=generator))


def columns(dataset) -> torch.Tensor:
    return torch.tensor([list(dataset[key]) for key in REFERENCE_COLUMNS])


# ---------------------------------------------------------------- adapters and parameter counts

def test_adapters_start_as_the_base_model_and_only_they_are_trainable(solution, fixtures):
    base = solution["load_causal_lm"](str(fixtures.tiny), trainable=False)
    model = lora_model(solution, fixtures)
    ids = torch.tensor([[1, 15, 230, 4000, 9, 2]])
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, base(input_ids=ids).logits)  # B starts at zero
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in name or ".lora_B." in name for name in trainable)
    adapted = {name.split(".lora_")[0].split("layers.")[1] for name in trainable}
    assert adapted == {f"{layer}.{block}.{name}" for layer in (0, 1) for block, names in
                       (("self_attn", TARGETS[:4]), ("mlp", TARGETS[4:])) for name in names}


def test_count_parameters_counts_r_times_in_plus_out_per_adapted_layer_and_tied_weights_once(solution, fixtures):
    model = lora_model(solution, fixtures, r=4)
    config = model.config
    hidden, inner = config.hidden_size, config.intermediate_size
    heads, kv = config.num_attention_heads * config.head_dim, config.num_key_value_heads * config.head_dim
    per_layer = 4 * ((hidden + heads) * 2 + (hidden + kv) * 2 + (hidden + inner) * 3)  # q, o; k, v; gate, up, down
    trainable, total = solution["count_parameters"](model)
    assert trainable == config.num_hidden_layers * per_layer
    plain = solution["load_causal_lm"](str(fixtures.tiny), trainable=True)
    embedding = plain.get_input_embeddings().weight
    assert plain.get_output_embeddings().weight is embedding  # SmolLM ties the two
    assert solution["count_parameters"](plain) == (total - trainable, total - trainable)
    assert sum(t.numel() for t in plain.state_dict().values()) == total - trainable + embedding.numel()


# ---------------------------------------------------------------- the reference with the adapters off

def test_pair_logps_of_a_peft_model_match_unpadded_passes(solution, fixtures, pairs, tokenizer):
    """`pair_logps` reaches the decoder and the output layer through the peft wrapper, adapters included."""
    model = lora_model(solution, fixtures).eval()
    move_adapters(model)
    loader = solution["make_bucketed_dataloader"](pairs.select(range(4)), tokenizer, batch_size=4, shuffle=False)
    indices, batch = next(zip(loader.batch_sampler, loader))
    with torch.no_grad():
        chosen, rejected = solution["pair_logps"](model, batch)
    for row, seen_chosen, seen_rejected in zip(indices, chosen.tolist(), rejected.tolist()):
        prompt = list(pairs[row]["prompt_input_ids"])
        assert seen_chosen == pytest.approx(answer_log_prob(model, prompt, list(pairs[row]["chosen_input_ids"])),
                                            abs=1e-3)
        assert seen_rejected == pytest.approx(answer_log_prob(model, prompt, list(pairs[row]["rejected_input_ids"])),
                                              abs=1e-3)


def test_reference_with_adapters_off_equals_the_base_model_after_training(solution, fixtures, pairs, tokenizer):
    nb = rebound_namespace(solution, {"LR": 1e-2})  # train_dpo reads LR: a rate that moves the tiny model
    model = lora_model(nb, fixtures)
    base = solution["load_causal_lm"](str(fixtures.tiny), trainable=False)
    expected = columns(nb["precompute_reference_logps"](base, pairs, tokenizer, 4, 128))
    before = nb["lora_reference_logps"](model, pairs, tokenizer, 4, 128)
    nb["train_dpo"](model, before, tokenizer, 2)
    with_adapters = columns(nb["precompute_reference_logps"](model, pairs, tokenizer, 4, 128))
    after = columns(nb["lora_reference_logps"](model, pairs, tokenizer, 4, 128))
    assert torch.allclose(columns(before), expected, atol=1e-5) and torch.allclose(after, expected, atol=1e-5)
    assert (with_adapters - expected).abs().max() > 1e-2  # the adapters did train
    again = columns(nb["precompute_reference_logps"](model, pairs, tokenizer, 4, 128))
    assert torch.allclose(again, with_adapters, atol=1e-5)  # and they are on again


def test_first_dpo_loss_is_log_2_and_training_changes_only_the_adapters(solution, fixtures, pairs, tokenizer):
    nb = rebound_namespace(solution, {"LR": 1e-2})
    model = lora_model(nb, fixtures)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    data = nb["lora_reference_logps"](model, pairs, tokenizer, 4, 128)
    history = nb["train_dpo"](model, data, tokenizer, 2)
    assert history["loss"][0] == pytest.approx(math.log(2), abs=1e-5)
    changed = {name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])}
    assert changed and all(".lora_" in name for name in changed)
    assert any(".lora_B." in name for name in changed)


def test_saved_adapters_reload_onto_the_base_model(solution, fixtures, tmp_path):
    from peft import PeftModel

    model = lora_model(solution, fixtures).eval()
    move_adapters(model)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "adapter_config.json").is_file() and not (tmp_path / "model.safetensors").exists()
    base = solution["load_causal_lm"](str(fixtures.tiny), trainable=False)
    reloaded = PeftModel.from_pretrained(base, tmp_path).eval()
    ids = torch.tensor([[1, 15, 230, 4000, 9, 2]])
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-6)


# ---------------------------------------------------------------- memory

def test_training_state_bytes_counts_sixteen_bytes_per_trained_value_and_four_per_frozen_one(solution):
    state_bytes = solution["training_state_bytes"]
    assert state_bytes(trainable=1000, total=1000) == 16 * 1000  # weight, gradient, two AdamW moments
    assert state_bytes(trainable=0, total=1000) == 4 * 1000
    assert state_bytes(trainable=10, total=1000, bytes_per_value=2) == 2 * (1000 + 3 * 10)


def test_peak_memory_growth_sees_an_allocation_held_during_the_run(solution):
    size = 256 * 2**20

    def run():
        held = torch.ones(size // 4)  # float32, written, so resident
        time.sleep(0.1)
        return float(held[-1])

    result, growth = solution["peak_memory_growth"](run)
    assert result == 1.0
    assert 0.8 * size < growth < 2 * size
