"""Tiny models built in-process from the shipped sample: the backbones of tests and CI.

``tiny-bert``, ``tiny-xlmr`` and ``tiny-llama`` have the real architectures at a toy size
(2 layers, hidden 32 or 64) and tokenizers whose vocabularies are counted from the sample's
texts, so a run needs no download and takes seconds.
"""

from __future__ import annotations

import functools
import json
import math
import tempfile
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from tokenizers.processors import TemplateProcessing
from transformers import (
    BertConfig,
    BertModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    XLMRobertaConfig,
    XLMRobertaModel,
)

from lowres.data.pawsx_format import read_pawsx_tsv
from lowres.data.roots import SAMPLE_ROOT
from lowres.errors import ConfigError

TINY_ARCHITECTURES = ("bert", "xlmr", "llama")


def _sample_texts() -> list[str]:
    texts: list[str] = []
    for file in sorted(SAMPLE_ROOT.glob("*/*.json")):
        for article in json.loads(file.read_text("utf-8"))["data"]:
            for paragraph in article["paragraphs"]:
                texts.append(paragraph["context"])
                texts.extend(q["question"] for q in paragraph["qas"])
    return texts


def _word_counts(texts: list[str], normalizer, pre_tokenizer) -> dict[str, int]:
    counts: dict[str, int] = {}
    for text in texts:
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)):
            counts[word] = counts.get(word, 0) + 1
    return counts


def _most_frequent(counts: dict[str, int]) -> list[str]:
    # Ties broken by the word itself, so the vocabulary is the same in every process.
    return sorted(counts, key=lambda word: (-counts[word], word))


@functools.cache
def tiny_backbone_dir(architecture: str) -> str:
    """Build (once per process) a 2-layer model and its tokenizer; return the saved folder.

    The weights come from a fixed seed, so a frozen tiny backbone is the same in every
    process and a checkpoint of only the trainable parameters restores the same model.
    """
    # The tiny vocabularies are counted here rather than trained with tokenizers' trainers,
    # whose tie-breaking differs between processes: DDP ranks, the feature cache and
    # `lowres evaluate` in a new process all need the same token ids.
    if architecture not in TINY_ARCHITECTURES:
        raise ConfigError(
            f"backbone.architecture={architecture!r} has no tiny build; expected one of "
            f"{', '.join(TINY_ARCHITECTURES)}."
        )
    out = Path(tempfile.mkdtemp(prefix=f"lowres-tiny-{architecture}-"))
    build = {"bert": _tiny_bert, "xlmr": _tiny_xlmr, "llama": _tiny_llama}[architecture]
    return build(out)


# The tiny BERT and XLM-R share one shape; only their vocabularies and positions differ.
TINY_ENCODER_SHAPE = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}


def _save_tiny(out: Path, tokenizer, model_class, config) -> str:
    """Save the tokenizer and the seeded weights: the same model in every process."""
    tokenizer.save_pretrained(out)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model_class(config).save_pretrained(out)
    return str(out)


def _tiny_bert(out: Path) -> str:
    """A 2-layer BERT with a WordPiece vocabulary counted from the sample texts."""
    texts = _sample_texts()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    normalizer = normalizers.BertNormalizer(lowercase=True)
    counts = _word_counts(texts, normalizer, pre_tokenizers.BertPreTokenizer())
    chars = sorted({c for word in counts for c in word})
    pieces = [*specials, *chars, *(f"##{c}" for c in chars)]
    words = [w for w in _most_frequent(counts) if w not in set(pieces)]
    vocab = {piece: i for i, piece in enumerate([*pieces, *words][:3000])}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )
    config = BertConfig(
        vocab_size=tok.get_vocab_size(),
        **TINY_ENCODER_SHAPE,
        max_position_embeddings=512,
        pad_token_id=tok.token_to_id("[PAD]"),
    )
    return _save_tiny(out, fast, BertModel, config)


def _tiny_xlmr(out: Path) -> str:
    """A 2-layer XLM-R with a unigram vocabulary of sample words and characters."""
    texts = _sample_texts()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    counts = _word_counts(texts, normalizers.NFKC(), pre_tokenizers.Metaspace())
    total = sum(counts.values())
    char_counts: dict[str, int] = {}
    for word, count in counts.items():
        for c in word:
            char_counts[c] = char_counts.get(c, 0) + count
    # Log-frequencies as unigram scores: whole words win where known, characters cover
    # the rest, so no text needs <unk> beyond unseen characters.
    chars_total = sum(char_counts.values())
    scored = [(c, math.log(n / chars_total)) for c, n in sorted(char_counts.items())]
    known = {c for c, _ in scored}
    for word in _most_frequent(counts):
        if len(specials) + len(scored) >= 3000:
            break
        if word not in known:
            scored.append((word, math.log(counts[word] / total)))
    tok = Tokenizer(
        models.Unigram([(s, 0.0) for s in specials] + scored, unk_id=specials.index("<unk>"))
    )
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", bos), ("</s>", eos)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        cls_token="<s>",
        sep_token="</s>",
        mask_token="<mask>",
    )
    config = XLMRobertaConfig(
        vocab_size=tok.get_vocab_size(),
        **TINY_ENCODER_SHAPE,
        max_position_embeddings=514,
        pad_token_id=tok.token_to_id("<pad>"),
        bos_token_id=bos,
        eos_token_id=eos,
        type_vocab_size=1,
    )
    return _save_tiny(out, fast, XLMRobertaModel, config)


def _all_sample_texts() -> list[str]:
    """Every text of the sample, PAWS-X and MLQA included, for the decoder's tokenizer."""
    texts = _sample_texts()
    for file in sorted((SAMPLE_ROOT / "mlqa").rglob("*.json")):
        for article in json.loads(file.read_text("utf-8"))["data"]:
            for paragraph in article["paragraphs"]:
                texts.append(paragraph["context"])
                texts.extend(q["question"] for q in paragraph["qas"])
    for file in sorted((SAMPLE_ROOT / "pawsx").rglob("*.tsv")):
        rows, _ = read_pawsx_tsv(file)
        texts.extend(text for r in rows for text in (r["sentence1"], r["sentence2"]))
    return texts


def _tiny_llama(out: Path) -> str:
    """A 2-layer Llama with tied embeddings and a byte-level BPE tokenizer that adds BOS.

    Byte-level BPE, as in Llama 3 and Qwen2.5, encodes any text without unknown tokens, so
    label words in every PAWS-X language tokenize to something. The embeddings are tied to
    the LM head like in the hub models lowres configures (Qwen2.5, Llama 3.2).
    """
    specials = ["<s>", "</s>", "<pad>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        _all_sample_texts(),
        trainers.BpeTrainer(
            vocab_size=4000,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    bos = tok.token_to_id("<s>")
    tok.post_processor = TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        padding_side="left",
        model_max_length=1024,
        model_input_names=["input_ids", "attention_mask"],
    )
    config = LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=bos,
        eos_token_id=tok.token_to_id("</s>"),
        pad_token_id=tok.token_to_id("<pad>"),
    )
    return _save_tiny(out, fast, LlamaForCausalLM, config)
