//! IIS Application Request Routing's explicit health test, with Microsoft TMG's response-time
//! alert: farmgate probes each farm member and this plugin judges the outcome.
//!
//! A probe counts as healthy when a response arrived, its status is one of the farm's acceptable
//! codes (ARR's default `200-399`), it came within the response-time threshold (TMG raises an
//! alert when a member misses it; 5000 ms by default) and, when `content_match` is set, the start
//! of its body contains that text (ARR's "response match").
//!
//! Settings: `{"farms": {"<farm>": {"statuses": "200-399", "content_match": "OK",
//! "response_time_ms": 5000}}}`; every field is optional and a farm missing from the map gets the
//! defaults.

use std::collections::HashMap;

use farmgate_sdk::{HealthEvaluation, HealthVerdict, Plugin, Probe, Settings, export_plugin};
use serde::Deserialize;

/// ARR's default acceptable status codes.
const DEFAULT_STATUSES: &str = "200-399";
/// TMG's default response-time threshold.
const DEFAULT_RESPONSE_TIME_MS: u64 = 5000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    #[serde(default)]
    farms: HashMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFarm {
    statuses: Option<String>,
    content_match: Option<String>,
    response_time_ms: Option<u64>,
}

/// Acceptable status codes: inclusive ranges, a single code being a range of one.
#[derive(Debug, Clone, PartialEq)]
struct Statuses {
    ranges: Vec<(u16, u16)>,
    /// The list as written back in a canonical form, for verdict messages.
    text: String,
}

impl Statuses {
    fn parse(text: &str) -> Result<Statuses, String> {
        let mut ranges = Vec::new();
        for item in text.split(',') {
            let item = item.trim();
            if item.is_empty() {
                return Err(format!(
                    "statuses \"{text}\" has an empty entry (write codes and ranges like \"200, 301-302\")"
                ));
            }
            let (lo, hi) = match item.split_once('-') {
                Some((lo, hi)) => (parse_code(lo.trim(), text)?, parse_code(hi.trim(), text)?),
                None => {
                    let code = parse_code(item, text)?;
                    (code, code)
                }
            };
            if lo > hi {
                return Err(format!(
                    "statuses \"{text}\": the range {lo}-{hi} is backwards (write the lower code first)"
                ));
            }
            ranges.push((lo, hi));
        }
        let text = ranges
            .iter()
            .map(|&(lo, hi)| {
                if lo == hi {
                    lo.to_string()
                } else {
                    format!("{lo}-{hi}")
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        Ok(Statuses { ranges, text })
    }

    fn accepts(&self, status: u16) -> bool {
        self.ranges
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&status))
    }
}

fn parse_code(s: &str, whole: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(code) if (100..=599).contains(&code) => Ok(code),
        _ => Err(format!(
            "statuses \"{whole}\": \"{s}\" is not a status code from 100 to 599"
        )),
    }
}

/// One farm's health test.
#[derive(Debug, Clone)]
struct Test {
    statuses: Statuses,
    /// Empty means no content check.
    content_match: Vec<u8>,
    /// The content match as text, for verdict messages.
    content_text: String,
    response_time_ms: u64,
}

impl Test {
    fn from_raw(raw: RawFarm) -> Result<Test, String> {
        let statuses = Statuses::parse(raw.statuses.as_deref().unwrap_or(DEFAULT_STATUSES))?;
        let response_time_ms = raw.response_time_ms.unwrap_or(DEFAULT_RESPONSE_TIME_MS);
        if response_time_ms == 0 {
            return Err("response_time_ms must be at least 1 (0 would fail every probe)".into());
        }
        let content_text = raw.content_match.unwrap_or_default();
        Ok(Test {
            statuses,
            content_match: content_text.as_bytes().to_vec(),
            content_text,
            response_time_ms,
        })
    }

    fn evaluate(&self, probe: &Probe) -> HealthVerdict {
        if let Some(error) = probe.error() {
            return HealthVerdict::unhealthy(if error.is_empty() {
                "no response"
            } else {
                error
            });
        }
        let Some(status) = probe.status() else {
            return HealthVerdict::unhealthy("no response");
        };
        if !self.statuses.accepts(status) {
            return HealthVerdict::unhealthy(format!(
                "status {status} is not in {}",
                self.statuses.text
            ));
        }
        let latency_us = probe.latency_us();
        if latency_us > self.response_time_ms.saturating_mul(1000) {
            // Rounded up, so that a response just over the threshold never reads as equal to it.
            let ms = latency_us.div_ceil(1000);
            return HealthVerdict::unhealthy(format!(
                "responded in {ms} ms, over the {} ms threshold",
                self.response_time_ms
            ));
        }
        if !contains(probe.body_prefix(), &self.content_match) {
            return HealthVerdict::unhealthy(format!(
                "the response does not contain \"{}\"",
                self.content_text
            ));
        }
        HealthVerdict::Healthy
    }
}

/// Whether `needle` occurs in `haystack` (an empty needle always does).
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    if haystack.len() < needle.len() {
        return false;
    }
    let last_start = haystack.len() - needle.len();
    haystack[..=last_start]
        .iter()
        .enumerate()
        .any(|(i, &b)| b == first && haystack[i + 1..i + needle.len()] == *rest)
}

pub struct Health {
    farms: HashMap<String, Test>,
    default: Test,
}

impl Plugin for Health {
    fn new(settings: &Settings) -> Result<Self, String> {
        let raw: RawSettings = settings.deserialize()?;
        let mut farms = HashMap::with_capacity(raw.farms.len());
        for (name, value) in raw.farms {
            let test = serde_json::from_value::<RawFarm>(value)
                .map_err(|e| e.to_string())
                .and_then(Test::from_raw)
                .map_err(|e| format!("farm \"{name}\": {e}"))?;
            farms.insert(name, test);
        }
        let default = Test::from_raw(RawFarm {
            statuses: None,
            content_match: None,
            response_time_ms: None,
        })?;
        Ok(Health { farms, default })
    }
}

impl HealthEvaluation for Health {
    fn evaluate(&self, probe: &Probe) -> HealthVerdict {
        self.farms
            .get(probe.farm())
            .unwrap_or(&self.default)
            .evaluate(probe)
    }
}

export_plugin!(Health);

#[cfg(test)]
mod tests {
    use super::*;
    use farmgate_sdk::testing;

    fn plugin(json: &str) -> Health {
        match Health::new(&testing::settings(json)) {
            Ok(p) => p,
            Err(e) => panic!("settings {json} refused: {e}"),
        }
    }

    fn error(json: &str) -> String {
        match Health::new(&testing::settings(json)) {
            Ok(_) => panic!("settings {json} accepted"),
            Err(e) => e,
        }
    }

    #[test]
    fn defaults_accept_200_to_399_within_5000_ms() {
        let p = plugin("{}");
        for status in [200, 204, 301, 304, 399] {
            assert_eq!(
                p.evaluate(&testing::probe(status, "", 1_000).build()),
                HealthVerdict::Healthy,
                "{status}"
            );
        }
        assert_eq!(
            p.evaluate(&testing::probe(199, "", 1_000).build()),
            HealthVerdict::unhealthy("status 199 is not in 200-399")
        );
        assert_eq!(
            p.evaluate(&testing::probe(400, "", 1_000).build()),
            HealthVerdict::unhealthy("status 400 is not in 200-399")
        );
        assert_eq!(
            p.evaluate(&testing::probe(503, "", 1_000).build()),
            HealthVerdict::unhealthy("status 503 is not in 200-399")
        );
        // Exactly at the threshold still passes; a microsecond over does not.
        assert_eq!(
            p.evaluate(&testing::probe(200, "", 5_000_000).build()),
            HealthVerdict::Healthy
        );
        assert_eq!(
            p.evaluate(&testing::probe(200, "", 5_000_001).build()),
            HealthVerdict::unhealthy("responded in 5001 ms, over the 5000 ms threshold")
        );
        assert_eq!(
            p.evaluate(&testing::probe(200, "", 6_200_000).build()),
            HealthVerdict::unhealthy("responded in 6200 ms, over the 5000 ms threshold")
        );
    }

    #[test]
    fn lists_and_ranges_with_whitespace() {
        let p = plugin(r#"{"farms": {"web": {"statuses": " 200 ,301 - 302,  404"}}}"#);
        let verdict = |status| p.evaluate(&testing::probe(status, "", 0).build());
        for ok in [200, 301, 302, 404] {
            assert_eq!(verdict(ok), HealthVerdict::Healthy, "{ok}");
        }
        for bad in [201, 300, 303, 403, 405, 500] {
            assert_eq!(
                verdict(bad),
                HealthVerdict::unhealthy(format!("status {bad} is not in 200, 301-302, 404")),
                "{bad}"
            );
        }
        let single = plugin(r#"{"farms": {"web": {"statuses": "100-599"}}}"#);
        assert_eq!(
            single.evaluate(&testing::probe(100, "", 0).build()),
            HealthVerdict::Healthy
        );
        assert_eq!(
            single.evaluate(&testing::probe(599, "", 0).build()),
            HealthVerdict::Healthy
        );
    }

    #[test]
    fn farms_have_their_own_tests() {
        let p = plugin(
            r#"{"farms": {"web": {"statuses": "200", "response_time_ms": 100},
                          "api": {"content_match": "ready"}}}"#,
        );
        assert_eq!(
            p.evaluate(&testing::probe(302, "", 0).build()),
            HealthVerdict::unhealthy("status 302 is not in 200")
        );
        assert_eq!(
            p.evaluate(&testing::probe(200, "", 150_000).build()),
            HealthVerdict::unhealthy("responded in 150 ms, over the 100 ms threshold")
        );
        let api = |body: &str| p.evaluate(&testing::probe(302, body, 0).farm("api").build());
        assert_eq!(api("status: ready\n"), HealthVerdict::Healthy);
        assert_eq!(
            api("status: starting"),
            HealthVerdict::unhealthy("the response does not contain \"ready\"")
        );
        // A farm missing from the map gets the defaults.
        let other = |status| p.evaluate(&testing::probe(status, "", 0).farm("other").build());
        assert_eq!(other(302), HealthVerdict::Healthy);
        assert_eq!(
            other(500),
            HealthVerdict::unhealthy("status 500 is not in 200-399")
        );
    }

    #[test]
    fn content_match_is_a_byte_search() {
        let p = plugin(r#"{"farms": {"web": {"content_match": "OK"}}}"#);
        let verdict = |body: &str| p.evaluate(&testing::probe(200, body, 0).build());
        assert_eq!(verdict("OK"), HealthVerdict::Healthy);
        assert_eq!(verdict("status=OK"), HealthVerdict::Healthy);
        assert_eq!(verdict("OK and more"), HealthVerdict::Healthy);
        assert_eq!(verdict("OOK"), HealthVerdict::Healthy);
        for bad in ["", "O", "ok", "K O", "NOT_O_K"] {
            assert_eq!(
                verdict(bad),
                HealthVerdict::unhealthy("the response does not contain \"OK\""),
                "{bad:?}"
            );
        }
        // Bodies that are not UTF-8 are searched all the same.
        let probe = testing::probe(200, "", 0)
            .body(&[0xff, 0xfe, b'O', b'K', 0x00])
            .build();
        assert_eq!(p.evaluate(&probe), HealthVerdict::Healthy);
        // The status is judged before the content.
        assert_eq!(
            p.evaluate(&testing::probe(500, "OK", 0).build()),
            HealthVerdict::unhealthy("status 500 is not in 200-399")
        );
    }

    #[test]
    fn probe_errors_and_missing_responses() {
        let p = plugin("{}");
        let probe = testing::probe(200, "", 0)
            .failed("connection refused")
            .build();
        assert_eq!(
            p.evaluate(&probe),
            HealthVerdict::unhealthy("connection refused")
        );
        let probe = testing::probe(200, "", 0).no_status().build();
        assert_eq!(p.evaluate(&probe), HealthVerdict::unhealthy("no response"));
        // An error wins even when a status came with it.
        let probe = testing::probe(200, "", 0)
            .error("timed out reading the body")
            .build();
        assert_eq!(
            p.evaluate(&probe),
            HealthVerdict::unhealthy("timed out reading the body")
        );
    }

    #[test]
    fn invalid_settings_name_the_farm() {
        for (json, expected) in [
            (
                r#"{"farms": {"web": {"statuses": "200-"}}}"#,
                "farm \"web\"",
            ),
            (
                r#"{"farms": {"web": {"statuses": "abc"}}}"#,
                "\"abc\" is not",
            ),
            (
                r#"{"farms": {"web": {"statuses": "99"}}}"#,
                "from 100 to 599",
            ),
            (
                r#"{"farms": {"web": {"statuses": "600"}}}"#,
                "from 100 to 599",
            ),
            (
                r#"{"farms": {"web": {"statuses": "-200"}}}"#,
                "\"\" is not a status code",
            ),
            (
                r#"{"farms": {"web": {"statuses": "399-200"}}}"#,
                "backwards",
            ),
            (
                r#"{"farms": {"web": {"statuses": "200,,300"}}}"#,
                "empty entry",
            ),
            (r#"{"farms": {"web": {"statuses": ""}}}"#, "empty entry"),
            (
                r#"{"farms": {"web": {"statuses": "200-300-400"}}}"#,
                "farm \"web\"",
            ),
            (
                r#"{"farms": {"web": {"response_time_ms": 0}}}"#,
                "at least 1",
            ),
            (
                r#"{"farms": {"web": {"response_time_ms": -5}}}"#,
                "farm \"web\"",
            ),
            (
                r#"{"farms": {"web": {"timeout": 5}}}"#,
                "unknown field `timeout`",
            ),
            (r#"{"farms": {"web": 5}}"#, "farm \"web\""),
            (r#"{"farm": {}}"#, "unknown field `farm`"),
        ] {
            let e = error(json);
            assert!(e.contains(expected), "{json}: {e}");
        }
    }

    #[test]
    fn byte_search() {
        assert!(contains(b"abc", b""));
        assert!(contains(b"", b""));
        assert!(!contains(b"", b"a"));
        assert!(contains(b"abc", b"abc"));
        assert!(contains(b"abc", b"c"));
        assert!(!contains(b"ab", b"abc"));
        assert!(contains(b"aaab", b"aab"));
    }
}
