//! `wsbridge config`: the effective settings after every layer, as TOML
//! (a valid `config/<profile>.toml`) or JSON, with secrets redacted.
//!
//! Secret settings (`jwt_secret`) serialize as `[redacted]` by their type;
//! a password in any URL-valued setting (`scheme://user:password@host`) is
//! redacted here too.

use serde_json::Value;

use crate::config::docs::toml_value;
use crate::config::Settings;

/// What secrets are replaced with.
pub const REDACTED: &str = "[redacted]";

/// How `wsbridge config` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ShowFormat {
    /// `key = value` lines; unset settings as comments.
    Toml,
    /// One JSON object; unset settings are `null`.
    Json,
}

/// The settings in `format`, secrets redacted.
pub fn render(settings: &Settings, format: ShowFormat) -> String {
    let fields = match serde_json::to_value(settings) {
        Ok(Value::Object(fields)) => fields,
        // Settings is a struct of plain fields: always an object.
        _ => serde_json::Map::new(),
    };
    let fields: serde_json::Map<String, Value> = fields
        .into_iter()
        .map(|(name, value)| (name, redact(value)))
        .collect();
    match format {
        ShowFormat::Json => {
            let mut out = serde_json::to_string_pretty(&Value::Object(fields))
                .unwrap_or_else(|_| "{}".to_owned());
            out.push('\n');
            out
        }
        ShowFormat::Toml => {
            let mut out = String::from(
                "# wsbridge: the effective configuration (defaults, config files,\n\
                 # environment, flags), secrets redacted.\n",
            );
            for (name, value) in fields {
                match value {
                    Value::Null => out.push_str(&format!("# {name} = (unset)\n")),
                    value => out.push_str(&format!("{name} = {}\n", toml_value(&value))),
                }
            }
            out
        }
    }
}

fn redact(value: Value) -> Value {
    match value {
        Value::String(text) => Value::String(redact_url_password(&text)),
        Value::Array(items) => Value::Array(items.into_iter().map(redact).collect()),
        other => other,
    }
}

/// `scheme://user:password@host…` → `scheme://user:[redacted]@host…`.
fn redact_url_password(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return text.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return text.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:{REDACTED}@{host}{tail}"),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn secrets_and_url_passwords_are_redacted() {
        let settings = Settings {
            jwt_secret: Some(Secret::new("a-very-secret-value-of-32-bytes-or-more")),
            command_queue_url: Some("https://user:hunter2@sqs.example/1/q".into()),
            ..Settings::default()
        };
        for format in [ShowFormat::Toml, ShowFormat::Json] {
            let out = render(&settings, format);
            assert!(!out.contains("a-very-secret"), "{out}");
            assert!(!out.contains("hunter2"), "{out}");
            assert!(out.contains(REDACTED), "{out}");
            assert!(
                out.contains("https://user:[redacted]@sqs.example/1/q"),
                "{out}"
            );
        }
        assert_eq!(
            redact_url_password("amqp://guest@host:5672/%2f"),
            "amqp://guest@host:5672/%2f"
        );
        assert_eq!(redact_url_password("not a url"), "not a url");
        assert_eq!(
            redact_url_password("http://h/path@x:y"),
            "http://h/path@x:y",
            "an @ after the authority is not userinfo"
        );
    }

    #[test]
    fn toml_output_lists_every_setting_and_comments_out_unset_ones() {
        let settings = Settings::default();
        let out = render(&settings, ShowFormat::Toml);
        assert!(out.contains("host = \"127.0.0.1\"\n"), "{out}");
        assert!(out.contains("port = 8000\n"), "{out}");
        assert!(out.contains("allowed_origins = []\n"), "{out}");
        assert!(out.contains("echo_route = false\n"), "{out}");
        assert!(out.contains("# command_queue_url = (unset)\n"), "{out}");
        let fields = match serde_json::to_value(&settings) {
            Ok(Value::Object(fields)) => fields,
            other => panic!("{other:?}"),
        };
        for name in fields.keys() {
            assert!(
                out.lines().any(|l| l.starts_with(&format!("{name} = "))
                    || l.starts_with(&format!("# {name} = "))),
                "{name} missing from:\n{out}"
            );
        }
    }
}
