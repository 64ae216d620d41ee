"""A local Hugging Face Hub + ModelScope simulator for tests, benchmarks and the offline demo.

:class:`HubSimulator` serves model repositories from directories over real HTTP on 127.0.0.1,
well enough that the real ``huggingface_hub`` and ``modelscope_hub`` clients download from it:

* Hugging Face: ``/api/models/{repo}[/revision/{rev}]``, ``/api/models/{repo}/tree/{rev}[/{path}]``,
  ``/api/models/{repo}/refs`` and ``HEAD``/``GET /{repo}/resolve/{rev}/{path}``. LFS files are
  served directly, or (``cdn=True``) through a 302 to a signed URL on a second listener, the
  "CDN", like the real Hub.
* ModelScope: ``/api/v1/models/{owner}/{name}[/repo/files|/repo|/revisions]`` with the usual
  JSON envelope; every other ``/api/v1/`` and ``/openapi/`` path answers a JSON 404.

Faults (:class:`~modelget.testing.faults.Fault`) can be switched on and off at run time, also
from another process through ``/_sim/faults``; every request is recorded (:class:`RequestRecord`,
``/_sim/log``). Range requests follow RFC 7233 for single ranges; plain file bodies go out with
``os.sendfile`` so multi-GB files stream at disk speed with flat memory.

One module per concern:

* ``simulator``: :class:`HubSimulator` (repositories, URLs, faults, ``tamper``, the log's queries);
* ``records``: :class:`RequestRecord` and the request log;
* ``server``: the listeners (threaded HTTP servers that track their connections), start and stop;
* ``handler``: the request handler, put together from the route mixins, and the dispatch;
* ``base``: what every route shares (responses, body faults and cuts, auth);
* ``files``: file bodies with Range / If-Range (:func:`parse_range`) and the CDN listener;
* ``hf``, ``modelscope``: the two hubs' routes; ``control``: the ``/_sim/`` API.
"""

from __future__ import annotations

from modelget.testing.faults import Fault
from modelget.testing.hubsim.files import parse_range
from modelget.testing.hubsim.records import RequestRecord
from modelget.testing.hubsim.simulator import HubSimulator, Tamper

__all__ = ["Fault", "HubSimulator", "RequestRecord", "Tamper", "parse_range"]
