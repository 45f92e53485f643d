"""A real uvicorn server for an ASGI app in a thread of this process (so this process's CPU counts it)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import httpx

from services.core.ports import free_port


@contextlib.contextmanager
def serve_in_thread(app: object, *, ready_path: str = "/readyz", timeout_s: float = 300.0) -> Iterator[str]:
    """Serve `app` on a free port of 127.0.0.1 until the block ends; yields its base URL once it is ready."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")  # type: ignore[arg-type]
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            if not thread.is_alive():
                raise RuntimeError("server thread exited during start-up")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base_url + ready_path, timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"server not ready after {timeout_s} s")
            time.sleep(0.2)
        yield base_url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
