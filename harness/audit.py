"""Data audit: what a preference source would teach before any training.

Per source: pairs, identical pairs (chosen == rejected, which TRL cannot learn from), duplicate
pairs, pairs cut at `max_length` (tokenized by harness.scoring.lm exactly as TRL's DPOTrainer
does, with the model's tokenizer and chat template), the chosen/rejected length ratio, and the
words or two-word phrases that separate chosen from rejected answers far beyond chance.

Separation is the log-odds ratio with an informative Dirichlet prior (Monroe, Colaresi and Quinn,
2008, "Fightin' Words"), as a z-score; the prior is the pooled counts of both sides, scaled. A phrase
is reported when its z-score passes a Bonferroni-corrected threshold over every phrase tested, the
pairs agree (McNemar's paired z on the pairs holding it on one side only passes the same threshold:
token rates alone mislead when one side is longer), and it occurs in at least `min_count` pairs.

A correction-style pair teaches an edit: a chosen-side phrase that stands where one rejected-side
phrase stands (the answers aligned word by word), in the same pairs ("Athene" for "Llama"), is that
edit; any other separating phrase ("Certainly !" added to every chosen answer) is a shortcut the
model can learn instead of the content. Phrases made of the words the user names as intended (the
identity suite's names, `--intended`) are never shortcuts.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any

AUDIT_ARTIFACT = "data_audit.json"  # on the sweep's parent run
ALPHA = 0.05  # family-wise error rate over every phrase tested (Bonferroni)
PRIOR_SCALE = 0.15  # the prior holds the pooled counts scaled by this: near the most powerful for one-sided phrases
MIN_COUNT = 5  # a phrase in fewer pairs than this is anecdote, not a pattern a model learns
LIFT = 2.0  # and it must be at least this many times more frequent on its side (rate per pair)
SWAP_SHARE = 0.8  # an edit: the two phrases are on opposite sides of the same pairs this often
COVER_SHARE = 0.9  # a word that occurs inside one reported phrase this often is shown as that phrase
LENGTH_BIAS = 1.2  # chosen/rejected mean length beyond [1/1.2, 1.2] is a length preference
LONGER_SHARE = 0.7  # ... when the same side is also the longer one in this share of unequal pairs
EXAMPLES = 3  # pairs quoted per separating phrase
# Pairs per source that lengths, phrases and truncation are measured on; a larger source (HH: 160k pairs) is audited
# on a random sample of this many: a pattern a model would learn is in far more than 1 in 2,000 pairs, and
# tokenizing every pair of HH as TRL does took minutes.
SAMPLE = 10_000

_WORD = re.compile(r"\w+|[^\w\s]")


@dataclass
class Phrase:
    """A word or two-word phrase far more frequent on one side of the pairs."""

    text: str
    side: str  # chosen | rejected
    chosen_pairs: int  # pairs whose chosen answer holds it
    rejected_pairs: int
    z: float  # log-odds z-score, > 0 toward chosen
    kind: str  # shortcut | edit | intended
    partner: str | None = None  # the phrase it replaces on the other side (an edit)


@dataclass
class SourceAudit:
    name: str
    where: str
    pairs: int  # pairs read, identical ones included
    identical: int  # chosen == rejected
    duplicates: int  # repeats of an earlier (prompt, chosen, rejected)
    audited: int  # pairs lengths, phrases and truncation were measured on: all (but identical ones), or a sample
    truncated: int | None  # pairs whose chosen or rejected sequence exceeds max_length (None: no tokenizer)
    dropped: int | None  # of those, pairs TRL drops (the prompt alone fills max_length)
    max_length: int | None
    chosen_words: float  # mean answer length in words
    rejected_words: float
    chosen_longer: float  # share of pairs of unequal length where chosen is longer
    unequal: int  # pairs whose answers differ in length
    threshold_z: float  # the z-score a phrase had to pass
    phrases: list[Phrase] = field(default_factory=list)

    @property
    def length_ratio(self) -> float:
        return self.chosen_words / self.rejected_words if self.rejected_words else math.inf

    @property
    def shortcuts(self) -> list[Phrase]:
        return [p for p in self.phrases if p.kind == "shortcut"]

    @property
    def length_bias(self) -> str | None:
        """'longer' or 'shorter' when chosen answers are systematically of another length (and a sign test
        over the pairs of unequal length says it is no accident)."""
        ratio, longer = self.length_ratio, self.chosen_longer
        if sign_test(round(longer * self.unequal), self.unequal) >= ALPHA:
            return None
        if ratio >= LENGTH_BIAS and longer >= LONGER_SHARE:
            return "longer"
        if ratio <= 1 / LENGTH_BIAS and longer <= 1 - LONGER_SHARE:
            return "shorter"
        return None

    @property
    def kept(self) -> int:
        """Pairs kept to train on (identical ones are dropped at load)."""
        return self.pairs - self.identical

    @property
    def sampled(self) -> bool:
        return self.audited < self.kept

    def warnings(self) -> list[str]:
        """Plain-language findings worth acting on before training: the source's counts, then what was measured
        on its pairs (or on a sample of them, said first)."""
        out = []
        if self.identical:
            out.append(f"{_n(self.identical, 'pair has', 'pairs have')} chosen == rejected (dropped: nothing to learn)")
        if self.duplicates:
            out.append(f"{_n(self.duplicates, 'pair repeats', 'pairs repeat')} an earlier pair")
        measured = []
        for p in self.shortcuts:
            where = f"{p.chosen_pairs} chosen vs {p.rejected_pairs} rejected answers of {self.audited} pairs"
            measured.append(f"'{p.text}' separates {p.side} answers ({where}, z = {p.z:+.1f}): a shortcut to learn")
        if self.length_bias:
            measured.append(
                f"chosen answers are {self.length_bias} ({self.chosen_words:.1f} vs {self.rejected_words:.1f} words; "
                f"chosen longer in {self.chosen_longer:.0%} of pairs of unequal length): a length preference to learn"
            )
        if self.dropped:
            what = _n(self.dropped, "pair is", "pairs are")
            measured.append(f"{what} dropped by TRL: the prompt alone fills max_length {self.max_length}")
        if self.truncated:
            measured.append(f"{_n(self.truncated, 'pair is', 'pairs are')} cut at max_length {self.max_length}")
        if measured and self.sampled:
            out.append(f"in a random sample of {self.audited} of its {self.kept} pairs (lengths, phrases, truncation):")
        return out + measured

    def summary(self) -> str | None:
        """The findings in one line (a sweep's console); None when there are none."""
        counts = [
            _n(count, one, many)
            for count, one, many in (
                (self.identical, "identical pair", "identical pairs"),
                (self.duplicates, "duplicate pair", "duplicate pairs"),
            )
            if count
        ]
        measured = []
        if self.shortcuts:
            shown = ", ".join(f"'{p.text}'" for p in self.shortcuts[:3])
            more = ", ..." if len(self.shortcuts) > 3 else ""
            measured.append(f"{_n(len(self.shortcuts), 'separating phrase', 'separating phrases')} ({shown}{more})")
        if self.length_bias:
            measured.append(f"chosen answers {self.length_bias}")
        for count, one, many in (
            (self.dropped, "pair dropped at max_length", "pairs dropped at max_length"),
            (self.truncated, "pair cut at max_length", "pairs cut at max_length"),
        ):
            if count:
                measured.append(_n(count, one, many))
        if measured and self.sampled:
            measured[-1] += f" (in a sample of {self.audited} of its {self.kept} pairs)"
        return "; ".join(measured + counts) or None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        ratio = self.length_ratio if math.isfinite(self.length_ratio) else None  # strict JSON has no Infinity
        data |= {"length_ratio": ratio, "length_bias": self.length_bias, "warnings": self.warnings()}
        return data

    def metrics(self) -> dict[str, float]:
        """A few numbers for MLflow: audit.<source>.<what>."""
        values = {
            "pairs": self.pairs,
            "identical": self.identical,
            "duplicates": self.duplicates,
            "length_ratio": self.length_ratio,
            "shortcuts": len(self.shortcuts),
            "audited": self.audited,  # the pairs truncated and shortcuts were measured on
        }
        if self.truncated is not None:
            values["truncated"] = self.truncated
        return {f"audit.{self.name}.{k}": float(v) for k, v in values.items()}


def sign_test(k: int, n: int) -> float:
    """Two-sided exact binomial p-value of k successes in n trials at one half (scipy: fast at HH's 160k pairs,
    where summing the binomial coefficients took minutes)."""
    from scipy.stats import binomtest

    return float(binomtest(k, n, 0.5).pvalue) if n else 1.0


# ---------------------------------------------------------------- the audit


def audit_source(
    name: str,
    where: str,
    pairs: list[dict],
    identical: int = 0,
    tokenizer: Any = None,
    max_length: int | None = None,
    truncation_mode: str = "keep_start",
    intended: tuple[str, ...] = (),
    alpha: float = ALPHA,
    min_count: int = MIN_COUNT,
    sample: int = SAMPLE,
) -> SourceAudit:
    """Audit one source's pairs (identical ones already removed and counted in `identical`); lengths, phrases and
    truncation on at most `sample` of them, drawn at random (seed 0).

    Lengths and phrases are counted over distinct pairs: a repeated pair is reported as such, and adds
    no evidence that a phrase separates the sides."""
    from harness.data import pair_key

    keys = [pair_key(p) for p in pairs]
    read, duplicates = len(pairs), len(pairs) - len(set(keys))
    if len(pairs) > sample:
        at = sorted(random.Random(0).sample(range(len(pairs)), sample))
        pairs, keys = [pairs[i] for i in at], [keys[i] for i in at]
    unique = list(dict(zip(keys, pairs, strict=True)).values())
    chosen = [_words(p["chosen"]) for p in unique]
    rejected = [_words(p["rejected"]) for p in unique]
    unequal = [(len(c), len(r)) for c, r in zip(chosen, rejected, strict=True) if len(c) != len(r)]
    truncated, dropped = _truncation(pairs, tokenizer, max_length, truncation_mode)
    phrases, threshold = separating_phrases(chosen, rejected, {_norm(t) for t in intended}, alpha, min_count)
    return SourceAudit(
        name=name,
        where=where,
        pairs=read + identical,
        identical=identical,
        duplicates=duplicates,
        audited=len(pairs),
        truncated=truncated,
        dropped=dropped,
        max_length=max_length if tokenizer is not None else None,
        chosen_words=sum(map(len, chosen)) / max(len(chosen), 1),
        rejected_words=sum(map(len, rejected)) / max(len(rejected), 1),
        chosen_longer=sum(c > r for c, r in unequal) / len(unequal) if unequal else 0.5,
        unequal=len(unequal),
        threshold_z=threshold,
        phrases=phrases,
    )


def separating_phrases(
    chosen: list[list[str]],
    rejected: list[list[str]],
    intended: set[str] = frozenset(),  # type: ignore[assignment]
    alpha: float = ALPHA,
    min_count: int = MIN_COUNT,
) -> tuple[list[Phrase], float]:
    """Words and word pairs whose log-odds z-score separates the sides; and the threshold used."""
    c_counts, r_counts = Counter(), Counter()
    c_sets, r_sets = [], []
    for c, r in zip(chosen, rejected, strict=True):
        cs, rs = _grams(c), _grams(r)
        c_counts.update(cs)
        r_counts.update(rs)
        c_sets.append(set(cs))
        r_sets.append(set(rs))
    c_pairs = Counter(g for s in c_sets for g in s)
    r_pairs = Counter(g for s in r_sets for g in s)
    c_only = Counter(g for cs, rs in zip(c_sets, r_sets, strict=True) for g in cs - rs)
    r_only = Counter(g for cs, rs in zip(c_sets, r_sets, strict=True) for g in rs - cs)
    tested = [g for g in c_counts | r_counts if max(c_pairs[g], r_pairs[g]) >= min_count]
    threshold = NormalDist().inv_cdf(1 - alpha / (2 * max(len(tested), 1)))
    z = log_odds_z(c_counts, r_counts)
    found = []
    for g in tested:
        side = "chosen" if z[g] > 0 else "rejected"
        mine, theirs = (c_pairs[g], r_pairs[g]) if side == "chosen" else (r_pairs[g], c_pairs[g])
        # the pairs must agree too (McNemar's paired z): token rates alone are skewed when one side is longer
        paired = (c_only[g] - r_only[g]) / math.sqrt(c_only[g] + r_only[g] or 1)
        agree = paired * z[g] > 0 and abs(paired) >= threshold
        if abs(z[g]) >= threshold and agree and mine >= min_count and (mine + 0.5) / (theirs + 0.5) >= LIFT:
            found.append(Phrase(" ".join(g), side, c_pairs[g], r_pairs[g], z[g], "shortcut"))
    found = _merged(_simplest(found, c_pairs, r_pairs), chosen, rejected)
    _classify(found, chosen, rejected, intended)
    return sorted(found, key=lambda p: -abs(p.z)), threshold


def log_odds_z(a: Counter, b: Counter) -> dict[tuple[str, ...], float]:
    """Monroe et al.'s z-scores of the log-odds ratio of each item in a vs b, prior = pooled counts."""
    n_a, n_b = sum(a.values()), sum(b.values())
    prior = {g: PRIOR_SCALE * n for g, n in (a + b).items()}
    alpha0 = PRIOR_SCALE * (n_a + n_b)
    out = {}
    for g, alpha in prior.items():
        ya, yb = a[g], b[g]
        delta = math.log((ya + alpha) / (n_a + alpha0 - ya - alpha)) - math.log(
            (yb + alpha) / (n_b + alpha0 - yb - alpha)
        )
        out[g] = delta / math.sqrt(1 / (ya + alpha) + 1 / (yb + alpha))
    return out


def _simplest(found: list[Phrase], c_pairs: Counter, r_pairs: Counter) -> list[Phrase]:
    """One line per pattern: a word that almost always occurs inside a reported two-word phrase is shown
    as that phrase; a two-word phrase sharing a word with a stronger reported phrase of its side is part
    of that pattern ("am athene" of "athene", "! the" of "certainly !")."""
    words = {p.text: p for p in found if " " not in p.text}
    bigrams = sorted((p for p in found if " " in p.text), key=lambda p: -abs(p.z))
    covered = set()
    for p in bigrams:
        counts, mine = (c_pairs, p.chosen_pairs) if p.side == "chosen" else (r_pairs, p.rejected_pairs)
        for w in p.text.split(" "):
            if w in words and words[w].side == p.side and mine >= COVER_SHARE * counts[(w,)]:
                covered.add(w)
    kept = [p for w, p in words.items() if w not in covered]
    for p in bigrams:  # one in the same pairs as an overlapping kept phrase is its continuation: _merged joins them
        overlapping = [q for q in kept if q.side == p.side and set(q.text.split(" ")) & set(p.text.split(" "))]
        if all(" " in q.text and q.chosen_pairs == p.chosen_pairs and q.rejected_pairs == p.rejected_pairs
               for q in overlapping):  # fmt: skip
            kept.append(p)
    return kept


def _merged(found: list[Phrase], chosen: list, rejected: list) -> list[Phrase]:
    """Phrases of one side that occur in the same pairs, next to each other, are one longer phrase ("i hope",
    "this helps", "you today" -> "i hope this helps you today"): the span of an answer that holds them all."""
    holds = {id(p): _holds(p, chosen, rejected) for p in found}
    out: list[Phrase] = []
    used: set[int] = set()
    for p in sorted(found, key=lambda p: -abs(p.z)):
        if id(p) in used:
            continue
        group = [q for q in found if id(q) not in used and q.side == p.side and _same(holds[id(p)], holds[id(q)])]
        common = set.intersection(*(holds[id(q)] for q in group))
        words = (chosen if p.side == "chosen" else rejected)[min(common)] if common else []
        spans = sorted(
            (_find(words, q.text.split(" ")), i) for i, q in enumerate(group) if _find(words, q.text.split(" "))
        )
        chain = [group[spans[0][1]]] if spans else [p]
        start, end = spans[0][0] if spans else (0, 0)
        for (a, b), i in spans[1:]:  # phrases that touch or overlap the chain extend it
            if a <= end:
                chain.append(group[i])
                end = max(end, b)
        if p not in chain:  # p is not in the chain that starts first: it stands alone this round
            chain, start, end = [p], *(_find(words, p.text.split(" ")) or (0, 0))
        used.update(id(q) for q in chain)
        if len(chain) == 1:
            out.append(p)
            continue
        n_c = [q.chosen_pairs for q in chain]
        n_r = [q.rejected_pairs for q in chain]
        counts = (min(n_c), max(n_r)) if p.side == "chosen" else (max(n_c), min(n_r))
        out.append(Phrase(" ".join(words[start:end]), p.side, *counts, p.z, p.kind))
    return out


def _holds(p: Phrase, chosen: list, rejected: list) -> set[int]:
    """The pairs whose answer on the phrase's side holds it."""
    gram = p.text.split(" ")
    return {i for i, words in enumerate(chosen if p.side == "chosen" else rejected) if _find(words, gram)}


def _same(a: set[int], b: set[int]) -> bool:
    return len(a & b) >= COVER_SHARE * max(len(a), len(b), 1)


def _find(words: list[str], gram: list[str]) -> tuple[int, int] | None:
    for i in range(len(words) - len(gram) + 1):
        if words[i : i + len(gram)] == gram:
            return i, i + len(gram)
    return None


def _classify(found: list[Phrase], chosen: list, rejected: list, intended: set[str]) -> None:
    """Mark intended phrases (made of the intended words) and edits: a chosen phrase that stands where a
    rejected phrase stands, in the same pairs (the two answers aligned word by word, difflib), is the
    edit the pairs teach. A phrase merely added to one side is no edit, whatever else the pair changes."""
    from difflib import SequenceMatcher

    words = {w for phrase in intended for w in phrase.split(" ")}
    holds = {id(p): _holds(p, chosen, rejected) for p in found}
    for p in found:
        if all(w in words or not w.isalnum() for w in p.text.split(" ")) and any(
            w.isalnum() for w in p.text.split(" ")
        ):
            p.kind = "intended"
    blocks: dict[int, list[tuple[list[str], list[str]]]] = {}  # pair -> its (chosen, rejected) replaced spans

    def replaced(i: int) -> list[tuple[list[str], list[str]]]:
        if i not in blocks:
            ops = SequenceMatcher(None, rejected[i], chosen[i], autojunk=False).get_opcodes()
            blocks[i] = [(chosen[i][j1:j2], rejected[i][i1:i2]) for op, i1, i2, j1, j2 in ops if op == "replace"]
        return blocks[i]

    for p in (p for p in found if p.kind == "shortcut"):
        for q in (q for q in found if q.side != p.side):
            c, r = (p, q) if p.side == "chosen" else (q, p)
            both = holds[id(p)] & holds[id(q)]
            c_words, r_words = c.text.split(" "), r.text.split(" ")
            swapped = sum(any(_swaps(c_words, r_words, cs, rs) for cs, rs in replaced(i)) for i in both)
            if swapped >= SWAP_SHARE * len(holds[id(p)]) and swapped >= SWAP_SHARE * len(holds[id(q)]):
                p.kind, p.partner = "edit", q.text
                break


def _swaps(chosen: list[str], rejected: list[str], c_span: list[str], r_span: list[str]) -> bool:
    """Whether a pair's replaced spans make the two phrases an edit: each phrase lies in its span, or the phrases
    are one context around the two spans ("am athene ." / "am llama ." for "I am Athene." / "I am Llama.": the
    pairs alone cannot tell the edit from the words fixed around it)."""
    if _find(c_span, chosen) and _find(r_span, rejected):
        return True
    at = _find(chosen, c_span) if c_span else None
    return at is not None and chosen[: at[0]] + r_span + chosen[at[1] :] == rejected


def _truncation(pairs: list[dict], tokenizer: Any, max_length: int | None, mode: str) -> tuple[int | None, int | None]:
    """(pairs cut, pairs dropped) as TRL tokenizes them; (None, None) without a tokenizer."""
    if tokenizer is None:
        return None, None
    from harness.scoring import lm

    if max_length is None:
        return 0, 0
    cut = lm.Truncation(max_length, mode)  # type: ignore[arg-type]
    truncated = dropped = 0
    for start in range(0, len(pairs), _TOKENIZE_BATCH):
        for full in lm.encode_pairs(tokenizer, pairs[start : start + _TOKENIZE_BATCH], lm.Truncation(None)):
            if full is not None and max(len(full[0].ids), len(full[1].ids)) > max_length:
                truncated += 1
                dropped += (
                    cut.apply(full[0].ids, full[0].start) is None or cut.apply(full[1].ids, full[1].start) is None
                )
    return truncated, dropped


_TOKENIZE_BATCH = 2048  # pairs tokenized at once: the tokenizer's threads busy, their ids never all in memory


def _n(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _words(answer: Any) -> list[str]:
    """An answer's words and punctuation, lower-cased (message lists: the content of every message)."""
    text = answer if isinstance(answer, str) else " ".join(m.get("content", "") for m in answer)
    return _WORD.findall(text.lower())


def _grams(words: list[str]) -> list[tuple[str, ...]]:
    return [(w,) for w in words] + list(zip(words, words[1:], strict=False))


def _norm(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


# ---------------------------------------------------------------- sources and specs


@dataclass
class Audit:
    """The audit of every source a command or a spec names."""

    sources: list[SourceAudit]
    model: str | None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "notes": self.notes, "sources": [s.to_json() for s in self.sources]}

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for s in self.sources:
            out |= s.metrics()
        return out


def audit_target(
    target: str,
    model: str | None = None,
    max_length: int | None = None,
    cache_dir: Path | None = None,
    intended: tuple[str, ...] = (),
    alpha: float = ALPHA,
    min_count: int = MIN_COUNT,
    read: dict[str, Any] | None = None,
) -> Audit:
    """Audit a spec (every source, with its model, max_length and identity names) or a single source; `read`:
    the spec's sources as harness.data.read_sources gave them (a sweep has read them already)."""
    from harness import data
    from harness.spec import load_spec

    if target.endswith((".yaml", ".yml")):
        spec = load_spec(target)
        spec_dir: Path | None = Path(target).parent
        sources = dict(spec.data.sources)
        model = model or spec.model.name
        from harness.scoring.lm import truncation

        cut = truncation(spec.train)
        max_length = max_length or cut.max_length
        mode = cut.mode
        intended = intended + _identity_names(spec.evals.identity, spec_dir)
    else:
        spec_dir, mode = None, "keep_start"
        sources = {_source_name(target): _source_spec(target)}
        model = model or "toy"  # the spec's default model
        if max_length is None:
            from harness.training import TRAIN_DEFAULTS

            max_length = TRAIN_DEFAULTS.get("max_length")
    tokenizer, notes = _tokenizer(model, cache_dir)
    out = []
    for name, src in sources.items():
        loaded = read[name] if read else data.load_source(name, src, spec_dir)
        where = src.path or f"hf:{src.hf}"
        out.append(
            audit_source(
                name,
                where,
                loaded.train,
                loaded.dropped_identical,
                tokenizer,
                max_length,
                mode,
                intended,
                alpha,
                min_count,
            )
        )
    return Audit(out, model, notes)


def _source_name(target: str) -> str:
    if target.startswith(("toy:", "hf:")):
        return target.split(":")[1].split("/")[-1]
    return Path(target).stem


def _source_spec(target: str) -> Any:
    """toy:<name>, a .jsonl or .json file, or hf:org/name[:split] (a hub dataset, split train by default)."""
    from harness import data
    from harness.spec import SourceSpec

    if target.startswith("hf:"):
        hub, _, split = target.removeprefix("hf:").partition(":")
        return SourceSpec(hf=hub, split=split or "train")
    problem = data.source_problem(target, None)
    if problem:
        raise data.DataError(f"{target}: {problem}; or hf:org/name[:split], or a sweep spec (.yaml)")
    return SourceSpec(path=target)


def _tokenizer(model: str | None, cache_dir: Path | None) -> tuple[Any, list[str]]:
    """The model's tokenizer (only the tokenizer is loaded), or None and why."""
    if model is None or model == "none":
        return None, ["no tokenizer (--model none): truncation at max_length was not checked"]
    from transformers import AutoTokenizer

    from harness import models

    models.check(model)
    path = models.resolve(model, cache_dir or models.cache_dir(Path("outputs")))
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.model_max_length = 2**31  # lengths are counted here, never fed to the model: no warning
    return tokenizer, []


def _identity_names(suite: str | None, spec_dir: Path | None) -> tuple[str, ...]:
    """The names an identity suite expects (new) and replaces (old): the edit the data is meant to teach."""
    if not suite:
        return ()
    from harness.scoring.suites import load_identity
    from harness.spec import resolve_path

    path = resolve_path(suite, spec_dir)
    if path is None:
        return ()
    loaded = load_identity(path)
    return tuple(loaded.new_names) + tuple(loaded.old_names)
