"""Metrics for node_exporter's textfile collector, written by commands that run and exit.

`mailha drill` and `mailha preflight` run on the control host from a timer;
there is no process left for Prometheus to scrape, so each run leaves its
figures in a `*.prom` file that node_exporter (--collector.textfile.directory)
serves with its own metrics. This module renders the text exposition format
(one HELP and TYPE per family, label values escaped), reads a file it wrote
back (a run replaces only its own series and carries the others over), and
writes it by rename, so node_exporter never reads half a file.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mailha.errors import BadInput, MailhaError
from mailha.node.files import replace_file

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n"}
_UNESCAPES = {"\\": "\\", '"': '"', "n": "\n"}

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Labels
    value: float

    def label(self, name: str) -> str | None:
        return dict(self.labels).get(name)


def sample(name: str, value: float, **labels: str) -> Sample:
    """A sample with its labels sorted, so equal series compare equal."""
    for label in labels:
        if not _LABEL_NAME.fullmatch(label) or label.startswith("__"):
            raise ValueError(f"invalid label name {label!r}")
    return Sample(name, tuple(sorted((k, str(v)) for k, v in labels.items())), float(value))


@dataclass
class Family:
    """One metric: its name, help text, type, and every series of it."""

    name: str
    help: str
    type: str = "gauge"
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"invalid metric name {self.name!r}")

    def add(self, value: float, **labels: str) -> None:
        self.samples.append(sample(self.name, value, **labels))


def escape_label_value(value: str) -> str:
    """Backslash, double quote and line feed escaped, as the exposition format requires."""
    return "".join(_ESCAPES.get(c, c) for c in value)


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def _series(s: Sample) -> str:
    if not s.labels:
        return s.name
    return s.name + "{" + ",".join(f'{k}="{escape_label_value(v)}"' for k, v in s.labels) + "}"


def render(families: Iterable[Family]) -> str:
    """The exposition text: families by name, series sorted by labels.

    A family without samples is left out (its HELP alone would say nothing)."""
    lines = []
    for family in sorted(families, key=lambda f: f.name):
        if not family.samples:
            continue
        help_text = family.help.replace("\\", "\\\\").replace("\n", "\\n")
        lines += [f"# HELP {family.name} {help_text}", f"# TYPE {family.name} {family.type}"]
        lines += [f"{_series(s)} {format_value(s.value)}" for s in sorted(family.samples, key=lambda s: s.labels)]
    return "".join(line + "\n" for line in lines)


def parse(text: str) -> list[Sample]:
    """The samples of exposition text; comments and lines that do not parse
    are skipped (a hand-edited or truncated file loses those series only)."""
    samples = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            parsed = _parse_line(line)
            if parsed is not None:
                samples.append(parsed)
    return samples


def _parse_line(line: str) -> Sample | None:
    match = _NAME.match(line)
    if match is None:
        return None
    name, rest = match.group(), line[match.end() :]
    labels: list[tuple[str, str]] = []
    if rest.startswith("{"):
        position = 1
        while True:
            while position < len(rest) and rest[position] in " ,":
                position += 1
            if rest[position : position + 1] == "}":
                rest = rest[position + 1 :]
                break
            label = _LABEL_NAME.match(rest, position)
            if label is None or rest[label.end() : label.end() + 2] != '="':
                return None
            position, value = label.end() + 2, []
            while position < len(rest) and rest[position] != '"':
                if rest[position] == "\\" and position + 1 < len(rest):
                    position += 1
                    value.append(_UNESCAPES.get(rest[position], "\\" + rest[position]))
                else:
                    value.append(rest[position])
                position += 1
            if position >= len(rest):
                return None
            labels.append((label.group(), "".join(value)))
            position += 1
    fields = rest.split()
    if not fields:
        return None
    try:
        value = float(fields[0])
    except ValueError:
        return None
    return Sample(name, tuple(sorted(labels)), value)


def check_target(path: Path, option: str) -> None:
    """BadInput unless `path` can be written and will be read: its name ends in
    .prom, its directory exists (node_exporter reads one directory; creating
    another would only hide the typo) and is writable, and `path` itself is
    not a directory."""
    directory = path.parent
    remedy = f"point {option} into node_exporter's textfile directory"
    if path.suffix != ".prom":
        raise BadInput(f"metrics file {path}: node_exporter reads only files named *.prom; {remedy}")
    if not directory.is_dir():
        raise BadInput(f"metrics file {path}: the directory {directory} does not exist; {remedy}")
    if path.is_dir():
        raise BadInput(f"metrics file {path} is a directory; {remedy}")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise BadInput(f"metrics file {path}: the directory {directory} is not writable for this user; {remedy}")


def read(path: Path) -> list[Sample]:
    """The samples of a file written earlier; none when there is no file yet."""
    try:
        return parse(path.read_text(encoding="utf-8", errors="replace"))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise MailhaError(f"cannot read the metrics file {path}: {exc.strerror or exc}") from None


def write(path: Path, families: Iterable[Family]) -> None:
    """Replace `path` with the families, by rename within its directory."""
    if path.suffix != ".prom":
        raise MailhaError(f"metrics file {path}: node_exporter reads only files named *.prom")
    if not path.parent.is_dir():
        raise MailhaError(f"cannot write the metrics file {path}: the directory {path.parent} does not exist")
    try:
        replace_file(str(path), render(families), mode=0o644)
    except OSError as exc:
        raise MailhaError(f"cannot write the metrics file {path}: {exc.strerror or exc}") from None


def keep(previous: Iterable[Sample], families: Mapping[str, Family], unless: Mapping[str, str]) -> None:
    """Add to `families` the previous samples of the same names whose labels
    do not match every item of `unless` (another scenario's series)."""
    for s in previous:
        family = families.get(s.name)
        if family is not None and any(s.label(k) != v for k, v in unless.items()):
            family.samples.append(s)
