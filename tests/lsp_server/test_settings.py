from lsp_server import settings as s


def test_defaults_and_camel_case():
    got, bad = s.parse({"fill": {"maxTokens": 32}, "debounce": {"maxMs": 50}, "holeMarker": "??"})
    assert bad == []
    assert got.fill.max_tokens == 32 and got.debounce.max_ms == 50 and got.hole_marker == "??"
    assert got.model == s.ModelSettings()


def test_bad_keys_keep_previous_value_and_are_named():
    base, _ = s.parse({"fill": {"maxTokens": 16}})
    got, bad = s.parse({"fill": {"maxTokens": "many", "steps": 0}, "nope": 1, "model": 3}, base)
    assert set(bad) == {"fill.maxTokens", "fill.steps", "nope", "model"}
    assert got.fill.max_tokens == 16 and got.fill.steps is None


def test_wrong_root_and_none():
    assert s.parse(None)[1] == []
    got, bad = s.parse(["x"])
    assert bad == ["<root>"] and got == s.Settings()


def test_types_are_strict():
    _, bad = s.parse({"inline": {"enable": "yes"}, "languages": ["python", 3], "completion": {"enable": 1}})
    assert set(bad) == {"inline.enable", "languages", "completion.enable"}
    got, bad = s.parse({"fill": {"threshold": 1}, "languages": ["go"]})
    assert bad == [] and got.fill.threshold == 1.0 and got.languages == ("go",)


def test_fill_params_only_sends_set_values():
    assert s.Settings().fill_params() == {}
    got, _ = s.parse({"fill": {"steps": 8, "threshold": 0.5, "strategy": "topk"}})
    assert got.fill_params() == {"steps": 8, "threshold": 0.5, "strategy": "topk"}


def test_serves():
    got, _ = s.parse({"languages": ["python"]})
    assert got.serves("python") and not got.serves("go")
    assert s.Settings().serves("anything")


def test_case_mapping_round_trip():
    for name in ("max_tokens", "min_ms", "hole_marker", "prefix_bytes"):
        assert s.to_snake(s.to_camel(name)) == name


def test_editor_keys_are_ignored_silently():
    got, bad = s.parse({"command": ["diffill", "lsp"], "trace": {"server": "off"}, "fill": {"maxTokens": 9}})
    assert bad == [] and got.fill.max_tokens == 9


def test_core_standby_setting_reaches_the_client(monkeypatch):
    got, bad = s.parse({"core": {"standby": False}})
    assert bad == [] and got.core.standby is False and s.Settings().core.standby is True
    assert s.parse({"core": {"standby": "no"}})[1] == ["core.standby"]
    from lsp_server import core_link

    made = {}

    class FakeClient:
        def __init__(self, **kw):
            made.update(kw)

    import lsp_server.core_client as cc
    monkeypatch.setattr(cc, "CoreClient", FakeClient)
    core_link.real_core_factory(got, lambda *a: None)
    assert made["standby"] is False
