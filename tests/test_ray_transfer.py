"""A trial directory sent from a node: packed in bounded chunks, unpacked as a local run leaves it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from seel.ray import transfer


def test_a_directory_arrives_whole_in_chunks_no_larger_than_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transfer, "CHUNK_BYTES", 1000)
    node = tmp_path / "node" / "t00001"
    node.mkdir(parents=True)
    (node / "config_agg.yml").write_text("rounds: 3\n")
    noise = os.urandom(5000)  # incompressible: several chunks
    (node / "aggregator.log").write_bytes(noise)
    chunks = list(transfer.chunks(transfer.pack(node)))
    assert len(chunks) > 1 and all(len(c) <= 1000 for c in chunks)
    assert [p.name for p in node.parent.iterdir()] == ["t00001"]  # no packed file left behind
    dest = tmp_path / "run" / "trials" / "t00001"
    receiving = transfer.Unpacker(dest)
    for chunk in chunks:
        receiving.write(chunk)
    receiving.finish()
    assert (dest / "config_agg.yml").read_text() == "rounds: 3\n"
    assert (dest / "aggregator.log").read_bytes() == noise
    assert sorted(p.name for p in dest.parent.iterdir()) == ["t00001"]


def test_a_rerun_appends_to_transcripts_and_replaces_configs(tmp_path: Path) -> None:
    dest = tmp_path / "trials" / "t00002"
    for attempt in (1, 2):
        node = tmp_path / f"node{attempt}" / "t00002"
        node.mkdir(parents=True)
        (node / "party0.log").write_text(f"attempt {attempt}\n")
        (node / "config_party0.yml").write_text(f"port: {attempt}\n")
        receiving = transfer.Unpacker(dest)
        for chunk in transfer.chunks(transfer.pack(node)):
            receiving.write(chunk)
        receiving.finish()
    assert (dest / "party0.log").read_text() == "attempt 1\nattempt 2\n"
    assert (dest / "config_party0.yml").read_text() == "port: 2\n"
