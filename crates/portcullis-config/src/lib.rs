//! Portcullis configuration: the TOML model, its defaults, and validation whose errors name the
//! file, line, column and key.
//!
//! ```
//! let text = r#"
//! [server]
//! listen = "127.0.0.1:0"
//!
//! [[upstreams]]
//! name = "api"
//! targets = [{ url = "http://127.0.0.1:3000" }]
//!
//! [[routes]]
//! name = "all"
//! upstream = "api"
//! "#;
//! let config = portcullis_config::parse(text, "inline.toml".as_ref()).unwrap();
//! assert_eq!(config.routes[0].upstream.get_ref(), "api");
//! ```
//!
//! Semantic errors (a route naming an unknown upstream, a bad CIDR, conflicting keys) are all
//! collected, so `portcullis check` shows every one at once; a TOML syntax or type error stops
//! at the first, as the parser does.

mod diagnostics;
mod model;
mod rate_limit;
mod security;
mod units;
mod validate;
mod values;
mod versioning;

use std::path::Path;

pub use diagnostics::{ConfigError, ConfigErrors};
pub use model::*;
pub use rate_limit::*;
pub use security::*;
pub use toml::Spanned;
pub use units::{ByteSize, Duration};
pub use values::*;
pub use versioning::*;

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::single(ConfigError::file_only(
            path,
            format!("cannot read config file: {e}"),
        ))
    })?;
    parse(&text, path)
}

/// Parses and validates config `text`; `origin` names the file in errors and anchors relative
/// paths (TLS certificates) at its directory.
pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigErrors> {
    let mut config: Config = toml::from_str(text)
        .map_err(|e| ConfigErrors::single(diagnostics::from_toml_error(&e, text, origin)))?;
    validate::validate(&mut config, text, origin)?;
    Ok(config)
}

/// The errors `text` (as file `t.toml`) gives, as printed; empty when it is valid. For the
/// crate's tests.
#[cfg(test)]
pub(crate) fn test_errors(text: &str) -> String {
    match parse(text, "t.toml".as_ref()) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}
