"""Drive an `og.Generator`'s compute calls through onnxruntime-genai's C API, with the GIL released.

The Python binding of onnxruntime-genai holds the GIL for the whole of `append_tokens` (the prefill) and
`generate_next_token` (a decode step). The generator runs in a worker thread, so while it computes the
event loop cannot run at all: no other request is parsed, routed or retrieved for, a health probe or a
metrics scrape waits a whole prefill, and each token reaches the client only after the next step ends.
ctypes releases the GIL around every foreign call, so the same calls made on the same C object leave the
loop free.

The C object (`OgaGenerator*`) is reached through the binding's instance layout: a pybind11 instance
holds a pointer to the bound wrapper, whose first member owns the `OgaGenerator*`. That layout was checked
for the versions in `CHECKED_VERSIONS` (pyproject pins one of them); with any other version, or with
`generator.release_gil` off, the binding's own methods are used and the GIL stays held. `og.Engine`
(`batch_scheduler: engine`) is not covered: its event-buffer C API was not checked, so its steps hold it.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np

logger = logging.getLogger(__name__)

# onnxruntime-genai versions whose Python binding layout `_generator_handle` was checked against.
CHECKED_VERSIONS = ("0.18.0",)
_PYOBJECT_HEAD = ctypes.sizeof(ctypes.c_ssize_t) + ctypes.sizeof(ctypes.c_void_p)


class GeneratorCalls(Protocol):
    """The compute calls of one og.Generator; the rest of its API is used through the binding."""

    def append_tokens(self, tokens: np.ndarray[Any, Any] | list[int]) -> None: ...

    def generate_next_token(self) -> None: ...


class _NativeGenerator:
    """`append_tokens` and `generate_next_token` of one og.Generator, through the C API without the GIL."""

    def __init__(self, library: ctypes.CDLL, generator: Any, handle: int, lock: threading.Lock) -> None:
        self._lib = library
        self._generator = generator  # owns the C object: keep it alive while the handle is used
        self._handle = ctypes.c_void_p(handle)
        self._lock = lock

    def append_tokens(self, tokens: np.ndarray[Any, Any] | list[int]) -> None:
        ids = np.ascontiguousarray(tokens, dtype=np.int32).reshape(-1)
        pointer = ids.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
        with self._lock:
            _check(self._lib, self._lib.OgaGenerator_AppendTokens(self._handle, pointer, ids.size))

    def generate_next_token(self) -> None:
        with self._lock:
            _check(self._lib, self._lib.OgaGenerator_GenerateNextToken(self._handle))


def compute_calls(generator: Any, *, release_gil: bool, lock: threading.Lock) -> GeneratorCalls:
    """The calls to drive `generator` with: through the C API where possible, else the binding itself.

    `lock` is one per model: its generators' compute calls run one at a time, as they did under the GIL
    (the C API does not promise more, and two at once would only share the same cores), while the event
    loop and the rest of the process run beside them.
    """
    binding = _binding() if release_gil else None
    if binding is None or type(generator) is not binding.generator_type:
        return generator  # type: ignore[no-any-return]
    library = binding.library
    handle = _generator_handle(generator)
    if library.OgaGenerator_TokenCount(ctypes.c_void_p(handle)) != generator.token_count():
        raise RuntimeError("og.Generator's native object does not match it: binding layout changed")
    return _NativeGenerator(library, generator, handle, lock)


def native_calls_available() -> bool:
    """Whether this onnxruntime-genai's layout was checked, so `compute_calls` can release the GIL."""
    return _binding() is not None


@dataclass(frozen=True)
class _Binding:
    library: ctypes.CDLL
    generator_type: type[Any]  # only this exact class has the checked layout (not a subclass, not a stand-in)


def _binding() -> _Binding | None:
    import onnxruntime_genai as og

    # A stand-in module (unit tests replace the package) has no library to call.
    return _binding_of(og) if isinstance(og, ModuleType) else None


@cache
def _binding_of(og: ModuleType) -> _Binding | None:
    version = getattr(og, "__version__", "unknown")
    if version not in CHECKED_VERSIONS:
        logger.warning(
            "onnxruntime-genai %s: its binding layout is not one checked (%s); generation holds the GIL",
            version,
            ", ".join(CHECKED_VERSIONS),
        )
        return None
    # The library the binding itself loaded (same file, so the same handle and global state).
    library = ctypes.CDLL(str(Path(str(og.__file__)).parent / "libonnxruntime-genai.so"))
    library.OgaGenerator_AppendTokens.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_int32),
        ctypes.c_size_t,
    ]
    library.OgaGenerator_AppendTokens.restype = ctypes.c_void_p
    library.OgaGenerator_GenerateNextToken.argtypes = [ctypes.c_void_p]
    library.OgaGenerator_GenerateNextToken.restype = ctypes.c_void_p
    library.OgaGenerator_TokenCount.argtypes = [ctypes.c_void_p]
    library.OgaGenerator_TokenCount.restype = ctypes.c_size_t
    library.OgaResultGetError.argtypes = [ctypes.c_void_p]
    library.OgaResultGetError.restype = ctypes.c_char_p
    library.OgaDestroyResult.argtypes = [ctypes.c_void_p]
    library.OgaDestroyResult.restype = None
    return _Binding(library, og.Generator)


def _generator_handle(generator: Any) -> int:
    """The `OgaGenerator*` inside a binding `og.Generator`: instance -> wrapper -> its first member."""
    wrapper = ctypes.c_void_p.from_address(id(generator) + _PYOBJECT_HEAD).value
    if not wrapper:
        raise RuntimeError("og.Generator holds no native object")
    handle = ctypes.c_void_p.from_address(wrapper).value
    if not handle:
        raise RuntimeError("og.Generator holds no native object")
    return handle


def _check(library: ctypes.CDLL, result: int | None) -> None:
    """Raise the C API's error (an `OgaResult*`; null means success), freeing it."""
    if not result:
        return
    try:
        message = library.OgaResultGetError(result)
        raise RuntimeError(message.decode("utf-8", "replace") if message else "onnxruntime-genai error")
    finally:
        library.OgaDestroyResult(result)


__all__ = ["CHECKED_VERSIONS", "GeneratorCalls", "compute_calls", "native_calls_available"]
