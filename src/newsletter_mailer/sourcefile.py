"""Read YAML and TOML files keeping line numbers, and turn pydantic errors into one clean line.

Errors name the file, the line and the field, so a user can go straight to the typo.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from newsletter_mailer.errors import NewsletterError, unreadable


class _Loader(yaml.SafeLoader):
    """SafeLoader that leaves dates as strings, so an impossible date is a field error, not a crash."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

# libyaml parses ten times faster and gives the same nodes, marks and values. It recurses in C,
# so a deeply nested document could overflow the stack (a crash, not an error): it is used only
# when the characters that can open a nesting level are few, and any document it refuses is read
# again by the pure-Python _Loader, so errors keep that loader's messages.
_FAST_MAX_OPENERS = 3000
_NON_PRINTABLE = yaml.reader.Reader.NON_PRINTABLE
_STRICTER = re.compile(r"[|>][-+0-9]*#")  # `|#`: PyYAML refuses, libyaml reads (as tabs, inner BOMs)
if getattr(yaml, "__with_libyaml__", False):
    class _FastLoader(yaml.CSafeLoader):
        """libyaml's parser with _Loader's resolvers (dates stay strings)."""

    _FastLoader.yaml_implicit_resolvers = _Loader.yaml_implicit_resolvers
else:  # pragma: no cover - PyYAML built without libyaml
    _FastLoader = None


def _fast_parse(text: str, path: Path) -> tuple[Any, Any] | None:
    """(node, data) from libyaml, or None to let the pure-Python loader read (or refuse) it."""
    if (_FastLoader is None or sum(map(text.count, "[{-?:\n")) >= _FAST_MAX_OPENERS
            or "\t" in text or "\ufeff" in text or _NON_PRINTABLE.search(text) or _STRICTER.search(text)):
        return None
    loader = _FastLoader(text)
    try:
        node = loader.get_single_node()
        _limit_expansion(path, node)
        return node, (loader.construct_document(node) if node is not None else None)
    except NewsletterError:
        raise
    except Exception:  # noqa: BLE001 - reported below, with the pure-Python loader's words
        return None
    finally:
        loader.dispose()


def read_text(path: Path) -> str:
    """Read a UTF-8 file (BOM allowed), with a clear error when it is missing or not text."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise unreadable(path, exc) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise NewsletterError("is not UTF-8 text", path=path, line=line,
                              hint="save the file as UTF-8") from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise NewsletterError("contains a NUL byte", path=path, line=line,
                              hint="save the file as plain UTF-8 text") from None
    return text


class YamlDoc:
    """A parsed YAML document plus its node tree, to find the line of any field."""

    def __init__(self, path: Path, text: str):
        self.path = path
        fast = _fast_parse(text, path)
        if fast is not None:
            self.node, self.data = fast
            _reject_duplicate_keys(path, self.node)
            return
        try:
            loader = _Loader(text)  # the reader refuses control characters right here
        except yaml.reader.ReaderError as exc:
            line = text.count("\n", 0, exc.position) + 1 if isinstance(exc.position, int) else None
            raise NewsletterError(f"YAML syntax error: {str(exc).splitlines()[0]}", path=path, line=line,
                                  hint="remove the control character") from None
        try:
            node = loader.get_single_node()
            _limit_expansion(path, node)  # before constructing: merge keys (<<) copy while constructing
            self.data = loader.construct_document(node) if node is not None else None
        except yaml.YAMLError as exc:
            message, line, hint = _plain_yaml_error(text, exc)
            raise NewsletterError(message, path=path, line=line, hint=hint) from None
        except (ValueError, TypeError, RecursionError) as exc:
            raise NewsletterError(f"YAML could not be read: {exc}", path=path) from None
        finally:
            loader.dispose()
        self.node = node
        _reject_duplicate_keys(path, node)

    def line_of(self, loc: tuple[Any, ...], *, key: bool = False) -> int | None:
        node = self.node
        line = node.start_mark.line + 1 if node is not None else None
        for i, part in enumerate(loc):
            if isinstance(node, yaml.MappingNode):
                for k, v in node.value:
                    if k.value == part:
                        last = i == len(loc) - 1
                        node = k if (last and key) else v
                        line = node.start_mark.line + 1
                        break
                else:
                    return line
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                return line
        return line


def _reject_duplicate_keys(path: Path, node: Any) -> None:
    stack = [node]
    seen_nodes: set[int] = set()  # aliases share nodes: visit each once ("billion laughs" stays linear)
    while stack:
        n = stack.pop()
        if id(n) in seen_nodes:
            continue
        seen_nodes.add(id(n))
        if isinstance(n, yaml.MappingNode):
            seen: set[str] = set()
            for k, v in n.value:
                if isinstance(k, yaml.ScalarNode):
                    if k.value in seen:
                        raise NewsletterError(f"key '{k.value}' is given twice", path=path,
                                              line=k.start_mark.line + 1, hint="keep one of them")
                    seen.add(k.value)
                stack.append(v)
        elif isinstance(n, yaml.SequenceNode):
            stack.extend(n.value)


# Characters (plus one per node) of the document with every alias written out: a real issue is a few
# hundred kB; a few lines of nested aliases can stand for gigabytes, which validation would copy.
MAX_EXPANDED = 20_000_000


def _limit_expansion(path: Path, root: Any) -> None:
    """Refuse a document whose aliases expand past MAX_EXPANDED, or that contains itself.

    The loader shares aliased nodes, so parsing is cheap; validating and rendering would copy each
    use. Sizes are summed bottom-up once per distinct node: time and memory follow the file, not
    its expansion. In this depth-first walk, meeting a node still open means it contains itself.
    """
    size: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)] if root is not None else []
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            size[key] = 1 + sum(size[id(c)] for c in _children(node))
            open_nodes.discard(key)
            if size[key] > MAX_EXPANDED:
                raise NewsletterError(f"aliases (*name) expand this file to more than {MAX_EXPANDED:,} "
                                      "characters", path=path, line=node.start_mark.line + 1,
                                      hint="write the repeated parts out, or use fewer aliases")
        elif key in open_nodes:
            raise NewsletterError("an alias (*name) refers to the list or mapping it is in", path=path,
                                  line=node.start_mark.line + 1)
        elif key not in size:
            if isinstance(node, yaml.ScalarNode):
                size[key] = len(node.value) + 1
                continue
            open_nodes.add(key)
            stack.append((node, True))
            stack.extend((c, False) for c in _children(node))


def _children(node: Any) -> list[Any]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return node.value


def field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = str(part)
            out += ("." if out else "") + (name if len(name) <= 60 else name[:60] + "…")  # a pasted-in key
    return out


def _describe(err: dict[str, Any], schema: str) -> str:
    kind = err["type"]
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return f"is not a known key (check the spelling; see `{schema}`)"
    if kind.startswith(("date_from_datetime", "date_parsing", "datetime_from_date", "datetime_parsing")) \
            and isinstance(err.get("input"), str):
        return _not_a_date(err["input"])
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if kind in ("string_type", "int_type", "bool_type", "list_type", "dict_type", "model_type",
                "float_type", "date_type"):
        got = type(err.get("input")).__name__
        got = {"NoneType": "nothing", "dict": "a mapping", "list": "a list", "str": "text",
               "int": "a number", "float": "a number", "bool": "true/false"}.get(got, got)
        want = {"string_type": "text", "int_type": "a whole number", "bool_type": "true or false",
                "list_type": "a list", "dict_type": "a mapping", "model_type": "a mapping",
                "float_type": "a number", "date_type": "a date"}[kind]
        return f"should be {want}, not {got}"
    if kind == "too_short" and err.get("ctx", {}).get("min_length") == 1:
        return "must not be empty"
    return msg[0].lower() + msg[1:] if msg else kind


def _not_a_date(text: str) -> str:
    """An impossible or misshapen date in plain words, not pydantic's ("valid date or datetime, …")."""
    import datetime

    shown = text if len(text) <= 40 else text[:40] + "…"
    try:
        datetime.date.fromisoformat(text)
    except ValueError as exc:
        reason = str(exc)
        if reason.startswith("Invalid isoformat"):
            return f"'{shown}' is not a date: write it as YYYY-MM-DD, e.g. 2020-09-01"
        return f"{shown} is not a date: {reason}"
    return f"'{shown}' is not a date: write it as YYYY-MM-DD, e.g. 2020-09-01"


def validation_error(exc: ValidationError, path: Path, line_of,
                     schema: str = "newsletter schema") -> NewsletterError:
    """The first problem as one line (file:line: field: what is wrong), the others carried in .more.
    `schema` is the command that prints the file's format, for a misspelt key."""
    errors = exc.errors(include_url=False)
    # A misspelt key (`heding:`) also makes the real one "missing": name the typo, it is the cause.
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    ordered = [first] + [e for e in errors if e is not first]
    more = tuple(_problem(e, path, line_of, schema) for e in ordered[1:])
    return _problem(first, path, line_of, schema, more)


def _problem(err: dict[str, Any], path: Path, line_of, schema: str,
             more: tuple[NewsletterError, ...] = ()) -> NewsletterError:
    loc = tuple(err["loc"])
    line = line_of(loc, key=err["type"] == "extra_forbidden") if line_of else None
    return NewsletterError(_describe(err, schema), path=path, line=line, field=field_path(loc) or None, more=more)


def line_in_file(path: Path, loc: tuple[Any, ...]) -> int | None:
    """Only on an error path: the file parsed again to find a field's line (None if it cannot be)."""
    try:
        return YamlDoc(path, read_text(path)).line_of(loc)
    except NewsletterError:
        return None


def load_yaml_model(path: Path, model: type[BaseModel], context: dict | None = None):
    """Load a YAML file into a pydantic model, or raise one NewsletterError."""
    doc = YamlDoc(path, read_text(path))
    if not isinstance(doc.data, dict):
        raise NewsletterError("should be a mapping of keys (subject:, date:, sections: …)",
                              path=path, line=1)
    try:
        return model.model_validate(doc.data, context=context)
    except ValidationError as exc:
        raise validation_error(exc, path, doc.line_of) from None
    except RecursionError:
        raise NewsletterError("is nested too deeply", path=path) from None


def load_toml_model(path: Path, model: type[BaseModel], schema: str = "newsletter schema --settings"):
    """Load a TOML file into a pydantic model, or raise one NewsletterError; `schema` is the
    command that prints the file's format (the only TOML file is newsletter.toml)."""
    text = read_text(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+)", str(exc))
        raise NewsletterError(f"TOML syntax error: {str(exc).split(' (at')[0]}", path=path,
                              line=int(m.group(1)) if m else None) from None

    def line_of(loc: tuple[Any, ...], key: bool = False) -> int | None:
        # TOML has no node tree in the stdlib: find the last key of the path in the text.
        names = [p for p in loc if isinstance(p, str)]
        if not names:
            return None
        rx = re.compile(r"^\s*(?:\[+\s*)?[\"']?" + re.escape(names[-1]) + r"[\"']?\s*[=\]]", re.M)
        section_rx = re.compile(r"^\s*\[+\s*" + re.escape(".".join(names[:-1])) + r"\s*\]+", re.M) if len(names) > 1 else None
        start = 0
        if section_rx:
            m = section_rx.search(text)
            if m:
                start = m.end()
        m = rx.search(text, start)
        return text.count("\n", 0, m.start()) + 1 if m else None

    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, path, line_of, schema) from None


def _open_quote_line(text: str, upto: int) -> int | None:
    """The first line (1-based) up to `upto` whose value opens a quote it does not close."""
    for number, line in enumerate(text.splitlines()[:upto], 1):
        value = line.split(": ", 1)[1].lstrip() if ": " in line else line.strip().lstrip("- ")
        if value[:1] not in ('"', "'"):
            continue
        quote, i, closed = value[0], 1, False
        while i < len(value):
            if quote == '"' and value[i] == "\\":
                i += 2
                continue
            if value[i] == quote:
                if quote == "'" and value[i + 1:i + 2] == "'":  # '' is a quote inside '…'
                    i += 2
                    continue
                closed = True
                break
            i += 1
        if not closed:
            return number
    return None


def _plain_yaml_error(text: str, exc: Exception) -> tuple[str, int | None, str]:
    """A YAML parser error in plain words, on the line where the mistake is (an unclosed quote is
    only noticed lines later, by a parser that speaks of <block end> and scalars)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = mark.line + 1 if mark else None
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None) or ""
    opened = _open_quote_line(text, line or 0) if line else None
    if "quoted scalar" in context or (opened and "expected <block end>" in problem):
        return ("YAML syntax error: a quote opened on this line is never closed", opened or line,
                'end the value with the same quote on the same line, or write a longer text as `key: |` '
                "followed by indented lines")
    if "expected <block end>" in problem or "expected <block mapping end>" in problem:
        return ("YAML syntax error: this line does not fit the lines above it (text after a closing quote, "
                "or a wrong indentation)", line, "quote the whole value, and indent with spaces as the lines above")
    if "mapping values are not allowed" in problem:
        return ("YAML syntax error: a ': ' inside a value", line,
                'put the value in quotes, e.g. subject: "Hello: world"')
    if "found character '\\t'" in problem or "tab" in problem.lower():
        return "YAML syntax error: a tab used for indentation", line, "indent with spaces"
    cmark = getattr(exc, "context_mark", None)
    if context and cmark and mark and cmark.line != mark.line:
        problem += f", {context} that starts on line {cmark.line + 1}"
    return f"YAML syntax error: {problem}", line, "check indentation and quoting"

