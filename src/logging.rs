//! Log output: env_logger's text lines (the default), or one JSON object per
//! line (`--log-format json`) for a log shipper. `RUST_LOG` filters both.
//!
//! A JSON line carries `time` (RFC 3339, UTC, milliseconds), `level`,
//! `target` and `message`, plus the record's key-values: the request line
//! (target `threadline::request`) adds `request_id`, `method`, `route`,
//! `status`, `latency_ms`, `client` and `user_id` (null unless the request
//! authenticated). Only what the code names as a key-value is written: no
//! header, query string or body ever reaches a record.

use std::fmt::Write as _;
use std::io::Write as _;

use clap::ValueEnum;
use log::kv::{Error, Key, Value, VisitSource};

/// How log records are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// env_logger's lines: `[time LEVEL target] message`.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the logger. `default_filter` applies when `RUST_LOG` is unset.
pub fn init(format: LogFormat, default_filter: &str) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_filter));
    if format == LogFormat::Json {
        builder.format(|buf, record| {
            let line = json_line(record);
            writeln!(buf, "{line}")
        });
    }
    builder.init();
}

/// One record as a JSON object, written straight into one string (no
/// intermediate map: a request line is written for every request).
fn json_line(record: &log::Record<'_>) -> String {
    let mut out = String::with_capacity(384);
    out.push_str("{\"time\":\"");
    out.push_str(&chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    out.push_str("\",\"level\":\"");
    out.push_str(record.level().as_str());
    out.push_str("\",\"target\":\"");
    push_escaped(&mut out, record.target());
    out.push_str("\",\"message\":\"");
    let _ = write!(Escaping(&mut out), "{}", record.args());
    out.push('"');
    // A failing visit only loses the remaining key-values, never the line.
    let _ = record.key_values().visit(&mut Fields(&mut out));
    out.push('}');
    out
}

/// Appends `s` as the inside of a JSON string.
fn push_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// A `fmt::Write` that escapes what it is given into a JSON string.
struct Escaping<'a>(&'a mut String);

impl std::fmt::Write for Escaping<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        push_escaped(self.0, s);
        Ok(())
    }
}

/// Appends key-values as members, keeping numbers as numbers; an empty
/// string stands for an absent value and is written as `null`.
struct Fields<'a>(&'a mut String);

impl<'kvs> VisitSource<'kvs> for Fields<'_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), Error> {
        let out = &mut *self.0;
        out.push_str(",\"");
        push_escaped(out, key.as_str());
        out.push_str("\":");
        if let Some(n) = value.to_u64() {
            let _ = write!(out, "{n}");
        } else if let Some(n) = value.to_i64() {
            let _ = write!(out, "{n}");
        } else if let Some(x) = value.to_f64() {
            // Rust prints finite floats without an exponent: valid JSON.
            if x.is_finite() {
                let _ = write!(out, "{x}");
            } else {
                out.push_str("null");
            }
        } else if let Some(b) = value.to_bool() {
            out.push_str(if b { "true" } else { "false" });
        } else {
            out.push('"');
            let opened = out.len();
            let _ = write!(Escaping(out), "{value}");
            if out.len() == opened {
                out.pop();
                out.push_str("null");
            } else {
                out.push('"');
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_record_becomes_one_object_with_typed_fields() {
        let kvs: [(&str, Value<'_>); 4] = [
            ("request_id", Value::from("req_x")),
            ("status", Value::from(201u16)),
            ("latency_ms", Value::from(1.5f64)),
            ("user_id", Value::from("")),
        ];
        let record = log::Record::builder()
            .args(format_args!("req_x POST /x 201 1.5ms"))
            .level(log::Level::Info)
            .target("threadline::request")
            .key_values(&kvs)
            .build();
        let text = json_line(&record);
        let line: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["target"], "threadline::request");
        assert_eq!(line["message"], "req_x POST /x 201 1.5ms");
        assert_eq!(line["status"], 201);
        assert_eq!(line["latency_ms"], 1.5);
        assert_eq!(line["user_id"], serde_json::Value::Null);
        assert!(line["time"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn quotes_backslashes_and_control_characters_are_escaped() {
        let kvs: [(&str, Value<'_>); 1] = [("path", Value::from("a\"b\\c\u{1}"))];
        let record = log::Record::builder()
            .args(format_args!("line\nbreak \"quoted\""))
            .level(log::Level::Warn)
            .target("t")
            .key_values(&kvs)
            .build();
        let text = json_line(&record);
        assert!(!text.contains('\n'), "one line: {text}");
        let line: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(line["message"], "line\nbreak \"quoted\"");
        assert_eq!(line["path"], "a\"b\\c\u{1}");
    }
}
