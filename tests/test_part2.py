"""Part 2 of the solution notebook (reward model, PPO, log-prob analysis, model cards) on the tiny model."""
import copy
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl.data_utils import is_conversational


EXAMPLE = {
    "prompt": "Do you like rainy days?",
    "chosen": "Oh, I love them! ☔ Tea, a blanket and a good book 😊",
    "rejected": "As an AI language model, I do not experience weather.",
}


@pytest.fixture(scope="module")
def outputs(env) -> Path:
    """The output folder of the `solution` namespace (conftest), HW2_OUTPUT_DIR of its environment."""
    return Path(env["HW2_OUTPUT_DIR"])


@pytest.fixture(scope="module")
def tokenizer(fixtures):
    return AutoTokenizer.from_pretrained(fixtures.smollm2)


@pytest.fixture(scope="module")
def reward_tokenizer(solution, fixtures):
    return solution["set_chat_safe_pad_token"](solution["load_tokenizer"](str(fixtures.tiny)))


@pytest.fixture(scope="module")
def reward_model_dir(solution, fixtures, reward_tokenizer, tmp_path_factory):
    """A reward model built by the notebook on the tiny model (untrained head), saved like the notebook does."""
    torch.manual_seed(0)
    with solution["quietly"]():
        model = solution["build_reward_model"](str(fixtures.tiny), reward_tokenizer)
    path = tmp_path_factory.mktemp("reward-model")
    model.save_pretrained(path)
    reward_tokenizer.save_pretrained(path)
    return path


def conversation(prompt: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


def params(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def same(before: list[torch.Tensor], model: torch.nn.Module) -> bool:
    return all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


# ---------------------------------------------------------------- configuration and contracts

def test_checkpoint_folders_follow_the_contract(solution, outputs):
    assert solution["REWARD_MODEL_DIR"] == solution["OUTPUT_DIR"] / "reward-model"
    assert solution["PPO_DIR"] == solution["OUTPUT_DIR"] / "ppo"
    assert solution["OUTPUT_DIR"] == outputs


def test_precision_flags_follow_the_device(solution):
    assert solution["trainer_precision"]() == {"bf16": False, "fp16": False}  # these tests run on a CPU
    saved = solution["DEVICE"], solution["AMP_DTYPE"]
    try:
        solution["DEVICE"], solution["AMP_DTYPE"] = "cuda", torch.bfloat16
        assert solution["trainer_precision"]() == {"bf16": True, "fp16": False}
        solution["DEVICE"], solution["AMP_DTYPE"] = "cuda", torch.float16
        assert solution["trainer_precision"]() == {"bf16": False, "fp16": True}
        solution["DEVICE"], solution["AMP_DTYPE"] = "mps", torch.float32
        assert solution["trainer_precision"]() == {"bf16": False, "fp16": False}
    finally:
        solution["DEVICE"], solution["AMP_DTYPE"] = saved


# ---------------------------------------------------------------- reward model

def test_to_implicit_prompt_preferences_is_conversational_with_the_prompt_inside(solution, tokenizer):
    pair = solution["to_implicit_prompt_preferences"](EXAMPLE)
    assert set(pair) == {"chosen", "rejected"}
    assert is_conversational(pair)
    for key in ("chosen", "rejected"):
        assert pair[key] == conversation(EXAMPLE["prompt"], EXAMPLE[key])
        rendered = tokenizer.apply_chat_template(pair[key], tokenize=False)
        assert EXAMPLE["prompt"] in rendered and EXAMPLE[key] in rendered


def test_to_implicit_prompt_preferences_maps_a_dataset(solution):
    dataset = Dataset.from_list([EXAMPLE, EXAMPLE])
    mapped = dataset.map(solution["to_implicit_prompt_preferences"], remove_columns=["prompt"])
    assert mapped.column_names == ["chosen", "rejected"]
    assert mapped[1]["rejected"][1] == {"role": "assistant", "content": EXAMPLE["rejected"]}


def test_pad_token_never_occurs_in_chat_text(solution, tokenizer):
    tok = solution["set_chat_safe_pad_token"](copy.deepcopy(tokenizer))
    assert tok.pad_token_id != tok.eos_token_id
    ids = tok.apply_chat_template(conversation("Hi there", "Hello! 👋"), tokenize=True, return_dict=True)["input_ids"]
    assert tok.pad_token_id not in ids
    assert tok.pad_token_id < len(tokenizer), "an existing token is reused, so no embedding row is added"


def test_pad_token_falls_back_to_a_new_token_and_models_are_resized(solution, tokenizer, fixtures):
    tok = copy.deepcopy(tokenizer)
    tok.pad_token = tok.eos_token
    tok.unk_token = tok.eos_token  # no usable existing token left
    tok = solution["set_chat_safe_pad_token"](tok)
    assert tok.pad_token == "[PAD]" and tok.pad_token_id == len(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(fixtures.tiny)
    solution["cover_tokenizer"](model, tok)
    assert model.get_input_embeddings().num_embeddings >= len(tok)


def test_conversation_ids_end_with_the_final_end_of_turn_token(solution, reward_tokenizer):
    messages = conversation("Hi?", "Hello!")
    full = reward_tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    ids = solution["conversation_ids"](messages, reward_tokenizer)
    assert ids[-1] == reward_tokenizer.eos_token_id and full[: len(ids)] == ids
    assert reward_tokenizer.decode(full[len(ids):]).strip() == "", "only the template's trailing whitespace is cut"
    pair = solution["tokenize_reward_pair"](solution["to_implicit_prompt_preferences"](EXAMPLE), reward_tokenizer)
    assert set(pair) == {"chosen_ids", "rejected_ids"} and pair["chosen_ids"][-1] == reward_tokenizer.eos_token_id


LONG_ANSWER = "Oh, I love them! ☔ The sound on the window, a warm blanket, a cup of tea and a good book 😊 What about you?"


def test_cut_answer_ids_stop_inside_the_answer_without_the_end_token(solution, reward_tokenizer):
    messages = conversation(EXAMPLE["prompt"], LONG_ANSWER)
    full = solution["conversation_ids"](messages, reward_tokenizer)
    prompt = reward_tokenizer.apply_chat_template(messages[:1], add_generation_prompt=True, tokenize=True,
                                                  return_dict=True)["input_ids"]
    cut = solution["cut_answer_ids"](messages, reward_tokenizer, 5)
    assert cut == full[: len(prompt) + 5] and cut[: len(prompt)] == prompt
    assert reward_tokenizer.eos_token_id not in cut[len(prompt):]
    assert LONG_ANSWER.startswith(reward_tokenizer.decode(cut[len(prompt):]))
    answer_length = len(full) - 1 - len(prompt)  # tokens of the answer, end-of-turn token excluded
    assert solution["cut_answer_ids"](messages, reward_tokenizer, answer_length) == full, "not longer: kept whole"
    assert solution["cut_answer_ids"](messages, reward_tokenizer, answer_length - 1) == full[:-2]


def test_reward_of_a_cut_answer_is_what_ppo_reads_for_an_unfinished_one(solution, reward_model_dir, reward_tokenizer):
    from transformers import AutoModelForSequenceClassification
    from trl.experimental.utils import get_reward

    model = AutoModelForSequenceClassification.from_pretrained(reward_model_dir).eval()
    answers = [LONG_ANSWER, "As an AI language model, I do not experience weather, so I cannot enjoy or dislike rain."]
    conversations = [conversation(EXAMPLE["prompt"], answer) for answer in answers]
    scores = solution["reward_scores"](model, reward_tokenizer, conversations, answer_tokens=6)
    # TRL's PPO: an answer without an end-of-turn token fills the whole response length, and its reward is read
    # at its last token.
    prompt_ids = solution["tokenize_prompt"]({"prompt": EXAMPLE["prompt"]}, reward_tokenizer)["input_ids"]
    responses = [reward_tokenizer(answer, add_special_tokens=False)["input_ids"][:6] for answer in answers]
    query_responses = torch.tensor([prompt_ids + response for response in responses])
    with torch.no_grad():
        _, ppo_scores, _ = get_reward(model, query_responses, reward_tokenizer.pad_token_id, len(prompt_ids))
    assert torch.allclose(ppo_scores, torch.tensor(scores), atol=1e-4)
    finished = solution["reward_scores"](model, reward_tokenizer, conversations)
    assert not torch.allclose(torch.tensor(finished), torch.tensor(scores), atol=1e-4), "cut answers are read elsewhere"


def test_reward_training_pairs_add_one_cut_copy_of_every_pair(solution, reward_tokenizer, monkeypatch):
    low, high = solution["RM_CUT_ANSWERS"]
    rows = [{"prompt": f"Do you like rainy day number {i}?", "chosen": f"{LONG_ANSWER} {i}",
             "rejected": f"As an AI language model, I have no feelings about rain or about day number {i} at all."}
            for i in range(6)]
    pairs = Dataset.from_list(rows).map(solution["to_implicit_prompt_preferences"], remove_columns=["prompt"])
    training = solution["reward_training_pairs"](pairs, reward_tokenizer)
    assert len(training) == 12 and training[:] == solution["reward_training_pairs"](pairs, reward_tokenizer)[:]
    eos = reward_tokenizer.eos_token_id
    finished = [row for row in training if row["chosen_ids"][-1] == eos]
    cut = [row for row in training if row["chosen_ids"][-1] != eos]
    assert len(finished) == len(cut) == 6
    for row in cut:
        prompt = len(reward_tokenizer.apply_chat_template(row["chosen"][:1], add_generation_prompt=True, tokenize=True,
                                                          return_dict=True)["input_ids"])
        assert row["rejected_ids"][-1] != eos and len(row["rejected_ids"]) == len(row["chosen_ids"])
        assert low <= len(row["chosen_ids"]) - prompt <= high
    assert sorted(map(tuple, (row["chosen_ids"] for row in finished))) == sorted(
        tuple(solution["conversation_ids"](messages, reward_tokenizer)) for messages in pairs["chosen"])

    monkeypatch.setitem(solution, "RM_CUT_ANSWERS", None)
    only_finished = solution["reward_training_pairs"](pairs, reward_tokenizer)
    assert only_finished["chosen_ids"] == pairs.map(solution["tokenize_reward_pair"],
                                                    fn_kwargs={"tokenizer": reward_tokenizer})["chosen_ids"]


def test_pooling_rules_land_where_the_notebook_says(solution, reward_tokenizer):
    ids = solution["conversation_ids"](conversation("Hi?", "Hello!"), reward_tokenizer)
    eos = reward_tokenizer.eos_token_id
    assert solution["pooled_token_index"](ids, eos, "before first pad") == ids.index(eos) - 1  # inside the prompt
    assert solution["pooled_token_index"](ids, eos) == len(ids) - 2  # skips the final <|im_end|>
    assert solution["pooled_token_index"](ids, reward_tokenizer.pad_token_id) == len(ids) - 1


def test_build_reward_model_has_one_label_and_the_pad_token(solution, fixtures, reward_tokenizer):
    with solution["quietly"]():
        model = solution["build_reward_model"](str(fixtures.tiny), reward_tokenizer)
    assert type(model).__name__ == "LlamaForSequenceClassification"
    assert model.config.num_labels == 1
    assert model.config.pad_token_id == reward_tokenizer.pad_token_id != reward_tokenizer.eos_token_id
    assert next(model.parameters()).dtype == torch.float32


def test_reward_depends_on_the_answer_and_equals_what_ppo_reads(solution, reward_model_dir, reward_tokenizer):
    from transformers import AutoModelForSequenceClassification
    from trl.experimental.utils import get_reward

    model = AutoModelForSequenceClassification.from_pretrained(reward_model_dir).eval()
    answers = ["I love them! ☔😊", "As an AI, I do not experience weather."]
    scores = solution["reward_scores"](model, reward_tokenizer, [conversation(EXAMPLE["prompt"], a) for a in answers])
    assert abs(float(scores[0] - scores[1])) > 1e-6, "two answers to the same prompt got the same reward"

    # TRL's PPO: left-padded prompt ids + answer ending with <|im_end|>, then pad tokens.
    prompt_ids = solution["tokenize_prompt"]({"prompt": EXAMPLE["prompt"]}, reward_tokenizer)["input_ids"]
    pad_id = reward_tokenizer.pad_token_id
    rows = []
    for answer in answers:
        answer_ids = reward_tokenizer(answer, add_special_tokens=False)["input_ids"] + [reward_tokenizer.eos_token_id]
        rows.append([pad_id, pad_id] + prompt_ids + answer_ids)
    width = max(map(len, rows)) + 3
    query_responses = torch.tensor([row + [pad_id] * (width - len(row)) for row in rows])
    with torch.no_grad():
        _, ppo_scores, _ = get_reward(model, query_responses, pad_id, context_length=len(prompt_ids) + 2)
    assert torch.allclose(ppo_scores, torch.tensor(scores), atol=1e-4)


def test_reviewer_scores_conversations_as_the_notebook_does(solution, reward_model_dir, reward_tokenizer):
    """The reviewer reads the reward at the same token as the notebook and PPO (the closing end-of-turn)."""
    from transformers import AutoModelForSequenceClassification

    from autograder.review.measure import reward_scores as reviewer_scores

    model = AutoModelForSequenceClassification.from_pretrained(reward_model_dir).eval()
    answers = ["I love them! ☔😊", "As an AI, I do not experience weather.", "", "Rain. " * 20]
    conversations = [conversation(EXAMPLE["prompt"], answer) for answer in answers]
    notebook = solution["reward_scores"](model, reward_tokenizer, conversations)
    saved_tokenizer = AutoTokenizer.from_pretrained(reward_model_dir)
    reviewer = reviewer_scores(model, saved_tokenizer, conversations, desc="scoring", progress=False)
    assert torch.allclose(torch.tensor(reviewer), torch.tensor(notebook), atol=1e-4), (reviewer, notebook)


def test_pairwise_accuracy_counts_chosen_above_rejected(solution, reward_model_dir, reward_tokenizer):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(reward_model_dir).eval()
    pairs = Dataset.from_list([
        solution["to_implicit_prompt_preferences"]({"prompt": f"Question {i}?", "chosen": f"Yes {i} 😊", "rejected": f"No {i}."})
        for i in range(5)
    ])
    metrics = solution["pairwise_accuracy"](model, reward_tokenizer, pairs, batch_size=2)
    chosen = solution["reward_scores"](model, reward_tokenizer, pairs["chosen"])
    rejected = solution["reward_scores"](model, reward_tokenizer, pairs["rejected"])
    assert metrics["accuracy"] == pytest.approx(float((chosen > rejected).mean()))
    assert metrics["margin"] == pytest.approx(float((chosen - rejected).mean()), abs=1e-5)
    swapped = pairs.rename_columns({"chosen": "rejected", "rejected": "chosen"})
    assert solution["pairwise_accuracy"](model, reward_tokenizer, swapped)["accuracy"] == pytest.approx(1 - metrics["accuracy"])


def test_reward_trainer_runs_with_the_notebook_config(solution, fixtures, reward_tokenizer, tmp_path):
    config = solution["make_reward_config"](tmp_path)
    assert (config.bf16, config.fp16) == (False, False)
    assert not config.gradient_checkpointing
    assert config.max_steps == solution["RM_MAX_STEPS"] == 2
    pairs = Dataset.from_list([EXAMPLE] * 8).map(solution["to_implicit_prompt_preferences"], remove_columns=["prompt"])
    pairs = pairs.map(solution["tokenize_reward_pair"], fn_kwargs={"tokenizer": reward_tokenizer})
    with solution["quietly"]():
        model = solution["build_reward_model"](str(fixtures.tiny), reward_tokenizer)
        head = model.score.weight.detach().clone()
        trainer = solution["RewardTrainer"](model=model, args=config, processing_class=reward_tokenizer, train_dataset=pairs)
        trainer.train()
    assert trainer.state.global_step == 2
    assert not torch.equal(head, model.score.weight)


# ---------------------------------------------------------------- PPO

def test_tokenize_prompt_ends_with_the_generation_prompt(solution, tokenizer):
    ids = solution["tokenize_prompt"]({"prompt": EXAMPLE["prompt"], "chosen": "x", "rejected": "y"}, tokenizer)["input_ids"]
    assert isinstance(ids, list) and all(isinstance(i, int) for i in ids)
    messages = [{"role": "user", "content": EXAMPLE["prompt"]}]
    with_header = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    without_header = tokenizer.apply_chat_template(messages, tokenize=False)
    header = with_header[len(without_header):]
    assert header.strip(), "the template should add a generation prompt"
    header_ids = tokenizer(header, add_special_tokens=False)["input_ids"]
    assert ids[-len(header_ids):] == header_ids
    assert tokenizer.decode(ids) == with_header


def test_load_ppo_models_freezes_reward_and_reference(solution, fixtures, reward_model_dir, reward_tokenizer):
    with solution["quietly"]():
        value_model, reward_model, policy, ref_policy = solution["load_ppo_models"](
            str(fixtures.tiny), reward_model_dir, reward_tokenizer
        )
    assert type(value_model).__name__ == type(reward_model).__name__ == "LlamaForSequenceClassification"
    assert type(policy).__name__ == type(ref_policy).__name__ == "LlamaForCausalLM"
    assert policy is not ref_policy and value_model is not reward_model
    assert all(p.requires_grad for p in policy.parameters()) and all(p.requires_grad for p in value_model.parameters())
    assert not any(p.requires_grad for p in reward_model.parameters()) and not reward_model.training
    assert not any(p.requires_grad for p in ref_policy.parameters()) and not ref_policy.training
    for model in (value_model, reward_model, policy, ref_policy):
        assert next(model.parameters()).dtype == torch.float32


def test_make_ppo_config_follows_the_constants(solution, tmp_path):
    config = solution["make_ppo_config"](tmp_path)
    assert type(config).__module__.startswith("trl.experimental.ppo")
    assert (config.bf16, config.fp16) == (False, False)
    assert config.stop_token == "eos" and config.save_strategy == "no"
    assert not config.gradient_checkpointing
    assert config.learning_rate == solution["PPO_LR"] and config.total_episodes == solution["PPO_TOTAL_EPISODES"]
    assert config.per_device_train_batch_size == solution["PPO_BATCH_SIZE"]
    assert config.response_length == solution["PPO_RESPONSE_LENGTH"]


def test_a_few_ppo_steps_change_the_policy_but_not_the_reference(solution, fixtures, reward_model_dir, tmp_path):
    tokenizer = solution["set_chat_safe_pad_token"](solution["load_tokenizer"](str(fixtures.tiny), padding_side="left"))
    torch.manual_seed(0)
    with solution["quietly"]():
        value_model, reward_model, policy, ref_policy = solution["load_ppo_models"](str(fixtures.tiny), reward_model_dir, tokenizer)
    snapshots = {name: params(m) for name, m in
                 (("value", value_model), ("reward", reward_model), ("policy", policy), ("ref", ref_policy))}
    prompts = Dataset.from_list([{"prompt": f"Tell me about hobby number {i}."} for i in range(8)])
    prompts = prompts.map(solution["tokenize_prompt"], fn_kwargs={"tokenizer": tokenizer}, remove_columns=["prompt"])
    with solution["quietly"](), pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdout", __import__("io").StringIO())  # TRL prints a banner
        trainer = solution["build_ppo_trainer"](
            solution["make_ppo_config"](tmp_path), tokenizer, value_model, reward_model, policy, ref_policy,
            prompts, prompts.select(range(2)),
        )
        trainer.train()
    assert trainer.state.global_step == solution["PPO_TOTAL_EPISODES"] // solution["PPO_BATCH_SIZE"] == 2
    assert not same(snapshots["policy"], policy), "PPO did not update the policy"
    assert not same(snapshots["value"], value_model), "PPO did not update the value model"
    assert same(snapshots["ref"], ref_policy), "the reference policy must stay frozen"
    assert same(snapshots["reward"], reward_model), "the reward model must stay frozen"
    assert all("objective/scores" in entry for entry in trainer.state.log_history[:2])


def test_score_answers_penalises_unfinished_answers_and_ignores_padding(solution, fixtures, reward_model_dir):
    from transformers import AutoModelForSequenceClassification

    tokenizer = solution["set_chat_safe_pad_token"](solution["load_tokenizer"](str(fixtures.tiny), padding_side="left"))
    reward_model = AutoModelForSequenceClassification.from_pretrained(reward_model_dir).eval()
    policy = AutoModelForCausalLM.from_pretrained(fixtures.tiny).eval()
    prompts = ["Hi!", "Do you like long walks in the rain when nobody else is outside?", "Pizza?", "Tell me a story."]
    eos = tokenizer.eos_token_id
    ends_now = torch.tensor([[1.0], [0.0], [1.0], [0.0]])  # answers to prompts 0 and 2 end at their first token

    def end_some_answers(module, inputs, logits):
        rows = ends_now[: logits.shape[0]] if logits.shape[0] == len(prompts) else ends_now[current]
        logits = logits.clone()
        logits[..., eos] += 1e4 * rows
        logits[..., eos] -= 1e4 * (1 - rows)
        return logits

    current = slice(0, 4)
    hook = policy.lm_head.register_forward_hook(end_some_answers)
    try:
        penalised = solution["score_answers"](policy, reward_model, tokenizer, prompts, 6, 1.0)
        plain = solution["score_answers"](policy, reward_model, tokenizer, prompts, 6, None)
        singles = []
        for i, prompt in enumerate(prompts):
            current = slice(i, i + 1)
            singles.append(solution["score_answers"](policy, reward_model, tokenizer, [prompt], 6, None)["reward"])
    finally:
        hook.remove()
    assert penalised["finished"] == plain["finished"] == 0.5
    assert plain["score"] == pytest.approx(plain["reward"])
    assert penalised["reward"] == pytest.approx(plain["reward"], abs=1e-5)
    assert penalised["score"] == pytest.approx(plain["reward"] - 0.5, abs=1e-5)
    assert plain["reward"] == pytest.approx(sum(singles) / len(singles), abs=1e-4), "left padding changed a reward"
    # an answer that ends at once is an empty assistant turn: the reward model reads its end-of-turn token
    empty = solution["reward_scores"](reward_model, tokenizer, [conversation(prompts[0], "")])[0]
    assert singles[0] == pytest.approx(float(empty), abs=1e-4)


def test_bench_ppo_smoke_on_the_tiny_model(fixtures, reward_model_dir, tmp_path):
    import json
    import subprocess
    import sys

    from autograder.layout import REPO_ROOT

    out = tmp_path / "ppo"
    command = [sys.executable, "-m", "autograder", "bench", "ppo", "--model", str(fixtures.tiny), "--reward-model",
               str(reward_model_dir), "--updates", "2", "--eval-prompts", "4", "--samples", "3", "--threads", "1", "--out", str(out),
               "--set", "PPO_RESPONSE_LENGTH=8", "--set", "PPO_MISSING_EOS_PENALTY=None", "--set", "PPO_TRAIN_PROMPTS=3",
               "--set", "PPO_BATCH_SIZE=2", "--set", "num_mini_batches=2", "--set", "temperature=0.5"]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.with_suffix(".json").read_text())
    assert len(result["updates"]) == result["summary"]["updates"] == 2
    assert result["settings"]["response_length"] == 8 and result["settings"]["temperature"] == 0.5
    assert result["settings"]["missing_eos_penalty"] is None and result["settings"]["num_mini_batches"] == 2
    assert result["held_out"]["prompts"] == 4 and result["train_prompts"] == 3
    for when in ("before", "after"):
        assert set(result["held_out"][when]) == {"score", "reward", "finished"}
        assert result["held_out"][when]["score"] == pytest.approx(result["held_out"][when]["reward"])  # no penalty
    assert len(result["samples"]) == 3 and all(set(s) == {"prompt", "before", "after"} for s in result["samples"])
    assert all(isinstance(s["before"], str) and isinstance(s["after"], str) for s in result["samples"])
    assert len({s["prompt"] for s in result["samples"]}) == 3  # three different held-out prompts
    assert "greedy sample answers" in done.stdout
    assert out.with_suffix(".png").stat().st_size > 10_000
    bad = subprocess.run(command[:-2] + ["--set", "tempreature=0.5"], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode != 0 and "tempreature" in bad.stderr
    too_few = subprocess.run(command + ["--set", "PPO_TRAIN_PROMPTS=1"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=300)  # fewer prompts than a batch: TRL would wait forever
    assert too_few.returncode == 2 and "PPO_TRAIN_PROMPTS=1 is smaller than PPO_BATCH_SIZE=2" in too_few.stderr


# ---------------------------------------------------------------- analysis

@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_sequence_log_probs_equal_a_per_token_loop(solution, fixtures, padding_side):
    tokenizer = solution["load_tokenizer"](str(fixtures.tiny), padding_side=padding_side)
    model = AutoModelForCausalLM.from_pretrained(fixtures.tiny, dtype=torch.float32).eval()
    texts = ["A hash table maps keys to values.", "Hi there", "Tin is a chemical element with the symbol Sn. 🙂 It is soft."]
    result = solution["sequence_log_probs"](model, tokenizer, texts, batch_size=2, max_length=64)
    for i, text in enumerate(texts):
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            log_probs = torch.log_softmax(model(input_ids=ids).logits[0], dim=-1)
        expected = sum(float(log_probs[t - 1, ids[0, t]]) for t in range(1, ids.shape[1]))
        assert result["total"][i] == pytest.approx(expected, abs=1e-4)
        assert result["num_tokens"][i] == ids.shape[1] - 1
        assert result["mean"][i] == pytest.approx(expected / (ids.shape[1] - 1), abs=1e-5)


def test_sequence_log_probs_truncates_and_handles_one_token_texts(solution, fixtures):
    tokenizer = solution["load_tokenizer"](str(fixtures.tiny))
    model = AutoModelForCausalLM.from_pretrained(fixtures.tiny, dtype=torch.float32).eval()
    result = solution["sequence_log_probs"](model, tokenizer, ["word " * 50, "Hi"], max_length=10)
    assert result["num_tokens"].tolist() == [9, 0]
    assert result["total"][1] == result["mean"][1] == 0.0, "a one-token text has nothing to score"


def test_unseen_texts_load_from_the_fixture(solution, fixtures):
    texts = solution["load_unseen_texts"](str(fixtures.unseen), 5)
    assert len(texts) == 5 and all(isinstance(t, str) and t for t in texts)
    assert texts == solution["load_unseen_texts"](str(fixtures.unseen), 5), "the selection is seeded"


# ---------------------------------------------------------------- model cards

def test_model_card_parses_back_with_metadata(solution, tmp_path):
    card = solution["build_model_card"](
        title="SmolLM aligned with PPO",
        description="A homework model.",
        base_model="HuggingFaceTB/SmolLM-135M-Instruct",
        dataset_id="HumanLLMs/Human-Like-DPO-Dataset",
        hyperparameters={"learning_rate": 1e-5, "batch_size": 16, "max_steps": None},
        metrics={"accuracy": 0.9375, "updates": 12},
        samples=[{"prompt": "What's your morning routine like?", "before": "I am an AI.", "after": "Coffee! ☕\nThen a walk."}],
        tags=["ppo"],
    )
    assert isinstance(card, ModelCard)
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    data = loaded.data.to_dict()
    assert data["base_model"] == "HuggingFaceTB/SmolLM-135M-Instruct"
    assert data["datasets"] == ["HumanLLMs/Human-Like-DPO-Dataset"]
    assert data["pipeline_tag"] == "text-generation"
    assert data["library_name"] == "transformers" and data["license"] == "apache-2.0"
    assert "ppo" in data["tags"]
    for text in ("SmolLM aligned with PPO", "learning_rate", "0.9375", "What's your morning routine like?", "Coffee! ☕",
                 "Then a walk."):
        assert text in loaded.text


def test_reward_model_card_uses_the_classification_pipeline(solution, tmp_path):
    card = solution["build_model_card"](
        title="RM", description="d", base_model="org/base", dataset_id="org/data", hyperparameters={},
        metrics={"accuracy": 1.0}, samples=[{"prompt": "p", "chosen": "c", "chosen reward": "1.0"}],
        pipeline_tag="text-classification", tags=["reward-model"],
    )
    card.save(tmp_path / "README.md")
    assert ModelCard.load(tmp_path / "README.md").data.pipeline_tag == "text-classification"
