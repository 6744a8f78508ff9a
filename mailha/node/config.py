"""The key=value settings files the roles write under /etc/mailha.

One setting a line, "#" starts a comment line, blank lines are ignored. Every
key must be known (a typo is an error, not a silent default). A key listed
in `lists` may repeat; its value is the list of its lines, in order."""


class UsageError(Exception):
    """A bad option or configuration: the commands' usage exit code."""


def parse(lines, defaults, parsers=None, lists=(), source="<config>"):
    """`defaults` overlaid with `lines`; raises UsageError naming source:line."""
    parsers = parsers or {}
    settings = dict(defaults)
    seen_lists = set()
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key not in defaults:
            raise UsageError(f"{source}:{number:d}: unknown setting {line!r}")
        try:
            parsed = parsers.get(key, str)(value)
        except ValueError as err:
            raise UsageError(f"{source}:{number:d}: {key}: {err}") from err
        if key in lists:
            if key not in seen_lists:
                settings[key] = []
                seen_lists.add(key)
            settings[key].append(parsed)
        else:
            settings[key] = parsed
    return settings


def load(path, defaults, parsers=None, lists=()):
    """Defaults overlaid with the file at `path`; a missing file is fine."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.readlines()
    except FileNotFoundError:
        return dict(defaults)
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err}") from err
    return parse(lines, defaults, parsers, lists, source=path)


def parse_bool(text):
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def parse_positive_float(text):
    value = float(text)
    if value <= 0:
        raise ValueError("must be positive")
    return value


def parse_positive_int(text):
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value
