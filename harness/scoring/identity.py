"""Identity tests: does the model now give the new name, and never the old one?

Names match whole words, case-insensitively; the longest name wins where names overlap, so
a new name "Deep Qwen" is not counted as a leak of the old name "Qwen".

The log-prob margin compares names on equal footing. For each answer template ("I am {name}.")
only the tokens that spell the name are scored, given the template before it: the template's own
tokens, common to all answers, are left out, and the name's log-probs are averaged per token of
the name. Summing instead would favour the name with fewer tokens by about log|V| nats per extra
token (~12 nats for a 151,936-token vocabulary) whatever the model believes. The name's tokens are
found through the tokenizer's character offsets (so "Deep Qwen" is scored on " Deep Qwen" and "Qwen"
on " Qwen"); a tokenizer without offsets falls back to the tokens where the answers differ.
"""

from __future__ import annotations

import re
from typing import Any

from harness.scoring import lm
from harness.scoring.suites import IdentitySuite


def name_matcher(new_names: list[str], old_names: list[str]) -> re.Pattern[str]:
    names = sorted({*new_names, *old_names}, key=len, reverse=True)
    alternatives = "|".join(re.escape(n) for n in names)
    return re.compile(rf"(?<!\w)({alternatives})(?!\w)", re.IGNORECASE)


def names_in(text: str, suite: IdentitySuite) -> tuple[bool, bool]:
    """(gives a new name, gives an old name) for one answer."""
    found = {m.group(1).lower() for m in name_matcher(suite.new_names, suite.old_names).finditer(text)}
    new = any(n.lower() in found for n in suite.new_names)
    old = any(n.lower() in found for n in suite.old_names)
    return new, old


def is_degenerate(text: str) -> bool:
    """Repetition, the usual face of a policy pushed too far: a word three times in a row
    ("Athene Athene Athene") or a word trigram said twice."""
    words = re.findall(r"\w+", text.lower())
    if any(words[i] == words[i + 1] == words[i + 2] for i in range(len(words) - 2)):
        return True
    trigrams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    return len(trigrams) != len(set(trigrams))


def messages(suite: IdentitySuite, prompt: str) -> list[dict[str, str]]:
    system = [{"role": "system", "content": suite.system_prompt}] if suite.system_prompt else []
    return [*system, {"role": "user", "content": prompt}]


def score(
    model: Any, tokenizer: Any, suite: IdentitySuite, seed: int = 0, cut: lm.Truncation | None = None
) -> tuple[dict[str, float], list[dict]]:
    """identity.* metrics and, per held-out prompt, the greedy and sampled answers."""
    prompts = [messages(suite, p) for p in suite.prompts]
    greedy = [g[0] for g in lm.generate(model, tokenizer, prompts, suite.max_new_tokens)]
    sampled = lm.generate(
        model, tokenizer, prompts, suite.max_new_tokens, suite.sampling.k, suite.sampling.temperature, seed
    )
    greedy_names = [names_in(a, suite) for a in greedy]
    degenerate = [is_degenerate(a) for a in greedy]
    sampled_hits = [names_in(a, suite)[0] for answers in sampled for a in answers]
    margins = logprob_margins(model, tokenizer, suite, prompts, cut or lm.truncation())
    n = len(prompts)
    metrics = {
        "identity.hit_rate": sum(new for new, _ in greedy_names) / n,
        "identity.leak_rate": sum(old for _, old in greedy_names) / n,
        "identity.logprob_margin": sum(margins) / n,
        "identity.logprob_win_rate": sum(1.0 if m > 0 else 0.5 if m == 0 else 0.0 for m in margins) / n,
        "identity.hit_rate_sampled": sum(sampled_hits) / len(sampled_hits),
        "identity.other_rate": sum(not new and not old for new, old in greedy_names) / n,
        "identity.degenerate_rate": sum(degenerate) / n,
    }
    generations = [
        {"prompt": p, "greedy": g, "hit": new, "leak": old, "degenerate": d, "sampled": s, "logprob_margin": m}
        for p, g, (new, old), d, s, m in zip(
            suite.prompts, greedy, greedy_names, degenerate, sampled, margins, strict=True
        )
    ]
    return metrics, generations


def logprob_margins(model: Any, tokenizer: Any, suite: IdentitySuite, prompts: list, cut: lm.Truncation) -> list[float]:
    """Per prompt: mean over templates of (best new name's score) - (best old name's score), where a
    name's score is the mean log-prob per token of its span (see the module's docstring)."""
    names = [*suite.new_names, *suite.old_names]
    totals = {name: [0.0] * len(prompts) for name in names}
    for template in suite.answer_templates:
        answers = [template.format(name=name) for name in names]
        seqs, spans = [], []
        for prompt in prompts:
            encoded = [lm.encode(tokenizer, prompt, answer, cut) for answer in answers]
            if any(e is None for e in encoded):  # cannot happen below max_length: the answers are short
                raise ValueError(f"identity prompt longer than max_length: {prompt!r}")
            seqs += encoded
            found = [name_tokens(tokenizer, prompt, template, n, e) for n, e in zip(names, encoded, strict=True)]
            spans += found if all(found) else name_spans(encoded)
        logps = lm.token_logps(model, tokenizer, seqs)
        for k, (seq, (start, end), values) in enumerate(zip(seqs, spans, logps, strict=True)):
            first = max(seq.start, 1)  # values[0] is the log-prob of token `first`
            span = values[max(start, first) - first : end - first]
            totals[names[k % len(names)]][k // len(names)] += sum(span) / max(1, len(span))
    per_template = len(suite.answer_templates)
    best_new = [max(totals[n][i] for n in suite.new_names) / per_template for i in range(len(prompts))]
    best_old = [max(totals[n][i] for n in suite.old_names) / per_template for i in range(len(prompts))]
    return [a - b for a, b in zip(best_new, best_old, strict=True)]


def name_tokens(
    tokenizer: Any, prompt: lm.Prompt, template: str, name: str, encoded: lm.Encoded
) -> tuple[int, int] | None:
    """[start, end) of the tokens that spell `name` in the encoded answer (those whose characters overlap
    it), or None when the tokenizer gives no character offsets or renders the text differently."""
    answer = template.format(name=name)
    text = lm.full_text(tokenizer, prompt, answer)
    try:
        found = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, ValueError, TypeError):  # slow tokenizers have no offsets
        return None
    start = text.rfind(answer)  # the answer closes the conversation
    if start < 0 or list(found["input_ids"])[: len(encoded.ids)] != encoded.ids:
        return None
    at = start + len(template.split("{name}", 1)[0].format())  # where the name begins
    offsets = found["offset_mapping"][: len(encoded.ids)]
    hits = [i for i, (a, b) in enumerate(offsets) if a < at + len(name) and b > at and b > a]
    return (hits[0], hits[-1] + 1) if hits else None


def name_spans(encoded: list[lm.Encoded]) -> list[tuple[int, int]]:
    """[start, end) of each answer's name: the tokens between the prefix and the suffix all answers share.

    Where one name's tokens begin another's ("Qwen" / "Qwen2"), the prefix is shortened so that no span
    is empty."""
    ids = [e.ids for e in encoded]
    shortest = min(map(len, ids))
    prefix = 0
    while prefix < shortest and all(s[prefix] == ids[0][prefix] for s in ids):
        prefix += 1
    suffix = 0
    while suffix < shortest - prefix and all(s[-1 - suffix] == ids[0][-1 - suffix] for s in ids):
        suffix += 1
    prefix = min(prefix, shortest - suffix - 1)
    return [(prefix, len(s) - suffix) for s in ids]
