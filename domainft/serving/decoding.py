"""Decoding helpers: choosing the next token, and incremental detokenization with stop strings."""
from __future__ import annotations

import torch


def sample(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> int:
    """One token from ``logits`` (V,): argmax when ``temperature == 0``, else top-p sampling.

    Top-p (nucleus) sampling as in Holtzman et al. 2020, "The Curious Case of Neural Text
    Degeneration": keep the smallest set of tokens whose probability mass reaches ``top_p``.
    """
    if temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < top_p  # always keeps the top token
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
    return int(torch.multinomial(probs, 1, generator=generator))


class StopScanner:
    """Turns generated token ids into text deltas and detects request ``stop`` strings.

    The whole generated sequence is decoded after each token with ``skip_special_tokens=True``,
    so template markup such as ``<|im_start|>`` never reaches the client. Text that could still
    grow into a stop string, and a trailing U+FFFD (a multi-byte character split across tokens),
    is held back until the next token decides it; the matched stop string itself is never sent.

    Args:
        tokenizer: HF tokenizer used for decoding.
        stop: stop strings (empty strings are ignored).
    """

    def __init__(self, tokenizer, stop: list[str] | None = None):
        self.tokenizer = tokenizer
        self.stop = [s for s in (stop or []) if s]
        self.ids: list[int] = []
        self.text = ""
        self.sent = 0  # characters of ``text`` already returned as deltas

    def add(self, token_id: int) -> tuple[str, bool]:
        """Append one token; return (text delta safe to send now, whether a stop string matched)."""
        self.ids.append(int(token_id))
        self.text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        hit = self._first_stop()
        if hit is not None:
            delta = self.text[self.sent:hit] if hit > self.sent else ""
            self.sent = max(self.sent, hit)
            return delta, True
        end = len(self.text) - self._holdback()
        if end <= self.sent:
            return "", False
        delta = self.text[self.sent:end]
        self.sent = end
        return delta, False

    def flush(self) -> str:
        """Everything not yet sent (call when generation ends for another reason than a stop string)."""
        delta = self.text[self.sent:]
        self.sent = len(self.text)
        return delta

    def _first_stop(self) -> int | None:
        longest = max((len(s) for s in self.stop), default=0)
        start = max(0, self.sent - longest + 1)
        found = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
        return min(found) if found else None

    def _holdback(self) -> int:
        tail = self.text[self.sent:]
        hold = len(tail) - len(tail.rstrip("\ufffd"))
        for k in range(min(len(tail), max((len(s) for s in self.stop), default=0)), 0, -1):
            if any(s.startswith(tail[-k:]) for s in self.stop):
                return max(hold, k)
        return hold
