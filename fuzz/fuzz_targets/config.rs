//! Config loading from TOML text plus `AUTHMUX_*` environment variables,
//! given as data: the input is the TOML text, then a NUL byte, then one
//! `NAME=value` variable per line.
//!
//! Every client that loads has its provider's keys read by that provider's
//! config type; one whose secret is inline and without DPoP is built too
//! (no I/O: a file or variable secret and a DPoP key are not resolved).
//!
//! A problem never shows a secret's value: when [`SECRET`] is given only as
//! a `client_secret` (`client_secret = "…"` in the text, or a
//! `…CLIENT_SECRET` variable), no problem may contain it.

#![no_main]

use std::sync::OnceLock;

use authmux::Config;
use authmux_core::EndpointBuilder as _;
use authmux_core::wire::HttpClient;
use libfuzzer_sys::fuzz_target;

/// A secret that the text or a variable may set; it must never be shown.
const SECRET: &str = "c0nfig-s3cret~value";

fuzz_target!(|data: &[u8]| {
    let (text, vars) = match data.iter().position(|&byte| byte == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let vars: Vec<(String, String)> = String::from_utf8_lossy(vars)
        .lines()
        .filter_map(|line| {
            let (name, value) = line.split_once('=')?;
            Some((name.to_owned(), value.to_owned()))
        })
        .collect();
    let check = only_as_client_secret(text, &vars);
    let check_problems = |problems: &str| {
        assert!(
            !check || !problems.contains(SECRET),
            "a configuration problem showed a secret: {problems}"
        );
    };
    match Config::from_toml_and_env(text, vars.iter().cloned()) {
        Ok(config) => {
            let _ = config.defaults.cache_policy();
            for client in config.clients.values() {
                let _ = (client.name(), client.settings.cache_policy());
                if let Err(problems) = build(client) {
                    check_problems(&problems);
                }
            }
        }
        Err(error) => check_problems(&error.problems().join("\n")),
    }
});

/// Whether [`SECRET`] appears only as a client secret's value: in the text
/// as `client_secret = "…"` (and the text has no literal strings, which
/// could hold that line as the value of another key), and in the variables
/// as the whole value of a `…CLIENT_SECRET` one.
fn only_as_client_secret(text: &str, vars: &[(String, String)]) -> bool {
    let in_text = text.matches(SECRET).count();
    let as_secret = text
        .matches(&format!("client_secret = \"{SECRET}\""))
        .count();
    let vars_ok = vars.iter().all(|(name, value)| {
        !name.contains(SECRET)
            && (!value.contains(SECRET)
                || (value == SECRET && name.to_ascii_uppercase().ends_with("CLIENT_SECRET")))
    });
    in_text == as_secret && !text.contains('\'') && vars_ok
}

fn http() -> HttpClient {
    static HTTP: OnceLock<HttpClient> = OnceLock::new();
    HTTP.get_or_init(|| HttpClient::new().expect("an HTTP client"))
        .clone()
}

/// Reads the client's keys with its provider's config type and, when that
/// needs no file, variable or key generation, builds the provider.
fn build(client: &authmux::ClientConfig) -> Result<(), String> {
    use authmux::ClientSecret;
    let problems = |error: authmux::ConfigError| error.problems().join("\n");
    let built = |error: authmux::Error| error.to_string();
    let offline = |secret: &ClientSecret| matches!(secret, ClientSecret::Inline(_));
    // A secret or assertion key read from a variable or file is left out.
    let all_offline = |secrets: [&Option<ClientSecret>; 2]| {
        secrets
            .iter()
            .all(|secret| secret.as_ref().is_none_or(offline))
    };
    match client.provider.as_str() {
        "mention-me" => {
            let config: authmux::mention_me::MentionMeConfig =
                client.provider_config().map_err(problems)?;
            if offline(&config.client_secret) {
                config
                    .builder()
                    .http_client(http())
                    .build()
                    .map_err(built)?;
            }
        }
        "360learning" => {
            let config: authmux::learning360::ThreeSixtyLearningConfig =
                client.provider_config().map_err(problems)?;
            if offline(&config.client_secret) {
                config
                    .builder()
                    .http_client(http())
                    .build()
                    .map_err(built)?;
            }
        }
        "auth0" => {
            let config: authmux::auth0::Auth0Config = client.provider_config().map_err(problems)?;
            if all_offline([&config.auth.client_secret, &config.auth.client_assertion_key])
                && !config.dpop.is_enabled()
            {
                config
                    .builder()
                    .http_client(http())
                    .build()
                    .map_err(built)?;
            }
        }
        "oauth2" => {
            let config: authmux::oauth2::OAuth2Config =
                client.provider_config().map_err(problems)?;
            if all_offline([&config.auth.client_secret, &config.auth.client_assertion_key])
                && !config.dpop.is_enabled()
            {
                config
                    .builder()
                    .http_client(http())
                    .build()
                    .map_err(built)?;
            }
        }
        _ => {}
    }
    Ok(())
}
