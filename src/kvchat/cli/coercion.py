"""Command-line values without pydantic, where that changes nothing.

Typer 0.29 turns every value a command receives (defaults included) into
its parameter's type with a pydantic TypeAdapter: it imports pydantic and
builds one adapter per parameter, 70-120 ms of every kvchat command that
takes an option (docs/performance.md). Nearly all of kvchat's values are
plain strings, integers and flags, or not given at all, which need none of
that. `speed_up(command)` gives each parameter a converter that takes those
cases itself (nothing given; a string as it is; a flag's True or False; an
integer, or ASCII digits with an optional sign, within the parameter's
bounds) and hands every other value to Typer's own converter, built when
first needed, so what is accepted, and every error message, stays Typer's.
"""

from __future__ import annotations

import re
from typing import Any

from typer.core import TyperGroup, _TyperParameter  # Typer 0.29's: pyproject.toml pins it

# At most 18 digits: every such number fits SQLite's integers, and Python's
# int() refuses text of over 4,300 digits with an error of its own.
_PLAIN_INTEGER = re.compile(r"[+-]?[0-9]{1,18}")


class _PlainValues:
    """Stands in for Typer's converter (`RuntimeParam`) of one parameter."""

    def __init__(self, parameter) -> None:
        self.parameter = parameter
        descriptor = parameter.type_descriptor
        info = descriptor.parameter_info
        self.multiple = parameter.multiple or parameter.nargs == -1
        plain = not self.multiple and info.parser is None and not info.clamp
        self.annotation = descriptor.annotation if plain else None
        self.bounds = (info.min, info.max)
        self._fallback = None

    def coerce(self, value: Any, param, ctx) -> Any:
        # Typer asks for a converter even for a missing value: most options.
        if value is None:
            return () if self.multiple else None
        if self.annotation is str and isinstance(value, str):
            return value
        if self.annotation is bool and isinstance(value, bool):
            return value
        if self.annotation is int:
            number = self._integer(value)
            if number is not None and self._within_bounds(number):
                return number
        return self._typer_converter().coerce(value, param=param, ctx=ctx)

    @staticmethod
    def _integer(value: Any) -> int | None:
        if type(value) is int:
            return value
        if isinstance(value, str) and _PLAIN_INTEGER.fullmatch(value):
            return int(value)
        return None

    def _within_bounds(self, number: int) -> bool:
        low, high = self.bounds
        return (low is None or number >= low) and (high is None or number <= high)

    def _typer_converter(self):
        if self._fallback is None:
            from typer._coercion import build_runtime_param

            self._fallback = build_runtime_param(self.parameter.type_descriptor)
        return self._fallback


def _convert_plainly(parameter) -> None:
    if isinstance(parameter, _TyperParameter) and not isinstance(parameter._runtime_param, _PlainValues):
        parameter._runtime_param = _PlainValues(parameter)


def speed_up(command) -> None:
    """Give every parameter of `command` (a Click command built by Typer)
    and of its subcommands the converter above."""
    for parameter in command.params:
        _convert_plainly(parameter)
    # --help is made on first use, with the names its context allows.
    make_help_option = command.get_help_option

    def get_help_option(ctx):
        option = make_help_option(ctx)
        if option is not None:
            _convert_plainly(option)
        return option

    command.get_help_option = get_help_option
    if isinstance(command, TyperGroup):
        for subcommand in command.commands.values():
            speed_up(subcommand)
