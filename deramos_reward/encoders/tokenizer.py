"""An offline byte-level BPE tokenizer (RoBERTa conventions) for tiny random text encoders.

It has the 256 byte symbols and no merges, so it needs no training data and is identical on
every machine; it survives ``save_pretrained`` / ``AutoTokenizer.from_pretrained``.
"""

from __future__ import annotations

from functools import lru_cache

from transformers import PreTrainedTokenizerFast

from ..config import BYTE_TOKEN_IDS, BYTE_VOCAB_SIZE

SPECIAL = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


@lru_cache(maxsize=1)
def _byte_alphabet() -> list[str]:
    from tokenizers import pre_tokenizers

    return sorted(pre_tokenizers.ByteLevel.alphabet())


def byte_level_tokenizer(model_max_length: int = 128) -> PreTrainedTokenizerFast:
    """RoBERTa-style tokenizer: ids 0..4 are <s>, <pad>, </s>, <unk>, <mask>; then 256 bytes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    vocab = {tok: i for i, tok in enumerate(SPECIAL)}
    for sym in _byte_alphabet():
        vocab[sym] = len(vocab)
    ids = {"bos_token_id": vocab["<s>"], "pad_token_id": vocab["<pad>"], "eos_token_id": vocab["</s>"]}
    if len(vocab) != BYTE_VOCAB_SIZE or ids != BYTE_TOKEN_IDS:  # the tiny configs were built for these
        raise RuntimeError(
            f"byte-level vocabulary has {len(vocab)} entries and ids {ids}; expected {BYTE_VOCAB_SIZE}, {BYTE_TOKEN_IDS}"
        )
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.RobertaProcessing(sep=("</s>", 2), cls=("<s>", 0))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=model_max_length,
    )
