"""Build the node artifact: one zipapp of mailha.node for the relays.

    python3 -m mailha.node.build [--output build/mailha-node.pyz]

The archive holds mailha/__init__.py, mailha/node/*.py and a __main__.py
that runs mailha.node.__main__.main(); `python3 mailha-node.pyz COMMAND`
runs a command. It is reproducible: the same sources give the same bytes
(sorted entries, fixed timestamps and permissions), so Ansible's copy of it
changes nothing, and restarts nothing, until the code changes. Written
beside the output and renamed over it.
"""

import argparse
import io
import os
import pathlib
import sys
import zipfile

from mailha.node import files

SHEBANG = b"#!/usr/bin/python3\n"
ENTRY = b"import sys\n\nfrom mailha.node.__main__ import main\n\nsys.exit(main())\n"
# zip's earliest date: no build time in the archive.
EPOCH = (1980, 1, 1, 0, 0, 0)
DEFAULT_OUTPUT = "build/mailha-node.pyz"


def package_root():
    """The directory that holds the mailha package."""
    return pathlib.Path(__file__).resolve().parents[2]


def sources(root=None):
    """(name in the archive, path) of every module of the artifact, sorted."""
    root = pathlib.Path(root) if root else package_root()
    entries = [("mailha/__init__.py", root / "mailha" / "__init__.py")]
    for path in sorted((root / "mailha" / "node").glob("*.py")):
        entries.append(("mailha/node/" + path.name, path))
    return entries


def archive_bytes(root=None):
    """The zipapp's bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        members = [("__main__.py", ENTRY)] + [(name, path.read_bytes()) for name, path in sources(root)]
        for name, data in sorted(members):
            info = zipfile.ZipInfo(name, date_time=EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return SHEBANG + buffer.getvalue()


def build(output=DEFAULT_OUTPUT, root=None):
    """Write the artifact to `output` (0755, replaced whole); returns its path."""
    output = os.fspath(output)
    files.replace_file(output, archive_bytes(root), mode=0o755)
    return output


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m mailha.node.build", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="where to write the zipapp (default: %(default)s)")
    options = parser.parse_args(argv)
    print(build(options.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
