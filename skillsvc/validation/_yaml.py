"""Reads SKILL.md front matter as its authors wrote it: strings, lists and maps, nothing else.

YAML 1.1's implicit typing turns ``description: yes`` into ``True``, ``version: 1.10``
into ``1.1`` and ``name: 2048`` into an int; an author who wrote those meant the text.
So, like the Agent Skills reference validator's strict parser (``strictyaml``), every
scalar here is the string written. The document is built straight from libyaml's event
stream (one pass, no composer, no constructor), which also makes the other rules cheap
to apply where the parser stands, with the line to name:

* a key given twice in one mapping is refused (a last-wins reader and a first-wins
  reader would otherwise see different manifests);
* aliases are refused, so nothing can expand (no "billion laughs");
* explicit tags other than ``!!str`` / ``!`` are refused (they ask for a type we do not
  give);
* NUL and other control characters (tab and newline aside) and lone surrogates are
  refused in keys and values: they break logs and terminals, and PostgreSQL's jsonb
  refuses ``\\u0000``, so letting one through would fail the install after validation;
* nesting deeper than :data:`MAX_DEPTH` is refused while streaming (libyaml's scanner
  slows down quadratically on deep flow nesting);
* a second YAML document is refused.

Flow collections (``[Bash, Read]``, ``{author: x}``) are accepted, unlike strictyaml:
they are ordinary YAML that public skills use.
"""

from __future__ import annotations

import re
from typing import Final

import yaml

try:
    from yaml import CBaseLoader as _EventSource
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import BaseLoader as _EventSource  # type: ignore[assignment]

MAX_DEPTH: Final = 32
# Cc (C0, DEL, C1) except tab and newline, and lone surrogates (from "\ud800" escapes in
# JSON; libyaml refuses them itself).
_CONTROL: Final = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_STRING_TAGS: Final = frozenset({"!", "tag:yaml.org,2002:str"})


class FrontMatterError(Exception):
    """The front matter cannot be read; the message says what and where."""


def control_character(text: str) -> str | None:
    """A description (``U+0000``) of the first forbidden control character in ``text``."""
    found = _CONTROL.search(text)
    return None if found is None else f"U+{ord(found.group()):04X}"


Document = str | list["Document"] | dict[str, "Document"]


class _Mapping:
    __slots__ = ("items", "key", "key_line", "lines")

    def __init__(self) -> None:
        self.items: dict[str, Document] = {}
        self.lines: dict[str, int] = {}
        self.key: str | None = None
        self.key_line = 0


def load_front_matter(text: str, *, first_line: int) -> Document | None:
    """The front matter's document (None when there is none), or FrontMatterError.

    ``first_line`` is the file line number of the text's first line, for messages.
    """
    source = _EventSource(text)
    try:
        return _build(source, first_line)
    except yaml.MarkedYAMLError as exc:
        where = ""
        if exc.problem_mark is not None:
            mark = exc.problem_mark
            where = f" at line {mark.line + first_line}, column {mark.column + 1}"
        raise FrontMatterError(f"invalid YAML{where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise FrontMatterError(f"invalid YAML: {exc}") from None
    finally:
        source.dispose()


def _build(source: _EventSource, first_line: int) -> Document | None:
    stack: list[_Mapping | list[Document]] = []
    result: Document | None = None
    documents = 0
    while source.check_event():
        event = source.get_event()
        mark = getattr(event, "start_mark", None)
        line = mark.line + first_line if mark is not None else first_line
        if isinstance(event, yaml.DocumentStartEvent):
            documents += 1
            if documents > 1:
                raise FrontMatterError(f"a second YAML document starts at line {line}")
            continue
        if isinstance(event, yaml.AliasEvent):
            raise FrontMatterError(f"YAML aliases are not supported (*{event.anchor}, line {line})")
        node: Document | None = None
        if isinstance(event, yaml.ScalarEvent):
            _check_tag(event.tag, line)
            value: str = event.value
            top = stack[-1] if stack else None
            if isinstance(top, _Mapping) and top.key is None:
                what = f"key {_quote(value)}"
            elif isinstance(top, _Mapping):
                what = f"the value of {_quote(top.key or '')}"
            else:
                what = "a value"
            bad = control_character(value)
            if bad is not None:
                raise FrontMatterError(f"control character {bad} in {what} (line {line})")
            node = value
        elif isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            _check_tag(event.tag, line, container=True)
            if len(stack) >= MAX_DEPTH:
                raise FrontMatterError(f"front matter nests deeper than {MAX_DEPTH} levels")
            top = stack[-1] if stack else None
            if isinstance(top, _Mapping) and top.key is None:
                raise FrontMatterError(f"a mapping key at line {line} is not a plain string")
            stack.append(_Mapping() if isinstance(event, yaml.MappingStartEvent) else [])
            continue
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            done = stack.pop()
            node = done.items if isinstance(done, _Mapping) else done
        else:
            continue  # stream start/end, document end
        if not stack:
            result = node
            continue
        top = stack[-1]
        if isinstance(top, list):
            top.append(node)
        elif top.key is None:
            assert isinstance(node, str)  # containers as keys are refused above
            if node in top.items:
                raise FrontMatterError(
                    f"key {_quote(node)} is given twice (lines {top.lines[node]} and {line})"
                )
            top.key, top.key_line = node, line
        else:
            top.items[top.key] = node
            top.lines[top.key] = top.key_line
            top.key = None
    return result


def _check_tag(tag: str | None, line: int, *, container: bool = False) -> None:
    if tag is None or (not container and tag in _STRING_TAGS):
        return
    raise FrontMatterError(
        f"explicit YAML tag {_quote(tag)} at line {line} is not supported;"
        " every value is read as the text written"
    )


def _quote(text: str) -> str:
    shown = text if len(text) <= 60 else text[:60] + "..."
    return repr(shown)
