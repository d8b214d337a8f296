//! Log output: env_logger's text lines (the default), or one JSON object per
//! line (`--log-format json`) for a log shipper. `RUST_LOG` filters both.
//!
//! A JSON line carries `time` (RFC 3339, UTC, milliseconds), `level`,
//! `target` and `message`, plus the record's key-values: the request line
//! (target `threadline::request`) adds `request_id`, `method`, `route`,
//! `status`, `latency_ms`, `client` and `user_id` (null unless the request
//! authenticated). Only what the code names as a key-value is written: no
//! header, query string or body ever reaches a record.

use std::io::Write;

use clap::ValueEnum;
use log::kv::{Error, Key, Value, VisitSource};
use serde_json::{Map, Number, Value as Json};

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

/// One record as a JSON object.
fn json_line(record: &log::Record<'_>) -> Json {
    let mut obj = Map::new();
    obj.insert(
        "time".into(),
        chrono::Utc::now()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            .into(),
    );
    obj.insert("level".into(), record.level().as_str().into());
    obj.insert("target".into(), record.target().into());
    obj.insert("message".into(), record.args().to_string().into());
    // A failing visit only loses the remaining key-values, never the line.
    let _ = record.key_values().visit(&mut Fields(&mut obj));
    Json::Object(obj)
}

/// Copies key-values into the object, keeping numbers as numbers.
struct Fields<'a>(&'a mut Map<String, Json>);

impl<'kvs> VisitSource<'kvs> for Fields<'_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), Error> {
        let json = if let Some(n) = value.to_u64() {
            Json::from(n)
        } else if let Some(n) = value.to_i64() {
            Json::from(n)
        } else if let Some(x) = value.to_f64() {
            Number::from_f64(x).map_or(Json::Null, Json::Number)
        } else if let Some(b) = value.to_bool() {
            Json::Bool(b)
        } else {
            match value.to_string() {
                // An absent value (an empty string stands for it).
                s if s.is_empty() => Json::Null,
                s => Json::String(s),
            }
        };
        self.0.insert(key.as_str().to_owned(), json);
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
        let line = json_line(&record);
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["target"], "threadline::request");
        assert_eq!(line["message"], "req_x POST /x 201 1.5ms");
        assert_eq!(line["status"], 201);
        assert_eq!(line["latency_ms"], 1.5);
        assert_eq!(line["user_id"], Json::Null);
        assert!(line["time"].as_str().unwrap().ends_with('Z'));
    }
}
