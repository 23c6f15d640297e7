"""``run-study --config FILE.toml``: a study defined in a file, the command line on top.

The file's keys are the long option names of ``run-study`` (``family``, ``data``,
``columns``, ``n_trials``, ``sampler``, ``storage``, ``study_name``, ...; ``n-trials`` is the
same key). Precedence: the options' defaults < the file < the options given on the command
line (an option given with its default value still overrides the file). Every key's type and
allowed values come from the ``run-study`` parser itself, so the file and the command line
cannot drift apart: an unknown key is an error naming the closest keys, a wrong type names
the key and the type expected. The merged options then go through the same path as the
command line (``config_from_args`` -> ``PrepareConfig``, ``build_spec`` -> ``StudySpec``).

The file's content is stored on the study (user attribute ``dlfm_auto.config_file``: path,
SHA-256, text, with a storage URL's password masked), so the study says how it was defined.
"""

from __future__ import annotations

import argparse
import hashlib
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlfm_auto._errors import UserError, close_matches
from dlfm_auto._urls import mask_secrets
from dlfm_auto.data._arguments import Files

CONFIG_ATTR = "dlfm_auto.config_file"
_DEFAULTS_KEY = "_run_study_defaults"
_RULES_KEY = "_run_study_rules"
_NOT_IN_FILE = ("help", "config")


@dataclass(frozen=True)
class KeyRule:
    """What one key of a study file may hold, read off its argparse action."""

    dest: str
    kind: str  # "bool", "int", "float", "str", "list[str]", "files" (one path or a list)
    choices: tuple[Any, ...] | None = None
    parse: Callable[[str], Any] | None = None  # the option's own checking type (ranges)

    def convert(self, key: str, value: Any, where: str) -> Any:
        ok = {
            "bool": isinstance(value, bool),
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, int | float) and not isinstance(value, bool),
            "str": isinstance(value, str),
            "list[str]": isinstance(value, list) and all(isinstance(v, str) for v in value),
            "files": isinstance(value, str) or (isinstance(value, list) and len(value) > 0
                                                and all(isinstance(v, str) for v in value)),
        }[self.kind]
        if not ok:
            expected = {"bool": "true or false", "int": "an integer", "float": "a number",
                        "str": "a string", "list[str]": "a list of strings",
                        "files": "a path or a list of paths (one per site)"}[self.kind]
            raise UserError(f"{where}: key {key!r} must be {expected}, got {value!r} "
                            f"({_toml_type(value)})")
        if self.kind == "float":
            value = float(value)
        if self.kind == "files" and isinstance(value, list):  # as the command line's --data
            value = value[0] if len(value) == 1 else tuple(value)
        if self.parse is not None:  # the command line's own check (e.g. n_trials >= 0)
            try:
                value = self.parse(str(value))
            except (argparse.ArgumentTypeError, ValueError, TypeError) as e:
                raise UserError(f"{where}: key {key!r}: {e}") from None
        if self.choices is not None and value not in self.choices:
            raise UserError(f"{where}: key {key!r} must be one of "
                            f"{', '.join(map(repr, self.choices))}, got {value!r}")
        return value


def _toml_type(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "float", str: "string", list: "array",
            dict: "table"}.get(type(value), type(value).__name__)


def add_config_option(p: argparse.ArgumentParser) -> None:
    """Give ``p`` a ``--config FILE.toml`` option (call after every other option is added).

    Each option's default moves into a table kept on the parsed namespace, so after parsing
    the namespace holds exactly the options the user typed; :func:`resolve` lays them over
    the file over the defaults.
    """
    defaults: dict[str, Any] = {}
    rules: dict[str, KeyRule] = {}
    for a in p._actions:
        if a.dest in _NOT_IN_FILE or a.dest == argparse.SUPPRESS:
            continue
        defaults[a.dest] = a.default
        a.default = argparse.SUPPRESS
        custom = a.type if callable(a.type) and a.type not in (int, float, str) else None
        rule = KeyRule(a.dest, _kind(a), tuple(a.choices) if a.choices else None, custom)
        names = [s.lstrip("-") for s in a.option_strings if s.startswith("--")] or [a.dest]
        for n in names:
            rules[n.replace("-", "_")] = rule
    p.add_argument("--config", metavar="FILE.toml",
                   help="a study file: keys are the long option names (family, data, columns, "
                        "n_trials, ...); options given here override it")
    p.set_defaults(**{_DEFAULTS_KEY: defaults, _RULES_KEY: rules})


def _kind(a: argparse.Action) -> str:
    """The TOML type of an option: from its action, or what its checking type returns."""
    if isinstance(a, argparse._StoreTrueAction | argparse._StoreFalseAction):
        return "bool"
    if isinstance(a, Files):
        return "files"
    if a.nargs in ("+", "*"):
        return "list[str]"
    if a.type in (int, float, str, None):
        return {int: "int", float: "float"}.get(a.type, "str")
    try:  # a checking type such as "an integer >= 1": its value for "1" says int or float
        probe = a.type("1")
    except Exception:
        return "str"
    if isinstance(probe, bool) or not isinstance(probe, int | float):
        return "str"
    return "int" if isinstance(probe, int) else "float"


def read_study_file(path: str | Path, rules: dict[str, KeyRule]) -> tuple[dict[str, Any], str]:
    """(options by dest, the file's text): parsed, every key known and of the right type."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"--config: no such file {p}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"--config: cannot read {p}: {getattr(e, 'strerror', None) or e}"
                        ) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"--config: {p} is not valid TOML: {e}") from None
    out: dict[str, Any] = {}
    for key, value in raw.items():
        norm = key.replace("-", "_")
        rule = rules.get(norm)
        if rule is None:
            hint = close_matches(norm, sorted(rules), n=3)
            raise UserError(f"{p}: unknown key {key!r}" + (
                f"; closest: {', '.join(hint)}" if hint else
                f"; keys are the long options of run-study: {', '.join(sorted(rules))}"))
        if rule.dest in out:
            raise UserError(f"{p}: key {key!r} given twice (as another spelling too)")
        out[rule.dest] = rule.convert(key, value, str(p))
    return out, text


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """The run-study options: defaults < ``--config`` file < options typed (see module)."""
    given = {k: v for k, v in vars(args).items() if not k.startswith("_run_study")}
    defaults = getattr(args, _DEFAULTS_KEY, {})
    from_file: dict[str, Any] = {}
    text = None
    if given.get("config"):
        from_file, text = read_study_file(given["config"], getattr(args, _RULES_KEY, {}))
    merged = {**defaults, **from_file, **given}
    if not merged.get("family"):
        raise UserError("run-study needs a model family: FAMILY on the command line or "
                        "`family = \"...\"` in the --config file")
    merged["config_text"] = text
    return argparse.Namespace(**merged)


def store_on_study(study: Any, args: argparse.Namespace) -> None:
    """Record the study file (path, SHA-256, text; passwords masked) on the study."""
    text = getattr(args, "config_text", None)
    if text is None:
        return
    study.set_user_attr(CONFIG_ATTR, {
        "path": str(args.config), "sha256": hashlib.sha256(text.encode()).hexdigest(),
        "text": mask_secrets(text)})
