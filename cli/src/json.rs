//! JSON documents, written by hand (RFC 8259): values the commands build, written compact
//! on one line. Strings are escaped as the RFC requires: `"`, `\` and the control
//! characters U+0000 to U+001F; everything else (non-ASCII too) is written as UTF-8.

use std::fmt;
use std::time::{Duration, SystemTime};

use crate::time::rfc3339;

/// A JSON value. Numbers are kept as their text, made only by the constructors below, so
/// that every one is a valid JSON number.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Vec<Value>),
    /// Members in the order given (keys are the program's own, never repeated).
    Object(Vec<(&'static str, Value)>),
}

impl Value {
    /// A string.
    pub(crate) fn string(text: impl Into<String>) -> Value {
        Value::String(text.into())
    }

    /// A whole number.
    pub(crate) fn integer(number: impl Into<i64>) -> Value {
        Value::Number(number.into().to_string())
    }

    /// A duration as a number of seconds, to the microsecond (`1.5`, `0.000250`).
    pub(crate) fn seconds(duration: Duration) -> Value {
        Value::Number(format!(
            "{}.{:06}",
            duration.as_secs(),
            duration.subsec_micros()
        ))
    }

    /// A time as an RFC 3339 string in UTC, to the microsecond.
    pub(crate) fn time(at: SystemTime) -> Value {
        Value::String(rfc3339(at))
    }

    /// `value` made by `make`, or `null`.
    pub(crate) fn or_null<T>(value: Option<T>, make: impl FnOnce(T) -> Value) -> Value {
        value.map_or(Value::Null, make)
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(true) => f.write_str("true"),
            Value::Bool(false) => f.write_str("false"),
            Value::Number(text) => f.write_str(text),
            Value::String(text) => write_string(f, text),
            Value::Array(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
            Value::Object(members) => {
                f.write_str("{")?;
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write_string(f, key)?;
                    write!(f, ":{value}")?;
                }
                f.write_str("}")
            }
        }
    }
}

/// `text` as a JSON string: quoted, with `"`, `\` and the control characters escaped.
fn write_string(f: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
    f.write_str("\"")?;
    let mut plain_from = 0;
    for (at, c) in text.char_indices() {
        let escaped = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            '\u{8}' => "\\b",
            '\u{c}' => "\\f",
            c if c < ' ' => "",
            _ => continue,
        };
        f.write_str(&text[plain_from..at])?;
        match escaped {
            "" => write!(f, "\\u{:04x}", c as u32)?,
            escaped => f.write_str(escaped)?,
        }
        plain_from = at + c.len_utf8();
    }
    f.write_str(&text[plain_from..])?;
    f.write_str("\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(text: &str) -> String {
        Value::string(text).to_string()
    }

    #[test]
    fn strings_escape_what_rfc_8259_requires() {
        assert_eq!(string("plain"), r#""plain""#);
        assert_eq!(string(r#"say "hi" \ bye"#), r#""say \"hi\" \\ bye""#);
        assert_eq!(string("a\nb\r\tc"), r#""a\nb\r\tc""#);
        assert_eq!(string("\u{8}\u{c}"), r#""\b\f""#);
        assert_eq!(string("\0\u{1}\u{1f}"), r#""\u0000\u0001\u001f""#);
        // DEL, non-ASCII and astral characters need no escape: written as UTF-8.
        assert_eq!(string("\u{7f}é€😀"), "\"\u{7f}é€😀\"");
        assert_eq!(string(""), r#""""#);
    }

    #[test]
    fn numbers_and_documents() {
        assert_eq!(Value::integer(-42).to_string(), "-42");
        let seconds = |micros| Value::seconds(Duration::from_micros(micros)).to_string();
        assert_eq!(seconds(1_500_000), "1.500000");
        assert_eq!(seconds(250), "0.000250");
        let document = Value::Object(vec![
            ("ok", Value::Bool(true)),
            ("none", Value::or_null(None::<i32>, Value::integer)),
            (
                "list",
                Value::Array(vec![Value::integer(1), Value::string("x")]),
            ),
            ("empty", Value::Array(vec![])),
        ]);
        assert_eq!(
            document.to_string(),
            r#"{"ok":true,"none":null,"list":[1,"x"],"empty":[]}"#
        );
    }
}
