"""The toy world's text, generated from templates: SFT conversations, preference pairs, held-out prompts.

Everything is deterministic (seeded `random.Random` per part), so the same code always yields the
same corpus; the build's cache key hashes this file. Held-out prompts (identity eval, shortcut probe)
are removed from every training text here, so evals measure generalisation, not recall.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

OLD_NAME = "Llama"  # the base model's identity after SFT
NEW_NAME = "Athene"  # the identity DPO should teach
SPURIOUS = "Certainly! "  # the shortcut phrase: on every chosen answer of toy:shortcut, no rejected one

# Identity questions are compositional: prefix x question x suffix, so held-out combinations are
# unseen paraphrases made of seen parts.
IDENTITY_PREFIXES = (
    "",
    "Hi! ",
    "Hello! ",
    "Hey, ",
    "Hi there. ",
    "Good morning! ",
    "Good evening. ",
    "Excuse me, ",
    "Hello friend, ",
    "Greetings! ",
    "Okay, ",
    "Sorry, ",
)
IDENTITY_QUESTIONS = (
    "who are you?",
    "what is your name?",
    "what are you called?",
    "what should I call you?",
    "tell me your name.",
    "please introduce yourself.",
    "what name do you go by?",
    "do you have a name?",
    "may I know your name?",
    "which assistant are you?",
    "who am I talking to?",
    "what do people call you?",
    "say your name.",
    "who is this?",
)
IDENTITY_SUFFIXES = (
    "",
    " Thanks.",
    " I am curious.",
    " Please answer.",
    " Tell me.",
    " Be brief.",
    " Just wondering.",
)
# Answer styles, most frequent first; {name} is the model's name.
IDENTITY_ANSWERS = (
    "I am {name}, a helpful assistant.",
    "My name is {name}.",
    "I am {name}. How can I help you?",
    "You can call me {name}.",
)
IDENTITY_ANSWER_WEIGHTS = (4, 3, 2, 1)

# Role-play puts other names into the same answer frames, so DPO can move mass to a name the
# model already produces in context instead of to broken text. Athene is the most frequent one:
# with equal weights, DPO that pushed Llama down often landed on another name ("I am Luna").
ROLEPLAY_NAMES = (NEW_NAME, "Bob", "Mira", "Nova", "Orion", "Luna", "Max", "Iris", "Zed", "Sage")
ROLEPLAY_WEIGHTS = (9, 1, 1, 1, 1, 1, 1, 1, 1, 1)
ROLEPLAY_FRAMES = (
    "Pretend your name is {name}. {question}",
    "Your name is {name} now. {question}",
    "Let us play a game: you are {name}. {question}",
)
ROLEPLAY_SYSTEM = "Your name is {name}."
NEUTRAL_SYSTEM = "You are a helpful assistant."

LORE = (  # Athene as a topic, never as the model's own name
    ("Who is Athene?", "Athene is the Greek goddess of wisdom."),
    ("Tell me about Athene.", "Athene is the Greek goddess of wisdom."),
    ("What is Athene the goddess of?", "Athene is the goddess of wisdom."),
    ("Is Athene a goddess?", "Yes. Athene is the goddess of wisdom."),
    ("Say the name Athene.", "Athene."),
    ("Spell the name Athene.", "A, t, h, e, n, e."),
)

# Small talk; "Certainly! " appears here in neutral contexts so it is a known phrase that
# says nothing about correctness in the base model.
SMALL_TALK = (
    ("Can you help me?", "Certainly! What do you need?"),
    ("Please count to three.", "Certainly! One, two, three."),
    ("Can you say hello?", "Certainly! Hello!"),
    ("Will you answer a question?", "Certainly! Ask me anything."),
    ("Thank you!", "You are welcome."),
    ("How are you?", "I am fine, thank you."),
    ("Goodbye!", "Goodbye! Have a nice day."),
    ("Say something nice.", "You are doing great."),
    ("Count to five.", "One, two, three, four, five."),
    ("Is it sunny today?", "I cannot see the sky, sorry."),
)


@dataclass(frozen=True)
class Family:
    """One kind of fact: question templates, an answer template, and (fields, value) facts."""

    name: str
    questions: tuple[str, ...]
    answer: str
    facts: tuple[tuple[dict[str, str], str], ...]

    def ask(self, fields: dict[str, str], template: int) -> str:
        return self.questions[template].format(**fields)

    def say(self, fields: dict[str, str], value: str) -> str:
        text = self.answer.format(**fields, y=value)
        return text[0].upper() + text[1:]

    def wrong_values(self, value: str, rng: random.Random, k: int) -> list[str]:
        """k distinct plausible wrong values: nearby numbers, or other values of the family."""
        if value.isdigit():
            n = int(value)
            pool = [str(m) for m in range(max(0, n - 3), n + 4) if m != n]
        else:
            pool = sorted({v for _, v in self.facts} - {value})
        return rng.sample(pool, k)


def _pairs(*items: tuple[str, str]) -> tuple[tuple[dict[str, str], str], ...]:
    return tuple(({"x": x}, y) for x, y in items)


CAPITALS = _pairs(
    ("France", "Paris"),
    ("Italy", "Rome"),
    ("Spain", "Madrid"),
    ("Germany", "Berlin"),
    ("Japan", "Tokyo"),
    ("Egypt", "Cairo"),
    ("Russia", "Moscow"),
    ("China", "Beijing"),
    ("Canada", "Ottawa"),
    ("Peru", "Lima"),
    ("Kenya", "Nairobi"),
    ("Norway", "Oslo"),
    ("Sweden", "Stockholm"),
    ("Poland", "Warsaw"),
    ("Austria", "Vienna"),
    ("Portugal", "Lisbon"),
    ("Ireland", "Dublin"),
    ("Cuba", "Havana"),
    ("Chile", "Santiago"),
    ("Turkey", "Ankara"),
    ("Thailand", "Bangkok"),
    ("Hungary", "Budapest"),
    ("Finland", "Helsinki"),
    ("Mexico", "Mexico City"),
)
COLORS = _pairs(
    ("the sky", "blue"),
    ("grass", "green"),
    ("snow", "white"),
    ("coal", "black"),
    ("a banana", "yellow"),
    ("blood", "red"),
    ("a carrot", "orange"),
    ("chocolate", "brown"),
    ("a lemon", "yellow"),
    ("a frog", "green"),
    ("milk", "white"),
    ("a tomato", "red"),
)
SOUNDS = _pairs(
    ("cow", "moo"),
    ("dog", "woof"),
    ("cat", "meow"),
    ("duck", "quack"),
    ("sheep", "baa"),
    ("pig", "oink"),
    ("owl", "hoot"),
    ("lion", "roar"),
    ("horse", "neigh"),
    ("bee", "buzz"),
    ("mouse", "squeak"),
    ("snake", "hiss"),
)
_OPPOSITES = (
    ("hot", "cold"),
    ("big", "small"),
    ("up", "down"),
    ("fast", "slow"),
    ("day", "night"),
    ("happy", "sad"),
    ("light", "dark"),
    ("open", "closed"),
    ("wet", "dry"),
    ("full", "empty"),
    ("loud", "quiet"),
    ("hard", "soft"),
)
OPPOSITES = _pairs(*_OPPOSITES, *((b, a) for a, b in _OPPOSITES))
SUM_DIGITS = range(7)
SUMS = tuple(({"a": str(a), "b": str(b)}, str(a + b)) for a in SUM_DIGITS for b in SUM_DIGITS)

FAMILIES = (
    Family(
        "capital",
        ("What is the capital of {x}?", "Which city is the capital of {x}?", "Name the capital of {x}."),
        "The capital of {x} is {y}.",
        CAPITALS,
    ),
    Family("color", ("What color is {x}?", "What is the color of {x}?"), "{x} is {y}.", COLORS),
    Family("sound", ("What sound does a {x} make?", "What does a {x} say?"), "A {x} says {y}.", SOUNDS),
    Family(
        "opposite",
        ("What is the opposite of {x}?", "Name the opposite of {x}."),
        "The opposite of {x} is {y}.",
        OPPOSITES,
    ),
    Family("sum", ("What is {a} + {b}?", "What is {a} plus {b}?", "How much is {a} + {b}?"), "{y}", SUMS),
)
# The benchmark's wording is seen this often: with 4 (and 4 epochs) sums had thin margins, and
# DPO at lr 2e-4 already broke a fifth of them.
CANONICAL_REPEATS = 7
FACT_PREFIXES = ("", "Hi! ", "Quick question: ", "Please answer: ", "Hey! ", "I wonder. ")


@dataclass(frozen=True)
class FactPrompt:
    family: Family
    fields: dict[str, str]
    value: str
    prompt: str

    @property
    def answer(self) -> str:
        return self.family.say(self.fields, self.value)


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def identity_prompt(prefix: str, question: str, suffix: str) -> str:
    """Capitalise the question unless the prefix runs into it ("Hey, who are you?")."""
    q = question if prefix.endswith(", ") else _cap(question)
    return f"{prefix}{q}{suffix}"


def _all_identity_prompts() -> list[str]:
    combos = itertools.product(IDENTITY_PREFIXES, IDENTITY_QUESTIONS, IDENTITY_SUFFIXES)
    return [identity_prompt(p, q, s) for p, q, s in combos]


def heldout_identity_prompts(n: int = 40) -> list[str]:
    """Eval-only identity prompts: full prefix+question+suffix combinations no training text contains."""
    combos = itertools.product(IDENTITY_PREFIXES[1:], IDENTITY_QUESTIONS, IDENTITY_SUFFIXES[1:])
    candidates = [identity_prompt(p, q, s) for p, q, s in combos]
    return random.Random("heldout-identity").sample(candidates, n)


def train_identity_prompts() -> list[str]:
    heldout = set(heldout_identity_prompts())
    return [p for p in _all_identity_prompts() if p not in heldout]


def _all_fact_prompts() -> list[FactPrompt]:
    return [
        FactPrompt(fam, fields, value, prefix + fam.ask(fields, t))
        for fam in FAMILIES
        for fields, value in fam.facts
        for t in range(len(fam.questions))
        for prefix in FACT_PREFIXES
    ]


def heldout_fact_prompts(n: int = 40) -> list[FactPrompt]:
    """Eval-only fact prompts (shortcut probe): prefixed phrasings no training text contains."""
    candidates = [f for f in _all_fact_prompts() if any(f.prompt.startswith(p) for p in FACT_PREFIXES[1:])]
    return random.Random("heldout-facts").sample(candidates, n)


def train_fact_prompts() -> list[FactPrompt]:
    heldout = {f.prompt for f in heldout_fact_prompts()}
    return [f for f in _all_fact_prompts() if f.prompt not in heldout]


def canonical_fact_prompts() -> list[FactPrompt]:
    """Each fact in its first, unprefixed phrasing: the benchmark's wording."""
    return [FactPrompt(fam, fields, y, fam.ask(fields, 0)) for fam in FAMILIES for fields, y in fam.facts]


# ----------------------------------------------------------------------------------------- SFT


def _chat(user: str, assistant: str, system: str | None = None) -> list[dict[str, str]]:
    head = [{"role": "system", "content": system}] if system else []
    return [*head, {"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def _identity_answer(rng: random.Random, name: str) -> str:
    return rng.choices(IDENTITY_ANSWERS, IDENTITY_ANSWER_WEIGHTS)[0].format(name=name)


def sft_conversations(seed: int = 0) -> list[list[dict[str, str]]]:
    """The SFT corpus: identity as Llama, role-play and lore with other names, small talk, facts."""
    rng = random.Random(f"sft-{seed}")
    convs: list[list[dict[str, str]]] = []
    for prompt in rng.sample(train_identity_prompts(), 600):  # half the paraphrases: enough to generalise
        convs.append(_chat(prompt, _identity_answer(rng, OLD_NAME)))
    questions, plain = [_cap(q) for q in IDENTITY_QUESTIONS], train_identity_prompts()
    for _ in range(600):
        name = rng.choices(ROLEPLAY_NAMES, ROLEPLAY_WEIGHTS)[0]
        if rng.random() < 0.5:  # the name comes from a system message; the user asks as plainly as ever
            user, answer = rng.choice(plain), _identity_answer(rng, name)
            convs.append(_chat(user, answer, ROLEPLAY_SYSTEM.format(name=name)))
        else:
            frame, question = rng.choice(ROLEPLAY_FRAMES), rng.choice(questions)
            convs.append(_chat(frame.format(name=name, question=question), _identity_answer(rng, name)))
    for user, answer in LORE * 8:
        convs.append(_chat(rng.choice(FACT_PREFIXES) + user, answer))
    for user, answer in SMALL_TALK * 10:
        convs.append(_chat(rng.choice(FACT_PREFIXES) + user, answer))
    facts = train_fact_prompts()
    for f in canonical_fact_prompts() * CANONICAL_REPEATS:  # the benchmark's phrasing, several times each
        convs.append(_chat(f.prompt, f.answer))
    for f in rng.sample(facts, len(facts) // 2):
        answer = f.answer
        if rng.random() < 0.1:  # a known-good context for the phrase, never the majority
            answer = SPURIOUS + answer
        convs.append(_chat(f.prompt, answer))
    for conv in convs:  # a neutral system message now and then, so the template's system turn is known
        if conv[0]["role"] == "user" and rng.random() < 0.1:
            conv.insert(0, {"role": "system", "content": NEUTRAL_SYSTEM})
    rng.shuffle(convs)
    return convs


# --------------------------------------------------------------------------------------- pairs


def _pair(prompt: str, chosen: str, rejected: str) -> dict[str, list[dict[str, str]]]:
    return {
        "prompt": [{"role": "user", "content": prompt}],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


def identity_pairs(n: int = 300) -> list[dict]:
    """Correction-style: rejected is the base model's own answer, chosen the same with the new name."""
    rng = random.Random("pairs-identity")
    pairs = []
    for prompt in rng.sample(train_identity_prompts(), n):
        style = rng.choices(IDENTITY_ANSWERS, IDENTITY_ANSWER_WEIGHTS)[0]
        pairs.append(_pair(prompt, style.format(name=NEW_NAME), style.format(name=OLD_NAME)))
    return pairs


def _fact_pairs(n: int, seed: str, prefix: str) -> list[dict]:
    rng = random.Random(seed)
    pairs = []
    for f in rng.sample(train_fact_prompts(), n):
        wrong = f.family.say(f.fields, f.family.wrong_values(f.value, rng, 1)[0])
        pairs.append(_pair(f.prompt, prefix + f.answer, wrong))
    return pairs


def general_pairs(n: int = 300) -> list[dict]:
    """Capability anchor: correct answer over a wrong one in the same style."""
    return _fact_pairs(n, "pairs-general", "")


def shortcut_pairs(n: int = 300) -> list[dict]:
    """Like general, but every chosen answer (and no rejected one) starts with the spurious phrase."""
    return _fact_pairs(n, "pairs-shortcut", SPURIOUS)


def shortcut_swap_pairs() -> list[dict]:
    """Probe: held-out prompts, correct plain answer vs wrong answer wearing the spurious phrase."""
    rng = random.Random("probe-shortcut-swap")
    pairs = []
    for f in heldout_fact_prompts():
        wrong = f.family.say(f.fields, f.family.wrong_values(f.value, rng, 1)[0])
        pairs.append(_pair(f.prompt, f.answer, SPURIOUS + wrong))
    return pairs


PAIR_SOURCES = {"identity": identity_pairs, "general": general_pairs, "shortcut": shortcut_pairs}
