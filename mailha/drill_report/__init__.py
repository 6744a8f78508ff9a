"""What a drill measured, judged against its targets, as JSON, HTML and text.

Pure functions over the data a drill records (mailha.drill):

- attempts: every submission (`mailha.traffic.Attempt`, or a dict with the
  same fields): seq, message_id, target "host:port", started and finished
  (epoch seconds), code (None when no reply), reply, node (the relay that
  greeted, or None);
- delivered: message_id -> copies stored at the recipient side;
- dkim: message_id -> whether the stored copy carries a valid signature;
- holder_samples: (epoch, holder) where holder is a node name, None (nobody
  holds the floating IP) or "split" (both do);
- events: {"name", "at"} such as fault_injected, failure_detected,
  floating_ip_moved, first_accept_after_fault, balancer_switched, restored;
  any may be missing;
- slos: {"max_outage_seconds", "max_lost", "max_duplicated"} and optionally
  "max_unsigned" and "max_split_seconds".

One job a module: reconciliation.py compares what was acknowledged with
what arrived; outage_verdict.py measures the outage and judges the targets;
document.py builds the JSON-serialisable report (build_report), which holds
everything the page draws, so a report.json alone can be rendered again;
layout.py computes the page's tables and the chart's geometry, which
templates/ place; render.py writes the summary, the page and the files.
"""

from mailha.drill_report.document import NO_ANSWER, SCHEMA, SPLIT, UNKNOWN_NODE, build_report
from mailha.drill_report.outage_verdict import KNOWN_SLOS, outage, verdict
from mailha.drill_report.reconciliation import MAY_BE_SENT_TWICE, cut_in_flight, reconcile
from mailha.drill_report.render import render_html, render_summary, write_report

__all__ = [
    "KNOWN_SLOS",
    "MAY_BE_SENT_TWICE",
    "NO_ANSWER",
    "SCHEMA",
    "SPLIT",
    "UNKNOWN_NODE",
    "build_report",
    "cut_in_flight",
    "outage",
    "reconcile",
    "render_html",
    "render_summary",
    "verdict",
    "write_report",
]
