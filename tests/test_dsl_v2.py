"""DSL v2 pieces that faithful Sigma conversion needs: numbers compared as numbers where they are held
as text, type errors where a comparison cannot apply, cidr on text fields, and test events whose
fields are checked against the schema."""

from __future__ import annotations

import pytest

from siem.dsl.loader import load_texts
from siem.errors import RuleError
from tests.engine_support import ev, run

PORT = "aws.cloudtrail.request_parameters.ipPermissions.items.fromPort"


def _codes(src: str) -> list[tuple[str, str]]:
    with pytest.raises(RuleError) as exc:
        load_texts({"r.rules": src})
    return [(i.code, i.message) for i in exc.value.issues if i.severity == "error"]


def test_unquoted_number_compares_numerically_on_a_text_field() -> None:
    """CloudTrail keeps numbers as text: `< 1024` compares them as numbers, so "30" < 8 is false."""
    src = f"rule r {{ when {PORT} < 1024 }}"
    assert len(run(src, [ev(0, **{PORT.replace(".", "__"): "22"})])) == 1
    assert run(src, [ev(0, **{PORT.replace(".", "__"): "8080"})]) == []
    src8 = f"rule r {{ when {PORT} < 8 }}"
    assert run(src8, [ev(0, **{PORT.replace(".", "__"): "30"})]) == []


def test_text_that_is_not_a_number_never_matches_a_numeric_comparison() -> None:
    """A value like "all" is not below or above any number."""
    src = f"rule r {{ when {PORT} >= 0 }}"
    assert run(src, [ev(0, **{PORT.replace(".", "__"): "all"})]) == []
    assert len(run(src, [ev(0, **{PORT.replace(".", "__"): "0"})])) == 1


def test_quoted_number_in_an_ordering_is_a_type_error() -> None:
    """`> "10"` would order text ("30" < "8"): refused with the fix."""
    [(code, msg)] = _codes(f'rule r {{ when {PORT} > "10" }}')
    assert code == "type" and "write the number unquoted" in msg


def test_ordering_an_ip_address_is_a_type_error() -> None:
    """`source.ip > "10"` and `source.ip > 10` are refused: use cidr()."""
    for src in ('rule r { when source.ip > "10" }', "rule r { when source.ip > 10 }"):
        [(code, msg)] = _codes(src)
        assert code == "type" and "IP address" in msg and "cidr" in msg


def test_cidr_applies_to_text_fields() -> None:
    """`in cidr(...)` works on any text field that holds addresses, e.g. CloudTrail's cidrIp."""
    field = "aws.cloudtrail.request_parameters.ipPermissions.items.ipRanges.items.cidrIp"
    src = f'rule r {{ when {field} in cidr("0.0.0.0/0") }}'
    assert len(run(src, [ev(0, **{field.replace(".", "__"): "203.0.113.9"})])) == 1
    assert run(src, [ev(0, **{field.replace(".", "__"): "not an address"})]) == []
    [(code, _)] = _codes('rule r { when http.response.status_code in cidr("10.0.0.0/8") }')
    assert code == "type"


def test_test_event_fields_are_checked_against_the_schema() -> None:
    """A misspelt field in an expect event is an error (it would make a nofire case pass vacuously)."""
    src = 'rule r {\n  when user.name == "root"\n  expect nofire { {"user.nmae": "root"} }\n}\n'
    [(code, msg)] = _codes(src)
    assert code == "unknown-field"
    assert msg == "test event field 'user.nmae' is not in the schema (did you mean 'user.name'?)"


@pytest.mark.parametrize(
    ("cond", "hit", "miss"),
    [
        ("user_agent.original contains field(user.name)", ("curl bob", "bob"), ("curl bob", "alice")),
        ("user_agent.original icontains field(user.name)", ("curl BOB", "bob"), ("curl", "bob")),
        ("url.path startswith field(user.name)", ("bob/x", "bob"), ("x/bob", "bob")),
        ("url.path endswith field(user.name)", ("x/bob", "bob"), ("bob/x", "bob")),
    ],
)
def test_field_contains_field(cond: str, hit: tuple[str, str], miss: tuple[str, str]) -> None:
    """One field containing / starting / ending with another field of the same event."""
    left = cond.split()[0].replace(".", "__")
    src = f"rule r {{ when {cond} }}"
    assert len(run(src, [ev(0, **{left: hit[0], "user__name": hit[1]})])) == 1
    assert run(src, [ev(0, **{left: miss[0], "user__name": miss[1]})]) == []


def test_field_contains_a_number_field_is_a_type_error() -> None:
    """contains between fields needs text on both sides."""
    [(code, _)] = _codes("rule r { when url.path contains field(http.response.status_code) }")
    assert code == "type"


ANY_ORDER = """
rule r {
  all within 5m by source.ip {
    event.action == "a"
    event.action == "b"
  }
}
"""


def _act(t_s: int, action: str, ip: str = "192.0.2.1", **more: object) -> dict[str, object]:
    return ev(t_s * 1000, event__action=action, source__ip=ip, **more)


def test_all_fires_on_every_step_in_any_order() -> None:
    """all within 5m: b then a fires, as a then b does.

        t:  0s   60s
            b    a     -> fires at 60s
    """
    assert len(run(ANY_ORDER, [_act(0, "b"), _act(60, "a")])) == 1
    assert len(run(ANY_ORDER, [_act(0, "a"), _act(60, "b")])) == 1


def test_all_needs_the_steps_within_the_window_and_one_key() -> None:
    """a at 0s and b at 400s are too far apart; a and b from two sources are two keys.

        t:  0s  | 400s
            a   | b    -> no alert
    """
    assert run(ANY_ORDER, [_act(0, "a"), _act(400, "b")]) == []
    assert run(ANY_ORDER, [_act(0, "a"), _act(10, "b", ip="192.0.2.2")]) == []


def test_sequence_still_needs_the_order() -> None:
    """The same steps as a sequence do not fire when b comes first."""
    src = ANY_ORDER.replace("all within", "sequence within")
    assert run(src, [_act(0, "b"), _act(60, "a")]) == []
    assert len(run(src, [_act(0, "a"), _act(60, "b")])) == 1


DISTINCT_STEP = """
rule r {
  sequence within 10m by source.ip {
    event.action == "fail" distinct(user.name) >= 3
    event.action == "ok"
  }
}
"""


def test_distinct_in_a_sequence_step_counts_different_values() -> None:
    """Failures for 3 different users, then a success: fires; 5 failures for one user do not count as 3."""
    spray = [_act(i, "fail", user__name=u) for i, u in enumerate(["a", "b", "c"])] + [_act(10, "ok", user__name="c")]
    assert len(run(DISTINCT_STEP, spray)) == 1
    same = [_act(i, "fail", user__name="a") for i in range(5)] + [_act(10, "ok", user__name="a")]
    assert run(DISTINCT_STEP, same) == []


def test_distinct_step_field_is_checked() -> None:
    """An unknown field in distinct(...) of a step is an error."""
    [(code, _)] = _codes(DISTINCT_STEP.replace("distinct(user.name)", "distinct(user.nmae)"))
    assert code == "unknown-field"


def _get(t_s: int, size: int, ip: str = "192.0.2.1") -> dict[str, object]:
    return ev(t_s * 1000, event__dataset="nginx.access", source__ip=ip, http__response__body__bytes=size)


@pytest.mark.parametrize(
    ("measure", "sizes", "fires"),
    [
        ("avg(http.response.body.bytes) >= 100", [50, 150, 100], True),   # avg 100
        ("avg(http.response.body.bytes) > 100", [50, 150, 100], False),
        ("median(http.response.body.bytes) >= 100", [1, 100, 1000], True),
        ("median(http.response.body.bytes) >= 101", [1, 100, 1000], False),
        ("percentile(http.response.body.bytes, 90) >= 1000", [1] * 9 + [1000], False),  # nearest rank 9 of 10 is 1
        ("percentile(http.response.body.bytes, 91) >= 1000", [1] * 9 + [1000], True),   # rank 10
    ],
)
def test_average_median_and_percentile_thresholds(measure: str, sizes: list[int], fires: bool) -> None:
    """avg / median / percentile of a number field over the window."""
    src = f'rule r {{\n  when event.dataset == "nginx.access"\n  {measure} within 1m by source.ip\n}}\n'
    assert bool(run(src, [_get(i, n) for i, n in enumerate(sizes)])) == fires


def test_several_measures_must_hold_in_one_window() -> None:
    """count >= 3 and sum(bytes) >= 1000: three small responses do not fire, three that add up do."""
    src = ('rule r {\n  when event.dataset == "nginx.access"\n'
           "  count >= 3 and sum(http.response.body.bytes) >= 1000 within 1m by source.ip\n}\n")
    assert run(src, [_get(i, 10) for i in range(5)]) == []
    assert len(run(src, [_get(0, 500), _get(1, 400), _get(2, 200)])) == 1
    assert run(src, [_get(0, 5000), _get(1, 1)]) == []  # the sum alone is not enough


def test_average_needs_a_number_field() -> None:
    """avg(user.name) is a type error."""
    [(code, _)] = _codes('rule r {\n  when user.name exists\n  avg(user.name) >= 3 within 1m\n}\n')
    assert code == "type"


# --- element-wise tests over list fields (the records go through the real CloudTrail parser) ---------

def _cloudtrail(request: dict[str, object], name: str = "AuthorizeSecurityGroupIngress") -> dict[str, object]:
    import orjson

    from siem.parse import ParseContext, parse

    record = {"eventVersion": "1.08", "eventTime": "2024-01-01T00:00:00Z", "eventSource": "ec2.amazonaws.com",
              "eventName": name, "awsRegion": "eu-west-1", "sourceIPAddress": "198.51.100.7",
              "userIdentity": {"type": "IAMUser", "userName": "mallory", "accountId": "111122223333"},
              "requestParameters": request, "eventID": "e1"}
    return parse("cloudtrail", orjson.dumps(record), ParseContext(now_ms=0), "test")


def _perm(port: int, cidr: str) -> dict[str, object]:
    return {"ipProtocol": "tcp", "fromPort": port, "toPort": port, "ipRanges": {"items": [{"cidrIp": cidr}]}}


WORLD_OPEN = """
rule world_open_admin_port {
  when event.action == "AuthorizeSecurityGroupIngress"
       and any aws.cloudtrail.request_parameters.ipPermissions.items {
             ipRanges.items.cidrIp == "0.0.0.0/0" and not fromPort in ["80", "443"]
           }
}
"""


def test_any_tests_each_list_element_on_its_own() -> None:
    """Port 22 open to the world fires; 443 open to the world plus 22 open to one /32 does not
    (flattened lists would join both permissions and fire)."""
    bad = _cloudtrail({"groupId": "sg-1", "ipPermissions": {"items": [_perm(443, "0.0.0.0/0"), _perm(22, "0.0.0.0/0")]}})
    ok = _cloudtrail({"groupId": "sg-1", "ipPermissions": {"items": [_perm(443, "0.0.0.0/0"), _perm(22, "203.0.113.5/32")]}})
    assert len(run(WORLD_OPEN, [bad])) == 1
    assert run(WORLD_OPEN, [ok]) == []
    flat = 'rule r {\n  when aws.cloudtrail.request_parameters.ipPermissions.items.ipRanges.items.cidrIp contains "0.0.0.0/0"\n' \
           '    and aws.cloudtrail.request_parameters.ipPermissions.items.fromPort contains "22"\n}\n'
    assert len(run(flat, [ok])) == 1  # what the flattened fields alone would say


PUBLIC_POLICY = """
rule public_bucket_policy {
  when event.action == "PutBucketPolicy"
       and any aws.cloudtrail.request_parameters.bucketPolicy.Statement {
             Effect == "Allow" and (Principal == "*" or Principal.AWS == "*")
           }
}
"""


def test_any_over_policy_statements_reads_each_statement() -> None:
    """Allow one role + Deny insecure transport for Principal * is not public; Allow for * is."""
    role = {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:role/app"}, "Action": "s3:GetObject"}
    deny = {"Effect": "Deny", "Principal": "*", "Action": "s3:*",
            "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
    public = {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject"}
    private = _cloudtrail({"bucketName": "b", "bucketPolicy": {"Statement": [role, deny]}}, "PutBucketPolicy")
    opened = _cloudtrail({"bucketName": "b", "bucketPolicy": {"Statement": [role, public]}}, "PutBucketPolicy")
    assert run(PUBLIC_POLICY, [private]) == []
    assert len(run(PUBLIC_POLICY, [opened])) == 1


def test_all_needs_every_element() -> None:
    """all: every permission world-open fires; one restricted permission does not; no list never fires."""
    src = WORLD_OPEN.replace("any aws", "all aws").replace(' and not fromPort in ["80", "443"]', "")
    both = _cloudtrail({"ipPermissions": {"items": [_perm(22, "0.0.0.0/0"), _perm(23, "0.0.0.0/0")]}})
    one = _cloudtrail({"ipPermissions": {"items": [_perm(22, "0.0.0.0/0"), _perm(23, "10.0.0.0/8")]}})
    none = _cloudtrail({"groupId": "sg-1"})
    assert len(run(src, [both])) == 1
    assert run(src, [one]) == [] and run(src, [none]) == []


def test_policy_document_held_as_url_encoded_json_is_read() -> None:
    """IAM sends policyDocument as a URL-encoded JSON string: its statements are elements too."""
    import urllib.parse

    import orjson

    doc = urllib.parse.quote(orjson.dumps({"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}).decode())
    ev_ = _cloudtrail({"roleName": "r", "policyName": "p", "policyDocument": doc}, "PutRolePolicy")
    src = ('rule r {\n  when any aws.cloudtrail.request_parameters.policyDocument.Statement '
           '{ Effect == "Allow" and Action == "*" and Resource == "*" }\n}\n')
    assert len(run(src, [ev_])) == 1


def test_element_tests_need_a_raw_list_source() -> None:
    """any over a field that no raw record holds is an error naming where lists can come from."""
    [(code, msg)] = _codes('rule r { when any user.name { x == "1" } }')
    assert code == "each" and "aws.cloudtrail.request_parameters" in msg


OVER_ALERTS = """
rule bf {
  when event.dataset == "sshd" and event.outcome == "failure"
  count >= 3 within 1m by source.ip
}
rule repeat_offender {
  title "A source brute-forces again and again"
  when  event.dataset == "siem.alert" and rule.id == "bf"
  count >= 2 within 1h by source.ip
}
"""


def test_a_rule_over_other_rules_alerts() -> None:
    """Two brute-force alerts for one source within an hour raise a third rule's alert.

        t:  0 1 2s (bf)   ...   600 601 602s (bf)  -> repeat_offender at 602s
    """
    burst = lambda t0, ip: [ev((t0 + i) * 1000, event__dataset="sshd", event__outcome="failure", source__ip=ip)
                            for i in range(3)]
    got = run(OVER_ALERTS, burst(0, "192.0.2.9") + burst(600, "192.0.2.9"))
    assert [a.rule_id for a in got] == ["bf", "bf", "repeat_offender"]
    assert dict(got[-1].group) == {"source.ip": "192.0.2.9"}
    assert [a.rule_id for a in run(OVER_ALERTS, burst(0, "192.0.2.9") + burst(600, "192.0.2.8"))] == ["bf", "bf"]
