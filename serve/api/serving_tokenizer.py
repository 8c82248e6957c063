"""The tokenizer's endpoints, as vLLM serves them (lm-eval's remote tokenizer reads all
three): /tokenize (a text, or chat messages rendered by the template), /detokenize and
/tokenizer_info. No Ray and no HTTP here."""

from __future__ import annotations

from serve.api.protocol import DetokenizeRequest, TokenizeRequest
from serve.api.serving_engine import OpenAIServing, off_loop_if_long


class OpenAIServingTokenizer(OpenAIServing):
    async def tokenize(self, req: TokenizeRequest) -> dict:
        if req.messages is not None:
            messages = [m.model_dump() for m in req.messages]
            text = await self.render_chat(messages, req.add_generation_prompt)
            special = False  # the template has written its special tokens as text already
        else:
            text, special = req.prompt, req.add_special_tokens
        tokenizer = self.tokenizer
        ids = await off_loop_if_long(
            len(text), lambda: tokenizer.encode(text, add_special_tokens=special)
        )
        return {"count": len(ids), "max_model_len": self.generator.max_context, "tokens": ids}

    def detokenize(self, req: DetokenizeRequest) -> dict:
        return {"prompt": self.tokenizer.decode(self.check_ids(req.tokens, "tokens"))}

    def info(self) -> dict:
        tokenizer = self.tokenizer
        return {
            "tokenizer_class": type(tokenizer).__name__,
            "eos_token": tokenizer.eos_token,
            "bos_token": tokenizer.bos_token,
            "pad_token": tokenizer.pad_token,
            "unk_token": tokenizer.unk_token,
            "chat_template": tokenizer.chat_template,
            "model_max_length": self.generator.max_context,
            "vocab_size": len(tokenizer),
        }
