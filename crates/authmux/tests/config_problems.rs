//! How configuration problems are reported: a full key path, what was
//! expected and what was found, every problem at once, never the file's
//! text or a secret; the environment's part; a missing file; and a client
//! whose provider this build lacks.

// figment::Jail fixes the closure's error type; it is only built on failure.
#![allow(clippy::result_large_err)]

use authmux::{Config, ConfigError, Registry};
use figment::Jail;
use figment::providers::{Format, Toml};

const SECRET: &str = "s3cr3t-never-printed";

fn problems(result: Result<impl std::fmt::Debug, ConfigError>) -> Vec<String> {
    result.expect_err("invalid").problems().to_vec()
}

fn assert_has(problems: &[String], expected: &str) {
    assert!(
        problems.iter().any(|problem| problem == expected),
        "{expected:?} not in {problems:#?}"
    );
}

/// A valid client table for `provider`, under `[clients.<name>]`.
fn client(name: &str, provider: &str) -> String {
    let rest = match provider {
        "mention-me" => "environment = \"demo\"",
        "360learning" => "region = \"eu\"",
        "auth0" => "domain = \"tenant.eu.auth0.com\"\naudience = \"https://api.example.com\"",
        "oauth2" => "token_url = \"https://idp.example.com/token\"",
        other => panic!("no example for {other}"),
    };
    format!(
        "[clients.{name}]\nprovider = \"{provider}\"\nclient_id = \"id\"\nclient_secret = \"{SECRET}\"\n{rest}\n"
    )
}

#[test]
fn a_toml_syntax_error_gives_its_line_and_column_never_its_text() {
    let broken = format!(
        "[clients.api]\nprovider = \"mention-me\"\nclient_id = \"id\"\nclient_secret = \"{SECRET}\nenvironment = \"demo\"\n"
    );
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file("authmux.toml", &broken)?;
        let error = Config::load(None).expect_err("broken");
        assert_eq!(error.problems().len(), 1, "{error}");
        let text = error.to_string();
        assert!(
            text.starts_with("authmux.toml: TOML syntax error at line 4, column "),
            "{text}"
        );
        assert!(!text.contains(SECRET), "{text}");
        assert!(!text.contains('\n'), "{text}");
        Ok(())
    });
    let text = Config::from_toml_str(&broken)
        .expect_err("broken")
        .to_string();
    assert!(text.contains("line 4, column"), "{text}");
    assert!(!text.contains(SECRET), "{text}");
    // Any other figment TOML source keeps its first line only.
    let text = Config::from(Toml::string(&broken))
        .expect_err("broken")
        .to_string();
    assert!(!text.contains(SECRET), "{text}");
}

#[test]
fn settings_type_errors_name_the_key_the_expected_form_and_what_was_found() {
    let problems = problems(Config::from_toml_str(
        r#"
        [defaults]
        timeout = ["2s"]

        [clients.gen]
        provider = "oauth2"
        timeout = 5
        max_attempts = "many"
        connect_timeout = "soon"
        "#,
    ));
    assert_has(
        &problems,
        r#"defaults.timeout: expected a duration such as "5s", found an array"#,
    );
    assert_has(
        &problems,
        r#"clients.gen.timeout: expected a duration such as "5s", found integer 5"#,
    );
    assert_has(
        &problems,
        r#"clients.gen.max_attempts: expected a whole number such as 3, found string "many""#,
    );
    assert_has(
        &problems,
        r#"clients.gen.connect_timeout: expected a duration such as "5s", found string "soon""#,
    );
    assert_eq!(problems.len(), 4, "{problems:#?}");
}

#[test]
fn an_environment_value_of_the_wrong_form_names_its_key() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.set_env("AUTHMUX_CLIENTS__GEN__PROVIDER", "oauth2");
        jail.set_env("AUTHMUX_CLIENTS__GEN__MAX_ATTEMPTS", "abc");
        let problems = problems(Config::load(None));
        assert_eq!(
            problems,
            [r#"clients.gen.max_attempts: expected a whole number such as 3, found string "abc""#]
        );
        Ok(())
    });
}

#[test]
fn an_unknown_section_suggests_the_known_one() {
    let problems = problems(Config::from_toml_str("[default]\ntimeout = \"5s\"\n"));
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        problems[0].starts_with("default: unknown section; did you mean [defaults]?"),
        "{problems:#?}"
    );
}

#[cfg(feature = "oauth2")]
#[test]
fn provider_type_errors_name_the_key_and_never_show_a_secret() {
    let config = Config::from_toml_str(
        r#"
        [clients.gen]
        provider = "oauth2"
        token_url = "https://idp.example.com/token"
        client_id = "id"
        client_secret = 987654321
        scopes = "read"
        client_auth = "bassic"
        "#,
    )
    .expect("the settings are fine");
    let problems = problems(Registry::from_config(&config));
    assert_has(
        &problems,
        r#"clients.gen.client_secret: expected a string, { env = "VARIABLE" } or { file = "path" }, found integer"#,
    );
    assert_has(
        &problems,
        r#"clients.gen.scopes: expected an array of scopes such as ["read", "write"], found string "read""#,
    );
    assert!(
        problems.iter().any(|problem| problem
            .starts_with("clients.gen.client_auth: expected one of ")
            && problem.ends_with(r#"found "bassic""#)),
        "{problems:#?}"
    );
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(!format!("{problems:?}").contains("987654321"));
}

#[cfg(feature = "oauth2")]
#[test]
fn an_oauth2_client_needs_exactly_one_of_token_url_and_issuer() {
    let build = |keys: &str| {
        let config = Config::from_toml_str(&format!(
            "[clients.okta]\nprovider = \"oauth2\"\nclient_id = \"id\"\nclient_secret = \"{SECRET}\"\n{keys}\n"
        ))
        .expect("the settings are fine");
        Registry::from_config(&config)
    };
    assert_eq!(
        problems(build("")),
        ["clients.okta.token_url: required unless issuer is set"]
    );
    assert_eq!(
        problems(build(
            "issuer = \"https://idp.example.com\"\ntoken_url = \"https://idp.example.com/token\""
        )),
        ["clients.okta.issuer: set either issuer or token_url, not both"]
    );
    let problems = problems(build("issuer = \"http://idp.example.com\""));
    assert!(
        problems[0].starts_with("clients.okta.issuer: ")
            && problems[0].contains("allow_insecure_http"),
        "{problems:?}"
    );
    // Building does no I/O: the issuer is shown until a fetch or a check
    // discovers the endpoint.
    let registry = build("issuer = \"https://idp.example.com\"").expect("valid");
    let client = registry.client("okta").expect("built");
    assert_eq!(client.token_url(), "https://idp.example.com");
    assert_eq!(client.issuer(), Some("https://idp.example.com"));
}

#[cfg(feature = "auth0")]
#[test]
fn every_problem_of_one_client_is_reported() {
    let config = Config::from_toml_str(&format!(
        r#"
        [clients.api]
        provider = "auth0"
        domain = "tenant.eu.auth0.com"
        client_id = "id"
        client_secert = "{SECRET}"
        audiance = "https://api.example.com"
        "#
    ))
    .expect("the settings are fine");
    let problems = problems(Registry::from_config(&config));
    assert_eq!(
        problems,
        [
            "clients.api.audiance: unknown key; did you mean audience?",
            "clients.api.client_secert: unknown key; did you mean client_secret?",
        ]
    );
    // The secret is optional for private_key_jwt, so its absence is found
    // when the client is built, once its keys are right.
    let config = Config::from_toml_str(
        r#"
        [clients.api]
        provider = "auth0"
        domain = "tenant.eu.auth0.com"
        client_id = "id"
        audience = "https://api.example.com"
        "#,
    )
    .expect("the settings are fine");
    assert_eq!(
        self::problems(Registry::from_config(&config)),
        [
            r#"clients.api.client_secret: required with client_auth = "post" (the default); or authenticate without one: client_auth = "private_key_jwt" or client_auth = "client_assertion""#
        ]
    );
}

#[cfg(feature = "mention-me")]
#[test]
fn unrelated_authmux_variables_are_not_config() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file("authmux.toml", &client("mm", "mention-me"))?;
        jail.set_env("AUTHMUX_LOG", "debug");
        jail.set_env("AUTHMUX_BIN", "/usr/local/bin/authmux");
        jail.set_env("AUTHMUX_CLIENTS", "not a table");
        let registry = Registry::load(None).expect("unrelated variables are ignored");
        assert_eq!(registry.names().collect::<Vec<_>>(), ["mm"]);
        Ok(())
    });
}

#[cfg(feature = "mention-me")]
#[test]
fn an_environment_secret_source_replaces_the_files() {
    use authmux::ExposeSecret as _;
    use authmux::mention_me::MentionMeConfig;

    let file = format!(
        "{}\n",
        client("api", "mention-me").replace(
            &format!("client_secret = \"{SECRET}\""),
            "client_secret = { env = \"AUTHMUX_TEST_OLD_SECRET\" }"
        )
    );
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file("authmux.toml", &file)?;
        jail.create_file("new-secret", "the-new-secret\n")?;
        jail.set_env("AUTHMUX_TEST_OLD_SECRET", "the-old-revoked-secret");
        jail.set_env("AUTHMUX_CLIENTS__API__CLIENT_SECRET__FILE", "new-secret");
        let config = Config::load(None).expect("valid");
        let api: MentionMeConfig = config.clients["api"].provider_config().expect("valid");
        let secret = api
            .client_secret
            .resolve("client_secret")
            .expect("readable");
        assert_eq!(secret.expose_secret(), "the-new-secret");
        Ok(())
    });
}

/// An Auth0 client `api` signing assertions with `key`, a TOML value.
#[cfg(feature = "auth0")]
fn private_key_jwt_client(key: &str) -> String {
    format!(
        "{}client_auth = \"private_key_jwt\"\nclient_assertion_key = {key}\n",
        client("api", "auth0").replace(&format!("client_secret = \"{SECRET}\"\n"), "")
    )
}

/// Every key that takes a secret's source, not `client_secret` alone: a
/// variable naming a new source replaces the file's, whatever the section.
#[cfg(feature = "auth0")]
#[test]
fn an_environment_source_replaces_the_files_for_every_secret_key() {
    use authmux::ClientSecret;
    use authmux::auth0::Auth0Config;

    let file = format!(
        r#"
        [store]
        kind = "redis"
        url = "redis://cache:6379/0"
        encryption_key = {{ env = "OLD_STORE_KEY" }}
        password = {{ env = "OLD_REDIS_PASSWORD" }}
        {}"#,
        private_key_jwt_client(r#"{ env = "OLD_ASSERTION_KEY" }"#)
    );
    let config = Config::from_toml_and_env(
        &file,
        [
            (
                "AUTHMUX_CLIENTS__API__CLIENT_ASSERTION_KEY__FILE",
                "/run/secrets/new.pem",
            ),
            (
                "AUTHMUX_STORE__ENCRYPTION_KEY__FILE",
                "/run/secrets/store-key",
            ),
            ("AUTHMUX_STORE__PASSWORD__FILE", "/run/secrets/redis"),
        ],
    )
    .expect("each variable replaces the file's source");
    let file_source = |secret: Option<&ClientSecret>| match secret {
        Some(ClientSecret::File { file }) => file.display().to_string(),
        other => panic!("not a file source: {other:?}"),
    };
    let api: Auth0Config = config.clients["api"].provider_config().expect("valid");
    assert_eq!(
        file_source(api.auth.client_assertion_key.as_ref()),
        "/run/secrets/new.pem"
    );
    assert_eq!(
        file_source(config.store.encryption_key.as_ref()),
        "/run/secrets/store-key"
    );
    assert_eq!(
        file_source(config.store.password.as_ref()),
        "/run/secrets/redis"
    );
}

/// A secret's value is never quoted, whatever its TOML type and whatever
/// the key's name: a number given as a password is still a password.
#[cfg(feature = "auth0")]
#[test]
fn a_secret_of_the_wrong_type_is_described_never_quoted() {
    const EXPECTED: &str = r#"expected a string, { env = "VARIABLE" } or { file = "path" }"#;
    let store = |value: &str| {
        problems(Config::from_toml_str(&format!(
            "[store]\nkind = \"redis\"\npassword = {value}\nencryption_key = {value}\n"
        )))
    };
    for (value, found) in [
        ("83749201", "integer"),
        ("-83749201", "integer"),
        ("8374.9201", "float"),
        ("true", "boolean"),
    ] {
        let problems = store(value);
        assert_has(
            &problems,
            &format!("store.password: {EXPECTED}, found {found}"),
        );
        assert_has(
            &problems,
            &format!("store.encryption_key: {EXPECTED}, found {found}"),
        );
        assert!(!format!("{problems:?}").contains("8374"), "{problems:#?}");
    }
    let config =
        Config::from_toml_str(&private_key_jwt_client("5550123")).expect("the settings are fine");
    let problems = problems(Registry::from_config(&config));
    assert_eq!(
        problems,
        [format!(
            "clients.api.client_assertion_key: {EXPECTED}, found integer"
        )]
    );
}

/// Variables come upper-cased and are read lower-cased, so a client named
/// with capitals is found by its name in any case.
#[cfg(feature = "mention-me")]
#[test]
fn a_variable_overrides_a_client_named_with_capitals() {
    use authmux::ClientSecret;
    use authmux::mention_me::MentionMeConfig;

    let config = Config::from_toml_and_env(
        &client("Billing", "mention-me"),
        [
            (
                "AUTHMUX_CLIENTS__BILLING__CLIENT_ID",
                "from-the-environment",
            ),
            (
                "AUTHMUX_CLIENTS__BILLING__CLIENT_SECRET__ENV",
                "BILLING_SECRET",
            ),
        ],
    )
    .expect("the variables override [clients.Billing]");
    assert_eq!(config.clients.keys().collect::<Vec<_>>(), ["Billing"]);
    let billing: MentionMeConfig = config.clients["Billing"].provider_config().expect("valid");
    assert_eq!(billing.client_id, "from-the-environment");
    assert!(
        matches!(&billing.client_secret, ClientSecret::Env { env } if env == "BILLING_SECRET"),
        "{:?}",
        billing.client_secret
    );

    // A client whose name matches exactly wins over one that differs in case.
    let both = format!(
        "{}{}",
        client("billing", "mention-me"),
        client("BILLING", "mention-me")
    );
    let config =
        Config::from_toml_and_env(&both, [("AUTHMUX_CLIENTS__BILLING__CLIENT_ID", "exact")])
            .expect("valid");
    let exact: MentionMeConfig = config.clients["billing"].provider_config().expect("valid");
    let other: MentionMeConfig = config.clients["BILLING"].provider_config().expect("valid");
    assert_eq!(
        (exact.client_id.as_str(), other.client_id.as_str()),
        ("exact", "id")
    );

    // Two that differ only in case, neither exactly: the variable is refused.
    let two = format!(
        "{}{}",
        client("Billing", "mention-me"),
        client("BILLING", "mention-me")
    );
    let problems = problems(Config::from_toml_and_env(
        &two,
        [("AUTHMUX_CLIENTS__BILLING__CLIENT_ID", "which")],
    ));
    assert_eq!(
        problems,
        [
            "AUTHMUX_CLIENTS__BILLING__…: matches clients BILLING and Billing; \
          rename one so that their names differ in more than case"
        ]
    );
}

#[cfg(feature = "mention-me")]
#[test]
fn a_secret_with_two_sources_is_an_error() {
    let config = Config::from_toml_str(&client("api", "mention-me").replace(
        &format!("client_secret = \"{SECRET}\""),
        "client_secret = { env = \"A\", file = \"b\" }",
    ))
    .expect("the settings are fine");
    assert_eq!(
        problems(Registry::from_config(&config)),
        ["clients.api.client_secret: both env and file are set; give one source only"]
    );
}

#[test]
fn no_config_file_and_no_client_variable_names_every_place_tried() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        let error = Registry::load(None).expect_err("nothing configured");
        let text = error.to_string();
        assert!(text.contains("$AUTHMUX_CONFIG (not set)"), "{text}");
        assert!(text.contains("./authmux.toml (no such file in "), "{text}");
        assert!(text.contains("AUTHMUX_CLIENTS__<NAME>__<KEY>"), "{text}");
        jail.set_env("AUTHMUX_CONFIG", "elsewhere.toml");
        let text = Registry::load(None).expect_err("missing").to_string();
        assert_eq!(
            text,
            "elsewhere.toml: no such config file (named by $AUTHMUX_CONFIG)"
        );
        Ok(())
    });
}

#[cfg(feature = "mention-me")]
#[test]
fn clients_from_the_environment_need_no_file() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        for (key, value) in [
            ("PROVIDER", "mention-me"),
            ("CLIENT_ID", "id"),
            ("CLIENT_SECRET", SECRET),
            ("ENVIRONMENT", "demo"),
        ] {
            jail.set_env(format!("AUTHMUX_CLIENTS__MM__{key}"), value);
        }
        let config = Config::load(None).expect("configured by the environment");
        assert_eq!(config.file(), None);
        assert_eq!(Registry::from_config(&config).expect("valid").len(), 1);
        jail.create_file("authmux.toml", "")?;
        let config = Config::load(None).expect("an empty file is read");
        assert_eq!(
            config.file(),
            Some(std::path::Path::new("authmux.toml")),
            "the file read is known"
        );
        Ok(())
    });
}

/// Runs with any set of features that leaves a provider out, as CI does.
#[cfg(not(all(
    feature = "mention-me",
    feature = "360learning",
    feature = "auth0",
    feature = "oauth2"
)))]
#[test]
fn a_provider_not_compiled_in_fails_that_client_only() {
    use authmux::config::{compiled_providers, known_providers};

    let compiled = compiled_providers();
    let missing = known_providers()
        .into_iter()
        .find(|provider| !compiled.contains(provider))
        .expect("a provider is left out");
    let mut toml = client("absent", missing);
    if let Some(present) = compiled.first() {
        toml.push_str(&client("present", present));
    }
    let config = Config::from_toml_str(&toml).expect("a shared config loads in every build");
    let registry = Registry::from_config(&config).expect("the other clients build");
    assert_eq!(registry.len(), compiled.len().min(1));
    if !compiled.is_empty() {
        registry.client("present").expect("built");
    }
    let listed = if compiled.is_empty() {
        "none".to_owned()
    } else {
        compiled.join(", ")
    };
    let why = format!(
        "provider \"{missing}\" is not compiled in: enable feature \"{missing}\" (compiled in: {listed})"
    );
    let error = registry.client("absent").expect_err("not compiled in");
    assert_eq!(
        error.to_string(),
        format!("client \"absent\" ({missing}): {why}")
    );
    assert_eq!(error.kind(), authmux::ErrorKind::Config);
    let unavailable: Vec<(&str, String)> = registry
        .unavailable()
        .map(|(name, error)| (name, error.message().to_owned()))
        .collect();
    assert_eq!(unavailable, [("absent", why.clone())]);
    let alone = Registry::with_client(&config, "absent").expect_err("not compiled in");
    assert_eq!(
        alone.problems(),
        [format!("clients.absent.provider: {why}")]
    );
}

#[cfg(feature = "oauth2")]
#[test]
fn tls_and_proxy_problems_name_the_key_and_never_show_the_key() {
    let dir = std::env::temp_dir().join(format!("authmux-tls-problems-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let empty = dir.join("x.pem");
    std::fs::write(&empty, "not a certificate\n").expect("write");
    let toml = format!(
        r#"
        [defaults]
        proxy = "socks5://proxy.corp:1080"

        [clients.bank]
        provider = "oauth2"
        token_url = "https://as.bank.example/token"
        client_id = "payments"
        client_auth = "tls_client_auth"
        tls_client_certificate = {{ file = "{}" }}

        [clients.key]
        provider = "oauth2"
        token_url = "https://as.bank.example/token"
        client_id = "payments"
        client_auth = "self_signed_tls_client_auth"
        tls_client_key = 123456789

        [clients.secret]
        provider = "oauth2"
        token_url = "https://as.bank.example/token"
        client_id = "payments"
        client_auth = "tls_client_auth"
        client_secret = "{SECRET}"
        proxy = "http://proxy.corp:3128"
        "#,
        empty.display()
    );
    let found = problems(Config::from_toml_str(&toml));
    assert_has(
        &found,
        r#"defaults.proxy: must be an http:// or https:// URL, such as "http://proxy.corp:3128", or "direct""#,
    );
    assert_has(
        &found,
        r#"clients.key.tls_client_key: expected a string, { env = "VARIABLE" } or { file = "path" }, found integer"#,
    );
    assert!(!format!("{found:?}").contains("123456789"));

    let toml = toml
        .replace("socks5://proxy.corp:1080", "http://proxy.corp:3128")
        .replace("tls_client_key = 123456789", "");
    let config = Config::from_toml_str(&toml).expect("the settings are fine");
    let found = problems(Registry::from_config(&config));
    assert_has(
        &found,
        &format!(
            "clients.bank.tls_client_certificate: {}: no private key in it; add it, or set tls_client_key",
            empty.display()
        ),
    );
    assert_has(
        &found,
        r#"clients.key.tls_client_certificate: required with client_auth = "self_signed_tls_client_auth": the certificate (and its key) the client authenticates with"#,
    );
    assert_has(
        &found,
        r#"clients.secret.client_secret: not used with client_auth = "tls_client_auth"; remove it"#,
    );
    assert!(!format!("{found:?}").contains(SECRET));
    std::fs::remove_dir_all(&dir).expect("clean up");
}

/// A variable whose name has a `.` in a part (`CLIENTS__API.__CLIENT_SECRET`)
/// would put its value under another key than the one it names (found by
/// fuzzing: `clients.api: expected a table, found string "<the secret>"`).
/// It is not read, like one with an empty part.
#[test]
fn a_variable_with_a_dot_in_its_name_is_not_read_and_never_shown() {
    let secret = "c0nfig-s3cret~value";
    for name in [
        "AUTHMUX_CLIENTS__API.__CLIENT_SECRET",
        "AUTHMUX_CLIENTS__API__CLIENT.SECRET",
        "AUTHMUX_CLIENTS.API__CLIENT_SECRET",
    ] {
        let outcome =
            Config::from_toml_and_env("[clients.api]\nprovider = \"oauth2\"\n", [(name, secret)]);
        match outcome {
            Ok(config) => {
                assert_eq!(config.clients.keys().collect::<Vec<_>>(), ["api"], "{name}");
            }
            Err(error) => {
                let problems = error.problems().join("\n");
                assert!(!problems.contains(secret), "{name}: {problems}");
            }
        }
    }
    // Before: the value landed on `clients.api` itself.
    let error = Config::from_toml_and_env("", [("AUTHMUX_CLIENTS__API.__CLIENT_SECRET", secret)]);
    if let Err(error) = error {
        let problems = error.problems().join("\n");
        assert!(!problems.contains(secret), "{problems}");
    }
}

/// A proxy URL may carry a password: the settings' `Debug` (and the
/// client's, which holds them) shows the proxy without it.
#[test]
fn a_proxy_password_is_not_in_the_settings_debug() {
    let config = Config::from_toml_str(
        "[defaults]\nproxy = \"http://user:pa55w0rd@proxy.corp:3128\"\n\
         [clients.api]\nprovider = \"oauth2\"\nproxy = \"direct\"\n\
         [clients.own]\nprovider = \"oauth2\"\nproxy = \"http://me:s3cr3tpw@proxy.corp:3128\"\n",
    )
    .expect("valid");
    let defaults = format!("{:?}", config.defaults);
    assert!(!defaults.contains("pa55w0rd"), "{defaults}");
    assert!(defaults.contains("proxy.corp:3128"), "{defaults}");
    let client = format!("{:?}", config.clients["api"]);
    assert!(client.contains("\"direct\""), "{client}");
    let own = format!("{:?}", config.clients["own"]);
    assert!(!own.contains("s3cr3tpw"), "{own}");
}
