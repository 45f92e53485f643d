"""The served OpenAPI document is the real contract.

Unit: every operation documents the statuses it answers with, errors as OpenAI's error object, the
stream as server-sent events of completion chunks, and no FastAPI validation 422. Integration: a client
generated from /openapi.json (datamodel-code-generator, pydantic models) parses real responses of a live
gateway: a completion, the chunks of a stream, the model list, a /v1/retrieve answer and an error body.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from services.core.settings import load_settings
from services.gateway.app import create_app
from tests.gateway.fault_upstream import FaultUpstreamServer, fault_upstream, gateway_in_front_of

ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorResponse"}
QUESTION = [{"role": "user", "content": "How many vacation days do I get?"}]


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("openapi")
    settings = load_settings(data_dir=str(tmp / "data"), rag={"index_dir": str(tmp / "none")})
    schema: dict[str, Any] = create_app(settings).openapi()
    return schema


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield f"{method.upper()} {path}", operation


@pytest.mark.unit
def test_no_operation_documents_fastapis_validation_error(document: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in json.dumps(document)
    # 422 only where the service sends it: an answer that cannot meet `response_format`.
    with_422 = [label for label, op in _operations(document) if "422" in op["responses"]]
    assert with_422 == ["POST /v1/chat/completions"]


@pytest.mark.unit
def test_errors_are_documented_as_the_openai_error_object(document: dict[str, Any]) -> None:
    chat = document["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert set(chat) == {"200", "400", "401", "404", "413", "422", "429", "502", "503", "504"}
    for label, operation in _operations(document):
        for status, response in operation["responses"].items():
            if int(status) >= 400 and label != "GET /readyz":
                assert response["content"]["application/json"]["schema"] == ERROR_SCHEMA, (label, status)
    error = document["components"]["schemas"]["ErrorDetail"]
    assert set(error["required"]) == {"message", "type", "param", "code"}


@pytest.mark.unit
def test_completion_is_json_and_a_stream_is_server_sent_chunks(document: dict[str, Any]) -> None:
    ok = document["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    assert ok["application/json"]["schema"] == {"$ref": "#/components/schemas/ChatCompletion"}
    event = ok["text/event-stream"]["schema"]
    refs = json.dumps(event)
    assert "#/components/schemas/ChatCompletionChunk" in refs and "[DONE]" in refs
    chunk = document["components"]["schemas"]["ChatCompletionChunk"]
    assert {"usage", "hybrid"} <= set(chunk["properties"])
    assert "HybridExtension" in document["components"]["schemas"]


@pytest.mark.unit
def test_typed_bodies_for_models_retrieve_and_admin(document: dict[str, Any]) -> None:
    paths = document["paths"]

    def ok_schema(path: str, method: str) -> Any:
        return paths[path][method]["responses"]["200"]["content"]["application/json"]["schema"]

    assert ok_schema("/v1/models", "get") == {"$ref": "#/components/schemas/ModelList"}
    assert ok_schema("/v1/retrieve", "post") == {"$ref": "#/components/schemas/RetrieveResponse"}
    assert ok_schema("/admin/adapters", "post") == {"$ref": "#/components/schemas/AdapterLoaded"}
    assert "/metrics" not in paths  # prometheus_client's exporter: text, not part of the JSON API


# The live half: real responses against a client generated from the served document.


@pytest.fixture(scope="module")
def upstream() -> Iterator[FaultUpstreamServer]:
    with fault_upstream() as server:
        yield server


@pytest.fixture(scope="module")
def base_url(handbook_index: Path, upstream: FaultUpstreamServer) -> Iterator[str]:
    with gateway_in_front_of(upstream, handbook_index) as url:
        yield url


@pytest.fixture(scope="module")
def client_models(base_url: str, tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    pytest.importorskip("datamodel_code_generator", reason="datamodel-code-generator is not installed")
    tmp = tmp_path_factory.mktemp("generated-client")
    (tmp / "openapi.json").write_text(httpx.get(base_url + "/openapi.json", timeout=10).text, "utf-8")
    command = [
        sys.executable, "-m", "datamodel_code_generator",
        "--input", str(tmp / "openapi.json"), "--input-file-type", "openapi",
        "--output", str(tmp / "client_models.py"), "--output-model-type", "pydantic_v2.BaseModel",
    ]  # fmt: skip
    generated = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert generated.returncode == 0, generated.stderr
    spec = importlib.util.spec_from_file_location("client_models", tmp / "client_models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves forward references through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.mark.integration
def test_generated_client_parses_a_completion(base_url: str, client_models: ModuleType) -> None:
    body = {"model": "rag", "messages": QUESTION, "max_tokens": 8}
    resp = httpx.post(base_url + "/v1/chat/completions", json=body, timeout=60)
    assert resp.status_code == 200, resp.text
    completion = client_models.ChatCompletion.model_validate(resp.json())
    assert completion.hybrid.pipeline == "rag"
    assert completion.hybrid.sources  # typed sources, as the rag pipeline reports them


@pytest.mark.integration
@pytest.mark.parametrize("include_usage", [False, True])
def test_generated_client_parses_every_stream_chunk(
    base_url: str, client_models: ModuleType, include_usage: bool
) -> None:
    body = {
        "model": "prompt", "messages": QUESTION, "max_tokens": 8, "stream": True,
        "stream_options": {"include_usage": include_usage},
    }  # fmt: skip
    with httpx.stream("POST", base_url + "/v1/chat/completions", json=body, timeout=60) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [client_models.ChatCompletionChunk.model_validate(json.loads(e)) for e in events[:-1]]
    assert chunks[-1].hybrid is not None
    assert (chunks[-1].usage is not None) == include_usage


@pytest.mark.integration
def test_generated_client_parses_models_retrieve_and_errors(base_url: str, client_models: ModuleType) -> None:
    models = client_models.ModelList.model_validate(httpx.get(base_url + "/v1/models", timeout=10).json())
    assert {card.id for card in models.data} >= {"prompt", "rag"}
    resp = httpx.post(base_url + "/v1/retrieve", json={"query": "vacation days", "top_k": 3}, timeout=60)
    assert resp.status_code == 200, resp.text
    retrieved = client_models.RetrieveResponse.model_validate(resp.json())
    assert [chunk.rank for chunk in retrieved.data] == [1, 2, 3]
    missing = httpx.post(
        base_url + "/v1/chat/completions", json={"model": "nope", "messages": QUESTION}, timeout=60
    )
    assert missing.status_code == 404
    assert client_models.ErrorResponse.model_validate(missing.json()).error.param == "model"


@pytest.mark.integration
def test_a_user_message_without_content_is_a_400_naming_the_field(base_url: str) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user"}]
    resp = httpx.post(base_url + "/v1/chat/completions", json={"model": "prompt", "messages": messages})
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["param"] == "messages[1].content"
    assert error["message"].startswith("messages[1].content")
