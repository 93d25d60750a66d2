"""engines/model_paths.py: model settings resolved in every ModelScope cache layout (no models
needed: directories only)."""

from __future__ import annotations

from pathlib import Path

from engines.model_paths import ambiguous_snapshots, candidate_dirs


def existing(value: str, root: Path) -> list[Path]:
    return [p for p in candidate_dirs(value, root) if p.is_dir()]


def test_current_sdk_snapshot_layout(tmp_path: Path) -> None:
    repo = tmp_path / "models" / "iic--speech_fsmn_vad"
    (repo / "snapshots" / "master").mkdir(parents=True)
    assert existing("iic/speech_fsmn_vad", tmp_path) == [repo / "snapshots" / "master"]
    (repo / "snapshots" / "v2.0.4").mkdir()  # another revision: master is still the one
    assert existing("iic/speech_fsmn_vad", tmp_path) == [repo / "snapshots" / "master"]


def test_single_non_default_revision_and_ambiguity(tmp_path: Path) -> None:
    snaps = tmp_path / "models" / "iic--punc" / "snapshots"
    (snaps / "v2.0.4").mkdir(parents=True)
    assert existing("iic/punc", tmp_path) == [snaps / "v2.0.4"]
    assert ambiguous_snapshots("iic/punc", tmp_path) == []
    (snaps / "v2.0.5").mkdir()  # two revisions, neither master nor main: no guess
    assert existing("iic/punc", tmp_path) == []
    assert ambiguous_snapshots("iic/punc", tmp_path) == [snaps / "v2.0.4", snaps / "v2.0.5"]


def test_old_layouts_first_and_dotted_names(tmp_path: Path) -> None:
    old = tmp_path / "models" / "iic" / "CosyVoice2-0___5B"  # older SDKs wrote dots as ___
    new = tmp_path / "models" / "iic--CosyVoice2-0.5B" / "snapshots" / "master"
    old.mkdir(parents=True)
    new.mkdir(parents=True)
    assert existing("iic/CosyVoice2-0.5B", tmp_path) == [old, new]


def test_hub_root_also_searches_its_parent(tmp_path: Path) -> None:
    hub = tmp_path / "hub"  # MODELSCOPE_PATH's default ~/.cache/modelscope/hub
    snap = tmp_path / "models" / "iic--asr" / "snapshots" / "master"
    snap.mkdir(parents=True)
    hub.mkdir()
    assert existing("iic/asr", hub) == [snap]


def test_paths_are_taken_as_they_are(tmp_path: Path) -> None:
    local = tmp_path / "my-model"
    local.mkdir()
    assert candidate_dirs(str(local), tmp_path / "cache") == [local]
