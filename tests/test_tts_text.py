"""The TTS text front end: sentence splitting, the incremental buffer fed token by token,
language detection, normalization (numbers, money, dates, units, symbols) and what it keeps."""

from __future__ import annotations

import re

import pytest

from engines.tts.text import (
    SentenceBuffer,
    clauses,
    clean,
    detect_language,
    normalize,
    split_sentences,
    units,
)
from engines.tts.tn_en import cardinal, ordinal, year

MIXED = (
    "今天天气很好。我们去公园散步吧！他说：“你好。”然后他走了。"
    "Mr. Smith paid $3.50 at 10:30 a.m. today. It was fine, really. Pi is 3.14 or so! "
    "東京へ行きます。"
)
MIXED_SENTENCES = [
    "今天天气很好。",
    "我们去公园散步吧！",
    "他说：“你好。”",
    "然后他走了。",
    "Mr. Smith paid $3.50 at 10:30 a.m. today.",
    "It was fine, really.",
    "Pi is 3.14 or so!",
    "東京へ行きます。",
]


def test_split_sentences_zh_en_ja() -> None:
    assert split_sentences(MIXED) == MIXED_SENTENCES
    assert split_sentences("第一行\n第二行") == ["第一行", "第二行"]
    assert split_sentences("。。。  ……") == []  # nothing to speak
    assert split_sentences("Wait... what?! OK.") == ["Wait...", "what?!", "OK."]
    assert split_sentences("J. K. Rowling wrote it. Fine.") == ["J. K. Rowling wrote it.", "Fine."]


def test_long_sentences_cut_at_clauses_not_words() -> None:
    zh = (
        "这是一个很长的句子，里面有很多的逗号，用来测试长句子的切分，"
        "看看它能不能在合适的地方切开，而不是在词的中间切开。"
    )
    pieces = clauses(zh, 50)
    assert "".join(pieces) == zh and len(pieces) > 1
    assert all(units(p) <= 50 for p in pieces)
    assert all(p.endswith(("，", "。")) for p in pieces)
    en = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen"
    pieces = clauses(en, 30)
    assert " ".join(pieces) == en and all(units(p) <= 30 for p in pieces)
    # numbers with separators are never cut
    pieces = clauses("It was 1,234,567 dollars and 10:30 exactly", 12)
    assert "1,234,567" in pieces and "10:30" in pieces
    # the first audio of a long text comes from a short piece
    long_text = "，".join(["我们今天讨论一下项目的进度"] * 12) + "。"
    assert all(units(s) <= 150 for s in split_sentences(long_text))


def feed_tokens(buf: SentenceBuffer, text: str, size: int) -> tuple[list[str], list[int]]:
    out, emitted_at = [], []
    for i in range(0, len(text), size):
        got = buf.push(text[i : i + size])
        out += got
        emitted_at += [i] * len(got)
    return out + buf.flush(), emitted_at


@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_sentence_buffer_token_by_token_matches_split(size: int) -> None:
    out, _ = feed_tokens(SentenceBuffer(), MIXED, size)
    assert out == MIXED_SENTENCES


def test_sentence_buffer_emits_early_and_never_mid_word() -> None:
    buf = SentenceBuffer()
    assert buf.push("Hello there") == []
    assert buf.push(". How") == ["Hello there."]
    assert buf.push(" are you?") == []  # "?" may still be followed by a closing quote
    assert buf.push(" Fine") == ["How are you?"]
    assert buf.push(" 3.") == []  # may become 3.5
    assert buf.push("5 percent") == []
    assert buf.flush() == ["Fine 3.5 percent"]
    assert buf.flush() == []
    # an LLM that never ends a sentence: released at clause/word boundaries past max_units
    words = ("the quick brown fox jumps over the lazy dog and keeps running, " * 6).split(" ")
    buf = SentenceBuffer(max_units=80)
    released = []
    for w in words:
        for piece in buf.push(w + " "):
            released.append(piece)
            assert units(piece) <= 80
    assert len(released) >= 3
    vocab = set(" ".join(words).replace(",", "").split())
    for piece in [*released, *buf.flush()]:
        assert set(piece.replace(",", "").split()) <= vocab  # whole words only
    # Chinese streamed one character at a time
    zh = "今天天气很好，我们去公园散步吧。明天下雨。"
    out, at = feed_tokens(SentenceBuffer(), zh, 1)
    assert out == ["今天天气很好，我们去公园散步吧。", "明天下雨。"]
    assert at[0] < zh.index("明") + 1  # the first sentence came out before the second arrived


def test_detect_language() -> None:
    assert detect_language("今天天气很好") == "zh"
    assert detect_language("今日はいい天気ですね") == "ja"
    assert detect_language("東京") == "zh"
    assert detect_language("東京", default="ja") == "ja"
    assert detect_language("안녕하세요") == "ko"
    assert detect_language("Hello world") == "en"
    assert detect_language("我用iPhone打电话") == "zh"
    assert detect_language("123 !!", default="en") == "en"
    assert detect_language("123") is None


EN_CASES = [
    ("I don't know, it's fine.", "I don't know, it's fine."),
    ("It costs $12.50.", "It costs twelve dollars and fifty cents."),
    ("Only $5 & more!", "Only five dollars and more!"),
    ("Up 50% today.", "Up fifty percent today."),
    ("Growth was 3.14% in 2024.", "Growth was three point one four percent in twenty twenty-four."),
    (
        "We had 1,234,567 visitors.",
        "We had one million two hundred and thirty-four thousand five hundred and sixty-seven "
        "visitors.",
    ),
    ("Meet at 10:30 a.m. or 3:05 pm.", "Meet at ten thirty A M or three oh five P M."),
    ("Come at 5 p.m.", "Come at five P M."),
    ("Due 2024-03-05.", "Due March fifth, twenty twenty-four."),
    ("The 21st century and the 1990s.", "The twenty-first century and the nineteen nineties."),
    (
        "It weighs 5kg and goes 60km/h.",
        "It weighs five kilograms and goes sixty kilometers per hour.",
    ),
    (
        "It is -3°C, about 3/4 of 1 m.",
        "It is minus three degrees Celsius, about three quarters of one meter.",
    ),
    (
        "Call 555-1234 for 3-5 days.",
        "Call five five five, one two three four for three to five days.",
    ),
    ("Dr. Smith vs. Mr. Jones, #1.", "Doctor Smith versus Mister Jones, number one."),
    ("He said “great”… right — yes.", "He said “great”… right — yes."),
]


@pytest.mark.parametrize(("text", "expected"), EN_CASES)
def test_normalize_en(text: str, expected: str) -> None:
    assert normalize(text, "en") == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("增长了50%。", "增长了百分之五十。"),
        ("价格是￥1,234.50", "价格是一千二百三十四点五零元"),
        ("花了$100和€20", "花了一百美元和二十欧元"),
        ("2024-03-05发布", "二零二四年三月五日发布"),
        ("10:30开会", "十点三十分开会"),
        ("温度-3℃到5℃", "温度负三摄氏度到五摄氏度"),
        ("约10~20人，重5kg", "约十到二十人，重五千克"),
        ("A&B公司", "A和B公司"),
        ("他说：“你好”，‘再见’……——好的！", "他说：“你好”，‘再见’……——好的！"),
        ("我用iPhone 15打电话", "我用iPhone 十五打电话"),
        ("１２３个ＡＢＣ", "一百二十三个ABC"),
    ],
)
def test_normalize_zh(text: str, expected: str) -> None:
    assert normalize(text, "zh") == expected


def test_clean_keeps_what_funspeech_deleted() -> None:
    kept = "don't 50% $5 A & B “quoted” ‘single’ wait… dash — 《书名》 【注】 a/b ~1"
    assert clean(kept) == kept
    assert clean("  emoji 😀 gone\tand\ncontrol\x07 chars ") == "emoji gone and control chars"
    assert clean("２５℃") == "25℃"


def test_number_words() -> None:
    assert cardinal(0) == "zero"
    assert cardinal(105) == "one hundred and five"
    assert cardinal(2_000_001) == "two million and one"
    assert ordinal(1) == "first" and ordinal(22) == "twenty-second"
    assert ordinal(100) == "one hundredth"
    assert year(1905) == "nineteen oh five" and year(2000) == "two thousand"
    assert year(2024) == "twenty twenty-four" and year(1900) == "nineteen hundred"
    assert not re.search(r"\d", normalize("Version 2.0 has 3 parts and 10 GB.", "en"))
