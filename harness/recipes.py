"""Preference pairs built from a model's own answers: the correction and on-policy recipes.

    correction  the model's greedy answer is rejected; chosen is that answer rewritten by a rule
                (regex substitutions "PATTERN=REPLACEMENT") or a function module:func(prompt, answer)
    on-policy   k sampled answers per prompt, scored by a reward (harness.rewards): the best is chosen,
                the worst rejected; a prompt whose answers all score the same is dropped (a tie)

Answers come from harness.scoring.lm.generate (the prompt rendered with the model's chat template as
TRL does). The output is JSON lines in TRL's conversational format (standard format for a model
without a chat template) with a `provenance` field per row, so a built file is an ordinary source.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.data import DataError

RECIPES = ("correction", "on-policy")
Rewrite = Callable[[Any, str], "str | None"]


class RecipeError(ValueError):
    """A recipe's options cannot be used; the message says what would be valid."""


@dataclass
class Built:
    """What a build wrote, and what it dropped and why."""

    path: Path
    prompts: int
    pairs: int
    dropped: Counter = field(default_factory=Counter)  # reason -> prompts


# ---------------------------------------------------------------- prompts


def read_prompts(source: str, limit: int | None = None) -> list[str | list[dict]]:
    """Prompts from toy:<source> (its pairs' prompts), a .txt file (one per line), or a .jsonl / .json
    file of rows with a `prompt` (a string or a message list) or of preference pairs in any format."""
    if source.startswith("toy:"):
        from harness.toy import TOY_SOURCES, toy_pairs

        name = source.removeprefix("toy:")
        if name not in TOY_SOURCES:
            raise DataError(
                f"unknown built-in source '{source}'. Available: {', '.join('toy:' + n for n in TOY_SOURCES)}"
            )
        prompts = [pair["prompt"] for pair in toy_pairs(name)]
    else:
        path = Path(source)
        if not path.is_file():
            raise DataError(f"no such prompts file: {source} (expected toy:<source>, a .txt, .jsonl or .json file)")
        prompts = _read_txt(path) if path.suffix == ".txt" else _read_rows(path)
    unique = list({json.dumps(p, sort_keys=True): p for p in prompts}.values())
    if not unique:
        raise DataError(f"{source}: no prompts")
    return unique[:limit] if limit else unique


def _read_txt(path: Path) -> list[str | list[dict]]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _read_rows(path: Path) -> list[str | list[dict]]:
    from harness import data, formats

    prompts = []
    for line, row in data.read_rows(path):
        if isinstance(row, dict) and set(row) <= {"prompt", "id", "metadata"} and "prompt" in row:
            prompt = row["prompt"]
            if not (isinstance(prompt, str) and prompt.strip()) and not _is_messages(prompt):
                raise DataError(f"{path}:{line}: 'prompt' must be a non-empty string or a list of messages")
            prompts.append(prompt)
            continue
        try:
            pair, _ = formats.convert(row)
        except formats.RowError as exc:
            raise DataError(f"{path}:{line}: expected {{'prompt': ...}} or a preference pair: {exc}") from None
        prompts.append(pair["prompt"])
    return prompts


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(m, dict) and "content" in m for m in value)


def as_chat(prompt: str | list[dict], tokenizer: Any) -> str | list[dict]:
    """A plain-text prompt for a chat model is a user turn: the model answers it as it was taught to."""
    if isinstance(prompt, str) and tokenizer.chat_template:
        return [{"role": "user", "content": prompt}]
    return prompt


# ---------------------------------------------------------------- rewrites (correction)


def check_options(recipe: str, replace: Any, rewrite: Any, reward: Any, steer: Any) -> None:
    """Each recipe takes its own options: one given to the other recipe is a mistake, said as such."""
    if recipe not in RECIPES:
        raise RecipeError(f"unknown recipe '{recipe}'. Available: {', '.join(RECIPES)}")
    other = {
        "correction": {"--reward": reward, "--steer": steer},
        "on-policy": {"--replace": replace, "--rewrite": rewrite},
    }
    given = [name for name, value in other[recipe].items() if value]
    if given:
        raise RecipeError(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to the {recipe} recipe")


def load_rewrite(replacements: list[str] | None, function: str | None) -> Rewrite:
    """Regex substitutions "PATTERN=REPLACEMENT" applied in order, or module:function(prompt, answer) -> str."""
    if bool(replacements) == bool(function):
        raise RecipeError(
            "correction needs exactly one of --replace PATTERN=REPLACEMENT (repeatable) or --rewrite module:function"
        )
    if function:
        module_name, _, name = function.partition(":")
        try:
            rewrite = getattr(importlib.import_module(module_name), name, None)
        except ImportError as exc:
            raise RecipeError(f"--rewrite {function!r}: cannot import module '{module_name}' ({exc})") from None
        if not callable(rewrite):
            raise RecipeError(f"--rewrite {function!r}: expected module:function, a callable (prompt, answer) -> str")
        return rewrite
    rules = []
    for text in replacements or []:
        pattern, sep, replacement = text.partition("=")
        if not sep or not pattern:
            raise RecipeError(f"--replace {text!r}: expected PATTERN=REPLACEMENT, e.g. 'Llama=Athene'")
        try:
            rules.append((re.compile(pattern), replacement))
        except re.error as exc:
            raise RecipeError(f"--replace {text!r}: not a valid regular expression ({exc})") from None

    def substitute(prompt: Any, answer: str) -> str:
        for pattern, replacement in rules:
            answer = pattern.sub(replacement, answer)
        return answer

    return substitute


# ---------------------------------------------------------------- the recipes


def correction(
    model: Any, tokenizer: Any, prompts: list, rewrite: Rewrite, max_new_tokens: int
) -> tuple[list, Counter]:
    """(prompt, chosen, rejected, provenance) rows: the greedy answer rejected, its rewrite chosen."""
    from harness.scoring import lm

    answers = lm.generate(model, tokenizer, prompts, max_new_tokens)
    rows, dropped = [], Counter()
    for i, (prompt, (answer,)) in enumerate(zip(prompts, answers, strict=True)):
        chosen = _call(rewrite, prompt, answer, f"the rewrite, on prompt {i + 1}") if answer else None
        if not answer:
            dropped["empty answer"] += 1
        elif not chosen or chosen == answer:
            dropped["rewrite left the answer unchanged"] += 1
        else:
            rows.append((prompt, chosen, answer, {}))
    return rows, dropped


def on_policy(
    model: Any,
    tokenizer: Any,
    prompts: list,
    reward: Callable[[Any, str], float],
    samples: int,
    temperature: float,
    max_new_tokens: int,
    seed: int,
    steer: str | None = None,
) -> tuple[list, Counter]:
    """(prompt, chosen, rejected, provenance) rows: of k sampled answers, the best and the worst by reward.

    `steer`: a system message under which half of the k answers are sampled (it is not stored in the
    pair): when the model alone never gives the answer the reward wants (a new name), the steered half
    supplies it and the unsteered half the model's own habits (context distillation)."""
    from harness.scoring import lm

    steered = samples // 2 if steer else 0
    answers = lm.generate(
        model, tokenizer, prompts, max_new_tokens, samples=samples - steered, temperature=temperature, seed=seed
    )
    if steer:
        with_system = [_with_system(p, steer) for p in prompts]
        more = lm.generate(model, tokenizer, with_system, max_new_tokens, steered, temperature, seed + 1)
        answers = [a + b for a, b in zip(answers, more, strict=True)]
    rows, dropped = [], Counter()
    for i, (prompt, group) in enumerate(zip(prompts, answers, strict=True)):
        where = f"the reward, on prompt {i + 1}"
        scored = sorted(((float(_call(reward, prompt, a, where)), a) for a in group if a), key=lambda s: s[0])
        if len({a for _, a in scored}) < 2:
            dropped["fewer than 2 distinct answers"] += 1
        elif scored[0][0] == scored[-1][0]:
            dropped["tie: every answer scored the same"] += 1
        else:
            (low, worst), (high, best) = scored[0], scored[-1]
            rows.append((prompt, best, worst, {"chosen_reward": high, "rejected_reward": low}))
    return rows, dropped


def _call(function: Callable[[Any, str], Any], prompt: Any, answer: str, what: str) -> Any:
    """A user's function, its failure said as bad input (which function, which prompt, what it raised)."""
    try:
        return function(prompt, answer)
    except Exception as exc:
        raise RecipeError(f"{what} failed: {type(exc).__name__}: {exc} (answer: {answer[:60]!r})") from None


def _with_system(prompt: str | list[dict], system: str) -> list[dict]:
    if isinstance(prompt, str):
        raise RecipeError("--steer needs a chat model (a system message); this model has no chat template")
    return [{"role": "system", "content": system}, *[m for m in prompt if m.get("role") != "system"]]


# ---------------------------------------------------------------- building a file


def pair_row(prompt: str | list[dict], chosen: str, rejected: str, provenance: dict[str, Any]) -> dict[str, Any]:
    """One pair in TRL's format: conversational for message prompts, standard for plain text."""
    if isinstance(prompt, str):  # as TRL's plain-text pairs: a completion starts with its space
        space = "" if prompt[-1:].isspace() else " "
        return {"prompt": prompt, "chosen": space + chosen, "rejected": space + rejected, "provenance": provenance}
    answer = lambda text: [{"role": "assistant", "content": text}]  # noqa: E731
    return {"prompt": prompt, "chosen": answer(chosen), "rejected": answer(rejected), "provenance": provenance}


def build(
    recipe: str,
    model_name: str,
    prompts_source: str,
    out: Path,
    *,
    rewrite: Rewrite | None = None,
    reward: Callable[[Any, str], float] | None = None,
    reward_name: str | None = None,
    rewrite_name: str | None = None,
    samples: int = 4,
    temperature: float = 1.0,
    max_new_tokens: int = 48,
    seed: int = 0,
    steer: str | None = None,
    limit: int | None = None,
    cache_dir: Path | None = None,
) -> Built:
    """Generate with the model, pair its answers by the recipe, write `out` (whole, or not at all)."""
    from harness import models

    if recipe not in RECIPES:
        raise RecipeError(f"unknown recipe '{recipe}'. Available: {', '.join(RECIPES)}")
    if (recipe == "correction") != (rewrite is not None) or (recipe == "on-policy") != (reward is not None):
        raise RecipeError("correction needs a rewrite (--replace or --rewrite); on-policy needs --reward")
    if recipe == "on-policy" and samples < 2:
        raise RecipeError(f"on-policy needs at least 2 samples per prompt (got {samples})")
    prompts_raw = read_prompts(prompts_source, limit)
    models.check(model_name)
    path = models.resolve(model_name, cache_dir or models.cache_dir(Path("outputs")))
    model, tokenizer = models.load(path)
    prompts = [as_chat(p, tokenizer) for p in prompts_raw]
    if recipe == "correction":
        rows, dropped = correction(model, tokenizer, prompts, rewrite, max_new_tokens)  # type: ignore[arg-type]
    else:
        rows, dropped = on_policy(
            model,
            tokenizer,
            prompts,
            reward,
            samples,
            temperature,
            max_new_tokens,
            seed,
            steer,  # type: ignore[arg-type]
        )
    if not rows:
        reasons = ", ".join(f"{n} {why}" for why, n in dropped.items())
        hint = (
            ": the model never gave an answer the reward prefers; try --steer (a system message toward it), more "
            "--samples, a higher --temperature, or the correction recipe"
            if recipe == "on-policy"
            else ": the rewrite changed no answer; check its pattern against the model's answers"
        )
        raise RecipeError(f"no pair was built from {len(prompts)} prompts ({reasons}){hint}; {out} was not written")
    base = {"recipe": recipe, "model": model_name, "prompts": prompts_source, "seed": seed}
    if recipe == "correction":
        base["rewrite"] = rewrite_name
    if recipe == "on-policy":
        base |= {"reward": reward_name, "samples": samples, "temperature": temperature, "steer": steer}
    lines = [json.dumps(pair_row(p, c, r, base | extra)) for p, c, r, extra in rows]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    tmp.replace(out)  # a build that fails midway leaves no half-written file
    return Built(out, len(prompts), len(rows), dropped)
