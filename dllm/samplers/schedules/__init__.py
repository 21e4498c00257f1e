"""Block schedules: where each row's next block ends. One module per schedule, registered in
``dllm.samplers.registry.SCHEDULES``: ``fixed`` (semi-autoregressive decoding with equal blocks, ``fixed.py``) and
``adaptive`` (AdaBlock, ``adaptive.py``). A schedule that reads the tokenizer defines ``bind(model)``, which
``dllm.generate`` calls before decoding."""

from __future__ import annotations

from typing import Protocol

from torch import Tensor

#: ``fixed`` lists first
LISTING_ORDER = ("fixed",)


class BlockSchedule(Protocol):
    def lookahead(self, start: Tensor, gen_end: int) -> Tensor:
        """[B] the furthest end (exclusive) a block opened at ``start`` may get: logits are computed up to it."""
        ...

    def open_block(self, start: Tensor, rows: Tensor, logits: Tensor, window_start: int, tokens: Tensor,
                   gen_end: int) -> Tensor:
        """[B] block ends for the rows opening a block (``rows``), given this step's logits [B, W, V]."""
        ...

    def steps_for(self, length: Tensor) -> Tensor:
        """[B] step budget S_b for blocks of the given lengths."""
        ...

    # Optional: ``bind(model) -> self`` resolves what needs the model (AdaBlock's delimiter tokens);
    # ``dllm.generate`` calls it when present.
