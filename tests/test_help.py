"""Help texts (issue 13, part 6): every flag shows its default; flags a protocol ignores are not listed."""

from __future__ import annotations

import argparse

import pytest
from splitfed.preprocessing.cli import main as eye_crop

from splitfed import bench, registry
from splitfed.cli import config_from_args, protocol_names
from splitfed.cli_parser import build_parser


def _options(parser: argparse.ArgumentParser, path: str = "splitfed"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, f"{path} {name}")
        elif action.option_strings and not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            yield path, action


def test_every_flag_of_every_command_shows_its_default() -> None:
    missing = [
        f"{path} {action.option_strings[-1]}"
        for path, action in _options(build_parser(None))
        if not action.required and "default" not in (action.help or "")
    ]
    assert missing == []


def _flags(*argv: str) -> set[str]:
    parser = build_parser(list(argv))
    for name in argv:
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    return {s for a in parser._actions for s in a.option_strings}


@pytest.mark.parametrize("command", ["run", "server"])
def test_a_protocol_without_clients_does_not_list_client_flags(command: str) -> None:
    ignored = {"--clients", "--cut", "--wire-dtype"}
    assert not ignored & _flags(command, "centralized")
    assert ignored <= _flags(command, "sflv1")
    args = build_parser(["run", "centralized"]).parse_args(["run", "centralized", "--epochs", "1"])
    config = config_from_args(args, registry.get("centralized"))
    assert config.clients == 1 and config.cut is None and config.wire_dtype == "float32"


def test_each_protocol_lists_only_the_flags_it_uses_and_takes_no_abbreviations() -> None:
    assert {"--cut", "--model", "--wire-dtype", "--clients-per-round"} <= _flags("run", "sflv1")
    assert not {"--cut", "--wire-dtype", "--dp-clip"} & _flags("run", "fedavg")  # whole models, no smashed data
    assert "--model" not in _flags("run", "fedsl") and "--cut" not in _flags("run", "pyvertical")
    assert "--wire-dtype" in _flags("run", "fedsl")  # hidden states cross the wire
    assert "--clients-per-round" not in _flags("run", "centralized")
    with pytest.raises(SystemExit):  # not taken for --clients-per-round, as argparse's prefixes would
        build_parser(["run", "centralized"]).parse_args(["run", "centralized", "--clients", "2"])
    common = ["--clients", "2", "--model", "cnn", "--epochs", "1"]
    assert bench.flags_for("centralized", common) == ["--model", "cnn", "--epochs", "1"]
    assert bench.flags_for("fedsl", common) == ["--clients", "2", "--epochs", "1"]


def test_run_help_lists_each_protocol_once(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        build_parser(["run"]).parse_args(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in registry.available():
        assert text.count(" ".join(registry.get(name).summary.split())) == 1, name


def test_list_flags_take_one_form() -> None:
    parser = build_parser(["bench"])
    spaced = parser.parse_args(["bench", "--protocols", "sflv1", "fedavg", "--seeds", "0", "1"])
    commas = parser.parse_args(["bench", "--protocols", "sflv1,fedavg"])
    assert protocol_names(spaced.protocols) == protocol_names(commas.protocols) == ["sflv1", "fedavg"]
    assert spaced.seeds == [0, 1]
    assert protocol_names(parser.parse_args(["bench"]).protocols) == registry.available()


def test_eye_crop_tells_its_version(capsys: pytest.CaptureFixture) -> None:
    import splitfed

    with pytest.raises(SystemExit) as exit_:
        eye_crop(["--version"])
    assert exit_.value.code == 0 and splitfed.__version__ in capsys.readouterr().out
