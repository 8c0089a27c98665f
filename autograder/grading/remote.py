"""The judge's handle on a submission: call its functions, get data back, never run its code here.

A `Runner` sends requests to an `Exerciser` (`autograder.grading.exercise.runtime`) and decodes the replies
into plain values, tensors and read-only views (`RemoteModel`, `RemoteTokenizer`, `RemoteDataset`,
`RemoteConfig`, `Ref` for objects kept on the other side). Two transports:

- `LocalRunner(namespace)`: the exerciser runs in this process on a namespace the caller already has (the
  tests, and nbgrader's hidden cells, which run in the student's kernel anyway). Requests and replies still
  go through the byte format, so the checks see exactly what they see from the sandbox.
- `autograder.grading.sandbox.SandboxRunner`: the exerciser runs in a bubblewrap sandbox and talks over pipes.

Oracles: a function of the judge handed to student code (a reference stand-in in `isolate`, a judge callable
in the arguments) is served by this side while the call that declared it runs, forward and backward.
"""
import itertools
import types
from dataclasses import dataclass, field

from autograder.grading.exercise import resources, stand_ins, wire
from autograder.grading.exercise.runtime import Exerciser

SPEC_ATTRIBUTE = "_wire_spec"


class RemoteError(Exception):
    """An exception raised by student code on the other side: its type name, message and notebook line."""

    def __init__(self, form: dict):
        form = form if isinstance(form, dict) else {}
        self.type_name = str(form.get("type", "Exception"))[:100]
        self.message = str(form.get("message", ""))[:2000]
        self.where = str(form.get("where", ""))[:300]
        self.during = str(form.get("during", ""))[:200]
        self.not_implemented = bool(form.get("not_implemented", False))
        super().__init__(self.message)


class ExerciseFailure(Exception):
    """The other side could not serve a request (it died, timed out, or answered nonsense)."""

    def __init__(self, message: str, kind: str = "error"):
        super().__init__(message)
        self.kind = kind  # "error" | "timeout" | "crash"


class MissingName(Exception):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


@dataclass(frozen=True)
class Ref:
    """An object kept on the other side (a model a student function built, a trainer...)."""

    handle: int
    type_name: str = "object"


class AttrDict(dict):
    """A dict whose keys also read as attributes (a model's config, a trainer config's fields)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def attr_dict(value):
    if isinstance(value, dict):
        return AttrDict({k: attr_dict(v) for k, v in value.items()})
    if isinstance(value, list):
        return [attr_dict(v) for v in value]
    return value


class RemoteModel:
    """What a student function's model is: class, config, weights, trainable parameters, adapters."""

    def __init__(self, form: dict, decoder, depth: int, ref: Ref | None = None, known: dict | None = None,
                 copies: dict | None = None):
        self.type_name = str(form.get("type", "?"))
        self.mro = [str(n) for n in form.get("mro", [])]
        self.training = bool(form.get("training", False))
        self.config = attr_dict(form.get("config") or {})
        state = decoder.decode(form.get("state", {"$dict": []}), depth + 1)
        self.state = {str(k): v for k, v in state.items()} if isinstance(state, dict) else {}
        copies = {} if copies is None else copies  # one copy per weight of the grading model (see Runner.known)
        for name in form.get("known") or []:  # weights equal to the grading model's: the judge has them
            base = (known or {}).get(resources.known_name(name)) if isinstance(name, str) else None
            if base is not None and name not in self.state:
                key = (base.data_ptr(), tuple(base.shape))
                if key not in copies:
                    copies[key] = base.clone()
                self.state[name] = copies[key]
        self.trainable = [str(n) for n in form.get("trainable", [])]
        self.parameters = [str(n) for n in form.get("parameters", [])]
        self.dtypes = [str(d) for d in form.get("dtypes", [])]
        self.storages = list(form.get("storages", []))
        self.num_embeddings = form.get("num_embeddings")
        self.peft_config = attr_dict(form.get("peft_config")) if form.get("peft_config") else None
        self.ref = ref

    def is_a(self, class_name: str) -> bool:
        return class_name in self.mro

    def state_dict(self) -> dict:
        return dict(self.state)

    def materialize(self, require_class: str | None = None):
        """A real transformers model of the same class with these weights, to run in the judge.

        Only classes of `transformers` that are `PreTrainedModel`s are rebuilt, from the config as data.
        """
        import torch
        import transformers

        cls = getattr(transformers, self.type_name, None)
        if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
            raise ValueError(f"{self.type_name} is not a transformers model class")
        if require_class and not self.is_a(require_class):
            raise ValueError(f"{self.type_name} is not a {require_class}")
        config = dict(self.config)
        model_type = config.pop("model_type", None)
        for key in ("transformers_version", "architectures", "_name_or_path", "dtype", "torch_dtype"):
            config.pop(key, None)
        config_object = transformers.AutoConfig.for_model(model_type, **config)
        with torch.device("meta"):  # size the model the config describes before allocating it
            sized = cls._from_config(config_object, dtype=torch.float32)
        needed = sum(p.numel() for p in sized.parameters())
        given = sum(t.numel() for t in self.state.values())
        if needed > 2 * given + 1_000_000:
            raise ValueError(f"the config describes {needed} weights but only {given} came with the model")
        model = cls._from_config(config_object, dtype=torch.float32)
        missing, unexpected = model.load_state_dict({k: v.float() if v.is_floating_point() else v
                                                     for k, v in self.state.items()}, strict=False)
        tied = {"lm_head.weight"} if getattr(config_object, "tie_word_embeddings", False) else set()
        if unexpected or set(missing) - tied:
            raise ValueError(f"the weights do not fit the class: missing {sorted(set(missing) - tied)[:3]}, "
                             f"unexpected {unexpected[:3]}")
        return model.eval().requires_grad_(False)

    def __repr__(self) -> str:
        return f"<{self.type_name} (from the submission)>"


class RemoteTokenizer(AttrDict):
    """Settings of a tokenizer a student function returned (pad token, padding side, length...)."""

    @property
    def type_name(self) -> str:
        return self.get("type", "?")


@dataclass
class RemoteDataset:
    type_name: str
    columns: list
    num_rows: int
    rows: list

    @property
    def column_names(self) -> list:
        return self.columns

    def __len__(self) -> int:
        return self.num_rows

    def __iter__(self):
        return iter(self.rows)


class RemoteConfig(AttrDict):
    """The fields of a dataclass config (TrainingArguments, PPOConfig...) a student function returned."""

    type_name = "config"
    mro: list = []

    def is_a(self, class_name: str) -> bool:
        return class_name in self.mro


@dataclass
class Reply:
    value: object = None
    grads: dict | None = field(default_factory=dict)  # None: back-propagating failed (see backward_error)
    ref: Ref | None = None
    backward_error: RemoteError | None = None


class Provided:
    """Stands for the instructor's own definition of a notebook helper (in `isolate`), even if the student
    redefined the name: the exercise takes it from what the instructor's cells defined."""

    def __init__(self, name: str):
        self.name = name


class Runner:
    """Requests to an exerciser. Subclasses provide `exchange(document, tensors) -> (document, tensors)`,
    which sends one request and returns its reply, calling `self.serve_oracle` for oracle requests."""

    def __init__(self):
        self.oracles: dict[str, object] = {}
        self.tapes: dict[int, tuple] = {}
        self.counter = itertools.count(1)
        self.exercise_cpu_s = None  # CPU seconds the exercise's process had used at the last release, as it says
        # the grading model's weights, which models may name instead of sending them, and the one copy of each
        # that the models of this runner share (so that naming them costs no memory, however often)
        self.known: dict = {}
        self.known_copies: dict = {}
        self.shared_answers: dict = {}  # answers of student code that cases share (see `framework.shared_answer`)

    # ------------------------------------------------------------ encoding

    def encode_special(self, value, depth, encoder):
        if isinstance(value, Ref):
            return {"$ref": value.handle}
        if isinstance(value, Provided):
            return {"$provided": value.name}
        spec = getattr(value, SPEC_ATTRIBUTE, None) if not isinstance(value, type) else None
        if spec is not None:
            return {"$spec": wire.encode(spec)[0]}
        module = type(value).__module__ or ""
        if module.startswith("datasets") and hasattr(value, "to_list") and hasattr(value, "column_names"):
            return {"$spec": {"$dict": [["kind", "dataset"], ["rows", encoder.encode(value.to_list(), depth + 1)]],
                              "cls": "dict", "isdict": True}}
        if hasattr(value, "apply_chat_template") and hasattr(value, "name_or_path"):
            spec = {"kind": "tokenizer", "path": str(value.name_or_path), "pad": None, "side": value.padding_side}
            return {"$spec": wire.encode(spec)[0]}
        for name, stand_in in stand_ins.BY_NAME.items():
            if value is stand_in:
                return {"$stand_in": name}
        if isinstance(value, (types.FunctionType, types.BuiltinFunctionType, types.MethodType)) or (
                callable(value) and hasattr(value, "oracle_name")):
            name = getattr(value, "oracle_name", None) or f"{getattr(value, '__name__', 'judge')}#{next(self.counter)}"
            self.oracles[name] = value
            return {"$oracle": name}
        return None

    def encode(self, value):
        encoder = wire.Encoder(self.encode_special)
        return encoder.encode(value), encoder.tensors

    def decode_special(self, tag, form, decoder, depth):
        if tag == "$ref":
            return True, Ref(int(form["$ref"]), str(form.get("type", "object")))
        if tag == "$model":
            return True, RemoteModel(form["$model"] if isinstance(form["$model"], dict) else {}, decoder, depth,
                                     known=self.known, copies=self.known_copies)
        if tag == "$tokenizer":
            return True, RemoteTokenizer(form["$tokenizer"] if isinstance(form["$tokenizer"], dict) else {})
        if tag == "$dataset":
            data = form["$dataset"] if isinstance(form["$dataset"], dict) else {}
            rows = data.get("rows") if isinstance(data.get("rows"), list) else []
            return True, RemoteDataset(str(data.get("type", "?")), list(data.get("columns") or []),
                                       int(data.get("num_rows") or 0), rows)
        if tag == "$config":
            data = form["$config"] if isinstance(form["$config"], dict) else {}
            config = RemoteConfig(attr_dict(data.get("fields") or {}))
            config.type_name = str(data.get("type", "?"))
            config.mro = [str(n) for n in data.get("mro", [])]
            return True, config
        return False, None

    def decode(self, form, tensors):
        return wire.decode(form, tensors, self.decode_special)

    # ------------------------------------------------------------ oracles

    def serve_oracle(self, request: dict, tensors: list) -> tuple[dict, list]:
        """Compute a stand-in's result (or its input gradients) for the other side."""
        import torch

        try:
            if request.get("op") == "oracle_backward":
                inputs, outputs = self.tapes.pop(int(request["token"]))
                grads = wire.decode(request.get("grads"), tensors)
                grads = [g if isinstance(g, torch.Tensor) else torch.zeros_like(o) for g, o in zip(grads, outputs)]
                got = torch.autograd.grad(outputs, inputs, grads, allow_unused=True)
                form, out = wire.encode(list(got))
                return {"value": form}, out
            function = self.oracles.get(str(request.get("name")))
            if function is None:
                return {"error": f"no stand-in {request.get('name')!r} for this call"}, []
            data = wire.decode(request.get("input"), tensors)
            inputs = [tensors[int(i)].requires_grad_(True) for i in request.get("grad", [])]
            with torch.enable_grad():
                value = function(*data.get("args", []), **dict(data.get("kwargs", {})))
            outputs = [t for t in wire.tensors_in(value) if t.requires_grad]
            reply = {}
            if inputs and outputs:
                token = next(self.counter)
                self.tapes[token] = (inputs, outputs)
                reply["token"] = token
            form, out = wire.encode(value)
            reply["value"] = form
            return reply, out
        except Exception as error:  # noqa: BLE001 (bad data from the other side: refuse, do not crash)
            return {"error": f"{type(error).__name__}: {str(error)[:200]}"}, []

    # ------------------------------------------------------------ requests

    def request(self, document: dict, payload=None) -> dict:
        form, tensors = self.encode(payload) if payload is not None else (None, [])
        if form is not None:
            document = {**document, "input": form}
        reply, out = self.exchange(document, tensors)
        if "fail" in reply:
            raise ExerciseFailure(f"the exercise could not serve {document.get('op')}: {str(reply['fail'])[:300]}")
        return reply, out

    def unpack(self, reply: dict, out: list, name: str) -> Reply:
        if "missing" in reply:
            raise MissingName(str(reply["missing"]))
        if "error" in reply:
            raise RemoteError(reply["error"])
        try:
            value = self.decode(reply.get("value"), out)
        except wire.WireError as error:
            raise ExerciseFailure(f"the reply to `{name}` cannot be read: {error}") from None
        ref = Ref(int(reply["ref"]), "object") if isinstance(reply.get("ref"), int) else None
        backward_error = RemoteError(reply["backward_error"]) if "backward_error" in reply else None
        if isinstance(value, dict) and set(value) == {"result", "grads"}:
            grads = dict(value["grads"]) if isinstance(value["grads"], dict) else None
            return Reply(value["result"], grads, ref, backward_error)
        return Reply(value, {}, ref, backward_error)

    def call(self, name: str, args=(), kwargs=None, isolate: dict | None = None, keep: bool = False,
             backward: list | None = None, grads: tuple = ()) -> Reply:
        """Call the notebook function `name`; `isolate` replaces other names of the notebook meanwhile.

        `backward` is the path to the output to back-propagate from (e.g. [0] for the first element of a
        tuple); `grads` names the inputs whose gradients come back ("arg:N", "kwarg:NAME", "ref:H").
        """
        document = {"op": "call", "name": name, "keep": keep, "backward": backward, "grads": list(grads)}
        if isolate:
            document["isolate"] = self.encode(dict(isolate))[0]
        reply, out = self.request(document, {"args": list(args), "kwargs": dict(kwargs or {})})
        return self.unpack(reply, out, name)

    def new(self, spec: dict) -> Ref:
        """Build an input from `spec` on the other side and keep it (see `resources.build`)."""
        reply, _ = self.request({"op": "new", "spec": wire.encode(spec)[0]})
        return Ref(int(reply["ref"]), str(spec.get("kind", "object")))

    def method(self, ref: Ref, name: str, args=(), kwargs=None, keep=False, backward=None, grads=()) -> Reply:
        document = {"op": "method", "ref": ref.handle, "name": name, "keep": keep, "backward": backward,
                    "grads": list(grads)}
        reply, out = self.request(document, {"args": list(args), "kwargs": dict(kwargs or {})})
        return self.unpack(reply, out, name)

    def attrs(self, ref: Ref, names: list[str]) -> dict:
        reply, out = self.request({"op": "attrs", "ref": ref.handle, "names": list(names)})
        return self.unpack(reply, out, "attributes").value

    def export(self, ref: Ref):
        reply, out = self.request({"op": "export", "ref": ref.handle})
        value = self.unpack(reply, out, "export").value
        if isinstance(value, RemoteModel):
            value.ref = ref
        return value

    def iterate(self, ref: Ref, limit: int = 16) -> list:
        reply, out = self.request({"op": "iterate", "ref": ref.handle, "limit": limit})
        return self.unpack(reply, out, "iteration").value

    def get(self, name: str):
        reply, out = self.request({"op": "get", "name": name})
        return self.unpack(reply, out, name).value

    def release(self) -> None:
        """Forget the objects kept on the other side and the stand-ins declared since the last release (the
        end of each case): a stand-in stashed by student code answers nothing in a later case."""
        self.oracles.clear()
        self.tapes.clear()
        reply, _ = self.request({"op": "release"})
        self.exercise_cpu_s = reply.get("cpu_s")

    def exchange(self, document: dict, tensors: list) -> tuple[dict, list]:
        raise NotImplementedError


class LocalRunner(Runner):
    """An exerciser in this process, on `namespace`, behind the same byte format as the sandbox."""

    def __init__(self, namespace: dict):
        super().__init__()
        self.exerciser = Exerciser(namespace, self._ask_judge)

    def _ask_judge(self, document, tensors):
        blob = wire.pack_tensors(list(tensors))
        document = _round_trip(document)
        reply, out = self.serve_oracle(document, wire.unpack_tensors(blob))
        return _round_trip(reply), wire.unpack_tensors(wire.pack_tensors(out))

    def exchange(self, document, tensors):
        reply, out = self.exerciser.serve(_round_trip(document), wire.unpack_tensors(wire.pack_tensors(tensors)))
        return _round_trip(reply), wire.unpack_tensors(wire.pack_tensors(out))


def _round_trip(document: dict) -> dict:
    import json

    return json.loads(json.dumps(document, allow_nan=False))


def tag(value, spec: dict):
    """Mark a judge-side object (a model, a tokenizer) as built from `spec`: it travels as the spec."""
    setattr(value, SPEC_ATTRIBUTE, dict(spec))
    return value
