//! The `settings!` macro: each setting is written once — name, type,
//! default, allowed range, documentation, section — and the macro makes the
//! flat [`Settings`](super::Settings) struct (what the layers are read
//! into), its `Default`, the range checks and the [`SETTINGS`](super::SETTINGS)
//! table that `config/default.toml` and the settings table of
//! docs/configuration.md are generated from.

/// What the documentation knows of one setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettingDoc {
    /// The section it belongs to (`server`, `downlink`, …).
    pub section: &'static str,
    /// Its name: the TOML key; `BRIDGE_<NAME>` in the environment.
    pub name: &'static str,
    /// What it does (the field's doc comment).
    pub doc: &'static str,
    /// The inclusive range of a numeric setting.
    pub range: Option<(u64, u64)>,
    /// For a setting unset by default: an example value, as TOML.
    pub example: Option<&'static str>,
}

impl SettingDoc {
    /// Its environment variable.
    pub fn env_name(&self) -> String {
        format!("{}{}", super::ENV_PREFIX, self.name.to_ascii_uppercase())
    }

    /// Its range as text (`1..=43200`), empty when it has none.
    pub fn range_text(&self) -> String {
        self.range
            .map(|(min, max)| format!("{min}..={max}"))
            .unwrap_or_default()
    }
}

/// Records a problem when `value` is outside `min..=max`.
pub(crate) fn check_range(problems: &mut Vec<String>, name: &str, value: u64, min: u64, max: u64) {
    if !(min..=max).contains(&value) {
        problems.push(format!("{name}: {value} is outside {min}..={max}"));
    }
}

/// Declares every setting; see the module documentation.
macro_rules! settings {
    ($(
        $section:literal {
            $(
                $(#[doc = $doc:literal])+
                $(#[serde($($serde:tt)*)])?
                $name:ident : $ty:ty = $default:expr
                $(, range $min:literal ..= $max:literal)?
                $(, example $example:literal)?
                ;
            )*
        }
    )*) => {
        /// Every setting of the bridge, flat, as operators write them: the
        /// TOML key `x` is `BRIDGE_X` in the environment. The layers are
        /// read into this; the code uses the typed [`Config`](super::Config)
        /// made from it.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Settings {
            $($(
                $(#[doc = $doc])+
                $(#[serde($($serde)*)])?
                pub $name: $ty,
            )*)*
        }

        impl Default for Settings {
            fn default() -> Self {
                Self { $($( $name: $default, )*)* }
            }
        }

        /// Every setting's documentation, in the order of `config/default.toml`.
        pub const SETTINGS: &[SettingDoc] = &[$($(
            SettingDoc {
                section: $section,
                name: stringify!($name),
                doc: concat!($($doc, "\n"),+),
                range: settings!(@range $($min, $max)?),
                example: settings!(@example $($example)?),
            },
        )*)*];

        impl Settings {
            /// One problem for every numeric setting outside its range.
            pub(crate) fn range_problems(&self) -> Vec<String> {
                #[allow(unused_mut)]
                let mut problems = Vec::new();
                $($($(
                    check_range(
                        &mut problems,
                        stringify!($name),
                        u64::try_from(self.$name).unwrap_or(u64::MAX),
                        $min,
                        $max,
                    );
                )?)*)*
                problems
            }
        }
    };
    (@range) => { None };
    (@range $min:literal, $max:literal) => { Some(($min, $max)) };
    (@example) => { None };
    (@example $example:literal) => { Some($example) };
}

pub(crate) use settings;
