"""Dream's confidence algorithms with Dream's time schedule (``maskgit_plus``, ``topk_margin``, ``entropy``).

Options beyond Dream's own (docs/methods.md#dream):

* ``first_commit=True`` is Fast-dLLM's Dream block/cache sampler (``dream/model/generation_utils_block.py``,
  selected there by ``use_cache``): a block's first forward commits exactly the block's first position, and steps
  ``1 .. S_b - 1`` follow the schedule as usual (``k = int(n (1 - t_{i+1} / t_i))``, everything left on the last),
  so a block costs ``S_b`` forwards as in the reference. That sampler always scores by negative entropy whatever
  ``alg`` says, so ``entropy first_commit=true`` is the reference path; the option works with the other two
  confidences as well. (Its ``confidence_threshold`` path is ``threshold first_commit=true``.)
* ``score_dtype="bfloat16"`` computes the confidences in bfloat16 as Dream does (``dllm/samplers/scoring.py``).

**Quirks**: float32 confidences by default (the reference's are bfloat16). With ``first_commit`` and ``S_b = 1``
the reference stops after the first position and leaves the rest of the block masked; here the next step
commits the rest (a block never ends undecided).
"""

from __future__ import annotations

from dllm.registry import Option
from dllm.samplers.base import Policy, Selector
from dllm.samplers.policies.fastdllm import FIRST_COMMIT, FirstPositionSelector
from dllm.samplers.registry import POLICIES, TEMPERATURE
from dllm.samplers.scoring import SCORE_DTYPE, DreamScorer
from dllm.samplers.selectors import DreamScheduleSelector

EPS = Option("eps", 1e-3, "Dream's final time step (the schedule runs from 1 to eps)", kind=float, low=0,
             low_open=True, high=1)
OPTIONS = [TEMPERATURE, EPS, FIRST_COMMIT, SCORE_DTYPE]


def _dream(kind: str, temperature: float, eps: float, first_commit: bool, score_dtype: str) -> Policy:
    selector: Selector = DreamScheduleSelector(eps)
    if first_commit:
        selector = FirstPositionSelector(selector)
    return Policy(kind, DreamScorer(kind, temperature, score_dtype), selector,
                  options={"temperature": temperature, "eps": eps, "first_commit": first_commit,
                           "score_dtype": score_dtype})


@POLICIES.register("maskgit_plus", "Dream maskgit_plus: top-1 probability, Dream's time schedule", options=OPTIONS)
def maskgit_plus(temperature: float = 0.0, eps: float = 1e-3, first_commit: bool = False,
                 score_dtype: str = "float32") -> Policy:
    return _dream("maskgit_plus", temperature, eps, first_commit, score_dtype)


@POLICIES.register("topk_margin", "Dream topk_margin: top-1 minus top-2 probability, Dream's time schedule",
                   options=OPTIONS)
def topk_margin(temperature: float = 0.0, eps: float = 1e-3, first_commit: bool = False,
                score_dtype: str = "float32") -> Policy:
    return _dream("topk_margin", temperature, eps, first_commit, score_dtype)


@POLICIES.register("entropy", "Dream entropy: negative entropy confidence, Dream's time schedule", options=OPTIONS)
def entropy(temperature: float = 0.0, eps: float = 1e-3, first_commit: bool = False,
            score_dtype: str = "float32") -> Policy:
    return _dream("entropy", temperature, eps, first_commit, score_dtype)
