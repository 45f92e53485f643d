"""ASGI entry point for multi-worker serving (`uvicorn services.gateway.asgi:app --workers N`).

Each worker builds its own app from the same settings; `HYBRIDLLM_CONFIG` names the YAML file.
"""

from __future__ import annotations

import os
from pathlib import Path

from services.core.settings import load_settings
from services.gateway.app import create_app
from services.gateway.logging_setup import configure_logging

_config = os.environ.get("HYBRIDLLM_CONFIG") or None
settings = load_settings(Path(_config) if _config else None)
configure_logging(settings.observability.log_level, json_lines=settings.observability.log_json)
app = create_app(settings)
