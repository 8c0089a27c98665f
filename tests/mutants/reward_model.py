"""Mutants and correct variants of the reward model (`to_implicit_prompt_preferences`, `build_reward_model`), graded by `autograder/checks/reward_model.py`."""
from mutants.catalogue import mutant


MUTANTS: dict[str, dict] = {
    # ------------------------------------------------------------ to_implicit_prompt_preferences
    "implicit_prompt_left_out": mutant("to_implicit_prompt_preferences", "test_to_implicit_prompt_preferences", '''
def to_implicit_prompt_preferences(example):
    return {key: [{"role": "assistant", "content": example[key]}] for key in ("chosen", "rejected")}
'''),
    "implicit_roles_swapped": mutant("to_implicit_prompt_preferences", "test_to_implicit_prompt_preferences", '''
def to_implicit_prompt_preferences(example):
    out = {}
    for key in ("chosen", "rejected"):
        out[key] = [{"role": "assistant", "content": example["prompt"]}, {"role": "user", "content": example[key]}]
    return out
'''),
    "implicit_keeps_prompt_key": mutant("to_implicit_prompt_preferences", "test_to_implicit_prompt_preferences", '''
def to_implicit_prompt_preferences(example):
    user = {"role": "user", "content": example["prompt"]}
    return {
        "prompt": example["prompt"],
        "chosen": [user, {"role": "assistant", "content": example["chosen"]}],
        "rejected": [user, {"role": "assistant", "content": example["rejected"]}],
    }
'''),
    "implicit_strips_the_text": mutant("to_implicit_prompt_preferences", "test_to_implicit_prompt_preferences", '''
def to_implicit_prompt_preferences(example):
    user = {"role": "user", "content": example["prompt"].strip()}
    return {key: [user, {"role": "assistant", "content": example[key].strip()}] for key in ("chosen", "rejected")}
'''),
    # ------------------------------------------------------------ build_reward_model
    "reward_two_labels": mutant("build_reward_model", "test_reward_model", '''
def build_reward_model(model_id, tokenizer):
    model = AutoModelForSequenceClassification.from_pretrained(model_id, dtype=torch.float32)
    cover_tokenizer(model, tokenizer)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model
'''),
    "reward_pad_id_not_set": mutant("build_reward_model", "test_reward_model", '''
def build_reward_model(model_id, tokenizer):
    model = AutoModelForSequenceClassification.from_pretrained(model_id, num_labels=1, dtype=torch.float32)
    return cover_tokenizer(model, tokenizer)
'''),
    "reward_pad_is_end_of_turn": mutant("build_reward_model", "test_reward_model", '''
def build_reward_model(model_id, tokenizer):
    model = AutoModelForSequenceClassification.from_pretrained(model_id, num_labels=1, dtype=torch.float32)
    cover_tokenizer(model, tokenizer)
    model.config.pad_token_id = tokenizer.eos_token_id
    return model
'''),
    "reward_checkpoint_dtype": mutant("build_reward_model", "test_reward_model", '''
def build_reward_model(model_id, tokenizer):
    model = AutoModelForSequenceClassification.from_pretrained(model_id, num_labels=1)
    cover_tokenizer(model, tokenizer)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model
'''),
    "reward_embeddings_not_resized": mutant("build_reward_model", "test_reward_model", '''
def build_reward_model(model_id, tokenizer):
    model = AutoModelForSequenceClassification.from_pretrained(model_id, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model
'''),
    "reward_weights_from_config": mutant("build_reward_model", "test_reward_model", '''
def build_reward_model(model_id, tokenizer):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_id, num_labels=1, pad_token_id=tokenizer.pad_token_id)
    model = AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)  # a fresh reward model
    return cover_tokenizer(model, tokenizer)
'''),
    "reward_backbone_frozen": mutant("build_reward_model", "test_reward_model", '''
def build_reward_model(model_id, tokenizer):
    model = AutoModelForSequenceClassification.from_pretrained(model_id, num_labels=1, dtype=torch.float32)
    cover_tokenizer(model, tokenizer)
    model.config.pad_token_id = tokenizer.pad_token_id
    for parameter in model.base_model.parameters():  # only the new head has to learn
        parameter.requires_grad = False
    return model
'''),
}


VARIANTS: dict[str, dict[str, str]] = {
    # Messages built with dict(...) in a loop; the reward model cast with .float() after loading, the embeddings
    # grown by hand and the pad id looked up from the pad token's string.
    "messages_loop_and_float_cast": {
        "to_implicit_prompt_preferences": '''
def to_implicit_prompt_preferences(example):
    pair = {}
    for answer in ["chosen", "rejected"]:
        pair[answer] = [dict(role="user", content=example["prompt"]), dict(role="assistant", content=example[answer])]
    return pair
''',
        "build_reward_model": '''
def build_reward_model(model_id, tokenizer):
    model = AutoModelForSequenceClassification.from_pretrained(model_id, num_labels=1).float()
    if model.get_input_embeddings().weight.shape[0] < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.convert_tokens_to_ids(tokenizer.pad_token)
    return model
''',
    },
    # The reward model's config built first (num_labels in it); the four PPO models from one helper,
    # frozen parameter by parameter; the batch as gradient accumulation of single episodes; precision flags from an
    # if/else; the reference policy as a deep copy of the policy, made before training.
    "configs_first_and_copied_reference": {
        "build_reward_model": '''
def build_reward_model(model_id, tokenizer):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_id, num_labels=1)
    model = AutoModelForSequenceClassification.from_pretrained(model_id, config=config, dtype=torch.float32)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id  # after resizing: a new [PAD] needs its row first
    return model
''',
        "load_ppo_models": '''
def load_ppo_models(policy_id, reward_model_path, tokenizer):
    def load(auto_class, path, trainable):
        model = cover_tokenizer(auto_class.from_pretrained(path, dtype=torch.float32), tokenizer)
        if not trainable:
            model.eval()
            for parameter in model.parameters():
                parameter.requires_grad = False
        return model

    return (load(AutoModelForSequenceClassification, reward_model_path, True),
            load(AutoModelForSequenceClassification, reward_model_path, False),
            load(AutoModelForCausalLM, policy_id, True), load(AutoModelForCausalLM, policy_id, False))
''',
        "make_ppo_config": '''
def make_ppo_config(output_dir):
    if DEVICE == "cuda" and AMP_DTYPE == torch.bfloat16:
        flags = {"bf16": True, "fp16": False}
    elif DEVICE == "cuda" and AMP_DTYPE == torch.float16:
        flags = {"bf16": False, "fp16": True}
    else:
        flags = {"bf16": False, "fp16": False}
    return PPOConfig(output_dir=str(output_dir), learning_rate=PPO_LR, per_device_train_batch_size=1,
                     gradient_accumulation_steps=PPO_BATCH_SIZE, num_ppo_epochs=PPO_EPOCHS,
                     total_episodes=PPO_TOTAL_EPISODES, response_length=PPO_RESPONSE_LENGTH, stop_token="eos",
                     kl_coef=PPO_KL_COEF, missing_eos_penalty=PPO_MISSING_EOS_PENALTY,
                     num_sample_generations=PPO_SAMPLE_GENERATIONS, save_strategy="no",
                     report_to=["wandb"] if ENABLE_WANDB else [], **flags)
''',
        "build_ppo_trainer": '''
def build_ppo_trainer(args, tokenizer, value_model, reward_model, policy, ref_policy, train_dataset, eval_dataset):
    import copy

    frozen_copy = copy.deepcopy(policy).eval()  # the policy as it is before PPO moves it
    return PPOTrainer(args=args, processing_class=tokenizer, model=policy, ref_model=frozen_copy,
                      reward_model=reward_model, value_model=value_model, train_dataset=train_dataset,
                      eval_dataset=eval_dataset)
''',
    },
}
