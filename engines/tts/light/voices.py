"""The light engine's voices: the reference presets (中文女 …) and the native speakers, each on one
model speaker, with the NLS, DashScope and OpenAI names that select it (docs/tts-voices.md)."""

from __future__ import annotations

from dataclasses import dataclass

from bus.schemas import VoiceDesc

KOKORO_SPEAKERS = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
PIPER_SPEAKER = "joe"
MALE_FALLBACK, FEMALE_FALLBACK = "jm_kumo", "jf_alpha"  # for text joe cannot read


@dataclass(frozen=True, slots=True)
class LightVoice:
    desc: VoiceDesc
    speaker: str  # a Kokoro voice pack or "joe" (Piper)
    language: str  # zh | en | ja: reading of Han-only text and the default


def _voice(
    id_: str, speaker: str, bcp47: str, gender: str, description: str, aliases: str = ""
) -> LightVoice:
    desc = VoiceDesc(
        id=id_,
        name=id_,
        language=bcp47,
        gender=gender,  # type: ignore[arg-type]
        description=description,
        aliases=aliases.split(),
    )
    return LightVoice(desc, speaker, "ja" if bcp47 == "ja-JP" else bcp47[:2].replace("ko", "zh"))


_ZH = "speaks Mandarin and English (a Japanese speaker: slight accent)"
VOICES: list[LightVoice] = [
    _voice("中文女", "jf_alpha", "zh-CN", "female", f"Kokoro jf_alpha; {_ZH}",
           "xiaoyun ruoxi siqi sijia aixia xiaomei aiqi aijia ninger ruilin siyue aiya aimei "
           "aiyu aiyue aijing aina yina sijing sitong xiaobei aitong aiwei aibao qingqing cuijie "
           "xiaoxian zhixiaobai longxiaochun longwan longhua longxiaoxia longxiaobai longjing "
           "longmiao longyue longyuan longtong"),
    _voice("中文男", "jm_kumo", "zh-CN", "male", f"Kokoro jm_kumo; {_ZH}",
           "xiaogang aicheng aida kenny aishuo aifei yaqun ailun dahu longcheng longxiaocheng "
           "longshu longshuo longfei longlaotie longxiang longjielidou"),
    _voice("英文女", "jf_alpha", "en-US", "female",
           "Kokoro jf_alpha reading English (slight Japanese accent); also speaks Mandarin",
           "abby emily luna wendy olivia lydia ava annie cally cindy beth betty loongstella "
           "loongbella alloy coral nova sage shimmer"),
    _voice("英文男", "joe", "en-US", "male",
           "Piper en_US joe (native US English); Mandarin and Japanese sentences are read by "
           "Kokoro jm_kumo", "harry andy eric luca william ash ballad echo fable onyx verse"),
    _voice("日语男", "jm_kumo", "ja-JP", "male",
           "Kokoro jm_kumo (native Japanese; Japanese text needs the `ja` extra); also speaks "
           "Mandarin and English", "tomoya"),
    _voice("韩语女", "jf_nezumi", "ko-KR", "female",
           "no Korean voice in the light engine: Kokoro jf_nezumi speaks Mandarin and English; "
           "Korean (Hangul) text is refused", "kyong"),
    _voice("粤语女", "jf_tebukuro", "zh-HK", "female",
           "no Cantonese voice in the light engine: Kokoro jf_tebukuro reads Chinese text in "
           "Mandarin", "shanshan jiajia taozi kelly"),
    *[
        _voice(s, s, "ja-JP", "male" if s.startswith("jm") else "female",
               f"Kokoro-82M {s}: native Japanese (the `ja` extra), speaks Mandarin and English",
               "tomoka" if s == "jf_alpha" else "")
        for s in KOKORO_SPEAKERS
    ],
    _voice("joe", "joe", "en-US", "male", "Piper en_US joe medium: native US English"),
]  # fmt: skip

BY_ID: dict[str, LightVoice] = {v.desc.id: v for v in VOICES}
