//! SNS subscription filter policies: the common operators, on message
//! attributes (the default scope) or on the message body.
//!
//! Supported: exact strings and numbers, `prefix`, `suffix`,
//! `equals-ignore-case`, `anything-but` (a value, a list, or a `prefix`),
//! `exists`, and `numeric` comparisons; nested keys in the body scope. Keys
//! are ANDed, the conditions of one key ORed, as on AWS.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};
use crate::model::MessageAttribute;

/// A validated filter policy.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterPolicy {
    policy: Map<String, Value>,
}

impl FilterPolicy {
    /// Parses and validates a policy (`FilterPolicy` subscription attribute).
    pub fn parse(text: &str) -> ApiResult<Self> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| ApiError::invalid(format!("Invalid parameter: FilterPolicy: {e}")))?;
        let Value::Object(policy) = value else {
            return Err(ApiError::invalid(
                "Invalid parameter: FilterPolicy: the policy must be a JSON object",
            ));
        };
        validate(&policy)?;
        Ok(Self { policy })
    }

    /// Whether a message with these attributes passes (attribute scope).
    pub fn matches_attributes(&self, attributes: &BTreeMap<String, MessageAttribute>) -> bool {
        self.policy.iter().all(|(key, conditions)| {
            let values = attributes.get(key).map(attribute_values);
            any_condition(conditions, values.as_deref())
        })
    }

    /// Whether a message with this body passes (body scope); a body that is
    /// not a JSON object never does.
    pub fn matches_body(&self, body: &str) -> bool {
        match serde_json::from_str::<Value>(body) {
            Ok(Value::Object(object)) => matches_object(&self.policy, &object),
            _ => false,
        }
    }
}

fn validate(policy: &Map<String, Value>) -> ApiResult<()> {
    for (key, rule) in policy {
        match rule {
            Value::Array(conditions) if !conditions.is_empty() => {
                for condition in conditions {
                    validate_condition(key, condition)?;
                }
            }
            Value::Object(nested) => validate(nested)?,
            _ => {
                return Err(ApiError::invalid(format!(
                "Invalid parameter: FilterPolicy: \"{key}\" must be an object or a non-empty array"
            )))
            }
        }
    }
    Ok(())
}

fn validate_condition(key: &str, condition: &Value) -> ApiResult<()> {
    let bad = |what: &str| {
        Err(ApiError::invalid(format!(
            "Invalid parameter: FilterPolicy: \"{key}\": {what}"
        )))
    };
    match condition {
        Value::String(_) | Value::Number(_) | Value::Null => Ok(()),
        Value::Object(operator) if operator.len() == 1 => {
            let (name, operand) = operator
                .iter()
                .next()
                .map_or(("", &Value::Null), |(k, v)| (k.as_str(), v));
            match (name, operand) {
                ("prefix" | "suffix" | "equals-ignore-case", Value::String(_)) => Ok(()),
                ("exists", Value::Bool(_)) => Ok(()),
                ("anything-but", Value::String(_) | Value::Number(_)) => Ok(()),
                ("anything-but", Value::Array(items)) if !items.is_empty() => Ok(()),
                ("anything-but", Value::Object(inner))
                    if inner.len() == 1
                        && matches!(inner.get("prefix"), Some(Value::String(_))) =>
                {
                    Ok(())
                }
                ("numeric", Value::Array(items)) if numeric_pairs(items).is_some() => Ok(()),
                _ => bad(&format!("unsupported or invalid operator {name:?}")),
            }
        }
        _ => bad("a condition is a string, a number or an operator object"),
    }
}

/// The values an attribute offers to a policy: one, or each element of a
/// `String.Array`.
fn attribute_values(attribute: &MessageAttribute) -> Vec<Value> {
    let text = attribute.string_value.clone().unwrap_or_default();
    if attribute.data_type.starts_with("String.Array") {
        if let Ok(Value::Array(items)) = serde_json::from_str::<Value>(&text) {
            return items;
        }
    }
    if attribute.data_type.starts_with("Number") {
        if let Ok(n) = text.trim().parse::<f64>() {
            if let Some(n) = serde_json::Number::from_f64(n) {
                return vec![Value::Number(n)];
            }
        }
    }
    vec![Value::String(text)]
}

fn matches_object(policy: &Map<String, Value>, object: &Map<String, Value>) -> bool {
    policy.iter().all(|(key, rule)| match rule {
        Value::Object(nested) => match object.get(key) {
            Some(Value::Object(inner)) => matches_object(nested, inner),
            _ => false,
        },
        conditions => {
            let values = object.get(key).map(|value| match value {
                Value::Array(items) => items.clone(),
                other => vec![other.clone()],
            });
            any_condition(conditions, values.as_deref())
        }
    })
}

/// Whether any condition of `conditions` holds for `values` (`None`: the key is absent).
fn any_condition(conditions: &Value, values: Option<&[Value]>) -> bool {
    let Value::Array(conditions) = conditions else {
        return false;
    };
    conditions.iter().any(|condition| match condition {
        Value::Object(operator) => operator_holds(operator, values),
        literal => values.is_some_and(|vs| vs.iter().any(|v| equal(literal, v))),
    })
}

fn operator_holds(operator: &Map<String, Value>, values: Option<&[Value]>) -> bool {
    let Some((name, operand)) = operator.iter().next() else {
        return false;
    };
    if name == "exists" {
        return operand.as_bool() == Some(values.is_some());
    }
    let Some(values) = values else {
        return false;
    };
    let text = |v: &Value| v.as_str().map(str::to_owned);
    match name.as_str() {
        "prefix" => values.iter().any(|v| {
            text(v)
                .zip(operand.as_str())
                .is_some_and(|(t, p)| t.starts_with(p))
        }),
        "suffix" => values.iter().any(|v| {
            text(v)
                .zip(operand.as_str())
                .is_some_and(|(t, s)| t.ends_with(s))
        }),
        "equals-ignore-case" => values.iter().any(|v| {
            text(v)
                .zip(operand.as_str())
                .is_some_and(|(t, o)| t.eq_ignore_ascii_case(o))
        }),
        "anything-but" => values.iter().all(|v| match operand {
            Value::Array(excluded) => !excluded.iter().any(|e| equal(e, v)),
            Value::Object(inner) => match (inner.get("prefix").and_then(Value::as_str), text(v)) {
                (Some(prefix), Some(t)) => !t.starts_with(prefix),
                _ => true,
            },
            single => !equal(single, v),
        }),
        "numeric" => {
            let Value::Array(items) = operand else {
                return false;
            };
            let Some(pairs) = numeric_pairs(items) else {
                return false;
            };
            values.iter().any(|v| {
                v.as_f64().is_some_and(|n| {
                    pairs.iter().all(|(op, bound)| match *op {
                        "=" => n == *bound,
                        "<" => n < *bound,
                        "<=" => n <= *bound,
                        ">" => n > *bound,
                        ">=" => n >= *bound,
                        _ => false,
                    })
                })
            })
        }
        _ => false,
    }
}

/// `["<", 10, ">=", 2]` as (operator, bound) pairs.
fn numeric_pairs(items: &[Value]) -> Option<Vec<(&str, f64)>> {
    if items.is_empty() || !items.len().is_multiple_of(2) {
        return None;
    }
    items
        .chunks_exact(2)
        .map(|pair| {
            let op = pair[0].as_str()?;
            matches!(op, "=" | "<" | "<=" | ">" | ">=").then_some(())?;
            Some((op, pair[1].as_f64()?))
        })
        .collect()
}

fn equal(condition: &Value, value: &Value) -> bool {
    match (condition, value) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Number(a), Value::String(b)) => b.trim().parse::<f64>().ok() == a.as_f64(),
        (a, b) => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str, &str)]) -> BTreeMap<String, MessageAttribute> {
        pairs
            .iter()
            .map(|(name, kind, value)| {
                (
                    (*name).to_owned(),
                    MessageAttribute {
                        data_type: (*kind).to_owned(),
                        string_value: Some((*value).to_owned()),
                        binary_value: None,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn attribute_policies() {
        let policy = FilterPolicy::parse(
            r#"{"shard": ["a", {"prefix": "b-"}], "n": [{"numeric": [">", 1, "<=", 5]}]}"#,
        )
        .unwrap();
        assert!(
            policy.matches_attributes(&attrs(&[("shard", "String", "a"), ("n", "Number", "5")]))
        );
        assert!(
            policy.matches_attributes(&attrs(&[("shard", "String", "b-7"), ("n", "Number", "2")]))
        );
        assert!(
            !policy.matches_attributes(&attrs(&[("shard", "String", "c"), ("n", "Number", "2")]))
        );
        assert!(
            !policy.matches_attributes(&attrs(&[("shard", "String", "a"), ("n", "Number", "6")]))
        );
        assert!(!policy.matches_attributes(&attrs(&[("shard", "String", "a")])));
    }

    #[test]
    fn exists_anything_but_and_arrays() {
        let absent = FilterPolicy::parse(r#"{"x": [{"exists": false}]}"#).unwrap();
        assert!(absent.matches_attributes(&attrs(&[])));
        assert!(!absent.matches_attributes(&attrs(&[("x", "String", "1")])));
        let but = FilterPolicy::parse(r#"{"x": [{"anything-but": ["a", "b"]}]}"#).unwrap();
        assert!(but.matches_attributes(&attrs(&[("x", "String", "c")])));
        assert!(!but.matches_attributes(&attrs(&[("x", "String", "a")])));
        let array = FilterPolicy::parse(r#"{"x": ["b"]}"#).unwrap();
        assert!(array.matches_attributes(&attrs(&[("x", "String.Array", r#"["a","b"]"#)])));
    }

    #[test]
    fn body_policies_with_nested_keys() {
        let policy =
            FilterPolicy::parse(r#"{"client_id": [{"prefix": "eu-"}], "data": {"kind": ["x"]}}"#)
                .unwrap();
        assert!(policy.matches_body(r#"{"client_id":"eu-1","data":{"kind":"x"}}"#));
        assert!(!policy.matches_body(r#"{"client_id":"us-1","data":{"kind":"x"}}"#));
        assert!(!policy.matches_body(r#"{"client_id":"eu-1"}"#));
        assert!(!policy.matches_body("not json"));
    }

    #[test]
    fn invalid_policies_are_refused() {
        for bad in [
            "[]",
            "nope",
            r#"{"a": "b"}"#,
            r#"{"a": []}"#,
            r#"{"a": [{"regex": "x"}]}"#,
        ] {
            assert!(FilterPolicy::parse(bad).is_err(), "{bad}");
        }
    }
}
