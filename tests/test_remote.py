"""The judge's side of the exercise protocol: the data format, oracles and their lifetime, kept objects."""
import io
import math

import numpy as np
import pytest
import torch

from autograder.checks.framework import MissingFunction, StudentError, student
from autograder.grading.exercise import wire
from autograder.grading.remote import LocalRunner, RemoteError


class Liar(str):
    def __eq__(self, other):
        return True

    __hash__ = str.__hash__


def round_trip(value):
    form, tensors = wire.encode(value)
    stream = io.BytesIO()
    wire.write_frame(stream, {"value": form}, wire.pack_tensors(tensors))
    stream.seek(0)
    document, blob = wire.read_frame(stream)
    return wire.decode(document["value"], wire.unpack_tensors(blob))


def test_values_survive_the_wire_as_plain_data():
    value = {"ids": torch.tensor([[1, 2], [3, 4]]), 3: (1.5, None, math.inf), "np": np.arange(3.0),
             "dtype": torch.bfloat16, "nested": [{"a": "b"}]}
    back = round_trip(value)
    assert torch.equal(back["ids"], value["ids"]) and back[3][:2] == (1.5, None) and back[3][2] == math.inf
    assert np.array_equal(back["np"], np.arange(3.0)) and back["dtype"] is torch.bfloat16
    assert back["nested"] == [{"a": "b"}]


def test_a_lying_str_arrives_as_its_text():
    back = round_trip(Liar("wrong"))
    assert back == "wrong" and back != "right"


def test_a_tensor_keeps_its_gradient_flag_but_not_its_graph():
    x = torch.ones(2, requires_grad=True)
    back = round_trip(x * 2)
    assert back.requires_grad and back.is_leaf and back.wire["gf"] == "MulBackward0"


@pytest.mark.parametrize("document", [{"$nope": 1}, {"$t": 5}, {"$dtype": "os.system"}])
def test_malformed_forms_are_refused(document):
    with pytest.raises(wire.WireError):
        wire.decode(document, [])


def test_an_oversized_frame_is_refused_before_reading_it():
    stream = io.BytesIO((2**40).to_bytes(8, "big") + b"{}")
    with pytest.raises(wire.WireError):
        wire.read_frame(stream)


def namespace(source: str) -> dict:
    ns = {"__name__": "hw2_submission"}
    exec(source, ns)
    return ns


def square(x):
    return x**2


def test_an_oracle_is_computed_by_the_judge_forward_and_backward():
    runner = LocalRunner(namespace("def f(x):\n    return helper(x) * 3\n"))
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    value, grads = student(runner, "f", {"helper": square}).with_grads((x,), backward=(), grads=("arg:0",))
    assert torch.allclose(value.detach(), torch.tensor([3.0, 12.0]))
    assert torch.allclose(grads["arg:0"], torch.tensor([6.0, 12.0]))  # d(3 x^2)/dx


def test_a_stashed_oracle_answers_nothing_after_its_case():
    runner = LocalRunner(namespace("import builtins\ndef f(x):\n    builtins.saved = helper\n    return helper(x)\n"
                                   "def g(x):\n    return builtins.saved(x)\n"))
    assert student(runner, "f", {"helper": square})(3) == 9
    runner.release()
    with pytest.raises(StudentError, match="no stand-in"):
        student(runner, "g")(3)


def test_missing_functions_and_student_exceptions_are_reported():
    runner = LocalRunner(namespace("def f():\n    raise ValueError('bad shape')\n"))
    with pytest.raises(MissingFunction):
        student(runner, "nope")()
    with pytest.raises(StudentError) as error:
        student(runner, "f")()
    assert isinstance(error.value.error, RemoteError) and error.value.error.type_name == "ValueError"
    assert "bad shape" in error.value.feedback()


def test_kept_objects_are_referenced_by_handle_and_forgotten_on_release():
    runner = LocalRunner(namespace("import torch\ndef make():\n    return torch.nn.Linear(2, 1)\n"
                                   "def same(a, b):\n    return a is b\n"))
    reply = student(runner, "make").reply(keep=True)
    assert reply.value.type_name == "Linear" and set(reply.value.state) == {"weight", "bias"}
    assert student(runner, "same")(reply.ref, reply.ref) is True
    runner.release()
    with pytest.raises(Exception, match="no kept object"):
        student(runner, "same")(reply.ref, reply.ref)


def test_the_blob_is_safetensors_and_tied_weights_travel_once():
    """`pack_tensors` writes the safetensors format itself: safetensors reads it back, every dtype it writes
    keeps its values, and the embedding and the tied output layer of a model are one entry of the blob."""
    from safetensors.torch import load

    tensors = [torch.randn(3, 4), torch.tensor(2.5, dtype=torch.float64), torch.zeros(0, 3),
               torch.tensor([True, False]), torch.randn(2, 3).to(torch.bfloat16), torch.arange(6)[::2],
               torch.randn(4, 4).t(), torch.ones(2, dtype=torch.complex64)]
    form, plain = wire.encode(tensors)
    loaded = load(wire.pack_tensors(plain))
    for index, tensor in enumerate(tensors):
        assert loaded[str(index)].dtype == tensor.dtype and torch.equal(loaded[str(index)], tensor)
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 10, bias=False))
    model[1].weight = model[0].weight
    form, plain = wire.encode(model.state_dict())
    assert len(plain) == 1
    assert round_trip(model.state_dict())["1.weight"].equal(model[0].weight.detach())
