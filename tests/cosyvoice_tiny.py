"""Tiny random-weight CosyVoice model folders (v1 SFT, v2, v3) for tests and benchmarks.

The real upstream classes (from the checkout COSYVOICE_DIR names) with shrunken dimensions, built
at test time: a small hyperpyyaml config per version naming the same classes as the released
models, `llm.pt` / `flow.pt` / `hift.pt` saved from those modules, tiny ONNX stand-ins for the
speech tokenizer and the CAM++ speaker model with the released models' inputs and outputs, a
tiny Qwen2 ("CosyVoice-BlankEN") for v2/v3 and, for v1, `spk2info.pt` with the 7 preset speakers.
The speech is noise; loading, frontends, LLM decoding, flow matching, vocoder and streaming are
upstream's own code. Weights are seeded.

Constraints met here (shared/reference/models.md): CosyVoice3 finds `<|endofprompt|>` by the
hard-coded token id 151646, so the tiny Qwen2 tokenizer has 151643 ordinary tokens and the
three Qwen specials, after which CosyVoice adds `<|endofprompt|>` as id 151646; the CosyVoice2
flow encoder works at 512 channels (its upsampling layers are fixed at 512).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

PRESETS = ["中文女", "中文男", "英文女", "英文男", "日语男", "韩语女", "粤语女"]
_QWEN_ORDINARY = 151643  # ids 0..151642; then <|endoftext|> <|im_start|> <|im_end|>
QWEN_VOCAB = 151936
HIDDEN = 32

_SAMPLING = """    sampling: !name:cosyvoice.utils.common.ras_sampling
        top_p: 0.8
        top_k: 25
        win_size: 10
        tau_r: 0.1
"""
_CFM = """        in_channels: 240
        n_spks: 1
        spk_emb_dim: 80
        cfm_params: !new:omegaconf.DictConfig
            content:
                sigma_min: 1e-06
                solver: 'euler'
                t_scheduler: 'cosine'
                training_cfg_rate: 0.2
                inference_cfg_rate: 0.7
                reg_loss_type: 'l1'
"""
_ATTN = """        dropout_rate: 0.0
        positional_dropout_rate: 0.0
        attention_dropout_rate: 0.0
        pos_enc_layer_type: 'rel_pos_espnet'
        selfattention_layer_type: 'rel_selfattn'
"""
_CONFORMER = (
    """        attention_heads: 2
        linear_units: 64
        num_blocks: 1
        normalize_before: True
        input_layer: 'linear'
        use_cnn_module: False
        macaron_style: False
"""
    + _ATTN
)


def _hift(cls: str, rate: int, ups: str, kernels: str, src: str, extra: str, f0: str) -> str:
    n = len(json.loads(ups))
    dil = ", ".join(["[1, 3]"] * n)
    return f"""hift: !new:cosyvoice.hifigan.generator.{cls}
    in_channels: 80
    base_channels: 32
    nb_harmonics: 8
    sampling_rate: {rate}
    nsf_alpha: 0.1
    nsf_sigma: 0.003
    nsf_voiced_threshold: 10
    upsample_rates: {ups}
    upsample_kernel_sizes: {kernels}
    istft_params:
        n_fft: 16
        hop_len: 4
    resblock_kernel_sizes: [3]
    resblock_dilation_sizes: [[1, 3]]
    source_resblock_kernel_sizes: {src}
    source_resblock_dilation_sizes: [{dil}]
    lrelu_slope: 0.1
    audio_limit: 0.99
{extra}    f0_predictor: !new:cosyvoice.hifigan.f0_predictor.{f0}
        num_class: 1
        in_channels: 80
        cond_channels: 32
"""


def _mel(rate: int, n_fft: int, hop: int, fmax: str) -> str:
    return f"""feat_extractor: !name:matcha.utils.audio.mel_spectrogram
    n_fft: {n_fft}
    num_mels: 80
    sampling_rate: {rate}
    hop_size: {hop}
    win_size: {n_fft}
    fmin: 0
    fmax: {fmax}
    center: False
allowed_special: 'all'
"""


V1_YAML = (
    f"""sample_rate: 22050
llm: !new:cosyvoice.llm.llm.TransformerLM
    text_encoder_input_size: {HIDDEN}
    llm_input_size: {HIDDEN}
    llm_output_size: {HIDDEN}
    text_token_size: 51866
    speech_token_size: 4096
    spk_embed_dim: 192
    text_encoder: !new:cosyvoice.transformer.encoder.ConformerEncoder
        input_size: {HIDDEN}
        output_size: {HIDDEN}
        use_dynamic_chunk: False
        use_dynamic_left_chunk: False
        static_chunk_size: 1
"""
    + _CONFORMER.replace("        ", "        ", 1)
    + f"""    llm: !new:cosyvoice.transformer.encoder.TransformerEncoder
        input_size: {HIDDEN}
        output_size: {HIDDEN}
        attention_heads: 2
        linear_units: 64
        num_blocks: 1
        input_layer: 'linear_legacy'
        static_chunk_size: 1
"""
    + _ATTN
    + _SAMPLING
    + f"""flow: !new:cosyvoice.flow.flow.MaskedDiffWithXvec
    input_size: {HIDDEN}
    output_size: 80
    spk_embed_dim: 192
    output_type: 'mel'
    vocab_size: 4096
    input_frame_rate: 50
    only_mask_loss: True
    encoder: !new:cosyvoice.transformer.encoder.ConformerEncoder
        input_size: {HIDDEN}
        output_size: {HIDDEN}
"""
    + _CONFORMER
    + """    length_regulator: !new:cosyvoice.flow.length_regulator.InterpolateRegulator
        channels: 80
        sampling_ratios: [1]
    decoder: !new:cosyvoice.flow.flow_matching.ConditionalCFM
"""
    + _CFM
    + """        estimator: !new:cosyvoice.flow.decoder.ConditionalDecoder
            in_channels: 320
            out_channels: 80
            channels: [32]
            dropout: 0.0
            attention_head_dim: 16
            n_blocks: 1
            num_mid_blocks: 1
            num_heads: 2
            act_fn: 'gelu'
"""
    + _hift("HiFTGenerator", 22050, "[8, 8]", "[16, 16]", "[7, 11]", "", "ConvRNNF0Predictor")
    + """get_tokenizer: !name:whisper.tokenizer.get_tokenizer
    multilingual: True
    num_languages: 100
    language: 'en'
    task: 'transcribe'
"""
    + _mel(22050, 1024, 256, "8000")
)


def _qwen_llm(cls: str) -> str:
    return (
        f"""sample_rate: 24000
qwen_pretrain_path: ''
llm: !new:cosyvoice.llm.llm.{cls}
    llm_input_size: {HIDDEN}
    llm_output_size: {HIDDEN}
    speech_token_size: 6561
    length_normalized_loss: True
    lsm_weight: 0
    mix_ratio: [5, 15]
    llm: !new:cosyvoice.llm.llm.Qwen2Encoder
        pretrain_path: !ref <qwen_pretrain_path>
"""
        + _SAMPLING
    )


_CAUSAL_DECODER_ARGS = """            static_chunk_size: 50
            num_decoding_left_chunks: -1
"""

V2_YAML = (
    _qwen_llm("Qwen2LM")
    + """flow: !new:cosyvoice.flow.flow.CausalMaskedDiffWithXvec
    input_size: 512
    output_size: 80
    spk_embed_dim: 192
    output_type: 'mel'
    vocab_size: 6561
    input_frame_rate: 25
    only_mask_loss: True
    token_mel_ratio: 2
    pre_lookahead_len: 3
    encoder: !new:cosyvoice.transformer.upsample_encoder.UpsampleConformerEncoder
        input_size: 512
        output_size: 512
        static_chunk_size: 25
"""
    + _CONFORMER
    + """    decoder: !new:cosyvoice.flow.flow_matching.CausalConditionalCFM
"""
    + _CFM
    + """        estimator: !new:cosyvoice.flow.decoder.CausalConditionalDecoder
            in_channels: 320
            out_channels: 80
            channels: [32]
            dropout: 0.0
            attention_head_dim: 16
            n_blocks: 1
            num_mid_blocks: 1
            num_heads: 2
            act_fn: 'gelu'
"""
    + _CAUSAL_DECODER_ARGS
    + _hift(
        "HiFTGenerator", 24000, "[8, 5, 3]", "[16, 11, 7]", "[7, 7, 11]", "", "ConvRNNF0Predictor"
    )
    + """get_tokenizer: !name:cosyvoice.tokenizer.tokenizer.get_qwen_tokenizer
    token_path: !ref <qwen_pretrain_path>
    skip_special_tokens: True
"""
    + _mel(24000, 1920, 480, "null")
)

V3_YAML = (
    _qwen_llm("CosyVoice3LM")
    + f"""flow: !new:cosyvoice.flow.flow.CausalMaskedDiffWithDiT
    input_size: 80
    output_size: 80
    spk_embed_dim: 192
    output_type: 'mel'
    vocab_size: 6561
    input_frame_rate: 25
    only_mask_loss: True
    token_mel_ratio: 2
    pre_lookahead_len: 3
    pre_lookahead_layer: !new:cosyvoice.transformer.upsample_encoder.PreLookaheadLayer
        in_channels: 80
        channels: {HIDDEN}
        pre_lookahead_len: 3
    decoder: !new:cosyvoice.flow.flow_matching.CausalConditionalCFM
"""
    + _CFM
    + f"""        estimator: !new:cosyvoice.flow.DiT.dit.DiT
            dim: {HIDDEN}
            depth: 1
            heads: 2
            dim_head: 16
            ff_mult: 2
            mel_dim: 80
            mu_dim: 80
            spk_dim: 80
            out_channels: 80
"""
    + _CAUSAL_DECODER_ARGS
    + _hift(
        "CausalHiFTGenerator",
        24000,
        "[8, 5, 3]",
        "[16, 11, 7]",
        "[7, 7, 11]",
        "    conv_pre_look_right: 4\n",
        "CausalConvRNNF0Predictor",
    )
    + """get_tokenizer: !name:cosyvoice.tokenizer.tokenizer.get_qwen_tokenizer
    token_path: !ref <qwen_pretrain_path>
    skip_special_tokens: True
    version: cosyvoice3
"""
    + _mel(24000, 1920, 480, "null")
)

_YAMLS = {
    "v1": ("cosyvoice.yaml", V1_YAML),
    "v2": ("cosyvoice2.yaml", V2_YAML),
    "v3": ("cosyvoice3.yaml", V3_YAML),
}


def _qwen(path: Path) -> None:
    """A tiny Qwen2 with a byte-level tokenizer laid out like Qwen2's ids."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import Qwen2Config, Qwen2ForCausalLM

    path.mkdir(parents=True, exist_ok=True)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    vocab.update({f"<|tiny_{i}|>": i for i in range(len(alphabet), _QWEN_ORDINARY)})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    assert tok.token_to_id("<|im_end|>") == 151645
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "eos_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>",
                "model_max_length": 32768,
            }
        )
    )
    cfg = Qwen2Config(
        vocab_size=QWEN_VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(cfg).save_pretrained(str(path))


def _onnx_speech_tokenizer(path: Path, stride: int, vocab: int) -> None:
    """(feats [1, 128, T] log-mel at 100 Hz, feats_length [1]) -> tokens [1, T/stride]."""
    from onnx import TensorProto, helper, numpy_helper, save

    consts = {
        "starts": np.array([0], np.int64),
        "ends": np.array([2**62], np.int64),
        "axes": np.array([1], np.int64),
        "steps": np.array([stride], np.int64),
        "scale": np.array([997.0], np.float32),
        "vocab": np.array([vocab], np.int64),
    }
    nodes = [
        helper.make_node("ReduceMean", ["feats"], ["m"], axes=[1], keepdims=0),
        helper.make_node("Slice", ["m", "starts", "ends", "axes", "steps"], ["s"]),
        helper.make_node("Mul", ["s", "scale"], ["x"]),
        helper.make_node("Abs", ["x"], ["a"]),
        helper.make_node("Cast", ["a"], ["i"], to=TensorProto.INT64),
        helper.make_node("Mod", ["i", "vocab"], ["indices"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_speech_tokenizer",
        [
            helper.make_tensor_value_info("feats", TensorProto.FLOAT, [1, 128, "T"]),
            helper.make_tensor_value_info("feats_length", TensorProto.INT32, [1]),
        ],
        [helper.make_tensor_value_info("indices", TensorProto.INT64, [1, "N"])],
        [numpy_helper.from_array(v, k) for k, v in consts.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, str(path))


def _onnx_campplus(path: Path) -> None:
    """fbank [1, T, 80] -> speaker embedding [1, 192]."""
    from onnx import TensorProto, helper, numpy_helper, save

    w = np.random.default_rng(0).standard_normal((80, 192)).astype(np.float32) * 0.1
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input"], ["m"], axes=[1], keepdims=0),
            helper.make_node("MatMul", ["m", "w"], ["embedding"]),
        ],
        "tiny_campplus",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, "T", 80])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, 192])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, str(path))


def _shape_stop_tokens(llm: object) -> None:
    """Sentence lengths a test can use. With random logits v1/v2 almost never pick their one
    end-of-speech class (of ~4000-6500), so a tiny LLM would run to its cap (20 speech tokens
    per text token); a bias on that class ends a sentence some dozens of tokens after its
    minimum (2 per text token), which upstream enforces by masking that class. v3 stops on any
    of 200 classes (only one of them masked below the minimum) and its decoder has no bias:
    left as is, its sentences are short, mostly one streaming chunk."""
    import torch

    dec = llm.llm_decoder  # type: ignore[attr-defined]
    if dec.bias is not None:
        with torch.no_grad():
            dec.bias[llm.speech_token_size] = 2.5  # type: ignore[attr-defined]


def build(path: Path, kind: str) -> Path:
    """One tiny model folder of `kind` (v1, v2, v3); the upstream code must be importable."""
    import torch
    from hyperpyyaml import load_hyperpyyaml

    path.mkdir(parents=True, exist_ok=True)
    yaml_name, text = _YAMLS[kind]
    overrides = {}
    if kind != "v1":
        _qwen(path / "CosyVoice-BlankEN")
        overrides["qwen_pretrain_path"] = str(path / "CosyVoice-BlankEN")
    (path / yaml_name).write_text(text)
    torch.manual_seed(0)
    configs = load_hyperpyyaml(text, overrides=overrides)
    _shape_stop_tokens(configs["llm"])
    for part in ("llm", "flow", "hift"):
        torch.save(configs[part].state_dict(), path / f"{part}.pt")
    _onnx_campplus(path / "campplus.onnx")
    n = {"v1": 1, "v2": 2, "v3": 3}[kind]
    _onnx_speech_tokenizer(
        path / f"speech_tokenizer_v{n}.onnx", 2 if kind == "v1" else 4, 4096 if n == 1 else 6561
    )
    if kind == "v1":
        gen = torch.Generator().manual_seed(1)
        table = {s: {"embedding": torch.randn(1, 192, generator=gen)} for s in PRESETS}
        torch.save(table, path / "spk2info.pt")
    return path


def build_all(root: Path, cosyvoice_dir: str) -> dict[str, Path]:
    """v1, v2 and v3 under `root`, importing upstream from COSYVOICE_DIR as the adapter does."""
    from engines.tts.cosyvoice.install import import_upstream

    import_upstream(cosyvoice_dir)
    return {k: build(root / f"tiny-{k}", k) for k in ("v1", "v2", "v3")}
