"""Rendering attacker text into notifications: neutralised, capped, escaped per channel, ids attached."""

from __future__ import annotations

import pytest

from siem.alert.render import augment_url, body_format, encode_body, neutralise, render


def test_ansi_escape_loses_its_escape_character():
    """ESC [2J arrives as visible text, no raw ESC left."""
    out = neutralise("a\x1b[2Jb\x1b]8;;http://evil\x07link", 100)
    assert "\x1b" not in out and "\x07" not in out
    assert out.startswith("a\\x1b[2Jb")


def test_control_characters_become_visible():
    """NUL, BEL, DEL and C1 controls are written as \\xNN; newline and tab stay."""
    assert neutralise("a\x00b\x07c\x7fd\x85e\n\tf", 100) == "a\\x00b\\x07c\\x7fd\\x85e\n\tf"


def test_crlf_and_line_separators_are_plain_newlines():
    """CR LF, U+2028 and U+2029 are newlines; a lone CR is visible."""
    assert neutralise("a\r\nb\u2028c\u2029d\re", 100) == "a\nb\nc\nd\\x0de"


def test_bidi_overrides_are_replaced():
    """U+202E and the isolates cannot reorder what the reader sees."""
    out = neutralise("invoice\u202efdp.exe \u2066x\u2069", 100)
    assert all(c not in out for c in "\u202e\u2066\u2069") and out.count("\ufffd") == 3


@pytest.mark.parametrize("text", ["@channel", "@here", "@everyone", "@Channel", "<!channel>", "<!here>", "<@U123>"])
def test_chat_mentions_are_neutralised(text):
    """Mentions that page whole channels no longer parse as mentions."""
    out = neutralise(f"hi {text} there", 100)
    assert text not in out and "\u200b" in out


def test_ordinary_at_signs_stay():
    """E-mail addresses and @ elsewhere are untouched."""
    assert neutralise("root@host.example sent @channels?", 100) == "root@host.example sent @channels?"


def test_one_megabyte_field_is_capped_with_a_note():
    """A 1 MB value is cut to the cap and says how much was cut."""
    out = neutralise("A" * 1_000_000, 2000)
    assert out.startswith("A" * 2000) and out.endswith("... [truncated 998000 chars]") and len(out) < 2100


def test_title_is_one_line():
    """A title cannot carry a newline (no header injection in email subjects)."""
    title, _ = render("$title", "$message", {"title": "x\r\nBcc: victim@example.org", "message": ""}, 100, 1000)
    assert "\n" not in title and "\r" not in title


def test_template_substitution_has_no_attribute_access():
    """Template syntax in attacker text is not evaluated, and format-style fields are literal."""
    title, body = render("$title", "{message.__class__} $message", {"title": "${message}", "message": "$title"},
                         100, 1000)
    assert title == "${message}" and body == "{message.__class__} $title"


def test_email_body_is_html_escaped():
    """For mailto the body goes as HTML with every tag escaped."""
    assert body_format("mailto://h?to=a@b.c") == "html" and body_format("json://h/x") == "text"
    html = encode_body("<script>alert(1)</script> & co", "html")
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in html


def test_json_url_gets_alert_id_fields_and_headers():
    """json:// URLs carry alert id, group id and an idempotency key as body fields and headers."""
    url = augment_url("json://127.0.0.1:8080/hook", "n1", "a1", "g1")
    assert url == ("json://127.0.0.1:8080/hook?:alert_id=a1&:group_id=g1&:notification_id=n1"
                   "&+X-Siem-Alert-Id=a1&+Idempotency-Key=n1")


def test_pagerduty_and_opsgenie_get_dedup_keys_unless_set():
    """PagerDuty gets dedup=<group id>, Opsgenie alias=<group id>; a key the user set is kept."""
    assert augment_url("pagerduty://key@rkey", "n", "a", "g1").endswith("?dedup=g1")
    assert augment_url("opsgenie://apikey/@user", "n", "a", "g1").endswith("?alias=g1")
    assert augment_url("pagerduty://key@rkey?dedup=mine", "n", "a", "g1") == "pagerduty://key@rkey?dedup=mine"


def test_email_url_is_left_alone():
    """Email cannot deduplicate; its URL is unchanged."""
    assert augment_url("mailto://h?to=a@b.c", "n", "a", "g") == "mailto://h?to=a@b.c"


def test_apprise_reads_the_dedup_keys_we_add():
    """The installed apprise turns our URL parameters into PagerDuty's dedup key and Opsgenie's alias."""
    import apprise

    pd = apprise.Apprise.instantiate(augment_url("pagerduty://ikey@apikey", "n", "a", "grp1"))
    og = apprise.Apprise.instantiate(augment_url("opsgenie://apikey/@user", "n", "a", "grp1"))
    assert (pd.dedup, og.alias) == ("grp1", "grp1")


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=3000), st.integers(min_value=16, max_value=500), st.booleans())
def test_neutralised_text_never_carries_controls_bidi_or_mentions(text, limit, single_line):
    """For any input: no C0 (but newline/tab), DEL, C1, BiDi control or live @channel survives, and the
    length stays within the cap plus the truncation note."""
    out = neutralise(text, limit, single_line)
    bad = {c for c in out if (ord(c) < 32 and c not in "\n\t") or 0x7F <= ord(c) <= 0x9F}
    assert bad == set()
    assert not any(c in out for c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
    assert "@channel" not in out.lower() and "@here" not in out.lower() and "<!" not in out
    assert len(out) <= limit + len("... [truncated  chars]") + 7
    if single_line:
        assert "\n" not in out


def test_html_links_stop_before_trailing_punctuation_and_stay_escaped():
    """URLs become links without the list comma or full stop after them; a quote cannot leave the href."""
    from siem.alert.render import encode_body

    out = encode_body('references: https://a.example/x, https://b.example/y"onmouseover=1.', "html")
    assert '<a href="https://a.example/x">https://a.example/x</a>, ' in out
    assert '<a href="https://b.example/y">https://b.example/y</a>&quot;onmouseover=1.' in out


def test_link_template_values_are_url_encoded_and_non_http_links_are_dropped():
    """A key value with spaces and & is encoded; a template that renders to javascript: gives no link."""
    from siem.alert.render import render_link

    fields = {"rule": "ssh bruteforce", "key": "user.name=a&b", "first_ms": 1000, "last_ms": 2500,
              "group_user_name": "a&b c"}
    assert render_link("https://k.example/d?r=$rule_url&k=$key_url&u=$group_user_name_url&t=$first_s-$last_s",
                       fields) == "https://k.example/d?r=ssh%20bruteforce&k=user.name%3Da%26b&u=a%26b%20c&t=1-3"
    assert render_link("javascript:alert($rule_url)", fields) == ""
    assert render_link("", fields) == ""


def test_attack_technique_tags_become_reference_links():
    """attack.t1110.001 and attack.T1078 give their ATT&CK pages after the rule's own references, once."""
    from siem.alert.render import references_of

    assert references_of(["https://wiki.example.org/x", "https://attack.mitre.org/techniques/T1078/"],
                         ["attack.credential_access", "attack.t1110.001", "attack.T1078", "attack.t1110.001"]) == [
        "https://wiki.example.org/x", "https://attack.mitre.org/techniques/T1078/",
        "https://attack.mitre.org/techniques/T1110/001/"]
