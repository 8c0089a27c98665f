"""Where the checkpoints come from and how they load: sources, the base model, held-out pairs, model cards.

A load error becomes one line of the report (`explain_load_error`), never a traceback.
"""
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from autograder.review.findings import FAIL, KINDS, PASS, CheckpointReview

DEFAULT_MODEL_ID = "HuggingFaceTB/SmolLM-135M-Instruct"
DEFAULT_DATASET_ID = "HumanLLMs/Human-Like-DPO-Dataset"
# The prompts every policy answers next to the base model; casual questions like those of the dataset.
REVIEW_PROMPTS = (
    "What's your morning routine like?",
    "Do you have a favourite movie?",
    "How do you feel about rainy days?",
    "What's the best way to spend a lazy Sunday?",
    "Are you more of a cat person or a dog person?",
    "Can you recommend a good book for the summer?",
    "What did you have for breakfast today?",
    "What's your favourite season and why?",
)
HELD_OUT_SIZE, SPLIT_SEED = 200, 42  # the notebook's held-out cut of a dataset without a test split
PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected")
MAX_HELD_OUT_PROMPTS = 16  # held-out prompts the policies also answer (for the KL drift and the PPO reward)
# Load errors that mean the source itself is unavailable (see explain_load_error).
SOURCE_PROBLEMS = ("no such folder", "repository not found", "gated repository", "revision not found",
                   "cannot be reached")


# Seconds to wait for the Hub: one probe before the review, then each metadata request and download read.
HUB_PROBE_TIMEOUT, HUB_ETAG_TIMEOUT, HUB_DOWNLOAD_TIMEOUT = 5.0, 5.0, 20.0
UNREACHABLE_ADVICE = "retry later, or check the network and the token (--token or HF_TOKEN)"


class LoadFailure(Exception):
    """A checkpoint cannot be loaded; the message is the one line the report shows. `unreachable`: because the
    Hub could not be reached (the reviewer's problem, not the student's)."""

    def __init__(self, message: str, unreachable: bool = False):
        super().__init__(message)
        self.unreachable = unreachable


def resolve_sources(target: str | Path | None, dpo=None, ppo=None, reward_model=None) -> dict[str, str | None]:
    """Where each checkpoint comes from: the explicit option, else `<dir>/<kind>` or the Hub `<prefix>-<kind>`."""
    explicit = {"dpo": dpo, "ppo": ppo, "reward-model": reward_model}
    sources = {}
    for kind in KINDS:
        if explicit[kind] is not None:
            sources[kind] = str(explicit[kind])
        elif target is None:
            sources[kind] = None
        elif Path(target).expanduser().is_dir():
            sources[kind] = str(Path(target).expanduser() / kind)
        else:
            sources[kind] = f"{str(target).rstrip('/')}-{kind}"
    return sources


def hub_offline() -> bool:
    """Whether huggingface_hub is in offline mode (HF_HUB_OFFLINE=1)."""
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def probe_hub(token: str | None = None, timeout: float = HUB_PROBE_TIMEOUT) -> str | None:
    """None when the Hub answers one request within `timeout` seconds, else why not (no retries)."""
    import httpx
    from huggingface_hub import constants

    try:
        httpx.head(constants.ENDPOINT, timeout=timeout, follow_redirects=False,
                   headers={"authorization": f"Bearer {token}"} if token else None)
    except Exception as error:  # noqa: BLE001 (any failure to get an answer means unreachable)
        first = str(error).strip().splitlines()[0][:160] if str(error).strip() else ""
        why = f"{type(error).__name__}: {first}" if first else type(error).__name__
        return f"could not reach the Hub at {constants.ENDPOINT} ({why})"
    return None


@contextlib.contextmanager
def hub_settings(offline: bool):
    """The Hub as the review uses it: offline mode when `offline` (no request at all, the local cache only);
    otherwise short timeouts and no long retry when a file is not in the cache. Restored afterwards."""
    import datasets.config
    from huggingface_hub import constants, file_download

    saved = [(module, name, getattr(module, name)) for module, name in (
        (constants, "HF_HUB_OFFLINE"), (constants, "HF_HUB_ETAG_TIMEOUT"), (constants, "HF_HUB_DOWNLOAD_TIMEOUT"),
        (file_download, "_ETAG_RETRY_TIMEOUT"), (datasets.config, "HF_HUB_OFFLINE"))
        if hasattr(module, name)]
    constants.HF_HUB_ETAG_TIMEOUT = min(constants.HF_HUB_ETAG_TIMEOUT, HUB_ETAG_TIMEOUT)
    constants.HF_HUB_DOWNLOAD_TIMEOUT = min(constants.HF_HUB_DOWNLOAD_TIMEOUT, HUB_DOWNLOAD_TIMEOUT)
    file_download._ETAG_RETRY_TIMEOUT = HUB_ETAG_TIMEOUT
    if offline:
        constants.HF_HUB_OFFLINE = True
        datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


def card_base_model(folder: Path) -> str | None:
    """`base_model` in the YAML metadata of a checkpoint folder's model card (the first, if it lists several)."""
    from huggingface_hub import ModelCard

    path = folder / "README.md"
    if not path.is_file():
        return None
    try:
        named = ModelCard.load(path).data.to_dict().get("base_model")
    except Exception:  # noqa: BLE001 (a card that does not parse names nothing; its check reports it)
        return None
    named = named[0] if isinstance(named, list) and named else named
    return str(named).rstrip("/") if isinstance(named, str) and named.strip() else None


def config_base_model(folder: Path) -> str | None:
    """The model a checkpoint folder was fine-tuned from, as its config.json records it (`_name_or_path`)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    named = config.get("_name_or_path") if isinstance(config, dict) else None
    return str(named).rstrip("/") if isinstance(named, str) and named.strip() else None


def base_from_checkpoints(sources: dict[str, str | None], token: str | None = None,
                          offline: bool = False) -> tuple[str | None, str | None]:
    """(base model, where it was read) from the checkpoints: `base_model` of a model card, else a config's
    `_name_or_path`. A local path that does not exist here is skipped; the Hub is asked only when not `offline`."""
    from huggingface_hub import ModelCard

    def usable(name: str | None) -> bool:
        return bool(name) and (not looks_local(name) or Path(name).expanduser().is_dir())

    for kind in KINDS:
        source = sources.get(kind)
        if not source:
            continue
        if looks_local(source):
            named = card_base_model(Path(source).expanduser())
        elif offline:
            continue
        else:
            try:
                named = ModelCard.load(source, token=token).data.to_dict().get("base_model")
                named = named[0] if isinstance(named, list) and named else named
                named = named if isinstance(named, str) else None
            except Exception:  # noqa: BLE001
                named = None
        if usable(named):
            return named, f"the {kind} model card"
    for kind in KINDS:
        source = sources.get(kind)
        if source and looks_local(source):
            named = config_base_model(Path(source).expanduser())
            if usable(named) and normalise(named) != normalise(source):
                return named, f"the {kind} config"
    return None, None


def torch_cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def normalise(source: str | Path) -> str:
    """A local path made absolute (so that a card's base_model can be compared with it); a Hub id as it is."""
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() else str(source).rstrip("/")


def looks_local(source: str) -> bool:
    """Whether `source` names a local path rather than a Hub repository id."""
    return Path(source).expanduser().exists() or source.startswith((".", "/", "~")) or source.count("/") > 1


def error_chain(error: BaseException) -> Iterator[BaseException]:
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def explain_load_error(error: BaseException, source: str) -> tuple[str, bool]:
    """One line saying why `source` did not load, and whether the Hub turned out to be unreachable."""
    from huggingface_hub import errors as hub_errors

    chain = list(error_chain(error))
    text = " ".join(str(e) for e in chain).lower()
    kinds = {type(e).__name__ for e in chain}

    def has(*names: str) -> bool:
        return any(isinstance(e, getattr(hub_errors, name)) for e in chain for name in names)

    if looks_local(source) and not Path(source).expanduser().exists():
        return f"no such folder {source!r}", False
    if "SafetensorError" in kinds or "deserializ" in text or "incomplete metadata" in text \
            or "pytorchstreamreader" in text or "unpickl" in text or "invalid load key" in text:
        reason = str(chain[-1]).strip().splitlines()[0][:160]
        return f"weights file is corrupted or truncated ({reason})", False
    if has("GatedRepoError") or "gated repo" in text:
        return f"cannot load {source!r}: gated repository (accept its terms and set HF_TOKEN)", False
    if has("RepositoryNotFoundError") or "is not a valid model identifier" in text \
            or "not a valid repository name" in text:
        return f"cannot load {source!r}: repository not found (or private: give --token or set HF_TOKEN)", False
    if has("RevisionNotFoundError"):
        return f"cannot load {source!r}: revision not found", False
    unreachable = has("LocalEntryNotFoundError", "OfflineModeIsEnabled") or "couldn't connect" in text \
        or any(name.endswith(("ConnectError", "ConnectionError", "Timeout", "TimeoutError")) for name in kinds)
    if unreachable:
        return (f"cannot load {source!r}: not in the local cache and the Hub cannot be reached (offline): "
                f"{UNREACHABLE_ADVICE}, or review a local folder"), True
    if has("EntryNotFoundError", "RemoteEntryNotFoundError") or "does not appear to have a file named" in text:
        if looks_local(source):
            return f"{source!r} is not a model folder (config.json or the weights are missing)", False
        return f"cannot load {source!r}: the repository has no model files (config.json or weights missing)", False
    if isinstance(error, (ValueError, KeyError)) and ("unrecognized" in text or "model_type" in text):
        return f"cannot load {source!r}: not a transformers checkpoint of a known architecture ({error})", False
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"cannot load {source!r}: {type(error).__name__}: {first[:200]}", False



@contextlib.contextmanager
def library_output(progress: bool):
    """Library warnings off for the review; transformers' and datasets' progress bars only with `progress`."""
    import datasets
    import transformers

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    if not progress:
        transformers.logging.disable_progress_bar()
        datasets.disable_progress_bars()
    try:
        import huggingface_hub.utils.logging as hub_logging

        hub_logger = hub_logging.get_logger("huggingface_hub.repocard")
        hub_level = hub_logger.level
        hub_logger.setLevel("ERROR")
    except (ImportError, AttributeError):
        hub_logger = None
    try:
        yield
    finally:
        transformers.logging.set_verbosity(verbosity)
        if not progress:
            transformers.logging.enable_progress_bar()
            datasets.enable_progress_bars()
        if hub_logger is not None:
            hub_logger.setLevel(hub_level)


class Loader:
    """Loads the base model, the held-out pairs, each checkpoint and its model card, for the review."""

    def __init__(self, base: str, dataset: str, pairs: int, prompts: int, max_new_tokens: int, expect: str,
                 progress: bool, token: str | None = None, offline: bool | None = None):
        self.base_id, self.dataset_id, self.token = base, dataset, token
        self.n_pairs, self.max_new_tokens, self.progress = pairs, max_new_tokens, progress
        self.expect = expect
        self.prompts = list(REVIEW_PROMPTS[:prompts])
        # Offline: every Hub id comes from the local cache, and nothing asks the Hub.
        self.hub_unreachable = hub_offline() if offline is None else offline
        self.device = "cuda" if torch_cuda_available() else "cpu"  # models run in float32 on one device
        self.base_model = self.base_tokenizer = self.base_error = None
        self.pairs: list[dict[str, str]] = []
        self.pairs_error: str | None = None

    # ---- loading

    def hub_kwargs(self, source: str) -> dict:
        if looks_local(source):
            return {}
        kwargs = {"token": self.token} if self.token else {}
        return {**kwargs, "local_files_only": True} if self.hub_unreachable else kwargs

    def guarded(self, source: str, load):
        try:
            return load()
        except Exception as error:  # noqa: BLE001 (every failure becomes one line of the report)
            message, unreachable = explain_load_error(error, source)
            self.hub_unreachable |= unreachable
            raise LoadFailure(message, unreachable) from error

    def load_base(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            self.base_tokenizer = self.guarded(self.base_id, lambda: AutoTokenizer.from_pretrained(
                self.base_id, **self.hub_kwargs(self.base_id)))
            self.base_model = self.guarded(self.base_id, lambda: AutoModelForCausalLM.from_pretrained(
                self.base_id, dtype=torch.float32, **self.hub_kwargs(self.base_id))).to(self.device).eval()
        except LoadFailure as failure:
            self.base_model = self.base_tokenizer = None
            if failure.unreachable:
                self.base_error = (f"base model {self.base_id!r} is not in the local cache and the Hub is not used "
                                   "(offline or unreachable): give --base a local folder of it, or retry online")
            else:
                self.base_error = f"base model: {failure}"

    def load_pairs(self) -> None:
        from datasets import load_dataset

        try:
            data = load_dataset(self.dataset_id, **({"token": self.token} if self.token else {}))
            if "test" in data:
                held_out = data["test"]
            else:
                held_out = data["train"].train_test_split(test_size=HELD_OUT_SIZE, seed=SPLIT_SEED)["test"]
            missing = [column for column in PREFERENCE_COLUMNS if column not in held_out.column_names]
            if missing:
                raise ValueError(f"the held-out split lacks the columns {missing}")
            held_out = held_out.select(range(min(self.n_pairs, len(held_out))))
            self.pairs = [{column: row[column] for column in PREFERENCE_COLUMNS} for row in held_out]
        except Exception as error:  # noqa: BLE001
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            self.pairs_error = (f"held-out pairs from {self.dataset_id!r} unavailable: {type(error).__name__}: "
                                f"{first[:200]}")
            if self.hub_unreachable and not looks_local(self.dataset_id):
                self.pairs_error += " (offline: give --dataset a local folder)"

    def load_card(self, source: str):
        """(card, problem): the checkpoint's model card, or why there is none."""
        from huggingface_hub import ModelCard

        if looks_local(source):
            path = Path(source).expanduser() / "README.md"
            if not path.is_file():
                return None, "no model card (README.md) in the folder"
            target = path
        elif self.hub_unreachable:
            return None, "the Hub cannot be reached, so the model card was not read"
        else:
            target = source
        try:
            return ModelCard.load(target, token=None if looks_local(source) else self.token), None
        except Exception as error:  # noqa: BLE001
            names = {type(e).__name__ for e in error_chain(error)}
            if names & {"EntryNotFoundError", "RemoteEntryNotFoundError"}:
                return None, "no model card (README.md) in the repository"
            if names & {"LocalEntryNotFoundError", "ConnectError", "ConnectionError"}:
                return None, "the Hub cannot be reached, so the model card was not read"
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            return None, f"the model card does not parse: {first[:200]}"

    # ---- checks shared by every checkpoint

    def load_checkpoint(self, review: CheckpointReview, classifier: bool):
        """Config, architecture and weights; returns the model, or None when the review of it must stop here."""
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

        source = review.source
        config = self.guarded(source, lambda: AutoConfig.from_pretrained(source, **self.hub_kwargs(source)))
        architectures = list(getattr(config, "architectures", None) or [])
        name = ", ".join(architectures) or f"model_type {config.model_type!r}"
        if classifier:
            right = any(a.endswith("ForSequenceClassification") for a in architectures)
            if not right:
                review.add("architecture", FAIL, f"expected a sequence classifier (…ForSequenceClassification), "
                                                 f"the checkpoint is {name}", architectures=architectures)
                return None
            if config.num_labels != 1:
                review.add("architecture", FAIL, f"{name} with {config.num_labels} labels: a reward model outputs "
                                                 "one score (num_labels=1)", num_labels=config.num_labels)
                return None
            review.add("architecture", PASS, f"{name}, one label (a scalar reward)", architectures=architectures)
        else:
            if not any(a.endswith("ForCausalLM") for a in architectures):
                review.add("architecture", FAIL, f"expected a causal language model (…ForCausalLM), the checkpoint "
                                                 f"is {name}", architectures=architectures)
                return None
            review.add("architecture", PASS, name, architectures=architectures)

        auto = AutoModelForSequenceClassification if classifier else AutoModelForCausalLM
        model, info = self.guarded(source, lambda: auto.from_pretrained(
            source, dtype=torch.float32, output_loading_info=True, **self.hub_kwargs(source)))
        model.to(self.device).eval()
        missing = list(info.get("missing_keys") or [])
        stored = str(getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "float32")
        stored = stored.replace("torch.", "")
        size = sum(p.numel() for p in model.parameters())
        if missing:
            review.add("loads", FAIL, f"{len(missing)} weights are missing from the checkpoint and were initialised "
                                      f"at random ({', '.join(missing[:3])}{', …' if len(missing) > 3 else ''})",
                       missing_keys=missing[:20])
            return None
        review.add("loads", PASS, f"{type(model).__name__}, {size / 1e6:.1f}M parameters, saved in {stored}",
                   parameters=size, dtype=stored)
        model.stored_dtype = getattr(torch, stored, torch.float32)
        return model
