"""Listing protocols and every help text answer without importing torch (issue 13): the entry points
name light declarations (protocols/declarations.py), and a run loads the maths they name."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys

import pytest

from splitfed import cli, registry
from splitfed.declaration import Declaration
from splitfed.errors import ConfigError
from splitfed.models.rnn import CELLS, ENCODERS
from splitfed.models.vertical import HEADS
from splitfed.protocol import ProtocolSpec

#: ``splitfed ARGV`` in a fresh interpreter; its last stderr line says whether torch was imported
WRAPPER = """
import json, sys
from splitfed.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
sys.stdout.flush()
print(json.dumps({"code": code, "torch": "torch" in sys.modules}), file=sys.stderr)
"""
COMMANDS = [
    ["--help"],
    ["protocols"],
    ["run", "--help"],
    ["run", "sflv1", "--help"],
    ["run", "fedsl", "--help"],
    ["server", "--help"],
    ["server", "pyvertical", "--help"],
]


def _with_full_specs(argv: list[str], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> str:
    """What ``splitfed ARGV`` prints when every protocol is loaded whole, roles and all (as before declarations)."""
    light = registry.declared

    def whole(name: str) -> ProtocolSpec:
        found = light(name)
        return found.load() if isinstance(found, Declaration) else found

    monkeypatch.setattr(registry, "declared", whole)
    handler = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) if "--help" in argv else contextlib.nullcontext():
            assert cli.main(argv) == 0
    finally:
        signal.signal(signal.SIGTERM, handler)  # main() sets its own; this process is pytest's
    return capsys.readouterr().out


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_help_and_listing_import_no_torch_and_say_what_the_whole_specs_say(
    argv: list[str], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "100")  # the same wrapping here and in the child
    env = {**os.environ, "COLUMNS": "100"}
    done = subprocess.run([sys.executable, "-c", WRAPPER, *argv], capture_output=True, text=True, env=env, timeout=60)
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report == {"code": 0, "torch": False}, done.stderr
    assert done.stdout == _with_full_specs(argv, capsys, monkeypatch)
    assert "sflv1" in done.stdout or argv[0] != "protocols"


def test_every_built_in_protocol_registers_a_declaration_that_its_spec_agrees_with() -> None:
    for name in registry.available():
        declared, spec = registry.declared(name), registry.get(name)
        assert isinstance(declared, Declaration) and isinstance(spec, ProtocolSpec), name
        assert {k: getattr(spec, k) for k in declared.facts()} == declared.facts(), name
        assert declared.roles == f"splitfed.protocols.{name}:SPEC"


def test_option_choices_agree_with_the_code_that_reads_them() -> None:
    """The declarations cannot import the models' tables (torch): the same choices, written twice; the label
    options are declared once, and the code that reads them uses that declaration."""
    from splitfed.protocols.label_private import OPTIONS as LABEL_OPTIONS

    fedsl = {o.name: o for o in registry.declared("fedsl").options}
    assert set(fedsl["cell"].choices) == set(CELLS) and set(fedsl["encoder"].choices) == set(ENCODERS)
    assert {o.name: o for o in registry.declared("pyvertical").options}["head"].choices == HEADS
    # one declaration of the label options: what the command line offers is what the code reads
    assert registry.declared("sflv1").options is LABEL_OPTIONS
    assert registry.declared("sflv2").options[: len(LABEL_OPTIONS)] == LABEL_OPTIONS
    assert registry.get("sflv1").options == LABEL_OPTIONS


def test_a_spec_that_disagrees_with_its_declaration_is_refused_by_name() -> None:
    other = Declaration(name="sflv1", summary="something else", roles="splitfed.protocols.sflv1:SPEC", smashed=True)
    with pytest.raises(ConfigError, match="disagrees with its declaration on options, summary"):
        other.load()
    missing = Declaration(name="x", summary="x", roles="splitfed.protocols.declarations:NOTHING")
    with pytest.raises(ConfigError, match="is not a ProtocolSpec"):
        missing.load()
