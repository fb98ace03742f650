"""A small CLIP tokenizer: the real CLIP byte-level BPE, truncated to its first K merges.

CLIP's vocabulary is laid out as 256 byte symbols, the same 256 with an end-of-word mark, one token per
merge in merge order, then ``<|startoftext|>`` and ``<|endoftext|>``. Keeping only the first K merges
therefore keeps every id below 512 + K equal to full CLIP's, and any text still tokenizes (rarer words
split into more pieces).
The merge list is ``open_clip/bpe_simple_vocab_16e6.txt.gz`` from the MIT-licensed ``open_clip_torch`` wheel
(``pip download --no-deps open_clip_torch``).
"""

from __future__ import annotations

import gzip
import logging
import zipfile
from pathlib import Path

from transformers import CLIPTokenizer

from dragdiff.types import InputError

log = logging.getLogger(__name__)

BPE_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
FULL_CLIP_MERGES = 49152 - 256 - 2  # merges CLIP uses (the file holds a few more)
DEFAULT_MERGES = 3000  # everyday English words stay whole; see docs/model.md
MAX_LENGTH = 77  # CLIP's context length, kept so SD-1.x tools pad prompts as usual


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible map from bytes to printable unicode characters (GPT-2 byte-level BPE)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}


def read_merges(source: Path) -> list[str]:
    """All CLIP merges (``"a b"`` strings) from the ``.txt.gz`` file or the open_clip_torch wheel."""
    source = Path(source)
    if not source.is_file():
        raise InputError(f"CLIP BPE source not found: {source}")
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as zf:
            try:
                raw = zf.read(BPE_MEMBER)
            except KeyError:
                raise InputError(f"{source} does not contain {BPE_MEMBER}") from None
    else:
        raw = source.read_bytes()
    lines = gzip.decompress(raw).decode("utf-8").split("\n")
    return [line for line in lines[1 : FULL_CLIP_MERGES + 1] if line]  # line 0 is a version header


def build_tokenizer(source: Path, num_merges: int = DEFAULT_MERGES) -> CLIPTokenizer:
    """A CLIPTokenizer with the first ``num_merges`` CLIP merges; ids below 512 + num_merges match CLIP."""
    merges = read_merges(source)
    if not 0 <= num_merges <= len(merges):
        raise InputError(f"num_merges must be in [0, {len(merges)}], got {num_merges}")
    merges = merges[:num_merges]
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    pairs = [tuple(m.split()) for m in merges]
    # transformers annotates merges as strings, but the tokenizers backend wants (left, right) pairs
    tok = CLIPTokenizer(vocab=vocab, merges=pairs, model_max_length=MAX_LENGTH)  # type: ignore[arg-type]
    log.info("built CLIP tokenizer with %d merges (vocab %d)", num_merges, len(vocab))
    return tok


def coverage(tokenizer: CLIPTokenizer, captions: list[str]) -> dict[str, float]:
    """How well the vocabulary fits the captions: tokens per word, and the share of words kept whole."""
    words = sorted({w.strip(",.;:!?") for c in captions for w in c.lower().split()} - {""})
    if not words:
        raise InputError("coverage needs at least one non-empty caption")
    pieces = [len(tokenizer(w, add_special_tokens=False)["input_ids"]) for w in words]
    return {
        "distinct_words": float(len(words)),
        "tokens_per_word": sum(pieces) / len(words),
        "whole_word_share": sum(p == 1 for p in pieces) / len(words),
    }


def find_bpe_source(cache_dir: Path) -> Path:
    """The BPE file (or the wheel holding it) in ``cache_dir``; a clear error says how to fetch it."""
    cache_dir = Path(cache_dir)
    for pattern in ("bpe_simple_vocab_16e6.txt.gz", "open_clip_torch-*.whl"):
        found = sorted(cache_dir.glob(pattern))
        if found:
            return found[-1]
    raise InputError(
        f"no CLIP BPE vocabulary in {cache_dir}; fetch it with "
        f"`pip download --no-deps open_clip_torch -d {cache_dir}`"
    )
