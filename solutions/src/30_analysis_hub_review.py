# %% [markdown]
# ## Model analysis [1 point]
#
# Does alignment make a model find its training data more likely? Measure it: compute the log-probability
# of texts under the reference model (the untouched instruct model), the DPO model and the PPO policy, for
#
# - answers from the preference training set, the preferred (`chosen`) and the `rejected` ones;
# - preferred answers from the held-out pairs, which no model trained on;
# - texts of a different kind that none of the models saw: by default paragraphs of
#   [WikiText](https://huggingface.co/datasets/Salesforce/wikitext); any small text dataset will do
#   (`HW2_UNSEEN_DATASET_ID` points to another one with a `text` column).
#
# Each text is scored on its own, as plain text without the chat template. The total log-probability of a
# text mostly measures its length, so compare the **mean log-probability per token** as well.
#
# Write `sequence_log_probs`. Every token except the first is scored given the tokens before it (the first
# has no context). Pad batches on the right, so that the positions of real tokens do not depend on the
# padding, and exclude padding from the sums. `get_log_prob` from Part 1 does most of the work.

# %% tags=["library"] kind="readonly" id="analysis_config"
UNSEEN_DATASET_ID = os.environ.get("HW2_UNSEEN_DATASET_ID", "Salesforce/wikitext")
ANALYSIS_SIZE = 200  # texts per group
ANALYSIS_MAX_TOKENS = 128  # longer texts are cut to their first tokens
if PROFILE == "demo":
    ANALYSIS_SIZE = 24
elif PROFILE == "fast":
    ANALYSIS_SIZE = 4


def load_unseen_texts(dataset_id: str, size: int, seed: int = 42) -> list[str]:
    """`size` paragraphs from a text dataset with a `text` column (WikiText: its test split, headings dropped)."""
    if dataset_id.rstrip("/").endswith("wikitext"):
        texts = load_dataset(dataset_id, "wikitext-2-raw-v1", split="test")
        texts = texts.filter(lambda row: len(row["text"]) > 200 and not row["text"].lstrip().startswith("="))
    else:
        texts = load_dataset(dataset_id, split="train")
    texts = texts.shuffle(seed=seed).select(range(min(size, len(texts))))
    return [text.strip() for text in texts["text"]]

# %% [markdown]
# **TODO: `sequence_log_probs` (0.5 points).**

# %% tags=["library"] kind="solution" id="sequence_log_probs"
@torch.no_grad()
def sequence_log_probs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    batch_size: int = 8,
    max_length: int = 128,
) -> dict[str, np.ndarray]:
    """Log-probabilities of plain texts under a causal LM.

    Args:
        model: a causal LM.
        tokenizer: its tokenizer (with a pad token).
        texts: the texts to score; each is tokenized without special tokens and cut to `max_length` tokens.
        batch_size: texts per forward pass.
        max_length: the maximum number of tokens per text.

    Returns:
        A dict of float arrays with one value per text, in the order of `texts`:
            - "total": sum over tokens 2..n of log p(token | previous tokens);
            - "mean": "total" divided by the number of scored tokens (n - 1), 0 for a one-token text;
            - "num_tokens": the number of scored tokens (n - 1).
    """
    ### BEGIN SOLUTION
    was_training = model.training
    model.eval()
    totals, counts = [], []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            texts[start: start + batch_size], return_tensors="pt", padding=True, padding_side="right",
            truncation=True, max_length=max_length, add_special_tokens=False,
        ).to(model.device)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        totals.append(get_log_prob(logits, batch["input_ids"], batch["attention_mask"]).cpu())
        counts.append(batch["attention_mask"][:, 1:].sum(-1).cpu())
    model.train(was_training)
    total = torch.cat(totals).double().numpy()
    num_tokens = torch.cat(counts).double().numpy()
    return {"total": total, "mean": total / np.maximum(num_tokens, 1), "num_tokens": num_tokens}
    ### END SOLUTION

# %% kind="test" id="test_logprob_analysis" points=0.5
with visible_checks():
    _texts = ["Paris is the capital of France.", "Hi", "The mitochondria is the powerhouse of the cell, they say."]
    with quietly():
        _lm = load_causal_lm(MODEL_ID, trainable=False)
        _tokenizer = load_tokenizer(MODEL_ID)
    _result = sequence_log_probs(_lm, _tokenizer, _texts, batch_size=2)
    assert set(_result) >= {"total", "mean", "num_tokens"}, f"expected keys total, mean, num_tokens; got {sorted(_result)}"
    for _i, _text in enumerate(_texts):
        _ids = _tokenizer(_text, return_tensors="pt", add_special_tokens=False)["input_ids"].to(_lm.device)
        with torch.no_grad():
            _log_probs = torch.log_softmax(_lm(input_ids=_ids).logits[0].float(), dim=-1)
        _expected = sum(float(_log_probs[t - 1, _ids[0, t]]) for t in range(1, _ids.shape[1]))
        _n = _ids.shape[1] - 1
        assert abs(float(_result["total"][_i]) - _expected) < 1e-3 * max(1.0, abs(_expected)), (
            f"text {_i} ({_text!r}): total log-prob should be {_expected:.4f} (scored alone, token by token), got "
            f"{float(_result['total'][_i]):.4f}. Check the shift, the padding side and the mask"
        )
        assert int(_result["num_tokens"][_i]) == _n, f"text {_i}: {_n} tokens are scored, got {_result['num_tokens'][_i]}"
        assert abs(float(_result["mean"][_i]) - _expected / max(_n, 1)) < 1e-3, f"text {_i}: mean = total / num_tokens"
    del _lm, _tokenizer
    print("sequence_log_probs looks right")

### BEGIN HIDDEN TESTS
from autograder.checks import grade_cell

grade_cell("test_logprob_analysis", globals())
### END HIDDEN TESTS

# %% [markdown]
# Score the four groups of texts under the three models:

# %%
analysis_groups = {
    "train chosen": list(rm_train_pairs.shuffle(seed=0).select(range(ANALYSIS_SIZE))["chosen"]),
    "train rejected": list(rm_train_pairs.shuffle(seed=0).select(range(ANALYSIS_SIZE))["rejected"]),
    "held-out chosen": list(rm_eval_pairs.select(range(min(ANALYSIS_SIZE, len(rm_eval_pairs))))["chosen"]),
    "unseen text": load_unseen_texts(UNSEEN_DATASET_ID, ANALYSIS_SIZE),
}
analysis_models = {"reference": MODEL_ID, "DPO": OUTPUT_DIR / "dpo", "PPO": PPO_DIR}
analysis_tokenizer = load_tokenizer(MODEL_ID)
log_probs = {}
for model_name, path in tqdm(analysis_models.items(), desc="models"):
    lm = load_causal_lm(path, trainable=False)
    log_probs[model_name] = {
        group: sequence_log_probs(lm, analysis_tokenizer, texts, max_length=ANALYSIS_MAX_TOKENS)
        for group, texts in analysis_groups.items()
    }
    del lm

# %%
# One panel per model and measure; each group is an outline (not a filled bar), so overlapping groups stay
# visible. The bins and the axes are shared along a row, so panels of one row compare directly.
fig, axes = plt.subplots(2, len(analysis_models), figsize=(5 * len(analysis_models), 7.5), sharex="row", sharey="row")
for row, (kind, label) in enumerate((("mean", "mean log-prob per token"), ("total", "total log-prob"))):
    all_values = np.concatenate([log_probs[m][g][kind] for m in analysis_models for g in analysis_groups])
    bins = np.histogram_bin_edges(all_values, bins=20)
    for column, model_name in enumerate(analysis_models):
        ax = axes[row, column]
        for group in analysis_groups:
            ax.hist(log_probs[model_name][group][kind], bins=bins, histtype="step", linewidth=1.8, label=group)
        ax.set_title(f"{model_name}: {label}")
        ax.set_xlabel(f"{label} (higher = more likely)")
        ax.set_ylabel("number of texts")
        ax.legend(fontsize=8, loc="best")
fig.tight_layout()
fig.savefig(PLOTS_DIR / "logprob_histograms.png", dpi=120)
plt.show()

LOGPROB_SUMMARY = {
    model_name: {group: float(np.mean(scores["mean"])) for group, scores in groups.items()}
    for model_name, groups in log_probs.items()
}
METRICS["logprob_analysis"] = {"mean_log_prob_per_token": LOGPROB_SUMMARY}
print("mean log-prob per token (higher = more likely)")
print(f"{'':<12}" + "".join(f"{group:>18}" for group in analysis_groups))
for model_name, groups in LOGPROB_SUMMARY.items():
    print(f"{model_name:<12}" + "".join(f"{value:>18.3f}" for value in groups.values()))

# %% [markdown]
# **Question (0.5 points, graded by hand).** Do the trained models find the training data more likely than the reference model does, and
# more likely than data they have not seen? Is it the *training examples* that became likely, or the *kind*
# of text they contain? What happens to the rejected answers and to the unrelated texts, and why? Compare
# DPO with PPO.

# %% [markdown] kind="manual" id="answer_logprob_analysis" points=0.5
# Start from the reference model: per token it already finds plain encyclopedic text about as likely as (often
# more likely than) the chatty, emoji-heavy answers, because that is the kind of text it was pre-trained on.
#
# DPO raises the per-token log-probability of the preferred training answers and lowers that of the rejected
# ones, which is exactly what its loss asks for: it increases
# $\log \pi(y_w \mid x) - \log \pi(y_l \mid x)$ relative to the reference. Most of that gap usually comes from
# pushing the rejected answers down (in the course's demo run, rejected answers lost about 1.5 nats per token
# while preferred ones gained 0.3 to 0.5): the loss only sees the difference. The held-out preferred answers move
# up by about as much as the training ones, so the model has not memorised particular examples: it learned a
# style (warm, casual, emoji) and now gives any text in that style a higher probability. The unrelated texts
# barely move, or get slightly less likely: the loss never looks at them, and the probability mass that moves
# towards chatty text has to come from somewhere. The totals tell less, because they mostly measure length.
#
# PPO moves much less. It never sees the dataset's answers, only its own samples scored by the reward model,
# and the KL penalty keeps it close to the reference, so its histograms stay close to the reference's; the
# small changes again follow the rewarded style rather than the training texts. So the aligned models do find
# the training data more likely than the reference does, but because it is written in the preferred style, not
# because it is training data.

# %% [markdown]
# # Bonus: model cards on the Hub [1 extra point, graded by hand]
#
# Make your three repositories presentable: each one needs a model card (its `README.md`) with a short
# description of the task, the base model and dataset, the training hyper-parameters, a quality report
# (held-out metrics) and a few sample generations. Putting the three models into a Hub
# [collection](https://huggingface.co/docs/hub/collections) is a nice touch.
#
# `huggingface_hub` builds cards from two pieces: `ModelCardData`, the YAML metadata the Hub reads (base
# model, datasets, license, tags, pipeline), and the markdown body. Write `build_model_card`; the cell after
# it writes the three cards next to the saved checkpoints and, when pushing is on, uploads each folder.

# %% [markdown]
# **TODO: `build_model_card` (the bonus: 1 extra point, graded by hand together with the model cards on the Hub).**

# %% tags=["library"] kind="solution" id="build_model_card"
def build_model_card(
    title: str,
    description: str,
    base_model: str,
    dataset_id: str,
    hyperparameters: dict,
    metrics: dict[str, float],
    samples: list[dict[str, str]],
    pipeline_tag: str = "text-generation",
    tags: list[str] | None = None,
) -> ModelCard:
    """A model card for one homework checkpoint.

    Args:
        title: the card's heading.
        description: what the model is and how it was trained (markdown).
        base_model: the Hub id of the model it was fine-tuned from (goes into the metadata).
        dataset_id: the Hub id of the training data (goes into the metadata as `datasets`).
        hyperparameters: the training hyper-parameters, listed in the card.
        metrics: held-out metrics, listed in the card.
        samples: example generations, each a dict of strings with a "prompt" key (other keys are shown as is).
        pipeline_tag: the Hub pipeline ("text-generation" or "text-classification").
        tags: extra Hub tags.

    Returns:
        A huggingface_hub.ModelCard whose metadata has base_model, datasets, license, library_name,
        pipeline_tag and tags, and whose body shows all of the above.
    """
    ### BEGIN SOLUTION
    card_data = ModelCardData(
        language="en",
        license="apache-2.0",
        library_name="transformers",
        base_model=base_model,
        datasets=[dataset_id],
        pipeline_tag=pipeline_tag,
        tags=["llm-course-hw2", "alignment", *(tags or [])],
    )
    lines = [f"# {title}", "", description, "", "## Training", "",
             f"- Base model: `{base_model}`", f"- Preference data: `{dataset_id}`", ""]
    lines += ["| hyper-parameter | value |", "| --- | --- |"]
    lines += [f"| {name} | {value} |" for name, value in hyperparameters.items()]
    lines += ["", "## Evaluation", "", "| metric | value |", "| --- | --- |"]
    lines += [f"| {name} | {value:.4g} |" if isinstance(value, float) else f"| {name} | {value} |"
              for name, value in metrics.items()]
    lines += ["", "## Sample generations", ""]
    for sample in samples:
        lines += [f"**Prompt:** {sample['prompt']}", ""]
        for key, value in sample.items():
            if key != "prompt":
                lines += [f"*{key}:*", "", "\n".join(f"> {line}" for line in (str(value) or "(empty)").splitlines()), ""]
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")
    ### END SOLUTION

# %% [markdown]
# Write the cards. The card of the reward model is a classification card: its "generations" are the
# rewards of a chosen and a rejected answer.

# %%
COURSE_NOTE = (
    "Trained for homework 2 of an LLM course: aligning a small chat model with human-like preferences "
    "(warm, casual answers preferred over stiff, impersonal ones)."
)
CARDS = {
    "dpo": build_model_card(
        title=f"{MODEL_ID.rstrip('/').split('/')[-1]} aligned with DPO",
        description=f"{COURSE_NOTE} This model was fine-tuned with Direct Preference Optimization written from "
                    "scratch in PyTorch.",
        base_model=MODEL_ID, dataset_id=DATASET_ID, hyperparameters=DPO_HPARAMS,
        metrics={f"implicit-reward {name.replace('_', ' ')}": value for name, value in DPO_METRICS.items()},
        samples=DPO_SAMPLES, tags=["dpo"],
    ),
    "ppo": build_model_card(
        title=f"{MODEL_ID.rstrip('/').split('/')[-1]} aligned with PPO",
        description=f"{COURSE_NOTE} This policy was trained with TRL's PPO against the reward model "
                    f"`{REPO_NAME}-reward-model`, with a KL penalty towards the original model.",
        base_model=MODEL_ID, dataset_id=DATASET_ID, hyperparameters=PPO_HPARAMS,
        metrics=PPO_METRICS, samples=PPO_SAMPLES, tags=["ppo", "trl"],
    ),
    "reward-model": build_model_card(
        title=f"{MODEL_ID.rstrip('/').split('/')[-1]} reward model",
        description=f"{COURSE_NOTE} A sequence classifier with one output, trained with TRL's RewardTrainer "
                    "(Bradley-Terry loss) on chosen/rejected pairs. Higher means more preferred. Score a "
                    "conversation formatted with the chat template and cut right after its final "
                    f"`{reward_tokenizer.eos_token}` (drop the template's trailing newline): that is the token the "
                    f"model was trained to score, and where PPO reads it. The pad token is "
                    f"`{reward_tokenizer.pad_token}`, which never occurs in chat text.",
        base_model=MODEL_ID, dataset_id=DATASET_ID, hyperparameters=RM_HPARAMS, metrics=RM_METRICS,
        samples=[RM_SAMPLE], pipeline_tag="text-classification", tags=["reward-model", "trl"],
    ),
}
for name, card in CARDS.items():
    card.save(OUTPUT_DIR / name / "README.md")
    print(f"wrote {OUTPUT_DIR / name / 'README.md'}")
print(CARDS["ppo"].content[:1500])

# %% [markdown]
# Push the three checkpoints with their tokenizers and cards, and gather them into a collection. Pushing is
# skipped (with the reason) in the `demo` and `fast` profiles, offline, with `HW2_PUSH_TO_HUB=0`, and when
# nbgrader runs the notebook.
#
# The repositories and the collection are **public** by default: the course reviewers load your three models
# from the Hub by name, and they cannot see private repositories. To keep them private instead, set
# `HUB_PRIVATE = True` below and give the course staff read access, for example by setting `REPO_NAME` to
# `<organisation>/llm-course-hw2` for an organisation the course account belongs to; the reviewers then use a
# token that can read them. Say in the links below that your repositories are private. A repository that
# already exists keeps its visibility: change it in the repository's settings on the Hub.

# %%
HUB_PRIVATE = False  # True: private repositories, which only accounts you share them with can review
HUB_REPOS = {name: f"{REPO_NAME}-{name}" for name in ("dpo", "ppo", "reward-model")}
if PUSH_TO_HUB:
    api = HfApi()
    collection = api.create_collection(title="LLM course HW2: DPO and PPO", private=HUB_PRIVATE, exists_ok=True)
    for name, repo_id in HUB_REPOS.items():
        api.create_repo(repo_id, private=HUB_PRIVATE, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=OUTPUT_DIR / name, commit_message="Upload homework 2 model")
        api.add_collection_item(collection.slug, item_id=repo_id, item_type="model", exists_ok=True)
        print(f"pushed {OUTPUT_DIR / name} to https://huggingface.co/{repo_id}")
    print(f"collection: https://huggingface.co/collections/{collection.slug}")
else:
    reason = ("the notebook runs under nbgrader" if UNDER_NBGRADER else f"the {PROFILE!r} profile" if PROFILE != "full"
              else "HF_HUB_OFFLINE=1" if HUB_OFFLINE else "HW2_PUSH_TO_HUB=0")
    print(f"Not pushing to the Hub: pushing is off because of {reason}. The checkpoints and their model cards "
          f"are in {', '.join(str(OUTPUT_DIR / name) for name in HUB_REPOS)}.")

# %% [markdown]
# Paste the links to your three model repositories (or to the collection that holds them) here:

# %% [markdown] kind="manual" id="bonus_model_cards" points=1
# - Collection: `https://huggingface.co/collections/<username>/llm-course-hw2-dpo-and-ppo-...`
# - DPO: `https://huggingface.co/<username>/llm-course-hw2-dpo`
# - PPO: `https://huggingface.co/<username>/llm-course-hw2-ppo`
# - Reward model: `https://huggingface.co/<username>/llm-course-hw2-reward-model`
#
# *For the reviewer:* award the point when each card describes the task, names the base model and the
# dataset in its metadata, lists the hyper-parameters and held-out metrics, and shows sample generations
# (for the reward model: rewards of a chosen and a rejected answer).

# %% [markdown]
# # For the reviewer
#
# This section loads the three models, from the local checkpoints of this run when they exist, else from
# the Hub repositories named after `REPO_NAME`, and checks them: one generation from each policy and the
# reward model's score of both answers. (The original version of this cell hard-coded a CUDA device,
# generated without the attention mask and decoded the whole output, so the answer came back with the prompt
# in front of it; `generate_reply` decodes only the new tokens.)

# %%
def checkpoint(name: str) -> str:
    """The local folder of a checkpoint if this run saved one, else its Hub repository id."""
    local = OUTPUT_DIR / name
    return str(local) if (local / "config.json").exists() else f"{REPO_NAME}-{name}"


REVIEW_PROMPT = "What's your morning routine like?"
review_answers = {}
for name in ("dpo", "ppo"):
    check_tokenizer = AutoTokenizer.from_pretrained(checkpoint(name))
    check_model = AutoModelForCausalLM.from_pretrained(checkpoint(name), dtype=torch.float32).to(DEVICE).eval()
    review_answers[name] = generate_reply(check_model, check_tokenizer, REVIEW_PROMPT,
                                          max_new_tokens=256 if PROFILE == "full" else 48)
    del check_model

check_tokenizer = AutoTokenizer.from_pretrained(checkpoint("reward-model"))
check_reward_model = AutoModelForSequenceClassification.from_pretrained(
    checkpoint("reward-model"), dtype=torch.float32
).to(DEVICE).eval()
review_rewards = reward_scores(check_reward_model, check_tokenizer, [
    [{"role": "user", "content": REVIEW_PROMPT}, {"role": "assistant", "content": answer}]
    for answer in review_answers.values()
])
for (name, answer), reward in zip(review_answers.items(), review_rewards):
    print(f"=== {name.upper()} (reward {reward:.2f}) from {checkpoint(name)}\n{answer}\n")
