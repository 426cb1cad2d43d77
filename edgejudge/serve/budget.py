"""The work one request of ``edgejudge serve`` may ask for, checked before it is queued.

``check_sequences``: the sequences a request decodes (responses × rubrics × samples, or rules × samples)
against the server's ``max_sequences`` (an ``InputError`` naming it). ``TextBudget``: the texts of a
request against the judge's context, each distinct text measured once, in the request's thread, never in
the judge's: a text longer than ``n_ctx × MAX_TOKEN_CHARS`` characters cannot fit whatever it holds and is
refused without tokenizing it; otherwise its tokens are counted, and a prompt whose fields alone (plus the
image's tokens and ``max_tokens``) are already over the context is the ``ContextOverflowError`` the judge
would raise, in the CLI's words (``inputs.name_overflow``). Anything that might fit goes to the judge,
which decides exactly.
"""

from __future__ import annotations

from ..errors import ContextOverflowError, InputError

__all__ = ["check_sequences", "check_length", "MAX_TOKEN_CHARS", "DEFAULT_MAX_SEQUENCES"]

#: The most sequences one request may decode by default (``--max-sequences``).
DEFAULT_MAX_SEQUENCES = 256
#: Characters per token past which no text fits: text averages 3-5 characters a token, and the longest
#: tokens of the judges' vocabularies (LLaVA / Prometheus-Vision: Llama-2, Mistral) hold 16, so
#: ``n_ctx × MAX_TOKEN_CHARS`` characters are always far over the context.
MAX_TOKEN_CHARS = 64


def check_sequences(counts: dict[str, int], limit: int) -> None:
    """Refuse a request whose sequences (the product of ``counts``: what → how many) exceed ``limit``."""
    total = 1
    for value in counts.values():
        total *= value
    if total > limit:
        shown = " × ".join(f"{n} {what}" for what, n in counts.items())
        raise InputError(
            f"the request asks for {total:,} sequences ({shown}), more than the server's limit of "
            f"{limit:,} (max_sequences)",
            hint="send fewer responses, rubrics or samples per request (or raise the server's "
            "--max-sequences)",
            about="max_sequences",
        )


def check_length(label: str, text: str | None, n_ctx: int) -> None:
    """Refuse a text too long for any prompt of an ``n_ctx`` context (``ContextOverflowError``, uncounted)."""
    bound = n_ctx * MAX_TOKEN_CHARS
    if text and len(text) > bound:
        raise ContextOverflowError(
            f"the prompt does not fit the context window ({n_ctx} tokens): the {label} is {len(text):,} "
            f"characters long, more than the {bound:,} a prompt of this context can hold",
            field=label,
            hint=f"shorten the {label}",
        )
