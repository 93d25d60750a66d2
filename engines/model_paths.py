"""Where a model setting may live on disk: the value as a path, or a ModelScope id in the
ModelScope cache. Task-neutral: any backend (ASR, TTS) resolves its model settings here.

ModelScope has stored models in several layouts over time, relative to its cache root
(`MODELSCOPE_CACHE`; FunSpeech's MODELSCOPE_PATH):
- `<root>/<owner>/<name>` and `<root>/models/<owner>/<name>`: older SDKs (dots in the name
  written as `___`, e.g. `CosyVoice2-0___5B`);
- `<root>/models/<owner>--<name>/snapshots/<revision>/`: the current SDK (modelscope_hub),
  revision `master` unless one is asked for. Its default root is `~/.cache/modelscope`, the
  parent of the older SDKs' default `~/.cache/modelscope/hub`, so a root named `hub` is also
  searched one level up.
Nothing here touches the network.
"""

from __future__ import annotations

from pathlib import Path

_DEFAULT_REVISIONS = ("master", "main")


def _snapshot(repo: Path) -> Path | None:
    """The revision directory ModelScope would use: master, main, else the only one there."""
    snaps = repo / "snapshots"
    for name in _DEFAULT_REVISIONS:
        if (snaps / name).is_dir():
            return snaps / name
    found = sorted(p for p in snaps.iterdir() if p.is_dir()) if snaps.is_dir() else []
    return found[0] if len(found) == 1 else None


def _roots(cache_root: Path) -> list[Path]:
    return [cache_root, cache_root.parent] if cache_root.name == "hub" else [cache_root]


def candidate_dirs(value: str, cache_root: str | Path) -> list[Path]:
    """Every directory a model setting may name, most specific first: the value as a path, then
    for a `<owner>/<name>` id each cache layout (a snapshot only when one is there)."""
    out = [Path(value).expanduser()]
    if Path(value).is_absolute():
        return out
    for root in _roots(Path(cache_root).expanduser()):
        out += [root / value, root / "models" / value]
        owner, _, name = value.partition("/")
        if not name or "/" in name:
            continue
        safe = name.replace(".", "___")
        if safe != name:
            out += [root / owner / safe, root / "models" / owner / safe]
        repo = root / "models" / f"{owner}--{name}"
        snap = _snapshot(repo)
        out.append(snap if snap is not None else repo / "snapshots" / _DEFAULT_REVISIONS[0])
    return list(dict.fromkeys(out))


def ambiguous_snapshots(value: str, cache_root: str | Path) -> list[Path]:
    """Revision directories of `value` in the current layout when none of them is the default
    and there are several (ModelScope too refuses to guess then)."""
    owner, _, name = value.partition("/")
    if not name or "/" in name or Path(value).is_absolute():
        return []
    for root in _roots(Path(cache_root).expanduser()):
        snaps = root / "models" / f"{owner}--{name}" / "snapshots"
        if snaps.is_dir() and _snapshot(snaps.parent) is None:
            found = sorted(p for p in snaps.iterdir() if p.is_dir())
            if found:
                return found
    return []
