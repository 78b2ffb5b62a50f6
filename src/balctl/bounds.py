"""Size limits on what a job reports: a one-line summary and a bounded tail of its output.

The control plane stores both with the job and shows them to operators, so they are capped here,
at the source: a summary is one line of at most 500 characters, an output at most 64 KiB of
UTF-8. For output the tail is kept, because a command's last lines say why it failed.

A NUL character becomes U+FFFD, as an invalid byte does: it is no text, and no text column of
the control plane's database can keep one (the control plane makes the same replacement in
what older agents send).
"""

from __future__ import annotations

OUTPUT_LIMIT = 64 * 1024
SUMMARY_LIMIT = 500
_ELLIPSIS = "..."
_REPLACEMENT = "\ufffd"
_REPLACEMENT_BYTES = _REPLACEMENT.encode("utf-8")


def one_line(text: str, limit: int = SUMMARY_LIMIT) -> str:
    """`text` with every run of whitespace (newlines too) made one space, cut to `limit`."""
    line = " ".join(text.replace("\x00", _REPLACEMENT).split())
    if len(line) <= limit:
        return line
    return line[: limit - len(_ELLIPSIS)] + _ELLIPSIS


def bound_bytes(data: bytes, limit: int = OUTPUT_LIMIT, skipped: int = 0) -> str:
    """The tail of `data` as text of at most `limit` UTF-8 bytes.

    When anything is cut, the text starts with a "[... N bytes cut]" line, which counts towards
    the limit. `skipped` is how many bytes the caller already dropped in front of `data`.
    """
    # Decode first: invalid bytes (and NULs) become U+FFFD, so the byte count below is the one
    # that is sent.
    text = data.replace(b"\x00", _REPLACEMENT_BYTES).decode("utf-8", errors="replace")
    encoded = text.encode("utf-8")
    if skipped == 0 and len(encoded) <= limit:
        return encoded.decode("utf-8")
    cut = max(0, len(encoded) - limit)
    while True:
        marker = f"[... {cut + skipped} bytes cut]\n".encode("ascii")
        start = max(0, len(encoded) - max(0, limit - len(marker)))
        # Never start inside a multi-byte character: skip its continuation bytes.
        while start < len(encoded) and 0x80 <= encoded[start] < 0xC0:
            start += 1
        if start == cut:
            break
        cut = start
    return marker.decode("ascii") + encoded[cut:].decode("utf-8")


def bound_output(text: str, limit: int = OUTPUT_LIMIT) -> str:
    return bound_bytes(text.encode("utf-8"), limit)
