"""Cross-session batching for FunASR's streaming FSMN-VAD.

`FsmnVADStreaming.inference` takes one session's cache per call. Per chunk (600 ms by default)
it runs the frontend (fbank, LFR, CMVN), scores the frames with the FSMN encoder (a stack of
small linear layers and left-context 1-D convolutions whose context is the cache), then walks
its end-point state machine frame by frame. This module does the same steady-state step for
several sessions with FunASR's own pieces, in the same order, except that the FSMN encoder runs
once over the stacked sessions (their layer caches stacked along the batch dimension and split back
afterwards, as batch.py does for the Paraformer encoder). The frontend and the state
machine stay per session: they are sequential or keep per-session state. Segments equal the
per-session `inference` call (tests check this).

Only the steady state is batched: an initialised cache, no carried samples, exactly one
chunk and not the final flush. Anything else goes through the model's own `inference`.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import torch

from engines.asr.funasr.caches import cache_signature, stack_caches, unstack_cache
from engines.asr.funasr.fbank import Source, frames_from
from engines.asr.funasr.frontend import online_features


class _Scores(np.ndarray):
    """stats.scores as numpy while the state machine reads it: GetFrameState indexes one
    score per frame, which costs a few µs on a torch tensor and ~0.1 µs here (the values are
    the same float32s). clone() is torch's name for DropCachedFrames."""

    def clone(self) -> _Scores:
        return self.copy()


class VadBatcher:
    """Runs steady-state VAD steps of several sessions with one FSMN encoder forward."""

    def __init__(self, model: torch.nn.Module, kwargs: dict[str, Any], chunk_ms: int) -> None:
        self.model = model
        self.frontend = kwargs["frontend"]
        self.device = kwargs["device"]
        self.chunk_samples = int(chunk_ms * self.frontend.fs / 1000)
        enc = model.encoder
        self.layer_keys = [f"cache_layer_{i}" for i in range(len(getattr(enc, "fsmn", [])))]
        self.supported = (
            type(enc).__name__ == "FSMN"
            and bool(self.layer_keys)
            and getattr(self.frontend, "supports_aligned_waveforms", False)
        )

    def can_batch(self, cache: dict, chunk: np.ndarray, is_final: bool) -> bool:
        enc = cache.get("encoder")
        return (
            self.supported
            and not is_final
            and len(chunk) == self.chunk_samples
            and "stats" in cache
            and len(cache["prev_samples"]) == 0
            and enc is not None
            and all(k in enc for k in self.layer_keys)
        )

    @torch.no_grad()
    def step(
        self, items: list[tuple[dict, np.ndarray]], sources: list[tuple[Source, ...]] | None = None
    ) -> list[list[tuple[int, int]]]:
        """One VAD step for each (cache, chunk); returns [(beg, end)] per item in ms,
        -1 for an open side, as FsmnVADStreaming.inference's `value`. sources: per item, its
        session's fbank frame store (funasr_fbank)."""
        from funasr.utils.load_utils import extract_fbank

        model = self.model
        feats: list[torch.Tensor] = []
        waves: list[torch.Tensor | None] = []
        for n, (cache, chunk) in enumerate(items):
            sample = torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32))
            with frames_from(*(sources[n] if sources else ())):
                speech = online_features(self.frontend, cache["frontend"], sample, True)
                if speech is None:
                    speech, _ = extract_fbank(
                        [sample],
                        data_type="sound",
                        frontend=self.frontend,
                        cache=cache["frontend"],
                        is_final=False,
                        return_waveform=True,
                    )
            speech = speech.to(device=self.device)
            waveform = cache["frontend"].get("aligned_waveforms")
            if waveform is None or waveform.numel() == 0:
                waveform = cache["frontend"].get("waveforms")
            if speech.numel() > 0 and (waveform is None or waveform.numel() == 0):
                raise RuntimeError(
                    "Streaming VAD frontend must provide aligned_waveforms or waveforms "
                    "when emitting feature frames"
                )
            feats.append(speech)
            waves.append(waveform)
        scores: list[torch.Tensor | None] = [None] * len(items)
        groups: dict[Any, list[int]] = defaultdict(list)
        for i, (cache, _) in enumerate(items):
            if feats[i].numel() > 0:
                groups[(tuple(feats[i].shape[1:]), cache_signature(cache["encoder"]))].append(i)
        for idx in groups.values():
            caches = [items[i][0]["encoder"] for i in idx]
            merged = stack_caches(caches)
            out = model.encoder(torch.cat([feats[i] for i in idx], dim=0), cache=merged)
            for b, i in enumerate(idx):
                for key in self.layer_keys:
                    caches[b][key] = unstack_cache(merged[key], b).clone()
                scores[i] = out[b : b + 1]
        results = []
        for i, (cache, _) in enumerate(items):
            segments: list[tuple[int, int]] = []
            if scores[i] is not None:
                for seg in self._detect(cache, waves[i], scores[i]):  # type: ignore[arg-type]
                    segments.extend(seg)
            cache["prev_samples"] = torch.empty(0)
            results.append([(int(b), int(e)) for b, e in segments])
        return results

    def _detect(self, cache: dict, waveform: torch.Tensor, scores: torch.Tensor) -> list[list]:
        """FsmnVADStreaming.forward after the encoder (streaming input, not final)."""
        model, stats = self.model, cache["stats"]
        stats.waveform = waveform
        model.ComputeDecibel(frame_count=scores.shape[1], cache=cache)
        # ComputeScores, with the encoder output computed above
        model.vad_opts.nn_eval_block_size = scores.shape[1]
        stats.frm_cnt += scores.shape[1]
        stats.scores = scores if stats.scores is None else torch.cat((stats.scores, scores), dim=1)
        scores_t = stats.scores
        view = stats.scores = scores_t.detach().cpu().numpy().view(_Scores)
        try:
            model.DetectCommonFrames(cache=cache)
        finally:  # back to torch; a drop of old frames (ResetDetection) replaced the array
            left = stats.scores
            if left is view:
                stats.scores = scores_t
            else:
                stats.scores = torch.from_numpy(np.asarray(left)).to(scores_t.device)
        model.DropCachedFrames(stats.data_buf_start_frame, cache=cache)
        segment_batch = []
        buf = stats.output_data_buf
        for i in range(stats.output_data_buf_offset, len(buf)):
            if not buf[i].contain_seg_start_point:
                continue
            if not stats.next_seg and not buf[i].contain_seg_end_point:
                continue
            start_ms = buf[i].start_ms if stats.next_seg else -1
            if buf[i].contain_seg_end_point:
                end_ms = buf[i].end_ms
                stats.next_seg = True
                stats.output_data_buf_offset += 1
            else:
                end_ms = -1
                stats.next_seg = False
            segment_batch.append([start_ms, end_ms])
        return [segment_batch] if segment_batch else []
