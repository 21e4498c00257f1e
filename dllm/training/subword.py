"""Byte-level BPE tokenizer for a small LLaDA-format model trained on the workload corpus.

Why: the character tokenizer (:mod:`dllm.training.tokenizer`) makes a 300-character GSM8K answer 300 tokens,
so a model trained with it could not reproduce LLaDA's real shape (256 generated tokens, blocks of 32, an answer
of 40-150 tokens then EOS padding). A few thousand byte-level BPE merges learnt from the generated corpus bring
answers to that length while still encoding any text (byte fallback: no unknown token).

Special tokens are LLaDA-8B-Instruct's strings, so :func:`dllm.models.loading.special_tokens` finds them the
way it finds a real checkpoint's: ``<|mdm_mask|>`` (mask, also ``tokenizer.mask_token``), ``<|endoftext|>``
(EOS), ``<|eot_id|>`` (end of turn), ``<|startoftext|>`` (BOS), and the chat template is LLaDA-Instruct's
(``<|start_header_id|>role<|end_header_id|>\\n\\ncontent<|eot_id|>`` per turn, BOS before the first).

**Quirk** (vs LLaDA): a dedicated ``<|pad|>`` (id 0) instead of padding with ``<|endoftext|>``. Training here
fills the answer region with EOS targets and masks padding out by its id (``dllm.training.diffusion``), so the
two must differ. **Quirk**: digits are split one per token before BPE (LLaDA's tokenizer groups them): a
model trained from scratch learns carry arithmetic far more easily digit by digit, and numbers round-trip
exactly whatever merges are learnt.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from dllm.errors import DllmError

PAD_TOKEN = "<|pad|>"
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
MASK_TOKEN = "<|mdm_mask|>"
EOT_TOKEN = "<|eot_id|>"
START_HEADER = "<|start_header_id|>"
END_HEADER = "<|end_header_id|>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, MASK_TOKEN, EOT_TOKEN, START_HEADER, END_HEADER)
"""Ids 0..6 in this order."""

DEFAULT_VOCAB_SIZE: int = 3072
MAX_LENGTH: int = 2048

CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}"
    "{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim"
    " + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
"""LLaDA-8B-Instruct's template: ``<|startoftext|><|start_header_id|>user<|end_header_id|>\\n\\n{content}<|eot_id|>
<|start_header_id|>assistant<|end_header_id|>\\n\\n`` for one user turn with the generation prompt."""


def train_bpe(texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE, min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """Learn byte-level BPE merges from ``texts`` and wrap them as a ``PreTrainedTokenizerFast``.

    ``vocab_size`` counts the special tokens and the 256 byte symbols, so it must exceed both.
    """
    floor = len(SPECIAL_TOKENS) + 256
    if not isinstance(vocab_size, int) or vocab_size <= floor:
        raise DllmError(f"vocab_size must be an integer above {floor} (specials + 256 bytes), got {vocab_size!r}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        mask_token=MASK_TOKEN,
        additional_special_tokens=[EOT_TOKEN, START_HEADER, END_HEADER],
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
        model_max_length=MAX_LENGTH,
    )


def save_subword_tokenizer(tokenizer: PreTrainedTokenizerFast, directory: str | os.PathLike[str]) -> None:
    """Write ``tokenizer.json`` + ``tokenizer_config.json`` (+ ``chat_template.jinja`` on transformers 5) so
    ``AutoTokenizer.from_pretrained(directory)`` loads it offline."""
    os.makedirs(directory, exist_ok=True)
    tokenizer.save_pretrained(str(directory))
    # As the char tokenizer does: pin the portable class and the template in the config, so transformers 4.x
    # (no TokenizersBackend, template read from the config) loads the same tokenizer.
    config_path = os.path.join(directory, "tokenizer_config.json")
    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    config.update(tokenizer_class="PreTrainedTokenizerFast", add_bos_token=False, add_eos_token=False,
                  chat_template=CHAT_TEMPLATE)
    # transformers 5 writes the extra specials as a list under extra_special_tokens, which 4.x reads as a dict
    # of named tokens; the key both read is additional_special_tokens (tokenizer.json marks them special anyway).
    config.pop("extra_special_tokens", None)
    config["additional_special_tokens"] = [EOT_TOKEN, START_HEADER, END_HEADER]
    with open(config_path, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, ensure_ascii=False, sort_keys=True)
        f.write("\n")


def workload_corpus(n_gsm8k: int = 8000, n_humaneval: int = 2000, seed: int = 0) -> list[str]:
    """Training texts from the **train** splits only, laid out as the harnesses present them: GSM8K-format
    ``Question: ...\\nAnswer: ...`` examples and HumanEval-format prompt + solution + tests."""
    from dllm.evals import gsm8k
    from dllm.evals.generators import gsm8k_problems, humaneval_problems

    texts = [gsm8k.format_example(doc) for doc in gsm8k_problems("train", n_gsm8k, seed)]
    texts += [p["prompt"] + p["canonical_solution"] + p["test"] for p in humaneval_problems("train", n_humaneval, seed)]
    return texts


def build_workload_tokenizer(
    directory: str | os.PathLike[str] | None = None,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    seed: int = 0,
    n_gsm8k: int = 8000,
    n_humaneval: int = 2000,
) -> PreTrainedTokenizerFast:
    """Train the workload tokenizer on :func:`workload_corpus` and save it to ``directory`` if given."""
    tok = train_bpe(workload_corpus(n_gsm8k, n_humaneval, seed), vocab_size=vocab_size)
    if directory is not None:
        save_subword_tokenizer(tok, directory)
    return tok
