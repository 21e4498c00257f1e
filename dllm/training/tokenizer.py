"""Character-level tokenizer for the tiny shipped models.

Why: one token per character keeps the vocabulary tiny (~90), makes every synthetic task
(``dllm.evals.synthetic``) a fixed-length token problem, and makes decoding exact. It is saved in the
standard Hugging Face format so the models and samplers load it with ``AutoTokenizer`` like any
LLaDA/Dream tokenizer, including ``mask_token_id`` and a chat template.
"""

from __future__ import annotations

import json
import os
import string

from tokenizers import Tokenizer, decoders, models
from transformers import PreTrainedTokenizerFast

PAD_TOKEN = "<|pad|>"
BOS_TOKEN = "<|bos|>"
EOS_TOKEN = "<|eos|>"
MASK_TOKEN = "<|mask|>"
UNK_TOKEN = "<|unk|>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, MASK_TOKEN, UNK_TOKEN)
"""Ids 0..4 in this order (pad=0, bos=1, eos=2, mask=3, unk=4)."""

PUNCTUATION = "+-*/=:.,?!'\"()[]<>#$%_"
CHARACTERS: str = string.digits + string.ascii_lowercase + string.ascii_uppercase + " \n" + PUNCTUATION
"""Every character with its own token, ids ``len(SPECIAL_TOKENS)`` onwards in this order."""

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ message['role'] }}: {{ message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)
"""``<|bos|>user: {content}\\nassistant: `` for one user turn; finished assistant turns end with EOS."""


def _build_backend() -> Tokenizer:
    """BPE with single-character vocab and no merges = pure character split, unknowns -> ``<|unk|>``."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in CHARACTERS:
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK_TOKEN))
    # Registered as special so they are matched whole in text and skipped by skip_special_tokens.
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    # Fuse concatenates tokens, so decode(encode(s)) == s (no spaces inserted between characters).
    tok.decoder = decoders.Fuse()
    return tok


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """The character tokenizer as a ``PreTrainedTokenizerFast`` (no BOS added on encode)."""
    return PreTrainedTokenizerFast(
        tokenizer_object=_build_backend(),
        pad_token=PAD_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        mask_token=MASK_TOKEN,
        unk_token=UNK_TOKEN,
        add_bos_token=False,
        add_eos_token=False,
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
    )


def save_char_tokenizer(directory: str | os.PathLike[str]) -> None:
    """Write ``tokenizer.json`` + ``tokenizer_config.json`` so ``AutoTokenizer.from_pretrained`` loads it."""
    os.makedirs(directory, exist_ok=True)
    build_char_tokenizer().save_pretrained(str(directory))
    # Pin the portable class name and flags so transformers 4.x (which has no TokenizersBackend and
    # reads the template from the config) loads the same tokenizer; 5.x prefers chat_template.jinja.
    config_path = os.path.join(directory, "tokenizer_config.json")
    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    config.update(
        tokenizer_class="PreTrainedTokenizerFast",
        add_bos_token=False,
        add_eos_token=False,
        chat_template=CHAT_TEMPLATE,
    )
    with open(config_path, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, ensure_ascii=False)
        f.write("\n")
