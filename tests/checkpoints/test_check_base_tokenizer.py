"""`diffill bench base-tokenizer` (evaluation.check_base_tokenizer) on a tiny GGUF: diffill's
tokenizer and transformers' own GGUF tokenizer agree id for id, one JSON line."""
from __future__ import annotations

import json

import pytest

from gguf_fixtures import make_gguf

pytest.importorskip("transformers")


def test_tiny_gguf_ids_match_transformers(tmp_path, capsys):
    from evaluation import check_base_tokenizer

    tiny = make_gguf(tmp_path / "tiny.gguf")
    text = tmp_path / "a.py"
    text.write_text("def add(a, b):\n    return a + b\n", encoding="utf-8")
    assert check_base_tokenizer.main(["--gguf", str(tiny.path), str(text)]) == 0
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert doc["texts"] == 1 + len(check_base_tokenizer.SNIPPETS) and doc["tokens"] > 0
    assert doc["identical_ids"] == doc["texts"] and doc["differ"] == []
    assert "Qwen2Tokenizer" in doc["reference"]
