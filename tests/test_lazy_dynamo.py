"""Optimizers that leave ``torch._dynamo`` unimported (splitfed/lazy_dynamo.py).

The import is most of a second of every party's start-up; what replaces it must step exactly
as torch's optimizers do, and hand over to torch's own code once something does import it.
"""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap
import threading

import pytest
import torch

from splitfed import lazy_dynamo
from splitfed.optim import make_optimizer

#: optimizers and settings the equivalence runs step, all in one fresh process per side (once anything
#: imports torch._dynamo, splitfed's step hands over to torch's own and would only be compared with itself)
CASES = {
    "sgd-nesterov": ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    "sgd-loop": ("SGD", {"lr": 0.05, "momentum": 0.5, "foreach": False}),
    "adam-amsgrad-maximize": ("Adam", {"lr": 0.01, "amsgrad": True, "maximize": True}),
    "adam-loop": ("Adam", {"lr": 0.01, "weight_decay": 0.01, "foreach": False}),
    "adamw-foreach": ("AdamW", {"lr": 0.01, "weight_decay": 0.1, "foreach": True}),
}

STEPS = textwrap.dedent(
    """
    import sys, torch
    which, out = sys.argv[1], sys.argv[2]
    if which == "ours":
        from splitfed import lazy_dynamo
        lazy_dynamo.defer()

    def steps(cls_name, kwargs):
        cls = getattr(torch.optim, cls_name)
        if which == "ours":
            cls = lazy_dynamo.eager(cls)
        gen = torch.Generator().manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=gen))
        opt = cls(model.parameters(), **kwargs)
        calls = []
        opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
        opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
        schedule = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
        losses = []
        for i in range(6):
            x = torch.randn(8, 5, generator=gen)

            def closure():
                calls.append(torch.is_grad_enabled())  # on, inside the step's no-grad
                opt.zero_grad()
                loss = model(x).square().mean()
                loss.backward()
                return loss

            losses.append(opt.step(closure).item())
            calls.append(torch.is_grad_enabled())  # on again after it
            schedule.step()
            if i == 2:  # a round trip through the state dict, as a checkpoint takes
                state = opt.state_dict()
                opt = cls(model.parameters(), **kwargs)
                opt.load_state_dict(state)
                opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
                opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
                schedule = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5, last_epoch=i)
        return {{"params": list(model.parameters()), "state": opt.state_dict(), "losses": losses, "calls": calls,
                "type": type(opt).__name__}}

    results = {{name: steps(*case) for name, case in {cases}.items()}}
    torch.save({{"cases": results, "dynamo": "torch._dynamo" in sys.modules}}, out)
    """
).format(cases=repr(CASES))


@pytest.fixture(scope="module")
def stepped(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Every case stepped by splitfed's optimizers in one fresh process, and by torch's in another."""
    folder = tmp_path_factory.mktemp("steps")
    found = {}
    for which in ("ours", "torch"):
        out = folder / f"{which}.pt"
        done = subprocess.run(
            [sys.executable, "-c", STEPS, which, str(out)], capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
        found[which] = torch.load(out)
    return found


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_optimizer_steps_exactly_as_torchs_without_importing_torch_dynamo(name: str, stepped: dict) -> None:
    assert not stepped["ours"]["dynamo"] and stepped["torch"]["dynamo"]  # splitfed's own step ran, beside torch's
    ours, theirs = stepped["ours"]["cases"][name], stepped["torch"]["cases"][name]
    assert ours["type"] == "Eager" + CASES[name][0] and theirs["type"] == CASES[name][0]
    assert ours["losses"] == theirs["losses"] and ours["calls"] == theirs["calls"]
    assert ours["calls"] == ["pre", True, "post", True] * 6  # each hook once per step, gradients on in the closure
    for a, b in zip(ours["params"], theirs["params"], strict=True):
        assert torch.equal(a, b)
    assert ours["state"]["param_groups"] == theirs["state"]["param_groups"]
    for key, state in theirs["state"]["state"].items():
        for field, value in state.items():
            assert torch.equal(torch.as_tensor(ours["state"]["state"][key][field]), torch.as_tensor(value)), field


def test_make_optimizer_builds_splitfeds_subclass_of_torchs() -> None:
    for name, base in (("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)):
        opt = make_optimizer(torch.nn.Linear(2, 1).parameters(), name, lr=0.1)
        assert isinstance(opt, base) and type(opt) is lazy_dynamo.eager(base) and type(opt) is not base


def test_one_class_per_optimizer_however_many_threads_ask_at_once() -> None:
    lazy_dynamo._classes.pop(torch.optim.RMSprop, None)
    barrier, got, errors = threading.Barrier(8), [], []

    def ask() -> None:
        barrier.wait()
        try:
            got.append(lazy_dynamo.eager(torch.optim.RMSprop))
        except Exception as exc:  # noqa: BLE001 -- the failure this test is about
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(got) == 8 and len(set(got)) == 1 and got[0] is not torch.optim.RMSprop


PICKLED = textwrap.dedent(
    """
    import pickle, sys, torch
    if sys.argv[1] == "dump":
        from splitfed.optim import make_optimizer
        model = torch.nn.Linear(3, 1)
        opt = make_optimizer(model.parameters(), "adam", 0.1)
        model(torch.ones(2, 3)).sum().backward()
        opt.step()
        sys.stdout.buffer.write(pickle.dumps(opt))
    else:
        opt = pickle.loads(sys.stdin.buffer.read())  # a fresh process that never imported splitfed.lazy_dynamo
        print(type(opt).__name__, opt.state_dict()["param_groups"][0]["lr"])
    """
)


def test_an_optimizer_pickled_in_one_process_loads_in_another() -> None:
    dumped = subprocess.run([sys.executable, "-c", PICKLED, "dump"], capture_output=True, timeout=300)
    assert dumped.returncode == 0, dumped.stderr
    loaded = subprocess.run(
        [sys.executable, "-c", PICKLED, "load"], input=dumped.stdout, capture_output=True, timeout=300
    )
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.split() == [b"EagerAdam", b"0.1"]
    copied = copy.deepcopy(make_optimizer(torch.nn.Linear(2, 1).parameters(), "sgd", lr=0.1))
    assert type(copied) is lazy_dynamo.eager(torch.optim.SGD)


def test_an_optimizer_whose_step_torch_did_not_wrap_is_left_as_it_is() -> None:
    class Plain(torch.optim.Optimizer):
        def step(self, closure=None):  # type: ignore[override]
            return None

    assert lazy_dynamo.eager(Plain) is Plain


EVERY_PROTOCOL = textwrap.dedent(
    """
    import sys
    import splitfed
    from splitfed.registry import available
    for protocol in available():
        splitfed.run(protocol, clients=2, epochs=1, in_process=True, out=sys.argv[1] + "/" + protocol, quiet=True)
    print(sorted(available()))
    print("torch._dynamo" in sys.modules)
    """
)


def test_no_protocol_imports_torch_dynamo(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", EVERY_PROTOCOL, str(tmp_path)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    protocols, imported = done.stdout.strip().splitlines()[-2:]
    assert "sflv1" in protocols and "fedsl" in protocols and "pyvertical" in protocols
    assert imported == "False", protocols


COMPILED = textwrap.dedent(
    """
    import sys, torch
    from splitfed.optim import make_optimizer
    model = torch.nn.Linear(3, 1)
    opt = make_optimizer(model.parameters(), "adam", lr=0.1)
    opt.zero_grad(); model(torch.ones(2, 3)).sum().backward(); opt.step()
    assert "torch._dynamo" not in sys.modules
    import torch._dynamo
    stand_in = torch.optim.Optimizer.zero_grad.__wrapped__.__dict__["__dynamo_disable"]

    def train(x):
        opt.zero_grad()
        model(x).sum().backward()
        opt.step()

    torch.compile(train, backend="eager")(torch.ones(2, 3))
    real = torch.optim.Optimizer.zero_grad.__wrapped__.__dict__["__dynamo_disable"]
    print(real is not stand_in, type(real).__module__)
    """
)


def test_once_torch_dynamo_is_imported_torchs_own_wrappers_take_over() -> None:
    done = subprocess.run([sys.executable, "-c", COMPILED], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    replaced, _ = done.stdout.split()
    assert replaced == "True"  # the stand-in built torch._dynamo.disable's function and cached it in its place
