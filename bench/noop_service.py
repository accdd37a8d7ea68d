"""A nameko service that does nothing: the RPC round trip with zero handler work.

Started by the benchmarks as its own ``nameko run`` process, beside the media service, so the
baseline pays the same broker hops and (de)serialisation as a real call.
"""

from __future__ import annotations

from typing import Any

from nameko.rpc import rpc


class NoopService:
    name = "bench_noop"
    remembered: Any = None

    @rpc
    def ping(self) -> None:
        """Zero work: what any round trip costs."""
        return None

    @rpc
    def remember(self, payload: Any) -> None:
        """Keep ``payload`` so ``recall`` can answer with it."""
        NoopService.remembered = payload

    @rpc
    def recall(self) -> Any:
        """Zero work, but a reply as big as the remembered one: the transport cost of a page."""
        return NoopService.remembered

    @rpc
    def sink(self, payload: Any) -> None:
        """Accept and drop an argument: what carrying that many bytes over RPC costs."""
        return None
