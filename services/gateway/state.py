"""Objects built once at start-up and kept on `app.state`; routes reach them through one getter."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from services.core.errors import NotReady
from services.core.settings import Settings
from services.gateway.metrics import ServiceMetrics

if TYPE_CHECKING:
    from services.gateway.auth import KeyChecker
    from services.pipelines.factory import ServiceComponents


@dataclass
class GatewayState:
    settings: Settings
    metrics: ServiceMetrics
    auth: KeyChecker
    components: ServiceComponents | None = None
    startup_error: str | None = None
    started_at: float = field(default_factory=time.time)
    adapter_versions: dict[str, str] = field(default_factory=dict)
    # Set by the first stop signal (services.gateway.draining): /readyz 503, new API requests refused.
    draining: bool = False
    # HTTP requests being served by this process; the drain waits for it to reach zero.
    requests_in_flight: int = 0

    def require_components(self) -> ServiceComponents:
        if self.components is None:
            reason = self.startup_error or "models are still loading"
            raise NotReady(f"service not ready: {reason}")
        return self.components


async def get_state(request: Request) -> GatewayState:
    # async: FastAPI runs a plain `def` dependency in its thread pool, a thread hop on every request.
    state: GatewayState = request.app.state.gateway
    return state


StateDep = Annotated[GatewayState, Depends(get_state)]
