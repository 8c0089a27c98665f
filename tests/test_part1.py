"""Part 1 of the solution notebook (DPO from scratch) against independent references on real components."""
import math
import sys

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer



@pytest.fixture(scope="module")
def tokenizer(fixtures):
    return AutoTokenizer.from_pretrained(fixtures.smollm2)


@pytest.fixture(scope="module")
def tiny_model(fixtures):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(fixtures.tiny, dtype=torch.float32).eval()


EXAMPLE = {
    "prompt": "What did you do last weekend?",
    "chosen": "I went hiking and it was amazing! 🏔️ What about you?",
    "rejected": "As an AI language model, I do not have weekends.",
}


# ---------------------------------------------------------------- data preparation

def test_apply_chat_template_splits_prompt_at_generation_prompt(solution, tokenizer):
    formatted = solution["apply_chat_template"](EXAMPLE, tokenizer)
    user_turn = [{"role": "user", "content": EXAMPLE["prompt"]}]
    assert formatted["prompt"] == tokenizer.apply_chat_template(user_turn, tokenize=False, add_generation_prompt=True)
    for key in ("chosen", "rejected"):
        full = tokenizer.apply_chat_template(user_turn + [{"role": "assistant", "content": EXAMPLE[key]}], tokenize=False)
        assert formatted["prompt"] + formatted[key] == full
        assert formatted[key].startswith(EXAMPLE[key])
        assert tokenizer.eos_token in formatted[key]
        assert "<|im_start|>assistant" not in formatted[key]


def test_tokenize_row_truncates_prompt_left_and_completions_right(solution, tokenizer):
    formatted = solution["apply_chat_template"](EXAMPLE, tokenizer)
    row = solution["tokenize_row"](formatted, tokenizer, max_prompt_length=5, max_completion_length=3)
    prompt_ids = tokenizer(formatted["prompt"], add_special_tokens=False)["input_ids"]
    assert row["prompt_input_ids"] == prompt_ids[-5:]
    header = tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    assert row["prompt_input_ids"][-len(header):] == header, "left truncation must keep the assistant header"
    for key in ("chosen", "rejected"):
        assert row[f"{key}_input_ids"] == tokenizer(formatted[key], add_special_tokens=False)["input_ids"][:3]


def test_tokenize_row_without_limits_keeps_everything(solution, tokenizer):
    formatted = solution["apply_chat_template"](EXAMPLE, tokenizer)
    row = solution["tokenize_row"](formatted, tokenizer, max_prompt_length=None, max_completion_length=None)
    assert tokenizer.decode(row["prompt_input_ids"] + row["chosen_input_ids"]) == formatted["prompt"] + formatted["chosen"]


@pytest.mark.parametrize("side", ["left", "right"])
def test_pad_matches_a_hand_written_loop(solution, side):
    tensors = [torch.tensor([3, 1, 4, 1]), torch.tensor([5]), torch.tensor([9, 2])]
    expected = []
    for t in tensors:
        filler = [-7] * (4 - len(t))
        expected.append(filler + t.tolist() if side == "left" else t.tolist() + filler)
    out = solution["pad"](tensors, padding_value=-7, padding_side=side)
    assert out.tolist() == expected and out.dtype == torch.long


def test_pad_rejects_unknown_side(solution):
    with pytest.raises(ValueError, match="padding_side"):
        solution["pad"]([torch.tensor([1])], padding_side="middle")


def test_pad_collate_fn_masks_keep_end_of_turn_tokens_equal_to_pad(solution, tokenizer):
    # pad_token_id == eos id: a mask built from `ids != pad_token_id` would drop the <|im_end|> tokens.
    pad_id = tokenizer.pad_token_id
    batch = [
        {"prompt_input_ids": torch.tensor([7, 8, 9]), "chosen_input_ids": torch.tensor([10, pad_id]),
         "rejected_input_ids": torch.tensor([11, 12, pad_id])},
        {"prompt_input_ids": torch.tensor([6]), "chosen_input_ids": torch.tensor([13, 14, 15, pad_id]),
         "rejected_input_ids": torch.tensor([pad_id])},
    ]
    out = solution["pad_collate_fn"](batch, pad_token_id=pad_id)
    assert out["prompt_input_ids"].tolist() == [[7, 8, 9], [pad_id, pad_id, 6]]
    assert out["prompt_attn_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert out["chosen_attn_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert out["rejected_input_ids"].tolist() == [[11, 12, pad_id], [pad_id, pad_id, pad_id]]
    assert out["rejected_attn_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_make_dataloader_yields_collated_batches(solution, tokenizer):
    rows = [solution["tokenize_row"](solution["apply_chat_template"](EXAMPLE, tokenizer), tokenizer) for _ in range(3)]
    loader = solution["make_dataloader"](Dataset.from_list(rows), tokenizer, batch_size=3, shuffle=False)
    batch = next(iter(loader))
    assert batch["prompt_input_ids"].shape == (3, len(rows[0]["prompt_input_ids"]))
    assert batch["chosen_attn_mask"].sum().item() == 3 * len(rows[0]["chosen_input_ids"])


# ---------------------------------------------------------------- loss and log-probs

def test_dpo_loss_matches_hand_computed_values(solution):
    policy_chosen, policy_rejected = torch.tensor([-4.0, -6.0, -5.0]), torch.tensor([-7.0, -5.0, -5.0])
    ref_chosen, ref_rejected = torch.tensor([-5.0, -5.0, -5.0]), torch.tensor([-5.0, -5.0, -5.0])
    beta = 0.2
    # rewards: chosen [0.2, -0.2, 0], rejected [-0.4, 0, 0]; margins [0.6, -0.2, 0]
    margins = [0.6, -0.2, 0.0]
    expected_loss = sum(math.log(1 + math.exp(-m)) for m in margins) / 3
    loss, accuracy, margin = solution["dpo_loss"](policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=beta)
    assert loss.item() == pytest.approx(expected_loss, abs=1e-6)
    assert accuracy.item() == pytest.approx(1 / 3), "a tie (margin 0) is not a correct ranking"
    assert margin.item() == pytest.approx(sum(margins) / 3, abs=1e-6)


def test_dpo_loss_gradient_raises_chosen_and_lowers_rejected(solution):
    chosen, rejected = torch.tensor([-3.0], requires_grad=True), torch.tensor([-3.0], requires_grad=True)
    loss, _, _ = solution["dpo_loss"](chosen, rejected, torch.tensor([-3.0]), torch.tensor([-3.0]), beta=0.1)
    loss.backward()
    assert loss.item() == pytest.approx(math.log(2))
    assert chosen.grad.item() == pytest.approx(-0.05) and rejected.grad.item() == pytest.approx(0.05)


def test_get_log_prob_equals_per_token_loop_on_tiny_model(solution, tiny_model, tokenizer):
    torch.manual_seed(1)
    ids = torch.randint(3, len(tokenizer), (2, 9))
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        logits = tiny_model(ids).logits
    expected = torch.zeros(2)
    for b in range(2):
        for t in range(1, 9):
            if mask[b, t]:
                expected[b] += F.log_softmax(logits[b, t - 1].double(), dim=-1)[ids[b, t]].float()
    assert torch.allclose(solution["get_log_prob"](logits, ids, mask), expected, atol=1e-4)


def test_log_probs_are_invariant_to_left_padding(solution, tiny_model, tokenizer):
    row = solution["tokenize_row"](solution["apply_chat_template"](EXAMPLE, tokenizer), tokenizer)
    short = dict(row, prompt_input_ids=row["prompt_input_ids"][-4:])
    batch = solution["pad_collate_fn"]([row, short], pad_token_id=tokenizer.pad_token_id)
    ids, attn, loss_mask = solution["concat_prompt_completion"](
        batch["prompt_input_ids"], batch["prompt_attn_mask"], batch["chosen_input_ids"], batch["chosen_attn_mask"]
    )
    with torch.no_grad():
        batched = solution["get_log_prob"](solution["sequence_logits"](tiny_model, ids, attn), ids, loss_mask)
        for i in range(2):
            keep = attn[i].bool()
            alone = solution["get_log_prob"](
                solution["sequence_logits"](tiny_model, ids[i : i + 1, keep], attn[i : i + 1, keep]),
                ids[i : i + 1, keep], loss_mask[i : i + 1, keep],
            )
            assert batched[i].item() == pytest.approx(alone.item(), abs=1e-4)


# ---------------------------------------------------------------- training step

def test_concat_prompt_completion_truncates_the_end(solution):
    prompt, prompt_mask = torch.tensor([[0, 0, 5], [4, 5, 6]]), torch.tensor([[0, 0, 1], [1, 1, 1]])
    answer, answer_mask = torch.tensor([[7, 8, 9], [7, 0, 0]]), torch.tensor([[1, 1, 1], [1, 0, 0]])
    ids, attn, loss_mask = solution["concat_prompt_completion"](prompt, prompt_mask, answer, answer_mask, max_seq_len=4)
    assert ids.tolist() == [[0, 0, 5, 7], [4, 5, 6, 7]]
    assert attn.tolist() == [[0, 0, 1, 1], [1, 1, 1, 1]]
    assert loss_mask.tolist() == [[0, 0, 0, 1], [0, 0, 0, 1]]


def _tiny_batch(solution, tokenizer, n=4):
    rows = []
    for i in range(n):
        example = {k: f"{v} ({i})" for k, v in EXAMPLE.items()}
        rows.append(solution["tokenize_row"](solution["apply_chat_template"](example, tokenizer), tokenizer))
    return solution["pad_collate_fn"](rows, pad_token_id=tokenizer.pad_token_id)


def test_dpo_batch_loss_is_log2_at_start_and_trains_only_the_policy(solution, fixtures, tokenizer):
    torch.manual_seed(0)
    policy = AutoModelForCausalLM.from_pretrained(fixtures.tiny, dtype=torch.float32).train()
    reference = AutoModelForCausalLM.from_pretrained(fixtures.tiny, dtype=torch.float32).eval().requires_grad_(False)
    batch = _tiny_batch(solution, tokenizer)
    loss, accuracy, margin = solution["dpo_batch_loss"](policy, reference, batch, beta=0.1, max_seq_len=64)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-5)
    assert margin.item() == pytest.approx(0.0, abs=1e-5) and accuracy.item() == 0.0
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.parameters())
    assert all(p.grad is None for p in reference.parameters())

    optimizer = torch.optim.SGD(policy.parameters(), lr=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        loss, _, _ = solution["dpo_batch_loss"](policy, reference, batch, beta=0.1, max_seq_len=64)
        loss.backward()
        optimizer.step()
    new_loss, _, new_margin = solution["dpo_batch_loss"](policy, reference, batch, beta=0.1, max_seq_len=64)
    assert new_loss.item() < math.log(2) and new_margin.item() > 0


# ---------------------------------------------------------------- bad input

def test_dataset_without_preference_columns_is_rejected(solution, tmp_path):
    (tmp_path / "train.jsonl").write_text('{"question": "hi", "answer": "hello"}\n')
    with pytest.raises(ValueError, match=r"lacks the columns \['prompt', 'chosen', 'rejected'\]"):
        solution["load_preferences"](str(tmp_path), split="train")


def test_empty_completion_is_rejected(solution, tmp_path):
    (tmp_path / "train.jsonl").write_text('{"prompt": "hi", "chosen": "hello!", "rejected": "  "}\n')
    with pytest.raises(ValueError, match="empty 'rejected'"):
        solution["load_preferences"](str(tmp_path), split="train")


def test_tokenizer_without_chat_template_is_rejected(solution, fixtures, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(fixtures.tiny)
    tokenizer.chat_template = None
    tokenizer.save_pretrained(tmp_path)
    (tmp_path / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(ValueError, match="has no chat template"):
        solution["load_tokenizer"](str(tmp_path))


# ---------------------------------------------------------------- test cells


def test_visible_checks_stop_a_student_but_only_report_under_autograde(solution, monkeypatch, capsys):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    with pytest.raises(AssertionError, match="expected 2"):
        with solution["visible_checks"]():
            assert 1 == 2, "expected 2"
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    with solution["visible_checks"]():
        print("warning from the student's code", file=sys.stderr)
        assert 1 == 2, "expected 2"
    printed = capsys.readouterr()
    assert "A visible test failed (AssertionError: expected 2" in printed.out
    assert "warning from the student's code" in printed.out and printed.err == ""
