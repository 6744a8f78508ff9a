"""The switch lock: one switch (or drill) at a time across processes, re-entrant within one."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from mailha.audit import switch_lock
from mailha.errors import MailhaError

OTHER_PROCESS = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from mailha.audit import switch_lock
    from mailha.errors import MailhaError
    try:
        with switch_lock(Path(sys.argv[1])):
            print("taken")
    except MailhaError as exc:
        print(exc.message)
    """
)


def other_process_tries(directory) -> str:
    result = subprocess.run(
        [sys.executable, "-c", OTHER_PROCESS, str(directory)], capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def test_a_second_process_is_refused_while_the_lock_is_held(tmp_path):
    with switch_lock(tmp_path):
        answer = other_process_tries(tmp_path)
    assert answer.startswith("a switch is already running (pid ")
    assert other_process_tries(tmp_path) == "taken"


def test_the_holder_takes_it_again_and_keeps_it_until_the_outer_release(tmp_path):
    with switch_lock(tmp_path):
        with switch_lock(tmp_path):
            pass
        # The inner release must not have released the outer hold.
        assert other_process_tries(tmp_path).startswith("a switch is already running")
    assert other_process_tries(tmp_path) == "taken"


def test_a_failure_inside_releases_the_lock(tmp_path):
    with pytest.raises(MailhaError), switch_lock(tmp_path):
        raise MailhaError("boom")
    assert other_process_tries(tmp_path) == "taken"
