//! Lossless DynamoDB `AttributeValue` → plain JSON.
//!
//! serde_dynamo into `serde_json::Value` rounds numbers to `f64` and rejects binary, so the relay
//! writes the JSON text itself:
//! - `N` becomes a JSON number with every digit DynamoDB stored (38 significant digits fit);
//! - `SS`/`NS`/`BS` become arrays (in the order the stream record lists them);
//! - `B` and the members of `BS` become standard base64 strings;
//! - `NULL` becomes `null`, `M` an object with its keys sorted (so the same item always gives the
//!   same text), `L` an array.

use std::collections::HashMap;

use base64::Engine as _;
use serde_dynamo::AttributeValue;
use serde_json::value::RawValue;

/// Why an attribute could not be written as JSON.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConvertError {
    /// The value itself is item data (personal data): never kept, so never logged.
    #[error("attribute {path} is not a valid DynamoDB number (value not shown: item data)")]
    InvalidNumber { path: String },
}

/// Writes an item (or a map of keys) as a JSON object, keys sorted.
pub fn item_to_raw(item: &HashMap<String, AttributeValue>) -> Result<Box<RawValue>, ConvertError> {
    let mut out = String::with_capacity(64);
    write_map(item, Path::Root, &mut out)?;
    // The writer only emits valid JSON; a failure here would be a bug in this module, reported
    // as an error rather than a panic.
    RawValue::from_string(out).map_err(|_| ConvertError::InvalidNumber {
        path: "(the whole item)".to_owned(),
    })
}

/// Where a value sits in the item (`a.b[2]`), written out only for an error: building it for
/// every attribute cost an allocation each.
#[derive(Clone, Copy)]
enum Path<'p> {
    Root,
    Field(&'p Path<'p>, &'p str),
    Index(&'p Path<'p>, usize),
}

impl std::fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Field(Path::Root, name) => f.write_str(name),
            Path::Field(parent, name) => write!(f, "{parent}.{name}"),
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

fn write_map(
    map: &HashMap<String, AttributeValue>,
    path: Path<'_>,
    out: &mut String,
) -> Result<(), ConvertError> {
    let mut entries: Vec<(&String, &AttributeValue)> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.push('{');
    for (i, (name, value)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(name, out);
        out.push(':');
        write_value(value, Path::Field(&path, name), out)?;
    }
    out.push('}');
    Ok(())
}

fn write_value(
    value: &AttributeValue,
    path: Path<'_>,
    out: &mut String,
) -> Result<(), ConvertError> {
    match value {
        AttributeValue::S(s) => write_string(s, out),
        AttributeValue::N(n) => write_number(n, path, out)?,
        AttributeValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        AttributeValue::Null(_) => out.push_str("null"),
        AttributeValue::B(bytes) => write_base64(bytes, out),
        AttributeValue::M(map) => write_map(map, path, out)?,
        AttributeValue::L(list) => {
            out.push('[');
            for (i, v) in list.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(v, Path::Index(&path, i), out)?;
            }
            out.push(']');
        }
        AttributeValue::Ss(set) => {
            write_array(set, out, |s, out| {
                write_string(s, out);
                Ok(())
            })?;
        }
        AttributeValue::Ns(set) => write_array(set, out, |n, out| write_number(n, path, out))?,
        AttributeValue::Bs(set) => {
            write_array(set, out, |b, out| {
                write_base64(b, out);
                Ok(())
            })?;
        }
    }
    Ok(())
}

fn write_array<T>(
    items: &[T],
    out: &mut String,
    mut write: impl FnMut(&T, &mut String) -> Result<(), ConvertError>,
) -> Result<(), ConvertError> {
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write(item, out)?;
    }
    out.push(']');
    Ok(())
}

fn write_string(s: &str, out: &mut String) {
    out.reserve(s.len() + 2);
    out.push('"');
    // Copy runs that need no escaping in one go; only `"`, `\` and control characters do.
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            out.push_str(&format!("\\u{b:04x}"));
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

fn write_base64(bytes: &[u8], out: &mut String) {
    out.push('"');
    base64::engine::general_purpose::STANDARD.encode_string(bytes, out);
    out.push('"');
}

/// Writes a DynamoDB number as a JSON number, keeping every digit.
///
/// DynamoDB returns numbers normalised, but the JSON grammar is stricter than what a number
/// string could look like (`+1`, `.5`, `5.`, `007`), so those forms are rewritten without
/// changing the value. Anything else is an error, never a silent string.
fn write_number(n: &str, path: Path<'_>, out: &mut String) -> Result<(), ConvertError> {
    let invalid = || ConvertError::InvalidNumber {
        path: path.to_string(),
    };
    let s = n.trim();
    let (negative, rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let (int_part, frac_part) = match mantissa.find('.') {
        Some(i) => (&mantissa[..i], Some(&mantissa[i + 1..])),
        None => (mantissa, None),
    };
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int_part) || !frac_part.is_none_or(all_digits) {
        return Err(invalid());
    }
    if int_part.is_empty() && frac_part.is_none_or(str::is_empty) {
        return Err(invalid());
    }
    let exponent = match exponent {
        None => None,
        Some(e) => {
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            if digits.is_empty() || !all_digits(digits) {
                return Err(invalid());
            }
            Some(e)
        }
    };
    let int_part = int_part.trim_start_matches('0');
    if negative {
        out.push('-');
    }
    out.push_str(if int_part.is_empty() { "0" } else { int_part });
    if let Some(frac) = frac_part.filter(|f| !f.is_empty()) {
        out.push('.');
        out.push_str(frac);
    }
    if let Some(e) = exponent {
        out.push('e');
        out.push_str(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(n: &str) -> Result<String, ConvertError> {
        let mut out = String::new();
        write_number(n, Path::Field(&Path::Root, "n"), &mut out).map(|()| out)
    }

    fn json(item: serde_json::Value) -> String {
        let item: HashMap<String, AttributeValue> = serde_json::from_value(item).unwrap();
        item_to_raw(&item).unwrap().get().to_owned()
    }

    #[test]
    fn thirty_eight_digit_numbers_keep_every_digit() {
        let big = "12345678901234567890123456789012345678";
        assert_eq!(num(big).unwrap(), big);
        let text = json(
            serde_json::json!({"n": {"N": big}, "neg": {"N": "-0.00000000000000000000000000000000000001"}}),
        );
        assert_eq!(
            text,
            format!(r#"{{"n":{big},"neg":-0.00000000000000000000000000000000000001}}"#)
        );
    }

    #[test]
    fn numbers_outside_json_grammar_are_rewritten_without_changing_the_value() {
        assert_eq!(num("+5").unwrap(), "5");
        assert_eq!(num(".5").unwrap(), "0.5");
        assert_eq!(num("5.").unwrap(), "5");
        assert_eq!(num("007").unwrap(), "7");
        assert_eq!(num("-0").unwrap(), "-0");
        assert_eq!(num("1E+10").unwrap(), "1e+10");
        assert_eq!(num("9.99e-130").unwrap(), "9.99e-130");
    }

    #[test]
    fn non_numbers_are_errors_not_strings() {
        for bad in [
            "", "-", "abc", "1.2.3", "1e", "NaN", "Infinity", "0x10", "1 2",
        ] {
            assert!(num(bad).is_err(), "{bad:?} was accepted");
        }
        let item: HashMap<String, AttributeValue> =
            serde_json::from_value(serde_json::json!({"a": {"M": {"b": {"N": "x"}}}})).unwrap();
        let err = item_to_raw(&item).unwrap_err();
        assert_eq!(err, ConvertError::InvalidNumber { path: "a.b".into() });
        let item: HashMap<String, AttributeValue> = serde_json::from_value(
            serde_json::json!({"a": {"L": [{"N": "1"}, {"M": {"b": {"NS": ["2", "y"]}}}]}}),
        )
        .unwrap();
        assert_eq!(
            item_to_raw(&item).unwrap_err(),
            ConvertError::InvalidNumber {
                path: "a[1].b".into()
            }
        );
        assert!(
            !err.to_string().contains('x'),
            "the value is item data: {err}"
        );
    }

    #[test]
    fn sets_become_arrays_and_binary_becomes_base64() {
        let text = json(serde_json::json!({
            "ss": {"SS": ["b", "a"]},
            "ns": {"NS": ["1", "99999999999999999999999999999999999999"]},
            "bs": {"BS": ["AAE=", "/w=="]},
            "b": {"B": "3q2+7w=="},
        }));
        assert_eq!(
            text,
            r#"{"b":"3q2+7w==","bs":["AAE=","/w=="],"ns":[1,99999999999999999999999999999999999999],"ss":["b","a"]}"#
        );
    }

    #[test]
    fn nested_maps_lists_null_bool_and_escapes_are_plain_json() {
        let text = json(serde_json::json!({
            "m": {"M": {"z": {"NULL": true}, "a": {"BOOL": false}}},
            "l": {"L": [{"S": "q\"uote\\\n\u{1}é"}, {"N": "1.50"}, {"L": []}]},
        }));
        assert_eq!(
            text,
            r#"{"l":["q\"uote\\\n\u0001é",1.50,[]],"m":{"a":false,"z":null}}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["l"][0], "q\"uote\\\n\u{1}é");
    }
}
