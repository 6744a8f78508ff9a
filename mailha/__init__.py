"""mailha: keep an email-marketing sending pair up when its mail server fails."""

__version__ = "0.1.0"
