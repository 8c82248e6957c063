"""An export ready to generate: the one loader that serving and evaluation share, so that
what `make eval` measures is what `make serve` generates.

An export is the flat Hugging Face directory a training run writes (trainer/export.py), or
a LoRA adapter's directory (peft's layout), loaded onto the base its adapter_config names
and merged: what `make eval` measures of an adapter is what serving it beside that base
generates (up to the rounding of the merge).
Ready to generate means: the dtype resolved for the device, the tokenizer padding on the
left with a pad token, a chat template (the default one when the export has none), and the
context length known.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from rundir import layout
from schemas.precision import torch_dtype

# For tokenizers with no chat template of their own (a BPE trained by dataprep/): role tags
# on their own lines, assistant turns ended by EOS, then the assistant tag so the model
# continues as the assistant. Fine-tuning trains with this same template and saves it into
# its exports (dataprep/tokens/chat.py imports it from here).
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}"
    # {{ '\\n' }}, not a bare newline: transformers renders with trim_blocks, which eats a
    # newline that directly follows a block tag.
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% else %}{{ '\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@dataclass
class LoadedExport:
    model: PreTrainedModel
    tokenizer: object  # a transformers tokenizer, padding on the left
    context_length: int  # prompt + new tokens may not exceed this
    name: str  # the export's folder name: the model id clients ask for

    @property
    def device(self) -> torch.device:
        return self.model.device


def load_export(
    export_dir: str,
    dtype: str = "auto",
    device: str | torch.device | None = None,
    max_context: int | None = None,
) -> LoadedExport:
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    adapter, model_dir = None, export_dir
    if not layout.is_export(export_dir):
        adapter, model_dir = export_dir, adapter_base(export_dir)
    has_tokenizer = Path(export_dir, "tokenizer_config.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(export_dir if has_tokenizer else model_dir)
    if not tokenizer.chat_template:
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    # Left padding keeps every prompt's last token in the last column, where the next
    # token's logits are read and the new token is appended.
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch_dtype(dtype, on_gpu=device.type == "cuda")
    )
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model.to(device).eval()
    return LoadedExport(
        model=model,
        tokenizer=tokenizer,
        context_length=context_length(model.config, max_context),
        name=os.path.basename(os.path.normpath(export_dir)),
    )


def adapter_base(adapter_dir: str) -> str:
    """The base export a LoRA adapter directory was trained on (its adapter_config's
    base_model_name_or_path); ValueError when it is none or not an export here."""
    config_file = Path(adapter_dir, "adapter_config.json")
    if not config_file.is_file():
        raise ValueError(f"{adapter_dir!r} is neither an export nor a LoRA adapter directory")
    base = json.loads(config_file.read_text()).get("base_model_name_or_path")
    if not base or not layout.is_export(base):
        raise ValueError(
            f"{adapter_dir!r}: its base {base!r} (adapter_config.json's "
            "base_model_name_or_path) is not an export directory on this machine"
        )
    return base


def context_length(config, cap: int | None = None) -> int:
    # GPT2Config maps max_position_embeddings to n_positions, so one name covers both.
    positions = getattr(config, "max_position_embeddings", None)
    if positions is None and cap is None:
        raise ValueError("the model config has no max_position_embeddings; pass max_context")
    if cap is not None and cap < 1:
        raise ValueError(f"max_context={cap} must be at least 1")
    return min(x for x in (positions, cap) if x is not None)
