"""Helpers shared by CLI commands: model resolution, option parsing, prompt rendering."""

from __future__ import annotations

from typing import Any

from dllm.errors import DllmError


def default_model_path() -> str:
    """The shipped tiny model, used when ``--model`` is not given."""
    from dllm.assets import DEFAULT_MODEL

    return str(DEFAULT_MODEL)


def parse_options(pairs: list[str] | None) -> dict[str, Any]:
    """``--option key=value`` pairs -> kwargs; values parsed as int, float, bool or kept as text."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise DllmError(f"--option {pair!r} must look like key=value")
        key, value = pair.split("=", 1)
        key = key.strip().replace("-", "_")
        if not key:
            raise DllmError(f"--option {pair!r} has an empty key")
        out[key] = _parse_value(value.strip())
    return out


def _parse_value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def render_prompt(model: Any, prompt: str, chat: bool) -> list[int]:
    """Token ids of ``prompt``; with ``chat`` the model's chat template wraps it as one user message (rendered
    to text, then tokenized without extra special tokens, as the reference scripts do)."""
    tok = model.tokenizer
    if tok is None:
        raise DllmError(f"model {model.name_or_path!r} ships no tokenizer; text prompts need one")
    if chat:
        if not getattr(tok, "chat_template", None):
            raise DllmError(f"model {model.name_or_path!r} has no chat template; use --no-chat")
        prompt = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    if not ids:
        raise DllmError("empty prompt")
    return ids
