"""Text protocols inside model output: tool calls (hermes) and reasoning (qwen3 `<think>`), streamed or whole."""


def partial_tag(text: str, tag: str) -> int:
    """Length of the longest end of `text` that is a proper start of `tag` (held back while streaming)."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0
