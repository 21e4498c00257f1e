"""Dream's confidence algorithms with Dream's time schedule (``maskgit_plus``, ``topk_margin``, ``entropy``)."""

from __future__ import annotations

from dllm.registry import Option
from dllm.samplers.base import Policy
from dllm.samplers.registry import POLICIES, TEMPERATURE
from dllm.samplers.scoring import DreamScorer
from dllm.samplers.selectors import DreamScheduleSelector

EPS = Option("eps", 1e-3, "Dream's final time step (the schedule runs from 1 to eps)", kind=float, low=0,
             low_open=True, high=1)


def _dream(kind: str, temperature: float, eps: float) -> Policy:
    return Policy(kind, DreamScorer(kind, temperature), DreamScheduleSelector(eps),
                  options={"temperature": temperature, "eps": eps})


@POLICIES.register("maskgit_plus", "Dream maskgit_plus: top-1 probability, Dream's time schedule",
                   options=[TEMPERATURE, EPS])
def maskgit_plus(temperature: float = 0.0, eps: float = 1e-3) -> Policy:
    return _dream("maskgit_plus", temperature, eps)


@POLICIES.register("topk_margin", "Dream topk_margin: top-1 minus top-2 probability, Dream's time schedule",
                   options=[TEMPERATURE, EPS])
def topk_margin(temperature: float = 0.0, eps: float = 1e-3) -> Policy:
    return _dream("topk_margin", temperature, eps)


@POLICIES.register("entropy", "Dream entropy: negative entropy confidence, Dream's time schedule",
                   options=[TEMPERATURE, EPS])
def entropy(temperature: float = 0.0, eps: float = 1e-3) -> Policy:
    return _dream("entropy", temperature, eps)
