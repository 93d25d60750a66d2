"""CosyVoice preset voices with their aliases, text language guesses and prompt formats."""

from __future__ import annotations

import unicodedata

from bus.schemas import VoiceDesc

# CosyVoice-300M-SFT speaker ids -> (language, gender, aliases). Aliases: common Alibaba NLS voice
# names by language and gender, and OpenAI's six names (English voices, as OpenAI clients speak
# English by default). docs/cosyvoice.md has the table.
PRESETS: dict[str, tuple[str, str, list[str]]] = {
    "中文女": ("zh-CN", "female", ["xiaoyun", "ruoxi", "siqi", "sijia", "aixia", "xiaomei"]),
    "中文男": ("zh-CN", "male", ["xiaogang", "sicheng", "aicheng", "aida", "kenny"]),
    "英文女": ("en-US", "female", ["abby", "luna", "emily", "wendy", "alloy", "nova", "shimmer"]),
    "英文男": ("en-US", "male", ["andy", "harry", "eric", "william", "echo", "fable", "onyx"]),
    "日语男": ("ja-JP", "male", ["tomoya"]),
    "韩语女": ("ko-KR", "female", ["kyong"]),
    "粤语女": ("zh-HK", "female", ["shanshan", "jiajia", "taozi"]),
}


def preset_voices(speakers: list[str]) -> list[VoiceDesc]:
    """The voices a loaded SFT model speaks: the table's, then any extra speaker it has."""
    out = []
    order = [s for s in PRESETS if s in speakers] + sorted(set(speakers) - set(PRESETS))
    for spk in order:
        lang, gender, aliases = PRESETS.get(spk, ("", "", []))
        out.append(
            VoiceDesc(
                id=spk,
                name=spk,
                language=lang,
                gender=gender,  # type: ignore[arg-type]
                description="CosyVoice-300M-SFT preset",
                aliases=aliases,
            )
        )
    return out


def base_language(code: str | None) -> str | None:
    """ "zh-CN" -> "zh", "en_US" -> "en", "cmn" -> "zh"; None/"" -> None."""
    if not code:
        return None
    base = code.replace("_", "-").split("-")[0].strip().lower()
    return {"cmn": "zh", "chi": "zh", "zho": "zh", "eng": "en", "jpn": "ja", "kor": "ko"}.get(
        base, base or None
    )


def _script(ch: str) -> str | None:
    if ch.isascii():
        return "en" if ch.isalpha() else None
    name = unicodedata.name(ch, "")
    if "HIRAGANA" in name or "KATAKANA" in name:
        return "ja"
    if "HANGUL" in name:
        return "ko"
    if "CJK UNIFIED" in name:
        return "zh"
    if ch.isalpha() and "LATIN" in name:
        return "en"
    return None


def detect_language(text: str) -> str | None:
    """The language of a text by its script: kana -> ja, hangul -> ko, han -> zh, latin -> en.
    Any kana makes it Japanese (Japanese mixes kana with han); else the most frequent script."""
    counts: dict[str, int] = {}
    for ch in text:
        s = _script(ch)
        if s:
            counts[s] = counts.get(s, 0) + 1
    if not counts:
        return None
    if counts.get("ja"):
        return "ja"
    # a latin letter counts a fifth of a han character (a word vs a syllable)
    weight = {"en": 0.2}
    return max(counts, key=lambda s: counts[s] * weight.get(s, 1.0))


# CosyVoice3 expects a system prompt ended by its end-of-prompt marker before the text it is
# conditioned on (upstream asserts the marker's token is present); CosyVoice2 only the marker.
SYSTEM = "You are a helpful assistant."
EOP = "<|endofprompt|>"


def zero_shot_prompt_text(kind: str, transcript: str) -> str:
    return f"{SYSTEM}{EOP}{transcript}" if kind == "v3" else transcript


def cross_lingual_text(kind: str, text: str) -> str:
    return f"{SYSTEM}{EOP}{text}" if kind == "v3" else text


def instruct_text(kind: str, instructions: str) -> str:
    """FunSpeech's format: v3 "You are a helpful assistant. <prompt><|endofprompt|>", v2
    "<prompt><|endofprompt|>"; an instruction that already has the marker is used as given."""
    instructions = instructions.strip()
    if EOP in instructions:
        return instructions
    return f"{SYSTEM} {instructions}{EOP}" if kind == "v3" else f"{instructions}{EOP}"
