//! Pure validation of a consumer's EventBridge event pattern, so a pattern EventBridge would
//! reject at PutRule is refused before anything is created.
//!
//! The grammar checked: an object at the top, not empty; each field either a nested object
//! (recursively the same), `$or` (an array of patterns), or an array of matches. A match is a
//! string, number, boolean or null, or an object with exactly one known operator: `prefix`,
//! `suffix`, `anything-but`, `numeric`, `exists`, `cidr`, `equals-ignore-case`, `wildcard`.
//! The pattern's JSON is at most [`MAX_PATTERN_CHARS`] characters.

use serde_json::{Map, Value};

/// EventBridge's hard maximum for a rule's event pattern (the default quota is 2048 and can be
/// raised to this).
pub const MAX_PATTERN_CHARS: usize = 4096;

const NUMERIC_OPS: [&str; 5] = ["<", "<=", "=", ">", ">="];

/// Checks `pattern`; the error names `field` (e.g. `spec.consumers[0].eventPattern`) and the path
/// inside the pattern.
pub fn validate(field: &str, pattern: &Value) -> Result<(), String> {
    let size = pattern.to_string().chars().count();
    if size > MAX_PATTERN_CHARS {
        return Err(format!(
            "{field} is {size} characters as JSON; EventBridge accepts at most {MAX_PATTERN_CHARS} (2048 unless the account's quota was raised)"
        ));
    }
    object(field, pattern)
}

fn object(path: &str, v: &Value) -> Result<(), String> {
    let Value::Object(map) = v else {
        return Err(format!(
            "{path} must be a JSON object of fields, got {}",
            kind(v)
        ));
    };
    if map.is_empty() {
        return Err(format!("{path} must not be empty"));
    }
    for (key, value) in map {
        let here = format!("{path}.{key}");
        if key == "$or" {
            or(&here, value)?;
        } else {
            field(&here, value)?;
        }
    }
    Ok(())
}

fn or(path: &str, v: &Value) -> Result<(), String> {
    match v {
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .enumerate()
            .try_for_each(|(i, p)| object(&format!("{path}[{i}]"), p)),
        _ => Err(format!("{path} must be a non-empty array of patterns")),
    }
}

fn field(path: &str, v: &Value) -> Result<(), String> {
    match v {
        Value::Object(_) => object(path, v),
        Value::Array(items) if items.is_empty() => Err(format!("{path} must not be empty")),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, m)| matcher(&format!("{path}[{i}]"), m)),
        other => Err(format!(
            "{path} must be an array of values or operators (e.g. [{other}]), got {}",
            kind(other)
        )),
    }
}

fn matcher(path: &str, v: &Value) -> Result<(), String> {
    let Value::Object(op) = v else {
        return match v {
            Value::Array(_) => Err(format!("{path}: nested arrays are not allowed")),
            _ => Ok(()),
        };
    };
    let mut entries = op.iter();
    let (Some((name, operand)), None) = (entries.next(), entries.next()) else {
        return Err(format!("{path} must hold exactly one operator"));
    };
    let here = format!("{path}.{name}");
    match name.as_str() {
        "prefix" | "suffix" => string_or_ignore_case(&here, operand),
        "equals-ignore-case" | "wildcard" | "cidr" => string(&here, operand),
        "exists" => match operand {
            Value::Bool(_) => Ok(()),
            _ => Err(format!("{here} must be true or false")),
        },
        "numeric" => numeric(&here, operand),
        "anything-but" => anything_but(&here, operand),
        other => Err(format!(
            "{path}: unknown operator {other:?} (known: prefix, suffix, anything-but, numeric, exists, cidr, equals-ignore-case, wildcard)"
        )),
    }
}

fn string(path: &str, v: &Value) -> Result<(), String> {
    match v {
        Value::String(_) => Ok(()),
        _ => Err(format!("{path} must be a string, got {}", kind(v))),
    }
}

fn string_or_ignore_case(path: &str, v: &Value) -> Result<(), String> {
    match v {
        Value::String(_) => Ok(()),
        Value::Object(m) => single(path, m, &["equals-ignore-case"], string),
        _ => Err(format!(
            "{path} must be a string or {{\"equals-ignore-case\": \"...\"}}"
        )),
    }
}

/// An object with exactly one key out of `allowed`, whose value passes `check`.
fn single(
    path: &str,
    m: &Map<String, Value>,
    allowed: &[&str],
    check: impl Fn(&str, &Value) -> Result<(), String>,
) -> Result<(), String> {
    let mut entries = m.iter();
    match (entries.next(), entries.next()) {
        (Some((k, x)), None) if allowed.contains(&k.as_str()) => check(&format!("{path}.{k}"), x),
        _ => Err(format!(
            "{path} must hold exactly one of: {}",
            allowed.join(", ")
        )),
    }
}

fn numeric(path: &str, v: &Value) -> Result<(), String> {
    let Value::Array(items) = v else {
        return Err(format!(
            "{path} must be an array of operator/number pairs, e.g. [\">\", 0, \"<=\", 5]"
        ));
    };
    if items.is_empty() || items.len() % 2 != 0 || items.len() > 4 {
        return Err(format!(
            "{path} must hold one or two operator/number pairs, e.g. [\">\", 0, \"<=\", 5]"
        ));
    }
    for (i, pair) in items.chunks(2).enumerate() {
        let op_ok = pair[0].as_str().is_some_and(|o| NUMERIC_OPS.contains(&o));
        if !op_ok {
            return Err(format!(
                "{path}[{}] must be one of {}",
                i * 2,
                NUMERIC_OPS.join(" ")
            ));
        }
        if !pair[1].is_number() {
            return Err(format!("{path}[{}] must be a number", i * 2 + 1));
        }
    }
    Ok(())
}

fn anything_but(path: &str, v: &Value) -> Result<(), String> {
    match v {
        Value::String(_) | Value::Number(_) => Ok(()),
        Value::Array(items) if !items.is_empty() => {
            let all_strings = items.iter().all(Value::is_string);
            let all_numbers = items.iter().all(Value::is_number);
            if all_strings || all_numbers {
                Ok(())
            } else {
                Err(format!(
                    "{path} must be an array of strings or an array of numbers"
                ))
            }
        }
        Value::Object(m) => single(
            path,
            m,
            &["prefix", "suffix", "equals-ignore-case", "wildcard"],
            |p, x| match x {
                Value::String(_) => Ok(()),
                Value::Array(a) if !a.is_empty() && a.iter().all(Value::is_string) => Ok(()),
                _ => Err(format!("{p} must be a string or an array of strings")),
            },
        ),
        _ => Err(format!(
            "{path} must be a string, a number, an array of them, or an operator object"
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const F: &str = "spec.consumers[0].eventPattern";

    fn err(p: Value) -> String {
        validate(F, &p).expect_err("pattern should be refused")
    }

    #[test]
    fn patterns_eventbridge_accepts_pass() {
        for p in [
            json!({"source": ["myapp.users"]}),
            json!({"detail-type": ["UserCreated", "UserDeleted"], "detail": {"tier": [null, true, 3]}}),
            json!({"detail": {"name": [{"prefix": "a"}, {"suffix": {"equals-ignore-case": ".PNG"}}]}}),
            json!({"detail": {"n": [{"numeric": [">", 0, "<=", 5]}], "x": [{"exists": false}]}}),
            json!({"detail": {"ip": [{"cidr": "10.0.0.0/24"}], "k": [{"wildcard": "a*b"}]}}),
            json!({"detail": {"s": [{"anything-but": ["a", "b"]}, {"anything-but": {"prefix": "x"}}]}}),
            json!({"detail": {"s": [{"anything-but": 3}, {"equals-ignore-case": "Ab"}]}}),
            json!({"$or": [{"source": ["a"]}, {"detail": {"x": [1]}}]}),
        ] {
            assert_eq!(validate(F, &p), Ok(()), "{p}");
        }
    }

    #[test]
    fn the_examples_patterns_pass() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        for file in ["user-created.yaml", "user-lifecycle.yaml"] {
            let docs = crate::manifest::read_path(&dir.join(file).to_string_lossy())
                .expect("example parses");
            for d in docs {
                for (i, c) in d.pipeline.spec.consumers.iter().enumerate() {
                    let field = format!("spec.consumers[{i}].eventPattern");
                    assert_eq!(validate(&field, &c.event_pattern), Ok(()), "{file}");
                }
            }
        }
    }

    #[test]
    fn a_string_leaf_is_refused_with_its_path() {
        let e = err(json!({"source": "x"}));
        assert!(e.contains("spec.consumers[0].eventPattern.source"), "{e}");
        assert!(e.contains("array"), "{e}");
        let e = err(json!({"detail": {"k": 1}}));
        assert!(e.contains("eventPattern.detail.k"), "{e}");
    }

    #[test]
    fn empty_and_non_object_patterns_are_refused() {
        assert!(err(json!({})).contains("must not be empty"));
        assert!(err(json!(["a"])).contains("must be a JSON object"));
        assert!(err(json!({"source": []})).contains("eventPattern.source must not be empty"));
        assert!(err(json!({"detail": {}})).contains("eventPattern.detail must not be empty"));
    }

    #[test]
    fn unknown_or_malformed_operators_are_refused() {
        let e = err(json!({"source": [{"prefx": "a"}]}));
        assert!(
            e.contains("eventPattern.source[0]") && e.contains("prefx"),
            "{e}"
        );
        let e = err(json!({"d": [{"prefix": "a", "suffix": "b"}]}));
        assert!(e.contains("exactly one operator"), "{e}");
        assert!(err(json!({"d": [{"numeric": [">", "x"]}]})).contains("numeric[1]"));
        assert!(err(json!({"d": [{"numeric": ["!", 1]}]})).contains("numeric[0]"));
        assert!(err(json!({"d": [{"numeric": [">", 1, "<"]}]})).contains("pairs"));
        assert!(err(json!({"d": [{"exists": "yes"}]})).contains("true or false"));
        assert!(err(json!({"d": [{"anything-but": ["a", 1]}]})).contains("anything-but"));
        assert!(err(json!({"d": [{"anything-but": {"exists": true}}]})).contains("anything-but"));
        assert!(err(json!({"d": [["a"]]})).contains("nested arrays"));
        assert!(err(json!({"$or": {"a": ["b"]}})).contains("$or"));
        assert!(err(json!({"$or": [{"a": "b"}]})).contains("$or[0].a"));
    }

    #[test]
    fn a_pattern_over_the_size_limit_is_refused() {
        let values: Vec<String> = (0..500).map(|i| format!("value-{i}")).collect();
        let e = err(json!({"source": values}));
        assert!(e.contains("4096"), "{e}");
    }
}
