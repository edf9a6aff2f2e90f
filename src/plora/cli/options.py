"""CLI options generated from the config they belong to: each option's default and help live once, in the config.

    from plora.cli.options import option
    from plora.swarm.config import SimConfig

    def sim(
        agents: int = option(SimConfig, "agents"),                        # --agents; default + help from SimConfig
        graph_p: float = option(SimConfig, "graph_p"),                    # --graph_p and --graph-p
        security: str = option(SimConfig, "security", on_off=True),       # on|off; the config turns it into a bool
        allowed_ranks: str | None = option(SimConfig, "allowed_ranks"),   # None unless given: a policy file wins
    ) -> None: ...

``config`` is a pydantic model (the help is the field's ``description``) or a dataclass (``metadata["help"]``).
The option's default is the field's default, written the way a user types it: tuples and lists comma-separated,
booleans ``on``/``off`` with ``on_off=True`` (the config refuses other values). A field tagged
``json_schema_extra={"policy_field": NAME}`` is a gate setting that is unset (None) unless the user gives it, so a
``--policy_file`` keeps its own value; its help shows the :class:`plora.gate.policy.Policy` default instead.
``default=`` overrides the default where the command computes it (``--out`` of ``plora train``), never the help.
Flags default to ``--name`` plus ``--name-with-dashes``; pass ``*flags`` to name them yourself.

``tests/test_cli_options.py`` walks every command and checks each option against its config, so a default or a
help text written a second time in a command module fails the suite.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import typer

_KEEP: Any = object()


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """What a config says about one of its fields: its default (or ``...`` when required) and its help."""

    default: Any
    help: str
    policy_field: str | None = None


def field_spec(config: type, name: str) -> FieldSpec:
    """Default and help of field ``name`` of a pydantic model or dataclass ``config``."""
    fields = getattr(config, "model_fields", None)
    if fields is not None:
        info = fields[name]
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        default = ... if info.is_required() else info.get_default(call_default_factory=True)
        return FieldSpec(default, info.description or "", extra.get("policy_field"))
    for f in dataclasses.fields(config):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = ...
            return FieldSpec(default, f.metadata.get("help", ""))
    raise KeyError(f"{config.__name__} has no field {name!r}")


def as_typed(value: Any, on_off: bool = False) -> Any:
    """A config value the way a user types it on the command line."""
    if on_off and isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    return value


def default_text(config: type, name: str) -> str | None:
    """What ``[default: ...]`` says for a policy-backed field (its default lives in Policy)."""
    spec = field_spec(config, name)
    if spec.policy_field is None:
        return None
    from plora.gate.policy import Policy

    policy_default = as_typed(field_spec(Policy, spec.policy_field).default, on_off=True)
    return f"policy file, else {policy_default}"


def option(
    config: type,
    name: str,
    *flags: str,
    default: Any = _KEEP,
    unset: bool = False,
    on_off: bool = False,
    **kwargs: Any,
) -> Any:
    """A ``typer.Option`` for field ``name`` of ``config``: default and help come from the config (see the module).

    ``unset=True``: the option is None unless given (an override of a file, as the policy options of ``plora gate``
    are); the help still shows the config's default."""
    spec = field_spec(config, name)
    if not flags:
        flags = tuple(dict.fromkeys((f"--{name}", f"--{name.replace('_', '-')}")))
    value = as_typed(spec.default, on_off) if default is _KEEP else default
    help_text, shown = spec.help, None
    if spec.policy_field is not None and default is _KEEP:
        value, shown = None, default_text(config, name)
    elif unset:
        value, shown = None, as_typed(spec.default, on_off)
        if isinstance(spec.default, bool) and "/" in flags[0]:  # --probes/--no-probes: show the flag in force
            shown = flags[0].split("/")[0 if spec.default else 1].strip()
    if shown not in (None, ""):
        help_text = f"{help_text}  [default: {shown}]"
    if on_off:
        kwargs.setdefault("metavar", "on|off")  # the config refuses anything else, naming the flag
    if isinstance(spec.default, tuple | list) and "metavar" not in kwargs:
        kwargs["metavar"] = "A,B,..."
    return typer.Option(value, *flags, help=help_text, **kwargs)


def plain_app(**kwargs: Any) -> typer.Typer:
    """A typer app with plain click help (every plora command and group uses it).

    Rich's option table cuts long option names at 80 columns (``--policy_file,--po…``) and shows every flag as
    ``<bool>``; click's plain layout wraps instead, puts a long option name on its own line and shows flags as
    ``--x / --no-x``. Tracebacks stay off (plora.cli.main prints one line per error)."""
    kwargs.setdefault("rich_markup_mode", None)
    kwargs.setdefault("add_completion", False)
    kwargs.setdefault("pretty_exceptions_enable", False)
    return typer.Typer(**kwargs)
