"""Helpers for tests, benchmarks and the offline demo.

* :class:`HubSimulator`: a local Hugging Face Hub + ModelScope server that the real clients
  download from, with switchable faults (:class:`Fault`) and a request log.
* ``python -m modelget.testing serve --repo ORG/NAME=DIR``: the same, in the foreground.
"""

from __future__ import annotations

from modelget.testing.faults import Fault
from modelget.testing.hubsim import HubSimulator, RequestRecord

__all__ = ["Fault", "HubSimulator", "RequestRecord"]
