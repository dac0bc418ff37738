"""Reading a stack file: YAML with line numbers, `${ENV}` expansion, and errors a user can act on."""
from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from orchestrator.stack import KIND_NAMES, SPEC_BY_KIND, CardSpec, GpuSpec, ServerSpec, Stack, VoiceSpec

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SECTIONS: dict[str, type[BaseModel]] = {"gpu": GpuSpec, "server": ServerSpec, "voice": VoiceSpec}


class StackError(ValueError):
    """A stack file that cannot be used; the message says where and what to do."""


def load_stack(path: str | Path) -> Stack:
    """Parse and validate a stack file, or raise StackError with every problem and its line."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise StackError(f"stack file {path} does not exist; pass the path of a YAML stack file, "
                         "e.g. configs/vtuber-24gb.yaml") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise StackError(f"stack file {path} cannot be read ({exc.__class__.__name__}: {exc})") from None
    return parse_stack(text, str(path))


def parse_stack(text: str, source: str = "<stack>") -> Stack:
    """Validate stack YAML text; `source` names it in messages."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        raise StackError(f"{source} is not valid YAML at {where}: {exc.problem or exc.context}. "
                         "Check the indentation and quoting there.") from None
    except yaml.YAMLError as exc:
        raise StackError(f"{source} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise StackError(f"{source} must be a YAML mapping with a `models:` list (and optional gpu or gpus, server, "
                         f"voice); it holds a {type(data).__name__}")
    data = _expand_env(data, root, (), source)
    try:
        return Stack.model_validate(data)
    except ValidationError as exc:
        problems = [p for _, p in sorted(_describe(err, data, root) for err in exc.errors())]
        raise StackError(f"{source} has {len(problems)} problem{'s' if len(problems) > 1 else ''}:\n"
                         + "\n".join(f"  - {p}" for p in problems)) from None


def _expand_env(value: Any, root: yaml.Node | None, loc: tuple, source: str) -> Any:
    """Replace `${VAR}` and `${VAR:-default}` in every string; an unset VAR without default is an error."""
    if isinstance(value, dict):
        return {k: _expand_env(v, root, loc + (k,), source) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, root, loc + (i,), source) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        line = _line(root, loc)
        raise StackError(f"{source}{f' line {line}' if line else ''}: environment variable {name} is not set "
                         f"(used in {_dotted(loc)}); export it, or write ${{{name}:-}} to allow it to be empty")

    return _ENV.sub(substitute, value)


def _describe(err: dict, data: dict, root: yaml.Node | None) -> tuple[int, str]:
    """One pydantic error as (line, `line N, where: what to do`)."""
    loc = tuple((err.get("ctx") or {}).get("where") or err["loc"])
    kind_tag = len(loc) > 2 and loc[0] == "models" and loc[2] in KIND_NAMES
    data_loc = loc[:2] + loc[3:] if kind_tag else loc
    where = _dotted(data_loc, data)
    line = _line(root, data_loc)
    return line or 0, _explain(err, loc, data_loc, f"line {line}, {where}" if line else where)


def _explain(err: dict, loc: tuple, data_loc: tuple, prefix: str) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        key = str(data_loc[-1])
        fields = _fields_for(loc)
        close = difflib.get_close_matches(key, fields, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}?" if close else f"valid keys here: {', '.join(fields)}"
        return f"{prefix}: unknown key {key!r}; {hint}"
    if kind == "union_tag_not_found":
        return f"{prefix}: missing `kind`; set it to one of {', '.join(KIND_NAMES)}"
    if kind == "union_tag_invalid":
        return f"{prefix}: kind {err['input'].get('kind')!r} is not one of {', '.join(KIND_NAMES)}"
    if kind == "missing":
        return f"{prefix}: required, but missing"
    message = err["msg"].removeprefix("Value error, ")
    if kind.startswith(("literal_error", "int_", "float_", "greater", "less", "string_", "bool_")):
        message = f"{message} (got {err.get('input')!r})"
    return f"{prefix}: {message}"


def _fields_for(loc: tuple) -> list[str]:
    """The valid keys of the mapping an error points into."""
    if len(loc) == 1:
        return list(Stack.model_fields)
    if loc[0] in _SECTIONS:
        return list(_SECTIONS[loc[0]].model_fields)
    if loc[0] == "gpus":
        return list(CardSpec.model_fields)
    if loc[0] == "models" and len(loc) > 2 and loc[2] in SPEC_BY_KIND:
        return list(SPEC_BY_KIND[loc[2]].model_fields)
    return []


def _dotted(loc: tuple, data: Any = None) -> str:
    """`models[0] (qwen3-8b).max_model_len`: the path a user reads, with the model's name where known."""
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
            if i == 1 and loc[0] == "models" and isinstance(data, dict):
                models = data.get("models")
                if isinstance(models, list) and part < len(models) and isinstance(models[part], dict):
                    name = models[part].get("name")
                    out += f" ({name})" if name else ""
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _line(node: yaml.Node | None, loc: tuple) -> int | None:
    """1-based line of the YAML node at `loc`, or of its nearest existing parent."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            child = next(((k, v) for k, v in node.value if k.value == str(part)), None)
            if child is None:
                break
            line = child[0].start_mark.line + 1
            node = child[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line
