"""Token counts of text, for traces that hold text instead of counts (ShareGPT conversation
JSON, genai-perf exports): exact with a local tokenizer, else a stated approximation.

With `tokenizer` (a `tokenizer.json` file, or a folder holding one, as Hugging Face model
folders do) the `tokenizers` package counts tokens exactly, without special tokens. Without
one, a token is taken as 4 characters (OpenAI's rule of thumb for English text; code and
other languages run denser), at least 1 per non-empty text; the reader says so in a note.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

from planner.errors import InputError

CHARS_PER_TOKEN = 4.0
APPROX_NOTE = ("token counts approximated as characters / 4 (no --tokenizer given; pass --tokenizer "
               "PATH/tokenizer.json for exact counts)")


def approx_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0


def token_counter(tokenizer: str | None) -> tuple[Callable[[Sequence[str]], list[int]], str]:
    """(count texts -> token counts, note saying how they were counted)."""
    if tokenizer is None:
        return (lambda texts: [approx_tokens(t) for t in texts]), APPROX_NOTE
    path = Path(tokenizer)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise InputError(f"--tokenizer {tokenizer}: no tokenizer.json there; give the file, or a model folder "
                         "that holds one")
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise InputError("--tokenizer needs the `tokenizers` package: pip install tokenizers") from None
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # the library raises its own exception types
        raise InputError(f"--tokenizer {path}: cannot load it ({str(e)[:120]})") from None

    def count(texts: Sequence[str]) -> list[int]:
        return [len(e.ids) for e in tok.encode_batch(list(texts), add_special_tokens=False)]
    return count, f"token counts from the tokenizer {path}"
