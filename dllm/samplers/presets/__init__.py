"""Built-in presets, one module each: a name for a whole decoding configuration (policy + option values + cache +
block schedule), registered in ``dllm.samplers.registry.PRESETS`` and taken wherever a policy name is
(``dllm.generate(policy=...)``, ``dllm generate/eval --policy``; listed by ``dllm policies``)::

    from dllm.samplers.registry import PRESETS, Preset

    @PRESETS.register("mypreset", "one line for `dllm policies` (what it is for, what it measured)")
    def mypreset() -> Preset:
        return Preset("threshold", {"threshold": 0.8, "early_commit": True}, cache="dual", block_schedule="adaptive")

``dllm.options.resolve_preset`` expands the name: the caller's options override the preset's values; a cache or
block schedule other than the defaults (``none``, ``fixed``) replaces the preset's, together with its options.
"""
