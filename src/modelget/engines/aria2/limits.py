"""aria2's download geometry and the limits the engine holds it to (segments, connections per
host, when a big download gets more connections): shared by the scheduling, the connection
budget and the watchdog. A leaf: imports nothing."""

from __future__ import annotations

SMALL_FILE = 8 * 1024 * 1024
"""A file up to this size is one download on one connection, added at once with the others.
Splitting it costs more than it gains: aria2's first request of a download has no Range, and
the server sends on until aria2 closes it (on loopback a 6 MB file split in 1 MiB segments
was fetched 1.7 times over)."""
MIN_SPLIT = 1024 * 1024
"""``min-split-size``: aria2's smallest segment (and its piece length)."""
PER_HOST_MAX = 16
"""aria2c's hard limit on ``max-connection-per-server`` (per download and host name)."""
GROW_STEP = 4
"""A running download gets more connections only when at least this many more are free."""
GROW_BYTES_PER_CONNECTION = 2 * MIN_SPLIT
"""... and when it has at least this much left per connection (a change restarts it inside)."""


def _need(left: int) -> int:
    """Connections a download with ``left`` bytes to go can still use (aria2 cuts no segment
    below ``min-split-size``)."""
    return max(1, -(-left // MIN_SPLIT))
