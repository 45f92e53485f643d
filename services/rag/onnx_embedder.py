"""The sentence embedder run in ONNX Runtime: queries and ingestion, with no torch once the export exists.

The first warm_up exports the sentence-transformers model (transformer, mean pooling and L2 normalisation,
all inside one ONNX graph) to `cache_dir/<name>-<fingerprint>/`, where the fingerprint hashes every file of
the model folder plus the export recipe; later warm_ups (any process) only load that folder. The export is
a cached build (services/core/artifact_cache.py): written beside its final place and moved in whole, so a
crash leaves no half export.
A damaged export (missing files, checksum mismatch, a graph that does not load) is refused with ConfigError
rather than silently re-exported, so a bad disk shows up instead of being papered over.

Vectors agree with SentenceTransformerEmbedder's to about 1e-6 (same weights, same tokenizer, float32), so
`model_id` is the model name itself: indexes built by either embedder serve queries from the other.
Tokenization is the `tokenizers` fast tokenizer from the model folder with truncation to max_seq_length
and padding per batch to its longest text; batches are formed from texts sorted by length, so short texts
are not padded to the length of a long one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from services.core.artifact_cache import DamagedArtifact, cached_build, file_sha256, quarantine
from services.core.encoding import pad_encodings
from services.core.errors import ConfigError, NotReady
from services.core.onnx_export import ONNX_INPUTS, export_encoder
from services.core.packaged import PACKAGED_MINILM, resolve_encoder

logger = logging.getLogger(__name__)

# Bump when the exported graph changes (inputs, pooling, opset): old cache folders are then ignored.
EXPORT_RECIPE = "st-mean-l2norm-opset17-v1"
ONNX_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
MANIFEST_FILE = "export.json"
OUTPUT_NAME = "sentence_embedding"
_OPSET = 17

IntArray = npt.NDArray[np.int64]


def folder_fingerprint(folder: Path) -> str:
    """sha256 over the relative path and the bytes of every file in the model folder, plus the recipe."""
    digest = hashlib.sha256(EXPORT_RECIPE.encode())
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue  # .gitattributes, .cache: not part of the model
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(b"\0")
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()


class OnnxEmbedder:
    """Implements core.protocols.Embedder, plus `token_spans` and `max_seq_length` for the chunker."""

    def __init__(
        self,
        model: str = PACKAGED_MINILM,
        *,
        cache_dir: Path,
        threads: int = 1,
        max_seq_length: int = 256,
        batch_size: int = 64,
    ) -> None:
        if not model:
            raise ValueError("model must be a packaged alias, a folder or a hub id, got an empty string")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if max_seq_length < 8:
            raise ValueError(f"max_seq_length must be >= 8, got {max_seq_length}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        self._model_name = model
        self._cache_dir = Path(cache_dir)
        self._threads = threads
        self._max_seq_length = max_seq_length
        self._batch_size = batch_size
        self._lock = threading.Lock()
        self._session: Any = None
        self._session_inputs: tuple[str, ...] = ()
        self._tokenizer: Any = None  # truncates to max_seq_length: what the model sees
        self._counting_tokenizer: Any = None  # no truncation: counts and spans of whole texts
        self._dimensions = 0
        self._export_dir: Path | None = None
        self.exported = False  # True when this instance's warm_up had to export (tests, logs)

    # -- Embedder ----------------------------------------------------------------------------------

    @property
    def model_id(self) -> str:
        return self._model_name

    @property
    def dimensions(self) -> int:
        self._require_loaded()
        return self._dimensions

    @property
    def max_seq_length(self) -> int:
        return self._max_seq_length

    @property
    def export_dir(self) -> Path:
        """The cache folder this embedder runs from (after warm_up)."""
        self._require_loaded()
        assert self._export_dir is not None
        return self._export_dir

    def warm_up(self) -> None:
        with self._lock:
            if self._session is not None:
                return
            model_dir = _local_model_dir(self._model_name)
            fingerprint = folder_fingerprint(model_dir)
            export_name = f"{_safe_name(Path(self._model_name).name)}-{fingerprint[:16]}"
            export_dir = self._cache_dir / export_name
            if not export_dir.exists():
                export_dir = self._export_somewhere_writable(model_dir, export_name, fingerprint)
            try:
                manifest = _verified_manifest(export_dir, fingerprint)
            except DamagedArtifact as exc:
                # Kept for inspection, exported again (artifact_cache's policy for damaged caches).
                aside = quarantine(export_dir)
                logger.warning(
                    "%s; moved it to %s and exporting again", exc.message, aside or "(already moved)"
                )
                export_dir = self._export_somewhere_writable(model_dir, export_name, fingerprint)
                manifest = _verified_manifest(export_dir, fingerprint)
            limit = int(manifest["max_position_embeddings"])
            if self._max_seq_length > limit:
                raise ConfigError(
                    f"max_seq_length {self._max_seq_length} exceeds the model's {limit} positions "
                    f"({self._model_name!r})"
                )
            self._dimensions = int(manifest["dimensions"])
            self._tokenizer, self._counting_tokenizer = self._load_tokenizers(export_dir)
            self._session = self._load_session(export_dir / ONNX_FILE)
            self._export_dir = export_dir
        # One call allocates ORT's arena, so the first user query is not the slow one.
        self.embed_query("warm up")
        logger.info(
            "onnx embedder %s ready from %s: %d dimensions, max_seq_length %d, %d thread(s)",
            self._model_name,
            export_dir,
            self._dimensions,
            self._max_seq_length,
            self._threads,
        )

    def _export_somewhere_writable(self, model_dir: Path, export_name: str, fingerprint: str) -> Path:
        """Export into cache_dir, or into the temp folder when cache_dir is read-only.

        A container whose index volume's parent is not writable (a non-root user under a root-owned mount)
        still serves, paying the export at each start: a warning names the folder to make writable.
        """
        export_dir = self._cache_dir / export_name
        try:
            _export_atomically(model_dir, export_dir, fingerprint)
        except PermissionError as exc:
            fallback = Path(tempfile.gettempdir()) / "hybridllm-embedder-cache" / export_name
            logger.warning(
                "embedder cache %s is not writable (%s): exporting to %s instead; make %s writable "
                "(or export there once at build time) so restarts skip the export",
                self._cache_dir,
                exc,
                fallback,
                self._cache_dir,
            )
            export_dir = fallback
            if not fallback.exists():
                try:
                    _export_atomically(model_dir, fallback, fingerprint)
                except OSError as fallback_exc:
                    raise ConfigError(
                        f"cannot write the embedder export to {fallback}: {fallback_exc}"
                    ) from fallback_exc
                self.exported = True
            return export_dir
        except OSError as exc:
            raise ConfigError(f"cannot write the embedder export to {export_dir}: {exc}") from exc
        self.exported = True
        return export_dir

    def count_tokens(self, text: str) -> int:
        self._require_loaded()
        return len(self._counting_tokenizer.encode(text, add_special_tokens=False).ids)

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """Character offsets of each token (no special tokens), for chunking in model tokens."""
        self._require_loaded()
        encoding = self._counting_tokenizer.encode(text, add_special_tokens=False)
        return [(int(start), int(end)) for start, end in encoding.offsets]

    def embed_documents(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self._require_loaded()
        if not texts:
            return np.zeros((0, self._dimensions), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(list(texts))
        # Longest first, like sentence-transformers: each batch pads only to its own longest text.
        order = sorted(range(len(encodings)), key=lambda i: -len(encodings[i].ids))
        vectors = np.empty((len(encodings), self._dimensions), dtype=np.float32)
        for start in range(0, len(order), self._batch_size):
            rows = order[start : start + self._batch_size]
            vectors[rows] = self._run([encodings[i] for i in rows])
        return vectors

    def embed_query(self, text: str) -> npt.NDArray[np.float32]:
        self._require_loaded()
        vector: npt.NDArray[np.float32] = self._run([self._tokenizer.encode(text)])[0]
        return vector

    # -- internals ---------------------------------------------------------------------------------

    def _require_loaded(self) -> None:
        if self._session is None:
            raise NotReady(f"embedder {self._model_name!r} is not loaded: call warm_up() first")

    def _run(self, encodings: Sequence[Any]) -> npt.NDArray[np.float32]:
        input_ids, attention_mask, token_type_ids = pad_encodings(encodings)
        feed = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        outputs = self._session.run([OUTPUT_NAME], {name: feed[name] for name in self._session_inputs})
        return np.ascontiguousarray(outputs[0], dtype=np.float32)

    def _load_tokenizers(self, export_dir: Path) -> tuple[Any, Any]:
        from tokenizers import Tokenizer

        path = export_dir / TOKENIZER_FILE
        try:
            truncating = Tokenizer.from_file(str(path))
            counting = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception on a corrupt file
            raise ConfigError(
                f"embedder tokenizer {path} is unreadable ({exc}); {_how_to_fix(export_dir)}"
            ) from exc
        # The file ships with fixed padding to 128 and truncation at 128: padding is done per batch in
        # _run, truncation follows max_seq_length as sentence-transformers does.
        for tokenizer in (truncating, counting):
            tokenizer.no_padding()
            tokenizer.no_truncation()
        truncating.enable_truncation(max_length=self._max_seq_length)
        return truncating, counting

    def _load_session(self, onnx_file: Path) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self._threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            session = ort.InferenceSession(
                str(onnx_file), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types for corrupt graphs
            raise ConfigError(
                f"embedder ONNX model {onnx_file} does not load ({exc}); {_how_to_fix(onnx_file.parent)}"
            ) from exc
        self._session_inputs = tuple(i.name for i in session.get_inputs())
        unknown = set(self._session_inputs) - set(ONNX_INPUTS)
        if unknown or OUTPUT_NAME not in {o.name for o in session.get_outputs()}:
            raise ConfigError(
                f"embedder ONNX model {onnx_file} has inputs {self._session_inputs}, expected a subset of "
                f"{ONNX_INPUTS} and output {OUTPUT_NAME!r}; {_how_to_fix(onnx_file.parent)}"
            )
        return session


def _how_to_fix(export_dir: Path) -> str:
    return f"delete {export_dir} and warm up again to re-export it"


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "model"


def _local_model_dir(model: str) -> Path:
    """The model's folder: the packaged one, a local path, or a hub id from the local HF cache."""
    path = Path(resolve_encoder(model))
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model))
    except Exception as exc:  # offline, unknown id, no access: all mean the same to the operator
        raise ConfigError(f"embedder {model!r} is neither a folder nor a downloadable hub id: {exc}") from exc


def _verified_manifest(export_dir: Path, fingerprint: str) -> dict[str, Any]:
    """The export's manifest, after checking it matches the model and the ONNX file's checksum."""
    manifest_path = export_dir / MANIFEST_FILE
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if not isinstance(manifest, dict):
            raise ValueError(f"expected an object, got {type(manifest).__name__}")
        expected = (manifest["fingerprint"], manifest["onnx_sha256"], manifest["tokenizer_sha256"])
        int(manifest["dimensions"])
        int(manifest["max_position_embeddings"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DamagedArtifact(
            f"embedder export {export_dir} has no valid {MANIFEST_FILE} ({exc}); {_how_to_fix(export_dir)}"
        ) from exc
    try:
        actual = (
            fingerprint,
            file_sha256(export_dir / ONNX_FILE),
            file_sha256(export_dir / TOKENIZER_FILE),
        )
    except OSError as exc:
        raise DamagedArtifact(
            f"embedder export {export_dir} is incomplete ({exc}); {_how_to_fix(export_dir)}"
        ) from exc
    names = ("model fingerprint", ONNX_FILE, TOKENIZER_FILE)
    for name, want, got in zip(names, expected, actual, strict=True):
        if want != got:
            raise DamagedArtifact(
                f"embedder export {export_dir}: {name} checksum {got[:12]} does not match the manifest's "
                f"{str(want)[:12]}; {_how_to_fix(export_dir)}"
            )
    return manifest


def _export_atomically(model_dir: Path, export_dir: Path, fingerprint: str) -> None:
    """Export into `export_dir` as a cached build; a concurrent exporter's finished copy is kept instead."""

    def build(staging: Path) -> None:
        manifest = _export(model_dir, staging)
        manifest["fingerprint"] = fingerprint
        manifest["model_dir"] = model_dir.name
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2), encoding="utf-8")

    cached_build(export_dir, build, recipe=EXPORT_RECIPE)


def _export(model_dir: Path, target: Path) -> dict[str, Any]:
    """Export transformer + mean pooling + L2 normalisation as one graph; copy the tokenizer beside it."""
    import torch
    from transformers import AutoModel

    tokenizer_source = model_dir / TOKENIZER_FILE
    if not tokenizer_source.is_file():
        raise ConfigError(f"embedder folder {model_dir} has no {TOKENIZER_FILE} (a fast tokenizer is needed)")
    transformer_dir = _check_sentence_transformer_layout(model_dir)
    transformer = AutoModel.from_pretrained(str(transformer_dir)).eval()

    def mean_pooled_and_normalized(output: Any, attention_mask: torch.Tensor) -> torch.Tensor:
        # The same arithmetic as sentence_transformers.models.Pooling (mean) and Normalize.
        hidden: torch.Tensor = output.last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        summed = (hidden * mask).sum(dim=1)
        counts = mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(summed / counts, p=2, dim=1)

    onnx_path = export_encoder(
        transformer, mean_pooled_and_normalized, target / ONNX_FILE, output_name=OUTPUT_NAME, opset=_OPSET
    )
    shutil.copyfile(tokenizer_source, target / TOKENIZER_FILE)
    config = transformer.config
    logger.info("exported embedder %s to %s (opset %d)", model_dir, target, _OPSET)
    return {
        "recipe": EXPORT_RECIPE,
        "opset": _OPSET,
        "dimensions": int(config.hidden_size),
        "max_position_embeddings": int(config.max_position_embeddings),
        "onnx_sha256": file_sha256(onnx_path),
        "tokenizer_sha256": file_sha256(target / TOKENIZER_FILE),
    }


def _check_sentence_transformer_layout(model_dir: Path) -> Path:
    """The transformer's folder, after checking the modules are transformer + mean pooling (+ normalize).

    Reads the sentence-transformers config files rather than the library's objects, whose API moves
    between major versions. A plain HF folder (no modules.json) gets mean pooling, as sentence-transformers
    gives it.
    """
    modules_file = model_dir / "modules.json"
    if not modules_file.is_file():
        return model_dir
    try:
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
        kinds = {str(m["type"]).rsplit(".", 1)[-1]: model_dir / str(m["path"]) for m in modules}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"embedder {model_dir}: unreadable modules.json ({exc})") from exc
    unsupported = set(kinds) - {"Transformer", "Pooling", "Normalize"}
    if unsupported or "Transformer" not in kinds or "Pooling" not in kinds:
        raise ConfigError(
            f"embedder {model_dir}: modules {sorted(kinds)} cannot be exported; "
            "only Transformer + Pooling (+ Normalize) are"
        )
    try:
        pooling = json.loads((kinds["Pooling"] / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"embedder {model_dir}: unreadable pooling config ({exc})") from exc
    modes = {k for k, v in pooling.items() if k.startswith("pooling_mode_") and v is True}
    if modes != {"pooling_mode_mean_tokens"}:
        raise ConfigError(f"embedder {model_dir}: pooling {sorted(modes)} unsupported, only mean tokens is")
    return kinds["Transformer"]
