"""The starred LoRA DPO task: real peft adapters on the tiny model, the reference with the adapters off, the memory
helpers, its hidden check and its catalogue.

The notebook's functions run on real components (peft, the tiny Llama, the real tokenizer, the Part 1 training
loop); the catalogue tests follow `tests/test_checks_part2.py`: a mutant loses points on its own test cell only,
a correct variant gets full marks.
"""
import math
import time

import pytest
import torch

from catalogue import (
    assert_full_marks,
    assert_mutant_loses_on_its_own_test_only,
    assert_untouched_release_scores_zero,
    assert_variant_gets_full_marks,
    grade_cells_silently,
    graded_cells,
)
from autograder.checks import all_checks, rebound_namespace, run_check
from autograder.checks.lora import CHECKS
from autograder.checks.reference import answer_log_prob
from autograder.mutants import (
    LORA_MUTANTS,
    LORA_VARIANTS,
    MUTANTS,
    PART2_MUTANTS,
    PART2_VARIANTS,
    STARRED_MUTANTS,
    STARRED_VARIANTS,
    VARIANTS,
    namespace_with,
)

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
REFERENCE_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")


@pytest.fixture(scope="module", name="graded_cells")
def graded_cells_fixture():
    return graded_cells()


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


# ---------------------------------------------------------------- the hidden check and its catalogue

def test_check_matches_the_test_cell_and_is_extra_credit(graded_cells):
    check = all_checks()["test_lora_dpo"]
    assert CHECKS == [check] and check.extra_credit
    assert check.points == 1 == graded_cells["test_lora_dpo"].metadata["nbgrader"]["points"]
    for function in check.functions:
        assert graded_cells[function].metadata["nbgrader"]["solution"], function


def test_lora_catalogue_is_large_enough_and_names_real_cells(graded_cells):
    assert len(LORA_MUTANTS) >= 3 and len(LORA_VARIANTS) >= 1
    others = (MUTANTS, PART2_MUTANTS, STARRED_MUTANTS, VARIANTS, PART2_VARIANTS, STARRED_VARIANTS)
    assert not (set(LORA_MUTANTS) | set(LORA_VARIANTS)) & set().union(*others)
    replaced = [(m["grade_id"], m["source"]) for m in LORA_MUTANTS.values()]
    replaced += [item for variant in LORA_VARIANTS.values() for item in variant.items()]
    for cell_id, source in replaced:
        assert graded_cells[cell_id].metadata["nbgrader"]["solution"], cell_id
        assert f"def {cell_id}(" in source, f"the replacement of {cell_id} must define {cell_id}"
    assert {m["loses"] for m in LORA_MUTANTS.values()} == {"test_lora_dpo"}
    assert set(CHECKS[0].functions) <= {m["grade_id"] for m in LORA_MUTANTS.values()}


def test_solution_gets_full_marks(solution, context):
    assert_full_marks("test_lora_dpo", solution, context, 1)


@pytest.mark.parametrize("name", sorted(LORA_MUTANTS))
def test_mutant_loses_points_on_its_own_test_only(solution, context, name):
    results = assert_mutant_loses_on_its_own_test_only(name, LORA_MUTANTS[name], solution, context)
    own = results["test_lora_dpo"]
    assert own.score > 0, f"{name} loses all of test_lora_dpo: the other cases should still pass\n{own.feedback}"


@pytest.mark.parametrize("name", sorted(LORA_VARIANTS))
def test_correct_variant_gets_full_marks(solution, context, name):
    checked = assert_variant_gets_full_marks(name, LORA_VARIANTS[name], solution, context)
    assert checked == ["test_lora_dpo"]


def test_a_part1_collate_bug_does_not_cost_lora_points(solution, context):
    # lora_reference_logps batches through the notebook's collate_pairs, which calls the student's pad_collate_fn
    namespace = namespace_with(solution, {"pad_collate_fn": MUTANTS["collate_prompt_padded_right"]["source"]})
    assert run_check("test_pad_collate_fn", namespace, context).status == "failed"
    assert run_check("test_lora_dpo", namespace, context).status == "passed"


def test_untouched_release_scores_zero_without_raising(env, context):
    assert_untouched_release_scores_zero(["test_lora_dpo"], env, context)


def test_grade_cell_is_silent_and_gives_partial_credit(solution, context, capfd):
    broken = LORA_MUTANTS["lora_reference_with_adapters_on"]
    namespace = namespace_with(solution, {broken["grade_id"]: broken["source"]})
    # peft warns while it wraps a model
    (full, partial), out = grade_cells_silently(capfd, context, ("test_lora_dpo", solution), ("test_lora_dpo", namespace))
    assert full == 1.0 and 0 < partial < 1
    assert "[test_lora_dpo]" in out and "expected:" in out
