//! Reading the layers (SPEC §7) into the flat [`Settings`]: built-in
//! defaults, `config/default.toml`, `config/<profile>.toml`, `.env` (loaded
//! into the process environment by `main` for `dev`, never over a variable
//! that is already set), environment variables `BRIDGE_<NAME>`, command-line
//! flags — later wins. The environment is passed in rather than read here,
//! so tests never touch the process environment.

use std::path::PathBuf;

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::{ConfigError, Settings, ENV_PREFIX};

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

/// The `BRIDGE_*` variables of a given environment, as a figment provider.
struct EnvVars {
    dict: Dict,
}

impl EnvVars {
    fn new(env: &[(String, String)]) -> Self {
        // Only variables naming a setting are read: the environment also holds
        // `BRIDGE_PROFILE` and variables of settings other versions know.
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
