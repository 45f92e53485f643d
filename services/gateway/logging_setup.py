"""Structured JSON logs: one object per line, request fields under their own keys.

Prompts and answers are not logged unless `observability.log_prompts` is on, and then only after
redaction: every value the privacy detectors find becomes a placeholder (`[EMAIL_1]`), whatever the
policy lets a backend see, because log storage is wider than any backend's trust.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from services.core.privacy_settings import PrivacySettings


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            payload.update(fields)
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure_logging(level: str = "INFO", *, json_lines: bool = True) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter() if json_lines else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's access log duplicates our request line without the fields that matter.
    logging.getLogger("uvicorn.access").disabled = True


@functools.lru_cache(maxsize=4)
def _detector_for(privacy_json: str) -> Callable[[str], Any]:
    # One gate (compiled patterns, phone metadata) per distinct privacy configuration in this process;
    # imported here so configuring logs does not load the detectors.
    from services.privacy import PrivacyGate, PrivacySettings

    return PrivacyGate(PrivacySettings.model_validate_json(privacy_json)).detect


def redacted_exchange(
    privacy: PrivacySettings, messages: Sequence[tuple[str, str]], answer: str | None
) -> dict[str, Any]:
    """(role, text) messages and the answer with every detected value replaced by a placeholder.

    The same value gets the same placeholder throughout (one `Redactor` per request). A detection
    failure drops the text rather than log it raw."""
    from services.privacy.redaction import Redactor

    redactor = Redactor(_detector_for(privacy.model_dump_json()))

    def safe(text: str) -> str:
        try:
            return redactor.redact(text)
        except Exception:  # fail closed: a log line without the text beats a leaked value
            logging.getLogger(__name__).exception("redaction failed; text left out of the log")
            return "[REDACTION_FAILED]"

    logged = [{"role": role, "content": safe(text)} for role, text in messages]
    exchange: dict[str, Any] = {"messages": logged}
    if answer is not None:
        exchange["answer"] = safe(answer)
    return exchange
