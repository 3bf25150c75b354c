"""Write a llama-family model as GGUF (f16 or q8_0) with gguf-py, following llama.cpp's
``convert_hf_to_gguf.py`` (``LlamaModel``, ``get_vocab_base``), plus an Ollama ``Modelfile``.

llama.cpp's converter is not on PyPI and needs a repository checkout, so Tuneline writes the file
itself with ``GGUFWriter``, ``TensorNameMap``, ``SpecialVocab`` and ``gguf.quants``. Tensors are
converted and written one at a time after the header (never the whole file in memory).
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.training.errors import TrainingError

EXPORT_UNSUPPORTED = "export_unsupported"
SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM",)
MODELFILE = "Modelfile"

# llama.cpp's name of a byte-level BPE pre-tokenizer, recognised from tokenizer.json's
# ``pre_tokenizer`` (llama.cpp hashes the tokens of a probe text instead, which only knows
# published vocabularies; Tuneline's tiny demo vocabulary is trained locally).
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# ChatML turns as Go template (Ollama) and the same turns as text, to recognise the Jinja template.
_CHATML_GO = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n"
)
_PROBE = [
    {"role": "system", "content": "S1"},
    {"role": "user", "content": "U1"},
    {"role": "assistant", "content": "A1"},
    {"role": "user", "content": "U2"},
]
_GENERATION_TAGS = re.compile(r"\{%-?\s*(?:end)?generation\s*-?%\}")


@dataclass(frozen=True)
class GgufWritten:
    """The ``.gguf`` written and what the model card should say about its Modelfile."""

    gguf: Path
    modelfile: Path
    note: str


def _refuse(message: str) -> TrainingError:
    return TrainingError(EXPORT_UNSUPPORTED, message)


def check_architecture(config: Any) -> None:
    """Only the llama family is written; anything else is refused with a clear error."""
    architectures = list(getattr(config, "architectures", None) or [])
    model_type = getattr(config, "model_type", None)
    if model_type != "llama" or (architectures and architectures[0] not in SUPPORTED_ARCHITECTURES):
        raise _refuse(
            f"GGUF export supports the llama family ({', '.join(SUPPORTED_ARCHITECTURES)}); this model is "
            f"{model_type!r} {architectures}: export merged and convert it with llama.cpp's "
            "convert_hf_to_gguf.py"
        )
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else "default"
    if rope_type not in ("default", "linear"):
        raise _refuse(f"GGUF export does not write rope scaling {rope_type!r} yet; export merged instead")


def _rope(config: Any) -> tuple[float, dict[str, Any]]:
    rope = getattr(config, "rope_parameters", None) or {}
    theta = rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))
    scaling = rope if rope.get("rope_type") == "linear" else (getattr(config, "rope_scaling", None) or {})
    return float(theta), scaling


def permute(weights: Any, n_head: int, n_head_kv: int | None) -> Any:
    """llama.cpp's ``LlamaModel.permute``: HF stores Q/K rows in the rotate-half order, ggml in the
    interleaved order of the original Llama checkpoints."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def pre_tokenizer_name(tokenizer_json: dict[str, Any]) -> str:
    """llama.cpp's ``tokenizer.ggml.pre`` for a byte-level BPE tokenizer.json, or a refusal."""
    model = tokenizer_json.get("model") or {}
    if model.get("type") != "BPE":
        raise _refuse(f"GGUF export supports byte-level BPE tokenizers; this one is {model.get('type')!r}")
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if (
        kinds == ["Digits", "ByteLevel"]
        and steps[0].get("individual_digits")
        and steps[1].get("use_regex", True)
    ):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and (steps[0].get("pattern") or {}).get("Regex") == _LLAMA3_SPLIT:
        return "llama-bpe"
    raise _refuse(f"GGUF export does not know this pre-tokenizer ({json.dumps(pre)[:200]})")


def vocab(tokenizer: Any, vocab_size: int) -> tuple[list[str], list[int]]:
    """Tokens and token types as llama.cpp's ``get_vocab_base`` writes them."""
    import gguf

    reverse = {index: token for token, index in tokenizer.get_vocab().items()}
    added = tokenizer.get_added_vocab()
    decoder = tokenizer.added_tokens_decoder
    tokens: list[str] = []
    types: list[int] = []
    for index in range(vocab_size):
        if index not in reverse:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        token = reverse[index]
        if token in added:
            if not decoder[index].normalized:
                token = tokenizer.decode(tokenizer.encode(token, add_special_tokens=False))
            special = decoder[index].special or (token.startswith("<|") and token.endswith("|>"))
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
        tokens.append(token)
    return tokens, types


def _tensor_type(new_name: str, data: Any, gguf_type: str) -> Any:
    import gguf

    if data.ndim <= 1 or new_name.endswith("_norm.weight") or not new_name.endswith(".weight"):
        return gguf.GGMLQuantizationType.F32  # llama.cpp keeps norms and biases in f32
    if gguf_type == "q8_0" and data.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0] == 0:
        return gguf.GGMLQuantizationType.Q8_0
    return gguf.GGMLQuantizationType.F16  # also llama.cpp's fallback for rows q8_0 cannot block


def _tensors(model: Any) -> Iterator[tuple[str, Any]]:
    """``(gguf name, float32 numpy array)`` of every tensor, Q/K permuted, tied output left out."""
    import gguf

    config = model.config
    n_head, n_kv = config.num_attention_heads, config.num_key_value_heads
    names = gguf.TensorNameMap(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for name, tensor in model.state_dict().items():
        if name.endswith(".rotary_emb.inv_freq") or (tied and name == "lm_head.weight"):
            continue  # computed at load time / the same tensor as token_embd
        data = tensor.detach().to("cpu").float()
        if name.endswith(("q_proj.weight", "q_proj.bias")):
            data = permute(data, n_head, n_head)
        elif name.endswith(("k_proj.weight", "k_proj.bias")):
            data = permute(data, n_head, n_kv)
        new_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if new_name is None:
            raise _refuse(f"GGUF export cannot map tensor {name!r} of this llama model")
        yield new_name, data.numpy()


def _encode(data: Any, qtype: Any) -> Any:
    import gguf

    return gguf.quants.quantize(data, qtype)


def _metadata(
    writer: Any, model: Any, tokenizer: Any, tokenizer_dir: Path, name: str, gguf_type: str
) -> None:
    import gguf

    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    theta, scaling = _rope(config)
    writer.add_rope_freq_base(theta)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_vocab_size(config.vocab_size)
    writer.add_rope_dimension_count(head_dim)
    if scaling.get("rope_type", scaling.get("type")) == "linear" and "factor" in scaling:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(scaling["factor"])
    file_type = gguf.LlamaFileType.MOSTLY_Q8_0 if gguf_type == "q8_0" else gguf.LlamaFileType.MOSTLY_F16
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    tokenizer_json = json.loads((tokenizer_dir / "tokenizer.json").read_text(encoding="utf-8"))
    tokens, types = vocab(tokenizer, config.vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer_name(tokenizer_json))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(tokenizer_dir, load_merges=True, n_vocab=config.vocab_size)
    if isinstance(special.chat_template, str):
        # transformers' {% generation %} markers only shape training masks; llama.cpp's Jinja
        # engine does not know them, and they render nothing.
        special.chat_template = _GENERATION_TAGS.sub("", special.chat_template)
    if tokenizer.eos_token_id is not None:
        special.special_token_ids["eos"] = tokenizer.eos_token_id
    special.add_to_gguf(writer, quiet=True)


def write_gguf(model: Any, tokenizer: Any, out: Path, gguf_type: str, name: str) -> GgufWritten:
    """Write ``model-<gguf_type>.gguf`` and a ``Modelfile`` for it into the directory ``out``."""
    import gguf

    check_architecture(model.config)
    path = out / f"model-{gguf_type}.gguf"
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    with tempfile.TemporaryDirectory(prefix="tuneline-tok-") as folder:
        tokenizer.save_pretrained(folder)  # SpecialVocab reads merges and template from files
        _metadata(writer, model, tokenizer, Path(folder), name or "tuneline-model", gguf_type)
    # First pass: shapes and byte sizes for the header (quantizing a tensor to learn its size is
    # cheap next to holding every converted tensor until the end).
    plan = []
    for new_name, data in _tensors(model):
        qtype = _tensor_type(new_name, data, gguf_type)
        nbytes = gguf.quant_shape_to_byte_shape(data.shape, qtype)[-1] * (data.size // data.shape[-1])
        writer.add_tensor_info(new_name, data.shape, data.dtype, nbytes, raw_dtype=qtype)
        plan.append((new_name, qtype))
    writer.write_header_to_file(path)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for (new_name, data), (planned, qtype) in zip(_tensors(model), plan, strict=True):
        assert new_name == planned
        writer.write_tensor_data(_encode(data, qtype))
    writer.close()
    modelfile, note = modelfile_text(tokenizer, path.name, model.config.max_position_embeddings)
    (out / MODELFILE).write_text(modelfile, encoding="utf-8")
    return GgufWritten(path, out / MODELFILE, note)


def _render(tokenizer: Any, messages: list[dict[str, str]]) -> str | None:
    try:
        return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    except Exception:  # a template that refuses the probe is simply not ChatML
        return None


def _chatml(messages: list[dict[str, str]]) -> str:
    turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return turns + "<|im_start|>assistant\n"


def chatml_system(tokenizer: Any) -> tuple[bool, str | None]:
    """Whether the chat template renders ChatML, and the system prompt it adds when a conversation
    has none (SmolLM2 and Qwen2 templates do), found by rendering probe conversations."""
    if _render(tokenizer, _PROBE) != _chatml(_PROBE):
        return False, None
    without = _PROBE[1:]
    rendered = _render(tokenizer, without)
    if rendered == _chatml(without):
        return True, None
    if rendered is None or not rendered.endswith(_chatml(without)):
        return False, None
    head = rendered[: -len(_chatml(without))]
    match = re.fullmatch(r"<\|im_start\|>system\n(.*?)<\|im_end\|>\n", head, flags=re.S)
    return (True, match.group(1)) if match else (False, None)


def _quote(text: str) -> str:
    return '"""' + text.replace('"""', '\\"\\"\\"') + '"""'


def modelfile_text(tokenizer: Any, gguf_name: str, context: int) -> tuple[str, str]:
    """An Ollama Modelfile (template, default system prompt, stop tokens) and a note for the card."""
    is_chatml, default_system = chatml_system(tokenizer)
    lines = [f"FROM ./{gguf_name}"]
    stops = [tokenizer.eos_token] if tokenizer.eos_token else []
    if not is_chatml:
        note = (
            "The chat template is not ChatML, so the Modelfile sets no TEMPLATE: Ollama then uses the "
            "template stored in the GGUF (`tokenizer.chat_template`) when it recognises it; check "
            "`ollama show --modelfile` and add a TEMPLATE if it does not."
        )
    else:
        lines.append(f"TEMPLATE {_quote(_CHATML_GO)}")
        if default_system:
            lines.append(f"SYSTEM {_quote(default_system)}")
        stops += ["<|im_end|>", "<|im_start|>"]
        note = "The Modelfile's TEMPLATE is the model's ChatML chat template written for Ollama."
    for stop in dict.fromkeys(stops):
        lines.append(f"PARAMETER stop {json.dumps(stop)}")
    lines.append(f"PARAMETER num_ctx {context}")
    return "\n".join(lines) + "\n", note
