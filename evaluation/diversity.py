"""What a sampling setting buys in creative generation: for each setting of a small sweep
(temperature, top_p, top_k, min_p, penalties), sampled continuations of the same prompts,
scored for diversity (distinct-1/2 and self-BLEU across samples, repetition within one)
and for quality as the model itself sees it (perplexity of the continuation under the
model's own distribution, from the log-probabilities the server's generator reports).

Runs offline on an export, through the server's own generator (serve/generator.py), so a
setting here decodes exactly as the same request to `make serve`:

    make diversity                     # the newest export under runs/
    python -m evaluation.diversity runs/pretrain/<run>/export [--samples 8 --max-tokens 32]

writes diversity.json and diversity.png (diversity against perplexity, one point per
setting) beside the export, and prints the table.

Definitions: distinct-n is unique n-grams over all n-grams of a setting's samples (Li et
al., 2016); repetition rate is the share of a sample's bigrams that already occurred
earlier in that sample (Welleck et al., 2019's seq-rep-2), averaged; both count the model's
own tokens, so that a loop of newlines counts as the repetition it is. Self-BLEU is each
sample's sacrebleu sentence BLEU against the other samples of its prompt, averaged (Zhu et
al., 2018: lower is more diverse; a sample with no words scores 0). Perplexity is exp of
the mean negative log-likelihood per generated token under the model's raw distribution
(before temperature and filters), end tokens included.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import sacrebleu

from rundir.layout import newest_export
from serve.generator import Generator
from serve.sampling import SamplingParams

# Openings of the kind of text the default export learned (Python's own documentation);
# a user's export may take its own with --prompts.
PROMPTS = [
    "The module",
    "Return the",
    "If the value is",
    "This function",
    "The list of",
    "A new",
    "When the file",
    "The default",
]

# The sweep: plain sampling at three temperatures, the truncations at temperature 1, and the
# penalties on greedy decoding (where a small model loops) and on sampling.
SWEEP: dict[str, dict] = {
    "greedy": dict(temperature=0.0),
    "greedy+presence=1.5": dict(temperature=0.0, presence_penalty=1.5),
    "greedy+frequency=1.0": dict(temperature=0.0, frequency_penalty=1.0),
    "greedy+repetition=1.3": dict(temperature=0.0, repetition_penalty=1.3),
    "T=0.7": dict(temperature=0.7),
    "T=1.0": dict(temperature=1.0),
    "T=1.3": dict(temperature=1.3),
    "top_p=0.9": dict(temperature=1.0, top_p=0.9),
    "top_k=20": dict(temperature=1.0, top_k=20),
    "min_p=0.1": dict(temperature=1.0, min_p=0.1),
    "T=1.0+presence=1.5": dict(temperature=1.0, presence_penalty=1.5),
    "T=1.0+repetition=1.3": dict(temperature=1.0, repetition_penalty=1.3),
}


@dataclass
class SettingScores:
    setting: str
    distinct_1: float
    distinct_2: float
    self_bleu: float
    repetition_rate: float
    perplexity: float
    samples: int


def _ngrams(tokens: list, n: int) -> list[tuple]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(samples: list[list], n: int) -> float:
    """Unique n-grams over all n-grams of ``samples`` (token sequences; 0 when none)."""
    grams = [g for tokens in samples for g in _ngrams(tokens, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(tokens: list, n: int = 2) -> float:
    """Share of the n-grams of ``tokens`` that already occurred earlier in it."""
    grams = _ngrams(tokens, n)
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def self_bleu(groups: list[list[str]]) -> float:
    """Mean sentence BLEU of each sample against the other samples of its group."""
    scores = [
        sacrebleu.sentence_bleu(text, group[:i] + group[i + 1 :]).score
        for group in groups
        if len(group) > 1
        for i, text in enumerate(group)
    ]
    return sum(scores) / len(scores) if scores else 0.0


@dataclass
class Samples:
    texts: list[list[str]]  # per prompt, its samples' texts
    tokens: list[list[int]]  # per sample, its generated token ids
    logprobs: list[float]  # of every generated token, under the model's raw distribution


def sample(
    gen: Generator, prompts: list[str], params: SamplingParams, samples: int, seed: int
) -> Samples:
    """``samples`` continuations per prompt, all in one static batch (each row seeded
    ``seed + row``), with their tokens and raw log-probabilities."""
    ids = [gen.encode(p) for p in prompts for _ in range(samples)]
    params = replace(params, logprobs=0)
    rows = [replace(params, seed=seed + i) for i in range(len(ids))]
    done = gen.generate(ids, rows)
    texts, entries = [c.text for c in done], [c.logprobs for c in done]
    return Samples(
        texts=[texts[k : k + samples] for k in range(0, len(texts), samples)],
        tokens=[[e.token_id for e in row] for row in entries],
        logprobs=[e.logprob for row in entries for e in row],
    )


def score_setting(name: str, s: Samples) -> SettingScores:
    logprobs = s.logprobs
    return SettingScores(
        setting=name,
        distinct_1=distinct_n(s.tokens, 1),
        distinct_2=distinct_n(s.tokens, 2),
        self_bleu=self_bleu(s.texts),
        repetition_rate=sum(map(repetition_rate, s.tokens)) / len(s.tokens),
        perplexity=math.exp(-sum(logprobs) / len(logprobs)) if logprobs else float("nan"),
        samples=len(s.tokens),
    )


def sweep(
    gen: Generator,
    prompts: list[str],
    samples: int = 8,
    max_tokens: int = 32,
    seed: int = 0,
    settings: dict[str, dict] | None = None,
) -> list[SettingScores]:
    results = []
    for name, controls in (settings or SWEEP).items():
        # Greedy too gets ``samples`` rows per prompt (all alike): distinct-n depends on
        # how many samples it counts, so every setting counts as many.
        params = SamplingParams(max_tokens=max_tokens, **controls)
        results.append(score_setting(name, sample(gen, prompts, params, samples, seed)))
    return results


def table(results: list[SettingScores]) -> str:
    lines = [
        "| setting | distinct-1 | distinct-2 | self-BLEU | repetition | perplexity |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.setting} | {r.distinct_1:.3f} | {r.distinct_2:.3f} | {r.self_bleu:.1f} "
            f"| {r.repetition_rate:.3f} | {r.perplexity:.1f} |"
        )
    return "\n".join(lines)


def plot(results: list[SettingScores], path: Path) -> None:
    """Diversity (distinct-2, and self-BLEU) against perplexity, a marker per setting."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    markers = "os^vDP*Xph<>"
    for ax, key, label in (
        (axes[0], "distinct_2", "distinct-2 (higher: more diverse)"),
        (axes[1], "self_bleu", "self-BLEU (lower: more diverse)"),
    ):
        for i, r in enumerate(results):
            ax.scatter(r.perplexity, getattr(r, key), marker=markers[i % len(markers)], s=60)
        ax.set_xscale("log")
        ax.set_xlabel("perplexity of the samples under the model (lower: likelier text)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.legend([r.setting for r in results], loc="center right", fontsize=8)
    fig.suptitle("What a sampling setting buys: diversity against the model's perplexity")
    fig.tight_layout(rect=(0, 0, 0.83, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "export", nargs="?", help="a Hugging Face export directory (default: the newest in runs/)"
    )
    parser.add_argument("--out", help="where diversity.json/.png go (default: the export's run)")
    parser.add_argument("--samples", type=int, default=8, help="samples per prompt and setting")
    parser.add_argument("--max-tokens", type=int, default=32, help="tokens per sample")
    parser.add_argument("--seed", type=int, default=0, help="row i is seeded seed + i")
    parser.add_argument("--prompts", nargs="+", default=PROMPTS, help="prompts to continue")
    args = parser.parse_args(argv)
    if args.samples < 2:
        parser.error("--samples must be at least 2 (self-BLEU compares samples of a prompt)")
    export = Path(args.export) if args.export else newest_export("runs")
    if export is None:
        parser.error("no export under runs/: run `make train` first, or name an export")
    export = export.resolve()
    out = Path(args.out) if args.out else export.parent
    out.mkdir(parents=True, exist_ok=True)
    gen = Generator(str(export))
    results = sweep(gen, args.prompts, args.samples, args.max_tokens, args.seed)
    report = {
        "export": str(export),
        "prompts": args.prompts,
        "samples_per_prompt": args.samples,
        "max_tokens": args.max_tokens,
        "seed": args.seed,
        "settings": SWEEP,
        "results": [asdict(r) for r in results],
    }
    (out / "diversity.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(results, out / "diversity.png")
    print(table(results))
    print(f"\nwrote {out / 'diversity.json'} and {out / 'diversity.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
