"""Identity tests: does the model now give the new name, and never the old one?

Names match whole words, case-insensitively; the longest name wins where names overlap, so
a new name "Deep Qwen" is not counted as a leak of the old name "Qwen".
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


def score(model: Any, tokenizer: Any, suite: IdentitySuite, seed: int = 0) -> tuple[dict[str, float], list[dict]]:
    """identity.* metrics and, per held-out prompt, the greedy and sampled answers."""
    prompts = [messages(suite, p) for p in suite.prompts]
    greedy = [g[0] for g in lm.generate(model, tokenizer, prompts, suite.max_new_tokens)]
    sampled = lm.generate(
        model, tokenizer, prompts, suite.max_new_tokens, suite.sampling.k, suite.sampling.temperature, seed
    )
    greedy_names = [names_in(a, suite) for a in greedy]
    degenerate = [is_degenerate(a) for a in greedy]
    sampled_hits = [names_in(a, suite)[0] for answers in sampled for a in answers]
    margins = _logprob_margins(model, tokenizer, suite, prompts)
    n = len(prompts)
    metrics = {
        "identity.hit_rate": sum(new for new, _ in greedy_names) / n,
        "identity.leak_rate": sum(old for _, old in greedy_names) / n,
        "identity.logprob_margin": sum(margins) / n,
        "identity.logprob_win_rate": sum(m > 0 for m in margins) / n,
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


def _logprob_margins(model: Any, tokenizer: Any, suite: IdentitySuite, prompts: list) -> list[float]:
    """Per prompt: mean over templates of log π(answer, best new name) - log π(answer, best old name)."""

    def best(names: list[str]) -> list[float]:
        per_name = []
        for name in names:
            scores = [
                lm.completion_logps(model, tokenizer, prompts, [t.format(name=name)] * len(prompts))
                for t in suite.answer_templates
            ]
            per_name.append([sum(col) / len(col) for col in zip(*scores, strict=True)])
        return [max(col) for col in zip(*per_name, strict=True)]

    return [a - b for a, b in zip(best(suite.new_names), best(suite.old_names), strict=True)]
