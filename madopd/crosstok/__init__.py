"""Teachers of another tokenizer: byte-offset alignment (``align``) and a teacher wrapper that
scores the student's tokens through it (``teacher``). See docs/cross-tokenizer.md."""

from madopd.crosstok.align import Alignment, align, token_starts

__all__ = ["Alignment", "align", "token_starts"]
