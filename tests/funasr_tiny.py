"""Tiny random-weight FunASR model directories for tests and benchmarks.

The real Paraformer / FSMN-VAD / CT-Punc classes with shrunken dims (see
shared/reference/funasr-tiny.md). Weights are seeded, so every build is identical. The text the
models produce is noise; the code path, caches, timing and errors are real.

VAD note: a random FSMN scores every frame as speech (its silence class gets ~1/248 of the
probability), so the tiny VAD sets FunASR's own `decibel_thres` option to -30: FunASR's frame
decibel is 10*log10(sum of squares of the 25 ms frame, float samples), so frames with RMS below
~0.0016 (about -56 dBFS) are silence. End points then follow
the audio's energy through FunASR's real VAD state machine (window detector, max_end_silence).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

ROLES = ("streaming", "offline", "vad", "punc")

_CHARS = list(dict.fromkeys("你好世界我们今天气很不错是的一二三四五六七八九十人大中小上下"))
_TOKENS = ["<blank>", "<s>", "</s>", *_CHARS, "<unk>"]
_PUNC_LIST = ["<unk>", "_", "，", "。", "？", "、"]

_PARAFORMER_FRONTEND = {
    "fs": 16000,
    "window": "hamming",
    "n_mels": 80,
    "frame_length": 25,
    "frame_shift": 10,
    "lfr_m": 7,
    "lfr_n": 6,
    "dither": 0.0,
}
_DECODER = {
    "attention_heads": 2,
    "linear_units": 64,
    "num_blocks": 2,
    "dropout_rate": 0.1,
    "positional_dropout_rate": 0.1,
    "self_attention_dropout_rate": 0.1,
    "src_attention_dropout_rate": 0.1,
    "att_layer_num": 2,
    "kernel_size": 11,
}
_ENCODER = {
    "output_size": 32,
    "attention_heads": 2,
    "linear_units": 64,
    "num_blocks": 2,
    "dropout_rate": 0.1,
    "positional_dropout_rate": 0.1,
    "attention_dropout_rate": 0.1,
    "pos_enc_class": "SinusoidalPositionEncoder",
    "normalize_before": True,
    "kernel_size": 11,
    "sanm_shfit": 0,
    "selfattention_layer_type": "sanm",
}
_PARAFORMER_MODEL_CONF = {
    "ctc_weight": 0.0,
    "lsm_weight": 0.1,
    "length_normalized_loss": True,
    "predictor_weight": 1.0,
    "predictor_bias": 1,
    "sampling_ratio": 0.75,
}
_PREDICTOR = {"idim": 32, "threshold": 1.0, "l_order": 1, "r_order": 1, "tail_threshold": 0.45}
_TOKENIZER = {"unk_symbol": "<unk>", "split_with_space": True}


def _streaming_config() -> dict[str, Any]:
    encoder = dict(
        _ENCODER,
        input_layer="pe_online",
        chunk_size=[12, 15],
        stride=[8, 10],
        pad_left=[0, 0],
        encoder_att_look_back_factor=[4, 4],
        decoder_att_look_back_factor=[1, 1],
    )
    return {
        "model": "ParaformerStreaming",
        "model_conf": _PARAFORMER_MODEL_CONF,
        "encoder": "SANMEncoderChunkOpt",
        "encoder_conf": encoder,
        "decoder": "ParaformerSANMDecoder",
        "decoder_conf": dict(_DECODER, sanm_shfit=5),
        "predictor": "CifPredictorV2",
        "predictor_conf": _PREDICTOR,
        "frontend": "WavFrontendOnline",
        "frontend_conf": _PARAFORMER_FRONTEND,
        "tokenizer": "CharTokenizer",
        "tokenizer_conf": _TOKENIZER,
        "input_size": 560,
    }


def _offline_config() -> dict[str, Any]:
    return {
        "model": "Paraformer",
        "model_conf": _PARAFORMER_MODEL_CONF,
        "encoder": "SANMEncoder",
        "encoder_conf": dict(_ENCODER, input_layer="pe"),
        "decoder": "ParaformerSANMDecoder",
        "decoder_conf": dict(_DECODER, sanm_shfit=0),
        "predictor": "CifPredictorV2",
        "predictor_conf": _PREDICTOR,
        "frontend": "WavFrontend",
        "frontend_conf": _PARAFORMER_FRONTEND,
        "tokenizer": "CharTokenizer",
        "tokenizer_conf": _TOKENIZER,
        "input_size": 560,
    }


def _vad_config() -> dict[str, Any]:
    return {
        "model": "FsmnVADStreaming",
        "model_conf": {
            "sample_rate": 16000,
            "detect_mode": 1,
            "snr_mode": 0,
            "max_end_silence_time": 800,
            "max_start_silence_time": 3000,
            "do_start_point_detection": True,
            "do_end_point_detection": True,
            "window_size_ms": 200,
            "sil_to_speech_time_thres": 150,
            "speech_to_sil_time_thres": 150,
            "speech_2_noise_ratio": 1.0,
            "do_extend": 1,
            "lookback_time_start_point": 200,
            "lookahead_time_end_point": 100,
            "max_single_segment_time": 60000,
            "snr_thres": -100.0,
            "noise_frame_num_used_for_snr": 100,
            "decibel_thres": -30.0,  # energy gate, see module docstring
            "speech_noise_thres": 0.6,
            "fe_prior_thres": 0.0001,
            "silence_pdf_num": 1,
            "sil_pdf_ids": [0],
            "speech_noise_thresh_low": -0.1,
            "speech_noise_thresh_high": 0.3,
            "output_frame_probs": False,
            "frame_in_ms": 10,
            "frame_length_ms": 25,
        },
        "encoder": "FSMN",
        "encoder_conf": {
            "input_dim": 400,
            "input_affine_dim": 16,
            "fsmn_layers": 2,
            "linear_dim": 16,
            "proj_dim": 8,
            "lorder": 20,
            "rorder": 0,
            "lstride": 1,
            "rstride": 0,
            "output_affine_dim": 16,
            "output_dim": 248,
        },
        "frontend": "WavFrontendOnline",
        "frontend_conf": dict(_PARAFORMER_FRONTEND, lfr_m=5, lfr_n=1),
    }


def _punc_config() -> dict[str, Any]:
    return {
        "model": "CTTransformer",
        "model_conf": {
            "ignore_id": 0,
            "embed_unit": 16,
            "att_unit": 16,
            "dropout_rate": 0.1,
            "punc_list": _PUNC_LIST,
            "punc_weight": [1.0] * len(_PUNC_LIST),
            "sentence_end_id": 3,
        },
        "encoder": "SANMEncoder",
        "encoder_conf": {
            "input_size": 16,
            "output_size": 16,
            "attention_heads": 2,
            "linear_units": 32,
            "num_blocks": 1,
            "dropout_rate": 0.1,
            "positional_dropout_rate": 0.1,
            "attention_dropout_rate": 0.0,
            "input_layer": "pe",
            "pos_enc_class": "SinusoidalPositionEncoder",
            "normalize_before": True,
            "kernel_size": 11,
            "sanm_shfit": 0,
            "selfattention_layer_type": "sanm",
            "padding_idx": 0,
        },
        "tokenizer": "CharTokenizer",
        "tokenizer_conf": {"unk_symbol": "<unk>"},
    }


_CONFIGS = {
    "streaming": _streaming_config,
    "offline": _offline_config,
    "vad": _vad_config,
    "punc": _punc_config,
}


def _write_cmvn(path: Path, dim: int) -> None:
    zeros = " ".join(["0"] * dim)
    ones = " ".join(["1"] * dim)
    path.write_text(
        "<Nnet>\n"
        f"<Splice> {dim} {dim}\n[ 0 ]\n"
        f"<AddShift> {dim} {dim}\n<LearnRateCoef> 0 [ {zeros} ]\n"
        f"<Rescale> {dim} {dim}\n<LearnRateCoef> 0 [ {ones} ]\n"
        "</Nnet>\n"
    )


def build_model_dir(role: str, out: Path, seed: int = 0) -> Path:
    """Write one tiny model directory (config.yaml, model.pt, tokens.json, am.mvn)."""
    import torch

    from engines.asr.funasr.models import import_funasr

    import_funasr()  # registers the model classes, keeps funasr's import notice quiet
    from funasr.register import tables

    conf = _CONFIGS[role]()
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(conf, allow_unicode=True, sort_keys=False))
    kwargs: dict[str, Any] = {}
    if role == "punc":
        tokens = ["<blank>", "<s>", "</s>", *_CHARS, "<unk>"]
    elif role != "vad":
        tokens = _TOKENS
    else:
        tokens = []
    if tokens:
        (out / "tokens.json").write_text(json.dumps(tokens, ensure_ascii=False))
        kwargs["vocab_size"] = len(tokens)
    if role != "punc":
        dim = 560 if role in ("streaming", "offline") else 400
        _write_cmvn(out / "am.mvn", dim)
        kwargs["input_size"] = dim
    cls = tables.model_classes[conf["model"]]
    build_kwargs = {k: v for k, v in conf.items() if k not in ("model", "model_conf")}
    build_kwargs.update(conf["model_conf"])
    build_kwargs.update(kwargs)
    torch.manual_seed(seed)
    model = cls(**build_kwargs)
    torch.save(model.state_dict(), out / "model.pt")
    return out


def build_tiny_models(root: Path) -> dict[str, Path]:
    """Build the four tiny model dirs under root; returns {role: dir}."""
    return {role: build_model_dir(role, Path(root) / role, seed=i) for i, role in enumerate(ROLES)}
