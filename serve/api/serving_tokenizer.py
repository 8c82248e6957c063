"""The tokenizer's endpoints, as vLLM serves them (lm-eval's remote tokenizer reads all
three): /tokenize (a text, or chat messages rendered by the template), /detokenize and
/tokenizer_info, with their request shapes. No Ray and no HTTP here."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationInfo, model_validator

from serve.api.errors import APIError
from serve.api.protocol import ChatMessage, _limits, check_model
from serve.api.serving_engine import OpenAIServing, encode_within, off_loop_if


class TokenizeRequest(BaseModel):
    """vLLM's /tokenize (lm-eval's remote tokenizer sends the first form)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool = True
    add_generation_prompt: bool = True  # messages only

    @model_validator(mode="after")
    def _within_bounds(self, info: ValidationInfo) -> TokenizeRequest:
        check_model(self.model, _limits(info))
        if (self.prompt is None) == (self.messages is None):
            raise APIError(400, "give one of prompt and messages", "prompt")
        return self


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    tokens: list[int]

    @model_validator(mode="after")
    def _within_bounds(self, info: ValidationInfo) -> DetokenizeRequest:
        check_model(self.model, _limits(info))
        return self


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
