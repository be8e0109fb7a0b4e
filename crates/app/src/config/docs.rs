//! The documents generated from the settings table: `config/default.toml`
//! (every setting at its default, documented) and the settings table of
//! docs/configuration.md. Tests compare the committed files with these, so
//! neither can drift from the code; `WSBRIDGE_BLESS=1` makes those tests
//! rewrite them.

use serde_json::Value;

use super::{Settings, SETTINGS};

/// Where the generated settings table of docs/configuration.md starts and
/// ends.
pub const README_TABLE_START: &str =
    "<!-- settings table: generated from crates/app/src/config/settings.rs -->";
/// See [`README_TABLE_START`].
pub const README_TABLE_END: &str = "<!-- end of settings table -->";

/// `config/default.toml`: every setting at its built-in default, each with
/// its documentation; a setting unset by default as a commented example.
pub fn default_toml() -> String {
    let defaults = default_values();
    let mut out = String::from(
        "# wsbridge settings at their built-in defaults (generated from\n\
         # crates/app/src/config/settings.rs; a test keeps this file in step).\n\
         # Every setting NAME can also be set with the environment variable\n\
         # BRIDGE_<NAME> (e.g. BRIDGE_PORT=9000), which wins over this file;\n\
         # command-line flags win over both. A profile file config/<profile>.toml\n\
         # (chosen with --profile or BRIDGE_PROFILE) is layered between this file\n\
         # and the environment. Keys are flat; the sections are for reading only.\n",
    );
    let mut section = "";
    for setting in SETTINGS {
        if setting.section != section {
            section = setting.section;
            out.push_str(&format!("\n# ---- {section} ----\n"));
        }
        for line in setting.doc.lines() {
            // A doc comment's lines start with the space after `///`.
            let line = line.strip_prefix(' ').unwrap_or(line);
            out.push_str(&format!(
                "#{}{line}\n",
                if line.is_empty() { "" } else { " " }
            ));
        }
        if let Some(range) = setting.range {
            out.push_str(&format!("# Range: {}..={}.\n", range.0, range.1));
        }
        match defaults.get(setting.name) {
            Some(Value::Null) | None => out.push_str(&format!(
                "# {} = {}\n",
                setting.name,
                setting.example.unwrap_or("\"\"")
            )),
            Some(value) => out.push_str(&format!("{} = {}\n", setting.name, toml_value(value))),
        }
    }
    out
}

/// The settings table of docs/configuration.md (Markdown), between its two
/// marker lines.
pub fn readme_table() -> String {
    let defaults = default_values();
    let mut out = format!(
        "{README_TABLE_START}\n| setting | environment | default | range | what it does |\n|---|---|---|---|---|\n"
    );
    for setting in SETTINGS {
        let default = match defaults.get(setting.name) {
            Some(Value::Null) | None => "unset".to_owned(),
            Some(value) => format!("`{}`", toml_value(value)),
        };
        let doc = setting
            .doc
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .replace('|', "\\|");
        out.push_str(&format!(
            "| `{}` ({}) | `{}` | {default} | {} | {doc} |\n",
            setting.name,
            setting.section,
            setting.env_name(),
            setting.range_text(),
        ));
    }
    out.push_str(README_TABLE_END);
    out.push('\n');
    out
}

/// A JSON scalar or array as a TOML value: JSON strings, numbers, booleans
/// and arrays of them are written the same way in TOML.
pub fn toml_value(value: &Value) -> String {
    match value {
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(toml_value).collect();
            format!("[{}]", items.join(", "))
        }
        other => other.to_string(),
    }
}

fn default_values() -> serde_json::Map<String, Value> {
    match serde_json::to_value(Settings::default()) {
        Ok(Value::Object(fields)) => fields,
        // Settings is a struct of plain fields: always an object.
        _ => serde_json::Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_is_documented_once_with_its_default_or_an_example() {
        let toml = default_toml();
        let defaults = default_values();
        assert_eq!(
            defaults.len(),
            SETTINGS.len(),
            "the table and the struct agree"
        );
        for setting in SETTINGS {
            let set = format!("\n{} = ", setting.name);
            let example = format!("\n# {} = ", setting.name);
            let count = toml.matches(&set).count() + toml.matches(&example).count();
            assert_eq!(count, 1, "{} in:\n{toml}", setting.name);
            assert!(
                !setting.doc.trim().is_empty(),
                "{} has no doc",
                setting.name
            );
        }
    }

    #[test]
    fn the_table_lists_every_setting_with_its_environment_name() {
        let table = readme_table();
        for setting in SETTINGS {
            assert!(
                table.contains(&format!("| `{}` (", setting.name)),
                "{}",
                setting.name
            );
            assert!(table.contains(&format!("`BRIDGE_{}`", setting.name.to_uppercase())));
        }
        assert!(
            table.contains(
                "| `ack_timeout_secs` (downlink) | `BRIDGE_ACK_TIMEOUT_SECS` | `15` | 1..=43200 |"
            ),
            "{table}"
        );
    }
}
