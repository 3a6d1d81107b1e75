"""quotaflow.tokens: exact prompt-token estimates with SmolLM2's own tokenizer."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quotaflow.tokens import (
    DEFAULT_SYSTEM_PROMPT,
    MODELS,
    SMOLLM2_CHAT_TEMPLATE,
    ChatMessage,
    ContextOverflowError,
    Estimate,
    ModelTokenizer,
    UnknownModelError,
    estimate,
    parse_messages,
    render_chat,
    render_input,
    smollm2_gguf_path,
    smollm2_tokenizer,
)
from quotaflow.triton.gguf import GGUFError, parse_metadata, read_metadata

TRICKY = [
    "",
    "Hello world",
    "  leading and trailing  ",
    "tabs\tand\nnew\n\nlines\r\n",
    "12345 67.89 1,000,000 x2",
    "x²+y³=½, ٣٤ ⅷ",
    "日本語のテキスト",
    "emoji 😀👍🏽 family 👨‍👩‍👧",
    "don't I'll we've they're 'S",
    "<|im_start|>user\nhi<|im_end|>\n",
    "<|endoftext|><repo_name>x<empty_output>",
    "café naïve",
    "\u00a0nbsp\u2003em\u200bzw",
    "def f(x):\n    return x**2  # c\n",
    " " * 40 + "end",
    "Ġ Ċ",
    ":\x06/",  # a byte with no token blocks merges across it (found by hypothesis)
    "a\x04\x13\x14\x16\x1db \x06 c",
    "\U00040000\U0008abcd x",  # UTF-8 lead bytes 0xf1 0xf2 have no token either
]


@pytest.fixture(scope="module")
def tok() -> ModelTokenizer:
    return smollm2_tokenizer()


@pytest.fixture(scope="module")
def llama() -> Any:
    llama_cpp = pytest.importorskip("llama_cpp")
    model = llama_cpp.Llama(model_path=str(smollm2_gguf_path()), vocab_only=True, verbose=False)
    yield model
    model.close()


def llama_ids(llama: Any, text: str) -> list[int]:
    return list(llama.tokenize(text.encode(), add_bos=False, special=True))


# --- the tokenizer is llama.cpp's, exactly -------------------------------------------------


@pytest.mark.parametrize("text", TRICKY)
def test_tokenizer_matches_llama_cpp(tok: ModelTokenizer, llama: Any, text: str) -> None:
    assert tok.encode(text) == llama_ids(llama, text)


@settings(max_examples=500, deadline=None)
@given(text=st.text(max_size=80))
def test_tokenizer_matches_llama_cpp_on_any_text(
    tok: ModelTokenizer, llama: Any, text: str
) -> None:
    assert tok.encode(text) == llama_ids(llama, text)


def test_rendered_chat_matches_llama_cpp(tok: ModelTokenizer, llama: Any) -> None:
    rendered = render_input(None, [{"role": "user", "content": "What is 2+2?"}])
    assert tok.encode(rendered) == llama_ids(llama, rendered)
    assert tok.encode(rendered)[0] == 1  # <|im_start|> is one special token


# SmolLM2's vocabulary has no token for 21 byte values (control bytes 0x04 0x06 0x13 0x14 0x16
# 0x1d and UTF-8 lead bytes 0xc0 0xc1 0xf1 0xf2 0xf5-0xff): llama.cpp drops them, and so does this
# tokenizer (the ids still agree, above), so only text without them decodes back to itself.
DECODABLE = st.characters(
    codec="utf-8", max_codepoint=0x3FFFF, exclude_characters="\x04\x06\x13\x14\x16\x1d"
)


@settings(max_examples=100, deadline=None)
@given(text=st.text(DECODABLE, max_size=60))
def test_decode_inverts_encode(tok: ModelTokenizer, text: str) -> None:
    assert tok.decode(tok.encode(text)) == text


def test_known_count_is_stable() -> None:
    # measured once against the served model (smollm2 reported prompt_tokens=37)
    assert estimate("smollm2", "What is 2+2?", None, 8) == Estimate(37, 8, 45)


# --- the chat template ---------------------------------------------------------------------


def test_template_constant_is_the_gguf_template() -> None:
    meta = read_metadata(smollm2_gguf_path())
    assert meta["tokenizer.chat_template"] == SMOLLM2_CHAT_TEMPLATE


MESSAGE_LISTS: list[list[ChatMessage]] = [
    [{"role": "user", "content": "hi"}],
    [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"}],
    [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c\n\nd"},
    ],
    [{"role": "assistant", "content": ""}, {"role": "system", "content": "late system"}],
]


@pytest.mark.parametrize("messages", MESSAGE_LISTS)
def test_render_chat_equals_the_jinja_template(messages: list[ChatMessage]) -> None:
    jinja2 = pytest.importorskip("jinja2")
    template = jinja2.Environment().from_string(SMOLLM2_CHAT_TEMPLATE)
    expected = template.render(messages=messages, add_generation_prompt=True)
    assert render_chat(messages) == expected


def test_plain_prompt_is_one_user_message() -> None:
    assert render_input("hello", None) == render_chat([{"role": "user", "content": "hello"}])
    assert DEFAULT_SYSTEM_PROMPT in render_input("hello", None)
    assert render_input("hello", None).endswith("<|im_start|>assistant\n")


def test_a_system_message_replaces_the_default_one() -> None:
    rendered = render_input(None, [{"role": "system", "content": "S"}])
    assert DEFAULT_SYSTEM_PROMPT not in rendered
    assert rendered.startswith("<|im_start|>system\nS<|im_end|>\n")


# --- estimate ------------------------------------------------------------------------------


def test_estimate_counts_the_rendered_prompt(tok: ModelTokenizer) -> None:
    messages: list[ChatMessage] = [{"role": "user", "content": "Tell me about streams."}]
    e = estimate("smollm2", None, messages, 50)
    assert e.prompt_tokens == tok.count(render_chat(messages))
    assert e.max_tokens == 50
    assert e.total == e.prompt_tokens + 50
    assert estimate("smollm2", "Tell me about streams.", None, 50) == e


@settings(max_examples=50, deadline=None)
@given(content=st.text(max_size=200), max_tokens=st.integers(1, 4096))
def test_estimate_total_is_prompt_plus_max(content: str, max_tokens: int) -> None:
    e = estimate("smollm2", content, None, max_tokens)
    assert e.total == e.prompt_tokens + max_tokens
    # the template adds tokens around any content: never less than the empty prompt's count
    assert e.prompt_tokens >= estimate("smollm2", "", None, 1).prompt_tokens


def test_echo_counts_like_smollm2() -> None:
    assert sorted(MODELS) == ["echo", "smollm2"]
    assert estimate("echo", "same text", None, 3) == estimate("smollm2", "same text", None, 3)


def test_unknown_model() -> None:
    with pytest.raises(UnknownModelError, match="unknown model 'gpt-17'"):
        estimate("gpt-17", "hi", None, 1)


@pytest.mark.parametrize("max_tokens", [0, -1, True, 2.5])
def test_bad_max_tokens(max_tokens: Any) -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        estimate("smollm2", "hi", None, max_tokens)


def test_exactly_one_of_prompt_and_messages() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        estimate("smollm2", None, None, 1)
    with pytest.raises(ValueError, match="exactly one"):
        estimate("smollm2", "hi", [{"role": "user", "content": "hi"}], 1)


@pytest.mark.parametrize(
    "messages",
    [[], "text", [{"role": "robot", "content": "x"}], [{"role": "user"}], [["user", "x"]]],
)
def test_bad_messages(messages: Any) -> None:
    with pytest.raises(ValueError, match="messages"):
        parse_messages(messages)


def test_context_overflow() -> None:
    room = 8192 - estimate("smollm2", "hi", None, 1).prompt_tokens
    assert estimate("smollm2", "hi", None, room).total == 8192
    with pytest.raises(ContextOverflowError, match="8192-token context"):
        estimate("smollm2", "hi", None, room + 1)


# --- the GGUF reader -----------------------------------------------------------------------


def _gguf_string(s: str) -> bytes:
    raw = s.encode()
    return struct.pack("<Q", len(raw)) + raw


def _gguf(kvs: list[tuple[str, int, bytes]], version: int = 3) -> bytes:
    head = b"GGUF" + struct.pack("<IQQ", version, 0, len(kvs))
    return head + b"".join(_gguf_string(k) + struct.pack("<I", t) + v for k, t, v in kvs)


def test_gguf_reader_decodes_every_kind() -> None:
    data = _gguf(
        [
            ("u8", 0, struct.pack("<B", 7)),
            ("i32", 5, struct.pack("<i", -3)),
            ("f32", 6, struct.pack("<f", 0.5)),
            ("flag", 7, struct.pack("<?", True)),
            ("name", 8, _gguf_string("smöl")),
            ("u64", 10, struct.pack("<Q", 2**40)),
            ("ints", 9, struct.pack("<IQ", 5, 3) + struct.pack("<3i", 1, 2, 3)),
            ("strs", 9, struct.pack("<IQ", 8, 2) + _gguf_string("a b") + _gguf_string("")),
        ]
    )
    assert parse_metadata(data) == {
        "u8": 7,
        "i32": -3,
        "f32": 0.5,
        "flag": True,
        "name": "smöl",
        "u64": 2**40,
        "ints": [1, 2, 3],
        "strs": ["a b", ""],
    }


def test_gguf_reader_rejects_other_files() -> None:
    with pytest.raises(GGUFError, match="magic"):
        parse_metadata(b"GGML" + bytes(20))
    with pytest.raises(GGUFError, match="version"):
        parse_metadata(_gguf([], version=9))
    with pytest.raises(GGUFError, match="value type"):
        parse_metadata(_gguf([("x", 42, b"")]))
