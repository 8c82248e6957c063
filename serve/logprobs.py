"""Log-probabilities of tokens, read off the forward passes the batch runs anyway: the prefill's
(its last hidden state at every prompt position, turned into logits a slice at a time, when
a request asks for the prompt's) and each decoding step's logits. They
are the model's own distribution (log-softmax of the raw logits, before temperature or top-p),
as vLLM reports by default. No Ray and no HTTP here; the API's log-probability shapes are
built in serve/api/responses.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class TokenLogprob:
    token_id: int
    logprob: float
    top: list[tuple[int, float]]  # the k most likely tokens at this position, most likely first


def step_logprobs(logits: torch.Tensor, tokens: list[int], ks: list[int | None]) -> list:
    """Per row of ``logits`` [rows, vocab]: the TokenLogprob of the sampled token, or None
    for rows that asked for none (k is None)."""
    wanted = [i for i, k in enumerate(ks) if k is not None]
    if not wanted:
        return [None] * len(ks)
    index = torch.tensor(wanted, device=logits.device)
    logp = torch.log_softmax(logits[index].float(), dim=-1)
    chosen = logp.gather(1, torch.tensor([[tokens[i]] for i in wanted], device=logp.device))
    k_max = max(ks[i] for i in wanted)
    top_values, top_ids = logp.topk(k_max, dim=-1) if k_max else (logp[:, :0], logp[:, :0])
    chosen, top_values, top_ids = chosen.tolist(), top_values.tolist(), top_ids.tolist()
    out: list = [None] * len(ks)
    for j, i in enumerate(wanted):
        top = list(zip(map(int, top_ids[j][: ks[i]]), top_values[j][: ks[i]]))
        out[i] = TokenLogprob(tokens[i], chosen[j][0], top)
    return out


# At most this many (position, vocabulary entry) logits exist at once while a prompt is
# scored (16 MiB in fp32, twice that with the log-softmax): all of a 64k-token prompt's over a
# 128k vocabulary would be 32 GiB.
SCORE_SLICE_CELLS = 1 << 22


def prompt_logprobs(
    hidden: torch.Tensor,
    prompt: list[int],
    k: int,
    to_logits: Callable[[torch.Tensor], torch.Tensor],
    vocab: int,
) -> list:
    """The prompt's own tokens scored off the prefill: ``hidden`` [width, hidden size] is the
    row's last hidden state, left-padded (the prompt fills its last len(prompt) positions);
    ``to_logits`` maps hidden states to the ``vocab`` logits. Scored a slice of positions at
    a time, so memory stays bounded whatever the prompt's length. The first token has nothing
    before it and gets None."""
    n = len(prompt)
    if n < 2:
        return [None] * n
    predicting = hidden[-n:-1]  # position j predicts token j + 1
    targets = torch.tensor(prompt[1:], device=hidden.device).unsqueeze(1)
    step = max(1, SCORE_SLICE_CELLS // vocab)
    chosen, top_values, top_ids = [], [], []
    for start in range(0, n - 1, step):
        logp = torch.log_softmax(to_logits(predicting[start : start + step]).float(), dim=-1)
        chosen += logp.gather(1, targets[start : start + step]).squeeze(1).tolist()
        if k:
            values, ids = logp.topk(k, dim=-1)
            top_values += values.tolist()
            top_ids += ids.tolist()
        del logp
    if not k:
        top_values, top_ids = [[]] * (n - 1), [[]] * (n - 1)
    entries = [
        TokenLogprob(token, value, list(zip(map(int, ids), values)))
        for token, value, ids, values in zip(prompt[1:], chosen, top_ids, top_values)
    ]
    return [None, *entries]
