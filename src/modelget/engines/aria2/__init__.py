"""The aria2 engine: a private ``aria2c`` driven over JSON-RPC on 127.0.0.1.

The engine starts and owns one ``aria2c`` process. Its RPC secret is random and is written
only to a ``0600`` conf file in a private temporary directory (never on a command line, never
in a session file); the RPC port is bound to loopback only. ``aria2c`` dies with us
(``--stop-with-process``), and :meth:`Aria2Engine.close` (also run by a finalizer) shuts it
down, kills its process group if it lingers, and removes the private directory. A directory
left by a process killed before that (kill -9) records who owned it (:data:`PIDS_FILE`) and is
removed by the next engine's start once its owner and aria2c are gone
(:func:`remove_stale_dirs`).

A mirror that is bad costs seconds: a file's sources are resolved at once and the first good
answer starts the download; a mirror far behind another on a download loses its URIs there
after the hedge budget (:mod:`.watchdog`).

Credentials: a source's headers (``Authorization``) may only reach the source's own origin.
aria2c sends a download's ``header`` option to *every* URI of that download and on to any
host a server redirects it to (aria2 issue #1176; it has no option to stop following
redirects), so aria2c never gets a header. Every source URL is first resolved by hand
(:func:`resolve_final_url`) to the URL that serves the bytes: a hub's redirect to a signed
CDN URL needs no token, and that download goes to aria2c. A download that still needs its
token (the bytes come from the token's own origin) is fetched by the httpx engine, which
follows redirects by hand and sends the token to its own origin only, even when the server
starts redirecting after the check. Token-needing URIs are held back while other mirrors
can serve the file, and used only if those fail.

The package, bottom up (no module imports one above it): ``limits`` (aria2's segment and
connection geometry), ``process`` (the aria2c process, its private directory and pids file,
the RPC client, notifications, shutdown), ``proxy`` (the environment's proxies as aria2c
options for its private config file), ``files`` (aria2's control file, a destination made
safe to resume), ``hashing`` (digests from finished pieces), ``watchdog`` (pure: what to do
with a download's mirrors from their per-mirror stats), ``sources`` (resolving each source
URL, which URIs aria2c gets), ``state`` (one job's record), ``budget`` (the per-mirror
connection targets), ``run`` (the loop of one ``run()``), ``engine`` (:class:`Aria2Engine`).
"""

from __future__ import annotations

# The API (``__all__``), and with redundant aliases the private names the tests reach into,
# where they were before the package.
from modelget.engines.aria2.budget import _Budget as _Budget
from modelget.engines.aria2.engine import MAX_RESTARTS as MAX_RESTARTS
from modelget.engines.aria2.engine import Aria2Engine
from modelget.engines.aria2.files import _control_file_completed as _control_file_completed
from modelget.engines.aria2.process import _pid_namespace as _pid_namespace
from modelget.engines.aria2.process import aria2_version, remove_stale_dirs
from modelget.engines.aria2.run import _Run as _Run
from modelget.engines.aria2.sources import _Source as _Source
from modelget.engines.aria2.state import _Active as _Active
from modelget.engines.redirects import redact_url

__all__ = ["Aria2Engine", "aria2_version", "redact_url", "remove_stale_dirs"]
