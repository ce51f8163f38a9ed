"""Sessions display as HTML in Jupyter: escaped values, auth_info never shown."""

from __future__ import annotations

from agent_sessions import Session


def test_repr_html_escapes_every_value_and_hides_auth_info() -> None:
    session = Session(
        user_id="<b>mallory</b>",
        state={"<script>": "<img src=x onerror=alert(1)>"},
        preferences={"tone": "concise & <warm>"},
        auth_info={"token": "super-secret-token"},
    )
    session.add_history_entry("<tool>", {"q": "</table><script>x</script>"})
    html = session._repr_html_()
    assert "super-secret-token" not in html
    assert "set (hidden)" in html
    assert "<script>" not in html and "<img" not in html and "<b>mallory" not in html
    assert "&lt;script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "concise &amp; &lt;warm&gt;" in html
    assert "&lt;tool&gt;" in html


def test_repr_html_shows_metadata_data_and_recent_history() -> None:
    session = Session(user_id="alice", state={"plan": "pro"}, feature_flags={"beta": True}, version=3)
    for i in range(8):
        session.add_history_entry("message", {"i": i})
    html = session._repr_html_()
    assert session.session_id in html
    assert "alice" in html and "<td" in html
    assert "plan" in html and "&quot;pro&quot;" in html
    assert "feature_flags" in html
    assert "last 5 of 8" in html
    assert "{&quot;i&quot;: 7}" in html and "{&quot;i&quot;: 2}" not in html


def test_repr_html_of_an_anonymous_session_without_auth() -> None:
    html = Session()._repr_html_()
    assert "anonymous" in html
    assert "auth_info" in html and "none" in html
