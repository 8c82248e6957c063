"""LoRA through peft on a real (tiny) GPT-2: the trainable share, and both export layouts."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from transformers import AutoModelForCausalLM

from schemas.training import LoraConfig
from trainer.engine import param_groups
from trainer.export import export_hf
from trainer.lora import apply_lora, trainable_fraction


def _lora_model(tiny_export, **kw):
    base = AutoModelForCausalLM.from_pretrained(tiny_export)
    return apply_lora(base, LoraConfig(enabled=True, **kw))


def test_lora_trains_under_five_percent_and_only_the_adapter_is_optimised(tiny_export):
    model = _lora_model(tiny_export, rank=4)
    trainable, total = trainable_fraction(model)
    assert 0 < trainable / total < 0.05
    optimised = [p for group in param_groups(model, 0.1) for p in group["params"]]
    names = {id(p): n for n, p in model.named_parameters()}
    assert optimised and all("lora_" in names[id(p)] for p in optimised)


def test_target_modules_reach_peft(tiny_export):
    model = _lora_model(tiny_export, rank=4, target_modules=["c_attn", "c_proj"])
    adapted = {
        n.split(".lora_A")[0].rsplit(".", 1)[-1]
        for n, _ in model.named_parameters()
        if "lora_A" in n
    }
    assert adapted == {"c_attn", "c_proj"}


def test_adapter_export_in_peft_layout_loads_back(tiny_export, tiny_tokenizer, tmp_path):
    model = _lora_model(tiny_export, rank=4)
    with torch.no_grad():  # a non-zero update, as after training (B starts at zero)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    engine = SimpleNamespace(module=model)  # export_hf only reads .module below ZeRO-3
    export_hf(engine, tiny_tokenizer, str(tmp_path / "adapter"), 2, 0, merge_lora=False)
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    assert not (tmp_path / "adapter" / "model.safetensors").exists()  # the adapter alone

    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(tiny_export)
    reloaded = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        expected = model.eval()(input_ids=ids).logits
        assert torch.allclose(reloaded(input_ids=ids).logits, expected, atol=1e-5)
        # Merged export: the same function as a plain transformers model.
        export_hf(engine, tiny_tokenizer, str(tmp_path / "merged"), 2, 0, merge_lora=True)
        plain = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
        assert torch.allclose(plain(input_ids=ids).logits, expected, atol=1e-4)
        # ...with the adapter kept beside it, to serve on the base (serve/adapters.py).
        beside = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(tiny_export), tmp_path / "merged" / "adapter"
        ).eval()
        assert torch.allclose(beside(input_ids=ids).logits, expected, atol=1e-5)
