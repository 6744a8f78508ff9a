"""Where the project's own files are: playbooks, roles, ansible.cfg.

The CLI runs playbooks that ship with mailha, whatever directory the
operator runs it from and wherever the inventory is. They are found, in
order, in:

1. MAILHA_PROJECT_DIR, when it is set (a checkout or an unpacked release
   kept apart from the Python package);
2. the checkout the package was installed from (pip install -e, or run
   from the source tree): the directory above the package.

The inventory's location says nothing about them: an operator's inventory
of real servers lives in their own repository, not in this one.
"""

from __future__ import annotations

import os
from pathlib import Path

from mailha.errors import BadInput

ENV_VAR = "MAILHA_PROJECT_DIR"
# A file every complete copy of the project has.
MARKER = Path("playbooks") / "site.yml"


def project_dir() -> Path:
    """The directory holding playbooks/, roles/ and ansible.cfg."""
    configured = os.environ.get(ENV_VAR)
    if configured:
        path = Path(configured).expanduser()
        if not (path / MARKER).is_file():
            raise BadInput(f"{ENV_VAR}={configured} has no {MARKER}; point it at a mailha checkout or unset it")
        return path.resolve()
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / MARKER).is_file():
        return checkout
    raise BadInput(
        f"cannot find mailha's playbooks next to the package ({checkout}); "
        f"install mailha from a checkout (pip install -e) or set {ENV_VAR} to one"
    )


def playbook(name: str) -> Path:
    """playbooks/<name> of the project."""
    return project_dir() / "playbooks" / name
