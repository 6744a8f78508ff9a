"""The one exception type for every expected failure.

The CLI shows it as a single line ("Error: ...") and exits with its code, so an
operator never sees a traceback for a problem they can fix.
"""

import click

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
# 3: a drill breached a target (mailha drill); for mailha status, the state
# of the pair is unknown because its inventory cannot be read (as a
# monitoring plugin's UNKNOWN): 2 is a critical pair there, and a check must
# not page "critical" for a typo in its inventory path.
EXIT_STATUS_UNKNOWN = 3
# A failover or failback refused because a preflight check of its target
# failed; nothing was changed, and --skip-preflight would switch anyway.
EXIT_PREFLIGHT_REFUSED = 4


class MailhaError(click.ClickException):
    """An expected failure: says what is wrong and what to do."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class BadInput(MailhaError):
    """Input (inventory, contract, option) is malformed; nothing was changed."""

    exit_code = EXIT_BAD_INPUT
