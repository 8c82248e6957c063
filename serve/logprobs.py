"""Log-probabilities of tokens, read off the logits the batch computes anyway: the prefill's
(every prompt position, when a request asks for the prompt's) and each decoding step's. They
are the model's own distribution (log-softmax of the raw logits, before temperature or top-p),
as vLLM reports by default. No Ray and no HTTP here; the API's log-probability shapes are
built in serve/api/responses.py.
"""

from __future__ import annotations

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


def prompt_logprobs(logits: torch.Tensor, prompt: list[int], k: int) -> list:
    """The prompt's own tokens scored by the prefill: ``logits`` [width, vocab] is the row's
    prefill output, left-padded (the prompt fills its last len(prompt) positions). The first
    token has nothing before it and gets None."""
    n = len(prompt)
    if n < 2:
        return [None] * n
    predicting = logits[-n:-1].float()  # position j predicts token j + 1
    logp = torch.log_softmax(predicting, dim=-1)
    targets = torch.tensor(prompt[1:], device=logp.device).unsqueeze(1)
    chosen = logp.gather(1, targets).squeeze(1).tolist()
    if k:
        top_values, top_ids = (t.tolist() for t in logp.topk(k, dim=-1))
    else:
        top_values, top_ids = [[]] * (n - 1), [[]] * (n - 1)
    entries = [
        TokenLogprob(token, value, list(zip(map(int, ids), values)))
        for token, value, ids, values in zip(prompt[1:], chosen, top_ids, top_values)
    ]
    return [None, *entries]
