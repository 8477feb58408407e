//! Config parsing: `Config::parse` on any text never panics; an error names the file and a place
//! inside the text (line >= 1, column within that line); a config that parses is consistent
//! (indexes in range, paths normalised) and builds its farms.

#![no_main]

use farmgate::Config;
use farmgate::farm::Farm;
use libfuzzer_sys::fuzz_target;

const ORIGIN: &str = "fuzz/farmgate.toml";

fuzz_target!(|data: &[u8]| {
    // Config files are read as UTF-8 (`read_to_string`), so other bytes never reach the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, ORIGIN) {
        Err(e) => check_error(text, &e),
        Ok(config) => check_config(&config),
    }
});

fn check_error(text: &str, e: &farmgate::ConfigError) {
    assert_eq!(e.file, ORIGIN, "error names another file: {e:?}");
    // Line 0 is reserved for errors with no place in the file (it could not be read).
    assert!(e.line >= 1, "parse error without a line: {e:?}");
    let lines: Vec<&str> = text.split('\n').collect();
    assert!(
        e.line <= lines.len(),
        "line {} past the end ({} lines): {e:?}",
        e.line,
        lines.len()
    );
    // Columns count bytes from 1; the end of a line (or of the text) is a valid place.
    let line_len = lines[e.line - 1].len();
    assert!(
        e.column >= 1 && e.column <= line_len + 1,
        "column {} outside line {} of {} bytes: {e:?}",
        e.column,
        e.line,
        line_len
    );
    // Known finding (reported with the fuzz commit, not fixed here): for some toml syntax errors
    // `toml::de::Error::message()` is empty, so the ConfigError reads "file:1:5: " and says
    // nothing. Seen for `a = ` at the end of the text, a NUL in a comment ("#\0") and a CR not
    // followed by LF in a comment. An empty message is tolerated so that the rest of the input
    // space (places, keys, valid configs) keeps being checked; FUZZ_STRICT=1 refuses it.
    if std::env::var_os("FUZZ_STRICT").is_some() {
        assert!(!e.message.trim().is_empty(), "error without a message: {e:?}");
    }
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!("{ORIGIN}:{}:{}: ", e.line, e.column)),
        "error display does not lead with file:line:column: {shown}"
    );
}

fn check_config(config: &Config) {
    assert_eq!(config.origin, ORIGIN);
    for rule in &config.rules {
        assert!(rule.farm < config.farms.len(), "rule {} names no farm", rule.name);
        for &l in &rule.listeners {
            assert!(l < config.listeners.len(), "rule {} names no listener", rule.name);
        }
        for p in &rule.paths {
            assert!(
                p.starts_with('/') && !p.ends_with('*'),
                "rule {} has an unnormalised path {p:?}",
                rule.name
            );
        }
    }
    for l in &config.listeners {
        assert_eq!(config.listener_index(&l.name).map(|i| &config.listeners[i].name), Some(&l.name));
    }
    // Key bytes are at least 16 when they come from the config; random keys are 32.
    assert!(config.proxy.affinity_key.bytes.len() >= 16);
    // The start-up summary indexes farms through rules: it must not panic.
    let _ = config.summary();
    for f in &config.farms {
        let farm = Farm::new(f, &config.proxy.affinity_key.bytes);
        let members = farm.members();
        assert_eq!(members.len(), f.members.len());
        for (i, m) in members.iter().enumerate() {
            assert_eq!(m.name, f.members[i].name);
            assert_eq!(farm.index_of(m), Some(i));
            // Every member's cookie names it and only it.
            let mut headers = http::HeaderMap::new();
            let cookie = format!("{}={}", f.affinity_cookie, m.affinity.token);
            if let Ok(v) = http::HeaderValue::from_str(&cookie) {
                headers.insert(http::header::COOKIE, v);
                assert_eq!(farm.sticky_member(&headers), Some(i as u32));
            }
        }
    }
}
