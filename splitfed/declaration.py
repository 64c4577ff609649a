"""What a protocol tells the command line, without its maths: :class:`Option` and :class:`Declaration`.

``splitfed protocols``, ``splitfed run --help`` and ``splitfed run PROTOCOL --help`` need each
protocol's name, summary, options and a few facts (does it have clients, a cut, a model), not its
roles, whose modules import torch (seconds on a small machine). So a protocol may register a
:class:`Declaration`, kept in a module that imports no torch, under the ``splitfed.protocols``
entry-point group; its ``roles`` names the attribute that holds the whole
:class:`~splitfed.protocol.ProtocolSpec`, which is imported only when a run needs it. That
module builds its spec from the declaration (:meth:`Declaration.with_roles`), so the two cannot
disagree. A plugin may still register its ``ProtocolSpec`` itself; listing it then imports its module.

Standard library only.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from splitfed.errors import ConfigError

if TYPE_CHECKING:
    from splitfed.protocol import ClientRole, ProtocolSpec, ServerRole


@dataclass(frozen=True)
class Option:
    """One protocol option: the flag ``--name-with-dashes`` of ``splitfed run/server PROTOCOL``, and
    ``config.option(name)`` in the roles. Validated (``choices``, ``check``) before any process starts."""

    name: str  # a Python name; the flag is --name-with-dashes
    type: Callable[[Any], Any]
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    #: raises ValueError (or ConfigError) saying what is wrong with a value, after the flag: 'must be >= 1, got 0'
    check: Callable[[Any], None] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def value(self, raw: Any) -> Any:
        """``raw`` converted and checked; a ConfigError naming the flag otherwise."""
        try:
            value = self.type(raw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{self.flag} {raw!r} is not a valid {getattr(self.type, '__name__', 'value')}") from exc
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{self.flag} {value!r} is not one of {', '.join(map(str, self.choices))}")
        if self.check is not None:
            try:
                self.check(value)
            except (ValueError, ConfigError) as exc:
                raise ConfigError(f"{self.flag} {exc}") from None
        return value


def option_values(
    protocol: str, options: tuple[Option, ...], given: Mapping[str, Any] | None, kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    """Every option: the given values converted and checked, defaults for the rest (see ``option_values``)."""
    values = {**(given or {}), **kwargs}
    known = {o.name: o for o in options}
    unknown = sorted(set(values) - set(known))
    if unknown:
        flags = ", ".join(o.flag for o in options) or "none"
        raise ConfigError(f"{protocol} has no option {unknown[0]!r} (its options: {flags})")
    return {name: o.value(values[name]) if name in values else o.default for name, o in known.items()}


@dataclass(frozen=True)
class Declaration:
    """A protocol's name, summary, options and facts; ``roles`` ("package.module:SPEC") names its full spec.

    The fields after ``roles`` mean what :class:`~splitfed.protocol.ProtocolSpec`'s fields of the
    same names mean."""

    name: str
    summary: str
    roles: str
    options: tuple[Option, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict)
    distributed: bool = True
    augments: str = "examples"
    uses_model: bool = True
    smashed: bool = False
    validates: bool = True
    parallel_clients: bool = True

    def facts(self) -> dict[str, Any]:
        """The fields a :class:`~splitfed.protocol.ProtocolSpec` shares with this declaration."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "roles"}

    def with_roles(
        self,
        *,
        server: type[ServerRole],
        client: type[ClientRole],
        messages: frozenset[str] = frozenset(),
        validate: Callable[[Any, Any], None] | None = None,
    ) -> ProtocolSpec:
        """The whole spec: this declaration with the maths (for the module that ``roles`` names)."""
        from splitfed.protocol import ProtocolSpec

        return ProtocolSpec(server=server, client=client, messages=messages, validate=validate, **self.facts())

    def load(self) -> ProtocolSpec:
        """Import the module that ``roles`` names and return its spec, which must agree with this declaration."""
        from splitfed.protocol import ProtocolSpec

        module, _, attr = self.roles.partition(":")
        spec = getattr(importlib.import_module(module), attr or "SPEC", None)
        if not isinstance(spec, ProtocolSpec):
            raise ConfigError(f"{self.roles} (the roles of protocol {self.name!r}) is not a ProtocolSpec")
        theirs = {name: getattr(spec, name) for name in self.facts()}
        differ = sorted(name for name, value in self.facts().items() if theirs[name] != value)
        if differ:
            raise ConfigError(
                f"protocol {self.name!r}: {self.roles} disagrees with its declaration on {', '.join(differ)}; "
                "build it with the declaration's with_roles()"
            )
        return spec

    def option_values(self, given: Mapping[str, Any] | None = None, /, **kwargs: Any) -> dict[str, Any]:
        """As :meth:`splitfed.protocol.ProtocolSpec.option_values`."""
        return option_values(self.name, self.options, given, kwargs)
