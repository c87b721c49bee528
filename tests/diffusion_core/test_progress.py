"""Progress on stderr: silent for quick tasks, redrawn on a terminal, plain lines otherwise."""

from __future__ import annotations

import io
import time

from diffusion_core.serving import progress
from diffusion_core.serving.progress import Progress


def test_a_quick_task_prints_nothing():
    out = io.StringIO()
    with Progress("quick", stream=out, tty=False) as p:
        p.update(1, 2)
    assert out.getvalue() == ""


def test_a_long_task_gets_plain_lines_off_a_terminal(monkeypatch):
    monkeypatch.setattr(progress, "QUIET_S", 0.05)
    out = io.StringIO()
    with Progress("held-out", total=3, stream=out, tty=False) as p:
        time.sleep(0.15)
        p.update(3)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("held-out:") and lines[-1].startswith("held-out: 3/3") and lines[-1].endswith("done")
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()


def test_a_terminal_gets_one_redrawn_line(monkeypatch):
    monkeypatch.setattr(progress, "QUIET_S", 0.02)
    monkeypatch.setattr(progress, "_REDRAW_S", 0.02)
    out = io.StringIO()
    try:
        with Progress("loading", stream=out, tty=True):
            time.sleep(0.15)
            raise RuntimeError("x")
    except RuntimeError:
        pass
    text = out.getvalue()
    assert text.count("\r") >= 2 and text.count("\n") == 1 and text.rstrip().endswith("failed")


def test_phases_are_labelled_with_their_own_totals_in_mb(monkeypatch):
    """A first load hashes the joined file, then converts it: two counts with different
    totals, each named (issue 24: two bare byte counts read as one broken bar)."""
    monkeypatch.setattr(progress, "QUIET_S", 0.0)
    monkeypatch.setattr(progress, "EVERY_S", 0.0)
    out = io.StringIO()
    with Progress("loading", stream=out, tty=False, unit="bytes") as p:
        p.update(356_515_840, 491_400_064, "checking sha256")
        p.update(144_643_072, 485_452_288, "converting model.gguf")
    lines = out.getvalue().splitlines()
    assert any(line.startswith("loading: checking sha256 357/491 MB, ") for line in lines), lines
    assert any(line.startswith("loading: converting model.gguf 145/485 MB, ") for line in lines), lines


def test_a_count_without_total_is_shown_with_its_label(monkeypatch):
    monkeypatch.setattr(progress, "QUIET_S", 0.0)
    monkeypatch.setattr(progress, "EVERY_S", 0.0)
    out = io.StringIO()
    with Progress("filling", stream=out, tty=False) as p:
        p.update(37, what="step")
    assert "filling: step 37, " in out.getvalue()
