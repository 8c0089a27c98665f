"""The exercise side of grading: run the submission's cells, then call its functions as the judge asks.

Requests (JSON documents, see `wire`) and what they return:

- `init`: execute the assembled cells (instructor setup + the student's answers) -> notes on failed cells;
- `call`: call a notebook function on decoded inputs, optionally with other names of the notebook replaced
  (`isolate`), then optionally back-propagate from one output and collect gradients -> the result as data;
- `new`, `method`, `attrs`, `iterate`, `export`, `get`, `release`: make an input from a spec and keep it,
  call a method of a kept object, read some of its attributes, iterate it, describe it, read a notebook
  constant, forget kept objects (and say how many CPU seconds this process has used).

Stand-ins for functions graded elsewhere are *oracles*: the exercise never holds their code. Calling one sends
the inputs to the judge, which computes the result (and, for tensors that need it, the gradients in the
backward pass). The judge answers an oracle only while the call that declared it is running.
"""
import contextlib
import dataclasses
import enum
import functools
import os
import signal
import time
import traceback
import types
from collections.abc import Mapping

from . import resources, stand_ins, wire

EXPORT_ROWS = 64  # rows of a dataset described in a reply
EXPORT_BATCHES = 16  # batches of a DataLoader read by `iterate`
# What the notebook's setup cells import (module -> names they take from it), imported once by the sandbox's
# zygote before it forks the process of any submission: the slow part of a start, paid once per judge process.
PREIMPORTS = {
    "numpy": (), "torch": (), "torch.nn.functional": (), "torch.utils.data": ("DataLoader",), "tqdm.auto": (),
    "matplotlib.pyplot": (), "datasets": ("Dataset", "load_dataset"), "psutil": (),
    "transformers": ("AutoModelForCausalLM", "AutoModelForSequenceClassification", "AutoTokenizer",
                     "PreTrainedModel", "PreTrainedTokenizerBase"),
    "huggingface_hub": ("HfApi", "ModelCard", "ModelCardData"), "peft": ("LoraConfig", "PeftModel", "get_peft_model"),
    "trl": ("RewardConfig", "RewardTrainer"), "trl.experimental.ppo": ("PPOConfig", "PPOTrainer"),
}


class CellTimeout(BaseException):
    """Raised by the alarm when a top-level cell runs too long."""


class ExerciseError(Exception):
    """A request that cannot be served (unknown handle, bad spec)."""


def error_form(error: BaseException, during: str) -> dict:
    """What the judge learns about an exception of student code: type, message and the notebook line."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename.startswith("<")
              and f.filename not in ("<string>", "<frozen runpy>")]
    where = ""
    if frames:
        frame = frames[-1]
        where = f"line {frame.lineno}" + (f": {frame.line}" if frame.line else f" of {frame.filename}")
    try:
        message = str(error)
    except Exception:  # noqa: BLE001 (an exception whose __str__ raises)
        message = "(its message cannot be printed)"
    return {"type": type(error).__name__, "message": message[:2000], "where": where[:300], "during": during,
            "not_implemented": isinstance(error, NotImplementedError)}


def rebind(function, new_globals: dict, old_globals: dict):
    """`function` re-created so that it looks up global names in `new_globals` (if it used `old_globals`).

    A notebook function under a decorator (`@torch.no_grad()`, `@contextmanager`) is re-created inside and
    wrapped again the same way, so that replaced names reach the code inside the decorator too.
    """
    if not isinstance(function, types.FunctionType):
        return function
    if function.__globals__ is old_globals:
        clone = types.FunctionType(function.__code__, new_globals, function.__name__, function.__defaults__,
                                   function.__closure__)
        clone.__kwdefaults__ = dict(function.__kwdefaults__) if function.__kwdefaults__ else None
        clone.__dict__.update(function.__dict__)
        clone.__qualname__, clone.__doc__ = function.__qualname__, function.__doc__
        return clone
    inner = getattr(function, "__wrapped__", None)
    if not isinstance(inner, types.FunctionType) or inner.__globals__ is not old_globals:
        return function
    rebound = rebind(inner, new_globals, old_globals)
    free = dict(zip(function.__code__.co_freevars, (c.cell_contents for c in function.__closure__ or ())))
    factory = free.get("ctx_factory") or getattr(function, "context_factory", None)
    if factory is not None:  # torch.no_grad(), torch.inference_mode(), torch.enable_grad() as decorators

        @functools.wraps(rebound)
        def under_context(*args, **kwargs):
            with factory():
                return rebound(*args, **kwargs)

        under_context.context_factory = factory
        return under_context
    if function.__module__ == "contextlib" or function.__code__.co_filename.endswith("contextlib.py"):
        return contextlib.contextmanager(rebound)
    return function


def rebound_namespace(namespace: dict, overrides: dict | None = None) -> dict:
    """A copy of `namespace` whose functions use the copy as globals, with `overrides` put in place.

    Every plain function defined in the notebook is re-created on the copy, so a function of the copy that
    calls `get_log_prob` calls `overrides["get_log_prob"]` when given.
    """
    copy = dict(namespace)
    for key, value in namespace.items():
        copy[key] = rebind(value, copy, namespace)
    copy.update(overrides or {})
    return copy


def isolated(namespace: dict, name: str, overrides: dict):
    """The function `name` re-created on a copy of the namespace in which `overrides` replace other names."""
    return rebound_namespace(namespace, overrides).get(name)


class Exerciser:
    """Serves the judge's requests on one submission's namespace.

    `channel(document, tensors) -> (document, tensors)` asks the judge something (oracles) and waits for the
    answer; in the sandbox it writes to and reads from the judge's pipes.
    """

    def __init__(self, namespace: dict, channel):
        self.namespace = namespace
        self.channel = channel
        self.objects: dict[int, object] = {}
        self.known: dict = {}  # weights the judge holds too (see `describe_model`), given by `init`
        self.next_id = 1
        self.provided: dict[str, object] = {}  # names as the instructor's cells defined them

    # ------------------------------------------------------------ data in, data out

    def keep(self, value) -> int:
        handle = self.next_id
        self.next_id += 1
        self.objects[handle] = value
        return handle

    def handle_of(self, value) -> int | None:
        for handle, kept in self.objects.items():
            if kept is value:
                return handle
        return None

    def decode_special(self, tag, form, decoder, depth):
        if tag == "$spec":
            spec = decoder.decode(form["$spec"], depth + 1)
            value = resources.build(spec)
            if form.get("id") is not None:
                self.objects[int(form["id"])] = value
            return True, value
        if tag == "$ref":
            handle = int(form["$ref"])
            if handle not in self.objects:
                raise ExerciseError(f"no kept object {handle}")
            return True, self.objects[handle]
        if tag == "$oracle":
            return True, self.oracle(str(form["$oracle"]))
        if tag == "$stand_in":
            if form["$stand_in"] not in stand_ins.BY_NAME:
                raise ExerciseError(f"no stand-in {form['$stand_in']!r}")
            return True, stand_ins.BY_NAME[form["$stand_in"]]
        if tag == "$provided":
            name = str(form["$provided"])
            return True, self.provided.get(name, self.namespace.get(name))
        return False, None

    def decode(self, form, tensors):
        return wire.decode(form, tensors, self.decode_special)

    def encode_special(self, value, depth, encoder, top_level_ref: bool = True):
        if isinstance(value, (str, int, float, bool, type(None))):
            return None
        handle = self.handle_of(value) if (depth > 0 or top_level_ref) else None
        if handle is not None:
            return {"$ref": handle, "type": type(value).__name__}
        return describe(value, depth, encoder, self.known)

    def encode(self, value):
        return wire.encode(value, self.encode_special)

    # ------------------------------------------------------------ oracles

    def oracle(self, name: str):
        """A stand-in whose result the judge computes; tensors that need gradients get them from the judge."""
        exerciser = self

        def stand_in(*args, **kwargs):
            return exerciser.ask_oracle(name, args, kwargs)

        stand_in.__name__ = stand_in.__qualname__ = name
        return stand_in

    def ask_oracle(self, name: str, args: tuple, kwargs: dict):
        import torch

        encoder = wire.Encoder()
        form = encoder.encode({"args": list(args), "kwargs": dict(kwargs)})
        trainable = [i for i, t in enumerate(encoder.originals)
                     if torch.is_grad_enabled() and t.requires_grad and t.is_floating_point()]
        reply, out = self.channel({"op": "oracle", "name": name, "input": form, "grad": trainable},
                                  encoder.tensors)
        value = self.decode_reply(reply, out)
        differentiable = [t for t in wire.tensors_in(value) if t.requires_grad]
        if reply.get("token") is None or not trainable or not differentiable:
            return value
        for tensor in differentiable:
            tensor.requires_grad_(False)
        linked = OracleFunction.apply(self, int(reply["token"]), len(trainable),
                                      *[encoder.originals[i] for i in trainable], *differentiable)
        return _replace_tensors(value, dict(zip(map(id, differentiable), linked)))

    def decode_reply(self, reply: dict, tensors):
        if "error" in reply:
            raise RuntimeError(f"the grader's stand-in failed: {reply['error']}")
        return self.decode(reply["value"], tensors)

    # ------------------------------------------------------------ requests

    def serve(self, request: dict, tensors: list) -> tuple[dict, list]:
        op = request.get("op")
        handler = getattr(self, f"op_{op}", None)
        if handler is None:
            return {"fail": f"unknown request {op!r}"}, []
        try:
            return handler(request, tensors)
        except (ExerciseError, wire.WireError) as error:
            return {"fail": str(error)}, []

    def reply(self, value, **extra) -> tuple[dict, list]:
        try:
            form, tensors = self.encode(value)
        except Exception as error:  # noqa: BLE001 (a result whose description raised: the student's object)
            return {"error": error_form(error, "describing the result")}, []
        return {"value": form, **extra}, tensors

    def op_init(self, request, tensors):
        if request.get("known_weights"):
            try:
                self.known = resources.known_weights(str(request["known_weights"]))
            except Exception:  # noqa: BLE001 (then every weight travels)
                self.known = {}
        notes = []
        started = time.perf_counter()
        timeout = float(request.get("cell_timeout", 120))
        for cell in request.get("cells", []):
            before = dict(self.namespace)
            try:
                with time_limit(timeout):
                    exec(compile(cell["source"], f"<{cell['name']}>", "exec"), self.namespace)
                if cell.get("provided"):
                    self.provided.update({k: v for k, v in self.namespace.items() if before.get(k) is not v})
            except CellTimeout:
                notes.append(f"{cell['name']} was stopped after {timeout:g} s (an endless loop at the top level?)")
            except BaseException as error:  # noqa: BLE001 (SystemExit and friends included: report, go on)
                form = error_form(error, "running the cell")
                notes.append(f"{cell['name']} raised {form['type']}: {form['message'].strip()[:300]}"
                             + (f" ({form['where']})" if form["where"] else ""))
        return {"notes": notes, "cells_s": time.perf_counter() - started}, []

    def function(self, request) -> tuple[object, dict | None]:
        name = str(request["name"])
        value = self.namespace.get(name)
        if value is None or not callable(value):
            return None, {"missing": name}
        if request.get("isolate"):
            overrides = self.decode(request["isolate"], [])
            value = isolated(self.namespace, name, dict(overrides))
        return value, None

    def op_call(self, request, tensors):
        function, missing = self.function(request)
        if missing:
            return missing, []
        return self.call_and_reply(request, function, tensors, f"calling `{request['name']}`")

    def call_and_reply(self, request, function, tensors, action: str):
        """Call `function` on the request's decoded inputs (with gradients on) and reply with the result."""
        import torch

        inputs = self.decode(request.get("input", {"$dict": []}), tensors)
        args, kwargs = list(inputs.get("args", [])), dict(inputs.get("kwargs", {}))
        try:
            with torch.enable_grad():
                result = function(*args, **kwargs)
        except BaseException as error:  # noqa: BLE001 (everything student code raises is reported)
            return {"error": error_form(error, action)}, []
        return self.after_call(request, result, args, kwargs)

    def after_call(self, request, result, args, kwargs):
        """Back-propagate if asked, describe the result, and keep it (after describing it in full) if asked."""
        grads, extra = {}, {}
        if request.get("backward") is not None:
            try:
                output = follow(result, request["backward"])
                output.reshape(()).backward() if output.numel() == 1 else output.sum().backward()
                grads = self.gradients(request.get("grads", []), args, kwargs)
            except BaseException as error:  # noqa: BLE001 (the result is the student's: report, let the judge say)
                extra["backward_error"] = error_form(error, "back-propagating from the result")
                grads = None
        form, tensors = self.reply({"result": result, "grads": grads}, **extra)
        if request.get("keep") and "value" in form:
            form["ref"] = self.keep(result)
        return form, tensors

    def gradients(self, targets: list, args: list, kwargs: dict) -> dict:
        """`.grad` of the requested inputs: "arg:N"/"kwarg:NAME" tensors, or "ref:H" models (per parameter)."""
        import torch

        out = {}
        for target in targets:
            kind, _, key = str(target).partition(":")
            if kind == "arg":
                value = args[int(key)] if int(key) < len(args) else None
            elif kind == "kwarg":
                value = kwargs.get(key)
            elif kind == "ref":
                value = self.objects.get(int(key))
            else:
                continue
            if isinstance(value, torch.Tensor):
                out[target] = value.grad
            elif isinstance(value, (list, tuple)):
                out[target] = [v.grad if isinstance(v, torch.Tensor) else None for v in value]
            elif isinstance(value, torch.nn.Module):
                out[target] = {name: p.grad for name, p in value.named_parameters()}
        return out

    def op_new(self, request, tensors):
        spec = self.decode(request["spec"], tensors)
        return {"ref": self.keep(resources.build(spec))}, []

    def kept(self, request):
        """The kept object a request names; ExerciseError if there is none."""
        handle = int(request["ref"])
        if handle not in self.objects:
            raise ExerciseError(f"no kept object {handle}")
        return self.objects[handle]

    def op_method(self, request, tensors):
        name = str(request["name"])
        target = self.kept(request)
        try:
            method = getattr(target, name)
        except BaseException as error:  # noqa: BLE001 (a student object's __getattr__ may raise anything)
            return {"error": error_form(error, f"calling .{name}()")}, []
        return self.call_and_reply(request, method, tensors, f"calling .{name}()")

    def op_attrs(self, request, tensors):
        target = self.kept(request)
        values = {}
        for path in request.get("names", []):
            try:
                value = target
                for part in str(path).split("."):
                    value = getattr(value, part)
                values[path] = value
            except BaseException as error:  # noqa: BLE001
                values[path] = {"missing attribute": error_form(error, f"reading .{path}")["message"]}
        return self.reply(values)

    def op_export(self, request, tensors):
        target = self.kept(request)
        encoder = wire.Encoder(lambda v, d, e: self.encode_special(v, d, e, top_level_ref=False))
        return {"value": encoder.encode(target)}, encoder.tensors

    def op_iterate(self, request, tensors):
        target = self.kept(request)
        limit = int(request.get("limit", EXPORT_BATCHES))
        items = []
        try:
            for item in target:
                items.append(item)
                if len(items) >= limit:
                    break
        except BaseException as error:  # noqa: BLE001
            return {"error": error_form(error, "iterating the result")}, []
        return self.reply(items)

    def op_get(self, request, tensors):
        name = str(request["name"])
        if name not in self.namespace:
            return {"missing": name}, []
        return self.reply(self.namespace[name])

    def op_release(self, request, tensors):
        self.objects.clear()
        return {"value": None, "cpu_s": time.process_time()}, []


def follow(value, path: list):
    for key in path:
        value = value[key]
    return value


def _replace_tensors(value, replacement: dict):
    import torch

    if isinstance(value, torch.Tensor):
        return replacement.get(id(value), value)
    if isinstance(value, tuple):
        return tuple(_replace_tensors(v, replacement) for v in value)
    if isinstance(value, list):
        return [_replace_tensors(v, replacement) for v in value]
    if isinstance(value, dict):
        return {k: _replace_tensors(v, replacement) for k, v in value.items()}
    return value


def _make_oracle_function():
    import torch

    class OracleFunction(torch.autograd.Function):
        """Links an oracle's outputs to its inputs: the backward pass asks the judge for the input gradients."""

        @staticmethod
        def forward(ctx, exerciser, token, n_inputs, *tensors):
            ctx.exerciser, ctx.token, ctx.n_inputs = exerciser, token, n_inputs
            ctx.shapes = [t.shape for t in tensors[:n_inputs]]
            outputs = tensors[n_inputs:]
            return tuple(t.clone() for t in outputs)

        @staticmethod
        def backward(ctx, *grad_outputs):
            form, tensors = wire.encode(list(grad_outputs))
            reply, out = ctx.exerciser.channel({"op": "oracle_backward", "token": ctx.token, "grads": form}, tensors)
            if "error" in reply:
                raise RuntimeError(f"the grader's stand-in failed in the backward pass: {reply['error']}")
            got = list(wire.decode(reply["value"], out))
            if len(got) != ctx.n_inputs:
                raise RuntimeError("the grader's stand-in returned the wrong number of gradients")
            return (None, None, None, *got, *[None] * len(grad_outputs))

    return OracleFunction


class _Lazy:
    """`OracleFunction` is built on first use, so that importing this module does not import torch."""

    def __init__(self):
        self.value = None

    def apply(self, *args):
        if self.value is None:
            self.value = _make_oracle_function()
        return self.value.apply(*args)


OracleFunction = _Lazy()


# ---------------------------------------------------------------- describing results

def describe(value, depth: int, encoder, known: dict | None = None) -> dict | None:
    """JSON forms for the objects the judge knows: models, tokenizers, datasets, configs, loaders (`known`:
    weights the judge holds as well, see `describe_model`)."""
    module = type(value).__module__ or ""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return None
    if isinstance(value, torch.nn.Module):
        return {"$model": describe_model(value, depth, encoder, known or {})}
    if hasattr(value, "apply_chat_template") and hasattr(value, "convert_tokens_to_ids"):
        return {"$tokenizer": describe_tokenizer(value)}
    if module.startswith("datasets") and hasattr(value, "column_names") and hasattr(value, "num_rows"):
        rows = [value[i] for i in range(min(len(value), EXPORT_ROWS))]
        return {"$dataset": {"type": type(value).__name__, "columns": _json_safe(list(value.column_names)),
                             "num_rows": int(value.num_rows), "rows": _json_safe(rows)}}
    if dataclasses.is_dataclass(value) and not isinstance(value, type) and not isinstance(value, Mapping):
        fields = {}
        for field in dataclasses.fields(value):
            try:
                item = getattr(value, field.name)
            except Exception:  # noqa: BLE001
                continue
            if isinstance(item, enum.Enum):
                item = item.value
            if isinstance(item, (str, int, float, bool, type(None), list, tuple, dict)) or \
                    isinstance(item, torch.dtype):
                fields[field.name] = item
        return {"$config": {"type": type(value).__name__, "mro": [c.__name__ for c in type(value).__mro__][:30],
                            "fields": _json_safe(fields)}}
    return None


def _json_safe(value, depth: int = 0):
    """Plain JSON of small configuration values (anything else becomes its repr)."""
    import math

    if depth > 6:
        return repr(value)[:200]
    if value is None or isinstance(value, (bool, str)):
        return value if not isinstance(value, str) else str.__str__(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else repr(float(value))
    if isinstance(value, (list, tuple)):
        return [_json_safe(v, depth + 1) for v in list(value)[:1000]]
    if isinstance(value, dict):
        return {str(k): _json_safe(v, depth + 1) for k, v in list(dict.items(value))[:1000]}
    if isinstance(value, enum.Enum):
        return _json_safe(value.value, depth + 1)
    return repr(value)[:200]


def describe_tokenizer(tokenizer) -> dict:
    out = {"type": type(tokenizer).__name__}
    for name in ("pad_token", "pad_token_id", "eos_token", "eos_token_id", "padding_side", "truncation_side",
                 "model_max_length", "name_or_path"):
        try:
            out[name] = _json_safe(getattr(tokenizer, name))
        except Exception:  # noqa: BLE001
            out[name] = None
    try:
        out["len"] = int(len(tokenizer))
    except Exception:  # noqa: BLE001
        out["len"] = None
    return out


def describe_model(model, depth: int, encoder, known: dict) -> dict:
    """Class, config, every weight, which parameters train, and the adapters of a PeftModel.

    A weight equal to the one of the same name in `known` (the grading model's, which the judge holds too) is
    named in `known` instead of sent: most models the checks read back keep the grading model's embeddings.
    """
    import torch

    form = {"type": type(model).__name__, "mro": [c.__name__ for c in type(model).__mro__][:40],
            "training": bool(model.training)}
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        try:
            form["config"] = _json_safe(config.to_dict())
        except Exception:  # noqa: BLE001
            form["config"] = {}
    state, same = {}, []
    try:
        with torch.no_grad():
            for name, tensor in model.state_dict().items():
                if not isinstance(tensor, torch.Tensor):
                    continue
                base = known.get(resources.known_name(name))
                if (base is not None and type(tensor) is torch.Tensor and tensor.device.type == "cpu"
                        and tensor.dtype == base.dtype and tensor.shape == base.shape and torch.equal(tensor, base)):
                    same.append(name)
                else:
                    state[name] = tensor
    except Exception:  # noqa: BLE001
        pass
    form["state"] = encoder.encode(state, depth + 1)
    form["known"] = same
    try:
        parameters = list(model.named_parameters())
    except Exception:  # noqa: BLE001
        parameters = []
    form["trainable"] = [name for name, p in parameters if p.requires_grad]
    form["parameters"] = [name for name, _ in parameters]
    form["dtypes"] = sorted({str(p.dtype).replace("torch.", "") for _, p in parameters})
    storages = {}
    for name, p in parameters:
        storages.setdefault(p.data_ptr(), []).append(name)
    form["storages"] = sorted(storages)
    try:
        form["num_embeddings"] = int(model.get_input_embeddings().num_embeddings)
    except Exception:  # noqa: BLE001
        form["num_embeddings"] = None
    peft = getattr(model, "peft_config", None)
    if isinstance(peft, dict):
        form["peft_config"] = {str(k): _json_safe(v.to_dict() if hasattr(v, "to_dict") else vars(v))
                               for k, v in peft.items()}
    return form


@contextlib.contextmanager
def time_limit(seconds: float):
    def on_alarm(signum, frame):
        raise CellTimeout(f"more than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ---------------------------------------------------------------- the sandboxed process

def preimport() -> None:
    """Import the libraries of PREIMPORTS; one that fails is left to the cell that imports it to report."""
    import importlib

    for name, attributes in PREIMPORTS.items():
        try:
            module = importlib.import_module(name)
            for attribute in attributes:
                getattr(module, attribute)
        except Exception:  # noqa: BLE001
            continue


def serve(read_fd: int, write_fd: int) -> int:
    """Serve the judge on two pipe ends (requests in, replies out) until it closes them; the libraries were
    imported and the grading model loaded before (by the zygote this process was forked from)."""
    requests = os.fdopen(read_fd, "rb", buffering=0)
    replies = os.fdopen(write_fd, "wb", buffering=0)

    def channel(document, tensors):
        wire.write_frame(replies, document, wire.blob_parts(list(tensors)))
        reply, blob = wire.read_frame(requests)
        return reply, wire.unpack_tensors(blob)

    exerciser = Exerciser({"__name__": "hw2_submission"}, channel)
    while True:
        try:
            request, blob = wire.read_frame(requests)
        except EOFError:
            return 0
        document, tensors = exerciser.serve(request, wire.unpack_tensors(blob))
        wire.write_frame(replies, document, wire.blob_parts(tensors))
