# %% [markdown]
# # Homework 2: aligning a small language model with DPO and PPO
#
# [![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/YOUR-ORG/hw2-dpo-ppo/blob/main/hw2_dpo_ppo.ipynb)
# [![Open in Kaggle](https://kaggle.com/static/images/open-in-kaggle.svg)](https://kaggle.com/kernels/welcome?src=https://github.com/YOUR-ORG/hw2-dpo-ppo/blob/main/hw2_dpo_ppo.ipynb)
#
# In this homework you align [SmolLM-135M-Instruct](https://huggingface.co/HuggingFaceTB/SmolLM-135M-Instruct)
# with human preferences in two ways:
#
# 1. **Part 1, DPO from scratch.** You prepare a preference dataset, write the DPO loss and the training loop
#    yourself in plain PyTorch.
# 2. **Part 2, PPO with TRL.** You train a reward model and then run PPO with the
#    [TRL](https://huggingface.co/docs/trl) library, and finally compare what the models learned.
#
# Push the trained models to the [🤗 Hub](https://huggingface.co/): create an account and an access token
# with *write* permission first.
#
# **How to work.** Fill in every cell that says `TODO` and calls `todo()`. Each TODO is followed by a short
# check you can run yourself; if it fails, its message tells you what was expected and what your code
# returned. Hidden checks of the same functions decide the grade, so make the visible ones pass first.
#
# | Section | Points | What earns them |
# | --- | --- | --- |
# | Data preparation | 1 | `apply_chat_template` 0.2, `tokenize_row` 0.2, `pad` 0.1, `pad_collate_fn` with `make_dataloader` 0.2, two questions 0.15 each |
# | DPO loss and log-probabilities | 2 | `dpo_loss` 1, `get_log_prob` 1 |
# | DPO training | 2 | `concat_prompt_completion` with `dpo_batch_loss` 2 |
# | Reward model | 1 | `to_implicit_prompt_preferences` 0.5, `build_reward_model` 0.5 |
# | PPO | 2 | `load_ppo_models`, `tokenize_prompt`, `make_ppo_config` and `build_ppo_trainer` together 2 |
# | Model analysis | 1 | `sequence_log_probs` 0.5, the question 0.5 |
# | Bonus: model cards on the Hub | 1 extra (graded by hand) | `build_model_card` and the three cards on the Hub |
# | Starred tasks (optional): f-DPO, win rate and diversity, LoRA DPO | 1 extra point each | `f_dpo_loss`; `win_rate`, `distinct_n` and `mean_token_entropy` together; `add_lora_adapters`, `count_parameters` and `lora_reference_logps` together |
#
# The homework is out of 9 points (the six sections). On top of that come extra points: up to 1 for the bonus
# (model cards, graded by hand) and 1 for each starred task. The grader's report shows the checked part out of
# 8.2 (the written answers, 0.8, are graded by hand); nbgrader adds everything up, so its total is out of 13.
# Each TODO's heading repeats its points; where several functions share one test, the heading says so.
#
# **Where to run.** A free Colab or Kaggle GPU is enough (Kaggle does not stop an idle notebook, which helps
# during the long training cells). On a laptop, set `HW2_FAST_DEV_RUN=1` to check that everything runs with
# tiny step counts before you spend GPU time.
#
# How long each part of the full run takes, **estimated** (not measured: no GPU has run this notebook yet).
# The basis: 8 x 106 M FLOPs per trained token (the model's forward and backward pass plus the reference's
# forward), about 500 tokens per preference pair, and 20-25% of the GPU's float16/bfloat16 peak for a model
# this small; PPO's answer generation is bounded by latency, not FLOPs.
#
# | Part | Colab T4 (estimate) | H100 (estimate) |
# | --- | --- | --- |
# | DPO, one epoch (10,884 pairs) | 10-20 min | 1-3 min |
# | Reward model, one epoch (each pair once finished, once cut short) | 8-20 min | 1-3 min |
# | PPO, 4,000 episodes | 10-20 min | 2-5 min |
# | Analysis and starred tasks | 5-10 min | 1-3 min |

# %% [markdown]
# ## Setup
#
# On Colab and Kaggle the next cell installs the libraries with the same version bounds as the course's
# `requirements.txt` (torch is already there and satisfies its bound). Elsewhere install them once with
# `pip install -r requirements.txt` from the course repository.

# %%
import os
import sys

if "google.colab" in sys.modules or "KAGGLE_KERNEL_RUN_TYPE" in os.environ:
    %pip install --quiet "torch>=2.4" "trl==1.12.0" "transformers>=5.0,<6" "datasets>=3.0,<6" "huggingface_hub>=1.0,<3" "peft==0.21.2" wandb matplotlib tqdm

# %% tags=["library"] kind="readonly" id="imports"
import contextlib
import inspect
import math
import os
import random
import sys
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset, concatenate_datasets, load_dataset
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

plt.rcParams["axes.formatter.useoffset"] = False  # plain tick labels, no "+6.93e-1" offset text above the plot

# %% tags=["library"] kind="readonly" id="helpers"
def set_seed(seed: int = 42) -> None:
    """Seed every random number generator the notebook uses."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def todo():
    """Marks the places you have to fill in. It fails with the name and line of the unfinished function."""
    caller = inspect.stack()[1]
    raise NotImplementedError(f"TODO in `{caller.function}` (line {caller.lineno}): this part is not written yet")


@contextlib.contextmanager
def visible_checks():
    """Wraps the visible tests of a test cell: a failed assert stops the cell and says what was expected.

    When nbgrader grades the notebook, a failure is printed instead and the hidden tests after the block
    decide the cell's points, exactly as the course's grading tool does. Output on stderr (warnings) goes to
    stdout there, because nbgrader gives no points to a test cell that wrote to stderr.
    """
    if os.environ.get("NBGRADER_EXECUTION") != "autograde":
        yield
        return
    try:
        with contextlib.redirect_stderr(sys.stdout):
            yield
    except Exception as error:  # noqa: BLE001 (the hidden tests report it with more detail)
        print(f"A visible test failed ({type(error).__name__}: {error}); the hidden tests decide the points.")


class TodoNotFilled(NotImplementedError):
    """An unfinished TODO, reported before a long `datasets.map` traceback can hide it."""


def run_on_one_example(function: Callable, example: dict, **kwargs) -> dict:
    """Call `function` on one example before `dataset.map` calls it on all of them.

    An unfinished TODO then stops the cell with one short message naming the function, instead of a
    `NotImplementedError` at the end of a long traceback from inside the `datasets` library.
    """
    try:
        return function(example, **kwargs)
    except NotImplementedError:
        raise TodoNotFilled(
            f"`{function.__name__}` is not written yet: fill in its TODO cell above, run that cell, then run this "
            "cell again."
        ) from None


def find_secret(name: str) -> str | None:
    """A secret such as HF_TOKEN: from Colab's secrets, then Kaggle's secrets, then the environment variable.

    Returns None when none of them has it (then the caller asks interactively).
    """
    try:
        from google.colab import userdata  # Colab: the key icon in the left sidebar

        value = userdata.get(name)
        if value:
            return value
    except Exception:  # noqa: BLE001 (not on Colab, no such secret, or notebook access not granted)
        pass
    try:
        from kaggle_secrets import UserSecretsClient  # Kaggle: Add-ons > Secrets

        value = UserSecretsClient().get_secret(name)
        if value:
            return value
    except Exception:  # noqa: BLE001 (not on Kaggle, no such secret, or it is not attached to the notebook)
        pass
    return os.environ.get(name) or None


def disable_dropout_in_model(model: torch.nn.Module) -> None:
    """Set every dropout probability to zero: DPO compares log-probs, and dropout would make them noisy."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def pick_device() -> tuple[str, torch.dtype]:
    """The best available device and the dtype to run matrix multiplications in (autocast).

    CUDA GPUs from Ampere on (A100, H100, RTX 30xx and newer) use bfloat16; older ones (T4, V100) use float16,
    which needs a GradScaler during training. Apple MPS and CPUs compute in float32.
    """
    if torch.cuda.is_available():
        major, _ = torch.cuda.get_device_capability()
        return "cuda", torch.bfloat16 if major >= 8 else torch.float16
    if torch.backends.mps.is_available():
        return "mps", torch.float32
    return "cpu", torch.float32


def load_tokenizer(model_id: str, **kwargs) -> PreTrainedTokenizerBase:
    """Load a tokenizer that has a chat template and a pad token (the end-of-turn token if none is set)."""
    tokenizer = AutoTokenizer.from_pretrained(model_id, **kwargs)
    if not tokenizer.chat_template:
        raise ValueError(
            f"The tokenizer of {model_id!r} has no chat template, so chat messages cannot be formatted. "
            "Use an *-Instruct* model (for example HuggingFaceTB/SmolLM-135M-Instruct)."
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected")


def load_preferences(dataset_id: str, split: str = "train") -> Dataset:
    """Load a preference dataset and check it has non-empty `prompt`, `chosen` and `rejected` text columns."""
    dataset = load_dataset(dataset_id, split=split)
    missing = [column for column in PREFERENCE_COLUMNS if column not in dataset.column_names]
    if missing:
        raise ValueError(
            f"Dataset {dataset_id!r} ({split}) lacks the columns {missing}; it has {dataset.column_names}. "
            "A preference dataset needs 'prompt', 'chosen' and 'rejected' text columns."
        )
    for column in PREFERENCE_COLUMNS:
        empty = [i for i, text in enumerate(dataset[column]) if not isinstance(text, str) or not text.strip()]
        if empty:
            raise ValueError(
                f"Dataset {dataset_id!r} ({split}) has {len(empty)} empty '{column}' values (first at row "
                f"{empty[0]}); drop those rows with dataset.filter(...) before training."
            )
    return dataset


def held_out_split(dataset_id: str, size: int, seed: int = 42) -> tuple[Dataset, Dataset]:
    """Train and held-out preference splits: the dataset's own `test` split if it has one, else a seeded cut."""
    train = load_preferences(dataset_id, "train")
    try:
        test = load_preferences(dataset_id, "test")
    except ValueError as error:
        if "Unknown split" not in str(error):
            raise
        parts = train.train_test_split(test_size=size, seed=seed)
        train, test = parts["train"], parts["test"]
    return train, test.select(range(min(size, len(test))))


@torch.no_grad()
def generate_reply(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    user_message: str,
    max_new_tokens: int = 128,
    do_sample: bool = False,
) -> str:
    """The model's answer to one user message: chat template, attention mask, only the new tokens decoded."""
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": user_message}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    ).to(model.device)
    output = model.generate(
        **inputs,
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        pad_token_id=tokenizer.pad_token_id,
    )
    new_tokens = output[0, inputs["input_ids"].shape[1]:]
    return tokenizer.decode(new_tokens, skip_special_tokens=True).strip()

# %% [markdown]
# ## Configuration
#
# The defaults are the real models and data on the Hub. Environment variables let the same notebook run
# offline and fast (the course staff use them for grading; you can use `HW2_FAST_DEV_RUN=1` for a smoke test):
#
# | Variable | Meaning | Default |
# | --- | --- | --- |
# | `HW2_MODEL_ID` | model to align (Hub id or local folder) | `HuggingFaceTB/SmolLM-135M-Instruct` |
# | `HW2_DATASET_ID` | preference dataset (Hub id or local folder) | `HumanLLMs/Human-Like-DPO-Dataset` |
# | `HW2_UNSEEN_DATASET_ID` | texts the models never saw, for the analysis | `Salesforce/wikitext` (wikitext-2-raw-v1) |
# | `HW2_FAST_DEV_RUN` | `1`: a few steps of everything, no pushing | `0` |
# | `HW2_PROFILE` | `full`, `demo` (a short run that still learns) or `fast` | `full` |
# | `HW2_OUTPUT_DIR` | where checkpoints, model cards and plots go | `hw2-outputs` |
# | `HW2_PUSH_TO_HUB` | `0` switches pushing off | `1` |
#
# When nbgrader executes the notebook (`NBGRADER_EXECUTION` is set) the fast profile is used.

# %% tags=["library"] kind="readonly" id="config"
MODEL_ID = os.environ.get("HW2_MODEL_ID", "HuggingFaceTB/SmolLM-135M-Instruct")
DATASET_ID = os.environ.get("HW2_DATASET_ID", "HumanLLMs/Human-Like-DPO-Dataset")

UNDER_NBGRADER = os.environ.get("NBGRADER_EXECUTION") in ("autograde", "validate")
FAST_DEV_RUN = os.environ.get("HW2_FAST_DEV_RUN", "0") == "1" or UNDER_NBGRADER
PROFILE = "fast" if FAST_DEV_RUN else os.environ.get("HW2_PROFILE", "full")
if PROFILE not in ("full", "demo", "fast"):
    raise ValueError(f"HW2_PROFILE must be 'full', 'demo' or 'fast', got {PROFILE!r}")

OUTPUT_DIR = Path(os.environ.get("HW2_OUTPUT_DIR", "hw2-outputs"))
PLOTS_DIR = OUTPUT_DIR / "plots"
PLOTS_DIR.mkdir(parents=True, exist_ok=True)

HUB_OFFLINE = os.environ.get("HF_HUB_OFFLINE", "0") == "1"
PUSH_TO_HUB = PROFILE == "full" and not HUB_OFFLINE and os.environ.get("HW2_PUSH_TO_HUB", "1") != "0"

DEVICE, AMP_DTYPE = pick_device()
METRICS: dict[str, dict] = {}  # headline numbers of each part, written to OUTPUT_DIR / "metrics.json" at the end
print(f"profile={PROFILE} device={DEVICE} compute dtype={AMP_DTYPE} model={MODEL_ID} data={DATASET_ID}")
print(f"outputs go to {OUTPUT_DIR.resolve()}; pushing to the Hub is {'on' if PUSH_TO_HUB else 'off'}")

# %% [markdown]
# ### Your settings
#
# Set `ENABLE_WANDB = True` to follow the training runs in [Weights & Biases](https://wandb.ai) (free account;
# `WANDB_MODE=offline` logs locally without one). It is off by default, and the notebook runs without it.

# %% tags=["library"]
ENABLE_WANDB = False

# %% [markdown]
# ### Logging in
#
# The next cell logs in to the Hub, but only when pushing is on (the `full` profile with a network). It looks
# for your access token (with *write* permission) in this order and asks for it only if it finds none:
#
# 1. on Colab, a secret named `HF_TOKEN` (the key icon in the left sidebar; allow this notebook to read it);
# 2. on Kaggle, a secret named `HF_TOKEN` (*Add-ons → Secrets*, attached to this notebook);
# 3. the environment variable `HF_TOKEN`;
# 4. otherwise it asks you to paste the token.
#
# With `ENABLE_WANDB = True` it does the same for your W&B key, `WANDB_API_KEY`. Never paste a token into a
# code cell: the notebook you hand in would contain it. `REPO_NAME` is the prefix of your three model
# repositories.

# %%
if PUSH_TO_HUB:
    from huggingface_hub import HfApi, interpreter_login, login

    hf_token = find_secret("HF_TOKEN")
    if hf_token:
        login(token=hf_token)
    else:
        interpreter_login()
    REPO_NAME = f"{HfApi().whoami()['name']}/llm-course-hw2"
else:
    REPO_NAME = os.environ.get("HW2_REPO_NAME", "your-username/llm-course-hw2")
    reason = "this profile" if PROFILE != "full" else ("HF_HUB_OFFLINE=1" if HUB_OFFLINE else "HW2_PUSH_TO_HUB=0")
    print(f"Not logging in: pushing is off because of {reason}. Models are only saved under {OUTPUT_DIR}.")
print(f"Homework repositories: {REPO_NAME}-dpo, {REPO_NAME}-ppo, {REPO_NAME}-reward-model")

if ENABLE_WANDB and os.environ.get("WANDB_MODE") not in ("offline", "disabled") and not HUB_OFFLINE:
    import wandb

    wandb_key = find_secret("WANDB_API_KEY")
    wandb.login(key=wandb_key) if wandb_key else wandb.login()
elif ENABLE_WANDB:
    print("W&B logs offline (WANDB_MODE or HF_HUB_OFFLINE is set): no W&B login needed.")
