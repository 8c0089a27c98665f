# %% [markdown]
# # Part 2: a reward model and PPO with TRL
#
# Part 1 built DPO by hand. This part is lighter on code and introduces the library most people use for
# alignment in practice, 🤗 [TRL](https://huggingface.co/docs/trl). With it you train the classic RLHF
# pipeline: first a **reward model** that scores answers, then a policy optimised against that score with
# **PPO** (Proximal Policy Optimization).
#
# **A word about PPO.** In reinforcement learning PPO is the default algorithm: it is robust, works on a
# huge range of problems and is usually limited only by how fast you can collect experience. At the same time
# it is infamous for how hard it is to implement correctly. Dozens of small details (advantage
# normalisation, value clipping, how the KL penalty enters the reward, where the reward is read, ...) decide
# whether it learns, and a wrong one rarely crashes: it just quietly learns something strange. See
# [The 37 implementation details of PPO](https://iclr-blog-track.github.io/2022/03/25/ppo-implementation-details/)
# and, for language models, [The N implementation details of RLHF with PPO](https://huggingface.co/blog/the_n_implementation_details_of_rlhf_with_ppo).
# Many PPO implementations you can find online get some of these wrong, so unless you have solid RL
# experience, use a maintained implementation: TRL for RLHF, or for example
# [Sample Factory](https://github.com/alex-petrenko/sample-factory) for classic RL.

# %% tags=["library"] kind="readonly" id="part2_imports"
import contextlib
import io

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # PPO lives in trl.experimental, which warns on import

import datasets
import transformers
from huggingface_hub import HfApi, ModelCard, ModelCardData
from trl import RewardConfig, RewardTrainer
from trl.experimental.ppo import PPOConfig, PPOTrainer


@contextlib.contextmanager
def quietly():
    """Run a block without progress bars, library warnings or anything else written to stderr.

    nbgrader gives zero points to a test cell that writes to stderr, so the checks below wrap model loading in it.
    """
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        transformers.logging.set_verbosity(verbosity)
        transformers.logging.enable_progress_bar()
        datasets.enable_progress_bars()


def trainer_precision() -> dict[str, bool]:
    """The `bf16`/`fp16` switches of a TRL config for DEVICE.

    TRL configs turn bf16 on by default, which fails on CPUs and on GPUs older than Ampere (a T4). Ampere and
    newer GPUs train in bfloat16, older ones in float16 (with loss scaling), CPUs and Apple GPUs in float32.
    The models themselves are loaded in float32 either way: these flags only switch on mixed precision.
    """
    on_cuda = DEVICE == "cuda"
    return {"bf16": on_cuda and AMP_DTYPE == torch.bfloat16, "fp16": on_cuda and AMP_DTYPE == torch.float16}


def checkpointing_off() -> dict[str, bool]:
    """Switch activation (gradient) checkpointing off: TRL turns it on by default, and for a 135M model it only
    costs time. transformers 5 renamed the flag; the old name still works but warns."""
    renamed = "activation_checkpointing" in RewardConfig.__dataclass_fields__
    return {"activation_checkpointing" if renamed else "gradient_checkpointing": False}


REWARD_MODEL_DIR = OUTPUT_DIR / "reward-model"
PPO_DIR = OUTPUT_DIR / "ppo"
TRAINER_RUNS_DIR = OUTPUT_DIR / "trainer-runs"  # scratch space the TRL trainers require

# %% [markdown]
# ## Reward model [1 point]
#
# DPO never needs an explicit reward: its update is written directly in terms of the policy's
# log-probabilities. PPO does need one, because it maximises the reward of the answers the policy itself
# generates. The reward can be any function of a prompt and an answer (for maths, "is the final answer
# correct?"); here, as in classic RLHF, it is a model trained on the same preference pairs.
#
# A reward model is the language model with its next-token head replaced by a small linear layer (`score`)
# that maps the hidden state of one token to a single number $r_\phi(x, y)$. It is trained with the
# Bradley–Terry objective: the probability that people prefer $y_w$ over $y_l$ is modelled as
# $\sigma(r_\phi(x, y_w) - r_\phi(x, y_l))$, so the loss is
#
# $$
# \mathcal{L}_\text{RM}(\phi) = -\mathbb{E}_{(x, y_w, y_l)}\left[\log \sigma\left(r_\phi(x, y_w) - r_\phi(x, y_l)\right)\right].
# $$
#
# Compare it with the DPO loss: DPO is the same objective with the implicit reward
# $\beta \log \frac{\pi_\theta(y \mid x)}{\pi_\text{ref}(y \mid x)}$ in place of $r_\phi$. Read more in the
# [reward modelling chapter of the RLHF book](https://rlhfbook.com/c/07-reward-models.html); TRL's
# `RewardTrainer` implements this loss for you.
#
# `RewardTrainer` accepts several [dataset formats](https://huggingface.co/docs/trl/dataset_formats). We
# use the *conversational preference format with an implicit prompt*: there is no `prompt` column, and each
# of `chosen` and `rejected` is a whole conversation that contains the user's message:
#
# ```python
# {
#     "chosen": [
#         {"role": "user", "content": "Can penguins fly?"},
#         {"role": "assistant", "content": "No, but they are superb swimmers!"},
#     ],
#     "rejected": [
#         {"role": "user", "content": "Can penguins fly?"},
#         {"role": "assistant", "content": "Yes, they fly south every winter."},
#     ],
# }
# ```
#
# Each conversation is rendered with the tokenizer's chat template (normally by the trainer; here we do it
# ourselves, for a reason explained below), so the reward model sees exactly the text format that the chat
# model produces.

# %% [markdown]
# **TODO: `to_implicit_prompt_preferences` (0.5 points).**

# %% tags=["library"] kind="solution" id="to_implicit_prompt_preferences"
def to_implicit_prompt_preferences(example: dict[str, str]) -> dict[str, list[dict[str, str]]]:
    """Turn a text preference example into TRL's conversational format with an implicit prompt.

    Args:
        example: a dict with the user's "prompt" and the assistant's "chosen" and "rejected" answers (strings).

    Returns:
        {"chosen": messages, "rejected": messages}, where each list of messages is the user turn (role "user",
        content = the prompt) followed by the assistant turn (role "assistant", content = that answer).
    """
    ### BEGIN SOLUTION
    user_turn = {"role": "user", "content": example["prompt"]}
    return {
        answer: [user_turn, {"role": "assistant", "content": example[answer]}] for answer in ("chosen", "rejected")
    }
    ### END SOLUTION

# %% kind="test" id="test_to_implicit_prompt_preferences" points=0.5
with visible_checks():
    _example = {"prompt": "Is tea better than coffee?", "chosen": "Tea, always! 🍵", "rejected": "As an AI, I cannot say."}
    _pair = to_implicit_prompt_preferences(_example)
    assert isinstance(_pair, dict) and set(_pair) == {"chosen", "rejected"}, (
        f"expected a dict with exactly the keys 'chosen' and 'rejected' (the prompt lives inside them), got {_pair!r}"
    )
    for _answer in ("chosen", "rejected"):
        _expected = [
            {"role": "user", "content": _example["prompt"]},
            {"role": "assistant", "content": _example[_answer]},
        ]
        assert _pair[_answer] == _expected, f"'{_answer}' should be\n{_expected}\ngot\n{_pair[_answer]}"
    print("to_implicit_prompt_preferences looks right")

### BEGIN HIDDEN TESTS
from autograder.checks import grade_cell

grade_cell("test_to_implicit_prompt_preferences", globals())
### END HIDDEN TESTS

# %% [markdown]
# The reward model trains on the same pairs as DPO, and we evaluate it on the same held-out pairs:

# %%
rm_train_pairs, rm_eval_pairs = held_out_split(DATASET_ID, size=EVAL_SIZE)
run_on_one_example(to_implicit_prompt_preferences, rm_train_pairs[0])  # an unfinished TODO stops here, briefly
rm_train_dataset = rm_train_pairs.map(to_implicit_prompt_preferences, remove_columns=["prompt"])
rm_eval_dataset = rm_eval_pairs.map(to_implicit_prompt_preferences, remove_columns=["prompt"])
print(f"{len(rm_train_dataset)} training pairs, {len(rm_eval_dataset)} held-out pairs")
rm_train_dataset[0]

# %% [markdown]
# ### Which token does the reward come from?
#
# A sequence classifier computes a hidden state for every token but returns the score of **one** of them,
# the last real token of each sequence. The model finds that token with the pad token: in transformers 5 it
# is the rightmost token that is *not* `config.pad_token_id`; older versions took the token just before the
# *first* pad token. TRL's PPO reads the reward of a generated answer in its own way: it cuts the answer
# after the end-of-turn token, fills the rest with pad tokens, hides *every* pad token from attention and
# takes the score of the token before the first pad token of the answer, i.e. of the `<|im_end|>` that
# closes the answer.
#
# That is why the choice of pad token matters. Like many chat models, SmolLM pads with its end-of-turn
# token `<|im_end|>`, which also closes every turn of a chat:
#
# - with the old rule the reward would be read at the end of the system prompt (or of the user's message
#   for templates without one), so every answer to the same question would get the same reward;
# - with the current rule it skips the final `<|im_end|>` and lands on the last word of the answer;
# - in PPO the `<|im_end|>` tokens of the prompt would be hidden from attention.
#
# The fix is to pad with a token that never appears in chat text. SmolLM's `<|endoftext|>` (its unknown
# token) is such a token, and it already has an embedding. The original notebook added a brand-new `[PAD]`
# token instead; its id is 49,152 while the embedding matrix has rows 0 to 49,151 only. TRL happens to
# survive that, because it replaces pad ids by 0 before every forward pass, but any other code that pads a
# batch with this tokenizer would index past the end of the embedding. If you do add a token, call
# `model.resize_token_embeddings(len(tokenizer))` on every model that will see it.
#
# One more detail: the chat template writes a newline after each `<|im_end|>`. A reward model trained on
# the full template would learn to score that newline, while PPO reads the `<|im_end|>` before it. So we
# tokenize the training conversations ourselves and cut each one right after its final `<|im_end|>`: the
# reward model then learns to score exactly the token PPO will read. `RewardTrainer` accepts such
# pre-tokenized data (`chosen_ids` / `rejected_ids` columns) and skips its own tokenization.
#
# The helpers below implement all this. `set_chat_safe_pad_token` picks the pad token: the current one if it
# never occurs in a rendered conversation, else the unknown token, else a new `[PAD]` (then every model must
# be resized, which `cover_tokenizer` does).

# %% tags=["library"] kind="readonly" id="pad_token_helpers"
def set_chat_safe_pad_token(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Make the tokenizer pad with a token that never occurs in chat-formatted text (in place; also returned)."""
    probe = [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello!"}]
    chat_ids = set(tokenizer.apply_chat_template(probe, tokenize=True, return_dict=True)["input_ids"])
    for candidate in (tokenizer.pad_token, tokenizer.unk_token):
        if candidate is not None and tokenizer.convert_tokens_to_ids(candidate) not in chat_ids:
            tokenizer.pad_token = candidate
            return tokenizer
    tokenizer.add_special_tokens({"pad_token": "[PAD]"})
    return tokenizer


def cover_tokenizer(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """Give the model an embedding row for every token id of the tokenizer (needed only after adding tokens)."""
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    return model


def conversation_ids(messages: list[dict[str, str]], tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Token ids of a chat conversation, ending with the end-of-turn token that closes its last message."""
    ids = list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])
    ends = [i for i, token in enumerate(ids) if token == tokenizer.eos_token_id]
    return ids[: ends[-1] + 1] if ends else ids


def tokenize_reward_pair(example: dict[str, list], tokenizer: PreTrainedTokenizerBase) -> dict[str, list[int]]:
    """The pre-tokenized form of an implicit-prompt preference pair that RewardTrainer accepts."""
    return {f"{answer}_ids": conversation_ids(example[answer], tokenizer) for answer in ("chosen", "rejected")}


def cut_answer_ids(messages: list[dict[str, str]], tokenizer: PreTrainedTokenizerBase, answer_tokens: int) -> list[int]:
    """Token ids of a conversation whose last message stops after `answer_tokens` tokens, without the end-of-turn
    token: an unfinished answer as PPO scores it. An answer that is not longer is kept whole, end token included."""
    ids = conversation_ids(messages, tokenizer)
    prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=True, return_dict=True)
    stop = len(prompt["input_ids"]) + answer_tokens
    return ids[:stop] if stop < len(ids) - 1 else ids


def tokenize_cut_reward_pair(
    example: dict[str, list], index: int, tokenizer: PreTrainedTokenizerBase, answer_tokens: tuple[int, int]
) -> dict[str, list[int]]:
    """`tokenize_reward_pair` with both answers cut after the same k tokens, k in `answer_tokens` (inclusive),
    drawn from the row's index so that every run cuts the same way."""
    k = random.Random(index).randint(*answer_tokens)
    return {f"{answer}_ids": cut_answer_ids(example[answer], tokenizer, k) for answer in ("chosen", "rejected")}


def pooled_token_index(input_ids: list[int], pad_token_id: int, rule: str = "rightmost non-pad") -> int:
    """Index of the token whose hidden state a sequence classifier scores, under the current or the old rule."""
    if rule == "rightmost non-pad":  # transformers >= 4.48
        return max(i for i, token in enumerate(input_ids) if token != pad_token_id)
    if rule == "before first pad":  # older transformers; TRL's PPO applies it to the answer part
        return input_ids.index(pad_token_id) - 1 if pad_token_id in input_ids else len(input_ids) - 1
    raise ValueError(f"unknown rule {rule!r}")

# %%
reward_tokenizer = set_chat_safe_pad_token(load_tokenizer(MODEL_ID))
print(f"pad token: {reward_tokenizer.pad_token!r} (id {reward_tokenizer.pad_token_id}); end of turn: "
      f"{reward_tokenizer.eos_token!r} (id {reward_tokenizer.eos_token_id})")
_ids = conversation_ids(
    [{"role": "user", "content": "Do you like cats?"}, {"role": "assistant", "content": "I adore them! 🐱"}],
    reward_tokenizer,
)
for _pad_id, _rule in ((reward_tokenizer.eos_token_id, "before first pad"),
                       (reward_tokenizer.eos_token_id, "rightmost non-pad"),
                       (reward_tokenizer.pad_token_id, "rightmost non-pad")):
    _i = pooled_token_index(_ids, _pad_id, _rule)
    print(f"pad={reward_tokenizer.convert_ids_to_tokens(_pad_id)!r:<16} rule={_rule!r:<20} -> token {_i:>2} of "
          f"{len(_ids)}: ...{reward_tokenizer.decode(_ids[max(0, _i - 5): _i + 1])!r}")

# %% [markdown]
# Only the last line scores the whole answer up to and including its `<|im_end|>`.
#
# Now write `build_reward_model`: load `AutoModelForSequenceClassification` with **one** output (the reward),
# in float32 (mixed precision is the trainer's job), make sure it has embeddings for every token of the
# tokenizer, and store the tokenizer's pad token id in the model config. Loading prints a report saying that
# `score.weight` was newly initialised: that is the new reward head.

# %% [markdown]
# **TODO: `build_reward_model` (0.5 points).**

# %% tags=["library"] kind="solution" id="build_reward_model"
def build_reward_model(model_id: str, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A reward model: `model_id` with a freshly initialised one-output classification head.

    Args:
        model_id: Hub id or local folder of the causal LM to start from.
        tokenizer: the tokenizer the model will be used with, with a chat-safe pad token.

    Returns:
        An AutoModelForSequenceClassification in float32 with `config.num_labels == 1` and
        `config.pad_token_id == tokenizer.pad_token_id`.
    """
    ### BEGIN SOLUTION
    model = AutoModelForSequenceClassification.from_pretrained(model_id, num_labels=1, dtype=torch.float32)
    cover_tokenizer(model, tokenizer)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model
    ### END SOLUTION

# %% [markdown]
# The training configuration is given. One epoch is plenty (the preferences of this dataset are easy to
# tell apart); the `demo` and `fast` profiles stop after a few steps. Gradient checkpointing, which TRL turns
# on by default, is off: the model is small, and checkpointing only slows training down.
#
# By default the whole network is fine-tuned, as `RewardTrainer` does. With `RM_FREEZE_BACKBONE = True` only
# the new `score` layer learns: a linear probe on the features of the instruct model. That is several times
# cheaper (no backward pass through the network) and is what the `demo` profile does on a CPU; it needs a
# much larger learning rate.
#
# **Unfinished answers.** PPO reads the reward at the last token of each sampled answer. An answer that ends
# within `PPO_RESPONSE_LENGTH` tokens is read at its `<|im_end|>`, the token the reward model was trained on;
# but SmolLM's answers are long, and most are cut before they end, so PPO asks for the reward of a half-written
# sentence. A reward model trained only on finished conversations has never seen such a position. In the
# offline demo its verdict there was no better than a coin flip (about half of the held-out pairs ranked
# right), so PPO was climbing noise and its reward never rose. The fix is to train on what PPO will show the
# model: `reward_training_pairs` adds a copy of every pair with both answers cut after the same number of
# tokens, 8 to 24 (`RM_CUT_ANSWERS`), and no end-of-turn token. The reward model then learns to judge how an
# answer *begins*, which is what a policy can change within a few updates. Set `RM_CUT_ANSWERS = None` to see
# the difference for yourself.

# %% tags=["library"] kind="readonly" id="reward_model_hparams"
RM_LR = 5e-5
RM_BATCH_SIZE = 16
RM_EPOCHS = 1
RM_MAX_STEPS = None  # None: RM_EPOCHS full epochs
RM_MAX_LENGTH = 1024  # pairs with a longer conversation are left out
RM_FREEZE_BACKBONE = False  # True: train only the `score` head
RM_CUT_ANSWERS = (8, 24)  # each pair also appears cut after 8-24 answer tokens (see above); None: finished answers only
if PROFILE == "demo":
    RM_LR, RM_BATCH_SIZE, RM_MAX_STEPS, RM_MAX_LENGTH, RM_FREEZE_BACKBONE = 3e-3, 8, 30, 256, True
elif PROFILE == "fast":
    RM_BATCH_SIZE, RM_MAX_STEPS, RM_MAX_LENGTH = 4, 2, 128
RM_HPARAMS = dict(
    learning_rate=RM_LR, batch_size=RM_BATCH_SIZE, epochs=RM_EPOCHS, max_steps=RM_MAX_STEPS, max_length=RM_MAX_LENGTH,
    trained_layers="score head only" if RM_FREEZE_BACKBONE else "all",
    cut_answers="none" if RM_CUT_ANSWERS is None else f"{RM_CUT_ANSWERS[0]}-{RM_CUT_ANSWERS[1]} tokens",
)


def reward_training_pairs(pairs: Dataset, tokenizer: PreTrainedTokenizerBase) -> Dataset:
    """The pre-tokenized pairs RewardTrainer learns from: each pair with its finished answers and, unless
    RM_CUT_ANSWERS is None, once more with both answers cut (`tokenize_cut_reward_pair`), shuffled together."""
    finished = pairs.map(tokenize_reward_pair, fn_kwargs={"tokenizer": tokenizer})
    if RM_CUT_ANSWERS is None:
        return finished
    cut = pairs.map(tokenize_cut_reward_pair, with_indices=True,
                    fn_kwargs={"tokenizer": tokenizer, "answer_tokens": RM_CUT_ANSWERS})
    return concatenate_datasets([finished, cut]).shuffle(seed=42)


def make_reward_config(output_dir: Path) -> RewardConfig:
    """The RewardTrainer configuration for this notebook (precision follows DEVICE)."""
    return RewardConfig(
        output_dir=str(output_dir),
        num_train_epochs=RM_EPOCHS,
        max_steps=RM_MAX_STEPS or -1,
        per_device_train_batch_size=RM_BATCH_SIZE,
        learning_rate=RM_LR,
        max_length=RM_MAX_LENGTH,
        disable_dropout=True,
        logging_steps=1 if PROFILE != "full" else 25,
        save_strategy="no",
        report_to="wandb" if ENABLE_WANDB else "none",
        seed=42,
        **trainer_precision(),
        **checkpointing_off(),
    )


@torch.no_grad()
def reward_scores(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, conversations: list[list[dict]], batch_size: int = 16,
    answer_tokens: int | None = None,
) -> np.ndarray:
    """The reward of each chat conversation, read at the end-of-turn token that closes it (as in PPO), or, with
    `answer_tokens`, at the last token of its answer cut after that many tokens (`cut_answer_ids`)."""
    was_training = model.training
    model.eval()
    scores = []
    for start in range(0, len(conversations), batch_size):
        rows = [torch.tensor(conversation_ids(messages, tokenizer) if answer_tokens is None
                             else cut_answer_ids(messages, tokenizer, answer_tokens))
                for messages in conversations[start: start + batch_size]]
        input_ids = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=tokenizer.pad_token_id)
        input_ids = input_ids.to(model.device)
        scores.append(model(input_ids=input_ids, attention_mask=(input_ids != tokenizer.pad_token_id).long()).logits[:, 0])
    model.train(was_training)
    return torch.cat(scores).float().cpu().numpy()


def pairwise_accuracy(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: Dataset, batch_size: int = 16,
    answer_tokens: int | None = None,
) -> dict[str, float]:
    """How often the reward model scores `chosen` above `rejected` (ties count as wrong), and the mean margin;
    with `answer_tokens`, of the pairs with both answers cut after that many tokens."""
    margins = reward_scores(model, tokenizer, pairs["chosen"], batch_size, answer_tokens) - reward_scores(
        model, tokenizer, pairs["rejected"], batch_size, answer_tokens
    )
    return {"accuracy": float(np.mean(margins > 0)), "margin": float(np.mean(margins))}

# %% [markdown]
# Build the reward model and train it:

# %%
set_seed(42)
reward_model = build_reward_model(MODEL_ID, reward_tokenizer)
if RM_FREEZE_BACKBONE:
    reward_model.requires_grad_(False)
    reward_model.score.requires_grad_(True)
reward_trainer = RewardTrainer(
    model=reward_model,
    args=make_reward_config(TRAINER_RUNS_DIR / "reward-model"),
    processing_class=reward_tokenizer,
    train_dataset=reward_training_pairs(rm_train_dataset, reward_tokenizer),
)
reward_trainer.train()

# %% [markdown]
# Held-out pairwise accuracy is the fraction of held-out pairs whose chosen answer gets the higher reward. We
# measure it twice: on the finished answers, and with both answers cut after 16 tokens, the way PPO will
# score an answer that has not finished yet:

# %%
RM_METRICS = pairwise_accuracy(reward_model, reward_tokenizer, rm_eval_dataset)
_cut = pairwise_accuracy(reward_model, reward_tokenizer, rm_eval_dataset, answer_tokens=16)
RM_METRICS.update(accuracy_cut_16=_cut["accuracy"], margin_cut_16=_cut["margin"])
METRICS["reward_model"] = RM_METRICS
print(f"held-out pairwise accuracy: {RM_METRICS['accuracy']:.3f}, mean margin {RM_METRICS['margin']:.2f}; answers cut "
      f"after 16 tokens: {RM_METRICS['accuracy_cut_16']:.3f}, mean margin {RM_METRICS['margin_cut_16']:.2f}")

_steps = [entry for entry in reward_trainer.state.log_history if "accuracy" in entry]
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
axes[0].plot([entry["step"] for entry in _steps], [entry["loss"] for entry in _steps], marker=".")
axes[0].set_title("reward model training loss")
axes[0].set_ylabel("pairwise loss")
axes[1].plot([entry["step"] for entry in _steps], [entry["accuracy"] for entry in _steps], marker=".",
             label="training batches")
axes[1].axhline(RM_METRICS["accuracy"], color="tab:green", linestyle="--", label="held-out")
axes[1].axhline(RM_METRICS["accuracy_cut_16"], color="tab:purple", linestyle=":",
                label="held-out, answers cut\nafter 16 tokens (as PPO\nreads most answers)")
axes[1].axhline(0.5, color="gray", lw=0.5)  # a coin flip
axes[1].set_ylim(-0.02, 1.02)
axes[1].set_title("reward model pairwise accuracy")
axes[1].set_ylabel("fraction of pairs ranked right")
axes[1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)  # beside the plot, not over it
for ax in axes:
    ax.set_xlabel("optimizer step")
fig.tight_layout()
fig.savefig(PLOTS_DIR / "reward_model_accuracy.png", dpi=120)
plt.show()

# %% [markdown]
# The reward of the chosen answer should be higher than the reward of the rejected one. Here is the first
# held-out pair:

# %%
_pair = rm_eval_dataset[0]
_scores = reward_scores(reward_model, reward_tokenizer, [_pair["chosen"], _pair["rejected"]])
RM_SAMPLE = {
    "prompt": _pair["chosen"][0]["content"],
    "chosen": _pair["chosen"][-1]["content"], "chosen reward": f"{_scores[0]:.3f}",
    "rejected": _pair["rejected"][-1]["content"], "rejected reward": f"{_scores[1]:.3f}",
}
for _key, _value in RM_SAMPLE.items():
    print(f"{_key:>16}: {_value}")

# %% kind="test" id="test_reward_model" points=0.5
with visible_checks():
    with quietly():
        _rm = build_reward_model(MODEL_ID, reward_tokenizer)
    assert isinstance(_rm, PreTrainedModel) and type(_rm).__name__.endswith("ForSequenceClassification"), (
        f"build a sequence classifier with AutoModelForSequenceClassification, got {type(_rm).__name__}"
    )
    assert _rm.config.num_labels == 1, f"a reward model outputs one number: num_labels should be 1, got {_rm.config.num_labels}"
    assert _rm.config.pad_token_id == reward_tokenizer.pad_token_id, (
        f"set model.config.pad_token_id to the tokenizer's pad token id {reward_tokenizer.pad_token_id}, "
        f"got {_rm.config.pad_token_id}"
    )
    assert next(_rm.parameters()).dtype == torch.float32, "load the reward model in float32"
    del _rm
    _question = {"role": "user", "content": "What do you think about rainy days?"}
    _scores = reward_scores(reward_model, reward_tokenizer, [
        [_question, {"role": "assistant", "content": "I love them! ☔ Cozy blankets and tea 😊"}],
        [_question, {"role": "assistant", "content": "As an AI, I do not experience weather."}],
    ])
    assert abs(float(_scores[0] - _scores[1])) > 1e-6, (
        "two different answers to the same question got the same reward: the score is read from the prompt, not "
        "the answer. Check the pad token and config.pad_token_id"
    )
    if PROFILE != "fast":  # about one label in ten is flipped in the offline data, so even a perfect model scores ~0.9
        assert RM_METRICS["accuracy"] >= 0.7, (
            f"held-out pairwise accuracy is {RM_METRICS['accuracy']:.2f}; a trained reward model should reach 0.7"
        )
    print("the reward model looks right")

### BEGIN HIDDEN TESTS
from autograder.checks import grade_cell

grade_cell("test_reward_model", globals())
### END HIDDEN TESTS

# %% [markdown]
# Save the reward model with its tokenizer (it is pushed to the Hub with a model card at the end):

# %%
reward_model.save_pretrained(REWARD_MODEL_DIR)
reward_tokenizer.save_pretrained(REWARD_MODEL_DIR)
print(f"saved the reward model to {REWARD_MODEL_DIR}")
del reward_trainer

# %% [markdown]
# ## PPO [2 points]
#
# **Heads-up.** TRL has reworked its PPO trainer several times, and its documentation and examples have
# repeatedly lagged behind the code. In TRL 1.x the trainer lives in `trl.experimental.ppo`. When the docs
# and the code disagree, trust the code (`trl/experimental/ppo/ppo_trainer.py`).
#
# PPO needs four models:
#
# - `policy`: the model being trained, starting from the same instruct model as in Part 1 (`MODEL_ID`);
# - `ref_policy`: a frozen copy of it; the reward is reduced by `kl_coef` times the KL divergence from it, so
#   the policy does not drift into gibberish that happens to fool the reward model;
# - `reward_model`: your trained reward model, frozen;
# - `value_model`: the critic, which predicts the future reward at every token to compute advantages. It is
#   usually initialised from the reward model (it already "knows" what a good answer is) and trained along
#   with the policy.
#
# PPOTrainer takes a dataset of prompts only: the `input_ids` of each prompt formatted with the chat
# template and **ending with the generation prompt**, the assistant header the model continues from.
#
# The tokenizer pads on the left (the policy appends its answers on the right) and, as for the reward model,
# with a pad token that never occurs in chat text: TRL builds every attention mask as `input_ids != pad_id`,
# so with `<|im_end|>` as pad token it would hide the end of every turn of the prompt.

# %% [markdown]
# **TODO: `load_ppo_models` (2 points for the four PPO TODOs together: `load_ppo_models`, `tokenize_prompt`, `make_ppo_config` and `build_ppo_trainer` share one test, `test_ppo`).**

# %% tags=["library"] kind="solution" id="load_ppo_models"
def load_ppo_models(
    policy_id: str, reward_model_path: str | Path, tokenizer: PreTrainedTokenizerBase
) -> tuple[PreTrainedModel, PreTrainedModel, PreTrainedModel, PreTrainedModel]:
    """The four models of PPO, in float32, with embeddings covering `tokenizer`.

    Args:
        policy_id: the causal LM to align (Hub id or folder).
        reward_model_path: the trained reward model (a sequence classifier with one output).
        tokenizer: the PPO tokenizer.

    Returns:
        (value_model, reward_model, policy, ref_policy):
            - value_model: a sequence classifier loaded from the reward model, trainable;
            - reward_model: the reward model, frozen (eval mode, no gradients);
            - policy: a causal LM loaded from `policy_id`, trainable;
            - ref_policy: another copy of `policy_id`, frozen.
    """
    ### BEGIN SOLUTION
    def frozen(model: PreTrainedModel) -> PreTrainedModel:
        model.eval()
        model.requires_grad_(False)
        return model

    value_model = AutoModelForSequenceClassification.from_pretrained(reward_model_path, num_labels=1, dtype=torch.float32)
    reward_model = frozen(
        AutoModelForSequenceClassification.from_pretrained(reward_model_path, num_labels=1, dtype=torch.float32)
    )
    policy = AutoModelForCausalLM.from_pretrained(policy_id, dtype=torch.float32)
    ref_policy = frozen(AutoModelForCausalLM.from_pretrained(policy_id, dtype=torch.float32))
    models = (value_model, reward_model, policy, ref_policy)
    for model in models:
        cover_tokenizer(model, tokenizer)
    return models
    ### END SOLUTION


# %% [markdown]
# **TODO: `tokenize_prompt` (part of the 2 PPO points, with `load_ppo_models`, `make_ppo_config` and `build_ppo_trainer`).**

# %% tags=["library"] kind="solution" id="tokenize_prompt"
def tokenize_prompt(example: dict[str, str], tokenizer: PreTrainedTokenizerBase) -> dict[str, list[int]]:
    """Token ids of the example's prompt as a user turn followed by the generation prompt.

    Returns {"input_ids": [...]}, a flat list of ints that ends with the assistant header. Note that in
    transformers 5 `apply_chat_template(..., tokenize=True)` returns a dict-like BatchEncoding by default.
    """
    ### BEGIN SOLUTION
    messages = [{"role": "user", "content": example["prompt"]}]
    encoding = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    return {"input_ids": list(encoding["input_ids"])}
    ### END SOLUTION

# %% [markdown]
# Now the configuration and the trainer. Use the hyper-parameters below. Set the precision flags with
# `trainer_precision()`, stop each answer at the end-of-turn token (`stop_token="eos"`), and do not save
# checkpoints during training (`save_strategy="no"`). `PPOTrainer` takes the policy as `model` and the
# reference as `ref_model`; the tokenizer is its `processing_class`.
#
# A few PPO-specific knobs (see `PPOConfig`'s docstring for all of them):
#
# - `total_episodes`: how many prompts to answer in total; each update uses `per_device_train_batch_size`
#   of them, so there are `total_episodes / per_device_train_batch_size` updates;
# - `num_ppo_epochs`: how many passes each batch of answers gets before new answers are generated;
# - `response_length`: the maximum number of new tokens per answer;
# - `missing_eos_penalty`: subtracted from the reward of an answer that did not finish within
#   `response_length` tokens, which discourages rambling (`None` switches it off, as the `demo` profile does);
# - `kl_coef`: the weight of the KL penalty.
#
# (In TRL 1.12 `PPOTrainer` builds its own `Accelerator` and computes in float32 whatever `bf16`/`fp16` say,
# but the flags are still validated, so they must be possible on your device.)

# %% tags=["library"] kind="readonly" id="ppo_hparams"
PPO_LR = 5e-6
PPO_BATCH_SIZE = 16  # episodes (prompts) per PPO update
PPO_EPOCHS = 4  # num_ppo_epochs
PPO_TOTAL_EPISODES = 4_000
PPO_RESPONSE_LENGTH = 96
PPO_KL_COEF = 0.05
PPO_MISSING_EOS_PENALTY = 1.0
PPO_SAMPLE_GENERATIONS = 10  # how many times TRL prints a table of sample answers during training
PPO_TRAIN_PROMPTS = None  # None: every training prompt; a number N: only the first N, answered again at every update
if PROFILE == "demo":  # 12 updates of 8 short answers to the same 8 prompts, one pass over each batch, no EOS penalty
    PPO_LR, PPO_BATCH_SIZE, PPO_EPOCHS, PPO_TOTAL_EPISODES, PPO_RESPONSE_LENGTH = 2e-5, 8, 1, 96, 32
    PPO_MISSING_EOS_PENALTY, PPO_SAMPLE_GENERATIONS, PPO_TRAIN_PROMPTS = None, 0, 8
elif PROFILE == "fast":
    PPO_LR, PPO_BATCH_SIZE, PPO_EPOCHS, PPO_TOTAL_EPISODES, PPO_RESPONSE_LENGTH = 1e-4, 2, 1, 4, 8
    PPO_SAMPLE_GENERATIONS = 0
PPO_HPARAMS = dict(
    learning_rate=PPO_LR, batch_size=PPO_BATCH_SIZE, num_ppo_epochs=PPO_EPOCHS, total_episodes=PPO_TOTAL_EPISODES,
    response_length=PPO_RESPONSE_LENGTH, kl_coef=PPO_KL_COEF, missing_eos_penalty=PPO_MISSING_EOS_PENALTY,
    train_prompts="all" if PPO_TRAIN_PROMPTS is None else PPO_TRAIN_PROMPTS,
)


def ppo_training_prompts(pairs: Dataset) -> Dataset:
    """The pairs whose prompts PPO answers: all of them, or the first `PPO_TRAIN_PROMPTS`."""
    if PPO_TRAIN_PROMPTS is None:
        return pairs
    if PPO_TRAIN_PROMPTS < PPO_BATCH_SIZE:  # TRL drops an incomplete batch of prompts: it would wait forever
        raise ValueError(f"PPO_TRAIN_PROMPTS={PPO_TRAIN_PROMPTS} is smaller than PPO_BATCH_SIZE={PPO_BATCH_SIZE}: "
                         "every update needs a full batch of prompts, so raise PPO_TRAIN_PROMPTS (or set it to None)")
    return pairs.select(range(min(PPO_TRAIN_PROMPTS, len(pairs))))

# %% [markdown]
# **TODO: `make_ppo_config` (part of the 2 PPO points, with `load_ppo_models`, `tokenize_prompt` and `build_ppo_trainer`).**

# %% tags=["library"] kind="solution" id="make_ppo_config"
def make_ppo_config(output_dir: Path) -> PPOConfig:
    """The PPOConfig built from the PPO_* constants above, with precision flags that follow DEVICE."""
    ### BEGIN SOLUTION
    return PPOConfig(
        output_dir=str(output_dir),
        learning_rate=PPO_LR,
        per_device_train_batch_size=PPO_BATCH_SIZE,
        gradient_accumulation_steps=1,
        num_mini_batches=1,
        num_ppo_epochs=PPO_EPOCHS,
        total_episodes=PPO_TOTAL_EPISODES,
        response_length=PPO_RESPONSE_LENGTH,
        stop_token="eos",
        kl_coef=PPO_KL_COEF,
        missing_eos_penalty=PPO_MISSING_EOS_PENALTY,
        num_sample_generations=PPO_SAMPLE_GENERATIONS,
        logging_steps=1,
        save_strategy="no",
        report_to="wandb" if ENABLE_WANDB else "none",
        seed=42,
        **trainer_precision(),
        **checkpointing_off(),
    )
    ### END SOLUTION


# %% [markdown]
# **TODO: `build_ppo_trainer` (part of the 2 PPO points, with `load_ppo_models`, `tokenize_prompt` and `make_ppo_config`).**

# %% tags=["library"] kind="solution" id="build_ppo_trainer"
def build_ppo_trainer(
    args: PPOConfig,
    tokenizer: PreTrainedTokenizerBase,
    value_model: PreTrainedModel,
    reward_model: PreTrainedModel,
    policy: PreTrainedModel,
    ref_policy: PreTrainedModel,
    train_dataset: Dataset,
    eval_dataset: Dataset,
) -> PPOTrainer:
    """A PPOTrainer that trains `policy` (and `value_model`) against `reward_model`, penalised by `ref_policy`."""
    ### BEGIN SOLUTION
    return PPOTrainer(
        args=args,
        processing_class=tokenizer,
        model=policy,
        ref_model=ref_policy,
        reward_model=reward_model,
        value_model=value_model,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
    )
    ### END SOLUTION

# %% [markdown]
# The per-update scores that TRL logs are noisy: each is the mean over one small batch of *sampled* answers,
# to different prompts every time. To see whether PPO helped, `score_answers` answers the same held-out
# prompts before and after training, greedily, and scores each answer the way PPO scores its samples: the
# reward model's score at the last token of the answer, minus `missing_eos_penalty` when the answer did not
# end within `max_new_tokens` tokens.

# %% tags=["library"] kind="readonly" id="ppo_evaluation"
@torch.no_grad()
def score_answers(
    policy: PreTrainedModel,
    reward_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    max_new_tokens: int,
    missing_eos_penalty: float | None,
    batch_size: int = 16,
) -> dict[str, float]:
    """Greedy answers of `policy` to `prompts` (one user turn each), scored as PPO scores its samples.

    `tokenizer` pads on the left with a token that never occurs in chat text. Returns the mean `score` (reward
    after the missing-EOS penalty), the mean `reward` (before it) and the share of answers that `finished`.
    """
    was_training = policy.training
    policy.eval()
    rewards, finished = [], []
    for start in range(0, len(prompts), batch_size):
        chats = [[{"role": "user", "content": prompt}] for prompt in prompts[start: start + batch_size]]
        inputs = tokenizer.apply_chat_template(
            chats, add_generation_prompt=True, padding=True, return_tensors="pt", return_dict=True
        ).to(policy.device)
        # generate() stops each answer at the end-of-turn token and pads it on the right from there
        sequences = policy.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id)
        answers = sequences[:, inputs["input_ids"].shape[1]:]
        finished.append((answers == tokenizer.eos_token_id).any(dim=1).cpu())
        # the classifier reads the last token that is not padding: the end-of-turn token, or the cut
        sequences = sequences.to(reward_model.device)
        attention_mask = (sequences != tokenizer.pad_token_id).long()
        rewards.append(reward_model(input_ids=sequences, attention_mask=attention_mask).logits[:, 0].float().cpu())
    policy.train(was_training)
    reward, ended = torch.cat(rewards), torch.cat(finished)
    score = reward - (missing_eos_penalty or 0.0) * (~ended).float()
    return {"score": score.mean().item(), "reward": reward.mean().item(), "finished": ended.float().mean().item()}

# %% [markdown]
# Load the models and the prompts:

# %%
set_seed(42)
ppo_tokenizer = set_chat_safe_pad_token(load_tokenizer(MODEL_ID, padding_side="left"))
value_model, reward_model, policy, ref_policy = load_ppo_models(MODEL_ID, REWARD_MODEL_DIR, ppo_tokenizer)

ppo_train_prompts = ppo_training_prompts(rm_train_pairs)
ppo_train_dataset = ppo_train_prompts.map(
    tokenize_prompt, fn_kwargs={"tokenizer": ppo_tokenizer}, remove_columns=ppo_train_prompts.column_names
)
ppo_eval_dataset = rm_eval_pairs.map(
    tokenize_prompt, fn_kwargs={"tokenizer": ppo_tokenizer}, remove_columns=rm_eval_pairs.column_names
)
print(ppo_train_dataset)
print(repr(ppo_tokenizer.decode(ppo_train_dataset[0]["input_ids"])))

# %% [markdown]
# Before training, record how the untouched model answers: the mean score of its answers to held-out
# prompts, and two sample answers in full (greedy decoding with the attention mask, only the new tokens
# decoded, via `generate_reply` from the setup):

# %%
PPO_EVAL_PROMPTS = rm_eval_pairs["prompt"][: 64 if PROFILE == "full" else 16]
ppo_eval_before = score_answers(ref_policy, reward_model, ppo_tokenizer, PPO_EVAL_PROMPTS, PPO_RESPONSE_LENGTH,
                                PPO_MISSING_EOS_PENALTY)
print(f"before PPO, {len(PPO_EVAL_PROMPTS)} held-out prompts: mean score {ppo_eval_before['score']:.3f}, "
      f"{ppo_eval_before['finished']:.0%} of the answers end within {PPO_RESPONSE_LENGTH} tokens")
PPO_MAX_NEW_TOKENS = 256 if PROFILE == "full" else 48
ppo_before = {prompt: generate_reply(ref_policy, ppo_tokenizer, prompt, PPO_MAX_NEW_TOKENS) for prompt in SAMPLE_PROMPTS}

# %% [markdown]
# Train. In the `full` profile this is the longest cell of the notebook; the log shows `objective/scores`
# (the mean reward of the generated answers), `objective/kl` and the losses after every update.

# %%
if ENABLE_WANDB:
    wandb.init(project="hw2-rlhf", group="ppo", config=PPO_HPARAMS)
ppo_trainer = build_ppo_trainer(
    make_ppo_config(TRAINER_RUNS_DIR / "ppo"), ppo_tokenizer, value_model, reward_model, policy, ref_policy,
    ppo_train_dataset, ppo_eval_dataset,
)
ppo_trainer.train()
if ENABLE_WANDB:
    wandb.finish()

# %% kind="test" id="test_ppo" points=2
with visible_checks():
    _prompt_ids = tokenize_prompt({"prompt": "Any plans for the weekend?"}, ppo_tokenizer)["input_ids"]
    _generation_prompt = ppo_tokenizer.apply_chat_template(
        [{"role": "user", "content": "Any plans for the weekend?"}], add_generation_prompt=True, tokenize=False
    )
    assert isinstance(_prompt_ids, list) and all(isinstance(_id, int) for _id in _prompt_ids), (
        f"tokenize_prompt should return a flat list of ints under 'input_ids', got {type(_prompt_ids).__name__}: "
        f"{str(_prompt_ids)[:200]}"
    )
    assert ppo_tokenizer.decode(_prompt_ids) == _generation_prompt, (
        f"the prompt should be the chat-formatted user turn plus the generation prompt:\n"
        f"expected {_generation_prompt!r}\ngot      {ppo_tokenizer.decode(_prompt_ids)!r}"
    )
    assert type(policy).__name__.endswith("ForCausalLM") and type(ref_policy).__name__.endswith("ForCausalLM"), (
        "policy and ref_policy should be causal language models (AutoModelForCausalLM)"
    )
    for _name, _model in (("value_model", value_model), ("reward_model", reward_model)):
        assert type(_model).__name__.endswith("ForSequenceClassification") and _model.config.num_labels == 1, (
            f"{_name} should be loaded from your reward model: a sequence classifier with one output"
        )
    assert not any(p.requires_grad for p in reward_model.parameters()), "freeze the reward model (requires_grad_(False))"
    assert not any(p.requires_grad for p in ref_policy.parameters()), "freeze the reference policy (requires_grad_(False))"
    _args = ppo_trainer.args
    assert (_args.bf16, _args.fp16) == (trainer_precision()["bf16"], trainer_precision()["fp16"]), (
        f"precision flags should follow the device {DEVICE}: expected {trainer_precision()}, "
        f"got bf16={_args.bf16} fp16={_args.fp16}"
    )
    assert ppo_trainer.stop_token_id == ppo_tokenizer.eos_token_id, "answers should stop at the end-of-turn token"
    assert ppo_trainer.state.global_step >= 1, "the PPO trainer has not made any update: did trainer.train() run?"
    _moved = any(not torch.equal(p, q.to(p.device)) for p, q in zip(policy.parameters(), ref_policy.parameters()))
    assert _moved, "after training the policy is still identical to the reference policy: is `policy` the trained model?"
    print("PPO looks right")

### BEGIN HIDDEN TESTS
from autograder.checks import grade_cell

grade_cell("test_ppo", globals())
### END HIDDEN TESTS

# %% [markdown]
# ### The reward during training
#
# `objective/scores` is the mean reward-model score of the answers generated at each update, after the
# missing-EOS penalty; `objective/rlhf_reward` also subtracts the KL penalty, which is what PPO maximises.
# Every point is an average over one batch of freshly sampled answers, so the curve is noisy.
#
# **Why the scores can be negative, and what the missing-EOS penalty does.** The reward model's scores are
# relative: only differences between answers mean something, so a mean below zero is not bad in itself. On
# top of that, every answer cut off at `response_length` tokens without the end-of-turn token loses
# `missing_eos_penalty`. When most sampled answers run long, the mean score sits near the reward model's
# score minus the penalty, well below zero, while finished answers (such as the samples below) show the
# reward model's own, higher scores. The penalty is a signal only when some answers finish and others do not; then PPO
# learns to finish sooner. SmolLM2 rarely ends a sampled answer early (in a probe on this course's prompts,
# 4 of 32 answers sampled at PPO's temperature of 0.7 ended within 128 tokens, none within 64), so the `demo`
# profile, whose answers are only 32 tokens long, switches the penalty off: it would lower every score by
# the same 1.0 and teach nothing. The `full` profile keeps it, to discourage rambling answers.
#
# The held-out comparison printed under the plot is the steadier measure: the same prompts before and after
# training, greedy answers, scored the same way as during training.
#
# **Why the `demo` profile answers the same eight prompts at every update.** A batch's mean score depends on
# which prompts it holds about as much as on the policy: in the course's CPU runs, batches of eight different
# prompts moved the score by about 0.5 from one update to the next while the policy had barely changed, and a
# dozen such updates (all a CPU affords) showed no trend through that noise. With `PPO_TRAIN_PROMPTS = 8`
# every update answers the same eight prompts, so the curve compares like with like and shows whether PPO
# raises the reward of the prompts it practises: the reinforcement-learning version of overfitting one batch
# to test a training loop. Whether the gain carries over to new prompts is what the held-out comparison under
# the plot measures. The `full` profile answers every training prompt (`PPO_TRAIN_PROMPTS = None`).
#
# **What a healthy run looks like:** the score drifts upwards (compare the first and last quarter of the
# updates, not single points), because the reward model likes the answers better (and, with the penalty,
# because more of them finish); the KL to the reference grows slowly and levels off at a few nats per
# answer. A KL that shoots up while the score stays flat means the policy is drifting without learning (learning rate too
# high or batches too small); a score that rises while the answers become repetitive, or just echo the user's
# message back (a 24-update CPU run of the demo's settings learned exactly that), means the policy found a
# hole in the reward model, and the KL penalty is too weak: read the answers, not only the curve. And before
# you tune PPO, check that there is something to climb: the reward model's held-out accuracy on answers cut after 16 tokens (printed in the
# reward-model section) should be well above 0.5, since cut answers are what PPO shows it. In the course's CPU
# runs, twenty PPO settings tried with a reward model trained on finished answers only never raised the score;
# the cut copies (*Unfinished answers* above) were what made it rise.

# %%
_updates = [entry for entry in ppo_trainer.state.log_history if "objective/scores" in entry]
_episodes = [entry["episode"] for entry in _updates]
_scores = np.array([entry["objective/scores"] for entry in _updates])
_window = max(1, len(_updates) // 6)
_running = np.array([_scores[max(0, i - _window + 1): i + 1].mean() for i in range(len(_scores))])
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
axes[0].plot(_episodes, _scores, marker=".", alpha=0.45, label="objective/scores (one batch)")
axes[0].plot(_episodes, _running, lw=2, label=f"running mean of {_window} updates")
axes[0].plot(_episodes, [entry["objective/rlhf_reward"] for entry in _updates], alpha=0.45,
             label="objective/rlhf_reward (score - KL penalty)")
axes[0].axhline(0, color="gray", lw=0.5)
axes[0].set_ylabel("mean reward per answer")
axes[0].set_title("PPO reward of the sampled answers")
axes[0].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
axes[1].plot(_episodes, [entry["objective/kl"] for entry in _updates], marker=".", color="tab:red")
axes[1].set_ylabel("KL to the reference (nats per answer)")
axes[1].set_title("PPO KL")
for ax in axes:
    ax.set_xlabel("episode (prompts answered so far)")
fig.tight_layout()
fig.savefig(PLOTS_DIR / "ppo_reward.png", dpi=120)
plt.show()

ppo_eval_after = score_answers(policy, reward_model, ppo_tokenizer, PPO_EVAL_PROMPTS, PPO_RESPONSE_LENGTH,
                               PPO_MISSING_EOS_PENALTY)
_quarter = max(1, len(_updates) // 4)
PPO_METRICS = {
    "first_update_score": _updates[0]["objective/scores"],
    "last_update_score": _updates[-1]["objective/scores"],
    "first_quarter_score": float(np.mean(_scores[:_quarter])),
    "last_quarter_score": float(np.mean(_scores[-_quarter:])),
    "final_kl": _updates[-1]["objective/kl"],
    "updates": len(_updates),
    "held_out_prompts": len(PPO_EVAL_PROMPTS),
    **{f"held_out_{key}_before": value for key, value in ppo_eval_before.items()},
    **{f"held_out_{key}_after": value for key, value in ppo_eval_after.items()},
}
PPO_CURVE = {key: [entry[key] for entry in _updates]
             for key in ("episode", "objective/scores", "objective/rlhf_reward", "objective/kl")}
print(f"sampled answers, mean score: first quarter of the updates {PPO_METRICS['first_quarter_score']:.3f}, last "
      f"quarter {PPO_METRICS['last_quarter_score']:.3f}; KL at the end {PPO_METRICS['final_kl']:.2f}")
for _name, _eval in (("before PPO", ppo_eval_before), ("after PPO", ppo_eval_after)):
    print(f"{_name:>10}, {len(PPO_EVAL_PROMPTS)} held-out prompts (greedy): mean score {_eval['score']:.3f}, reward "
          f"model {_eval['reward']:.3f}, {_eval['finished']:.0%} end within {PPO_RESPONSE_LENGTH} tokens")

# %% [markdown]
# ### Before and after
#
# You may see a much smaller change than after DPO: PPO needs many more samples, good hyper-parameters and
# luck, and it is far less stable. The reward model scores both answers.

# %%
PPO_SAMPLES = []
for prompt in SAMPLE_PROMPTS:
    after = generate_reply(policy, ppo_tokenizer, prompt, PPO_MAX_NEW_TOKENS)
    before = ppo_before[prompt]
    rewards = reward_scores(reward_model, ppo_tokenizer, [
        [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}] for answer in (before, after)
    ])
    PPO_SAMPLES.append({"prompt": prompt, "before": before, "after": after,
                        "reward before": f"{rewards[0]:.3f}", "reward after": f"{rewards[1]:.3f}"})
    print(f"=== {prompt}\n--- before PPO (reward {rewards[0]:.2f}):\n{before}\n"
          f"--- after PPO (reward {rewards[1]:.2f}):\n{after}\n")
PPO_METRICS["sample_reward_before"] = float(np.mean([float(s["reward before"]) for s in PPO_SAMPLES]))
PPO_METRICS["sample_reward_after"] = float(np.mean([float(s["reward after"]) for s in PPO_SAMPLES]))
METRICS["ppo"] = {**PPO_METRICS, "per_update": PPO_CURVE}

# %% [markdown]
# Save the trained **policy** (the original notebook pushed an undefined `model` here) with its tokenizer.
# The value model is only a training aid and is not saved.

# %%
policy.save_pretrained(PPO_DIR)
ppo_tokenizer.save_pretrained(PPO_DIR)
print(f"saved the PPO policy to {PPO_DIR}")
del ppo_trainer, value_model, ref_policy
