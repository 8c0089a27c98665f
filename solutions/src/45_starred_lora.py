# %% [markdown]
# ## ★ LoRA DPO: the reference model for free [1 extra point]
#
# Full fine-tuning updates all 135M weights, so the optimizer keeps a gradient and two AdamW moments for each of
# them. LoRA ([Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language Models"](https://arxiv.org/abs/2106.09685))
# freezes every pretrained weight matrix $W \in \mathbb{R}^{d \times k}$ and learns a low-rank correction next to
# it:
#
# $$
# h = W x + \frac{\alpha}{r} B A x, \qquad A \in \mathbb{R}^{r \times k},\; B \in \mathbb{R}^{d \times r},\;
# r \ll \min(d, k).
# $$
#
# Only $A$ and $B$ train: $r (d + k)$ numbers instead of $d k$ per adapted matrix. $A$ starts random and $B$ starts
# at **zero**, so before the first update the adapted model computes exactly what the pretrained one does. The
# factor $\alpha / r$ (`lora_alpha / r` in [peft](https://huggingface.co/docs/peft)) keeps the size of the update
# comparable when you change the rank, so a learning rate tuned for one $r$ still works for another.
#
# **Why DPO gets its reference for free.** The DPO reference $\pi_\text{ref}$ is the model before training, i.e.
# $W$ alone. A LoRA model holds $W$ untouched next to its adapters: switching the adapters off
# (`with model.disable_adapter():` in peft) turns the trained policy back into the reference model, at any point
# of training, with one copy of the weights in memory. Part 1 avoided a second model by precomputing the
# reference log-probs before the first update; with adapters you can compute them whenever you like (after
# training, for new data, or at every step as online DPO variants need).
#
# **Which matrices.** A Llama block has seven linear layers: `q_proj`, `k_proj`, `v_proj`, `o_proj` in the
# attention and `gate_proj`, `up_proj`, `down_proj` in the MLP. Hu et al. adapted $W_q$ and $W_v$ only;
# [QLoRA (Dettmers et al., 2023)](https://arxiv.org/abs/2305.14314) found that adapting all of them is needed to
# match full fine-tuning, which is what we do. Other architectures name these layers differently (GPT-2 has one
# fused `c_attn`), so look at `model.named_modules()` before you choose.
#
# **Memory.** In float32 with AdamW every *trained* parameter costs 16 bytes (4 for the weight, 4 for its
# gradient, 8 for the two moments), a *frozen* one only its 4 bytes. The activations kept for the backward pass
# do not shrink: the gradient still has to flow through every layer to reach the first adapters.

# %% tags=["library"] kind="readonly" id="lora_config"
from peft import LoraConfig, PeftModel, get_peft_model

# peft 0.21 calls a transformers method that transformers 5 deprecates; the message says nothing about your code.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

LORA_R = 16
LORA_ALPHA = 32
LORA_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA_DPO_STEPS = None  # optimizer steps; None: as many as the DPO model of Part 1
if PROFILE == "demo":
    LORA_DPO_STEPS = 3
LORA_DIR = OUTPUT_DIR / "dpo-lora"

# %% [markdown]
# **TODO: `add_lora_adapters` (★, 1 extra point for the three together: `add_lora_adapters`, `count_parameters` and `lora_reference_logps` share one test).**

# %% tags=["library"] kind="solution" id="add_lora_adapters"
def add_lora_adapters(model: PreTrainedModel, r: int, alpha: float, target_modules: list[str]) -> PeftModel:
    """Wrap `model` in peft LoRA adapters of rank `r` on the linear layers named `target_modules`.

    Build a `LoraConfig` with task_type="CAUSAL_LM", r=r, lora_alpha=alpha, target_modules=target_modules and
    lora_dropout=0.0 (DPO compares log-probs, and dropout would make them noisy, as in Part 1), and return
    `get_peft_model(model, config)`.

    Args:
        model: a causal LM (trainable or not: get_peft_model freezes every pretrained weight).
        r: the rank of the adapters; each adapted [d, k] weight gets A of shape [r, k] and B of shape [d, r].
        alpha: lora_alpha; the adapters add (alpha / r) * B @ A to the weight.
        target_modules: names of the linear layers to adapt, e.g. ("q_proj", "v_proj").

    Returns:
        The model with the adapters: only the adapters' A and B are trainable, and since B starts at zero it
        computes exactly what `model` did.
    """
    ### BEGIN SOLUTION
    config = LoraConfig(task_type="CAUSAL_LM", r=r, lora_alpha=alpha, target_modules=list(target_modules),
                        lora_dropout=0.0)
    return get_peft_model(model, config)
    ### END SOLUTION


# %% [markdown]
# **TODO: `count_parameters` (★, part of the extra point, with `add_lora_adapters` and `lora_reference_logps`).**

# %% tags=["library"] kind="solution" id="count_parameters"
def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """The number of trainable parameter values of `model` and the number of all of them.

    Count the elements (`numel()`) of each parameter tensor once, even when two modules share it: SmolLM ties its
    output layer to its input embeddings, so one [49152, 576] matrix is both. `model.parameters()` yields a
    shared tensor once; `model.state_dict()` lists it under both names.

    Returns:
        (trainable, total): the values with requires_grad=True, and all values.
    """
    ### BEGIN SOLUTION
    parameters = list(model.parameters())
    return sum(p.numel() for p in parameters if p.requires_grad), sum(p.numel() for p in parameters)
    ### END SOLUTION


# %% [markdown]
# **TODO: `lora_reference_logps` (★, part of the extra point, with `add_lora_adapters` and `count_parameters`).**

# %% tags=["library"] kind="solution" id="lora_reference_logps"
def lora_reference_logps(
    model: PeftModel, dataset: Dataset, tokenizer: PreTrainedTokenizerBase, batch_size: int,
    max_seq_len: int | None = None,
) -> Dataset:
    """The dataset with the reference log-probs of its answers, computed by `model` with its adapters switched off.

    Call `precompute_reference_logps(model, dataset, tokenizer, batch_size, max_seq_len)` (Part 1) inside
    `with model.disable_adapter():`, peft's context manager that switches the adapters off and back on when the
    block ends, even if it raises.

    Args:
        model: a LoRA model from `add_lora_adapters`, trained or not.
        dataset: tokenized preference pairs (prompt_input_ids, chosen_input_ids, rejected_input_ids).
        batch_size, max_seq_len: as for `precompute_reference_logps`.

    Returns:
        `dataset` with the columns ref_chosen_logps and ref_rejected_logps ([len(dataset)] floats each): the
        log-probs of the pretrained model, however far the adapters have trained. The adapters are on again
        when the function returns.
    """
    ### BEGIN SOLUTION
    with model.disable_adapter():
        return precompute_reference_logps(model, dataset, tokenizer, batch_size, max_seq_len)
    ### END SOLUTION


# %% kind="test" id="test_lora_dpo" points=1
with visible_checks():
    with quietly():
        _lora = add_lora_adapters(load_causal_lm(MODEL_ID, trainable=True), r=4, alpha=8,
                                  target_modules=["q_proj", "v_proj"])
    _trainable = [_name for _name, _p in _lora.named_parameters() if _p.requires_grad]
    assert _trainable and all("lora_" in _name for _name in _trainable), (
        f"only the adapters (lora_A, lora_B) should be trainable, got {len(_trainable)} trainable tensors such as "
        f"{[_name for _name in _trainable if 'lora_' not in _name][:2] or _trainable[:2]}"
    )
    _targeted = [_m for _name, _m in _lora.named_modules()
                 if _name.endswith(("q_proj", "v_proj")) and hasattr(_m, "base_layer")]  # the wrapped layers
    _expected = sum(4 * (_m.in_features + _m.out_features) for _m in _targeted)
    _counts = count_parameters(_lora)
    _all = sum(_p.numel() for _p in _lora.parameters())
    assert tuple(_counts) == (_expected, _all), (
        f"rank-4 adapters on q_proj and v_proj have {_expected} values (r * (in + out) per layer) out of {_all} "
        f"parameter values (the tied embeddings count once), got (trainable, total) = {tuple(_counts)}"
    )
    _pairs = eval_dataset.select(range(min(4, len(eval_dataset))))
    _before = precompute_reference_logps(_lora, _pairs, tokenizer, 4, MAX_SEQ_LEN)  # B = 0: the base model
    set_seed(0)
    with torch.no_grad():
        for _name, _p in _lora.named_parameters():
            if "lora_B" in _name:
                _p.normal_(0, 0.1)  # as if the adapters had trained
    _moved = precompute_reference_logps(_lora, _pairs, tokenizer, 4, MAX_SEQ_LEN)
    assert not np.allclose(_moved["ref_chosen_logps"], _before["ref_chosen_logps"]), "moving B should change the model"
    _reference = lora_reference_logps(_lora, _pairs, tokenizer, 4, MAX_SEQ_LEN)
    for _column in ("ref_chosen_logps", "ref_rejected_logps"):
        assert np.allclose(_reference[_column], _before[_column], atol=1e-4), (
            f"with the adapters off the model is the base model: expected {_column} = {_before[_column]}, got "
            f"{_reference[_column]}. Compute them inside `with model.disable_adapter():`"
        )
    _after = precompute_reference_logps(_lora, _pairs, tokenizer, 4, MAX_SEQ_LEN)
    assert np.allclose(_after["ref_chosen_logps"], _moved["ref_chosen_logps"], atol=1e-4), (
        "the adapters must be on again after lora_reference_logps (the model still gave the base model's log-probs)"
    )
    del _lora
    print("add_lora_adapters, count_parameters and lora_reference_logps look right")

### BEGIN HIDDEN TESTS
from autograder.checks import grade_cell

grade_cell("test_lora_dpo", globals())
### END HIDDEN TESTS

# %% [markdown]
# ### Training through the adapters, and what it saves
#
# The Part 1 loop trains the LoRA model unchanged: `pair_logps` calls `model.get_decoder()` and
# `model.get_output_embeddings()`, which a peft model passes on to the wrapped transformer (its linear layers now
# carry the adapters), and AdamW skips the frozen weights, which never get a gradient, so it keeps no moments for
# them. The hyper-parameters are Part 1's, learning rate included, so that the only difference is which values
# train. (LoRA is often run with a several times larger learning rate: its updates start from zero and move
# few values; try it if you like.) It trains on the pairs its steps have time for.
#
# The reference log-probs come from the adapters switched off, before training for the training pairs and after
# training for the held-out pairs. Both are the model before training: the held-out ones must equal those Part 1
# computed before its first update, and the first DPO loss must be exactly $\log 2$, since policy and reference
# are the same function until the first update.
#
# **Memory.** `training_state_bytes` counts the weights, gradients and AdamW moments from the parameter counts. The
# measurement trains one optimizer step (the step that creates the AdamW moments) of a fresh full model and of a
# fresh LoRA model on the same four training pairs, and records how far memory rises above what was in use before.
# On CUDA that is the peak of `torch.cuda.max_memory_allocated()`, the bytes of live tensors. Elsewhere it is the
# peak resident memory (RSS) of this process, sampled every few milliseconds after memory freed earlier is handed
# back to the system where the C library allows: rougher, because it also holds memory the allocator keeps for
# reuse after many short-lived tensors, which LoRA's extra small operations create more of. The peak includes the
# activations, and it is whichever is larger: the activations at the start of the backward pass (plus the
# gradients made so far), or the gradients and the optimizer state at the update, when the activations are gone.

# %% tags=["library"] kind="readonly" id="lora_memory"
import ctypes
import gc
import threading


def training_state_bytes(trainable: int, total: int, bytes_per_value: int = 4) -> int:
    """Bytes of all weights plus a gradient and two AdamW moments for each trainable value (float32: 4 bytes)."""
    return bytes_per_value * (total + 3 * trainable)


def peak_memory_growth(run: Callable[[], object]) -> tuple[object, int]:
    """`run()`'s result and the peak memory, in bytes, that it used above the memory in use before it started.

    On CUDA: the peak of torch.cuda.max_memory_allocated(). Elsewhere: the peak resident set size of this process,
    sampled every 5 ms in a background thread, after handing memory freed earlier back to the system (glibc's
    malloc_trim) so that the run does not reuse it unseen.
    """
    gc.collect()
    if DEVICE == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        result = run()
        torch.cuda.synchronize()
        return result, torch.cuda.max_memory_allocated() - before
    import psutil  # installed with peft

    with contextlib.suppress(OSError, AttributeError):  # not glibc (macOS, Windows): measure without trimming
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    process = psutil.Process()
    before = peak = process.memory_info().rss
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.005):
            peak = max(peak, process.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = run()
    finally:
        done.set()
        sampler.join()
    return result, max(peak, process.memory_info().rss) - before

# %%
set_seed(42)
lora_model = add_lora_adapters(load_causal_lm(MODEL_ID, trainable=True), LORA_R, LORA_ALPHA, LORA_TARGET_MODULES)
lora_steps = LORA_DPO_STEPS or total_steps
lora_train_dataset = train_dataset.select(range(min(len(train_dataset), lora_steps * BATCH_SIZE)))
lora_train_dataset = lora_reference_logps(lora_model, lora_train_dataset, tokenizer, MICRO_BATCH_SIZE, MAX_SEQ_LEN)
lora_history = train_dpo(lora_model, lora_train_dataset, tokenizer, lora_steps)
print(f"LoRA DPO: {lora_steps} steps, loss {lora_history['loss'][0]:.4f} (log 2 = {math.log(2):.4f}) -> "
      f"{lora_history['loss'][-1]:.4f}; full DPO (Part 1) after as many steps: "
      f"{history['loss'][min(lora_steps, len(history['loss'])) - 1]:.4f}")

# The reference after training, adapters off: still the model before training, so Part 1's numbers come back.
lora_eval_dataset = lora_reference_logps(lora_model, eval_dataset, tokenizer, MICRO_BATCH_SIZE, MAX_SEQ_LEN)
gap = max(float(np.abs(np.array(lora_eval_dataset[key]) - np.array(eval_dataset[key])).max())
          for key in REFERENCE_COLUMNS)
print(f"held-out reference log-probs, adapters off after training vs Part 1 before training: "
      f"largest difference {gap:.1e}")
LORA_METRICS = evaluate_dpo(lora_model, None, lora_eval_dataset, tokenizer)
print(f"held-out reward accuracy {LORA_METRICS['reward_accuracy']:.3f}, margin {LORA_METRICS['reward_margin']:.3f} "
      f"(full DPO of Part 1 after {len(history['loss'])} steps: {DPO_METRICS['reward_accuracy']:.3f}, "
      f"{DPO_METRICS['reward_margin']:.3f})")
lora_model.save_pretrained(LORA_DIR)  # the adapters only: a few MB next to the base model's id
print(f"saved the adapters to {LORA_DIR}")
del lora_model

# %%
memory_table = {}
memory_pairs = lora_train_dataset.select(range(min(4, len(lora_train_dataset))))  # the same pairs for both
for name in ("LoRA", "full fine-tuning"):
    set_seed(42)
    fresh = load_causal_lm(MODEL_ID, trainable=True)
    if name == "LoRA":
        fresh = add_lora_adapters(fresh, LORA_R, LORA_ALPHA, LORA_TARGET_MODULES)
    trainable, total = count_parameters(fresh)
    _, peak = peak_memory_growth(lambda: train_dpo(fresh, memory_pairs, tokenizer, 1))
    del fresh
    memory_table[name] = {
        "trainable_parameters": trainable,
        "trainable_percent": 100 * trainable / total,
        "state_bytes": training_state_bytes(trainable, total),
        "measured_peak_growth_bytes": peak,
    }
measured = "CUDA max_memory_allocated" if DEVICE == "cuda" else "process RSS"
print(f"{'':<18}{'trainable':>14}{'%':>8}{'weights+grads+AdamW':>22}{'measured (' + measured + ')':>36}")
for name, row in memory_table.items():
    print(f"{name:<18}{row['trainable_parameters']:>14,}{row['trainable_percent']:>8.2f}"
          f"{row['state_bytes'] / 2**20:>18.1f} MiB{row['measured_peak_growth_bytes'] / 2**20:>32.1f} MiB")
METRICS.setdefault("starred", {})["lora"] = {
    "r": LORA_R, "alpha": LORA_ALPHA, "target_modules": list(LORA_TARGET_MODULES), "learning_rate": LR,
    "steps": lora_steps, "first_loss": lora_history["loss"][0], "final_train_loss": lora_history["loss"][-1],
    "held_out": LORA_METRICS, "memory_measured_as": measured, "memory_step_pairs": len(memory_pairs),
    "memory_per_step": memory_table,
}

# %% [markdown]
# What to look for: LoRA trains a few percent of the values, and its weights, gradients and optimizer state take
# about a quarter of full fine-tuning's (every frozen weight still costs its 4 bytes). The measured peaks differ
# by less than the state does: the activations, which LoRA does not shrink, come on top, and with larger batches
# they become the larger part. The saving grows with the model (16 bytes per parameter against 4) and is what
# lets LoRA fine-tune models whose full optimizer state would not fit on a GPU. On a CPU, read the measured
# column with the caveat above. At Part 1's learning rate LoRA learns more slowly per step than full DPO, yet it
# should already rank most held-out pairs the right way.
