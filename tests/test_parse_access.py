"""Access logs: nginx/apache combined and common format, JSON access logs, bad lines (RELIABILITY 25)."""

from __future__ import annotations

import json

from siem.parse import ParseContext, parse

REF = 1_711_627_200_000  # 2024-03-28T12:00:00Z
CTX = ParseContext(now_ms=REF, host="web1")


def apache(line: str) -> dict[str, object]:
    return parse("apache", line.encode("utf-8", "surrogateescape"), CTX, "test")


def test_combined_line_gives_the_whole_event() -> None:
    """A real combined-format line (elastic examples) with every field mapped."""
    line = ('83.149.9.216 - - [17/May/2015:10:05:03 +0000] "GET /presentations/logstash-monitorama-2013/images/'
            'kibana-search.png?x=1 HTTP/1.1" 200 203023 "http://semicomplete.com/presentations/" '
            '"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_9_1)"')
    assert apache(line) == {
        "@timestamp": 1_431_857_103_000,
        "event.original": line,
        "event.dataset": "apache.access",
        "event.category": "web",
        "source.ip": "83.149.9.216",
        "http.request.method": "GET",
        "url.original": "/presentations/logstash-monitorama-2013/images/kibana-search.png?x=1",
        "url.path": "/presentations/logstash-monitorama-2013/images/kibana-search.png",
        "url.query": "x=1",
        "http.version": "1.1",
        "http.response.status_code": 200,
        "http.response.body.bytes": 203023,
        "http.request.referrer": "http://semicomplete.com/presentations/",
        "user_agent.original": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_9_1)",
        "host.name": "web1",
    }


def test_nginx_dataset_and_authenticated_user() -> None:
    """nginx lines are nginx.access; a remote user other than '-' is user.name."""
    ev = parse("nginx", b'10.0.0.5 - alice [22/Oct/2021:02:28:56 -0700] "POST /login HTTP/2.0" 302 0 "-" "curl/8.0"',
               CTX)
    assert (ev["event.dataset"], ev["user.name"], ev["@timestamp"], ev["http.version"]) == (
        "nginx.access", "alice", 1_634_894_936_000, "2.0")
    assert "http.request.referrer" not in ev


def test_common_log_format_without_referrer_and_agent() -> None:
    """Common format: no referrer/user agent fields; '-' body size means no bytes field."""
    ev = apache('127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 304 -')
    assert (ev["@timestamp"], ev["user.name"], ev["http.response.status_code"]) == (971_211_336_000, "frank", 304)
    assert "http.response.body.bytes" not in ev and "user_agent.original" not in ev
    assert "error.message" not in ev


def test_escaped_quotes_and_backslashes_stay_as_logged() -> None:
    """Apache's \\" and \\x escapes inside the request and user agent are kept verbatim."""
    line = ('1.2.3.4 - - [22/Dec/2016:16:36:26 +0300] "GET /search?q=%f0\'\'\\"\\" HTTP/1.1" 200 3148 "-" '
            '"Mozilla \\"quoted\\" \\x01 agent"')
    ev = apache(line)
    assert ev["url.query"] == "q=%f0''\\\"\\\""
    assert ev["user_agent.original"] == 'Mozilla \\"quoted\\" \\x01 agent'
    assert "error.message" not in ev


def test_unescaped_quote_in_request_from_old_apache() -> None:
    """Apache < 2.0.46 did not escape quotes: the line is still read."""
    ev = apache('1.2.3.4 - - [13/Mar/2005:04:05:47 -0500] "GET /a"b HTTP/1.0" 404 276 "-" "-"')
    assert (ev["url.original"], ev["http.response.status_code"]) == ('/a"b', 404)


def test_ipv6_and_ipv4_mapped_sources() -> None:
    """IPv6 is compressed; ::ffff:a.b.c.d becomes the IPv4 address."""
    a = apache('2001:0db8:0000:0000:0000:0000:0000:0001 - - [10/Oct/2000:13:55:36 +0000] "GET / HTTP/1.1" 200 1 "-" "-"')
    b = apache('::ffff:192.0.2.7 - - [10/Oct/2000:13:55:36 +0000] "GET / HTTP/1.1" 200 1 "-" "-"')
    assert (a["source.ip"], b["source.ip"]) == ("2001:db8::1", "192.0.2.7")


def test_host_name_client_goes_to_source_address() -> None:
    """With HostnameLookups the client is a name: source.address."""
    ev = apache('crawler.example.com - - [10/Oct/2000:13:55:36 +0000] "GET / HTTP/1.1" 200 1 "-" "-"')
    assert ev["source.address"] == "crawler.example.com" and "source.ip" not in ev


def test_invalid_status_code_is_an_error_with_the_rest_kept() -> None:
    """A non-numeric status: error.message, everything else read."""
    ev = apache('1.2.3.4 - - [10/Oct/2000:13:55:36 +0000] "GET /x HTTP/1.1" abc 12 "-" "UA"')
    assert "invalid status code" in str(ev["error.message"])
    assert (ev["url.path"], ev["http.response.body.bytes"], ev["user_agent.original"]) == ("/x", 12, "UA")
    assert "http.response.status_code" not in ev


def test_ten_kilobyte_user_agent_is_kept_whole() -> None:
    """A 10 KB user agent is not cut (lines are capped at 64 KiB, not fields)."""
    ua = "A" * 10_240
    ev = apache(f'1.2.3.4 - - [10/Oct/2000:13:55:36 +0000] "GET / HTTP/1.1" 200 1 "-" "{ua}"')
    assert ev["user_agent.original"] == ua


def test_tls_handshake_bytes_on_port_80_give_an_event_with_error() -> None:
    """nginx logs a TLS ClientHello as an escaped request: source and status kept, error noted."""
    ev = parse("nginx", b'45.1.2.3 - - [22/Oct/2021:02:28:56 +0000] "\\x16\\x03\\x01\\x00\\xa5\\x01\\x00\\x00\\xa1'
                        b'\\x03\\x03" 400 157 "-" "-"', CTX)
    assert (ev["source.ip"], ev["http.response.status_code"], ev["event.dataset"]) == ("45.1.2.3", 400, "nginx.access")
    assert "unparseable request line" in str(ev["error.message"])
    assert "url.original" not in ev and "http.request.method" not in ev


def test_raw_binary_garbage_in_request_line() -> None:
    """Unescaped binary bytes in the request: replaced, error noted, no exception."""
    ev = parse("apache", b'1.2.3.4 - - [10/Oct/2000:13:55:36 +0000] "\x16\x03\x01\xff\xfe\x00" 400 0 "-" "-"', CTX)
    assert ev["http.response.status_code"] == 400
    assert "unparseable request line" in str(ev["error.message"])


def test_empty_request_of_a_timed_out_connection() -> None:
    """Apache logs `""` with 408 for a connection that sent nothing: no url, no error."""
    ev = apache('1.2.3.4 - - [10/Oct/2000:13:55:36 +0000] "" 408 - "-" "-"')
    assert ev["http.response.status_code"] == 408
    assert "url.original" not in ev and "error.message" not in ev


def test_absolute_form_target_of_proxy_probes() -> None:
    """`GET http://host/path` (open-proxy probing): url.domain and url.path from the target."""
    ev = apache('1.2.3.4 - - [10/Oct/2000:13:55:36 +0000] "GET http://www.example.com:8080/a/b?c=d HTTP/1.1" '
                '404 0 "-" "-"')
    assert (ev["url.domain"], ev["url.path"], ev["url.query"]) == ("www.example.com:8080", "/a/b", "c=d")


def test_target_with_spaces_and_http09_request() -> None:
    """Unencoded spaces in the target are kept; `GET /` without version is HTTP/0.9."""
    ev = apache('1.2.3.4 - - [10/Oct/2000:13:55:36 +0000] "GET /a b/c HTTP/1.1" 404 0 "-" "-"')
    assert ev["url.path"] == "/a b/c"
    ev = apache('1.2.3.4 - - [10/Oct/2000:13:55:36 +0000] "GET /" 200 0 "-" "-"')
    assert (ev["url.path"], "http.version" in ev) == ("/", False)


def test_lines_wrapped_in_quotes_are_unwrapped() -> None:
    """Exported logs with every line in an extra pair of quotes (ocatak/acunetix) parse normally."""
    ev = apache('"192.168.4.25 - - [22/Dec/2016:16:30:52 +0300] "POST /administrator/index.php HTTP/1.1" 303 382 '
                '"http://192.168.4.161/DVWA" "Mozilla/5.0""')
    assert (ev["source.ip"], ev["http.request.method"], ev["user_agent.original"]) == (
        "192.168.4.25", "POST", "Mozilla/5.0")


def test_bad_timestamp_uses_reference_time() -> None:
    """An impossible date: reference time and error, the rest read."""
    ev = apache('1.2.3.4 - - [31/Feb/2020:13:55:36 +0000] "GET / HTTP/1.1" 200 1 "-" "-"')
    assert ev["@timestamp"] == REF and "invalid timestamp" in str(ev["error.message"])
    assert ev["url.path"] == "/"


def test_not_an_access_log_line() -> None:
    """Anything else: an error event with the line kept."""
    ev = apache("this is not an access log line")
    assert ev == {"@timestamp": REF, "event.original": "this is not an access log line",
                  "event.dataset": "apache.access", "error.message": "not a common/combined log format line"}


# --- JSON access logs ------------------------------------------------------------------------------


def access_json(obj: object) -> dict[str, object]:
    return parse("access_json", json.dumps(obj).encode(), CTX, "test")


def test_nginx_json_log_format() -> None:
    """nginx `log_format json escape=json` with $time_iso8601, $request and friends."""
    ev = access_json({"time_iso8601": "2024-03-27T13:06:56+01:00", "remote_addr": "10.1.2.3", "remote_user": "",
                      "request": "GET /api/v1/items?id=7 HTTP/1.1", "status": "404", "body_bytes_sent": "153",
                      "http_referer": "", "http_user_agent": "curl/8.4.0", "request_time": "0.002",
                      "host": "shop.example.com"})
    assert {k: v for k, v in ev.items() if k != "event.original"} == {
        "@timestamp": 1_711_541_216_000, "event.dataset": "nginx.access", "event.category": "web",
        "source.ip": "10.1.2.3", "http.request.method": "GET", "url.original": "/api/v1/items?id=7",
        "url.path": "/api/v1/items", "url.query": "id=7", "http.version": "1.1",
        "http.response.status_code": 404, "http.response.body.bytes": 153, "user_agent.original": "curl/8.4.0",
        "url.domain": "shop.example.com", "host.name": "web1", "labels.request_time": "0.002"}


def test_json_log_with_time_local_numbers_and_split_request() -> None:
    """$time_local text, numeric status, request_method + request_uri + server_protocol."""
    ev = access_json({"time_local": "10/Oct/2000:13:55:36 -0700", "remote_addr": "::ffff:10.0.0.1",
                      "request_method": "POST", "request_uri": "/login", "server_protocol": "HTTP/2.0",
                      "status": 302, "body_bytes_sent": 0})
    assert (ev["@timestamp"], ev["source.ip"], ev["http.request.method"], ev["url.path"], ev["http.version"],
            ev["http.response.status_code"]) == (971_211_336_000, "10.0.0.1", "POST", "/login", "2.0", 302)


def test_json_log_with_msec_epoch() -> None:
    """$msec (seconds with milliseconds) is a time too."""
    assert access_json({"msec": "1711541216.123", "remote_addr": "1.1.1.1"})["@timestamp"] == 1_711_541_216_123


def test_json_access_log_not_json_or_not_object() -> None:
    """Invalid JSON and a JSON array are error events."""
    ev = parse("access_json", b'{"remote_addr": "1.1.1.1"', CTX)
    assert "invalid JSON" in str(ev["error.message"])
    ev = parse("access_json", b'[1, 2]', CTX)
    assert "not an object" in str(ev["error.message"])


def test_json_access_log_without_time_uses_reference_time() -> None:
    """No time key: reference time, error noted, fields read."""
    ev = access_json({"remote_addr": "1.1.1.1", "status": "200"})
    assert (ev["@timestamp"], ev["http.response.status_code"]) == (REF, 200)
    assert "no time field" in str(ev["error.message"])
