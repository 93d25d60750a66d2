"""Cross-session batching for FunASR's streaming Paraformer.

`ParaformerStreaming.inference` asserts batch size 1: one session's cache per call. This module
runs one streaming step (one chunk: 600 ms by default, FUNASR_CHUNK_MS) for several sessions at
once with FunASR's own layers: fbank, positional encoding and the CIF predictor stay per
session (they are sequential or own per-session state), the encoder and decoder layers run once
over the stacked sessions, with each session's layer caches stacked along the batch dimension
and split back afterwards. Results equal the per-session `inference` call within float
rounding (tests check this).

Only the steady state is batched: a cache that is already initialised, no carried samples,
exactly one chunk and not the final flush. Anything else goes through the model's own
`inference`, one session at a time.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import torch

from engines.asr.funasr.caches import cache_signature, stack_caches, unstack_cache
from engines.asr.funasr.fbank import Source, frames_from
from engines.asr.funasr.frontend import online_features

FRAME_SAMPLES = 960  # one encoder frame (LFR 6 x 10 ms at 16 kHz): FunASR's chunk unit
LOOKAHEAD_FRAMES = 5  # 300 ms look-ahead, as in FunASR's default chunk_size [0, 10, 5]
ENCODER_LOOK_BACK = 4  # chunks of encoder context kept (FunASR's recommended 4)
DECODER_LOOK_BACK = 1


def stream_config(chunk_ms: int) -> dict[str, Any]:
    """The streaming Paraformer's step options for one chunk of `chunk_ms` (a multiple of 60):
    600 -> chunk_size [0, 10, 5] (FunASR's default), 240 -> [0, 4, 5] (the earlier FunSpeech's
    240 ms cadence). The look-ahead stays 300 ms; the chunk sets how often partials come."""
    frames = chunk_ms * 16 // FRAME_SAMPLES
    if frames < 1 or frames * FRAME_SAMPLES != chunk_ms * 16:
        raise ValueError(f"streaming chunk {chunk_ms} ms is not a multiple of 60 ms")
    return {
        "chunk_size": [0, frames, LOOKAHEAD_FRAMES],
        "encoder_chunk_look_back": ENCODER_LOOK_BACK,
        "decoder_chunk_look_back": DECODER_LOOK_BACK,
    }


def chunk_samples(cfg: dict[str, Any]) -> int:
    """Samples of one streaming step for a stream_config()."""
    return int(cfg["chunk_size"][1]) * FRAME_SAMPLES


def _decoder_is_causal(decoder: torch.nn.Module) -> bool:
    """True when every decoder FSMN looks only back, so padded trailing tokens are harmless."""
    layers = list(decoder.decoders) + list(getattr(decoder, "decoders2", None) or [])
    for layer in layers:
        attn = getattr(layer, "self_attn", None)
        pad = getattr(attn, "pad_fn", None)
        if attn is not None and (pad is None or tuple(pad.padding)[1] != 0):
            return False
    return True


class StreamBatcher:
    """Runs steady-state streaming steps of several sessions through one forward pass."""

    def __init__(self, model: torch.nn.Module, kwargs: dict[str, Any]) -> None:
        self.model = model
        self.kwargs = kwargs
        self.chunk_samples = chunk_samples(kwargs)
        self.frontend = kwargs["frontend"]
        self.tokenizer = kwargs["tokenizer"]
        self.device = kwargs["device"]
        enc = model.encoder
        self.supported = (
            type(enc.embed).__name__ == "StreamSinusoidalPositionEncoder"
            and getattr(model, "beam_search", None) is None
            and not getattr(enc, "interctc_layer_idx", None)
        )
        self.causal_decoder = _decoder_is_causal(model.decoder)
        self.cif_batched = type(model.predictor).__name__ == "CifPredictorV2"
        self.kernel = {
            i: layer.self_attn.kernel_size
            for i, layer in enumerate(self._decoder_fsmn_layers())
            if getattr(layer, "self_attn", None) is not None
        }

    def _decoder_fsmn_layers(self) -> list[torch.nn.Module]:
        dec = self.model.decoder
        return list(dec.decoders) + list(getattr(dec, "decoders2", None) or [])

    def can_batch(self, cache: dict, audio: np.ndarray, is_final: bool) -> bool:
        return (
            self.supported
            and not is_final
            and len(audio) == self.chunk_samples
            and "encoder" in cache
            and len(cache["prev_samples"]) == 0
            and not cache["encoder"]["tail_chunk"]
        )

    @torch.no_grad()
    def step(
        self, items: list[tuple[dict, np.ndarray]], sources: list[tuple[Source, ...]] | None = None
    ) -> list[str]:
        """One streaming step for each (cache, audio); returns the text decoded per item."""
        return [postprocess(tokens) for tokens in self.step_tokens(items, sources)]

    @torch.no_grad()
    def step_tokens(
        self, items: list[tuple[dict, np.ndarray]], sources: list[tuple[Source, ...]] | None = None
    ) -> list[list[str]]:
        """One streaming step for each (cache, audio); returns the tokens decoded per item.
        sources: per item, where its fbank frames may already be (funasr_fbank)."""
        feats = []
        for i, (cache, audio) in enumerate(items):
            with frames_from(*(sources[i] if sources else ())):
                feats.append(self._embed(cache, audio))
        enc_out: list[torch.Tensor] = [torch.empty(0)] * len(items)
        groups: dict[Any, list[int]] = defaultdict(list)
        for i, (cache, _) in enumerate(items):
            groups[(tuple(feats[i].shape), cache_signature(cache["encoder"]["opt"]))].append(i)
        for idx in groups.values():
            outs = self._encode([items[i][0]["encoder"] for i in idx], [feats[i] for i in idx])
            for i, out in zip(idx, outs, strict=True):
                enc_out[i] = out
        tokens: list[list[str]] = [[] for _ in items]
        pending: list[tuple[int, torch.Tensor, int]] = []
        for i, (embeds, n) in enumerate(self._predict(items, enc_out)):
            if n >= 1:
                pending.append((i, embeds, n))
        self._decode(items, enc_out, pending, tokens)
        for cache, _ in items:
            cache["prev_samples"] = torch.empty(0)
        return tokens

    def _predict(
        self, items: list[tuple[dict, np.ndarray]], enc_out: list[torch.Tensor]
    ) -> list[tuple[torch.Tensor, int]]:
        """The CIF predictor of each item: (acoustic embeddings, token count)."""
        out: list[tuple[torch.Tensor, int]] = [(torch.empty(0), 0)] * len(items)
        if not self.cif_batched:
            for i, (cache, _) in enumerate(items):
                lens = torch.tensor([enc_out[i].size(1)])
                embeds, n_tok = self.model.calc_predictor_chunk(enc_out[i], lens, cache=cache)[:2]
                out[i] = (embeds, int(n_tok.round().long().max()))
            return out
        groups: dict[Any, list[int]] = defaultdict(list)
        for i, (cache, _) in enumerate(items):
            groups[(tuple(enc_out[i].shape), tuple(cache["encoder"]["chunk_size"]))].append(i)
        for idx in groups.values():
            caches = [items[i][0]["encoder"] for i in idx]
            for i, res in zip(idx, cif_chunk(self.model.predictor, [enc_out[i] for i in idx],
                                             caches), strict=True):  # fmt: skip
                out[i] = res
        return out

    def _embed(self, cache: dict, audio: np.ndarray) -> torch.Tensor:
        sample = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
        speech = online_features(self.frontend, cache["frontend"], sample)
        if speech is None:
            speech, _ = _extract_fbank(self.frontend, cache["frontend"], sample)
        speech = speech.to(self.device)
        if self.model.normalize is not None:
            lens = torch.tensor([speech.size(1)])
            speech, _ = self.model.normalize(speech, lens)
        enc = self.model.encoder
        xs = speech * enc.output_size() ** 0.5
        xs = enc.embed(xs, cache["encoder"])
        return enc._add_overlap_chunk(xs, cache["encoder"])

    def _encode(self, caches: list[dict], feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """SANMEncoderChunkOpt.forward_chunk over stacked sessions (same shapes)."""
        enc = self.model.encoder
        xs = torch.cat(feats, dim=0)
        layers = list(enc.encoders0) + list(enc.encoders)
        chunk_size = caches[0]["chunk_size"]
        look_back = caches[0]["encoder_chunk_look_back"]
        old = caches[0]["opt"]
        merged = [None] * len(layers) if old is None else stack_caches([c["opt"] for c in caches])
        for li, layer in enumerate(layers):
            xs, merged[li] = layer.forward_chunk(xs, merged[li], chunk_size, look_back)
        if enc.normalize_before:
            xs = enc.after_norm(xs)
        if look_back > 0 or look_back == -1:
            for b, c in enumerate(caches):
                c["opt"] = unstack_cache(merged, b)
        return [xs[b : b + 1] for b in range(len(caches))]

    def _decode(
        self,
        items: list[tuple[dict, np.ndarray]],
        enc_out: list[torch.Tensor],
        pending: list[tuple[int, torch.Tensor, int]],
        texts: list[list[str]],
    ) -> None:
        groups: dict[Any, list[tuple[int, torch.Tensor, int]]] = defaultdict(list)
        for entry in pending:
            i, _, n = entry
            dec_cache = items[i][0]["decoder"]
            self._trim_fsmn(dec_cache)
            key = (
                tuple(enc_out[i].shape),
                cache_signature(dec_cache["decode_fsmn"]),
                cache_signature(dec_cache["opt"]),
                None if self.causal_decoder else n,
            )
            groups[key].append(entry)
        for group in groups.values():
            self._decode_group(items, enc_out, group, texts)

    def _trim_fsmn(self, dec_cache: dict) -> None:
        """Keep the last kernel_size frames of each decoder FSMN cache: the rest is never read
        (the layer keeps cache[:, :, 1:] and trims to kernel_size - 1 + t), and equal lengths
        let sessions stack."""
        fsmn = dec_cache["decode_fsmn"]
        if fsmn is None:
            return
        for li, k in self.kernel.items():
            if fsmn[li] is not None and fsmn[li].size(2) > k:
                fsmn[li] = fsmn[li][:, :, -k:]

    def _decode_group(
        self,
        items: list[tuple[dict, np.ndarray]],
        enc_out: list[torch.Tensor],
        group: list[tuple[int, torch.Tensor, int]],
        texts: list[list[str]],
    ) -> None:
        n_max = max(n for _, _, n in group)
        emb = []
        for _, embeds, n in group:
            e = embeds[:, :n]
            if n < n_max:
                e = torch.cat([e, e.new_zeros(1, n_max - n, e.size(2))], dim=1)
            emb.append(e)
        caches = [items[i][0]["decoder"] for i, _, _ in group]
        merged = {
            "decode_fsmn": stack_caches([c["decode_fsmn"] for c in caches])
            if caches[0]["decode_fsmn"] is not None
            else None,
            "opt": stack_caches([c["opt"] for c in caches])
            if caches[0]["opt"] is not None
            else None,
            "chunk_size": caches[0]["chunk_size"],
            "decoder_chunk_look_back": caches[0]["decoder_chunk_look_back"],
        }
        memory = torch.cat([enc_out[i] for i, _, _ in group], dim=0)
        out = self.model.decoder.forward_chunk(memory, torch.cat(emb, dim=0), merged)
        out = torch.log_softmax(out, dim=-1)
        for b, ((i, _, n), cache) in enumerate(zip(group, caches, strict=True)):
            fsmn = unstack_cache(merged["decode_fsmn"], b)
            if n < n_max:  # drop the padded trailing frames from the FSMN caches
                fsmn = [None if f is None else f[:, :, : f.size(2) - (n_max - n)] for f in fsmn]
            cache["decode_fsmn"] = fsmn
            look_back = merged["decoder_chunk_look_back"]
            if look_back > 0 or look_back == -1:
                cache["opt"] = unstack_cache(merged["opt"], b)
            texts[i] = self._tokens(out[b, :n])

    def _tokens(self, am_scores: torch.Tensor) -> list[str]:
        model = self.model
        ids = [
            t
            for t in am_scores.argmax(dim=-1).tolist()
            if t not in (model.eos, model.sos, model.blank_id)
        ]
        return list(self.tokenizer.ids2tokens(ids))


def postprocess(tokens: list[str]) -> str:
    """FunASR's text from decoded tokens (what ParaformerStreaming.inference returns)."""
    from funasr.utils import postprocess_utils

    text, _ = postprocess_utils.sentence_postprocess(tokens)
    return str(text)


def cif_chunk(
    predictor: torch.nn.Module, enc_out: list[torch.Tensor], caches: list[dict]
) -> list[tuple[torch.Tensor, int]]:
    """CifPredictorV2.forward_chunk (not final) for several sessions at once, each with its own
    encoder cache: (acoustic embeddings (1, n, D), n) per session. The alphas come from one
    stacked forward; the integrate-and-fire loop runs over time once for all sessions in
    float32 numpy with FunASR's operations in FunASR's order, so every value is the same."""
    p = predictor
    h = torch.cat(enc_out, dim=0)
    parts = []
    for e in enc_out:  # per session: a stacked conv/linear may round differently
        output = torch.relu(p.cif_conv1d(p.pad(e.transpose(1, 2)))).transpose(1, 2)
        parts.append(torch.sigmoid(p.cif_output(output)))
    alphas = torch.cat(parts, dim=0)
    alphas = torch.nn.functional.relu(alphas * p.smooth_factor - p.noise_threshold).squeeze(-1)
    chunk_size = caches[0].get("chunk_size")
    if chunk_size is not None:
        alphas[:, : chunk_size[0]] = 0.0
        alphas[:, sum(chunk_size[:2]) :] = 0.0
    carried_h = torch.cat([c["cif_hidden"] for c in caches], dim=0).to(h.device)
    carried_a = torch.cat([c["cif_alphas"] for c in caches], dim=0).to(alphas.device)
    hidden = torch.cat([carried_h, h], dim=1)
    alphas = torch.cat([carried_a, alphas], dim=1)
    hid = hidden.detach().cpu().numpy().astype(np.float32, copy=False)
    alp = alphas.detach().cpu().numpy().astype(np.float32, copy=False)
    thr = np.float32(p.threshold)
    batch, dim = hid.shape[0], hid.shape[2]
    integrate = np.zeros(batch, np.float32)
    frames = np.zeros((batch, dim), np.float32)
    fired: list[list[np.ndarray]] = [[] for _ in range(batch)]
    for t in range(alp.shape[1]):
        a, ht = alp[:, t], hid[:, t, :]
        fire = ~((a + integrate) < thr)
        emit = frames + (thr - integrate)[:, None] * ht
        integrate = np.where(fire, (integrate + a) - thr, integrate + a)
        frames = np.where(fire[:, None], integrate[:, None] * ht, frames + a[:, None] * ht)
        for b in np.flatnonzero(fire):
            fired[b].append(emit[b])
    out = []
    for b, cache in enumerate(caches):
        keep = frames[b] / integrate[b] if integrate[b] > 0.0 else frames[b]
        cache["cif_alphas"] = torch.from_numpy(integrate[b : b + 1].copy()).reshape(1, 1)
        cache["cif_hidden"] = torch.from_numpy(np.array(keep, np.float32)).reshape(1, 1, dim)
        if h.device.type != "cpu":  # where FunASR keeps them (it moves them itself, too)
            cache["cif_alphas"] = cache["cif_alphas"].to(h.device)
            cache["cif_hidden"] = cache["cif_hidden"].to(h.device)
        n = len(fired[b])
        embeds = torch.from_numpy(np.stack(fired[b])[None]).to(h.device) if n else torch.empty(0)
        out.append((embeds, n))
    return out


def _extract_fbank(frontend: Any, fcache: dict, sample: torch.Tensor) -> tuple[torch.Tensor, Any]:
    from funasr.utils.load_utils import extract_fbank

    return extract_fbank(
        [sample], data_type="sound", frontend=frontend, cache=fcache, is_final=False
    )
