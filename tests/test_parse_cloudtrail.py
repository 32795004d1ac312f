"""CloudTrail records: ECS mapping, every field kept, bounded flattening, bad records (RELIABILITY 29-31)."""

from __future__ import annotations

import json
from pathlib import Path

from siem.parse import ParseContext, parse, parse_cloudtrail_record

DATA = Path(__file__).parent / "data" / "parse"
REF = 1_711_627_200_000  # 2024-03-28T12:00:00Z
CTX = ParseContext(now_ms=REF)
DOCS = (DATA / "aws_docs_cloudtrail.jsonl").read_text().splitlines()  # AWS documentation examples


def trail(obj: object) -> dict[str, object]:
    return parse("cloudtrail", json.dumps(obj).encode(), CTX, "test")


def base(**extra: object) -> dict[str, object]:
    """A minimal valid record plus `extra` keys."""
    rec: dict[str, object] = {"eventVersion": "1.08", "eventTime": "2024-03-27T13:06:56Z",
                              "eventSource": "s3.amazonaws.com", "eventName": "GetObject", "awsRegion": "eu-west-1",
                              "sourceIPAddress": "198.51.100.7", "eventID": "e-1", "eventType": "AwsApiCall",
                              "recipientAccountId": "111122223333"}
    rec.update(extra)
    return rec


def test_console_login_without_mfa_maps_every_key_field() -> None:
    """AWS docs 'IAM user, successful sign-in without MFA': the documented mapping."""
    ev = parse("cloudtrail", DOCS[0].encode(), CTX)
    assert ev == {
        "@timestamp": 1_668_097_474_000,
        "event.original": DOCS[0],
        "event.dataset": "aws.cloudtrail",
        "event.action": "ConsoleLogin",
        "event.provider": "signin.amazonaws.com",
        "event.outcome": "success",
        "event.id": "3fcfb182-98f8-4744-bd45-10a395ab61cb",
        "cloud.provider": "aws",
        "cloud.region": "us-east-2",
        "cloud.account.id": "111122223333",
        "source.ip": "192.0.2.0",
        "user.name": "anaya",
        "user.id": "AIDACKCEVSQ6C2EXAMPLE",
        "user_agent.original": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.12; rv:62.0) Gecko/20100101 Firefox/62.0",
        "aws.cloudtrail.event_version": "1.05",
        "aws.cloudtrail.event_type": "AwsConsoleSignIn",
        "aws.cloudtrail.user_identity.type": "IAMUser",
        "aws.cloudtrail.user_identity.principal_id": "AIDACKCEVSQ6C2EXAMPLE",
        "aws.cloudtrail.user_identity.arn": "arn:aws:iam::111122223333:user/anaya",
        "aws.cloudtrail.user_identity.account_id": "111122223333",
        "aws.cloudtrail.user_identity.user_name": "anaya",
        "aws.cloudtrail.response_elements.ConsoleLogin": "Success",
        "aws.cloudtrail.console_login.result": "Success",
        "aws.cloudtrail.additional_eventdata.MobileVersion": "No",
        "aws.cloudtrail.additional_eventdata.LoginTo": "https://console.aws.amazon.com/sns",
        "aws.cloudtrail.additional_eventdata.MFAUsed": "No",
        "aws.cloudtrail.mfa_used": "No",
    }


def test_failed_console_login_is_failure() -> None:
    """ConsoleLogin Failure without errorCode: outcome failure, error_message kept."""
    ev = parse("cloudtrail", DOCS[2].encode(), CTX)
    assert (ev["event.outcome"], ev["aws.cloudtrail.console_login.result"], ev["aws.cloudtrail.error_message"],
            ev["aws.cloudtrail.mfa_used"]) == ("failure", "Failure", "Failed authentication", "Yes")


def test_root_login_user_name_is_root() -> None:
    """userIdentity type Root without userName: user.name root."""
    ev = parse("cloudtrail", DOCS[5].encode(), CTX)
    assert (ev["user.name"], ev["aws.cloudtrail.user_identity.type"]) == ("root", "Root")


def test_error_code_makes_the_outcome_failure() -> None:
    """errorCode present: failure, error_code kept."""
    ev = trail(base(errorCode="AccessDenied", errorMessage="Access Denied"))
    assert (ev["event.outcome"], ev["aws.cloudtrail.error_code"], ev["aws.cloudtrail.error_message"]) == (
        "failure", "AccessDenied", "Access Denied")


def test_assumed_role_user_is_the_session_name_with_mfa_flag() -> None:
    """AssumedRole: user.name is the role session name; sessionContext.attributes flattened."""
    ev = trail(base(userIdentity={
        "type": "AssumedRole", "principalId": "AROAEXAMPLE:i-0317f6c6b66ae9c40",
        "arn": "arn:aws:sts::123456789123:assumed-role/BankingWAFRole/i-0317f6c6b66ae9c40",
        "accountId": "123456789123", "accessKeyId": "ASIAEXAMPLE",
        "sessionContext": {"sessionIssuer": {"type": "Role", "userName": "BankingWAFRole",
                                             "arn": "arn:aws:iam::123456789123:role/BankingWAFRole"},
                           "webIdFederationData": {},
                           "attributes": {"mfaAuthenticated": "false", "creationDate": "2020-09-14T01:18:40Z"}},
        "invokedBy": "ec2.amazonaws.com"}))
    assert {k: v for k, v in ev.items() if k.startswith(("user.", "aws.cloudtrail.user_identity", "cloud.account"))} == {
        "user.name": "i-0317f6c6b66ae9c40",
        "user.id": "AROAEXAMPLE:i-0317f6c6b66ae9c40",
        "cloud.account.id": "123456789123",
        "aws.cloudtrail.user_identity.type": "AssumedRole",
        "aws.cloudtrail.user_identity.principal_id": "AROAEXAMPLE:i-0317f6c6b66ae9c40",
        "aws.cloudtrail.user_identity.arn": "arn:aws:sts::123456789123:assumed-role/BankingWAFRole/i-0317f6c6b66ae9c40",
        "aws.cloudtrail.user_identity.account_id": "123456789123",
        "aws.cloudtrail.user_identity.access_key_id": "ASIAEXAMPLE",
        "aws.cloudtrail.user_identity.session_context.session_issuer.type": "Role",
        "aws.cloudtrail.user_identity.session_context.session_issuer.user_name": "BankingWAFRole",
        "aws.cloudtrail.user_identity.session_context.session_issuer.arn": "arn:aws:iam::123456789123:role/BankingWAFRole",
        "aws.cloudtrail.user_identity.session_context.mfa_authenticated": "false",
        "aws.cloudtrail.user_identity.session_context.creation_date": "2020-09-14T01:18:40Z",
        "aws.cloudtrail.user_identity.invoked_by": "ec2.amazonaws.com",
    }


def test_identity_types_federated_and_service() -> None:
    """FederatedUser: the name from the ARN; AWSService: no user.name; account from recipientAccountId."""
    fed = trail(base(userIdentity={"type": "FederatedUser", "arn": "arn:aws:sts::111122223333:federated-user/Bob",
                                   "accountId": "111122223333"}))
    assert fed["user.name"] == "Bob"
    svc = trail(base(userIdentity={"type": "AWSService", "invokedBy": "cloudtrail.amazonaws.com"}))
    assert "user.name" not in svc
    assert svc["cloud.account.id"] == "111122223333"


def test_request_parameter_lists_are_flattened_without_indices_and_joined() -> None:
    """ipPermissions.items[].ipRanges.items[].cidrIp from two rules: one key, values joined with ', '."""
    ev = trail(base(eventName="AuthorizeSecurityGroupIngress", requestParameters={
        "groupId": "sg-1",
        "ipPermissions": {"items": [
            {"ipProtocol": "tcp", "fromPort": 22, "toPort": 22, "ipRanges": {"items": [{"cidrIp": "10.0.0.0/8"}]}},
            {"ipProtocol": "tcp", "fromPort": 3389, "toPort": 3389, "ipRanges": {"items": [{"cidrIp": "0.0.0.0/0"}]}},
        ]}}))
    p = "aws.cloudtrail.request_parameters."
    assert ev[p + "ipPermissions.items.ipRanges.items.cidrIp"] == "10.0.0.0/8, 0.0.0.0/0"
    assert ev[p + "ipPermissions.items.fromPort"] == "22, 3389"
    assert ev[p + "groupId"] == "sg-1"


def test_json_in_a_string_stays_a_string() -> None:
    """PutKeyPolicy's policy (JSON text) is kept as the text; booleans are 'true'/'false'."""
    ev = parse("cloudtrail", DOCS[14].encode(), CTX)
    policy = ev["aws.cloudtrail.request_parameters.policy"]
    assert isinstance(policy, str) and json.loads(policy)["Statement"][0]["Action"] == "kms:*"
    assert ev["aws.cloudtrail.request_parameters.bypassPolicyLockoutSafetyCheck"] == "false"
    assert ev["source.ip"] == "192.0.2.0" and ev["user_agent.original"] == "AWS Internal"


def test_resources_and_unknown_top_level_keys_are_kept() -> None:
    """resources keep original key names; new top-level keys are snake_cased under aws.cloudtrail."""
    ev = trail(base(resources=[{"ARN": "arn:aws:s3:::b1", "type": "AWS::S3::Bucket"},
                               {"ARN": "arn:aws:s3:::b1/k", "type": "AWS::S3::Object"}],
                    sharedEventID="s-1", readOnly=True, managementEvent=False, vpcEndpointId="vpce-1",
                    tlsDetails={"tlsVersion": "TLSv1.3", "cipherSuite": "TLS_AES_128_GCM_SHA256"}))
    assert ev["aws.cloudtrail.resources.ARN"] == "arn:aws:s3:::b1, arn:aws:s3:::b1/k"
    assert ev["aws.cloudtrail.resources.type"] == "AWS::S3::Bucket, AWS::S3::Object"
    assert (ev["aws.cloudtrail.shared_event_id"], ev["aws.cloudtrail.read_only"], ev["aws.cloudtrail.management_event"],
            ev["aws.cloudtrail.vpc_endpoint_id"]) == ("s-1", "true", "false", "vpce-1")
    assert (ev["tls.version"], ev["tls.cipher"]) == ("TLSv1.3", "TLS_AES_128_GCM_SHA256")


def test_source_address_forms() -> None:
    """Service name -> source.address; IPv6 -> source.ip; a list-like string -> source.address."""
    assert trail(base(sourceIPAddress="signin.amazonaws.com"))["source.address"] == "signin.amazonaws.com"
    assert trail(base(sourceIPAddress="2001:DB8::7"))["source.ip"] == "2001:db8::7"
    ev = trail(base(sourceIPAddress="1.2.3.4, 5.6.7.8"))
    assert ev["source.address"] == "1.2.3.4, 5.6.7.8" and "source.ip" not in ev


def test_missing_event_time_and_event_id() -> None:
    """No eventTime: reference time and error; no eventID: no event.id, no error."""
    rec = base()
    del rec["eventTime"]
    ev = trail(rec)
    assert ev["@timestamp"] == REF and "missing eventTime" in str(ev["error.message"])
    rec = base()
    del rec["eventID"]
    ev = trail(rec)
    assert "event.id" not in ev and "error.message" not in ev


def test_logstash_shaped_record_uses_its_timestamp() -> None:
    """OTRF exports replaced eventTime with @timestamp: used without error."""
    line = (DATA / "otrf_cloudtrail.jsonl").read_text().splitlines()[0]
    ev = parse("cloudtrail", line.encode(), CTX)
    assert "error.message" not in ev
    assert ev["@timestamp"] != REF and ev["user.name"] == "pedro"


def test_times_far_in_the_future_and_past_are_parsed() -> None:
    """Year 9999 and 1970 are valid event times (policy on them belongs to the engine)."""
    assert trail(base(eventTime="9999-12-31T23:59:59Z"))["@timestamp"] == 253_402_300_799_000
    assert trail(base(eventTime="1970-01-01T00:00:00Z"))["@timestamp"] == 0
    ev = trail(base(eventTime="2024-13-45T99:00:00Z"))
    assert ev["@timestamp"] == REF and "invalid timestamp" in str(ev["error.message"])


def test_null_where_objects_are_expected() -> None:
    """userIdentity, requestParameters, responseElements null: no fields, no error."""
    ev = trail(base(userIdentity=None, requestParameters=None, responseElements=None, additionalEventData=None))
    assert "error.message" not in ev
    assert not any(k.startswith(("aws.cloudtrail.request", "aws.cloudtrail.response", "aws.cloudtrail.user")) for k in ev)


def test_wrong_types_are_noted_and_kept() -> None:
    """userIdentity a string, eventName an object: noted, values kept as text."""
    ev = trail(base(userIdentity="root?", eventName={"x": 1}, requestParameters="bucket=x"))
    msg = str(ev["error.message"])
    assert "userIdentity is a str" in msg and "eventName is a dict" in msg and "requestParameters is a str" in msg
    assert ev["aws.cloudtrail.user_identity"] == "root?"
    assert ev["aws.cloudtrail.event_name.x"] == "1"
    assert ev["aws.cloudtrail.request_parameters"] == "bucket=x"


def test_numbers_beyond_int64_stay_exact_strings() -> None:
    """A 30-digit integer and 1e400 keep their literal text."""
    line = json.dumps(base())[:-1] + ', "requestParameters": {"big": 123456789012345678901234567890, "huge": 1e400}}'
    ev = parse("cloudtrail", line.encode(), CTX)
    assert ev["aws.cloudtrail.request_parameters.big"] == "123456789012345678901234567890"
    assert ev["aws.cloudtrail.request_parameters.huge"] == "1e400"
    assert "error.message" not in ev


def test_duplicate_keys_last_wins() -> None:
    """Duplicate keys resolve deterministically to the last value."""
    line = json.dumps(base())[:-1] + ', "eventName": "First", "eventName": "Second"}'
    assert parse("cloudtrail", line.encode(), CTX)["event.action"] == "Second"


def test_deep_nesting_is_bounded() -> None:
    """100 levels: flattened to depth 32, the rest kept as JSON text, noted; 5000 levels: error event."""
    deep: object = "leaf"
    for _ in range(100):
        deep = {"a": deep}
    ev = trail(base(requestParameters=deep))
    assert "nested deeper than 32" in str(ev["error.message"])
    assert any(k.startswith("aws.cloudtrail.request_parameters.a.a") for k in ev)
    line = json.dumps(base())[:-1] + ', "requestParameters": ' + '{"a":' * 5000 + "1" + "}" * 5000 + "}"
    ev = parse("cloudtrail", line.encode(), CTX)
    assert "too deeply" in str(ev["error.message"]) or "depth" in str(ev["error.message"])


def test_huge_request_parameters_are_capped() -> None:
    """2,000 keys: 500 kept per record; a 100 KB value cut to 8 KiB; both noted."""
    params = {f"k{i}": i for i in range(2000)}
    params["blob"] = "x" * 100_000  # type: ignore[assignment]
    ev = trail(base(requestParameters=params))
    assert sum(1 for k in ev if k.startswith("aws.cloudtrail.request_parameters.")) == 500
    assert "fields dropped" in str(ev["error.message"])
    ev = trail(base(requestParameters={"blob": "x" * 100_000}))
    assert len(ev["aws.cloudtrail.request_parameters.blob"]) == 8192  # type: ignore[arg-type]
    assert "cut to 8192" in str(ev["error.message"])


def test_records_file_is_refused_as_a_line() -> None:
    """A whole {"Records": [...]} file on one line is the file collector's job: error event."""
    ev = trail({"Records": [base()]})
    assert "not one record" in str(ev["error.message"])


def test_eventbridge_envelope_is_unwrapped() -> None:
    """EventBridge delivers {"detail-type": ..., "detail": record}: the record is parsed."""
    ev = trail({"version": "0", "detail-type": "AWS API Call via CloudTrail", "source": "aws.s3", "detail": base()})
    assert (ev["event.action"], ev["event.provider"]) == ("GetObject", "s3.amazonaws.com")


def test_invalid_json_and_non_object_lines() -> None:
    """Not JSON, or JSON that is not an object: error events."""
    assert "invalid JSON" in str(parse("cloudtrail", b'{"eventName": ', CTX)["error.message"])
    assert "not an object" in str(parse("cloudtrail", b'"hello"', CTX)["error.message"])


def test_record_function_matches_the_line_parser() -> None:
    """parse_cloudtrail_record(dict) gives the same event as the line, except event.original."""
    for line in DOCS:
        a = parse("cloudtrail", line.encode(), CTX)
        b = parse_cloudtrail_record(json.loads(line), CTX)
        assert {k: v for k, v in a.items() if k != "event.original"} == {
            k: v for k, v in b.items() if k != "event.original"}
        assert json.loads(str(b["event.original"])) == json.loads(line)


def test_record_function_never_raises_on_wrong_types() -> None:
    """A list, None, a string or a number as a record: error events with int @timestamp."""
    for rec in ([1, 2], None, "x", 3.5, {"eventTime": 7, "userIdentity": [1], 1: 2}):
        ev = parse_cloudtrail_record(rec, CTX)
        assert isinstance(ev["@timestamp"], int) and "error.message" in ev
        assert ev["event.dataset"] == "aws.cloudtrail"
