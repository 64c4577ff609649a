"""Optimizers that leave ``torch._dynamo`` unimported (splitfed/lazy_dynamo.py).

The import is most of a second of every party's start-up; what replaces it must step exactly
as torch's optimizers do, and hand over to torch's own code once something does import it.
"""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch

from splitfed import lazy_dynamo
from splitfed.optim import make_optimizer

BASES = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


def _model(seed: int) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return model


@pytest.mark.parametrize("name", sorted(BASES))
def test_each_optimizer_steps_exactly_as_torchs(name: str) -> None:
    ours, theirs = _model(0), _model(0)
    kwargs = {"lr": 0.05, "weight_decay": 0.01} | ({"momentum": 0.9} if name == "sgd" else {})
    opt_ours = make_optimizer(ours.parameters(), name, **kwargs)
    opt_theirs = BASES[name](theirs.parameters(), **kwargs)
    assert isinstance(opt_ours, BASES[name])
    gen = torch.Generator().manual_seed(1)
    for _ in range(4):
        x = torch.randn(8, 5, generator=gen)
        for model, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)
    state_ours, state_theirs = opt_ours.state_dict(), opt_theirs.state_dict()
    assert state_ours["param_groups"] == state_theirs["param_groups"]
    for key, state in state_theirs["state"].items():
        for field, value in state.items():
            assert torch.equal(torch.as_tensor(state_ours["state"][key][field]), torch.as_tensor(value)), field


def test_an_optimizer_pickles_and_deep_copies() -> None:
    model = _model(0)
    opt = make_optimizer(model.parameters(), "adam", lr=0.1)
    model(torch.ones(2, 5)).sum().backward()
    opt.step()
    for copied in (pickle.loads(pickle.dumps(opt)), copy.deepcopy(opt)):
        assert type(copied) is type(opt)
        assert copied.state_dict()["param_groups"] == opt.state_dict()["param_groups"]


def test_step_keeps_gradients_off_and_restores_the_callers_mode() -> None:
    model = _model(0)
    opt = make_optimizer(model.parameters(), "adam", lr=0.1)
    model(torch.ones(2, 5)).sum().backward()
    seen = []
    opt.step(lambda: seen.append(torch.is_grad_enabled()))  # a closure runs under torch's own enable_grad
    assert seen == [True] and torch.is_grad_enabled()
    with torch.no_grad():
        opt.step()
        assert not torch.is_grad_enabled()


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
