"""AdaBlock-dLLM adaptive block sizes (docs/methods.md#adablock) as a ``BlockSchedule``.

When a row opens a block at ``s``, the schedule reads that step's (raw) logits over the look-ahead window
``[s, s + W)``, ``W = min(floor(window_fraction * gen_length), remaining)``, and takes the undecided
positions whose argmax is a delimiter token. If the most confident of them (first on ties) has probability
``>= delimiter_threshold``, the block ends at and includes it (length ``j* - s + 1``); otherwise the block
gets the default ``block_length`` (capped by what remains). ``delimiter_threshold=inf`` gives fixed blocks.
The decision reuses the block's first forward: no extra NFE.

Delimiters: ``delimiters`` is a list of token ids (int) and/or texts (str) that must each encode to exactly
one token of the model's tokenizer (resolved in ``bind(model)``); a single string may list several,
comma-separated, with ``\\n``-style escapes. Default: newline (LLaDA id 198 "Ċ", as in the reference).
When the default newline has no single token in the tokenizer, the schedule warns and falls back to fixed
blocks; explicit delimiters that do not resolve are an error.

Step budgets for quota policies (``lowconf``, ``random``, Dream schedules, ``earlycommit`` base lowconf):
a block of length ``L`` gets ``ceil(L * steps / gen_length)`` steps (at least 1), i.e. the same tokens per
step as the fixed schedule; ``steps = gen_length`` keeps one token per step. (The reference ignores
``steps`` and only supports threshold decoding.)

**Quirks** (differences from the reference, ``generate_adablock.py``): per-row block sizes in a batch (the
reference asserts batch 1); delimiter tokens are the plain argmax (the reference uses the Gumbel-perturbed
argmax when the temperature is > 0); confidence in fp32 (bf16 in the reference); only undecided window
positions are considered (in the reference every window position is undecided at a block start; here early
commit or EoTP can have decided some); the window is at least one position (the reference's
``int(0.25 * gen_length)`` is 0 below 4); Dream runs the same rule (the reference's Dream code, with its fixed
list of newline ids and a forced first-position commit under a cache, is not reproduced).
"""

from __future__ import annotations

import codecs
import math
import warnings
from typing import Any

import torch
from torch import Tensor

from dllm.errors import DllmError
from dllm.registry import Option
from dllm.samplers.registry import SCHEDULES

DEFAULT_DELIMITERS: tuple[str, ...] = ("\n",)


def _parse_delimiters(value: Any) -> tuple[int | str, ...]:
    if value is None:
        return DEFAULT_DELIMITERS
    raw = value
    if isinstance(value, (int, str)) and not isinstance(value, bool):
        value = [value]
    items: list[int | str] = []
    try:
        for item in value:
            if isinstance(item, bool):
                raise TypeError
            if isinstance(item, int):
                items.append(int(item))
                continue
            if not isinstance(item, str):
                raise TypeError
            text = codecs.decode(item, "unicode_escape") if "\\" in item else item
            parts = text.split(",") if ("," in text and len(text) > 1) else [text]
            for part in parts:
                if part == "":
                    continue
                items.append(part)
    except (TypeError, ValueError, UnicodeDecodeError):
        raise DllmError(f"delimiters must be token ids or texts, got {raw!r}") from None
    if not items:
        raise DllmError(f"delimiters {raw!r} is empty")
    return tuple(items)


@SCHEDULES.register(
    "adaptive", "AdaBlock: the next block ends at the most confident predicted delimiter in the look-ahead window",
    options=[
        Option("delimiters", None, "delimiter tokens: ids and/or single-token texts, comma-separated (default newline)",
               kind=None, nullable=True, parse=lambda v: _parse_delimiters(v) and v, allowed="ids or texts, e.g. '\\n,.'"),
        Option("delimiter_threshold", 0.3, "a delimiter ends the block when its probability is >= this (inf = fixed)",
               kind=float, low=0),
        Option("window_fraction", 0.25, "look-ahead window as a fraction of gen_length", kind=float, low=0,
               low_open=True, high=1),
    ])
class AdaptiveBlocks:
    """AdaBlock: the next block ends at the most confident predicted delimiter within the look-ahead window."""

    def __init__(self, gen_length: int, block_length: int, steps: int, delimiters: Any = None,
                 delimiter_threshold: float = 0.3, window_fraction: float = 0.25) -> None:
        if gen_length <= 0 or block_length <= 0:
            raise DllmError(f"gen_length {gen_length} and block_length {block_length} must be positive")
        if steps <= 0:
            raise DllmError(f"steps {steps} must be positive")
        try:
            delta = float(delimiter_threshold)
            frac = float(window_fraction)
        except (TypeError, ValueError):
            raise DllmError(f"delimiter_threshold and window_fraction must be numbers, got {delimiter_threshold!r}, "
                            f"{window_fraction!r}") from None
        if not delta >= 0:  # inf allowed (fixed blocks)
            raise DllmError(f"delimiter_threshold {delimiter_threshold!r} must be >= 0 (inf = fixed blocks)")
        if not 0 < frac <= 1:
            raise DllmError(f"window_fraction {window_fraction!r} is outside (0, 1]")
        self.gen_length = int(gen_length)
        self.block_length = int(block_length)
        self.steps = int(steps)
        self.delimiter_threshold = delta
        self.window_fraction = frac
        self.window = max(1, math.floor(frac * gen_length))
        self._explicit = delimiters is not None
        self.delimiters = _parse_delimiters(delimiters)
        self.mask_id: int | None = None
        self._ids: list[int] | None = [d for d in self.delimiters if isinstance(d, int)] \
            if all(isinstance(d, int) for d in self.delimiters) else None
        self._ids_t: Tensor | None = None

    # --- binding to a model's tokenizer -----------------------------------------------------------------
    def bind(self, model: Any) -> "AdaptiveBlocks":
        """Resolve text delimiters with the model's tokenizer and learn the mask id."""
        special = getattr(model, "special", None)
        self.mask_id = None if special is None else int(special.mask)
        vocab = int(getattr(model, "vocab_size", 0) or 0)
        ids: list[int] = []
        unresolved: list[str] = []
        for d in self.delimiters:
            if isinstance(d, int):
                ids.append(d)
                continue
            tid = _single_token(getattr(model, "tokenizer", None), d)
            if tid is None:
                unresolved.append(d)
            else:
                ids.append(tid)
        if unresolved:
            if self._explicit:
                raise DllmError(f"delimiter {unresolved[0]!r} is not a single token of this model's tokenizer; "
                                "pass token ids instead")
            warnings.warn(f"adaptive blocks: the default delimiter {unresolved[0]!r} is not a single token of this "
                          "tokenizer; every block gets the default block_length", RuntimeWarning, stacklevel=2)
        bad = [i for i in ids if i < 0 or (vocab and i >= vocab)]
        if bad:
            raise DllmError(f"delimiter id {bad[0]} is outside the vocabulary [0, {vocab})")
        self._ids = sorted(set(ids))
        self._ids_t = None
        return self

    @property
    def delimiter_ids(self) -> list[int]:
        if self._ids is None:
            raise DllmError("adaptive blocks with text delimiters need a tokenizer: call schedule.bind(model) "
                            "(dllm.generate does) or pass token ids")
        return list(self._ids)

    # --- BlockSchedule ----------------------------------------------------------------------------------
    def lookahead(self, start: Tensor, gen_end: int) -> Tensor:
        return (start + max(self.window, self.block_length)).clamp(max=gen_end)

    def block_length_for(self, logits: Tensor, tokens: Tensor, offset: int, remaining: int) -> int:
        """Length of one row's block opened at window column ``offset`` (``logits`` [W, V], ``tokens`` [W])."""
        fallback = min(self.block_length, remaining)
        w = min(self.window, remaining)
        ids = self.delimiter_ids
        if not ids or w <= 0 or math.isinf(self.delimiter_threshold):
            return fallback
        seg = logits[offset:offset + w].float()
        pred = seg.argmax(-1)
        if self._ids_t is None or self._ids_t.device != pred.device:
            self._ids_t = torch.tensor(ids, dtype=pred.dtype, device=pred.device)
        cand = torch.isin(pred, self._ids_t)
        if self.mask_id is not None:
            cand &= tokens[offset:offset + w] == self.mask_id
        if not bool(cand.any()):
            return fallback
        conf = torch.exp(seg.gather(-1, pred[:, None])[:, 0] - torch.logsumexp(seg, dim=-1))
        conf = torch.where(cand, conf, torch.full_like(conf, -1.0))
        j = int(conf.argmax())  # first index on ties
        if float(conf[j]) >= self.delimiter_threshold:
            return j + 1
        return fallback

    def open_block(self, start: Tensor, rows: Tensor, logits: Tensor, window_start: int, tokens: Tensor,
                   gen_end: int) -> Tensor:
        ends = self.lookahead(start, gen_end).clone()
        for b in rows.nonzero().flatten().tolist():
            s = int(start[b])
            length = self.block_length_for(logits[b], tokens[b], s - window_start, gen_end - s)
            ends[b] = s + length
        return ends

    def steps_for(self, length: Tensor) -> Tensor:
        steps = torch.ceil(length.double() * self.steps / self.gen_length).long()
        return steps.clamp(min=1)


def _single_token(tokenizer: Any, text: str) -> int | None:
    """The id of ``text`` if it is exactly one token (and not the unknown token), else None."""
    if tokenizer is None:
        return None
    try:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    except Exception:  # noqa: BLE001 - tokenizers disagree on odd inputs; treat as unresolvable
        ids = []
    unk = getattr(tokenizer, "unk_token_id", None)
    if len(ids) == 1 and (unk is None or ids[0] != unk):
        return int(ids[0])
    try:
        tid = tokenizer.convert_tokens_to_ids(text)
    except Exception:  # noqa: BLE001
        return None
    if isinstance(tid, int) and tid >= 0 and (unk is None or tid != unk):
        return tid
    return None


__all__ = ["AdaptiveBlocks", "DEFAULT_DELIMITERS"]
