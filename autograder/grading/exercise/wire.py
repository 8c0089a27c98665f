"""The data format between the judge and the sandboxed exercise: JSON for structure, safetensors for tensors.

Nothing is ever pickled. A message is a JSON document in which tensors are replaced by `{"$t": index}` and
stored in one safetensors blob; other non-JSON values have small tagged forms (`$tuple`, `$dict`, `$f` for
non-finite floats, `$dtype`, `$path`, ...). Decoding builds only plain Python values, tensors and numpy arrays,
so a hostile sender can lie about the data but cannot make the receiver run anything.

Frame: 8-byte big-endian length of the JSON text, the JSON text, 8-byte length of the blob, the blob.
"""
import json
import math
import struct
from collections.abc import Mapping
from pathlib import PurePath

MAX_MESSAGE_BYTES = 1 << 28  # tensors of one message: more is refused (a hostile sender cannot exhaust memory)
MAX_JSON_BYTES = 1 << 25  # the JSON part of one message (parsing JSON takes many times its size in memory)
MAX_DEPTH = 40
MAX_ITEMS = 200_000


class WireError(Exception):
    """A message that cannot be encoded, framed or decoded."""


def write_frame(stream, document: dict, blob: bytes | list = b"") -> None:
    """Write one frame; `blob` is the tensor blob, or the parts of it that `blob_parts` gives (written one after
    the other, never joined)."""
    text = json.dumps(document, ensure_ascii=True, allow_nan=False).encode()
    parts = [memoryview(part).cast("B") for part in (blob if isinstance(blob, list) else [blob])]
    _write_all(stream, struct.pack(">Q", len(text)) + text + struct.pack(">Q", sum(len(part) for part in parts)))
    for part in parts:
        _write_all(stream, part)
    stream.flush()


def _write_all(stream, data) -> None:
    view = memoryview(data)
    while view:
        view = view[stream.write(view):]


def _read_exact(stream, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = stream.read(left)
        if not chunk:
            raise EOFError("the other side closed the channel")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(stream, limit: int = MAX_MESSAGE_BYTES) -> tuple[dict, bytes]:
    (size,) = struct.unpack(">Q", _read_exact(stream, 8))
    if size > min(limit, MAX_JSON_BYTES):
        raise WireError(f"a message of {size} bytes is larger than the limit of {limit}")
    try:
        document = json.loads(_read_exact(stream, size))
    except ValueError as error:
        raise WireError(f"the message is not valid JSON: {error}") from None
    (blob_size,) = struct.unpack(">Q", _read_exact(stream, 8))
    if blob_size > limit - size:
        raise WireError(f"a tensor blob of {blob_size} bytes is larger than the limit")
    blob = _read_exact(stream, blob_size) if blob_size else b""
    if not isinstance(document, dict):
        raise WireError("a message must be a JSON object")
    return document, blob


SAFETENSORS_DTYPES = {  # torch dtype name -> safetensors dtype code, for the dtypes `pack_tensors` writes itself
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64", "int32": "I32",
    "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
}


def pack_tensors(tensors: list) -> bytes:
    """The tensors as one safetensors blob (named 0..n-1), read back by `unpack_tensors` with safetensors."""
    return b"".join(blob_parts(tensors))


def blob_parts(tensors: list) -> list:
    """The safetensors blob of `tensors` as a list of buffers: its header, then each tensor's own memory.

    `write_frame` writes them without joining them, so sending a tensor copies it once, into the pipe:
    safetensors' own `save` copies every tensor twice and ran at about a tenth of the memory bandwidth
    (170 MB/s), the largest cost of sending models. Dtypes outside SAFETENSORS_DTYPES (complex, float8...)
    go through safetensors' `save`.
    """
    if not tensors:
        return []
    import torch

    if any(str(t.dtype).removeprefix("torch.") not in SAFETENSORS_DTYPES for t in tensors):
        from safetensors.torch import save

        return [save({str(i): t for i, t in enumerate(tensors)})]
    header, chunks, offset = {}, [], 0
    for index, tensor in enumerate(tensors):
        data = torch.Tensor.detach(tensor).contiguous().reshape(-1).view(torch.uint8).numpy()
        header[str(index)] = {"dtype": SAFETENSORS_DTYPES[str(tensor.dtype).removeprefix("torch.")],
                              "shape": [int(n) for n in tensor.shape], "data_offsets": [offset, offset + data.nbytes]}
        chunks.append(data)
        offset += data.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    return [struct.pack("<Q", len(text)) + text, *chunks]


def unpack_tensors(blob: bytes) -> list:
    if not blob:
        return []
    from safetensors.torch import load

    try:
        loaded = load(blob)
    except Exception as error:  # noqa: BLE001 (a malformed blob is the sender's problem)
        raise WireError(f"the tensor blob cannot be read: {error}") from None
    try:
        return [loaded[str(i)] for i in range(len(loaded))]
    except KeyError:
        raise WireError("the tensor blob is not numbered 0..n-1") from None


def tensors_in(value) -> list:
    """The tensors in a (nested) list, tuple or dict, in order."""
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in tensors_in(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in tensors_in(v)]
    return []


def plain_tensor(tensor):
    """`tensor` detached, dense, contiguous and on the CPU, as a plain torch.Tensor (subclasses dropped).

    Not a copy when it already is all that: a message is packed right after it is encoded, so the data sent is
    the data encoded, and tensors that share their memory (tied weights) are sent once (see `Encoder.tensor`).
    """
    import torch

    value = torch.Tensor.detach(tensor)
    if type(value) is not torch.Tensor:
        value = value.as_subclass(torch.Tensor)
    if value.layout != torch.strided:
        raise WireError(f"a {value.layout} tensor cannot be sent: only dense tensors")
    return value.to("cpu").resolve_conj().resolve_neg().contiguous()


class Encoder:
    """Turns a value into JSON plus a list of tensors.

    `special(value, depth, encoder)` may return a JSON form for values the caller knows better (handles, models, specs);
    it returns None to let the default rules apply. Unknown objects are described by their type and a short
    repr, never executed on the other side.
    """

    def __init__(self, special=None):
        self.tensors: list = []
        self.originals: list = []  # the tensors as given, in the order of `tensors`
        self.special = special
        self.items = 0
        self.sent: dict = {}  # (memory, dtype, shape, meta) -> index in `tensors`

    def tensor(self, tensor, **meta) -> dict:
        """The form of a tensor; a tensor with the same memory, dtype, shape and flags as one encoded before
        (the embedding and the tied output layer of a model) is the same entry of the blob."""
        value = plain_tensor(tensor)
        key = (value.data_ptr(), value.dtype, tuple(value.shape), tuple(sorted(meta.items())))
        if value.numel() and key in self.sent:
            return {"$t": self.sent[key], **meta}
        self.tensors.append(value)
        self.originals.append(tensor)
        self.sent[key] = len(self.tensors) - 1
        return {"$t": len(self.tensors) - 1, **meta}

    def encode(self, value, depth: int = 0):
        self.items += 1
        if depth > MAX_DEPTH or self.items > MAX_ITEMS:
            return {"$cut": True}
        if self.special is not None:
            form = self.special(value, depth, self)
            if form is not None:
                return form
        if value is None or type(value) is bool:
            return value
        if isinstance(value, bool):
            return bool(value)
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            value = float(value)
            return value if math.isfinite(value) else {"$f": repr(value)}
        if isinstance(value, str):
            return {"$str": str.__str__(value), "cls": type(value).__name__} if type(value) is not str else value
        if isinstance(value, (bytes, bytearray)):
            return {"$bytes": bytes(value[:4096]).hex()}
        if isinstance(value, PurePath):
            return {"$path": str(value)}
        try:
            import torch
        except ImportError:  # pragma: no cover (torch is always there when grading)
            torch = None
        if torch is not None:
            if isinstance(value, torch.Tensor):
                return self.tensor(value, rg=bool(value.requires_grad), leaf=bool(value.is_leaf),
                                   gf=type(value.grad_fn).__name__ if value.grad_fn is not None else None,
                                   dev=str(value.device.type), cls=type(value).__name__)
            if isinstance(value, torch.dtype):
                return {"$dtype": str(value).replace("torch.", "")}
            if isinstance(value, torch.device):
                return {"$device": str(value)}
            if isinstance(value, torch.Size):
                return {"$tuple": [int(v) for v in value]}
        numpy = _numpy()
        if numpy is not None:
            if isinstance(value, numpy.ndarray):
                if value.dtype.kind in "biuf":
                    import torch

                    return {"$np": self.tensor(torch.from_numpy(numpy.ascontiguousarray(value)))["$t"]}
                return {"$tuple": [self.encode(v, depth + 1) for v in value.tolist()]}
            if isinstance(value, numpy.generic):
                return {"$npscalar": self.encode(value.item(), depth + 1), "dtype": str(value.dtype)}
        if isinstance(value, tuple):
            return {"$tuple": [self.encode(v, depth + 1) for v in value]}
        if isinstance(value, list):
            items = [self.encode(v, depth + 1) for v in list.__iter__(value)]
            return items if type(value) is list else {"$list": items, "cls": type(value).__name__}
        if isinstance(value, Mapping):
            pairs = [[self.encode(k, depth + 1), self.encode(v, depth + 1)] for k, v in _items(value)]
            return {"$dict": pairs, "cls": type(value).__name__, "isdict": isinstance(value, dict)}
        if isinstance(value, (set, frozenset)):
            return {"$set": [self.encode(v, depth + 1) for v in value]}
        if callable(value) and not isinstance(value, type):
            return {"$fn": getattr(value, "__qualname__", type(value).__name__)}
        return describe_object(value)


def _items(mapping):
    if isinstance(mapping, dict):
        return list(dict.items(mapping))
    return [(key, mapping[key]) for key in mapping]


def describe_object(value) -> dict:
    """Type, class hierarchy and a short repr of an object the format has no rule for."""
    cls = type(value)
    try:
        text = object.__repr__(value) if len(cls.__mro__) > 2 else repr(value)
    except Exception:  # noqa: BLE001
        text = "?"
    return {"$obj": {"type": cls.__name__, "module": cls.__module__,
                     "mro": [c.__name__ for c in cls.__mro__][:30], "repr": text[:300]}}


def _numpy():
    import sys

    return sys.modules.get("numpy")


def encode(value, special=None) -> tuple[object, list]:
    encoder = Encoder(special)
    return encoder.encode(value), encoder.tensors


class RemoteDict(dict):
    """A dict that came over the wire; `type_name` is the class the sender had (dict, BatchEncoding...)."""

    type_name = "dict"


class RemoteMapping(Mapping):
    """A mapping that is not a dict on the sender's side (BatchEncoding, UserDict...): a Mapping, not a dict."""

    type_name = "Mapping"

    def __init__(self):
        self._data = {}

    def __setitem__(self, key, value):
        self._data[key] = value

    def __getitem__(self, key):
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"{self.type_name}({self._data!r})"


class RemoteList(list):
    type_name = "list"


class RemoteStr(str):
    """A str subclass on the sender's side, received as its plain text."""

    type_name = "str"


class RemoteObject:
    """An object the format has no rule for: its type name, class hierarchy and repr, nothing callable."""

    def __init__(self, form: dict):
        self.type_name = str(form.get("type", "?"))
        self.module = str(form.get("module", ""))
        self.mro = [str(name) for name in form.get("mro", [])]
        self.text = str(form.get("repr", ""))

    def __repr__(self) -> str:
        return self.text or f"<{self.type_name}>"


class RemoteFunction:
    """A callable of the sender's side, known by name only."""

    def __init__(self, name: str):
        self.name = str(name)
        self.type_name = "function"

    def __repr__(self) -> str:
        return f"<function {self.name}>"


class Decoder:
    """The inverse of `Encoder`; `special(tag, form)` decodes the caller's own tags (refs, specs, models)."""

    def __init__(self, tensors: list, special=None):
        self.tensors = tensors
        self.special = special
        self.items = 0

    def tensor(self, form: dict):
        try:
            tensor = self.tensors[int(form["$t"])]
        except (IndexError, KeyError, TypeError, ValueError):
            raise WireError("a tensor index points outside the blob") from None
        if form.get("rg") and tensor.is_floating_point():
            tensor = tensor.requires_grad_(True)
        tensor.wire = {key: form.get(key) for key in ("rg", "leaf", "gf", "dev", "cls")}
        return tensor

    def decode(self, form, depth: int = 0):
        self.items += 1
        if depth > MAX_DEPTH + 5 or self.items > 4 * MAX_ITEMS:
            raise WireError("the message nests too deeply or has too many items")
        if form is None or isinstance(form, (bool, int, float, str)):
            return form
        if isinstance(form, list):
            return [self.decode(v, depth + 1) for v in form]
        if not isinstance(form, dict) or not form:
            raise WireError(f"unexpected JSON value {str(form)[:80]}")
        tag = next(iter(form))
        if self.special is not None and tag not in BUILTIN_TAGS:
            done, value = self.special(tag, form, self, depth)
            if done:
                return value
        if tag == "$t":
            return self.tensor(form)
        if tag == "$tuple":
            return tuple(self.decode(v, depth + 1) for v in _list(form[tag]))
        if tag == "$list":
            value = RemoteList(self.decode(v, depth + 1) for v in _list(form[tag]))
            value.type_name = str(form.get("cls", "list"))
            return value
        if tag == "$dict":
            cls = RemoteDict if form.get("isdict", True) else RemoteMapping
            value = cls()
            for pair in _list(form[tag]):
                if not isinstance(pair, list) or len(pair) != 2:
                    raise WireError("a dict item is not a [key, value] pair")
                key = self.decode(pair[0], depth + 1)
                try:
                    value[key] = self.decode(pair[1], depth + 1)
                except TypeError:
                    raise WireError("a dict key cannot be hashed") from None
            value.type_name = str(form.get("cls", "dict"))
            return value
        if tag == "$set":
            try:
                return set(self.decode(v, depth + 1) for v in _list(form[tag]))
            except TypeError:
                raise WireError("a set item cannot be hashed") from None
        if tag == "$str":
            value = RemoteStr(str(form[tag]))
            value.type_name = str(form.get("cls", "str"))
            return value
        if tag == "$f":
            if form[tag] not in ("nan", "inf", "-inf"):
                raise WireError("bad non-finite float")
            return float(form[tag])
        if tag == "$bytes":
            return bytes.fromhex(str(form[tag]))
        if tag == "$path":
            from pathlib import Path

            return Path(str(form[tag]))
        if tag == "$dtype":
            import torch

            dtype = getattr(torch, str(form[tag]), None)
            if not isinstance(dtype, torch.dtype):
                raise WireError(f"unknown dtype {form[tag]!r}")
            return dtype
        if tag == "$device":
            return str(form[tag])
        if tag == "$np":
            return self.tensor({"$t": form[tag]}).numpy()
        if tag == "$npscalar":
            return self.decode(form[tag], depth + 1)
        if tag == "$obj":
            return RemoteObject(form[tag] if isinstance(form[tag], dict) else {})
        if tag == "$fn":
            return RemoteFunction(form[tag])
        if tag == "$cut":
            return RemoteObject({"type": "cut", "repr": "(too deep or too large: cut)"})
        raise WireError(f"unknown tag {tag!r}")


BUILTIN_TAGS = {"$t", "$tuple", "$list", "$dict", "$set", "$str", "$f", "$bytes", "$path", "$dtype", "$device",
                "$np", "$npscalar", "$obj", "$fn", "$cut"}


def _list(value) -> list:
    if not isinstance(value, list):
        raise WireError("expected a JSON list")
    return value


def decode(form, tensors: list, special=None):
    return Decoder(tensors, special).decode(form)
