"""FunASR's streaming frontend (WavFrontendOnline) for one steady-state chunk, without its
per-call overhead.

`extract_fbank(..., frontend=WavFrontendOnline)` runs `WavFrontendOnline.forward`: fbank of the
new samples (plus those carried over), LFR splicing with the carried frames, CMVN, and the
bookkeeping of the carried samples and frames in the cache. Per call it also pads one-element
batches, deep-copies tensors and tiles the CMVN vectors to the chunk's length, which costs
more than the arithmetic for a 240-600 ms chunk. `online_features` does the same steps for the one
case a running session is in (one stream, not the final chunk, the splice cache initialised,
enough frames for one LFR frame) with the same operations on the same values, so its features
and the cache it leaves are identical (tests compare both, tensor by tensor). Any other case
returns None and the caller runs FunASR's own frontend.
"""

from __future__ import annotations

from typing import Any

import torch


def _kaldi() -> Any:
    from funasr.frontends import wav_frontend

    return wav_frontend.kaldi  # the same (possibly wrapped) module FunASR's frontend calls


def online_features(
    fe: Any, cache: dict, sample: torch.Tensor, return_waveform: bool = False
) -> torch.Tensor | None:
    """Features (1, T, D) float32 of `sample` (1-D float32 audio) for a frontend cache in the
    steady state, updating the cache as WavFrontendOnline.forward(is_final=False) does; None
    (cache untouched) when the chunk is not the steady-state case."""
    splice = cache.get("lfr_splice_cache")
    carried = cache.get("input_cache")
    if (
        type(fe).__name__ != "WavFrontendOnline"
        or not splice
        or len(splice) != 1
        or carried is None
        or cache.get("reserve_waveforms") is None
        or (fe.lfr_m == 1 and fe.lfr_n == 1)
        or sample.dim() != 1
    ):
        return None
    shift, flen = fe.frame_shift_sample_length, fe.frame_sample_length
    total = carried.shape[-1] + sample.shape[0]
    frame_num = fe.compute_frame_num(total, flen, shift)
    if not frame_num or frame_num + splice[0].shape[0] < fe.lfr_m:
        return None
    x = sample.unsqueeze(0)
    # WavFrontendOnline.forward, before the fbank
    cache.setdefault("waveform_buffer", None)
    cache.setdefault("waveform_buffer_start_sample", 0)
    cache.setdefault("emitted_lfr_frames", 0)
    cache["aligned_waveforms"] = torch.empty(0)
    if return_waveform and x.shape[1] > 0:
        buf = cache["waveform_buffer"]
        cache["waveform_buffer"] = x.clone() if buf is None else torch.cat((buf, x), dim=1)
    # forward_fbank
    inp = torch.cat((carried, x), dim=1)
    cache["input_cache"] = inp[:, -(inp.shape[-1] - frame_num * shift) :]
    waveform = inp[0]
    waveforms = waveform[: (frame_num - 1) * shift + flen].unsqueeze(0)
    mat = _kaldi().fbank(
        (waveform * (1 << 15)).unsqueeze(0),
        num_mel_bins=fe.n_mels,
        frame_length=fe.frame_length,
        frame_shift=fe.frame_shift,
        dither=fe.dither,
        energy_floor=0.0,
        window_type=fe.window,
        sample_frequency=fe.fs,
    )
    feats = mat.unsqueeze(0).clone()
    cache["fbanks"] = feats
    cache["fbanks_lens"] = torch.as_tensor([mat.size(0)])
    # forward, with fbank frames
    cache["waveforms"] = torch.cat((cache["reserve_waveforms"], waveforms), dim=1)
    feats = torch.cat((splice[0].unsqueeze(0), feats), dim=1)
    frame_from_waveforms = int((cache["waveforms"].shape[1] - flen) / shift + 1)
    minus_frame = (fe.lfr_m - 1) // 2 if cache["reserve_waveforms"].numel() == 0 else 0
    # forward_lfr_cmvn
    out, splice[0], splice_idx = fe.apply_lfr(feats[0], fe.lfr_m, fe.lfr_n, False)
    if fe.cmvn_file is not None:
        dim = out.shape[1]
        out += fe.cmvn[0:1, :dim].to(out.dtype)
        out *= fe.cmvn[1:2, :dim].to(out.dtype)
        out = out.type(torch.float32)
    if fe.lfr_m == 1:
        cache["reserve_waveforms"] = torch.empty(0)
    else:
        reserve_frame_idx = splice_idx - minus_frame
        cache["reserve_waveforms"] = cache["waveforms"][
            :, reserve_frame_idx * shift : frame_from_waveforms * shift
        ]
        cache["waveforms"] = cache["waveforms"][:, : (frame_from_waveforms - 1) * shift + flen]
    feats = out.unsqueeze(0)
    if return_waveform and feats.shape[1] > 0:
        _align_waveform(fe, cache, feats.shape[1])
    return feats.to(torch.float32)


def _align_waveform(fe: Any, cache: dict, n_frames: int) -> None:
    """The exact samples behind the emitted frames (WavFrontendOnline.forward's end)."""
    score_shift = fe.lfr_n * fe.frame_shift_sample_length
    start = cache["emitted_lfr_frames"] * score_shift
    end = start + (n_frames - 1) * score_shift + fe.frame_sample_length
    buf = cache["waveform_buffer"]
    buf_start = cache["waveform_buffer_start_sample"]
    buf_end = buf_start + (0 if buf is None else buf.shape[1])
    if buf is None or start < buf_start or end > buf_end:
        raise RuntimeError(
            "Frontend emitted LFR frames without enough waveform samples: "
            f"need [{start}, {end}), have [{buf_start}, {buf_end})"
        )
    cache["aligned_waveforms"] = buf[:, start - buf_start : end - buf_start].clone()
    cache["emitted_lfr_frames"] += n_frames
    next_start = min(cache["emitted_lfr_frames"] * score_shift, buf_end)
    cache["waveform_buffer"] = buf[:, next_start - buf_start :].clone()
    cache["waveform_buffer_start_sample"] = next_start
