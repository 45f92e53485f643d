"""What every generator backend shares: its identity from settings and its bounded concurrency slots."""

from __future__ import annotations

from collections.abc import Sequence

from services.core.errors import InvalidRequest
from services.core.settings import GeneratorSettings
from services.core.types import Trust
from services.llm.slots import GenerationSlots


class ConfiguredBackend:
    def __init__(self, settings: GeneratorSettings) -> None:
        self._settings = settings
        self._slots = GenerationSlots(settings.max_concurrency, settings.max_queue)

    @property
    def name(self) -> str:
        """The configured backend name (bounded: a metric label)."""
        return self._settings.name

    @property
    def trust(self) -> Trust:
        return self._settings.trust

    @property
    def adapters(self) -> Sequence[str]:
        return tuple(self._settings.adapters)

    @property
    def slots(self) -> GenerationSlots:
        return self._slots

    def check_adapter(self, adapter: str | None) -> None:
        """An adapter name a request asks for must be one this backend was configured with."""
        if adapter is not None and adapter not in self._settings.adapters:
            raise InvalidRequest(
                f"unknown adapter {adapter!r}; known: {sorted(self._settings.adapters)}", param="model"
            )
