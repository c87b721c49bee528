"""The accept log and its counters: only what the client reported is counted."""

import json

from lsp_server.feedback import FeedbackLog, Stats


def _log(tmp_path):
    stats = Stats()
    return FeedbackLog(tmp_path / "fb.jsonl", stats), stats


def _events(tmp_path):
    path = tmp_path / "fb.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_every_item_has_its_own_id_and_an_accept_is_counted_once(tmp_path):
    fb, stats = _log(tmp_path)
    ids = fb.shown("a.py", "python", ["x = 1", "x = 2\ny"], 12.0)
    assert len(set(ids)) == 2
    assert fb.accepted(ids[1]) is True
    assert fb.accepted(ids[1]) is False  # the same accept reported twice
    assert fb.accepted("s999") is False  # never handed out
    assert stats.counters["accepted"] == 1 and stats.counters["shown"] == 1
    (event,) = _events(tmp_path)
    assert event["event"] == "accept" and event["id"] == ids[1] and event["lines"] == 2 and event["chars"] == 7


def test_nothing_is_counted_as_rejected(tmp_path):
    fb, stats = _log(tmp_path)
    for i in range(6):  # six fills replaced one by the next, none accepted
        fb.shown("a.py", "python", [f"v{i}"], 1.0)
    fb.closed("a.py")
    assert "rejected" not in stats.counters and "accepted" not in stats.counters
    assert stats.counters["shown"] == 6
    assert [e["event"] for e in _events(tmp_path)] == ["dismiss"] * 6  # logged, as inferred


def test_a_cached_rest_gets_new_ids_and_does_not_dismiss_the_fill_typed_into(tmp_path):
    fb, stats = _log(tmp_path)
    (first,) = fb.shown("a.py", "python", ["value"], 30.0)
    (rest,) = fb.shown("a.py", "python", ["alue"], 0.5, continues=True)
    assert rest != first
    assert fb.accepted(rest)
    assert [e["event"] for e in _events(tmp_path)] == ["accept"]
    assert stats.counters["accepted"] == 1


def test_an_accept_that_arrives_after_the_next_fill_still_counts(tmp_path):
    fb, stats = _log(tmp_path)
    (old,) = fb.shown("a.py", "python", ["a"], 1.0)
    fb.shown("a.py", "python", ["b"], 1.0)  # the client asked again before running the command
    assert fb.accepted(old)
    assert stats.counters["accepted"] == 1
    assert [e["event"] for e in _events(tmp_path)] == ["dismiss", "accept"]


def test_no_file_when_disabled(tmp_path):
    fb = FeedbackLog(None, Stats())
    (sid,) = fb.shown("a.py", "python", ["a"], 1.0)
    assert fb.accepted(sid)
    assert not (tmp_path / "fb.jsonl").exists()
