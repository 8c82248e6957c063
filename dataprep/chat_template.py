"""Chat formatting for fine-tuning: the default template and assistant-only loss spans.

A tokenizer's own chat template is used when it has one. Otherwise the default one, which
serving and evaluation fall back to as well (serve/export.py), is used and saved into the
exported tokenizer, so the chat endpoint formats prompts exactly as the model was trained.
Assistant turns end with the EOS token: that is how the model learns to stop.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from serve.export import DEFAULT_CHAT_TEMPLATE


class TemplateError(ValueError):
    """The chat template cannot mark assistant spans (it rewrites earlier turns)."""


def ensure_chat_template(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Give a template-less tokenizer the default one; True when it was added."""
    if tokenizer.chat_template:
        return False
    tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return True


def _render(tokenizer, messages: list[dict], add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def chat_segments(tokenizer, messages: list[dict], trained_from: int = 0) -> list[tuple[str, bool]]:
    """The rendered conversation as (text, trained) pieces: trained pieces are what each
    assistant turn from message ``trained_from`` on adds after its generation prompt (its
    content and end-of-turn marker); everything else (system, user, role headers, earlier
    assistant turns of a preference pair's prompt) is context only.

    Found by rendering each prefix of the conversation, which works for any template that
    only appends (the ones in use do); one that rewrites earlier turns is refused."""
    full = _render(tokenizer, messages, add_generation_prompt=False)
    segments: list[tuple[str, bool]] = []
    done = 0  # characters of ``full`` already assigned to a segment
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or i < trained_from:
            continue
        before = _render(tokenizer, messages[:i], add_generation_prompt=True)
        after = _render(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if not (after.startswith(before) and full.startswith(after) and len(before) >= done):
            raise TemplateError(
                "the chat template does not render conversations append-only; "
                "assistant tokens cannot be located (use a different template)"
            )
        segments += [(full[done : len(before)], False), (after[len(before) :], True)]
        done = len(after)
    segments.append((full[done:], False))
    return [(text, trained) for text, trained in segments if text]


def tokenize_chat(
    tokenizer, messages: list[dict], trained_from: int = 0
) -> tuple[list[int], list[bool]]:
    """Token ids and a per-token trained flag. Segments are tokenized separately, exactly
    as at inference, where the prompt is tokenized alone and the model continues it."""
    ids: list[int] = []
    trained: list[bool] = []
    for text, is_trained in chat_segments(tokenizer, messages, trained_from):
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += piece
        trained += [is_trained] * len(piece)
    return ids, trained
