"""Text <-> token ids for `testbed serve`.

- `--tokenizer PATH`: a transformers tokenizer from local files only (a folder holding
  tokenizer.json or GPT-2's vocab.json + merges.txt, as OPT ships; or a tokenizer.json
  file). Nothing is downloaded.
- otherwise the byte-level fallback: one token per UTF-8 byte (ids 4-259, after OPT's
  special ids 0-3). A random-weight model also produces ids outside that range; each of
  those prints as one ASCII character ('!' + id mod 94), so every generated token shows.

`Detokenizer` turns a stream of generated ids into text deltas whose concatenation is the
decode of all of them: text is emitted up to the last complete character; a token that
ends inside a UTF-8 sequence waits for the next one (until the request ends).
"""
from __future__ import annotations

from pathlib import Path

from planner.errors import InputError

FIRST_BYTE_ID = 4         # OPT's special ids: 0 bos, 1 pad, 2 eos, 3 unk
PRINTABLE_FROM, PRINTABLE_COUNT = 33, 94
PLAIN_CHAT = "plain (one 'role: content' line per message, then 'assistant:')"


class ByteTokenizer:
    name = "byte-level fallback (1 token per UTF-8 byte; other ids print as one ASCII character)"

    def __init__(self, vocab_size: int):
        if vocab_size < FIRST_BYTE_ID + 256:
            raise InputError(f"the byte-level tokenizer needs a vocabulary of >= {FIRST_BYTE_ID + 256} ids; "
                             f"the model has {vocab_size}")
        self.vocab_size = vocab_size
        self.chat_template = PLAIN_CHAT

    def encode(self, text: str) -> list[int]:
        return [FIRST_BYTE_ID + b for b in text.encode("utf-8")]

    def decode(self, ids) -> str:
        out = bytearray()
        for i in ids:
            i = int(i)
            if i < FIRST_BYTE_ID:
                continue                      # special tokens print nothing
            if i < FIRST_BYTE_ID + 256:
                out.append(i - FIRST_BYTE_ID)
            else:
                out.append(PRINTABLE_FROM + i % PRINTABLE_COUNT)
        return out.decode("utf-8", errors="replace")

    def chat_prompt(self, messages: list[dict]) -> str:
        return plain_chat(messages)


class HFTokenizer:
    """A transformers tokenizer read from local files."""

    def __init__(self, path: str, vocab_size: int):
        tok = local_tokenizer(path)
        if len(tok) > vocab_size:
            raise InputError(f"--tokenizer {path} has {len(tok)} tokens but the model's vocabulary has "
                             f"{vocab_size}; use the model's own tokenizer")
        self.tok = tok
        self.size = len(tok)
        self.name = f"{type(tok).__name__} from {path}"
        self.chat_template = "the tokenizer's chat template" if getattr(tok, "chat_template", None) else PLAIN_CHAT

    def encode(self, text: str) -> list[int]:
        return list(self.tok(text)["input_ids"])

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) for i in ids if 0 <= int(i) < self.size], skip_special_tokens=True,
                               clean_up_tokenization_spaces=False)

    def chat_prompt(self, messages: list[dict]) -> str:
        if getattr(self.tok, "chat_template", None):
            return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return plain_chat(messages)


def local_tokenizer(path: str):
    """A transformers tokenizer from local files only (nothing is downloaded)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"--tokenizer {path}: no such file or folder")
    try:
        from transformers import AutoTokenizer, PreTrainedTokenizerFast
        if p.is_file():
            return PreTrainedTokenizerFast(tokenizer_file=str(p))
        return AutoTokenizer.from_pretrained(str(p), local_files_only=True)
    except Exception as e:  # noqa: BLE001 - any loader failure is a bad --tokenizer
        raise InputError(f"--tokenizer {path}: cannot load a tokenizer from it ({type(e).__name__}: "
                         f"{str(e)[:200]}); give a folder with tokenizer.json or vocab.json + merges.txt, "
                         "or a tokenizer.json file") from None


def plain_chat(messages: list[dict]) -> str:
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"


def load_tokenizer(path: str | None, vocab_size: int):
    return HFTokenizer(path, vocab_size) if path else ByteTokenizer(vocab_size)


class Detokenizer:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.done = 0              # ids[:done] are in `text`
        self.text = ""

    def add(self, token: int) -> str:
        """The text `token` completes (may be empty)."""
        self.ids.append(int(token))
        return self._emit(final=False)

    def flush(self) -> str:
        """The text held back (at the end of a request)."""
        return self._emit(final=True)

    def _emit(self, final: bool) -> str:
        if self.done == len(self.ids):
            return ""
        delta = self.tokenizer.decode(self.ids[self.done:])
        if delta.endswith("\ufffd") and not final:
            return ""              # inside a multi-byte character: wait for the rest
        self.done = len(self.ids)
        self.text += delta
        return delta
