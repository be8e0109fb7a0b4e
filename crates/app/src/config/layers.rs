//! Reading the layers (docs/configuration.md) into the flat [`Settings`]: built-in
//! defaults, `config/default.toml`, `config/<profile>.toml`, `.env` (loaded
//! into the process environment by `main` for `dev`, never over a variable
//! that is already set), environment variables `BRIDGE_<NAME>`, command-line
//! flags — later wins. The environment is passed in rather than read here,
//! so tests never touch the process environment.
//!
//! A `BRIDGE_*` variable that names no setting (and is not one of the few
//! the command line reads itself, [`NOT_SETTINGS`]) is an error naming the
//! closest setting: a mistyped name must not leave its setting at the
//! default unnoticed.

use std::path::PathBuf;

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::{ConfigError, Settings, ENV_PREFIX, SETTINGS};

/// The `BRIDGE_*` variables that are read, but are not settings: the
/// command line's own (`--config-dir`, `--profile`).
pub const NOT_SETTINGS: &[&str] = &["BRIDGE_CONFIG_DIR", "BRIDGE_PROFILE"];

/// Where the layers come from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Folder holding `default.toml` and `<profile>.toml`.
    pub config_dir: PathBuf,
    /// The profile whose file is layered over `default.toml`.
    pub profile: Option<String>,
    /// The environment (name, value) pairs; only `BRIDGE_*` ones are read.
    pub env: Vec<(String, String)>,
    /// Command-line overrides, as (field, value) pairs.
    pub overrides: Vec<(String, Value)>,
}

impl Settings {
    /// Loads and validates the layers.
    pub fn load(sources: &Sources) -> Result<Self, ConfigError> {
        let unknown = unknown_variables(&sources.env);
        match Self::load_layers(sources) {
            Ok(settings) if unknown.is_empty() => Ok(settings),
            Ok(_) => Err(ConfigError { problems: unknown }),
            Err(mut error) => {
                error.problems.splice(0..0, unknown);
                Err(error)
            }
        }
    }

    fn load_layers(sources: &Sources) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()))
            .merge(Toml::file(sources.config_dir.join("default.toml")));
        if let Some(profile) = &sources.profile {
            let file = sources.config_dir.join(format!("{profile}.toml"));
            // A misspelt profile must not silently fall back to the defaults.
            if !file.is_file() {
                return Err(ConfigError {
                    problems: vec![format!("profile: no file {}", file.display())],
                });
            }
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(EnvVars::new(&sources.env));
        for (field, value) in &sources.overrides {
            figment = figment.merge(Serialized::global(field, value.clone()));
        }
        let settings = extract_reporting_every_field(&figment)?;
        settings.validate()?;
        Ok(settings)
    }
}

/// Extracts the settings. Deserialization stops at the first field it cannot
/// read, so when it fails each field is tried alone over the defaults: every
/// unreadable field is reported (naming the layer its value came from),
/// together with what [`Settings::validate`] finds wrong with the others.
fn extract_reporting_every_field(figment: &Figment) -> Result<Settings, ConfigError> {
    let first = match figment.extract::<Settings>() {
        Ok(settings) => return Ok(settings),
        Err(e) => e,
    };
    let all_of = |e: figment::Error| ConfigError {
        problems: e.into_iter().map(describe_figment_error).collect(),
    };
    // Fails only when a layer cannot be read at all (a TOML syntax error).
    let merged: Dict = match figment.extract() {
        Ok(merged) => merged,
        Err(_) => return Err(all_of(first)),
    };
    let defaults = || Figment::from(Serialized::defaults(Settings::default()));
    let mut readable = defaults();
    let mut problems = Vec::new();
    let mut unreadable = std::collections::BTreeSet::new();
    for (field, value) in merged {
        let alone = defaults().merge(Serialized::global(&field, value.clone()));
        match alone.extract::<Settings>() {
            Ok(_) => readable = readable.merge(Serialized::global(&field, value)),
            Err(errors) => {
                for mut error in errors {
                    // Name the layer the value came from, not the probe.
                    error.metadata = figment.find_metadata(&field).cloned();
                    error.profile = Some(Profile::Default);
                    if error.path.is_empty() {
                        error.path = vec![field.clone()];
                    }
                    problems.push(describe_figment_error(error));
                }
                unreadable.insert(field);
            }
        }
    }
    if problems.is_empty() {
        return Err(all_of(first));
    }
    match readable.extract::<Settings>() {
        Err(more) => problems.extend(more.into_iter().map(describe_figment_error)),
        Ok(settings) => {
            if let Err(more) = settings.validate() {
                // A field already reported unreadable holds its default here:
                // what validation says about it would only confuse.
                problems.extend(more.problems.into_iter().filter(|problem| {
                    let field = problem.split(':').next().unwrap_or_default();
                    !unreadable.contains(field)
                }));
            }
        }
    }
    Err(ConfigError { problems })
}

fn describe_figment_error(error: figment::Error) -> String {
    let field = if error.path.is_empty() {
        "configuration".to_owned()
    } else {
        error.path.join(".")
    };
    // "from environment variable BRIDGE_PORT", "from TOML file config/x.toml".
    let source = error
        .metadata
        .as_ref()
        .map(|m| match &m.source {
            Some(source) => format!(" (from {} {source})", m.name),
            None if !error.path.is_empty() => {
                let profile = error.profile.clone().unwrap_or_default();
                format!(
                    " (from {} {})",
                    m.name,
                    m.interpolate(&profile, &error.path)
                )
            }
            None => format!(" (from {})", m.name),
        })
        .unwrap_or_default();
    format!("{field}: {}{source}", error.kind)
}

/// One problem for each `BRIDGE_*` variable of `env` that is neither a
/// setting nor in [`NOT_SETTINGS`], naming the closest known name.
fn unknown_variables(env: &[(String, String)]) -> Vec<String> {
    let known: Vec<String> = SETTINGS
        .iter()
        .map(|s| s.env_name())
        .chain(NOT_SETTINGS.iter().map(|&n| n.to_owned()))
        .collect();
    let mut unknown: Vec<&str> = env
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|name| name.starts_with(ENV_PREFIX))
        // Settings are read whatever the case after the prefix.
        .filter(|name| !known.iter().any(|k| k.eq_ignore_ascii_case(name)))
        .collect();
    unknown.sort_unstable();
    unknown.dedup();
    unknown
        .into_iter()
        .map(|name| match closest(name, &known) {
            Some(near) => {
                format!("unknown environment variable {name} (did you mean {near}?)")
            }
            None => format!(
                "unknown environment variable {name} (no setting has a name like it; \
                 `wsbridge config` lists them)"
            ),
        })
        .collect()
}

/// The name of `known` nearest to `name` by edit distance, when it is near
/// enough to be a typo of it (at most a third of its length, and 3, apart).
fn closest<'a>(name: &str, known: &'a [String]) -> Option<&'a str> {
    let name = name.to_ascii_uppercase();
    let bound = name
        .len()
        .saturating_sub(ENV_PREFIX.len())
        .div_ceil(3)
        .min(3);
    known
        .iter()
        .map(|k| (edit_distance(&name, k), k))
        .filter(|(distance, _)| *distance <= bound)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k.as_str())
}

/// Levenshtein distance (insertions, deletions, substitutions) of two ASCII
/// names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.as_bytes().iter().enumerate() {
        let mut current = Vec::with_capacity(b.len() + 1);
        current.push(i + 1);
        for (j, &cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// The `BRIDGE_*` variables of a given environment, as a figment provider.
struct EnvVars {
    dict: Dict,
}

impl EnvVars {
    fn new(env: &[(String, String)]) -> Self {
        // Only variables naming a setting are read (the others are refused
        // by `unknown_variables`, or are the command line's own).
        // A value is parsed as a number or boolean only where the setting is
        // one, so `BRIDGE_HOST=1234` stays the string it was meant to be.
        let defaults = match serde_json::to_value(Settings::default()) {
            Ok(serde_json::Value::Object(fields)) => fields,
            _ => serde_json::Map::new(),
        };
        let dict = env
            .iter()
            .filter_map(|(name, value)| {
                let field = name.strip_prefix(ENV_PREFIX)?.to_ascii_lowercase();
                let value = match defaults.get(&field)? {
                    serde_json::Value::Number(_) | serde_json::Value::Bool(_) => {
                        value.parse().unwrap_or_else(|_| Value::from(value.clone()))
                    }
                    _ => Value::from(value.clone()),
                };
                Some((field, value))
            })
            .collect();
        Self { dict }
    }
}

impl Provider for EnvVars {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variable")
            .interpolater(|_, path| format!("{ENV_PREFIX}{}", path.join("_").to_uppercase()))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_insertions_deletions_and_substitutions() {
        assert_eq!(edit_distance("ACK", "ACK"), 0);
        assert_eq!(edit_distance("TIMOUT", "TIMEOUT"), 1);
        assert_eq!(edit_distance("TIMEOUT", "TIMOUT"), 1);
        assert_eq!(edit_distance("PORT", "PART"), 1);
        assert_eq!(edit_distance("", "ABC"), 3);
    }

    #[test]
    fn a_typo_is_matched_to_the_nearest_setting_and_nonsense_to_none() {
        let known: Vec<String> = SETTINGS.iter().map(|s| s.env_name()).collect();
        assert_eq!(
            closest("BRIDGE_ACK_TIMOUT_SECS", &known),
            Some("BRIDGE_ACK_TIMEOUT_SECS")
        );
        assert_eq!(closest("BRIDGE_POLERS", &known), Some("BRIDGE_POLLERS"));
        assert_eq!(closest("BRIDGE_ZZZZZZZZZZZZ", &known), None);
    }
}
