"""The generated pages of the documentation site, made from the code so they cannot drift.

    python scripts/docs_site.py config      # the config reference (Markdown) on stdout
    python scripts/docs_site.py commands    # the command reference
    python scripts/docs_site.py layers      # the layer diagram from pyproject.toml

``mkdocs build`` calls these through ``scripts/mkdocs_hooks.py``; nothing generated is stored
in git. The config reference reads every schema dataclass in ``lowres/schema.py`` (keys, types,
defaults, and the comments written beside or above each field) and every YAML option under
``configs/`` (its header comment, and each key with its value and comment), so a new key or
option appears on the site without a hand edit.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import inspect
import io
import re
import sys
import textwrap
import tokenize
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, as a package (import-linter installs it)
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent


@dataclasses.dataclass
class Key:
    name: str
    value: str
    comment: str


def field_comments(cls: type) -> dict[str, str]:
    """Each dataclass field's comment: the lines right above it, then the one beside it
    (a subclass's own comment wins over its base's)."""
    out = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            out.update(_own_field_comments(klass))
    return out


def _own_field_comments(cls: type) -> dict[str, str]:
    source = textwrap.dedent(inspect.getsource(cls))
    comments = {
        token.start[0]: token.string.lstrip("#").strip()
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    }
    lines = source.splitlines()
    out = {}
    for node in ast.parse(source).body[0].body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        row, above = node.lineno, []
        while row - 1 - len(above) in comments and lines[row - 2 - len(above)].lstrip().startswith(
            "#"
        ):
            above.insert(0, comments[row - 1 - len(above)])
        beside = [comments[node.end_lineno]] if node.end_lineno in comments else []
        out[node.target.id] = " ".join([*above, *beside])
    return out


def _default(item: dataclasses.Field) -> str:
    if item.default is not dataclasses.MISSING:
        value = item.default
    elif item.default_factory is not dataclasses.MISSING:
        value = item.default_factory()
    else:
        return "(required)"
    if value == "???":  # omegaconf.MISSING: the option file must set it
        return "(set by the option)"
    if isinstance(value, str):
        return f'"{value}"' if value == "" or " " in value else value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def schema_keys(cls: type) -> list[tuple[str, str, str, str]]:
    """(key, type, default, comment) for each field that is not a nested group."""
    comments = field_comments(cls)
    return [
        (item.name, str(item.type), _default(item), comments.get(item.name, ""))
        for item in dataclasses.fields(cls)
        if not str(item.type).endswith("Config") and "Config |" not in str(item.type)
    ]


def _split_comment(text: str) -> tuple[str, str]:
    """A YAML line's value and its comment (a # after a space, outside quotes)."""
    quote = None
    for at, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (at == 0 or text[at - 1] in " \t"):
            return text[:at].strip(), text[at + 1 :].strip()
    return text.strip(), ""


def yaml_option(path: Path) -> tuple[list[str], list[Key], list[Key]]:
    """A YAML option's header comment, its defaults list, and its keys (dotted when nested)."""
    header, defaults, keys = [], [], []
    stack: list[tuple[int, str]] = []
    in_header, in_defaults = True, False
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            if in_header and not stripped.startswith("# @package"):
                header.append(stripped.lstrip("#").strip())
            continue
        in_header = False
        indent = len(line) - len(line.lstrip())
        if in_defaults and stripped.startswith("- "):
            entry, comment = _split_comment(stripped[2:])
            defaults.append(Key(entry, "", comment))
            continue
        match = re.match(r"([\w.\-/]+):(.*)$", stripped)
        if not match:
            continue
        name, rest = match.groups()
        value, comment = _split_comment(rest)
        in_defaults = indent == 0 and name == "defaults"
        if in_defaults or name == "hydra" or (stack and stack[0][1] == "hydra" and indent):
            stack = [(indent, name)] if indent == 0 else stack
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        dotted = ".".join([*(key for _, key in stack), name])
        if value:
            keys.append(Key(dotted, value, comment))
        else:
            stack.append((indent, name))
            if comment:
                keys.append(Key(dotted, "", comment))
    return header, defaults, keys


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


def _option_section(title: str, path: Path, configs: Path) -> list[str]:
    header, defaults, keys = yaml_option(path)
    out = [f"### {title}", "", f"`{path.relative_to(configs.parent)}`", ""]
    command = [line for line in header if line.startswith("lowres ")]
    prose = [line for line in header if not line.startswith("lowres ")]
    if command:  # a synopsis ([optional] parts, prose in parentheses): not a shell block
        out += ["```text", *command, "```", ""]
    if prose:
        out += [" ".join(prose), ""]
    entries = [d for d in defaults if not d.name.endswith("_schema")]
    if entries:
        out += ["| defaults entry | comment |", "| --- | --- |"]
        out += [f"| {_code(_cell(d.name))} | {_cell(d.comment)} |" for d in entries]
        out.append("")
    if keys:
        out += ["| key | value | comment |", "| --- | --- | --- |"]
        out += [f"| `{k.name}` | {_code(_cell(k.value))} | {_cell(k.comment)} |" for k in keys]
        out.append("")
    return out


def config_reference(
    schemas: dict[str, type], top: dict[str, type], configs: Path, schema_file: str
) -> str:
    """Every config group: its schema's keys with type, default and comment, then each option.

    ``schemas`` maps a group (``trainer``) to its dataclass, ``top`` a top-level config
    (``train``) to the dataclass whose own scalar keys it sets (``checkpoint``, ...)."""
    out = [
        "# Config reference",
        "",
        "Generated from the schema dataclasses in "
        f"`{schema_file}` and the YAML files under `configs/` each time the site is built "
        "(`python scripts/docs_site.py config` prints it). Every key can be set on the command "
        "line as `group.key=value`; a key that is not listed here is refused with exit code 2.",
        "",
        "Groups: " + ", ".join(f"[`{group}`](#{group})" for group in schemas) + ".",
        "",
    ]
    for name, cls in top.items():
        out += [f"## `{name}.yaml`", ""]
        path = configs / f"{name}.yaml"
        if path.is_file():
            out += _option_section(f"`lowres {name}`", path, configs)[1:]
        own = schema_keys(cls)
        if own:
            out += [
                f"Top-level keys (`{cls.__name__}`):",
                "",
                "| key | type | default | what it sets |",
                "| --- | --- | --- | --- |",
            ]
            out += [f"| `{k}` | `{_cell(t)}` | `{_cell(d)}` | {_cell(c)} |" for k, t, d, c in own]
            out.append("")
    for group, cls in schemas.items():
        out += [
            f"## `{group}`",
            "",
            f"Schema: `{cls.__name__}`. Options: "
            + ", ".join(
                f"`{p.stem}`" for p in sorted((configs / group).glob("*.yaml")) if p.is_file()
            )
            + ".",
            "",
            "| key | type | default | what it sets |",
            "| --- | --- | --- | --- |",
        ]
        out += [
            f"| `{group}.{k}` | `{_cell(t)}` | `{_cell(d)}` | {_cell(c)} |"
            for k, t, d, c in schema_keys(cls)
        ]
        out.append("")
        for path in sorted((configs / group).glob("*.yaml")):
            out += _option_section(f"`{group}={path.stem}`", path, configs)
    # Groups without a schema of their own: presets that set keys of the groups above.
    for folder in sorted(p for p in configs.iterdir() if p.is_dir() and p.name not in schemas):
        options = sorted(folder.rglob("*.yaml"))
        if not options:
            continue
        out += [f"## `{folder.name}`", ""]
        for path in options:
            option = path.relative_to(folder).with_suffix("").as_posix()
            out += _option_section(f"`{folder.name}/{option}`", path, configs)
    return "\n".join(out).rstrip() + "\n"


def lowres_config_reference() -> str:
    from lowres import schema

    groups = {**schema.GROUP_SCHEMAS, "sweep": schema.SweepConfig}
    top = {"train": schema.RunConfig, "evaluate": schema.RunConfig, "sweep": schema.RunConfig}
    return config_reference(groups, top, schema.config_dir(), "lowres/schema.py")


def _help(argv: list[str]) -> str:
    from lowres.cli import main

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.suppress(SystemExit):
        main(argv)
    return buffer.getvalue().rstrip()


def command_reference() -> str:
    from lowres.cli import HYDRA_VERBS, OTHER_VERBS

    out = [
        "# Command reference",
        "",
        "Generated from `lowres --help` and each verb's own `--help` when the site is built. "
        "The guides show the commands at work: [commands, resuming and exit codes]"
        "(../guides/commands.md), [sweeps and reports](../guides/sweeps.md).",
        "",
        "## `lowres --help`",
        "",
        "```text",
        _help(["--help"]),
        "```",
        "",
    ]
    for verb, text in HYDRA_VERBS.items():
        out += [
            f"## `lowres {verb}`",
            "",
            f"{text}. A Hydra command: `group=option` and `key=value` overrides, "
            f"documented in the [config reference](config.md#{verb}yaml); Hydra's flags "
            "(`-m`, `--cfg job`, `--hydra-help`) work after the verb.",
            "",
        ]
    for verb in ("report", "score", "convert"):
        text = OTHER_VERBS.get(verb, "")
        out += [f"## `lowres {verb}`", "", f"{text}", "", "```text", _help([verb, "--help"])]
        out += ["```", ""]
    return "\n".join(out).rstrip() + "\n"


def layer_diagram(pyproject: Path) -> str:
    """The import-linter layers contract drawn as text: one box per layer, top to bottom."""
    config = tomllib.loads(pyproject.read_text())["tool"]["importlinter"]
    out = []
    for contract in config["contracts"]:
        if contract.get("type") != "layers":
            continue
        rows = ["   ".join(m.strip() for m in layer.split("|")) for layer in contract["layers"]]
        width = max(len(row) for row in rows) + 4
        out += [f"{contract['name']}  (lint-imports checks it)", ""]
        for at, row in enumerate(rows):
            pad = " " * ((width - len(row) - 4) // 2)
            edge = pad + "+" + "-" * (len(row) + 2) + "+"
            out += [edge, f"{pad}| {row} |", edge]
            if at < len(rows) - 1:
                note = "   may import every layer below, none above" if at == 0 else ""
                out += [" " * (width // 2) + "|" + note, " " * (width // 2) + "v"]
        out += ["", "Modules side by side in one box are independent: none imports another."]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("page", choices=["config", "commands", "layers"])
    page = parser.parse_args(argv).page
    if page == "config":
        print(lowres_config_reference(), end="")
    elif page == "commands":
        print(command_reference(), end="")
    else:
        print(layer_diagram(REPO / "pyproject.toml"), end="")


if __name__ == "__main__":
    main()
