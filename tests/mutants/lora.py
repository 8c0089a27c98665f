"""Mutants and correct variants of the starred LoRA DPO task (`add_lora_adapters`, `count_parameters`, `lora_reference_logps`), graded by `autograder/checks/lora.py`."""
from mutants.catalogue import mutant

_LORA_CONFIG = '''
def add_lora_adapters(model, r, alpha, target_modules):
    config = LoraConfig(task_type="CAUSAL_LM", r=r, lora_alpha=alpha, target_modules=list(target_modules),
                        lora_dropout=0.0)
    return get_peft_model(model, config)
'''


MUTANTS: dict[str, dict] = {
    # ------------------------------------------------------------ add_lora_adapters
    "lora_base_not_frozen": mutant("add_lora_adapters", "test_lora_dpo", '''
def add_lora_adapters(model, r, alpha, target_modules):
    config = LoraConfig(task_type="CAUSAL_LM", r=r, lora_alpha=alpha, target_modules=list(target_modules),
                        lora_dropout=0.0)
    peft_model = get_peft_model(model, config)
    for parameter in peft_model.parameters():  # make sure the model trains
        parameter.requires_grad = True
    return peft_model
'''),
    "lora_target_modules_ignored": mutant("add_lora_adapters", "test_lora_dpo", '''
def add_lora_adapters(model, r, alpha, target_modules):
    return get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=r, lora_alpha=alpha, lora_dropout=0.0))
'''),
    "lora_rank_and_alpha_swapped": mutant("add_lora_adapters", "test_lora_dpo", _LORA_CONFIG.replace(
        "r=r, lora_alpha=alpha", "r=alpha, lora_alpha=r")),
    "lora_dropout_left_on": mutant("add_lora_adapters", "test_lora_dpo", _LORA_CONFIG.replace(
        "lora_dropout=0.0", "lora_dropout=0.05")),
    "lora_targets_hardcoded_attention": mutant("add_lora_adapters", "test_lora_dpo", _LORA_CONFIG.replace(
        "target_modules=list(target_modules)", 'target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]')),
    # a trainable copy of the output layer, as reward-model LoRA recipes save their score head
    "lora_output_layer_trained_too": mutant("add_lora_adapters", "test_lora_dpo", _LORA_CONFIG.replace(
        "lora_dropout=0.0)", 'lora_dropout=0.0,\n                        modules_to_save=["lm_head"])')),
    # PiSSA initialisation: the adapters start from the principal components, which it removes from the base
    # weights; the model computes what it did, but with the adapters off it is no longer the pretrained model
    "lora_pissa_initialisation": mutant("add_lora_adapters", "test_lora_dpo", _LORA_CONFIG.replace(
        "lora_dropout=0.0)", 'lora_dropout=0.0,\n                        init_lora_weights="pissa_niter_4")')),
    # ------------------------------------------------------------ count_parameters
    "count_parameters_from_state_dict": mutant("count_parameters", "test_lora_dpo", '''
def count_parameters(model):
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(tensor.numel() for tensor in model.state_dict().values())
    return trainable, total
'''),
    # ------------------------------------------------------------ lora_reference_logps
    "lora_reference_with_adapters_on": mutant("lora_reference_logps", "test_lora_dpo", '''
def lora_reference_logps(model, dataset, tokenizer, batch_size, max_seq_len=None):
    return precompute_reference_logps(model, dataset, tokenizer, batch_size, max_seq_len)
'''),
    "lora_adapters_left_disabled": mutant("lora_reference_logps", "test_lora_dpo", '''
def lora_reference_logps(model, dataset, tokenizer, batch_size, max_seq_len=None):
    model.base_model.disable_adapter_layers()
    return precompute_reference_logps(model, dataset, tokenizer, batch_size, max_seq_len)
'''),
    "lora_reference_max_seq_len_dropped": mutant("lora_reference_logps", "test_lora_dpo", '''
def lora_reference_logps(model, dataset, tokenizer, batch_size, max_seq_len=None):
    with model.disable_adapter():
        return precompute_reference_logps(model, dataset, tokenizer, batch_size)
'''),
    # get_base_model() is the wrapped transformers model, whose layers still carry the (active) adapters
    "lora_reference_from_get_base_model": mutant("lora_reference_logps", "test_lora_dpo", '''
def lora_reference_logps(model, dataset, tokenizer, batch_size, max_seq_len=None):
    return precompute_reference_logps(model.get_base_model(), dataset, tokenizer, batch_size, max_seq_len)
'''),
    # unload() gives the base model back by taking the adapter layers out of the model: the reference is right,
    # but there is nothing left to train
    "lora_reference_after_unload": mutant("lora_reference_logps", "test_lora_dpo", '''
def lora_reference_logps(model, dataset, tokenizer, batch_size, max_seq_len=None):
    base = model.unload()
    return precompute_reference_logps(base, dataset, tokenizer, batch_size, max_seq_len)
'''),
}


VARIANTS: dict[str, dict[str, str]] = {
    # transformers' own adapter support instead of a PeftModel: add_adapter, num_parameters, and the adapters
    # switched off and on by hand.
    "transformers_add_adapter": {
        "add_lora_adapters": '''
def add_lora_adapters(model, r, alpha, target_modules):
    model.add_adapter(LoraConfig(r=r, lora_alpha=alpha, target_modules=list(target_modules), lora_dropout=0.0))
    return model
''',
        "count_parameters": '''
def count_parameters(model):
    return model.num_parameters(only_trainable=True), model.num_parameters()
''',
        "lora_reference_logps": '''
def lora_reference_logps(model, dataset, tokenizer, batch_size, max_seq_len=None):
    model.disable_adapters()
    try:
        return precompute_reference_logps(model, dataset, tokenizer, batch_size, max_seq_len)
    finally:
        model.enable_adapters()
''',
    },
    # peft's TaskType enum and bias="none"; a loop over named_parameters; the adapter layers switched off on the
    # LoraModel with try/finally, calling dataset_logps and adding the columns itself.
    "task_type_enum_and_layers_by_hand": {
        "add_lora_adapters": '''
def add_lora_adapters(model, r, alpha, target_modules):
    from peft import TaskType

    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=target_modules, lora_dropout=0.0, bias="none",
                        task_type=TaskType.CAUSAL_LM)
    return get_peft_model(model, config)
''',
        "count_parameters": '''
def count_parameters(model):
    trainable = total = 0
    for _, parameter in model.named_parameters():  # a shared tensor is listed once
        total += parameter.numel()
        if parameter.requires_grad:
            trainable += parameter.numel()
    return trainable, total
''',
        "lora_reference_logps": '''
def lora_reference_logps(model, dataset, tokenizer, batch_size, max_seq_len=None):
    model.base_model.disable_adapter_layers()
    try:
        chosen, rejected = dataset_logps(model, dataset, tokenizer, batch_size, max_seq_len)
    finally:
        model.base_model.enable_adapter_layers()
    dataset = dataset.remove_columns([c for c in ("ref_chosen_logps", "ref_rejected_logps") if c in dataset.column_names])
    return dataset.add_column("ref_chosen_logps", chosen.tolist()).add_column("ref_rejected_logps", rejected.tolist())
''',
    },
    # peft's inject_adapter_in_model on the transformers model itself (no PeftModel around it), parameters counted
    # by storage, and the adapter layers switched off and on one by one.
    "injected_layers_toggled_by_hand": {
        "add_lora_adapters": '''
def add_lora_adapters(model, r, alpha, target_modules):
    from peft import inject_adapter_in_model

    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(target_modules), lora_dropout=0.0)
    return inject_adapter_in_model(config, model)
''',
        "count_parameters": '''
def count_parameters(model):
    tensors = {p.data_ptr(): p for p in model.state_dict(keep_vars=True).values() if isinstance(p, torch.nn.Parameter)}
    return (sum(p.numel() for p in tensors.values() if p.requires_grad), sum(p.numel() for p in tensors.values()))
''',
        "lora_reference_logps": '''
def lora_reference_logps(model, dataset, tokenizer, batch_size, max_seq_len=None):
    from peft.tuners.lora import LoraLayer

    layers = [module for module in model.modules() if isinstance(module, LoraLayer)]
    for layer in layers:
        layer.enable_adapters(False)
    try:
        return precompute_reference_logps(model, dataset, tokenizer, batch_size, max_seq_len)
    finally:
        for layer in layers:
            layer.enable_adapters(True)
''',
    },
}
