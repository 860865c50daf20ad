"""The chat turn format: one definition for training text, the tokenizer and serving.

A conversation is rendered as `<|role|>\\n` + content + `\\n` per turn, and an open
assistant turn (`<|assistant|>\\n`) asks for the answer. `CHAT_TEMPLATE` (the Jinja
template the trained tokenizer carries, so any Hugging Face tool renders the same) is
built from the same pieces as `render`, which renders it without a tokenizer (synthetic
data is filtered before any tokenizer exists); a test checks that the two agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

EOS = "<|endoftext|>"
PAD = "<|pad|>"
ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
SPECIAL_TOKENS = [EOS, PAD, *ROLE_TOKENS.values()]
TURN_END = "\n"

CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{{ '<|' + m['role'] + '|>\n' + m['content'] + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def turn_header(role: str) -> str:
    """`<|user|>\\n`: what opens a turn of `role`."""
    return f"{ROLE_TOKENS[role]}\n"


def render(messages: Sequence[Mapping[str, str]], *, add_generation_prompt: bool = False) -> str:
    """The conversation as CHAT_TEMPLATE renders it: "<|user|>\\nHi\\n<|assistant|>\\nHello\\n"."""
    text = "".join(turn_header(m["role"]) + m["content"] + TURN_END for m in messages)
    return text + (turn_header("assistant") if add_generation_prompt else "")
