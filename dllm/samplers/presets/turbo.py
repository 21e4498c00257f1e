"""``turbo``: the fastest composition of existing pieces that kept ``threshold`` 0.9's accuracy on the synthetic
suite (docs/methods.md#turbo): EB-Sampler with an entropy budget of 0.3 nats, no cache, fixed blocks.

How it was chosen (tiny-llada, ``dllm eval --bench synthetic``, one-token-per-step answer region of 16, numbers
in docs/methods.md#turbo): every built-in policy, its common options and the caches and schedules were run
against ``threshold`` 0.9; the candidates had to stay within one point of its accuracy. EB-Sampler at
``gamma`` 0.3 took the fewest forwards among those (0.3-0.5 measured alike; 0.7 lost 3 points); the KV caches
cost 16-18 points of accuracy on this model, early commit one example in 600 for no forward saved, and the
adaptive schedule and end-of-text prediction changed nothing here, so none of them is in the bundle.
"""

from __future__ import annotations

from dllm.samplers.registry import PRESETS, Preset


@PRESETS.register("turbo", "fewest forwards at threshold 0.9's accuracy on the synthetic suite: ebsampler with "
                           "gamma 0.3, no cache, fixed blocks")
def turbo() -> Preset:
    return Preset("ebsampler", {"gamma": 0.3})
