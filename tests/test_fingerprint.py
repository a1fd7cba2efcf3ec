"""The encoder fingerprint (feature-cache key) takes a weight file's sha256 from the Hugging Face
cache's blob name instead of re-reading gigabytes every run (issue 11, kind 8)."""

import hashlib
import os
import shutil

from musilingo_cli.data.feature_cache import encoder_fingerprint


def _hub_snapshot(root, files: dict[str, bytes], blob_names: dict[str, str] | None = None):
    """The layout huggingface_hub writes: snapshots/<rev>/<file> -> ../../blobs/<sha256 of the file>."""
    blobs, snapshot = root / "blobs", root / "snapshots" / "abc123"
    blobs.mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for name, data in files.items():
        blob = (blob_names or {}).get(name) or hashlib.sha256(data).hexdigest()
        (blobs / blob).write_bytes(data)
        os.symlink(os.path.join("..", "..", "blobs", blob), snapshot / name)
    return snapshot


def test_hub_blob_names_give_the_fingerprint_of_the_same_files_read_in_full(tmp_path):
    files = {"config.json": b'{"hidden_size": 32}', "model.safetensors": os.urandom(4096)}
    snapshot = _hub_snapshot(tmp_path / "hub", files)
    plain = tmp_path / "plain"
    plain.mkdir()
    for name, data in files.items():
        (plain / name).write_bytes(data)
    assert encoder_fingerprint(snapshot) == encoder_fingerprint(plain)
    other = tmp_path / "other"
    shutil.copytree(plain, other)
    (other / "model.safetensors").write_bytes(os.urandom(4096))
    assert encoder_fingerprint(other) != encoder_fingerprint(plain)


def test_the_blob_name_is_trusted_so_the_weights_are_not_read(tmp_path):
    weights = os.urandom(4096)
    named = "f" * 64  # not the sha256 of the bytes: only the name can produce this fingerprint
    snapshot = _hub_snapshot(tmp_path / "hub", {"model.safetensors": weights}, {"model.safetensors": named})
    expected = hashlib.sha256(f"model.safetensors:{named}".encode()).hexdigest()  # the documented recipe
    assert encoder_fingerprint(snapshot) == expected
