# %% [markdown]
# ### The training loop
#
# The loop below is complete, and it trains with **your** `dpo_batch_loss`: your `pad_collate_fn`,
# `get_log_prob`, `concat_prompt_completion` and `dpo_loss` are what move the loss. It accumulates gradients
# over `GRAD_ACCUM_STEPS` micro-batches, so a small GPU can still train with an effective batch of 16.
#
# Your step is the textbook version: four forward passes per batch (policy and reference, chosen and rejected)
# and a lot of padding. The section after the loop, *Making DPO fast*, adds `fast_dpo_batch_loss`, which
# computes the same loss and gradients much faster, from reference log-probs computed once
# before training. Which step trains is your choice in the cell that starts training (`USE_MY_DPO_STEP`):
#
# - in the `demo` and `fast` profiles, your step trains the whole (short) run;
# - in the `full` profile, your step trains the first `MY_DPO_STEPS_IN_FULL_RUN` steps and the fast step
#   takes over for the rest of the epoch. A whole epoch with your step alone would take several times longer
#   on a free GPU (an estimate: four forward passes over padded batches instead of one packed pass and a
#   reference computed once), and the fast step is checked against yours in the course's tests.
#
# The progress bar, the printed summary and the plot say which step function trained which steps. How long
# the full epoch takes is an *estimate*, not a measurement (no GPU has run this notebook yet): about 10-20
# minutes on a Colab T4 and 1-3 minutes on an H100 (the basis is in the table under *Where to run* above).
#
# The hyper-parameters are those of the full run; the `demo` and `fast` profiles shorten it. We use
# $\beta = 0.1$ both here and as the default of `dpo_loss` (the original notebook mixed 0.1 and 1.0).
# Set `ENABLE_WANDB = True` in the *Setup* section to follow the run in [Weights & Biases](https://wandb.ai)
# (`WANDB_MODE=offline` logs locally).

# %% tags=["library"] kind="readonly" id="dpo_hparams"
BATCH_SIZE = 16  # pairs per optimizer step = MICRO_BATCH_SIZE * GRAD_ACCUM_STEPS
GRAD_ACCUM_STEPS = 2
MICRO_BATCH_SIZE = BATCH_SIZE // GRAD_ACCUM_STEPS
NUM_EPOCHS = 1
MAX_STEPS = None  # optimizer steps; None runs NUM_EPOCHS full epochs
LR = 5e-5
MAX_SEQ_LEN = 1024
MAX_PROMPT_LEN = 256
MAX_COMPLETION_LEN = None
BETA = 0.1
EVAL_SIZE = 200  # held-out preference pairs used for evaluation

if PROFILE == "demo":
    BATCH_SIZE, GRAD_ACCUM_STEPS, MAX_STEPS, MAX_SEQ_LEN, EVAL_SIZE = 8, 1, 10, 256, 64
elif PROFILE == "fast":
    BATCH_SIZE, GRAD_ACCUM_STEPS, MAX_STEPS, MAX_SEQ_LEN, EVAL_SIZE = 4, 2, 2, 128, 8
MICRO_BATCH_SIZE = BATCH_SIZE // GRAD_ACCUM_STEPS
DPO_HPARAMS = dict(
    beta=BETA, learning_rate=LR, batch_size=BATCH_SIZE, grad_accum_steps=GRAD_ACCUM_STEPS, epochs=NUM_EPOCHS,
    max_steps=MAX_STEPS, max_seq_len=MAX_SEQ_LEN, max_prompt_len=MAX_PROMPT_LEN, max_completion_len=MAX_COMPLETION_LEN,
)


def load_causal_lm(model_id: str, trainable: bool) -> PreTrainedModel:
    """A causal LM in float32 on DEVICE, without dropout; frozen and in eval mode unless `trainable`."""
    model = AutoModelForCausalLM.from_pretrained(model_id, dtype=torch.float32).to(DEVICE)
    disable_dropout_in_model(model)
    model.train(trainable)
    model.requires_grad_(trainable)
    return model


def tokenized_preferences(dataset: Dataset, tokenizer: PreTrainedTokenizerBase) -> Dataset:
    """Chat-format and tokenize a raw preference dataset with the hyper-parameters above."""
    dataset = dataset.map(apply_chat_template, fn_kwargs={"tokenizer": tokenizer})
    return dataset.map(
        tokenize_row,
        fn_kwargs={
            "tokenizer": tokenizer,
            "max_prompt_length": MAX_PROMPT_LEN,
            "max_completion_length": MAX_COMPLETION_LEN,
        },
        remove_columns=list(PREFERENCE_COLUMNS),
    )


def autocast():
    """Reduced-precision forward passes on CUDA; a no-op elsewhere."""
    return torch.autocast("cuda", dtype=AMP_DTYPE, enabled=DEVICE == "cuda" and AMP_DTYPE != torch.float32)

# %% [markdown]
# The loop itself, written out once so that it reads top to bottom. `fast_dpo_batch_loss`,
# `make_bucketed_dataloader` and the other helpers it calls are defined in the next section; Python looks
# names up when the function runs, not when it is defined, so this order works.

# %% tags=["library"] kind="readonly" id="train_dpo"
DPO_STEP_METRICS = ("loss", "reward_accuracy", "reward_margin")


def endless(loader: DataLoader):
    """Batches from `loader`, epoch after epoch (each epoch reshuffled)."""
    while True:
        yield from loader


def train_dpo(
    model: PreTrainedModel,
    train_dataset: Dataset,
    tokenizer,
    total_steps: int,
    loss_fn: Callable | None = None,
    ref_model: PreTrainedModel | None = None,
    my_step_steps: int = 0,
) -> dict[str, list]:
    """Train `model` with DPO for `total_steps` optimizer steps; returns the loss and reward statistics per step.

    The first `my_step_steps` optimizer steps run your `dpo_batch_loss` against `ref_model`; the others run
    `fast_dpo_batch_loss`, which reads the reference log-probs that `train_dataset` must then carry (see
    `precompute_reference_logps`). `loss_fn` replaces `dpo_loss` in the fast step (None: `dpo_loss`), e.g. the
    f-DPO loss of the starred task. The history has one entry per step under "loss", "reward_accuracy" and
    "reward_margin", and under "step_function" the name of the function that computed it.
    """
    if my_step_steps and ref_model is None:
        raise ValueError("your dpo_batch_loss needs the reference model: pass ref_model=...")
    if my_step_steps and loss_fn is not None:
        raise ValueError("dpo_batch_loss always uses dpo_loss: pass my_step_steps=0 to train with another loss_fn")
    loader = make_bucketed_dataloader(train_dataset, tokenizer, batch_size=MICRO_BATCH_SIZE)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0, fused=DEVICE in ("cuda", "cpu"))
    scaler = torch.amp.GradScaler("cuda", enabled=DEVICE == "cuda" and AMP_DTYPE == torch.float16)
    history = {key: [] for key in (*DPO_STEP_METRICS, "step_function")}
    micro_batches = endless(loader)
    model.train()
    pbar = tqdm(range(total_steps), desc="DPO")
    for step in pbar:
        mine = step < my_step_steps
        if step == my_step_steps and step > 0:
            tqdm.write(f"step {step + 1}: your dpo_batch_loss trained steps 1-{step}; fast_dpo_batch_loss takes over")
        step_stats = torch.zeros(3, device=DEVICE)
        for _ in range(GRAD_ACCUM_STEPS):
            batch = {k: v.to(DEVICE, non_blocking=True) for k, v in next(micro_batches).items()}
            with autocast():
                if mine:
                    loss, reward_accuracy, reward_margin = dpo_batch_loss(model, ref_model, batch, BETA, MAX_SEQ_LEN)
                else:
                    loss, reward_accuracy, reward_margin = fast_dpo_batch_loss(model, batch, BETA, MAX_SEQ_LEN, loss_fn)
            scaler.scale(loss / GRAD_ACCUM_STEPS).backward()
            stats = [torch.as_tensor(value, device=DEVICE).detach().float() for value in (loss, reward_accuracy, reward_margin)]
            step_stats += torch.stack(stats) / GRAD_ACCUM_STEPS
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

        for key, value in zip(DPO_STEP_METRICS, step_stats.tolist()):  # one GPU sync per step
            history[key].append(value)
        history["step_function"].append("dpo_batch_loss" if mine else "fast_dpo_batch_loss")
        postfix = {key: f"{np.mean(history[key][-10:]):.3f}" for key in DPO_STEP_METRICS}
        pbar.set_postfix({**postfix, "step": "yours" if mine else "fast"})
        if ENABLE_WANDB:
            wandb.log({f"train/{key}": history[key][-1] for key in DPO_STEP_METRICS})
    return history

# %% [markdown]
# ### Making DPO fast
#
# This section is provided and read-only; you don't need it to finish the homework, but it shows what makes
# training fast. Your `dpo_batch_loss` is the textbook version: four forward passes per batch and a lot of
# padding. `fast_dpo_batch_loss` below computes the same loss and gradients with five tricks; the training
# loop switches to it after your step's share of a `full` run. Each trick is a few lines; `docs/benchmarks.md`
# in the course repository measures what they buy.
#
# **1. Reference log-probs once.** The reference model never changes, so its log-probs of every answer are
# fixed numbers. `precompute_reference_logps` computes them in one pass without gradients before training
# and stores them as two dataset columns; the training step then needs no reference forward at all. The
# reference model *is* the model before its first update, so the model itself computes them before training
# starts and no second copy is ever loaded. Stored numbers must not depend on the batch an answer lands in,
# so each answer is cut to fit `MAX_SEQ_LEN` together with its own prompt, not with the batch's longest one.
#
# **2. The prompt once, both answers in one row.** The chosen and the rejected answer of a pair share their
# prompt, yet `dpo_batch_loss` runs it four times and pads every answer to the longest one of the batch.
# `pack_pairs` lays out each pair as a single row: the prompt, then the chosen answer, then the rejected answer,
# with all the padding at the end. The position ids of both answers start right after the prompt, and
# `pair_attention_mask` is causal except that the rejected answer may not look at the chosen one. Every token
# therefore sees exactly what it would see in its own sequence: the log-probs and their gradients are those of
# the separate sequences, while each prompt token is computed once instead of twice and the padding between a
# short answer and a long one is gone. One forward pass of one batch also keeps a GPU busier than several
# small ones.
#
# **3. Length buckets.** A batch is as long as its longest example, so a random batch is mostly padding when
# lengths vary. `LengthBucketSampler` shuffles the data, cuts it into buckets of 50 batches, sorts each bucket
# by the length of the packed rows and cuts it into batches: examples of a batch have similar lengths, the
# batch order stays random, and every example is still seen exactly once per epoch.
#
# **4. Logits only where they are needed, and only once.** The output layer maps every position to 49,152
# vocabulary scores: the largest tensor of the step and, on a CPU, a large share of its time. Only answer
# tokens are scored, so `pair_logps` runs the transformer without its output layer (`model.get_decoder()`),
# picks the hidden states that predict real answer tokens (not the prompt, not the padding) and applies the
# output layer (`model.get_output_embeddings()`) to those alone. `TokenLogProbs` then does what your
# `get_log_prob` does, the gathered logit minus one `logsumexp` per position, and in the backward pass turns
# the logits into their own gradient in place: no second vocabulary-sized tensor, forward or backward.
#
# **5. Mixed precision.** On GPUs the forward passes run under `torch.autocast` in bfloat16 (float16 with a
# `GradScaler` on a T4) while the weights and the optimizer stay in float32; the logits of the answers are
# cast back to float32 before the log-softmax, where half precision would lose accuracy. CPUs compute in
# float32.

# %% tags=["library"] kind="readonly" id="fast_dpo"
from torch.utils.data import Sampler

PAIR_ID_KEYS = ("prompt_input_ids", "chosen_input_ids", "rejected_input_ids")
REFERENCE_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")


class LengthBucketSampler(Sampler):
    """Batches of dataset indices with similar lengths; every index appears exactly once per epoch.

    With `shuffle`, each epoch shuffles the indices, sorts buckets of `bucket_batches` batches by length,
    cuts them into batches and shuffles the batches. Without, the whole dataset is sorted (for inference).
    """

    def __init__(self, lengths: list, batch_size: int, shuffle: bool = True, bucket_batches: int = 50, seed: int = 42):
        self.lengths, self.batch_size, self.shuffle, self.bucket_batches = lengths, batch_size, shuffle, bucket_batches
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self):
        by_length = self.lengths.__getitem__
        if not self.shuffle:
            order = sorted(range(len(self.lengths)), key=by_length)
            yield from (order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size))
            return
        order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        bucket_size = self.batch_size * self.bucket_batches
        batches = []
        for start in range(0, len(order), bucket_size):
            bucket = sorted(order[start : start + bucket_size], key=by_length)
            batches += [bucket[i : i + self.batch_size] for i in range(0, len(bucket), self.batch_size)]
        for i in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[i]


def pair_lengths(dataset: Dataset) -> list[int]:
    """The sort key of each pair: the length of its packed row, prompt + chosen + rejected."""
    return [sum(map(len, pair)) for pair in zip(*(dataset[key] for key in PAIR_ID_KEYS))]


def collate_pairs(examples: list[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """`pad_collate_fn` on the token ids, plus the precomputed reference log-probs when the dataset has them."""
    batch = pad_collate_fn([{key: example[key] for key in PAIR_ID_KEYS} for example in examples], pad_token_id)
    for key in REFERENCE_COLUMNS:
        if key in examples[0]:
            batch[key] = torch.tensor([float(example[key]) for example in examples])
    return batch


def make_bucketed_dataloader(
    dataset: Dataset, tokenizer: PreTrainedTokenizerBase, batch_size: int, shuffle: bool = True, seed: int = 42
) -> DataLoader:
    """Like `make_dataloader`, with length-bucketed batches that carry the reference log-probs if present."""
    sampler = LengthBucketSampler(pair_lengths(dataset), batch_size, shuffle=shuffle, seed=seed)
    collate_fn = partial(collate_pairs, pad_token_id=tokenizer.pad_token_id)
    return DataLoader(dataset.with_format("torch"), batch_sampler=sampler, collate_fn=collate_fn)


class TokenLogProbs(torch.autograd.Function):
    """`log_softmax(logits)[label]` for each row of [N, vocab] logits, without a second [N, vocab] tensor.

    The backward pass turns the saved logits into their own gradient in place, (onehot - softmax) * grad, so
    nothing else may use these logits (here they come straight out of the output layer).
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        normalizers = torch.cat([chunk.logsumexp(-1) for chunk in logits.split(256)])  # small exp() buffers
        ctx.save_for_backward(logits, labels, normalizers)
        return logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1) - normalizers

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        logits, labels, normalizers = ctx.saved_tensors
        grad_logits = logits.sub_(normalizers.unsqueeze(-1)).exp_().mul_(-grad.unsqueeze(-1))  # -softmax * grad
        grad_logits.scatter_add_(-1, labels.unsqueeze(-1), grad.unsqueeze(-1))  # + onehot * grad
        return grad_logits, None


def pack_pairs(batch: dict[str, torch.Tensor], max_seq_len: int | None = None) -> dict[str, torch.Tensor]:
    """Each pair of a collated batch as ONE row: its prompt, chosen answer and rejected answer, back to back.

    Returns [batch, width] tensors, padded on the right only: `input_ids`, `position_ids` (both answers continue
    from the end of the prompt) and `segment` (0 prompt, 1 chosen, 2 rejected, 3 padding). With `max_seq_len`,
    each answer keeps its first `max_seq_len - prompt length` tokens, whatever the other pairs of the batch.
    """
    prompt_lengths = batch["prompt_attn_mask"].sum(-1, keepdim=True)
    ids, keep, positions, segments = [], [], [], []
    for segment, part in enumerate(("prompt", "chosen", "rejected")):
        mask = batch[f"{part}_attn_mask"].bool()
        position = mask.cumsum(-1) - 1  # 0, 1, ... over the real tokens (prompts are padded on the left)
        if part != "prompt":
            if max_seq_len is not None:
                mask = mask & (position < max_seq_len - prompt_lengths)
            position = position + prompt_lengths
        ids.append(batch[f"{part}_input_ids"])
        keep.append(mask)
        positions.append(position)
        segments.append(torch.full_like(mask, segment, dtype=torch.long))
    ids, keep, positions, segments = (torch.cat(parts, dim=1) for parts in (ids, keep, positions, segments))

    # Move the kept tokens of each row to its front, in order: token k of a row goes to slot k.
    slots = keep.cumsum(-1) - 1
    rows, columns = keep.nonzero(as_tuple=True)
    width = max(int(keep.sum(-1).max()), 1)
    packed = {"input_ids": ids.new_zeros(len(ids), width), "position_ids": ids.new_zeros(len(ids), width),
              "segment": ids.new_full((len(ids), width), 3)}
    for name, values in (("input_ids", ids), ("position_ids", positions), ("segment", segments)):
        packed[name][rows, slots[rows, columns]] = values[rows, columns]
    return packed


def pair_attention_mask(segment: torch.Tensor) -> torch.Tensor:
    """Which keys each query may see in packed rows, [batch, 1, width, width]: causal, and neither answer sees
    the other.

    A prompt token sees the prompt before it; an answer token sees the whole prompt and its own answer before
    it. Padding sees the prompt and padding, so that no attention row is empty (an empty row gives NaN).
    """
    query, key = segment.unsqueeze(-1), segment.unsqueeze(-2)
    causal = torch.ones(segment.shape[1], segment.shape[1], dtype=torch.bool, device=segment.device).tril()
    return (causal & ((key == 0) | (key == query))).unsqueeze(1)


def pair_logps(model: PreTrainedModel, batch: dict[str, torch.Tensor], max_seq_len: int | None = None):
    """Log-probs of the chosen and of the rejected answers ([batch] each) of a collated batch.

    Each pair runs as one packed row (see `pack_pairs`): the prompt once, both answers after it, no padding
    between them. With `max_seq_len`, each answer keeps its first `max_seq_len - prompt length` tokens.
    """
    n = batch["prompt_input_ids"].shape[0]
    packed = pack_pairs(batch, max_seq_len)
    segment = packed["segment"]
    # The transformer without its output layer gives one hidden state per position. It takes a 4D mask as it is:
    # "sdpa" attention (the default) reads True as "may attend", "eager" attention adds the mask to its scores.
    decoder, output_layer = model.get_decoder(), model.get_output_embeddings()
    mask, attention = pair_attention_mask(segment), decoder.config._attn_implementation
    if attention not in ("sdpa", "eager"):
        raise ValueError(f"pair_logps needs a model loaded with attn_implementation='sdpa' (the default) or "
                         f"'eager' to apply its custom attention mask; this one uses {attention!r}")
    if attention == "eager":
        mask = torch.zeros(mask.shape, device=mask.device).masked_fill_(~mask, torch.finfo(torch.float32).min)
    hidden = decoder(input_ids=packed["input_ids"], attention_mask=mask,
                     position_ids=packed["position_ids"]).last_hidden_state

    # An answer token is predicted by the hidden state of the token before it in its own sequence: the slot
    # before it, except the first token of an answer, predicted by the prompt's last token (whose slot equals
    # its position, since every row starts with its prompt). Only answer tokens go through the output layer.
    rows, slots = ((segment == 1) | (segment == 2)).nonzero(as_tuple=True)
    positions = packed["position_ids"][rows, slots]
    first = positions == batch["prompt_attn_mask"].sum(-1)[rows]
    predictors = torch.where(first, positions - 1, slots - 1)
    logits = output_layer(hidden[rows, predictors]).float()
    token_logps = TokenLogProbs.apply(logits, packed["input_ids"][rows, slots])
    answer_rows = rows + n * (segment[rows, slots] - 1)  # chosen rows first, then rejected rows
    logps = torch.zeros(2 * n, device=token_logps.device).index_add(0, answer_rows, token_logps)
    return logps[:n], logps[n:]


def fast_dpo_batch_loss(
    model: PreTrainedModel, batch: dict[str, torch.Tensor], beta: float, max_seq_len=None,
    loss_fn: Callable | None = None,
):
    """`dpo_batch_loss` with one forward pass and the precomputed reference log-probs of the batch.

    Equal to `dpo_batch_loss` of each pair on its own (with `max_seq_len`, a batch of pairs whose prompts
    differ in length cuts the answers of `dpo_batch_loss` at the longest prompt, this function at their own).
    `loss_fn` replaces `dpo_loss` (same arguments and outputs; None: `dpo_loss`).
    """
    chosen_logps, rejected_logps = pair_logps(model, batch, max_seq_len)
    loss_fn = loss_fn or dpo_loss
    return loss_fn(chosen_logps, rejected_logps, batch["ref_chosen_logps"], batch["ref_rejected_logps"], beta)


@torch.no_grad()
def dataset_logps(model: PreTrainedModel, dataset: Dataset, tokenizer, batch_size: int, max_seq_len=None):
    """Log-probs of every chosen and every rejected answer of a tokenized dataset, in dataset order."""
    was_training = model.training
    model.eval()
    chosen, rejected = torch.zeros(len(dataset)), torch.zeros(len(dataset))
    loader = make_bucketed_dataloader(dataset.select_columns(list(PAIR_ID_KEYS)), tokenizer, batch_size, shuffle=False)
    for indices, batch in zip(loader.batch_sampler, loader):  # unshuffled: the sampler yields the same batches
        batch = {key: value.to(DEVICE) for key, value in batch.items()}
        with autocast():
            chosen_logps, rejected_logps = pair_logps(model, batch, max_seq_len)
        chosen[indices], rejected[indices] = chosen_logps.float().cpu(), rejected_logps.float().cpu()
    model.train(was_training)
    return chosen, rejected


def precompute_reference_logps(
    ref_model: PreTrainedModel, dataset: Dataset, tokenizer, batch_size: int, max_seq_len: int | None = None
) -> Dataset:
    """The dataset with the columns `ref_chosen_logps` and `ref_rejected_logps` computed by `ref_model`."""
    chosen, rejected = dataset_logps(ref_model, dataset, tokenizer, batch_size, max_seq_len)
    dataset = dataset.remove_columns([c for c in REFERENCE_COLUMNS if c in dataset.column_names])
    return dataset.add_column("ref_chosen_logps", chosen.tolist()).add_column("ref_rejected_logps", rejected.tolist())


def preference_margins(model: PreTrainedModel, ref_model, dataset: Dataset, tokenizer) -> np.ndarray:
    """The implicit-reward margin r(x, y_chosen) - r(x, y_rejected) of every pair of a tokenized dataset.

    `ref_model=None` uses the reference log-probs precomputed in the dataset.
    """
    if ref_model is not None:
        dataset = precompute_reference_logps(ref_model, dataset, tokenizer, MICRO_BATCH_SIZE, MAX_SEQ_LEN)
    elif not set(REFERENCE_COLUMNS) <= set(dataset.column_names):
        raise ValueError("pass a reference model or a dataset from precompute_reference_logps")
    chosen, rejected = dataset_logps(model, dataset, tokenizer, MICRO_BATCH_SIZE, MAX_SEQ_LEN)
    ref_chosen, ref_rejected = (torch.tensor(dataset[key], dtype=torch.float32) for key in REFERENCE_COLUMNS)
    return (BETA * ((chosen - ref_chosen) - (rejected - ref_rejected))).numpy()


def evaluate_dpo(model: PreTrainedModel, ref_model, dataset: Dataset, tokenizer) -> dict[str, float]:
    """Held-out implicit-reward accuracy (a tie counts as half a correct pair) and mean margin."""
    margins = preference_margins(model, ref_model, dataset, tokenizer)
    accuracy = np.mean((margins > 0) + 0.5 * (margins == 0))
    return {"reward_accuracy": float(accuracy), "reward_margin": float(margins.mean())}

# %% [markdown]
# Load a fresh model and the data with its held-out split, and keep the model's answers before training for
# the comparison at the end:

# %%
set_seed(42)
tokenizer = load_tokenizer(MODEL_ID)
model = load_causal_lm(MODEL_ID, trainable=True)

train_pairs, eval_pairs = held_out_split(DATASET_ID, size=EVAL_SIZE)
train_dataset = tokenized_preferences(train_pairs, tokenizer)
eval_dataset = tokenized_preferences(eval_pairs, tokenizer)
print(f"{len(train_dataset)} training pairs, {len(eval_dataset)} held-out pairs")

SAMPLE_PROMPTS = ["What's your morning routine like?", "Do you have a favourite movie?"]
SAMPLE_NEW_TOKENS = 256 if PROFILE == "full" else 64
samples_before = [generate_reply(model, tokenizer, prompt, max_new_tokens=SAMPLE_NEW_TOKENS) for prompt in SAMPLE_PROMPTS]

# %% [markdown]
# The model has not been updated yet, so it is the reference model: compute the reference log-probs of the
# training and the held-out answers now. A run shorter than an epoch (`MAX_STEPS`) sees only
# `MAX_STEPS * BATCH_SIZE` pairs, so it keeps just those and computes nothing for the others.

# %%
if MAX_STEPS is not None and MAX_STEPS * BATCH_SIZE < len(train_dataset):
    train_dataset = train_dataset.shuffle(seed=42).select(range(MAX_STEPS * BATCH_SIZE))
train_dataset = precompute_reference_logps(model, train_dataset, tokenizer, MICRO_BATCH_SIZE, MAX_SEQ_LEN)
eval_dataset = precompute_reference_logps(model, eval_dataset, tokenizer, MICRO_BATCH_SIZE, MAX_SEQ_LEN)
train_dataset

# %% [markdown]
# Choose the step function. With `USE_MY_DPO_STEP = True` (the default) your `dpo_batch_loss` trains: the
# whole run in the `demo` and `fast` profiles, the first `MY_DPO_STEPS_IN_FULL_RUN` steps of a `full` run
# (then the fast step finishes the epoch, for speed). Your step needs the reference model itself, so a frozen
# copy is loaded for it and freed afterwards. `False` trains with `fast_dpo_batch_loss` only.

# %%
USE_MY_DPO_STEP = True
MY_DPO_STEPS_IN_FULL_RUN = 50  # your step's share of a full run; the fast step does the rest

# %%
if ENABLE_WANDB:
    import wandb

    wandb.init(project="hw2-rlhf", group="dpo", config=DPO_HPARAMS)

steps_per_epoch = math.ceil(len(train_dataset) / MICRO_BATCH_SIZE) // GRAD_ACCUM_STEPS
total_steps = MAX_STEPS or NUM_EPOCHS * steps_per_epoch
my_step_steps = 0
if USE_MY_DPO_STEP:
    my_step_steps = min(total_steps, MY_DPO_STEPS_IN_FULL_RUN) if PROFILE == "full" else total_steps
dpo_ref_model = load_causal_lm(MODEL_ID, trainable=False) if my_step_steps else None
history = train_dpo(model, train_dataset, tokenizer, total_steps, ref_model=dpo_ref_model, my_step_steps=my_step_steps)
del dpo_ref_model
if DEVICE == "cuda":
    torch.cuda.empty_cache()

for name in ("dpo_batch_loss", "fast_dpo_batch_loss"):
    steps = [i + 1 for i, used in enumerate(history["step_function"]) if used == name]
    if steps:
        print(f"{name:>20}: steps {steps[0]}-{steps[-1]}, loss {history['loss'][steps[0] - 1]:.4f} -> "
              f"{history['loss'][steps[-1] - 1]:.4f}, reward accuracy {history['reward_accuracy'][steps[0] - 1]:.3f} "
              f"-> {history['reward_accuracy'][steps[-1] - 1]:.3f}")

# %% [markdown]
# Reward margins and accuracy should grow during training, and the loss should fall from
# $\log 2 \approx 0.693$.
#
# **Why the accuracy of step 1 is 0.** Before the first update the trained model *is* the reference, so every
# implicit reward is 0 and every pair is a tie. `dpo_loss` counts a tie as wrong (it asks for a strictly
# larger reward), so the first step reports an accuracy of 0 and a margin of 0; that is expected, not a bug.
# (On a GPU, rounding in half precision can break a few ties either way, so it may be a little above 0.) The held-out evaluation below counts a tie as half a correct pair, which is why the reference
# model scores 0.5 there.

# %%
_steps = np.arange(1, len(history["loss"]) + 1)
_mine = sum(name == "dpo_batch_loss" for name in history["step_function"])  # your steps come first
_panels = (
    ("loss", "DPO loss", "loss"),
    ("reward_accuracy", "reward accuracy (ties count as wrong)", "fraction of pairs ranked right"),
    ("reward_margin", "reward margin", "mean r(chosen) - r(rejected)"),
)
fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
for ax, (key, title, ylabel) in zip(axes, _panels):
    values = np.array(history[key])
    marker = "." if len(values) < 50 else None
    if _mine:
        ax.plot(_steps[:_mine], values[:_mine], marker=marker, color="tab:orange", label="your dpo_batch_loss")
    if _mine < len(values):
        start = max(_mine - 1, 0)  # start at your last step so that the curve is continuous
        ax.plot(_steps[start:], values[start:], marker=marker, color="tab:blue", label="fast_dpo_batch_loss")
    if 0 < _mine < len(values):
        ax.axvline(_mine + 0.5, color="gray", linestyle=":", linewidth=1)
    ax.set_title(title)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
axes[0].axhline(math.log(2), color="gray", linestyle="--", linewidth=1, label="log 2 (the loss at the start)")
axes[1].set_ylim(-0.05, 1.05)
_handles = {label: handle for ax in axes for handle, label in zip(*ax.get_legend_handles_labels())}
fig.legend(_handles.values(), _handles.keys(), loc="lower center", ncol=len(_handles), frameon=False)
fig.tight_layout(rect=(0, 0.1, 1, 1))
fig.savefig(PLOTS_DIR / "dpo_training.png", dpi=120)
plt.show()

# %% [markdown]
# ### Held-out evaluation
#
# The implicit reward of the reference model against itself is zero for every answer, so its accuracy is
# 0.5 (every pair is a tie, counted as half) and its margin 0: that is the starting point. The trained model
# should rank most held-out chosen answers above the rejected ones.

# %%
DPO_METRICS = evaluate_dpo(model, None, eval_dataset, tokenizer)
reference_metrics = {"reward_accuracy": 0.5, "reward_margin": 0.0}
print(f"{'model':<12}{'reward accuracy':>18}{'reward margin':>16}")
for name, metrics in (("reference", reference_metrics), ("DPO", DPO_METRICS)):
    print(f"{name:<12}{metrics['reward_accuracy']:>18.3f}{metrics['reward_margin']:>16.3f}")
METRICS["dpo"] = {"reference": reference_metrics, "trained": DPO_METRICS, "final_train_loss": history["loss"][-1]}

# %% [markdown]
# ### Before and after
#
# Greedy decoding makes the comparison repeatable. `generate_reply` passes the attention mask and decodes
# only the new tokens (the original notebook printed the prompt back and left out the mask).

# %%
DPO_SAMPLES = []
for user_message, before in zip(SAMPLE_PROMPTS, samples_before):
    after = generate_reply(model, tokenizer, user_message, max_new_tokens=SAMPLE_NEW_TOKENS)
    DPO_SAMPLES.append({"prompt": user_message, "before": before, "after": after})
    print(f"=== {user_message}\n--- before DPO:\n{before}\n--- after DPO:\n{after}\n")

# %% [markdown]
# Save the model and tokenizer; they are pushed to the Hub at the end of the notebook together with the
# other models and their model cards.

# %%
DPO_DIR = OUTPUT_DIR / "dpo"
model.save_pretrained(DPO_DIR)
tokenizer.save_pretrained(DPO_DIR)
print(f"saved the DPO model to {DPO_DIR}")
