"""LoRA adapters for the ONNX Runtime GenAI backend: a LoRA-ready base model and `.onnx_adapter` files.

How it fits together (ONNX Runtime's multi-LoRA design):
- The base model is built by the GenAI builder with one peft adapter as a *template* (its target modules).
  The builder adds a `lora_A`/`lora_B` MatMul pair beside every targeted projection; we keep those out of
  int4/int8 quantization and turn their weights into overridable graph inputs whose defaults are zero, so
  the model answers exactly like the base model until an adapter is activated.
- Each adapter is an `.onnx_adapter` file holding those weights under the same names: A transposed, B
  transposed and pre-multiplied by peft's scaling, as the builder lays them out. `og.Adapters.load` reads
  it and `Generator.set_active_adapter` feeds it to one request; other requests are unaffected.
Every adapter served by one model must target the same modules as the template (ranks may differ).
model_prep builds the LoRA-ready base with the helpers here; this module needs only the HF folder
(hf_folder.py), never model_prep.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import shutil
from pathlib import Path
from typing import Any

from services.core.artifact_cache import cached_build, verify_manifest
from services.core.errors import ConfigError
from services.core.settings import OnnxGeneratorSettings
from services.llm.hf_folder import models_dir, prepare_hf_model

logger = logging.getLogger(__name__)

ADAPTER_FILE_NAME = "adapter.onnx_adapter"
PEFT_CONFIG_NAME = "adapter_config.json"
PEFT_WEIGHTS_NAME = "adapter_model.safetensors"
LORA_RANK_DIM = "lora_rank"

# HF module name -> the block the GenAI builder puts it under (llama/qwen2/mistral-style decoders).
_BUILDER_GROUP = {
    "q_proj": "attn",
    "k_proj": "attn",
    "v_proj": "attn",
    "o_proj": "attn",
    "gate_proj": "mlp",
    "up_proj": "mlp",
    "down_proj": "mlp",
}
_PEFT_KEY = re.compile(
    r"^base_model\.model\.model\.layers\.(?P<layer>\d+)\.(?:self_attn|mlp)\.(?P<module>\w+)\.lora_(?P<ab>[AB])\.weight$"
)


def _read_peft_config(peft_dir: Path) -> dict[str, Any]:
    try:
        config = json.loads((peft_dir / PEFT_CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"LoRA adapter {peft_dir}: cannot read {PEFT_CONFIG_NAME}: {exc}") from exc
    if config.get("peft_type") != "LORA":
        raise ConfigError(f"LoRA adapter {peft_dir}: peft_type must be LORA, got {config.get('peft_type')!r}")
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise ConfigError(f"LoRA adapter {peft_dir}: per-module rank/alpha patterns are not supported")
    modules = config.get("target_modules")
    if isinstance(modules, str) or not modules:
        raise ConfigError(f"LoRA adapter {peft_dir}: target_modules must be a list of module names")
    unsupported = sorted(set(modules) - set(_BUILDER_GROUP))
    if unsupported:
        raise ConfigError(
            f"LoRA adapter {peft_dir}: modules {unsupported} are not supported by the ONNX backend"
        )
    return dict(config)


def target_modules(peft_dir: Path) -> list[str]:
    """The modules a peft LoRA adapts, sorted: adapters served by one model must all share them."""
    return sorted(_read_peft_config(peft_dir)["target_modules"])


def lora_layout_key(peft_dir: Path) -> str:
    """Identifies the LoRA inputs a base model needs: which modules are adapted."""
    return hashlib.sha256(json.dumps(target_modules(peft_dir)).encode()).hexdigest()[:12]


def peft_template(adapters: dict[str, str], hf_dir: Path, data_dir: Path) -> Path | None:
    """The first configured adapter folder holding a peft config; it shapes the LoRA-ready base model."""
    for name, folder in adapters.items():
        path = Path(folder).expanduser()
        if not path.exists():
            raise ConfigError(f"adapter {name!r}: {path} not found")
        if (path / PEFT_CONFIG_NAME).is_file():
            return path
    raise ConfigError(
        "ONNX adapters need a peft folder (adapter_config.json + weights) or a folder made by "
        "convert_peft_adapter; none of the configured adapters has one"
    )


def lora_node_names(peft_dir: Path, num_layers: int) -> list[str]:
    """Names the GenAI builder gives the LoRA MatMuls, so they can be kept out of weight quantization."""
    names = []
    for layer in range(num_layers):
        for module in target_modules(peft_dir):
            for ab in ("A", "B"):
                names.append(f"/model/layers.{layer}/{_BUILDER_GROUP[module]}/{module}/lora_{ab}/MatMul")
    return names


def lora_builder_options(peft_dir: Path, hf_dir: Path) -> list[str]:
    config = json.loads((hf_dir / "config.json").read_text(encoding="utf-8"))
    num_layers = int(config["num_hidden_layers"])
    return [f"adapter_path={peft_dir}", "nodes_to_exclude=" + ",".join(lora_node_names(peft_dir, num_layers))]


def _onnx_weight_name(layer: int, module: str, ab: str) -> str:
    return f"model.layers.{layer}.{_BUILDER_GROUP[module]}.{module}.lora_{ab}.MatMul.weight"


def make_lora_inputs_overridable(model_dir: Path, model_file: str = "model.onnx") -> list[str]:
    """Turn the builder's baked-in LoRA weights into graph inputs with zero defaults; returns their names."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    path = model_dir / model_file
    model = onnx.load(str(path))
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    lora_weights: dict[str, str] = {}  # weight name -> "A" | "B"
    for node in graph.node:
        match = re.search(r"/lora_([AB])/", node.name)
        if match is None:
            continue
        if node.op_type != "MatMul":
            raise ConfigError(
                f"LoRA node {node.name} was built as {node.op_type}, not a float MatMul; "
                "it cannot take adapter weights"
            )
        weight = node.input[1]
        if weight not in initializers:
            raise ConfigError(f"LoRA node {node.name}: weight {weight} is not an initializer")
        lora_weights[weight] = match.group(1)
    if not lora_weights:
        raise ConfigError(f"{path}: the builder produced no LoRA nodes; check the adapter's target_modules")
    for name, ab in lora_weights.items():
        init = initializers[name]
        rows, cols = list(init.dims)
        zeros = numpy_helper.from_array(np.zeros((rows, cols), dtype=np.float32), name)
        init.CopyFrom(zeros)
        shape: list[int | str] = [rows, LORA_RANK_DIM] if ab == "A" else [LORA_RANK_DIM, cols]
        graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
    data_file = f"{model_file}.data"
    (model_dir / data_file).unlink(missing_ok=True)
    onnx.save_model(
        model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data_file
    )
    logger.info("model %s: %d LoRA weights are now adapter inputs (zero by default)", path, len(lora_weights))
    return sorted(lora_weights)


def peft_to_onnx_tensors(peft_dir: Path) -> dict[str, Any]:
    """peft LoRA weights laid out as the builder's MatMuls expect: A^T, and (scaling * B)^T."""
    import numpy as np
    from safetensors.numpy import load_file

    config = _read_peft_config(peft_dir)
    rank = int(config["r"])
    alpha = float(config.get("lora_alpha", rank))
    scaling = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
    weights_file = peft_dir / PEFT_WEIGHTS_NAME
    if not weights_file.is_file():
        raise ConfigError(f"LoRA adapter {peft_dir}: {PEFT_WEIGHTS_NAME} not found")
    tensors: dict[str, Any] = {}
    for key, value in load_file(str(weights_file)).items():
        match = _PEFT_KEY.match(key)
        if match is None:
            raise ConfigError(
                f"LoRA adapter {peft_dir}: unexpected tensor {key} (only LoRA A/B weights are served)"
            )
        array = value.astype(np.float32)
        if match["ab"] == "B":
            array = array * np.float32(scaling)
        tensors[_onnx_weight_name(int(match["layer"]), match["module"], match["ab"])] = np.ascontiguousarray(
            array.T
        )
    return tensors


def convert_peft_adapter(peft_dir: Path, hf_base: Path, out: Path, precision: str) -> Path:
    """Convert a peft LoRA folder into `out/adapter.onnx_adapter` (cached, atomic); returns that file.

    `hf_base` and `precision` name the base model the adapter is served with: the adapter must have been
    trained on it, and LoRA weights stay fp32 at every precision (they are excluded from quantization).
    """
    import onnxruntime as ort

    base_config = json.loads((hf_base / "config.json").read_text(encoding="utf-8"))
    num_layers = int(base_config["num_hidden_layers"])
    if out.is_dir():
        manifest = verify_manifest(out)
        if manifest.get("source_sha256") == _peft_fingerprint(peft_dir):
            return out / ADAPTER_FILE_NAME
        shutil.rmtree(out)  # the peft folder changed since: convert again

    def build(tmp: Path) -> None:
        tensors = peft_to_onnx_tensors(peft_dir)
        too_deep = [n for n in tensors if int(n.split(".")[2]) >= num_layers]
        if too_deep:
            raise ConfigError(
                f"LoRA adapter {peft_dir} has layers the base model {hf_base} lacks: {too_deep[0]}"
            )
        adapter = ort.AdapterFormat()
        adapter.set_adapter_version(1)
        adapter.set_model_version(1)
        adapter.set_parameters(
            {name: ort.OrtValue.ortvalue_from_numpy(array) for name, array in tensors.items()}
        )
        adapter.export_adapter(str(tmp / ADAPTER_FILE_NAME))
        # The peft files travel along: the folder can then serve as the template of a LoRA-ready base.
        for name in (PEFT_CONFIG_NAME, PEFT_WEIGHTS_NAME):
            shutil.copyfile(peft_dir / name, tmp / name)

    cached_build(
        out, build, source_sha256=_peft_fingerprint(peft_dir), precision=precision, base=str(hf_base)
    )
    return out / ADAPTER_FILE_NAME


def _peft_fingerprint(peft_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in (PEFT_CONFIG_NAME, PEFT_WEIGHTS_NAME):
        digest.update((peft_dir / name).read_bytes())
    return digest.hexdigest()


def prepare_adapters(settings: OnnxGeneratorSettings, data_dir: Path) -> dict[str, Path]:
    """adapter name -> `.onnx_adapter` file, converting peft folders under `<data_dir>/models/adapters/`."""
    hf_dir = prepare_hf_model(settings, data_dir)
    return {
        name: adapter_file(name, Path(folder).expanduser(), settings, hf_dir, data_dir)
        for name, folder in settings.adapters.items()
    }


def adapter_file(
    name: str, path: Path, settings: OnnxGeneratorSettings, hf_dir: Path, data_dir: Path
) -> Path:
    """The `.onnx_adapter` file for one adapter: the file itself, the one in its folder, or a conversion."""
    if path.is_file() and path.suffix == ".onnx_adapter":
        return path
    if (path / ADAPTER_FILE_NAME).is_file():
        return path / ADAPTER_FILE_NAME
    if (path / PEFT_CONFIG_NAME).is_file():
        key = hashlib.sha256(f"{path.resolve()}|{hf_dir}".encode()).hexdigest()[:16]
        out = models_dir(data_dir) / "adapters" / f"{path.name}-{key}"
        return convert_peft_adapter(path, hf_dir, out, settings.onnx_precision)
    raise ConfigError(f"adapter {name!r}: {path} is neither an .onnx_adapter nor a peft LoRA folder")
