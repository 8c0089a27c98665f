"""`python -m autograder bench {dpo,logprob,grade,ppo}`: measure the kit's hot paths and PPO's learning curve.

- `bench dpo [--device cpu|cuda] [--steps N] [--trl-config default|fastest|both] [--json]`: the solution
  notebook's DPO loop (its library cells, loaded with `autograder.notebook.execute.load_namespace`, not a copy)
  against TRL's `DPOTrainer`, on the same model, pairs, batch size, sequence length, precision, learning rate
  and number of optimizer steps, one after the other in this process. Our time includes computing the
  reference log-probs of the pairs; TRL runs in its default configuration (its reference model inside every
  step) and in its fastest (`precompute_ref_log_probs`, constructor timed). Each side's model FLOPs per
  second are reported as a fraction of a float32 matmul measured in the same run. Prints one JSON line.
- `bench logprob [--device cpu|cuda]`: extra peak memory of the notebook's `get_log_prob` against a naive
  `log_softmax` + `gather`, forward and forward + backward, each measured in a fresh subprocess.
- `bench grade [--students N]`: grades N copies of the solution with `--jobs 1` and `--jobs 2` and reports
  the seconds per submission (the checks of a judge's first submission, which computes the references, apart
  from the later ones, which reuse them), where they go (the sandbox's process start, imports, model load and
  cells, and how much of that the judge waited for; the checks, the judge's wait on the sandbox within them
  and the megabytes through the pipes; the CPU seconds of the judge and of the sandbox) and the class
  throughput.
- `bench ppo [--updates N] [--reward-model DIR] [--set NAME=VALUE] [--out PREFIX]`: a longer PPO run than the
  demo's, with the notebook's own `make_ppo_config`/`build_ppo_trainer` and the `demo` profile's PPO settings
  (its 8 training prompts included; `--set PPO_TRAIN_PROMPTS=None` answers every training prompt; other
  constants and PPOConfig fields likewise), on the SmolLM2 fixture and the reward model the demo saved. Writes
  the reward and KL of every update to PREFIX.json and a plot to PREFIX.png (default `docs/ppo_bench`), with
  the greedy answers to the first `--samples` held-out prompts before and after training.

Timings depend on the machine and on its load: compare the numbers of one run, and read `load_avg` in the
output (the 1-minute load average of the machine, before and after).
"""
import argparse
import ctypes
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

from autograder.layout import REPO_ROOT

REAL_DATASET_PAIRS = 10_884  # HumanLLMs/Human-Like-DPO-Dataset, train split


# ---------------------------------------------------------------- memory and machine


def rss_bytes() -> int:
    """Resident set size of this process now."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def release_freed_memory() -> None:
    """Collect garbage and hand freed heap pages back to the system, so RSS measures live memory."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakRSS:
    """Samples this process's RSS every `interval` seconds in a thread and keeps the maximum."""

    def __init__(self, interval: float = 0.005):
        self.interval, self.peak = interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def __enter__(self):
        self.peak = rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def synchronize(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


@contextmanager
def peak_memory(device: str):
    """Peak memory of a block in GB (in `result["peak_mem_gb"]`): RSS on CPU, max_memory_allocated on CUDA."""
    import torch

    result = {}
    release_freed_memory()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    with PeakRSS() as rss:
        yield result
    result["peak_mem_gb"] = (torch.cuda.max_memory_allocated() if device == "cuda" else rss.peak) / 2**30


def machine() -> dict:
    """What the numbers were measured on."""
    import torch

    info = {
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    try:
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def emit(result: dict, args: argparse.Namespace, lines: list[str]) -> None:
    """Print the table (unless --json) and the JSON line; with --save, also append the JSON line to a file."""
    if not args.json:
        print("\n".join(lines))
    print(json.dumps(result))
    if args.save:
        result = {**result, "command": "python -m autograder " + " ".join(sys.argv[1:])}
        with open(args.save, "a") as handle:
            handle.write(json.dumps(result) + "\n")


# ---------------------------------------------------------------- bench dpo


def notebook_namespace(model: Path, output_dir: Path) -> tuple[dict, dict]:
    """The solution notebook's library cells, configured for `model` and the offline fixtures, and the env used."""
    from autograder.fixtures.build import build_fixtures
    from autograder.layout import SOURCE_NOTEBOOK
    from autograder.notebook.execute import load_namespace, offline_env

    fixtures = build_fixtures()
    env = {**offline_env(fixtures, output_dir, "demo"), "HW2_MODEL_ID": str(model)}
    return load_namespace(SOURCE_NOTEBOOK, env), env


def real_tokens(dataset, max_seq_len: int | None) -> int:
    """Non-padding tokens of the two sequences (prompt + answer, cut at max_seq_len) of every pair."""
    total = 0
    for prompt, chosen, rejected in zip(dataset["prompt_input_ids"], dataset["chosen_input_ids"], dataset["rejected_input_ids"]):
        for answer in (chosen, rejected):
            length = len(prompt) + len(answer)
            total += length if max_seq_len is None else min(length, max_seq_len)
    return total


def run_ours(ns: dict, dataset, tokenizer, model_path: Path, steps: int, device: str) -> dict:
    """The notebook's path: precompute the reference log-probs with the untrained model, then `train_dpo`.

    The clock covers the precomputation and the training; the memory peak also covers loading the model.
    """
    ns["set_seed"](0)
    with peak_memory(device) as result:
        model = ns["load_causal_lm"](str(model_path), trainable=True)
        synchronize(device)
        start = time.perf_counter()
        data = ns["precompute_reference_logps"](model, dataset, tokenizer, ns["MICRO_BATCH_SIZE"], ns["MAX_SEQ_LEN"])
        history = ns["train_dpo"](model, data, tokenizer, steps)
        synchronize(device)
        result["seconds"] = time.perf_counter() - start
        del model, data
    losses = history["loss"]
    return {**result, "final_loss": losses[-1], "mean_loss": sum(losses) / len(losses), "first_loss": losses[0]}


TRL_CONFIGS = ("default", "fastest")


def run_trl(ns: dict, pairs, tokenizer, model_path: Path, steps: int, device: str, output_dir: Path,
            config_name: str = "default") -> dict:
    """TRL's DPOTrainer with the notebook's hyper-parameters (no checkpointing, no LR schedule, no clipping).

    `default`: TRL's defaults, a reference model that runs in every step; the clock covers `trainer.train()`
    (the constructor only tokenizes). `fastest`: the fastest setting TRL offers here, `precompute_ref_log_probs`
    (the reference log-probs computed once, in the constructor, and no reference model kept; on CUDA with
    flash-attention also `padding_free`); the clock then covers the constructor too. The memory peak covers
    loading the models, the constructor and the training.
    """
    import datasets
    import torch
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    fastest = config_name == "fastest"
    flash = fastest and device == "cuda" and _has_flash_attention()
    amp = ns["AMP_DTYPE"]
    config = DPOConfig(
        output_dir=str(output_dir), per_device_train_batch_size=ns["MICRO_BATCH_SIZE"],
        gradient_accumulation_steps=ns["GRAD_ACCUM_STEPS"], max_steps=steps, learning_rate=ns["LR"],
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=0.0, beta=ns["BETA"],
        max_length=ns["MAX_SEQ_LEN"], gradient_checkpointing=False, bf16=amp == torch.bfloat16,
        fp16=amp == torch.float16, use_cpu=device == "cpu", logging_steps=1, report_to="none", save_strategy="no",
        disable_tqdm=True, seed=0, dataloader_num_workers=0,
        precompute_ref_log_probs=fastest, padding_free=flash,
    )

    def load():
        kwargs = {"attn_implementation": "flash_attention_2"} if flash else {}
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32, **kwargs)
        ns["disable_dropout_in_model"](model)
        return model

    ns["set_seed"](0)
    datasets.disable_caching()  # TRL caches precomputed log-probs by fingerprint: a re-run must compute them again
    with peak_memory(device) as result:
        policy = load()
        reference = None if fastest else load().eval().requires_grad_(False)
        synchronize(device)
        start = time.perf_counter()
        trainer = DPOTrainer(model=policy, ref_model=reference, args=config, train_dataset=pairs,
                             processing_class=tokenizer)
        synchronize(device)
        if not fastest:  # the default constructor only tokenizes, which our side does untimed too
            start = time.perf_counter()
        trainer.train()
        synchronize(device)
        result["seconds"] = time.perf_counter() - start
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        tokens = int(trainer._total_train_tokens)
        del trainer, policy, reference
    datasets.enable_caching()
    return {**result, "final_loss": losses[-1], "mean_loss": sum(losses) / len(losses), "first_loss": losses[0],
            "tokens": tokens, "padding_free": flash}


def _has_flash_attention() -> bool:
    import importlib.util

    return importlib.util.find_spec("flash_attn") is not None


def matmul_gflops(device: str, size: int = 2048, repeats: int = 10) -> float:
    """Measured float32 matrix-multiply throughput of this device (GFLOP/s): the ceiling the trainers share."""
    import torch

    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    for _ in range(2):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def non_embedding_parameters(model_path: Path) -> int:
    """Parameters of the transformer body (the token embedding, tied with the output layer, left out)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_path))
    embedding = model.get_input_embeddings().weight.numel()
    return sum(p.numel() for p in model.parameters()) - embedding


def conversational(example: dict) -> dict:
    """A text preference pair as chat messages, the form TRL applies the chat template to."""
    return {
        "prompt": [{"role": "user", "content": example["prompt"]}],
        "chosen": [{"role": "assistant", "content": example["chosen"]}],
        "rejected": [{"role": "assistant", "content": example["rejected"]}],
    }


def bench_dpo(args: argparse.Namespace) -> int:
    import torch
    import transformers

    from autograder.fixtures.build import build_fixtures
    from autograder.notebook.execute import environment

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return 2
    if args.batch_size % args.grad_accum:
        print("error: --batch-size must be a multiple of --grad-accum", file=sys.stderr)
        return 2
    transformers.logging.set_verbosity_error()
    model_path = Path(args.model) if args.model else build_fixtures().smollm2
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="hw2-bench-") as tmp:
        with redirect_stdout(sys.stderr):  # the notebook's configuration cell prints its settings
            ns, env = notebook_namespace(model_path, Path(tmp) / "outputs")
        with environment(env):
            ns["DEVICE"] = args.device
            if args.device == "cuda":
                ns["AMP_DTYPE"] = {"auto": ns["pick_device"]()[1], "fp32": torch.float32, "bf16": torch.bfloat16,
                                   "fp16": torch.float16}[args.precision]
            else:  # CPUs compute in float32 in the notebook
                ns["AMP_DTYPE"] = torch.float32
            ns.update(MICRO_BATCH_SIZE=args.batch_size // args.grad_accum, GRAD_ACCUM_STEPS=args.grad_accum,
                      MAX_SEQ_LEN=args.max_seq_len, ENABLE_WANDB=False)

            tokenizer = ns["load_tokenizer"](str(model_path))
            pairs_needed = args.steps * args.batch_size
            all_pairs = ns["load_preferences"](ns["DATASET_ID"], "train")
            if pairs_needed > len(all_pairs):
                print(f"error: {args.steps} steps of {args.batch_size} pairs need {pairs_needed} pairs; the data has "
                      f"{len(all_pairs)}", file=sys.stderr)
                return 2
            pairs = all_pairs.shuffle(seed=0).select(range(pairs_needed))
            ours_data = ns["tokenized_preferences"](pairs, tokenizer)
            trl_data = pairs.map(conversational, remove_columns=pairs.column_names)
            tokens = real_tokens(ours_data, args.max_seq_len)

            def run_one(name: str) -> dict:
                if name == "ours":
                    return {**run_ours(ns, ours_data, tokenizer, model_path, args.steps, args.device), "tokens": tokens}
                config_name = "fastest" if name == "trl_fastest" else "default"
                return run_trl(ns, trl_data, tokenizer, model_path, args.steps, args.device, Path(tmp) / name,
                               config_name)

            trl_runs = {"default": ["trl"], "fastest": ["trl_fastest"], "both": ["trl", "trl_fastest"]}[args.trl_config]
            order = (*trl_runs, "ours") if args.trl_first else ("ours", *trl_runs)
            runs = {}
            for name in order:
                print(f"running {name} ...", file=sys.stderr, flush=True)
                with redirect_stdout(sys.stderr):  # progress and trainer logs; stdout keeps the result
                    runs[name] = run_one(name)
            ceiling = matmul_gflops(args.device)

    precision = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[ns["AMP_DTYPE"]]
    # Per token both sides train the policy (forward + backward, 6 FLOPs per parameter) and run the reference
    # forward once (2 per parameter): 8 x the non-embedding parameters, the output layer left out.
    flops_per_token = 8 * non_embedding_parameters(model_path)
    result = {
        "bench": "dpo", "device": args.device, "precision": precision, "model": model_path.name,
        "steps": args.steps, "batch_size": args.batch_size, "grad_accum": args.grad_accum,
        "max_seq_len": args.max_seq_len, "pairs": pairs_needed, "trl_config": args.trl_config,
        "matmul_gflops": round(ceiling, 1), "flops_per_token": flops_per_token,
    }
    for name, run in runs.items():
        rate = run["tokens"] / run["seconds"]
        result.update({
            f"{name}_tokens": run["tokens"], f"{name}_seconds": round(run["seconds"], 2),
            f"{name}_tokens_per_s": round(rate, 1), f"{name}_peak_mem_gb": round(run["peak_mem_gb"], 3),
            f"{name}_first_loss": round(run["first_loss"], 5), f"{name}_final_loss": round(run["final_loss"], 5),
            f"{name}_mean_loss": round(run["mean_loss"], 5),
            f"{name}_flops_fraction": float(f"{rate * flops_per_token / (ceiling * 1e9):.3g}"),
            # a full epoch of the real data set at this batch size and length, from the measured pairs per second
            # (the fixture's answers are shorter than the real data's, so this is a lower bound)
            f"{name}_epoch_estimate_s": round(REAL_DATASET_PAIRS * run["seconds"] / pairs_needed, 1),
        })
    ours_rate = result["ours_tokens_per_s"]
    for name, key in (("trl", "speedup"), ("trl_fastest", "speedup_fastest")):
        if name in runs:
            result[key] = round(ours_rate / result[f"{name}_tokens_per_s"], 3)
    if "trl_fastest" in runs:
        result["trl_fastest_padding_free"] = runs["trl_fastest"]["padding_free"]
    result.update({"peak_mem_kind": "cuda max_memory_allocated" if args.device == "cuda" else "process RSS",
                   "order": list(order), "load_avg": [round(load_start, 2), round(os.getloadavg()[0], 2)],
                   **machine()})
    lines = [
        f"DPO, {args.steps} optimizer steps of {args.batch_size} pairs ({args.grad_accum} micro-batches), "
        f"max length {args.max_seq_len}, {precision} on {args.device}, model {model_path.name}",
        f"{'':14}{'tokens':>9}{'seconds':>9}{'tokens/s':>10}{'peak GB':>9}{'first loss':>11}{'final loss':>11}"
        f"{'of matmul':>11}",
    ]
    names = {"ours": "ours", "trl": "TRL default", "trl_fastest": "TRL fastest"}
    for name, run in runs.items():
        lines.append(f"{names[name]:14}{run['tokens']:>9}{run['seconds']:>9.1f}{run['tokens'] / run['seconds']:>10.1f}"
                     f"{run['peak_mem_gb']:>9.2f}{run['first_loss']:>11.4f}{run['final_loss']:>11.4f}"
                     f"{result[name + '_flops_fraction']:>11.0%}")
    ratios = [f"{result[key]:.2f}x over {label}" for key, label in (("speedup", "TRL default"),
                                                                    ("speedup_fastest", "TRL fastest")) if key in result]
    lines.append(f"ours: {'; '.join(ratios)}; a {ceiling:.0f} GFLOP/s float32 matmul here, "
                 f"{flops_per_token / 1e6:.0f} MFLOP per token; machine load {result['load_avg']}")
    emit(result, args, lines)
    return 0


# ---------------------------------------------------------------- bench logprob

LOGPROB_VARIANTS = ("naive", "notebook", "fast", "trl")


def naive_log_prob(logits, labels, mask):
    """The textbook version: a full log-softmax copy of the logits, then a gather."""
    import torch

    log_probs = logits[:, :-1].log_softmax(-1)
    picked = torch.gather(log_probs, -1, labels[:, 1:].unsqueeze(-1)).squeeze(-1)
    return (picked * mask[:, 1:]).sum(-1)


def trl_log_prob(logits, labels, mask):
    from trl.trainer.utils import selective_log_softmax

    return (selective_log_softmax(logits[:, :-1], labels[:, 1:]) * mask[:, 1:]).sum(-1)


def fast_log_prob(token_log_probs):
    """The training loop's `TokenLogProbs` with the interface of `get_log_prob`.

    The training loop gives it the logits of the scored positions only; here every position is scored with
    the label at its own position (no shift), so that no slice copies the logits.
    """
    def function(logits, labels, mask):
        batch, seq_len, vocab = logits.shape
        logps = token_log_probs.apply(logits.view(-1, vocab), labels.reshape(-1))
        return (logps.view(batch, seq_len) * mask).sum(-1)
    return function


def logprob_child(variant: str, backward: bool, shape: tuple[int, int, int], device: str) -> dict:
    """Extra peak memory of one log-prob function on random logits of `shape` (run in a fresh process)."""
    import torch

    if variant in ("notebook", "fast"):
        namespace, _ = notebook_namespace(Path(tempfile.mkdtemp()) / "unused-model", Path(tempfile.mkdtemp()))
        function = namespace["get_log_prob"] if variant == "notebook" else fast_log_prob(namespace["TokenLogProbs"])
    else:
        function = {"naive": naive_log_prob, "trl": trl_log_prob}[variant]
    batch, seq_len, vocab = shape
    generator = torch.Generator(device).manual_seed(0)
    logits = torch.randn(shape, device=device, generator=generator).requires_grad_(backward)
    labels = torch.randint(vocab, (batch, seq_len), device=device, generator=generator)
    mask = torch.ones(batch, seq_len, device=device)
    release_freed_memory()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    before_rss, before_max = rss_bytes(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with PeakRSS(interval=0.001) as sampler:
        output = function(logits, labels, mask)
        if backward:
            output.sum().backward()
        if device == "cuda":
            torch.cuda.synchronize()
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - before
    else:
        high_water = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        peak = max(sampler.peak, high_water if high_water > before_max else 0) - before_rss
    return {"extra_gb": peak / 2**30, "input_gb": logits.numel() * logits.element_size() / 2**30}


def bench_logprob(args: argparse.Namespace) -> int:
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return 2
    seq_len = args.seq_len or (1024 if args.device == "cuda" else 256)
    shape = (args.batch_size, seq_len, args.vocab)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    load_start = os.getloadavg()[0]
    extra, input_gb = {}, None
    for variant in LOGPROB_VARIANTS:
        for mode in ("forward", "train"):
            code = (f"import json; from autograder.devtools.bench import logprob_child; "
                    f"print(json.dumps(logprob_child({variant!r}, {mode == 'train'}, {shape!r}, {args.device!r})))")
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO_ROOT)
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                return 1
            measured_child = json.loads(done.stdout.strip().splitlines()[-1])
            extra[f"{variant}_{mode}_extra_gb"] = round(measured_child["extra_gb"], 3)
            input_gb = round(measured_child["input_gb"], 3)
    result = {
        "bench": "logprob", "device": args.device, "shape": list(shape), "dtype": "fp32", "logits_gb": input_gb,
        "peak_mem_kind": "cuda max_memory_allocated" if args.device == "cuda" else "process RSS (fresh subprocess)",
        **extra,
        "forward_ratio": round(extra["notebook_forward_extra_gb"] / extra["naive_forward_extra_gb"], 3),
        "train_ratio": round(extra["notebook_train_extra_gb"] / extra["naive_train_extra_gb"], 3),
        "load_avg": [round(load_start, 2), round(os.getloadavg()[0], 2)], **machine(),
    }
    result["fast_train_ratio"] = round(extra["fast_train_extra_gb"] / extra["naive_train_extra_gb"], 3)
    lines = [f"log-probs of {shape[0]} x {shape[1]} positions x {shape[2]} vocabulary (fp32 logits: {input_gb} GB); "
             "memory allocated on top of the logits, peak:",
             f"{'':10}{'forward GB':>12}{'forward + backward GB':>24}"]
    for variant in LOGPROB_VARIANTS:
        lines.append(f"{variant:10}{extra[f'{variant}_forward_extra_gb']:>12.3f}{extra[f'{variant}_train_extra_gb']:>24.3f}")
    lines.append(f"notebook / naive: forward {result['forward_ratio']:.3f}, forward + backward {result['train_ratio']:.3f}; "
                 f"fast / naive, forward + backward: {result['fast_train_ratio']:.3f}")
    emit(result, args, lines)
    return 0


# ---------------------------------------------------------------- bench grade


def write_solution_submissions(folder: Path, students: int) -> None:
    """`students` copies of the solution, filled into the student release, in nbgrader's submitted layout."""
    import nbformat

    from autograder.grading.submission import fill_answers, solution_answers
    from autograder.layout import ASSIGNMENT, NOTEBOOK_NAME, RELEASE_NOTEBOOK

    notebook = fill_answers(RELEASE_NOTEBOOK, solution_answers())
    for index in range(students):
        path = folder / f"student{index + 1:02d}" / ASSIGNMENT / NOTEBOOK_NAME
        path.parent.mkdir(parents=True)
        nbformat.write(notebook, path)


def optional(seconds: float | None) -> str:
    """A table cell: seconds with one decimal, or '-'."""
    return "-" if seconds is None else f"{seconds:.1f}"


def mean(values: list) -> float | None:
    """The mean of the numbers among `values`, to two decimals (None if there are none)."""
    numbers = [v for v in values if isinstance(v, (int, float))]
    return round(sum(numbers) / len(numbers), 2) if numbers else None


def grade_run_summary(results: list[dict], wall: float, jobs: int) -> dict:
    """Where the seconds of one `grade` run went, per submission, from the timings of its grading JSONs."""
    timings = [r.get("timings", {}) for r in results]
    sandbox = [t.get("sandbox", {}) for t in timings]
    checks = [sum(t.get("checks_s", {}).values()) for t in timings]
    later = [t.get("cached_references", 0) > 0 for t in timings]  # a judge's first submission computes them
    seconds = [r["seconds"] for r in results]
    cpu = [t.get("judge_cpu_s", 0) + (s.get("cpu_s") or 0) for t, s in zip(timings, sandbox)]
    return {
        "wall_s": round(wall, 1),
        "wall_per_submission_s": round(wall / len(results), 1),
        "seconds_per_submission": round(sum(seconds) / len(seconds), 1),
        "seconds_later": mean([s for s, warm in zip(seconds, later) if warm]),
        "sandbox_start_s": mean([t.get("sandbox_start_s") for t in timings]),
        "sandbox_forked": sum(bool(s.get("forked")) for s in sandbox),
        "sandbox_fork_s": mean([s.get("fork_s") for s in sandbox]),
        "sandbox_waited_later_s": mean([s.get("waited_s") for s, warm in zip(sandbox, later) if warm]),
        "zygote_imports_s": mean([s.get("zygote", {}).get("imports_s") for s in sandbox]),
        "zygote_model_load_s": mean([s.get("zygote", {}).get("model_load_s") for s in sandbox]),
        "zygote_cpu_s": mean([s.get("zygote", {}).get("cpu_s") for s in sandbox]),
        "sandbox_cells_s": mean([s.get("cells_s") for s in sandbox]),
        "checks_s": mean(checks),
        "checks_first_s": mean([c for c, warm in zip(checks, later) if not warm]),
        "checks_later_s": mean([c for c, warm in zip(checks, later) if warm]),
        "checks_waited_s": mean([sum(t.get("checks_waited_s", {}).values()) for t in timings]),
        "wire_mb": mean([sum(t.get("checks_mb", {}).values()) for t in timings]),
        "judge_cpu_s": mean([t.get("judge_cpu_s") for t in timings]),
        "judge_cpu_later_s": mean([t.get("judge_cpu_s") for t, warm in zip(timings, later) if warm]),
        "sandbox_cpu_s": mean([s.get("cpu_s") for s in sandbox]),
        "cpu_per_submission_later_s": mean([c for c, warm in zip(cpu, later) if warm]),
        "judge_startup_s": round(wall - sum(seconds) / max(jobs, 1), 1),
        "submissions_per_hour": round(3600 * len(results) / wall, 1),
        "all_full_marks": all(r["score"] == r["max_score"] + r.get("extra_credit_max", 0) for r in results),
    }


def bench_grade(args: argparse.Namespace) -> int:
    from autograder.fixtures.build import build_fixtures

    build_fixtures()
    load_start = os.getloadavg()[0]
    runs = {}
    with tempfile.TemporaryDirectory(prefix="hw2-bench-grade-") as tmp:
        submissions = Path(tmp) / "submitted"
        write_solution_submissions(submissions, args.students)
        for jobs in args.jobs:
            out = Path(tmp) / f"graded-jobs{jobs}"
            command = [sys.executable, "-m", "autograder", "grade", str(submissions), "--out", str(out),
                       "--jobs", str(jobs), "--force"]
            print(f"grading {args.students} submissions with --jobs {jobs} ...", file=sys.stderr, flush=True)
            start = time.perf_counter()
            done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
            wall = time.perf_counter() - start
            if done.returncode != 0:
                print(done.stdout[-2000:], done.stderr[-3000:], file=sys.stderr)
                return 1
            results = [json.loads(path.read_text()) for path in sorted(out.glob("student*.json"))]
            runs[jobs] = grade_run_summary(results, wall, jobs)
    result = {"bench": "grade", "students": args.students, **{f"jobs{j}": run for j, run in runs.items()},
              "load_avg": [round(load_start, 2), round(os.getloadavg()[0], 2)], **machine()}
    if len(runs) >= 2:
        first, last = runs[args.jobs[0]], runs[args.jobs[-1]]
        result["throughput_ratio"] = round(last["submissions_per_hour"] / first["submissions_per_hour"], 3)
    lines = [f"grading {args.students} copies of the solution notebook, each in its own sandbox "
             f"(load average {result['load_avg'][0]} before, {result['load_avg'][1]} after, "
             f"on {os.cpu_count()} cores)",
             f"{'jobs':>5}{'wall s':>8}{'wall / sub':>11}{'s / sub':>9}{'later':>7}{'start':>7}{'checks':>8}"
             f"{'first':>7}{'later':>7}{'waited':>8}{'MB':>7}{'CPU / sub':>11}{'subs / hour':>13}{'full marks':>12}"]
    for jobs, run in runs.items():
        lines.append(f"{jobs:>5}{run['wall_s']:>8.1f}{run['wall_per_submission_s']:>11.1f}"
                     f"{run['seconds_per_submission']:>9.1f}{optional(run['seconds_later']):>7}"
                     f"{optional(run['sandbox_start_s']):>7}{optional(run['checks_s']):>8}"
                     f"{optional(run['checks_first_s']):>7}{optional(run['checks_later_s']):>7}"
                     f"{optional(run['checks_waited_s']):>8}{optional(run['wire_mb']):>7}"
                     f"{optional(run['cpu_per_submission_later_s']):>11}"
                     f"{run['submissions_per_hour']:>13.1f}{str(run['all_full_marks']):>12}")
    lines += ["s / sub: seconds of one submission from the judge's side; later: those of a judge process's later "
              "submissions, whose references are cached; start: what the judge waited for the sandbox's child and "
              "the cells (for a judge's first submission also the zygote's imports and model load); checks: first "
              "and later submissions; waited: of the checks, the judge waiting on the sandbox; MB: through the "
              "pipes; CPU / sub: CPU seconds of the judge and the submission's sandboxed process for a later "
              "submission, what it costs on one core"]
    for jobs, run in runs.items():
        lines.append(f"--jobs {jobs}, the sandbox: zygote (once per judge process) imports "
                     f"{optional(run['zygote_imports_s'])} s, model and tokenizers "
                     f"{optional(run['zygote_model_load_s'])} s, {optional(run['zygote_cpu_s'])} CPU s; per "
                     f"submission ({run['sandbox_forked']} of {args.students} forked): fork "
                     f"{run['sandbox_fork_s']} s, waited {optional(run['sandbox_waited_later_s'])} s (later "
                     f"submissions), cells {optional(run['sandbox_cells_s'])} s; CPU: submission's process "
                     f"{optional(run['sandbox_cpu_s'])} s, judge {optional(run['judge_cpu_later_s'])} s (later "
                     f"submissions); judge process startup {run['judge_startup_s']} s")
    emit(result, args, lines)
    return 0


# ---------------------------------------------------------------- command line


# ---------------------------------------------------------------- bench ppo


def ppo_summary(updates: list[dict]) -> dict:
    """Mean score of the first and the last quarter of the updates, and the KL at the end."""
    quarter = max(1, len(updates) // 4)
    mean = lambda rows: sum(row["objective/scores"] for row in rows) / len(rows)  # noqa: E731
    return {"first_quarter_score": mean(updates[:quarter]), "last_quarter_score": mean(updates[-quarter:]),
            "final_kl": updates[-1]["objective/kl"], "max_kl": max(row["objective/kl"] for row in updates),
            "updates": len(updates)}


def plot_ppo(result: dict, path: Path) -> None:
    """Score and KL per update, with a running mean of the score; the held-out scores in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    updates = result["updates"]
    x = [row["update"] for row in updates]
    scores = [row["objective/scores"] for row in updates]
    window = max(1, len(scores) // 8)
    running = [sum(scores[max(0, i - window + 1): i + 1]) / len(scores[max(0, i - window + 1): i + 1])
               for i in range(len(scores))]
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    axes[0].plot(x, scores, marker=".", alpha=0.5, label="objective/scores (one batch)")
    axes[0].plot(x, running, lw=2, label=f"running mean of {window} updates")
    axes[0].plot(x, [row["objective/rlhf_reward"] for row in updates], alpha=0.5, label="objective/rlhf_reward")
    axes[0].axhline(0, color="gray", lw=0.5)
    axes[0].set_ylabel("mean reward per sampled answer")
    axes[0].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    axes[1].plot(x, [row["objective/kl"] for row in updates], marker=".", color="tab:red")
    axes[1].set_ylabel("KL to the reference (nats per answer)")
    for ax, title in zip(axes, ("reward", "KL")):
        ax.set_xlabel("PPO update")
        ax.set_title(f"PPO {title}")
    summary, held_out = result["summary"], result["held_out"]
    fig.suptitle(f"{result['command']}\nsampled answers: first-quarter score {summary['first_quarter_score']:.2f}, "
                 f"last quarter {summary['last_quarter_score']:.2f}, final KL {summary['final_kl']:.2f}; "
                 f"{held_out['prompts']} held-out prompts (greedy): {held_out['before']['score']:.2f} before, "
                 f"{held_out['after']['score']:.2f} after", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


PPO_SETTINGS = ("learning_rate", "per_device_train_batch_size", "num_ppo_epochs", "total_episodes", "response_length",
                "kl_coef", "missing_eos_penalty", "temperature", "lam", "gamma", "whiten_rewards", "num_mini_batches")


def parse_settings(pairs: list[str]) -> tuple[dict, dict]:
    """`NAME=VALUE` pairs split into notebook constants (`PPO_*`) and PPOConfig fields; values are Python literals."""
    import ast

    constants, fields = {}, {}
    for pair in pairs:
        name, _, text = pair.partition("=")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise SystemExit(f"error: --set {pair!r}: the value must be a Python literal such as 2e-5, 64 or None")
        if name.startswith("PPO_"):
            constants[name] = value
        elif name in PPO_SETTINGS:
            fields[name] = value
        else:
            raise SystemExit(f"error: --set {pair!r}: use a notebook constant PPO_* or one of {', '.join(PPO_SETTINGS)}")
    return constants, fields


def bench_ppo(args: argparse.Namespace) -> int:
    import transformers

    from autograder.fixtures.build import build_fixtures
    from autograder.notebook.execute import environment
    from autograder.review.measure import is_degenerate

    constants, fields = parse_settings(args.set)
    reward_model = Path(args.reward_model).resolve()
    if not (reward_model / "config.json").is_file():
        print(f"error: no reward model in {reward_model}; run `python -m autograder demo` first (it saves one) or "
              "pass --reward-model DIR", file=sys.stderr)
        return 2
    transformers.logging.set_verbosity_error()
    fixtures = build_fixtures()
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="hw2-bench-ppo-") as tmp:
        with redirect_stdout(sys.stderr):
            ns, env = notebook_namespace(Path(args.model) if args.model else fixtures.smollm2, Path(tmp) / "outputs")
        with environment(env):
            ns.update(constants)
            ns["PPO_TOTAL_EPISODES"] = args.updates * ns["PPO_BATCH_SIZE"]
            train_pairs, eval_pairs = ns["held_out_split"](ns["DATASET_ID"], size=ns["EVAL_SIZE"])
            try:
                train_pairs = ns["ppo_training_prompts"](train_pairs)  # as the notebook does
            except ValueError as error:
                print(f"error: {error}", file=sys.stderr)
                return 2
            ns["set_seed"](args.seed)
            tokenizer = ns["set_chat_safe_pad_token"](ns["load_tokenizer"](ns["MODEL_ID"], padding_side="left"))
            value_model, reward, policy, ref_policy = ns["load_ppo_models"](ns["MODEL_ID"], reward_model, tokenizer)
            prompts = [pairs.map(ns["tokenize_prompt"], fn_kwargs={"tokenizer": tokenizer},
                                 remove_columns=pairs.column_names) for pairs in (train_pairs, eval_pairs)]
            config = ns["make_ppo_config"](Path(tmp) / "ppo")
            config.seed = args.seed  # TRL seeds its sampling with it (the notebook keeps PPOConfig's default, 42)
            for field, value in fields.items():
                setattr(config, field, value)
            settings = {field: getattr(config, field) for field in PPO_SETTINGS}
            trainer = ns["build_ppo_trainer"](config, tokenizer, value_model, reward, policy, ref_policy, *prompts)
            eval_prompts = eval_pairs["prompt"][: args.eval_prompts]
            evaluate = lambda model: ns["score_answers"](  # noqa: E731
                model, reward, tokenizer, eval_prompts, ns["PPO_RESPONSE_LENGTH"], ns["PPO_MISSING_EOS_PENALTY"])
            held_out = {"prompts": len(eval_prompts), "before": evaluate(ref_policy)}
            answer = lambda model, prompt: ns["generate_reply"](model, tokenizer, prompt, ns["PPO_RESPONSE_LENGTH"])  # noqa: E731
            samples = [{"prompt": prompt, "before": answer(ref_policy, prompt)} for prompt in eval_prompts[: args.samples]]
            start = time.perf_counter()
            trainer.train()
            seconds = time.perf_counter() - start
            held_out["after"] = evaluate(policy)
            for sample in samples:
                sample["after"] = answer(policy, sample["prompt"])
    keys = ("episode", "objective/scores", "objective/rlhf_reward", "objective/kl", "objective/entropy",
            "policy/approxkl_avg", "policy/clipfrac_avg")
    updates = [{"update": i + 1, **{key: row[key] for key in keys}}
               for i, row in enumerate(r for r in trainer.state.log_history if "objective/scores" in r)]
    result = {"bench": "ppo", "command": "python -m autograder " + " ".join(sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d", time.gmtime()), "machine": machine(), "settings": settings,
              "seed": args.seed, "train_prompts": len(train_pairs), "reward_model": str(reward_model), "seconds": round(seconds, 1),
              "load_avg": [load_start, os.getloadavg()[0]], "summary": ppo_summary(updates), "held_out": held_out,
              "samples": samples, "updates": updates}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    plot_ppo(result, out.with_suffix(".png"))
    summary = result["summary"]
    print(f"PPO, {summary['updates']} updates in {seconds:.0f} s: mean score first quarter "
          f"{summary['first_quarter_score']:.3f}, last quarter {summary['last_quarter_score']:.3f}; KL at the end "
          f"{summary['final_kl']:.2f} (max {summary['max_kl']:.2f}); {held_out['prompts']} held-out prompts, greedy: "
          f"mean score {held_out['before']['score']:.3f} before, {held_out['after']['score']:.3f} after; "
          f"{sum(is_degenerate(sample['after']) for sample in samples)} of {len(samples)} greedy sample answers after "
          f"training repeat themselves (read them under \"samples\"). Wrote {out.with_suffix('.json')} and "
          f"{out.with_suffix('.png')}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="benchmark the DPO loop against TRL, log-prob memory, grading")
    benches = parser.add_subparsers(dest="bench", required=True)

    dpo = benches.add_parser("dpo", help="the notebook's DPO loop against TRL's DPOTrainer")
    dpo.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    dpo.add_argument("--steps", type=int, default=5, help="optimizer steps of each trainer")
    dpo.add_argument("--batch-size", type=int, default=8, help="pairs per optimizer step")
    dpo.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    dpo.add_argument("--max-seq-len", type=int, default=1024)
    dpo.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                     help="CUDA only (auto: bf16 where supported, else fp16); CPUs use fp32 as the notebook does")
    dpo.add_argument("--model", help="model folder (default: the SmolLM2-135M-Instruct fixture)")
    dpo.add_argument("--trl-first", action="store_true", help="run TRL before our loop")
    dpo.add_argument("--trl-config", choices=("default", "fastest", "both"), default="both",
                     help="TRL's defaults (reference model in every step), its fastest setting "
                          "(precompute_ref_log_probs; padding_free on CUDA with flash-attention), or both")
    dpo.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    dpo.add_argument("--json", action="store_true", help="print only the JSON line")
    dpo.add_argument("--save", help="also append the JSON line to this file")
    dpo.set_defaults(func=with_threads(bench_dpo))

    logprob = benches.add_parser("logprob", help="peak memory of get_log_prob against log_softmax + gather")
    logprob.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    logprob.add_argument("--batch-size", type=int, default=16)
    logprob.add_argument("--seq-len", type=int, help="positions per sequence (default: 256 on CPU, 1024 on CUDA)")
    logprob.add_argument("--vocab", type=int, default=49_152)
    logprob.add_argument("--json", action="store_true", help="print only the JSON line")
    logprob.add_argument("--save", help="also append the JSON line to this file")
    logprob.set_defaults(func=bench_logprob)

    grade = benches.add_parser("grade", help="seconds per graded submission and class throughput by --jobs")
    grade.add_argument("--students", type=int, default=4, help="copies of the solution to grade")
    grade.add_argument("--jobs", type=int, nargs="+", default=[1, 2], help="values of `grade --jobs` to compare")
    grade.add_argument("--json", action="store_true", help="print only the JSON line")
    grade.add_argument("--save", help="also append the JSON line to this file")
    grade.set_defaults(func=bench_grade)

    ppo = benches.add_parser("ppo", help="a longer PPO run: reward and KL per update, JSON and plot")
    ppo.add_argument("--updates", type=int, default=24, help="PPO updates (batches of the demo profile's size)")
    ppo.add_argument("--reward-model", default=str(REPO_ROOT / "demo-outputs" / "reward-model"),
                     help="the reward model (default: the one `python -m autograder demo` saved)")
    ppo.add_argument("--model", help="policy folder (default: the SmolLM2-135M-Instruct fixture)")
    ppo.add_argument("--seed", type=int, default=42, help="seed of the run: set_seed and PPOConfig.seed (the notebook: 42)")
    ppo.add_argument("--eval-prompts", type=int, default=32, help="held-out prompts scored before and after")
    ppo.add_argument("--samples", type=int, default=4,
                     help="held-out prompts whose greedy answers before and after training go into the JSON")
    ppo.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                     help="override a notebook constant (PPO_LR=2e-5) or a PPOConfig field (temperature=0.3); repeat")
    ppo.add_argument("--out", default=str(REPO_ROOT / "docs" / "ppo_bench"), help="writes OUT.json and OUT.png")
    ppo.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    ppo.set_defaults(func=with_threads(bench_ppo))

    plot = benches.add_parser("plot", help="plot results saved with --save")
    plot.add_argument("results", help="a file of JSON lines written by --save")
    plot.add_argument("--out", default=str(REPO_ROOT / "docs" / "benchmarks.png"))
    plot.set_defaults(func=bench_plot)


def bench_plot(args: argparse.Namespace) -> int:
    """One figure from saved results: DPO throughput, DPO peak memory and log-prob memory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [json.loads(line) for line in Path(args.results).read_text().splitlines() if line.strip()]
    dpo = [r for r in results if r["bench"] == "dpo" and "trl_tokens_per_s" in r]
    logprob = [r for r in results if r["bench"] == "logprob"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    labels = [f"{r['device']} {r['precision']}\nbatch {r['batch_size']}, {r['steps']} steps"
              + ("\n(TRL first)" if r["order"][0] == "trl" else "") for r in dpo]
    x = range(len(dpo))
    for ax, key, title in ((axes[0], "tokens_per_s", "DPO training throughput (tokens/s)"),
                           (axes[1], "peak_mem_gb", "DPO peak memory (GB)")):
        sides = (("ours", "notebook loop", -0.27), ("trl", "TRL DPOTrainer (defaults)", 0.0),
                 ("trl_fastest", "TRL, precompute_ref_log_probs", 0.27))
        for side, label, offset in sides:
            runs = [(i, r[f"{side}_{key}"]) for i, r in zip(x, dpo) if f"{side}_{key}" in r]
            ax.bar([i + offset for i, _ in runs], [value for _, value in runs], width=0.27, label=label)
        ax.set_xticks(list(x), labels, fontsize=8)
        ax.set_title(title)
        ax.set_ylim(0, 1.35 * max(max(r[f"ours_{key}"], r[f"trl_{key}"]) for r in dpo))
        ax.legend(fontsize=7, loc="upper right")
    for i, r in enumerate(dpo):
        text = f"{r['speedup']:.2f}x" + (f"\n{r['speedup_fastest']:.2f}x" if "speedup_fastest" in r else "")
        axes[0].annotate(text, (i - 0.27, r["ours_tokens_per_s"]), ha="center", va="bottom", fontsize=8)
    names = {"naive": "log_softmax + gather", "notebook": "get_log_prob (student TODO)",
             "fast": "TokenLogProbs (training loop)", "trl": "TRL selective_log_softmax"}
    colors = {"naive": "tab:red", "notebook": "tab:blue", "fast": "tab:purple", "trl": "tab:green"}
    ticks, tick_labels = [], []
    for j, r in enumerate(logprob):
        ticks += [j * 3, j * 3 + 1.4]
        shape = "x".join(str(n) for n in r["shape"])
        tick_labels += [f"forward\n{shape}", f"fwd + bwd\n{shape}"]
        for k, mode in enumerate(("forward", "train")):
            for m, variant in enumerate(LOGPROB_VARIANTS):
                axes[2].bar(j * 3 + k * 1.4 + (m - 1.5) * 0.3, r[f"{variant}_{mode}_extra_gb"], width=0.3,
                            color=colors[variant], label=names[variant] if j == 0 and k == 0 else None)
    axes[2].set_xticks(ticks, tick_labels, fontsize=8)
    axes[2].set_title("log-prob memory on top of the logits (GB)")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")
    return 0


def with_threads(function):
    """Apply `--threads` before running `function`."""
    def run(args: argparse.Namespace) -> int:
        if getattr(args, "threads", None):
            import torch

            torch.set_num_threads(args.threads)
        return function(args)
    return run
