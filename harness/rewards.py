"""Reward functions that rank a model's answers for on-policy pairs: a rule, a Python callable, or a reward model.

regex:PATTERN          1.0 when the answer matches (re.search, case-insensitive), else 0.0
keyword:WORD[,WORD]    how many of the words the answer holds (case-insensitive, whole words)
module:function        function(prompt, answer) -> float; prompt is a string or a list of messages
model:PATH_OR_HUB_ID   a sequence-classification reward model scoring prompt + answer (its first logit)
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

Reward = Callable[[Any, str], float]

FORMS = "regex:PATTERN, keyword:WORD[,WORD...], module:function (a Python callable) or model:PATH (a reward model)"


class RewardError(ValueError):
    """A reward cannot be used; the message names it and says what would be valid."""


def load_reward(text: str) -> Reward:
    """The reward `text` names (see the module's docstring); RewardError when it cannot be used."""
    kind, sep, rest = text.partition(":")
    if not sep or not rest:
        raise RewardError(f"reward {text!r}: expected {FORMS}")
    if kind == "regex":
        try:
            pattern = re.compile(rest, re.IGNORECASE)
        except re.error as exc:
            raise RewardError(f"reward {text!r}: not a valid regular expression ({exc})") from None
        return lambda prompt, answer: float(bool(pattern.search(answer)))
    if kind == "keyword":
        words = [re.compile(rf"\b{re.escape(w.strip())}\b", re.IGNORECASE) for w in rest.split(",") if w.strip()]
        return lambda prompt, answer: float(sum(bool(w.search(answer)) for w in words))
    if kind == "model":
        return _reward_model(rest)
    return _callable(text)


def _callable(text: str) -> Reward:
    module_name, _, name = text.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RewardError(f"reward {text!r}: cannot import module '{module_name}' ({exc}); expected {FORMS}") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise RewardError(f"reward {text!r}: module '{module_name}' has no function '{name}'")
    return function


def _reward_model(name: str) -> Reward:
    """A reward model (AutoModelForSequenceClassification, one label): higher logit, better answer."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from harness import models
    from harness.scoring import lm

    try:
        models.check(name, what="reward model")
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModelForSequenceClassification.from_pretrained(name).to(models.device()).eval()
    except models.ModelError as exc:
        raise RewardError(str(exc)) from None
    except Exception as exc:  # not a classification model, no tokenizer: the user's input either way
        raise RewardError(f"reward model '{name}' cannot be loaded: {type(exc).__name__}: {exc}") from None

    def score(prompt: Any, answer: str) -> float:
        import torch

        text = lm.full_text(tokenizer, prompt, answer) if tokenizer.chat_template or isinstance(prompt, str) else answer
        batch = tokenizer(text, return_tensors="pt", truncation=True).to(model.device)
        with torch.no_grad():
            return float(model(**batch).logits[0, 0])

    return score
