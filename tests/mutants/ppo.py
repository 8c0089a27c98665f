"""Mutants and correct variants of PPO with TRL (`tokenize_prompt`, `load_ppo_models`, `make_ppo_config`, `build_ppo_trainer`), graded by `autograder/checks/ppo.py`."""
from mutants.catalogue import mutant


MUTANTS: dict[str, dict] = {
    # ------------------------------------------------------------ tokenize_prompt
    "prompt_ids_as_batch_encoding": mutant("tokenize_prompt", "test_ppo", '''
def tokenize_prompt(example, tokenizer):
    messages = [{"role": "user", "content": example["prompt"]}]
    return {"input_ids": tokenizer.apply_chat_template(messages, add_generation_prompt=True)}
'''),
    "prompt_ids_as_tensor": mutant("tokenize_prompt", "test_ppo", '''
def tokenize_prompt(example, tokenizer):
    messages = [{"role": "user", "content": example["prompt"]}]
    encoding = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    return {"input_ids": encoding["input_ids"]}
'''),
    "prompt_without_generation_prompt": mutant("tokenize_prompt", "test_ppo", '''
def tokenize_prompt(example, tokenizer):
    messages = [{"role": "user", "content": example["prompt"]}]
    return {"input_ids": tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]}
'''),
    # ------------------------------------------------------------ load_ppo_models
    "ppo_reference_is_the_policy": mutant("load_ppo_models", "test_ppo", '''
def load_ppo_models(policy_id, reward_model_path, tokenizer):
    value_model = AutoModelForSequenceClassification.from_pretrained(reward_model_path, num_labels=1, dtype=torch.float32)
    reward_model = AutoModelForSequenceClassification.from_pretrained(reward_model_path, num_labels=1, dtype=torch.float32)
    reward_model.eval().requires_grad_(False)
    policy = AutoModelForCausalLM.from_pretrained(policy_id, dtype=torch.float32)
    ref_policy = policy
    for model in (value_model, reward_model, policy):
        cover_tokenizer(model, tokenizer)
    return value_model, reward_model, policy, ref_policy
'''),
    "ppo_value_model_from_the_policy": mutant("load_ppo_models", "test_ppo", '''
def load_ppo_models(policy_id, reward_model_path, tokenizer):
    value_model = AutoModelForSequenceClassification.from_pretrained(policy_id, num_labels=1, dtype=torch.float32)
    reward_model = AutoModelForSequenceClassification.from_pretrained(reward_model_path, num_labels=1, dtype=torch.float32)
    policy = AutoModelForCausalLM.from_pretrained(policy_id, dtype=torch.float32)
    ref_policy = AutoModelForCausalLM.from_pretrained(policy_id, dtype=torch.float32)
    for model in (reward_model, ref_policy):
        model.eval().requires_grad_(False)
    for model in (value_model, reward_model, policy, ref_policy):
        cover_tokenizer(model, tokenizer)
    return value_model, reward_model, policy, ref_policy
'''),
    "ppo_nothing_frozen": mutant("load_ppo_models", "test_ppo", '''
def load_ppo_models(policy_id, reward_model_path, tokenizer):
    value_model = AutoModelForSequenceClassification.from_pretrained(reward_model_path, num_labels=1, dtype=torch.float32)
    reward_model = AutoModelForSequenceClassification.from_pretrained(reward_model_path, num_labels=1, dtype=torch.float32)
    policy = AutoModelForCausalLM.from_pretrained(policy_id, dtype=torch.float32)
    ref_policy = AutoModelForCausalLM.from_pretrained(policy_id, dtype=torch.float32)
    for model in (value_model, reward_model, policy, ref_policy):
        cover_tokenizer(model, tokenizer)
    return value_model, reward_model, policy, ref_policy
'''),
    "ppo_models_in_checkpoint_dtype": mutant("load_ppo_models", "test_ppo", '''
def load_ppo_models(policy_id, reward_model_path, tokenizer):
    value_model = AutoModelForSequenceClassification.from_pretrained(reward_model_path, num_labels=1)
    reward_model = AutoModelForSequenceClassification.from_pretrained(reward_model_path, num_labels=1)
    policy = AutoModelForCausalLM.from_pretrained(policy_id)
    ref_policy = AutoModelForCausalLM.from_pretrained(policy_id)
    for model in (reward_model, ref_policy):
        model.eval().requires_grad_(False)
    for model in (value_model, reward_model, policy, ref_policy):
        cover_tokenizer(model, tokenizer)
    return value_model, reward_model, policy, ref_policy
'''),
    # ------------------------------------------------------------ make_ppo_config
    "ppo_config_bf16_forced": mutant("make_ppo_config", "test_ppo", '''
def make_ppo_config(output_dir):
    return PPOConfig(
        output_dir=str(output_dir), learning_rate=PPO_LR, per_device_train_batch_size=PPO_BATCH_SIZE,
        num_ppo_epochs=PPO_EPOCHS, total_episodes=PPO_TOTAL_EPISODES, response_length=PPO_RESPONSE_LENGTH,
        stop_token="eos", kl_coef=PPO_KL_COEF, missing_eos_penalty=PPO_MISSING_EOS_PENALTY,
        num_sample_generations=PPO_SAMPLE_GENERATIONS, save_strategy="no", report_to="none", bf16=True,
    )
'''),
    "ppo_config_values_copied": mutant("make_ppo_config", "test_ppo", '''
def make_ppo_config(output_dir):
    return PPOConfig(
        output_dir=str(output_dir), learning_rate=1e-5, per_device_train_batch_size=16, num_ppo_epochs=4,
        total_episodes=8000, response_length=96, stop_token="eos", kl_coef=0.05, missing_eos_penalty=1.0,
        save_strategy="no", report_to="none", **trainer_precision(),
    )
'''),
    "ppo_config_without_stop_token": mutant("make_ppo_config", "test_ppo", '''
def make_ppo_config(output_dir):
    return PPOConfig(
        output_dir=str(output_dir), learning_rate=PPO_LR, per_device_train_batch_size=PPO_BATCH_SIZE,
        num_ppo_epochs=PPO_EPOCHS, total_episodes=PPO_TOTAL_EPISODES, response_length=PPO_RESPONSE_LENGTH,
        kl_coef=PPO_KL_COEF, missing_eos_penalty=PPO_MISSING_EOS_PENALTY,
        num_sample_generations=PPO_SAMPLE_GENERATIONS, save_strategy="no", report_to="none", **trainer_precision(),
    )
'''),
    "ppo_config_precision_off_everywhere": mutant("make_ppo_config", "test_ppo", '''
def make_ppo_config(output_dir):
    return PPOConfig(
        output_dir=str(output_dir), learning_rate=PPO_LR, per_device_train_batch_size=PPO_BATCH_SIZE,
        num_ppo_epochs=PPO_EPOCHS, total_episodes=PPO_TOTAL_EPISODES, response_length=PPO_RESPONSE_LENGTH,
        stop_token="eos", kl_coef=PPO_KL_COEF, missing_eos_penalty=PPO_MISSING_EOS_PENALTY,
        num_sample_generations=PPO_SAMPLE_GENERATIONS, save_strategy="no", report_to="none", bf16=False, fp16=False,
    )
'''),
    "ppo_config_sample_generations_left_out": mutant("make_ppo_config", "test_ppo", '''
def make_ppo_config(output_dir):
    return PPOConfig(
        output_dir=str(output_dir), learning_rate=PPO_LR, per_device_train_batch_size=PPO_BATCH_SIZE,
        num_ppo_epochs=PPO_EPOCHS, total_episodes=PPO_TOTAL_EPISODES, response_length=PPO_RESPONSE_LENGTH,
        stop_token="eos", kl_coef=PPO_KL_COEF, missing_eos_penalty=PPO_MISSING_EOS_PENALTY,
        save_strategy="no", report_to="none", **trainer_precision(),
    )
'''),
    "ppo_config_values_of_this_run": mutant("make_ppo_config", "test_ppo", '''
def make_ppo_config(output_dir):
    # the values the hyper-parameter cell printed in this (fast) run
    return PPOConfig(
        output_dir=str(output_dir), learning_rate=1e-4, per_device_train_batch_size=2, num_ppo_epochs=1,
        total_episodes=4, response_length=8, stop_token="eos", kl_coef=0.05, missing_eos_penalty=1.0,
        num_sample_generations=0, save_strategy="no", report_to="none", **trainer_precision(),
    )
'''),
    "ppo_config_hparams_splatted": mutant("make_ppo_config", "test_ppo", '''
def make_ppo_config(output_dir):
    return PPOConfig(output_dir=str(output_dir), **PPO_HPARAMS, stop_token="eos",
                     num_sample_generations=PPO_SAMPLE_GENERATIONS, save_strategy="no", report_to="none",
                     **trainer_precision())
'''),
    "ppo_config_fp16_on_every_gpu": mutant("make_ppo_config", "test_ppo", '''
def make_ppo_config(output_dir):
    return PPOConfig(
        output_dir=str(output_dir), learning_rate=PPO_LR, per_device_train_batch_size=PPO_BATCH_SIZE,
        num_ppo_epochs=PPO_EPOCHS, total_episodes=PPO_TOTAL_EPISODES, response_length=PPO_RESPONSE_LENGTH,
        stop_token="eos", kl_coef=PPO_KL_COEF, missing_eos_penalty=PPO_MISSING_EOS_PENALTY,
        num_sample_generations=PPO_SAMPLE_GENERATIONS, save_strategy="no", report_to="none",
        bf16=False, fp16=DEVICE == "cuda",  # half precision on any GPU
    )
'''),
    "ppo_config_both_flags_on_recent_gpus": mutant("make_ppo_config", "test_ppo", '''
def make_ppo_config(output_dir):
    return PPOConfig(
        output_dir=str(output_dir), learning_rate=PPO_LR, per_device_train_batch_size=PPO_BATCH_SIZE,
        num_ppo_epochs=PPO_EPOCHS, total_episodes=PPO_TOTAL_EPISODES, response_length=PPO_RESPONSE_LENGTH,
        stop_token="eos", kl_coef=PPO_KL_COEF, missing_eos_penalty=PPO_MISSING_EOS_PENALTY,
        num_sample_generations=PPO_SAMPLE_GENERATIONS, save_strategy="no", report_to="none",
        bf16=DEVICE == "cuda" and AMP_DTYPE == torch.bfloat16, fp16=DEVICE == "cuda",
    )
'''),
    # ------------------------------------------------------------ build_ppo_trainer
    "ppo_trainer_policy_and_reference_swapped": mutant("build_ppo_trainer", "test_ppo", '''
def build_ppo_trainer(args, tokenizer, value_model, reward_model, policy, ref_policy, train_dataset, eval_dataset):
    return PPOTrainer(args=args, processing_class=tokenizer, model=ref_policy, ref_model=policy,
                      reward_model=reward_model, value_model=value_model, train_dataset=train_dataset,
                      eval_dataset=eval_dataset)
'''),
    "ppo_trainer_reward_and_value_swapped": mutant("build_ppo_trainer", "test_ppo", '''
def build_ppo_trainer(args, tokenizer, value_model, reward_model, policy, ref_policy, train_dataset, eval_dataset):
    return PPOTrainer(args=args, processing_class=tokenizer, model=policy, ref_model=ref_policy,
                      reward_model=value_model, value_model=reward_model, train_dataset=train_dataset,
                      eval_dataset=eval_dataset)
'''),
    "ppo_trainer_arguments_in_our_order": mutant("build_ppo_trainer", "test_ppo", '''
def build_ppo_trainer(args, tokenizer, value_model, reward_model, policy, ref_policy, train_dataset, eval_dataset):
    return PPOTrainer(args, tokenizer, value_model, reward_model, policy, ref_policy, train_dataset, eval_dataset)
'''),
    "ppo_trainer_evaluates_on_training_prompts": mutant("build_ppo_trainer", "test_ppo", '''
def build_ppo_trainer(args, tokenizer, value_model, reward_model, policy, ref_policy, train_dataset, eval_dataset):
    return PPOTrainer(args=args, processing_class=tokenizer, model=policy, ref_model=ref_policy,
                      reward_model=reward_model, value_model=value_model, train_dataset=train_dataset,
                      eval_dataset=train_dataset)
'''),
    "ppo_trainer_pads_prompts_on_the_right": mutant("build_ppo_trainer", "test_ppo", '''
def build_ppo_trainer(args, tokenizer, value_model, reward_model, policy, ref_policy, train_dataset, eval_dataset):
    tokenizer.padding_side = "right"  # pad like the reward model does
    return PPOTrainer(args=args, processing_class=tokenizer, model=policy, ref_model=ref_policy,
                      reward_model=reward_model, value_model=value_model, train_dataset=train_dataset,
                      eval_dataset=eval_dataset)
'''),
    "ppo_trainer_sets_the_learning_rate": mutant("build_ppo_trainer", "test_ppo", '''
def build_ppo_trainer(args, tokenizer, value_model, reward_model, policy, ref_policy, train_dataset, eval_dataset):
    args.learning_rate = PPO_LR  # make sure the trainer uses our constant
    return PPOTrainer(args=args, processing_class=tokenizer, model=policy, ref_model=ref_policy,
                      reward_model=reward_model, value_model=value_model, train_dataset=train_dataset,
                      eval_dataset=eval_dataset)
'''),
}


VARIANTS: dict[str, dict[str, str]] = {
    # The prompt rendered to text and tokenized by the tokenizer; copies of loaded models for the frozen ones; the
    # precision flags spelled out; the trainer built with keywords in another order.
    "rendered_text_and_deepcopies": {
        "tokenize_prompt": '''
def tokenize_prompt(example, tokenizer):
    text = tokenizer.apply_chat_template([{"role": "user", "content": example["prompt"]}], tokenize=False,
                                         add_generation_prompt=True)
    return {"input_ids": tokenizer(text, add_special_tokens=False)["input_ids"]}
''',
        "load_ppo_models": '''
def load_ppo_models(policy_id, reward_model_path, tokenizer):
    import copy
    value_model = cover_tokenizer(AutoModelForSequenceClassification.from_pretrained(reward_model_path, dtype=torch.float32), tokenizer)
    reward_model = copy.deepcopy(value_model).eval().requires_grad_(False)
    policy = cover_tokenizer(AutoModelForCausalLM.from_pretrained(policy_id, dtype=torch.float32), tokenizer)
    ref_policy = copy.deepcopy(policy).eval().requires_grad_(False)
    return value_model, reward_model, policy, ref_policy
''',
        "make_ppo_config": '''
def make_ppo_config(output_dir):
    settings = dict(learning_rate=PPO_LR, per_device_train_batch_size=PPO_BATCH_SIZE, num_ppo_epochs=PPO_EPOCHS,
                    total_episodes=PPO_TOTAL_EPISODES, response_length=PPO_RESPONSE_LENGTH, kl_coef=PPO_KL_COEF,
                    missing_eos_penalty=PPO_MISSING_EOS_PENALTY, num_sample_generations=PPO_SAMPLE_GENERATIONS)
    return PPOConfig(output_dir=output_dir, stop_token="eos", save_strategy="no", report_to="none",
                     bf16=DEVICE == "cuda" and AMP_DTYPE == torch.bfloat16,
                     fp16=DEVICE == "cuda" and AMP_DTYPE == torch.float16, **settings)
''',
        "build_ppo_trainer": '''
def build_ppo_trainer(args, tokenizer, value_model, reward_model, policy, ref_policy, train_dataset, eval_dataset):
    return PPOTrainer(value_model=value_model, reward_model=reward_model, ref_model=ref_policy, model=policy,
                      processing_class=tokenizer, args=args, eval_dataset=eval_dataset, train_dataset=train_dataset)
''',
    },
    # return_dict=False for a plain list; the configuration class imported inside the function under another name;
    # TRL's own copy of the policy as the reference (ref_model=None); the log-probs of one unpadded text at a time,
    # as Python lists.
    "plain_lists_and_one_text_at_a_time": {
        "tokenize_prompt": '''
def tokenize_prompt(example, tokenizer):
    ids = tokenizer.apply_chat_template([{"role": "user", "content": example["prompt"]}], add_generation_prompt=True,
                                        return_dict=False)
    return {"input_ids": [int(i) for i in ids]}
''',
        "make_ppo_config": '''
def make_ppo_config(output_dir):
    from trl.experimental.ppo import PPOConfig as TRLPPOConfig

    return TRLPPOConfig(output_dir=output_dir, learning_rate=PPO_LR, per_device_train_batch_size=PPO_BATCH_SIZE,
                        num_ppo_epochs=PPO_EPOCHS, total_episodes=PPO_TOTAL_EPISODES,
                        response_length=PPO_RESPONSE_LENGTH, kl_coef=PPO_KL_COEF,
                        missing_eos_penalty=PPO_MISSING_EOS_PENALTY, num_sample_generations=PPO_SAMPLE_GENERATIONS,
                        stop_token="eos", save_strategy="no", report_to="none", **trainer_precision())
''',
        "build_ppo_trainer": '''
def build_ppo_trainer(args, tokenizer, value_model, reward_model, policy, ref_policy, train_dataset, eval_dataset):
    return PPOTrainer(args=args, processing_class=tokenizer, model=policy, ref_model=None, reward_model=reward_model,
                      value_model=value_model, train_dataset=train_dataset, eval_dataset=eval_dataset)
''',
        "sequence_log_probs": '''
def sequence_log_probs(model, tokenizer, texts, batch_size=8, max_length=128):
    totals, counts = [], []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_length]
        if len(ids) < 2:
            totals.append(0.0)
            counts.append(0)
            continue
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids], device=model.device)).logits[0]
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        totals.append(sum(log_probs[t - 1, ids[t]].item() for t in range(1, len(ids))))
        counts.append(len(ids) - 1)
    return {"total": totals, "mean": [t / c if c else 0.0 for t, c in zip(totals, counts)], "num_tokens": counts}
''',
    },
    # The prompt encoded from its rendered text with tokenizer.encode; the configuration's arguments gathered in a
    # dict (trainer_precision merged in, a Path as output_dir) and the trainer's in another.
    "keyword_dicts_and_encode": {
        "tokenize_prompt": '''
def tokenize_prompt(example, tokenizer):
    text = tokenizer.apply_chat_template([{"role": "user", "content": example["prompt"]}], tokenize=False,
                                         add_generation_prompt=True)
    return {"input_ids": tokenizer.encode(text, add_special_tokens=False)}
''',
        "make_ppo_config": '''
def make_ppo_config(output_dir):
    kwargs = {"output_dir": output_dir, "learning_rate": PPO_LR, "per_device_train_batch_size": PPO_BATCH_SIZE,
              "num_ppo_epochs": PPO_EPOCHS, "total_episodes": PPO_TOTAL_EPISODES,
              "response_length": PPO_RESPONSE_LENGTH, "kl_coef": PPO_KL_COEF,
              "missing_eos_penalty": PPO_MISSING_EOS_PENALTY, "num_sample_generations": PPO_SAMPLE_GENERATIONS,
              "stop_token": "eos", "save_strategy": "no", "report_to": "none"}
    kwargs.update(trainer_precision())
    return PPOConfig(**kwargs)
''',
        "build_ppo_trainer": '''
def build_ppo_trainer(args, tokenizer, value_model, reward_model, policy, ref_policy, train_dataset, eval_dataset):
    models = {"model": policy, "ref_model": ref_policy, "reward_model": reward_model, "value_model": value_model}
    data = {"train_dataset": train_dataset, "eval_dataset": eval_dataset}
    return PPOTrainer(args=args, processing_class=tokenizer, **models, **data)
''',
    },
}
