"""Per-session model caches stacked along the batch dimension and split back.

FunASR keeps a session's streaming state as a tree of dicts and lists holding tensors whose
first dimension is the batch (1 per session). Sessions whose trees have the same shapes can run
one forward pass over the stacked trees; each session then takes its row back.
"""

from __future__ import annotations

from typing import Any

import torch


def cache_signature(obj: Any) -> Any:
    """Shape key of a cache tree: caches stack together only when their signatures agree."""
    if obj is None:
        return None
    if isinstance(obj, torch.Tensor):
        return tuple(obj.shape[1:])
    if isinstance(obj, dict):
        return tuple((k, cache_signature(v)) for k, v in sorted(obj.items()))
    if isinstance(obj, list | tuple):
        return tuple(cache_signature(v) for v in obj)
    return obj


def stack_caches(objs: list[Any]) -> Any:
    """One tree whose tensors are the sessions' tensors concatenated along dim 0."""
    first = objs[0]
    if first is None:
        return None
    if isinstance(first, torch.Tensor):
        return torch.cat(objs, dim=0)
    if isinstance(first, dict):
        return {k: stack_caches([o[k] for o in objs]) for k in first}
    if isinstance(first, list):
        return [stack_caches([o[i] for o in objs]) for i in range(len(first))]
    return first


def unstack_cache(obj: Any, i: int) -> Any:
    """Session i's row of a stacked tree (tensors keep their batch dimension of 1)."""
    if obj is None:
        return None
    if isinstance(obj, torch.Tensor):
        return obj[i : i + 1]
    if isinstance(obj, dict):
        return {k: unstack_cache(v, i) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unstack_cache(v, i) for v in obj]
    return obj
