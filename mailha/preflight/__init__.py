"""`mailha preflight`: could the standby take over without the mail landing in spam?

report.py runs the checks and prints them; spf.py and dns_checks.py ask
DNS what receivers ask; tls.py reads the relays' certificates; facts.py
reads the relays, relays.py judges what it read.
"""

from mailha.preflight.report import CHECKS, Report, render_json, render_table, run

__all__ = ["CHECKS", "Report", "render_json", "render_table", "run"]
