# %% [markdown]
# # Part 1: DPO from scratch
#
# Direct Preference Optimization ([Rafailov et al., 2023](https://arxiv.org/abs/2305.18290)) aligns a model
# with preferences without training a separate reward model and without reinforcement learning. All it needs
# is a dataset of triples: a prompt $x$, an answer people preferred $y_w$ and an answer they rejected $y_l$.
# The whole method is one loss:
#
# $$
# \mathcal{L}_\text{DPO}(\pi_\theta; \pi_\text{ref}) = -\mathbb{E}_{(x, y_w, y_l) \sim D}\left[\log \sigma\left(
#   \beta \log \frac{\pi_\theta(y_w \mid x)}{\pi_\text{ref}(y_w \mid x)}
# - \beta \log \frac{\pi_\theta(y_l \mid x)}{\pi_\text{ref}(y_l \mid x)}\right)\right]
# $$
#
# - $\pi_\theta$ is the model we train and $\pi_\text{ref}$ a frozen copy of its starting point;
# - $\beta$ says how far the trained model may move away from the reference (smaller means freer);
# - $r(x, y) = \beta \log \frac{\pi_\theta(y \mid x)}{\pi_\text{ref}(y \mid x)}$ is the *implicit reward*: DPO
#   raises the reward of preferred answers above the reward of rejected ones.
#
# We fine-tune [SmolLM-135M-Instruct](https://huggingface.co/HuggingFaceTB/SmolLM-135M-Instruct). It is small
# enough for a free GPU and has been instruction-tuned (SFT), so it already follows the chat format. With
# an A100-class GPU you may try a larger *-Instruct* model of the
# [SmolLM family](https://huggingface.co/blog/smollm).

# %% [markdown]
# ## Data preparation [1 point]
#
# The preference data is [HumanLLMs/Human-Like-DPO-Dataset](https://huggingface.co/datasets/HumanLLMs/Human-Like-DPO-Dataset):
# its preferred answers are warm, casual and full of emoji, its rejected answers sound like
# "As a conversational AI, I ...". Preparing it takes three steps:
#
# 1. write each example as chat messages (the prompt is the `user` turn, the answers are `assistant` turns);
# 2. turn the messages into text with the model's chat template, `tokenizer.apply_chat_template`;
# 3. tokenize the text, truncating long prompts and answers.
#
# Chat messages are a list of role/content pairs, for example
# ```python
# messages = [
#     {"role": "system", "content": "You are a helpful assistant."},
#     {"role": "user", "content": "What is a chat template?"},
#     {"role": "assistant", "content": "It is the text format a chat model was trained on..."},
# ]
# ```
# and every model family writes them with its own special tokens. Read the
# [chat template guide](https://huggingface.co/docs/transformers/chat_templating) before you start.

# %%
tokenizer = load_tokenizer(MODEL_ID)
dataset = load_preferences(DATASET_ID, split="train")
dataset[0]

# %% [markdown]
# **TODO: `apply_chat_template` (0.2 points).** Write `apply_chat_template`. The prompt must end with the *generation prompt* (the header that opens the
# assistant's turn, `<|im_start|>assistant\n` for SmolLM), and each answer is the rest of the full
# conversation after that prompt. Don't assemble the special tokens by hand: render the conversation with
# `tokenizer.apply_chat_template(..., tokenize=False)` and cut the prompt off the front. Some templates add
# a default system message; that belongs to the prompt.

# %% tags=["library"] kind="solution" id="apply_chat_template"
def apply_chat_template(example: dict[str, str], tokenizer: PreTrainedTokenizerBase) -> dict[str, str]:
    """Render a preference example as chat-formatted text.

    Args:
        example: a dict with the user's `prompt` and the assistant's `chosen` and `rejected` answers.
        tokenizer: a tokenizer with a chat template.

    Returns:
        A dict with
            - "prompt": the formatted user turn followed by the generation prompt (assistant header),
            - "chosen" / "rejected": the formatted assistant turn that follows the prompt, with the
              end-of-turn token, and without the prompt prefix.
    """
    ### BEGIN SOLUTION
    user_turn = [{"role": "user", "content": example["prompt"]}]
    prompt = tokenizer.apply_chat_template(user_turn, tokenize=False, add_generation_prompt=True)
    formatted = {"prompt": prompt}
    for key in ("chosen", "rejected"):
        conversation = user_turn + [{"role": "assistant", "content": example[key]}]
        full_text = tokenizer.apply_chat_template(conversation, tokenize=False)
        if not full_text.startswith(prompt):
            raise ValueError("the chat template renders the prompt differently inside a full conversation")
        formatted[key] = full_text[len(prompt):]
    return formatted
    ### END SOLUTION

# %%
run_on_one_example(apply_chat_template, dataset[0], tokenizer=tokenizer)  # an unfinished TODO stops here, briefly
dataset = dataset.map(apply_chat_template, fn_kwargs={"tokenizer": tokenizer})
dataset[0]

# %% [markdown]
# For SmolLM the first example should now look like this (note where `<|im_start|>assistant\n` is: at the end
# of the prompt, not in the answers):
# ```
# {
#     'prompt': "<|im_start|>user\nOh, I just saw the best meme - have you seen it<|im_end|>\n<|im_start|>assistant\n",
#     'chosen': "😂 Ah, no I haven't! What's it about? A cat, I hope? 🤣<|im_end|>\n",
#     'rejected': "I'm an artificial intelligence language model, I don't have personal experiences ...<|im_end|>\n"
# }
# ```

# %% kind="test" id="test_apply_chat_template" points=0.2
with visible_checks():
    _example = {"prompt": "Do you like rainy days?", "chosen": "I love them! ☔", "rejected": "As an AI, I do not."}
    _formatted = apply_chat_template(_example, tokenizer)
    assert isinstance(_formatted, dict) and {"prompt", "chosen", "rejected"} <= set(_formatted), (
        f"expected a dict with 'prompt', 'chosen' and 'rejected', got {_formatted!r}"
    )
    _generation_prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": _example["prompt"]}], tokenize=False, add_generation_prompt=True
    )
    assert _formatted["prompt"] == _generation_prompt, (
        f"the prompt should be the user turn plus the generation prompt:\nexpected {_generation_prompt!r}\n"
        f"got      {_formatted['prompt']!r}"
    )
    assert _formatted["chosen"].startswith("I love them!") and tokenizer.eos_token in _formatted["chosen"], (
        f"'chosen' should start with the answer and contain the end-of-turn token, got {_formatted['chosen']!r}"
    )
    print("apply_chat_template looks right")

### BEGIN HIDDEN TESTS
from autograder.checks import grade_cell

grade_cell("test_apply_chat_template", globals())
### END HIDDEN TESTS

# %% [markdown]
# **TODO: `tokenize_row` (0.2 points)**, after the question below. Now tokenize. Only token ids remain in the dataset:
# ```
# Dataset({features: ['prompt_input_ids', 'chosen_input_ids', 'rejected_input_ids'], num_rows: ...})
# ```
# Cut long prompts **from the left** (keep their last `max_prompt_length` tokens) and long answers from the
# right (keep their first `max_completion_length` tokens). The text already contains every special token,
# so don't let the tokenizer add more (`add_special_tokens=False`).

# %% [markdown]
# **Question (0.15 points, graded by hand).** Why is it better to truncate the prompt from the left, not from the right?

# %% [markdown] kind="manual" id="answer_prompt_truncation" points=0.15
# The end of the prompt is what the answer continues from: it holds the latest user message and the
# `<|im_start|>assistant\n` header that tells the model its turn starts now. Cutting on the right would remove
# exactly that header (and the question being answered), so the model would be trained to continue a
# half-written user message with an assistant answer, which is not the situation it faces at inference time.
# Cutting on the left only loses old context (earlier turns or the start of a long message), which matters
# least for the next tokens.

# %% tags=["library"] kind="solution" id="tokenize_row"
def tokenize_row(
    example: dict[str, str],
    tokenizer: PreTrainedTokenizerBase,
    max_prompt_length: int | None = 512,
    max_completion_length: int | None = None,
) -> dict[str, list[int]]:
    """Tokenize one chat-formatted example.

    Args:
        example: a dict with the formatted text of `prompt`, `chosen` and `rejected` (see apply_chat_template).
        tokenizer: the tokenizer; calling it on a string returns a dict with "input_ids".
        max_prompt_length: keep only the LAST this many prompt tokens (None: keep all).
        max_completion_length: keep only the FIRST this many tokens of each answer (None: keep all).

    Returns:
        {"prompt_input_ids": [...], "chosen_input_ids": [...], "rejected_input_ids": [...]}, lists of ints.
    """
    ### BEGIN SOLUTION
    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    prompt_ids = ids(example["prompt"])
    if max_prompt_length is not None:
        prompt_ids = prompt_ids[-max_prompt_length:]
    row = {"prompt_input_ids": prompt_ids}
    for key in ("chosen", "rejected"):
        completion_ids = ids(example[key])
        if max_completion_length is not None:
            completion_ids = completion_ids[:max_completion_length]
        row[f"{key}_input_ids"] = completion_ids
    return row
    ### END SOLUTION

# %%
_tokenize_kwargs = {"tokenizer": tokenizer, "max_prompt_length": 256, "max_completion_length": None}
run_on_one_example(tokenize_row, dataset[0], **_tokenize_kwargs)  # an unfinished TODO stops here, briefly
dataset = dataset.map(tokenize_row, fn_kwargs=_tokenize_kwargs, remove_columns=["prompt", "chosen", "rejected"])
dataset

# %% kind="test" id="test_tokenize_row" points=0.2
with visible_checks():
    _row = tokenize_row(
        {"prompt": "one two three four five", "chosen": "six seven eight", "rejected": "nine ten"},
        tokenizer, max_prompt_length=2, max_completion_length=1,
    )
    _prompt_ids = tokenizer("one two three four five", add_special_tokens=False)["input_ids"]
    assert list(_row["prompt_input_ids"]) == _prompt_ids[-2:], (
        f"the prompt should keep its LAST 2 tokens {_prompt_ids[-2:]}, got {list(_row['prompt_input_ids'])}"
    )
    _chosen_ids = tokenizer("six seven eight", add_special_tokens=False)["input_ids"]
    assert list(_row["chosen_input_ids"]) == _chosen_ids[:1], (
        f"'chosen' should keep its FIRST token {_chosen_ids[:1]}, got {list(_row['chosen_input_ids'])}"
    )
    print("tokenize_row looks right")

### BEGIN HIDDEN TESTS
from autograder.checks import grade_cell

grade_cell("test_tokenize_row", globals())
### END HIDDEN TESTS

# %% [markdown]
# Next comes the `DataLoader`. Its `collate_fn` turns a list of examples into a batch:
#
# 1. it receives examples with `prompt_input_ids`, `chosen_input_ids` and `rejected_input_ids`;
# 2. it pads each key to the longest sequence of that key in the batch (prompts and answers may end up with
#    different lengths; within one key all rows must have the same length);
# 3. for each key it builds an attention mask of the same shape: 1 on real tokens, 0 on padding.
#
# **TODO: `pad` (0.1 points)**, after the question below. Write the helper `pad` first: pad with `tokenizer.pad_token_id` for ids and 0 for masks.

# %% [markdown]
# **Question (0.15 points, graded by hand).** On which side should `prompt_input_ids` be padded, and why?

# %% [markdown] kind="manual" id="answer_prompt_padding" points=0.15
# On the left. We glue each prompt to its answer to get one sequence per example. With left padding the
# padding sits before the prompt, so every prompt ends right where its answer begins and the tokens form one
# unbroken conversation: [pad pad prompt | answer pad]. With right padding there would be pad tokens between
# the prompt and the answer, and the answer's tokens would be predicted from a context full of padding. The
# same holds at generation time: new tokens are appended on the right, so a batch of prompts must be
# left-padded for every prompt to end at the last position.

# %% tags=["library"] kind="solution" id="pad"
def pad(tensors: list[torch.Tensor], padding_value: int = 0, padding_side: str = "right") -> torch.Tensor:
    """Stack 1-D tensors of different lengths into one [N, max_length] tensor.

    Args:
        tensors: N tensors with the same dtype and device; their lengths may differ.
        padding_value: the value written into the padding positions.
        padding_side: "right" puts the padding after each sequence, "left" before it.

    Returns:
        A tensor of shape [N, max_length] where max_length is the longest input length.

    Example:
        >>> pad([torch.tensor([1, 2, 3]), torch.tensor([4, 5])])
        tensor([[1, 2, 3],
                [4, 5, 0]])
        >>> pad([torch.tensor([1, 2, 3]), torch.tensor([4, 5])], padding_value=9, padding_side="left")
        tensor([[1, 2, 3],
                [9, 4, 5]])
    """
    ### BEGIN SOLUTION
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    max_length = max(len(t) for t in tensors)
    out = tensors[0].new_full((len(tensors), max_length), padding_value)
    for i, t in enumerate(tensors):
        if padding_side == "left":
            out[i, max_length - len(t):] = t
        else:
            out[i, : len(t)] = t
    return out
    ### END SOLUTION


# %% kind="test" id="test_pad" points=0.1
with visible_checks():
    _padded_right = pad([torch.tensor([1, 2, 3]), torch.tensor([4])], padding_value=0, padding_side="right")
    assert torch.equal(_padded_right, torch.tensor([[1, 2, 3], [4, 0, 0]])), (
        f"right padding of [1, 2, 3] and [4] should give [[1, 2, 3], [4, 0, 0]], got {_padded_right.tolist()}"
    )
    _padded_left = pad([torch.tensor([1, 2, 3]), torch.tensor([4])], padding_value=9, padding_side="left")
    assert torch.equal(_padded_left, torch.tensor([[1, 2, 3], [9, 9, 4]])), (
        f"left padding with 9 should give [[1, 2, 3], [9, 9, 4]], got {_padded_left.tolist()}"
    )
    print("pad looks right")

### BEGIN HIDDEN TESTS
from autograder.checks import grade_cell

grade_cell("test_pad", globals())
### END HIDDEN TESTS

# %% [markdown]
# **TODO: `pad_collate_fn` (0.2 points, together with `make_dataloader` below).** Use your `pad` for each key;
# the example in the docstring shows what a batch of two examples becomes.

# %% tags=["library"] kind="solution" id="pad_collate_fn"
def pad_collate_fn(batch: list[dict[str, torch.Tensor]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Pad a list of tokenized examples into one batch.

    Args:
        batch: examples with 1-D "prompt_input_ids", "chosen_input_ids" and "rejected_input_ids".
        pad_token_id: the id written into padding positions.

    Returns:
        A dict of [batch_size, length] tensors (each key has its own length):
            - "prompt_input_ids", "prompt_attn_mask": padded on the LEFT;
            - "chosen_input_ids", "chosen_attn_mask": padded on the right;
            - "rejected_input_ids", "rejected_attn_mask": padded on the right.
        Masks hold 1 on real tokens and 0 on padding.

    Example (the prompts are padded on the left, the answers on the right):
        >>> batch = [
        ...     {"prompt_input_ids": torch.tensor([1, 2, 3]), "chosen_input_ids": torch.tensor([4]),
        ...      "rejected_input_ids": torch.tensor([5, 6])},
        ...     {"prompt_input_ids": torch.tensor([7]), "chosen_input_ids": torch.tensor([8, 9]),
        ...      "rejected_input_ids": torch.tensor([10])},
        ... ]
        >>> collated = pad_collate_fn(batch, pad_token_id=0)
        >>> collated["prompt_input_ids"]
        tensor([[1, 2, 3],
                [0, 0, 7]])
        >>> collated["prompt_attn_mask"]
        tensor([[1, 1, 1],
                [0, 0, 1]])
        >>> collated["chosen_input_ids"]
        tensor([[4, 0],
                [8, 9]])
        >>> collated["rejected_attn_mask"]
        tensor([[1, 1],
                [1, 0]])
    """
    ### BEGIN SOLUTION
    collated = {}
    for key, side in (("prompt", "left"), ("chosen", "right"), ("rejected", "right")):
        ids = [torch.as_tensor(example[f"{key}_input_ids"], dtype=torch.long) for example in batch]
        masks = [torch.ones_like(t) for t in ids]
        collated[f"{key}_input_ids"] = pad(ids, padding_value=pad_token_id, padding_side=side)
        collated[f"{key}_attn_mask"] = pad(masks, padding_value=0, padding_side=side)
    return collated
    ### END SOLUTION

# %% [markdown]
# **TODO: `make_dataloader` (shares the 0.2 points of `pad_collate_fn`).** Finally, wire `pad_collate_fn` into
# the `DataLoader`: `collate_fn` must be a function of the batch alone, so
# fix the `pad_token_id` argument (for example with `functools.partial`).

# %% tags=["library"] kind="solution" id="make_dataloader"
def make_dataloader(
    dataset: Dataset, tokenizer: PreTrainedTokenizerBase, batch_size: int, shuffle: bool = True
) -> DataLoader:
    """A DataLoader over a tokenized preference dataset whose batches come from `pad_collate_fn`."""
    # Set `collate_fn` to a function of the batch alone that pads it with pad_collate_fn.
    ### BEGIN SOLUTION
    collate_fn = partial(pad_collate_fn, pad_token_id=tokenizer.pad_token_id)
    ### END SOLUTION
    return DataLoader(dataset.with_format("torch"), batch_size=batch_size, shuffle=shuffle, collate_fn=collate_fn)

# %%
dataloader = make_dataloader(dataset, tokenizer, batch_size=2)
next(iter(dataloader))

# %% kind="test" id="test_pad_collate_fn" points=0.2
with visible_checks():
    _batch = next(iter(make_dataloader(dataset.select(range(4)), tokenizer, batch_size=4, shuffle=False)))
    _keys = {f"{k}_{s}" for k in ("prompt", "chosen", "rejected") for s in ("input_ids", "attn_mask")}
    assert set(_batch) == _keys, f"expected the keys {sorted(_keys)}, got {sorted(_batch)}"
    for _key in ("prompt", "chosen", "rejected"):
        _ids, _mask = _batch[f"{_key}_input_ids"], _batch[f"{_key}_attn_mask"]
        assert _ids.shape == _mask.shape and _ids.shape[0] == 4, (
            f"{_key}: ids {tuple(_ids.shape)} and mask {tuple(_mask.shape)} should both be [4, length]"
        )
        _lengths = [len(dataset[i][f"{_key}_input_ids"]) for i in range(4)]
        assert _mask.sum(-1).tolist() == _lengths, f"{_key}: the mask should count {_lengths} real tokens"
    assert (_batch["prompt_attn_mask"][:, -1] == 1).all(), "prompts must be padded on the LEFT (last column all 1)"
    assert (_batch["chosen_attn_mask"][:, 0] == 1).all(), "answers must be padded on the RIGHT (first column all 1)"
    print("pad_collate_fn looks right")

### BEGIN HIDDEN TESTS
from autograder.checks import grade_cell

grade_cell("test_pad_collate_fn", globals())
### END HIDDEN TESTS

# %% [markdown]
# ## DPO loss and log-probabilities [2 points]
#
# **TODO: `dpo_loss` (1 point).** Start with the loss itself. Follow the formula literally. Besides the loss, return two numbers that tell
# how training goes: the *reward accuracy*, the fraction of pairs whose chosen answer gets a strictly larger
# implicit reward than the rejected one, and the *reward margin*, the mean of
# $r(x, y_w) - r(x, y_l)$.

# %% tags=["library"] kind="solution" id="dpo_loss"
def dpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The DPO loss and its reward statistics.

    Args:
        chosen_logps, rejected_logps: [batch_size] log-probs of the answers under the trained model.
        ref_chosen_logps, ref_rejected_logps: [batch_size] log-probs of the answers under the reference model.
        beta: the strength of the pull towards the reference model.

    Returns:
        loss: scalar, the mean of -log sigmoid(r_chosen - r_rejected) with r = beta * (logp - ref_logp);
        reward_accuracies: scalar, the fraction of pairs with r_chosen > r_rejected (ties count as wrong);
        reward_margins: scalar, the mean of r_chosen - r_rejected.
    """
    ### BEGIN SOLUTION
    chosen_rewards = beta * (chosen_logps - ref_chosen_logps)
    rejected_rewards = beta * (rejected_logps - ref_rejected_logps)
    margins = chosen_rewards - rejected_rewards
    loss = -F.logsigmoid(margins).mean()
    reward_accuracies = (chosen_rewards > rejected_rewards).float().mean()
    return loss, reward_accuracies.detach(), margins.mean().detach()
    ### END SOLUTION

# %% kind="test" id="test_dpo_loss" points=1
with visible_checks():
    _zeros = torch.zeros(3)
    _loss, _acc, _margin = dpo_loss(_zeros, _zeros, _zeros, _zeros, beta=0.1)
    assert torch.isclose(_loss, torch.tensor(math.log(2))), (
        f"with equal log-probs every margin is 0 and the loss is -log sigmoid(0) = log 2 = 0.6931, got {float(_loss):.4f}"
    )
    _loss, _acc, _margin = dpo_loss(
        torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -1.0]), torch.tensor([-2.0, -2.0]), torch.tensor([-2.0, -2.0]),
        beta=0.5,
    )
    # rewards: chosen [0.5, 0.0], rejected [-0.5, 0.5] -> margins [1.0, -0.5]
    _expected = -(F.logsigmoid(torch.tensor(1.0)) + F.logsigmoid(torch.tensor(-0.5))) / 2
    assert torch.isclose(_loss, _expected, atol=1e-5), f"expected loss {float(_expected):.4f}, got {float(_loss):.4f}"
    assert torch.isclose(_acc, torch.tensor(0.5)), f"one of two pairs is ranked right: expected accuracy 0.5, got {float(_acc)}"
    assert torch.isclose(_margin, torch.tensor(0.25)), f"margins are [1.0, -0.5]: expected mean 0.25, got {float(_margin)}"
    print("dpo_loss looks right")

### BEGIN HIDDEN TESTS
from autograder.checks import grade_cell

grade_cell("test_dpo_loss", globals())
### END HIDDEN TESTS

# %% [markdown]
# **TODO: `get_log_prob` (1 point).** Now the log-probability of an answer. The model returns `logits` of shape `[batch, seq_len, vocab]` for a
# batch of token sequences `input_ids`; the logits at position $t$ predict the token at position $t + 1$.
# `get_log_prob` receives the logits, the input ids themselves as `labels`, and a `mask` aligned with the
# labels that is 1 on the answer tokens (0 on the prompt and on padding). It returns, for each sequence, the
# sum over answer tokens of their log-probability, $\log \pi(y \mid x) = \sum_t \log \pi(y_t \mid x, y_{<t})$.
#
# Mind the off-by-one: the label at position $t$ is scored by the logits at position $t - 1$, so shift
# before you gather. And avoid `logits.log_softmax(-1)`: it allocates a second tensor as large as the logits
# (batch × length × 49,152 floats, gigabytes for long batches) and keeps it alive until the backward pass.
# The log-prob of one token is its logit minus `torch.logsumexp` of its row, which needs only one number per
# position.

# %% tags=["library"] kind="solution" id="get_log_prob"
def get_log_prob(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Summed log-probability of the masked tokens of each sequence.

    Args:
        logits: [batch_size, seq_len, vocab_size], the model's output for `labels`.
        labels: [batch_size, seq_len], the input ids themselves (not shifted).
        mask: [batch_size, seq_len], aligned with `labels`: 1 on the tokens to score (the answer), 0 elsewhere.

    Returns:
        [batch_size]: sum over positions t with mask[:, t] == 1 of log p(labels[:, t] | labels[:, :t]).
        The logits at position t - 1 score the label at position t, so the first position is never scored.
    """
    ### BEGIN SOLUTION
    logits = logits[:, :-1, :]
    targets = labels[:, 1:]
    target_mask = mask[:, 1:].to(logits.dtype)
    target_logits = torch.gather(logits, dim=-1, index=targets.unsqueeze(-1)).squeeze(-1)
    # One row of the batch at a time keeps logsumexp's temporary exp() buffer small.
    normalizers = torch.stack([torch.logsumexp(row, dim=-1) for row in logits])
    return ((target_logits - normalizers) * target_mask).sum(-1)
    ### END SOLUTION

# %% kind="test" id="test_get_log_prob" points=1
with visible_checks():
    torch.manual_seed(0)
    _logits = torch.randn(2, 4, 7)
    _labels = torch.randint(0, 7, (2, 4))
    _mask = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 0]])
    _result = get_log_prob(_logits, _labels, _mask)
    _log_probs = torch.log_softmax(_logits, dim=-1)
    _expected = torch.stack([
        sum(_log_probs[b, t - 1, _labels[b, t]] for t in range(1, 4) if _mask[b, t] == 1) for b in range(2)
    ])
    assert _result.shape == (2,), f"expected one log-prob per sequence, shape (2,), got {tuple(_result.shape)}"
    assert torch.allclose(_result, _expected, atol=1e-5), (
        f"expected {_expected.tolist()}, got {_result.tolist()}. Check the shift: logits[:, t - 1] score labels[:, t]."
    )
    print("get_log_prob looks right")

### BEGIN HIDDEN TESTS
from autograder.checks import grade_cell

grade_cell("test_get_log_prob", globals())
### END HIDDEN TESTS

# %% [markdown]
# ## DPO training [2 points]
#
# Everything is in place; now put it together. For one batch the training step must
#
# 1. glue each (left-padded) prompt to its (right-padded) chosen answer, and to its rejected answer;
# 2. build the loss mask: 1 on answer tokens only (not on the prompt, not on padding);
# 3. cut the glued sequences to `max_seq_len` tokens, from the side that keeps the prompt (the answer's
#    tail is the least important part);
# 4. compute the log-probs of both answers under the trained model (with gradients) and under the reference
#    model (without);
# 5. compute the DPO loss.
#
# Write steps 1–3 in `concat_prompt_completion` and steps 4–5 in `dpo_batch_loss` (2 points for the two
# together). The provided `sequence_logits` runs a model with position ids that skip the left padding. The
# test cell after them runs your `dpo_batch_loss` on the model itself, and the training loop of the next
# section trains with it.

# %% tags=["library"] kind="readonly" id="sequence_logits"
def sequence_logits(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[batch, seq_len, vocab] logits of `model`; position ids count real tokens only, so left padding is invisible.

    The logits are float32 even when the model runs in half precision (autocast on a GPU): summing the log-probs
    of hundreds of tokens in bfloat16 would lose too much accuracy.
    """
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    output = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    return output.logits.float()

# %% [markdown]
# **TODO: `concat_prompt_completion` (2 points, together with `dpo_batch_loss`).**

# %% tags=["library"] kind="solution" id="concat_prompt_completion"
def concat_prompt_completion(
    prompt_input_ids: torch.Tensor,
    prompt_attn_mask: torch.Tensor,
    completion_input_ids: torch.Tensor,
    completion_attn_mask: torch.Tensor,
    max_seq_len: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Glue left-padded prompts to right-padded completions.

    Args:
        prompt_input_ids, prompt_attn_mask: [batch, prompt_len], padded on the left.
        completion_input_ids, completion_attn_mask: [batch, completion_len], padded on the right.
        max_seq_len: keep at most this many positions, dropping them from the END (None: keep all).

    Returns:
        input_ids, attention_mask, loss_mask: [batch, min(prompt_len + completion_len, max_seq_len)];
        loss_mask is 1 exactly on real completion tokens.
    """
    ### BEGIN SOLUTION
    input_ids = torch.cat([prompt_input_ids, completion_input_ids], dim=1)
    attention_mask = torch.cat([prompt_attn_mask, completion_attn_mask], dim=1)
    loss_mask = torch.cat([torch.zeros_like(prompt_attn_mask), completion_attn_mask], dim=1)
    if max_seq_len is not None:
        input_ids, attention_mask, loss_mask = (t[:, :max_seq_len] for t in (input_ids, attention_mask, loss_mask))
    return input_ids, attention_mask, loss_mask
    ### END SOLUTION

# %% [markdown]
# **TODO: `dpo_batch_loss` (shares the 2 points of `concat_prompt_completion`).**

# %% tags=["library"] kind="solution" id="dpo_batch_loss"
def dpo_batch_loss(
    model: PreTrainedModel,
    ref_model: PreTrainedModel,
    batch: dict[str, torch.Tensor],
    beta: float,
    max_seq_len: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO loss, reward accuracy and reward margin of one collated batch (see pad_collate_fn).

    The log-probs of `model` keep their gradients; the reference model runs without them.
    Use `sequence_logits(model, input_ids, attention_mask)` for the forward passes.
    """
    ### BEGIN SOLUTION
    logps = {}
    for answer in ("chosen", "rejected"):
        input_ids, attention_mask, loss_mask = concat_prompt_completion(
            batch["prompt_input_ids"], batch["prompt_attn_mask"],
            batch[f"{answer}_input_ids"], batch[f"{answer}_attn_mask"], max_seq_len,
        )
        logps[answer] = get_log_prob(sequence_logits(model, input_ids, attention_mask), input_ids, loss_mask)
        with torch.no_grad():
            ref_logits = sequence_logits(ref_model, input_ids, attention_mask)
            logps[f"ref_{answer}"] = get_log_prob(ref_logits, input_ids, loss_mask)
    return dpo_loss(logps["chosen"], logps["rejected"], logps["ref_chosen"], logps["ref_rejected"], beta)
    ### END SOLUTION

# %% kind="test" id="test_dpo_training" points=2
with visible_checks():
    _prompt = torch.tensor([[0, 5, 6], [7, 8, 9]])
    _prompt_mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    _answer = torch.tensor([[10, 11, 0], [12, 0, 0]])
    _answer_mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    _ids, _attn, _loss_mask = concat_prompt_completion(_prompt, _prompt_mask, _answer, _answer_mask, max_seq_len=5)
    assert _ids.tolist() == [[0, 5, 6, 10, 11], [7, 8, 9, 12, 0]], (
        f"expected the prompt followed by the answer, cut to 5 positions at the end; got {_ids.tolist()}"
    )
    assert _attn.tolist() == [[0, 1, 1, 1, 1], [1, 1, 1, 1, 0]], f"attention mask: got {_attn.tolist()}"
    assert _loss_mask.tolist() == [[0, 0, 0, 1, 1], [0, 0, 0, 1, 0]], (
        f"the loss mask should be 1 on answer tokens only: expected [[0, 0, 0, 1, 1], [0, 0, 0, 1, 0]], got "
        f"{_loss_mask.tolist()}"
    )
    print("concat_prompt_completion looks right")

    # dpo_batch_loss on two real pairs, with a policy and a reference that are the same model: every implicit
    # reward is 0, so the loss must be -log sigmoid(0) = log 2. Both copies require gradients, so that a
    # reference forward pass outside torch.no_grad() would show up as gradients of the reference.
    _policy = AutoModelForCausalLM.from_pretrained(MODEL_ID, dtype=torch.float32).eval()
    _reference = AutoModelForCausalLM.from_pretrained(MODEL_ID, dtype=torch.float32).eval()
    _batch = next(iter(make_dataloader(dataset.select(range(2)), tokenizer, batch_size=2, shuffle=False)))
    _loss, _acc, _margin = dpo_batch_loss(_policy, _reference, _batch, beta=0.1, max_seq_len=128)
    assert torch.is_tensor(_loss) and _loss.dim() == 0 and _loss.requires_grad, (
        "dpo_batch_loss should return the loss as a scalar tensor that carries the policy's gradients; run only "
        "the reference model under torch.no_grad()"
    )
    _loss_value, _margin_value = float(_loss.detach()), float(torch.as_tensor(_margin).detach())
    assert abs(_loss_value - math.log(2)) < 1e-4, (
        f"when the policy equals the reference every margin is 0, so the loss should be log 2 = 0.6931; got "
        f"{_loss_value:.4f}"
    )
    assert abs(_margin_value) < 1e-4, f"when the policy equals the reference the margin is 0, got {_margin_value:.4f}"
    _loss.backward()
    _reference_with_grad = [name for name, p in _reference.named_parameters() if p.grad is not None]
    assert not _reference_with_grad, (
        f"the reference model got gradients (e.g. {_reference_with_grad[0]}): compute its log-probs under "
        "torch.no_grad()"
    )
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in _policy.parameters()), (
        "the policy got no gradient: its log-probs must be computed with gradients, and both the chosen and the "
        "rejected log-probs must reach the loss"
    )
    del _policy, _reference, _batch, _loss
    print("dpo_batch_loss looks right: loss log 2 at the start, gradients for the policy only")

### BEGIN HIDDEN TESTS
from autograder.checks import grade_cell

grade_cell("test_dpo_training", globals())
### END HIDDEN TESTS

