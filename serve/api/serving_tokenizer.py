"""The tokenizer's endpoints, as vLLM serves them (lm-eval's remote tokenizer reads all
three): /tokenize (a text, or chat messages rendered by the template), /detokenize and
/tokenizer_info. No Ray and no HTTP here."""

from __future__ import annotations

from serve.api.errors import APIError
from serve.api.protocol import DetokenizeRequest, TokenizeRequest
from serve.api.serving_engine import OpenAIServing, encode_within, off_loop_if

# Ids decoded on a thread above this many (decoding ~500k ids took seconds on the loop).
OFF_LOOP_IDS = 2_048


class OpenAIServingTokenizer(OpenAIServing):
    async def tokenize(self, req: TokenizeRequest) -> dict:
        if req.messages is not None:
            messages = [m.model_dump() for m in req.messages]
            text = await self.render_chat(messages, req.add_generation_prompt)
            special = False  # the template has written its special tokens as text already
        else:
            text, special = req.prompt, req.add_special_tokens
        tokenizer = self.tokenizer
        # Bounded (a 1 MB text's million ids took ~0.8 s to serialize on the event loop), but
        # not by the context: lm-eval's rolling log-likelihood tokenizes whole documents.
        ids = await encode_within(
            lambda t: tokenizer.encode(t, add_special_tokens=special),
            text,
            self.config.max_tokenize_tokens,
            "messages" if req.messages is not None else "prompt",
            "serve.max_tokenize_tokens",
        )
        return {"count": len(ids), "max_model_len": self.generator.max_context, "tokens": ids}

    async def detokenize(self, req: DetokenizeRequest) -> dict:
        limit = self.config.max_tokenize_tokens
        if len(req.tokens) > limit:
            raise APIError(
                400,
                f"tokens holds {len(req.tokens)} ids, more than {limit} "
                "(serve.max_tokenize_tokens)",
                "tokens",
                "context_length_exceeded",
            )
        ids = self.check_ids(req.tokens, "tokens")
        return {"prompt": await off_loop_if(len(ids) > OFF_LOOP_IDS, self.tokenizer.decode, ids)}

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
