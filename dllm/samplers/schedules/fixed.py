"""``fixed``: LLaDA's semi-autoregressive schedule, blocks of ``block_length`` with the step budget spread evenly."""

from __future__ import annotations

import torch
from torch import Tensor

from dllm.errors import DllmError
from dllm.samplers.registry import SCHEDULES


@SCHEDULES.register("fixed", "blocks of block_length, decoded left to right (LLaDA's semi-autoregressive schedule)")
class FixedBlocks:
    """Blocks of ``block_length``; ``steps`` spread evenly over them (LLaDA's semi-AR schedule)."""

    def __init__(self, gen_length: int, block_length: int, steps: int) -> None:
        if block_length <= 0 or gen_length <= 0:
            raise DllmError(f"gen_length {gen_length} and block_length {block_length} must be positive")
        if gen_length % block_length:
            raise DllmError(f"gen_length {gen_length} is not a multiple of block_length {block_length}")
        blocks = gen_length // block_length
        if steps <= 0 or steps % blocks:
            raise DllmError(
                f"steps {steps} must be a positive multiple of the number of blocks {blocks} (gen_length/block_length)"
            )
        self.block_length = block_length
        self.steps_per_block = steps // blocks

    def lookahead(self, start: Tensor, gen_end: int) -> Tensor:
        return (start + self.block_length).clamp(max=gen_end)

    def open_block(self, start: Tensor, rows: Tensor, logits: Tensor, window_start: int, tokens: Tensor,
                   gen_end: int) -> Tensor:
        return self.lookahead(start, gen_end)

    def steps_for(self, length: Tensor) -> Tensor:
        return torch.full_like(length, self.steps_per_block)
