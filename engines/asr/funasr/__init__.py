"""FunASR backend (ASR_BACKEND=funasr): streaming Paraformer, FSMN-VAD, 2-pass offline
Paraformer, CT-Punc, ITN. Modules:

- backend.py   the AsrBackend: loading, capacity, one-shot, the realtime batch functions
- stream.py    one realtime session (chunks, VAD end points, partials, 2-pass finals)
- scheduler.py cross-session micro-batching of model steps
- batch.py     streaming Paraformer steps of several sessions in one forward pass
- vad.py       FSMN-VAD steps of several sessions in one forward pass
- caches.py    per-session caches stacked and split back
- frontend.py  FunASR's streaming frontend without its per-call overhead
- fbank.py     fbank frames shared across frontends, and a fast Kaldi fbank
- models.py    finding and loading model directories, thread-safe inference
- text.py      hotwords, ITN, punctuation input
- compat.py    the FunASR releases the FunASR-internal fast paths are tested with
"""

from engines.asr.funasr.backend import FunAsrBackend

__all__ = ["FunAsrBackend"]
