"""Built-in policies, one module per method family; every module here is imported when the policy registry is
first used (``dllm.samplers.registry.POLICIES``), so a new policy is one new file in this package::

    from dllm.registry import Option
    from dllm.samplers.base import Policy
    from dllm.samplers.registry import POLICIES, TEMPERATURE

    @POLICIES.register("mypolicy", "one line for `dllm policies`", options=[TEMPERATURE, Option(...)])
    def mypolicy(temperature: float, ...) -> Policy:
        return Policy("mypolicy", scorer, selector, processors=[...], modifiers=[...], options={...})

The factory receives every declared option, validated and normalised. ``common.py`` holds the options every
policy accepts (early commit, end-of-text prediction).
"""

#: modules imported (and so listed) first: the baselines, then the research methods
LISTING_ORDER = ("llada", "fastdllm", "creditdecoding", "earlycommit", "learnedfilter", "dream", "common")
