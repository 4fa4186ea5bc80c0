"""Front matter: the YAML (`---`) or TOML (`+++`) block at the top of a post.

Jekyll writes YAML between two `---` lines, Hugo writes YAML or TOML (between two
`+++` lines). Reading gives the fields as a mapping and the file line of each
top-level key, so every later problem can name its line. Nothing here knows what
the fields mean (see blogs.py).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from typing import Any

import yaml

# The block between the two fence lines starts on the file's second line.
FIRST_LINE = 2

_TOML_ERROR_LINE = re.compile(r"\(at line (\d+), column \d+\)")
_TOML_KEY = re.compile(r"""^\s*(?:"([^"]+)"|'([^']+)'|([A-Za-z0-9_-]+))\s*=""")
_TOML_TABLE = re.compile(r"^\s*\[")


class FrontMatterError(Exception):
    """The file cannot be read as a post at all; `line` is its line when known."""

    def __init__(self, reason: str, line: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line


@dataclass(frozen=True)
class FrontMatter:
    """A post split in two: its fields (with the line of each key) and its body."""

    kind: str  # "yaml" or "toml"
    data: dict[str, Any]
    key_lines: dict[str, int]
    body: str


class _Loader(yaml.SafeLoader):
    """Safe YAML that leaves timestamps as text.

    PyYAML's own timestamp parsing raises a bare ValueError for "2026-13-01"; as text,
    a bad date becomes our problem to report with its line, like any other field.
    """


_Loader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

_FENCES = {"---": "yaml", "+++": "toml"}


def read_front_matter(text: str) -> FrontMatter:
    """Split `text` at its front matter and parse it; raise FrontMatterError."""
    lines = text.splitlines(keepends=True)
    fence = lines[0].strip() if lines else ""
    if fence not in _FENCES:
        raise FrontMatterError(
            "no front matter: the first line must be '---' (YAML) or '+++' (TOML)", line=1
        )
    for index, line in enumerate(lines[1:], start=1):
        if line.strip() == fence:
            block, body = "".join(lines[1:index]), "".join(lines[index + 1 :])
            break
    else:
        raise FrontMatterError(
            f"the front matter opened on line 1 is never closed by a '{fence}' line", line=1
        )
    kind = _FENCES[fence]
    data, key_lines = _load_toml(block) if kind == "toml" else _load_yaml(block)
    return FrontMatter(kind=kind, data=data, key_lines=key_lines, body=body)


def _load_yaml(block: str) -> tuple[dict[str, Any], dict[str, int]]:
    loader = _Loader(block)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else {}
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + FIRST_LINE if mark is not None else None
        raise FrontMatterError(f"YAML error: {exc.problem or exc.context}", line) from exc
    except (yaml.YAMLError, ValueError) as exc:
        raise FrontMatterError(f"YAML error: {exc}") from exc
    finally:
        loader.dispose()
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise FrontMatterError("the front matter must be 'key: value' lines", FIRST_LINE)
    key_lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, _value_node in node.value:
            key_lines[str(key_node.value)] = key_node.start_mark.line + FIRST_LINE
    return {str(key): value for key, value in data.items()}, key_lines


def _load_toml(block: str) -> tuple[dict[str, Any], dict[str, int]]:
    try:
        data = tomllib.loads(block)
    except tomllib.TOMLDecodeError as exc:
        found = _TOML_ERROR_LINE.search(str(exc))
        line = int(found.group(1)) + FIRST_LINE - 1 if found else None
        reason = _TOML_ERROR_LINE.sub("", str(exc)).strip()
        raise FrontMatterError(f"TOML error: {reason}", line) from exc
    return data, _toml_key_lines(block)


def _toml_key_lines(block: str) -> dict[str, int]:
    """The line of each top-level `key = …` (tomllib does not say where keys are)."""
    key_lines: dict[str, int] = {}
    for number, line in enumerate(block.splitlines(), start=FIRST_LINE):
        if _TOML_TABLE.match(line):
            break  # keys after a [table] header belong to that table
        found = _TOML_KEY.match(line)
        if found:
            key = next(group for group in found.groups() if group is not None)
            key_lines.setdefault(key, number)
    return key_lines
