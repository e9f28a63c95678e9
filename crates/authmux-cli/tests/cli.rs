//! The `authmux` binary end to end: a config file on disk, a mock token
//! endpoint, and the process's stdout, stderr and exit code.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use httpmock::{Method, MockServer};
use serde_json::{Value, json};

/// The client secret of every test config; it must never be printed.
const SECRET: &str = "cli-test-secret-3f9a1c";

/// A directory of its own for one test, removed when dropped.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "authmux-cli-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the scratch directory");
        Self { dir }
    }

    /// Writes `authmux.toml` with `toml` and returns its path.
    fn config(&self, toml: &str) -> PathBuf {
        let path = self.dir.join("authmux.toml");
        std::fs::write(&path, toml).expect("write the config");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The binary, run in `dir`, without any `AUTHMUX_*` variable of the host:
/// the config reads those case-insensitively, so all spellings go. Nor
/// with the host's `RUST_LOG`, which would add log lines to stderr. Its
/// token store is `dir/cache/authmux`, the test's own.
fn authmux(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_authmux"));
    command
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env("XDG_CACHE_HOME", dir.join("cache"));
    for (key, _) in std::env::vars_os() {
        if key
            .to_str()
            .is_some_and(|key| key.to_ascii_uppercase().starts_with("AUTHMUX_"))
        {
            command.env_remove(key);
        }
    }
    command
}

/// Runs `command` on the blocking pool, so the test's runtime keeps
/// driving the mock server meanwhile.
async fn output(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output().expect("run authmux"))
        .await
        .expect("the blocking task")
}

/// Runs `authmux <args>` in `dir`.
async fn run(dir: &Path, args: &[&str]) -> Output {
    let mut command = authmux(dir);
    command.args(args);
    output(command).await
}

/// The lines of `stderr` that are errors, not log events.
fn error_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|line| line.starts_with("authmux: "))
        .collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8 output")
}

/// The exit code, stdout and stderr of a finished run.
fn parts(output: &Output) -> (Option<i32>, String, String) {
    (
        output.status.code(),
        text(&output.stdout),
        text(&output.stderr),
    )
}

/// A config with one Mention Me client, `mm`, whose token endpoint is on
/// `server`, and no retries so that failures come back at once.
fn mention_me_config(server: &MockServer) -> String {
    format!(
        r#"
[defaults]
max_attempts = 1

[clients.mm]
provider = "mention-me"
client_id = "m2m-client-test"
client_secret = "{SECRET}"
base_url = "{}"
"#,
        server.base_url()
    )
}

/// A JWT-shaped token like Mention Me's; the signature is not checked.
fn jwt(payload: &Value) -> String {
    let encode = |value: &Value| URL_SAFE_NO_PAD.encode(value.to_string());
    format!(
        "{}.{}.c2lnbmF0dXJl",
        encode(&json!({"alg": "RS256", "typ": "JWT"})),
        encode(payload)
    )
}

fn claims() -> Value {
    json!({
        "aud": ["project-test"],
        "claims": {"env": "demo", "merchantId": "4259"},
        "scope": "customers:list",
        "sub": "m2m-client-test"
    })
}

/// Serves one token response on the Mention Me token path.
async fn serve_token(server: &MockServer, status: u16, body: Value) -> httpmock::Mock<'_> {
    server
        .mock_async(|when, then| {
            when.method(Method::POST).path("/api/oauth/token");
            then.status(status).json_body(body);
        })
        .await
}

fn assert_no_secret(output: &Output) {
    let (_, stdout, stderr) = parts(output);
    assert!(!stdout.contains(SECRET), "stdout: {stdout}");
    assert!(!stderr.contains(SECRET), "stderr: {stderr}");
}

#[tokio::test]
async fn token_prints_only_the_access_token() {
    let server = MockServer::start_async().await;
    let access_token = jwt(&claims());
    let mock = serve_token(
        &server,
        200,
        json!({"access_token": access_token, "expires_in": 3600, "token_type": "bearer"}),
    )
    .await;
    let scratch = Scratch::new();
    let config = scratch.config(&mention_me_config(&server));
    let config = config.to_str().expect("UTF-8 path");

    let output = run(&scratch.dir, &["token", "mm", "--config", config]).await;

    let (code, stdout, stderr) = parts(&output);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert_eq!(stdout, format!("{access_token}\n"));
    assert_eq!(stderr, "");
    mock.assert_calls_async(1).await;
}

#[tokio::test]
async fn token_needs_only_its_own_client_to_be_valid() {
    let server = MockServer::start_async().await;
    let access_token = jwt(&claims());
    serve_token(
        &server,
        200,
        json!({"access_token": access_token, "expires_in": 3600, "token_type": "bearer"}),
    )
    .await;
    let scratch = Scratch::new();
    let broken = "\n[clients.other]\nprovider = \"mention-me\"\nclient_id = \"o\"\n\
                  client_secret = { env = \"AUTHMUX_CLI_TEST_NEVER_SET\" }\nenvironment = \"demo\"\n";
    let config = scratch.config(&format!("{}{broken}", mention_me_config(&server)));
    let config = config.to_str().expect("UTF-8 path");

    let output = run(&scratch.dir, &["token", "mm", "--config", config]).await;
    let (code, stdout, stderr) = parts(&output);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert_eq!(stdout, format!("{access_token}\n"));

    let output = run(&scratch.dir, &["check", "--config", config]).await;
    let (code, _, stderr) = parts(&output);
    assert_eq!(code, Some(2), "check still reports the broken client");
    assert!(stderr.contains("clients.other.client_secret"), "{stderr}");
}

#[tokio::test]
async fn token_json_describes_the_token() {
    let server = MockServer::start_async().await;
    let access_token = jwt(&claims());
    serve_token(
        &server,
        200,
        json!({
            "access_token": access_token,
            "expires_in": 3600,
            "token_type": "bearer",
            "scope": "customers:list"
        }),
    )
    .await;
    let scratch = Scratch::new();
    let config = scratch.config(&mention_me_config(&server));
    let config = config.to_str().expect("UTF-8 path");

    // --config before the subcommand works too.
    let output = run(&scratch.dir, &["--config", config, "token", "mm", "--json"]).await;

    let (code, stdout, stderr) = parts(&output);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert_eq!(stdout.matches('\n').count(), 1, "one line: {stdout}");
    assert!(stdout.ends_with('\n'));
    let json: Value = serde_json::from_str(&stdout).expect("one JSON object");
    let object = json.as_object().expect("an object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "access_token",
            "claims",
            "client",
            "expires_at",
            "expires_in",
            "provider",
            "scope",
            "token_type"
        ]
    );
    assert_eq!(json["client"], "mm");
    assert_eq!(json["provider"], "mention-me");
    assert_eq!(json["token_type"], "Bearer");
    assert_eq!(json["access_token"], access_token.as_str());
    assert_eq!(json["scope"], "customers:list");
    assert_eq!(json["claims"], claims());
    assert_eq!(json["claims"]["claims"]["merchantId"], "4259");

    let expires_in = json["expires_in"].as_u64().expect("whole seconds");
    assert!(expires_in > 3500 && expires_in <= 3600, "{expires_in}");
    let expires_at = json["expires_at"].as_str().expect("a string");
    assert!(expires_at.ends_with('Z'), "UTC: {expires_at}");
    let expires_at = humantime::parse_rfc3339(expires_at).expect("RFC 3339");
    let from_now = expires_at
        .duration_since(SystemTime::now())
        .expect("in the future");
    assert!(from_now > Duration::from_secs(3500), "{from_now:?}");
    assert!(from_now <= Duration::from_secs(3600), "{from_now:?}");
    assert_no_secret(&output);
}

#[tokio::test]
async fn token_json_has_null_claims_and_scope_for_an_opaque_token() {
    let server = MockServer::start_async().await;
    serve_token(
        &server,
        200,
        json!({"access_token": "opaque-token-value", "expires_in": 600, "token_type": "Bearer"}),
    )
    .await;
    let scratch = Scratch::new();
    let config = scratch.config(&mention_me_config(&server));
    let config = config.to_str().expect("UTF-8 path");

    let output = run(&scratch.dir, &["token", "mm", "--json", "--config", config]).await;

    let (code, stdout, stderr) = parts(&output);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    let json: Value = serde_json::from_str(&stdout).expect("one JSON object");
    assert_eq!(json["access_token"], "opaque-token-value");
    assert_eq!(json["claims"], Value::Null);
    assert_eq!(json["scope"], Value::Null);
}

#[tokio::test]
async fn an_unknown_client_is_a_usage_error_listing_the_configured_names() {
    let scratch = Scratch::new();
    let config = scratch.config(&format!(
        r#"
[clients.referrals]
provider = "mention-me"
client_id = "id"
client_secret = "{SECRET}"
environment = "demo"

[clients.api]
provider = "auth0"
domain = "tenant.eu.auth0.com"
client_id = "id"
client_secret = "{SECRET}"
audience = "https://api.example.com"
"#
    ));
    let config = config.to_str().expect("UTF-8 path");

    let output = run(&scratch.dir, &["token", "referals", "--config", config]).await;

    let (code, stdout, stderr) = parts(&output);
    assert_eq!(code, Some(2), "stderr: {stderr}");
    assert_eq!(stdout, "");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("referals"), "{stderr}");
    assert!(
        stderr.contains("api") && stderr.contains("referrals"),
        "{stderr}"
    );
    assert_no_secret(&output);
}

#[tokio::test]
async fn a_refusal_exits_3_with_one_line_naming_the_client_and_provider() {
    let server = MockServer::start_async().await;
    serve_token(&server, 401, json!({"error": "invalid_client"})).await;
    let scratch = Scratch::new();
    let config = scratch.config(&mention_me_config(&server));
    let config = config.to_str().expect("UTF-8 path");

    let output = run(&scratch.dir, &["token", "mm", "--config", config]).await;

    let (code, stdout, stderr) = parts(&output);
    assert_eq!(code, Some(3), "stderr: {stderr}");
    assert_eq!(stdout, "");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("authmux: "), "{stderr}");
    assert!(stderr.contains("\"mm\""), "{stderr}");
    assert!(stderr.contains("mention-me"), "{stderr}");
    assert!(stderr.contains("invalid_client"), "{stderr}");
    assert_no_secret(&output);
}

#[tokio::test]
async fn a_server_error_exits_4() {
    let server = MockServer::start_async().await;
    let mock = serve_token(&server, 503, json!({"message": "down for maintenance"})).await;
    let scratch = Scratch::new();
    let config = scratch.config(&mention_me_config(&server));
    let config = config.to_str().expect("UTF-8 path");

    let output = run(&scratch.dir, &["token", "mm", "--json", "--config", config]).await;

    let (code, stdout, stderr) = parts(&output);
    assert_eq!(code, Some(4), "stderr: {stderr}");
    assert_eq!(stdout, "");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("\"mm\"") && stderr.contains("503"),
        "{stderr}"
    );
    assert_no_secret(&output);
    mock.assert_calls_async(1).await;
}

/// A config with one `oauth2` client, `idp`, that discovers its token
/// endpoint from `server`, and no retries.
fn issuer_config(server: &MockServer) -> String {
    format!(
        r#"
[defaults]
max_attempts = 1

[clients.idp]
provider = "oauth2"
issuer = "{}"
client_id = "idp-client"
client_secret = "{SECRET}"
"#,
        server.base_url()
    )
}

#[tokio::test]
async fn a_metadata_url_that_answers_4xx_is_no_refusal_and_a_5xx_speaks_of_the_metadata() {
    for (status, code) in [(403, 2), (401, 2), (503, 4)] {
        let server = MockServer::start_async().await;
        server
            .mock_async(|when, then| {
                when.method(Method::GET).path_includes("/.well-known/");
                then.status(status)
                    .json_body(json!({"error": "access_denied"}));
            })
            .await;
        let scratch = Scratch::new();
        let config = scratch.config(&issuer_config(&server));
        let config = config.to_str().expect("UTF-8 path");

        let output = run(
            &scratch.dir,
            &["token", "idp", "--no-store", "--config", config],
        )
        .await;

        let (exit, stdout, stderr) = parts(&output);
        assert_eq!(exit, Some(code), "{status}: {stderr}");
        assert_eq!(stdout, "");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains("metadata"), "{stderr}");
        assert!(!stderr.contains("token endpoint"), "{stderr}");
        assert_no_secret(&output);
    }
}

#[tokio::test]
async fn a_token_expired_on_arrival_exits_4_and_is_never_printed() {
    for expires_in in [json!(0), json!(-3600), json!(0.001)] {
        let server = MockServer::start_async().await;
        let body = json!({"access_token": "expired-token-value", "expires_in": expires_in});
        let mock = serve_token(&server, 200, body).await;
        let scratch = Scratch::new();
        let config = scratch.config(&mention_me_config(&server));
        let config = config.to_str().expect("UTF-8 path");

        let output = run(&scratch.dir, &["token", "mm", "--json", "--config", config]).await;

        let (code, stdout, stderr) = parts(&output);
        assert_eq!(code, Some(4), "expires_in {expires_in}: {stderr}");
        assert_eq!(stdout, "");
        assert!(!stderr.contains("expired-token-value"), "{stderr}");
        assert!(stderr.contains("\"mm\""), "{stderr}");
        mock.assert_calls_async(1).await;
    }
}

#[tokio::test]
async fn an_unreachable_endpoint_exits_4() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let scratch = Scratch::new();
    let config = scratch.config(&format!(
        r#"
[defaults]
max_attempts = 1

[clients.mm]
provider = "mention-me"
client_id = "id"
client_secret = "{SECRET}"
base_url = "http://127.0.0.1:{port}"
"#
    ));
    let config = config.to_str().expect("UTF-8 path");

    let output = run(&scratch.dir, &["token", "mm", "--config", config]).await;

    let (code, _, stderr) = parts(&output);
    assert_eq!(code, Some(4), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert_no_secret(&output);
}

#[tokio::test]
async fn a_refused_client_certificate_exits_3_an_untrusted_ca_exits_4_and_check_shows_it() {
    use authmux_testkit::tls::{TestCa, TlsTokenEndpoint};
    let server_ca = TestCa::new("authmux server CA");
    let client_ca = TestCa::new("authmux client CA");
    let endpoint = TlsTokenEndpoint::start(
        &server_ca.server_certificate(),
        &[client_ca.certificate().clone()],
    )
    .await;
    let other = TestCa::new("someone else").client_certificate("payments");
    let scratch = Scratch::new();
    let ca_file = scratch.dir.join("ca.pem");
    std::fs::write(&ca_file, server_ca.pem()).expect("write the CA");
    let certificate_file = scratch.dir.join("client.pem");
    std::fs::write(&certificate_file, other.combined_pem()).expect("write the certificate");
    let client = |tls_ca: &str| {
        format!(
            r#"
[defaults]
max_attempts = 1

[clients.bank]
provider = "oauth2"
token_url = "{}"
client_id = "payments"
client_auth = "tls_client_auth"
tls_client_certificate = {{ file = {:?} }}
{tls_ca}
"#,
            endpoint.token_url(),
            certificate_file.display()
        )
    };

    let refused = scratch.config(&client(&format!(
        "tls_ca = {{ file = {:?} }}",
        ca_file.display()
    )));
    let refused = refused.to_str().expect("UTF-8 path");
    let output = run(&scratch.dir, &["token", "bank", "--config", refused]).await;
    let (code, stdout, stderr) = parts(&output);
    assert_eq!(code, Some(3), "stderr: {stderr}");
    assert_eq!(stdout, "");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("TLS alert "), "{stderr}");
    assert!(!stderr.contains("PRIVATE KEY"), "{stderr}");

    // `check` shows the certificate, never its key.
    let thumbprint = authmux::core::wire::thumbprint(other.certificate());
    let output = run(&scratch.dir, &["check", "--no-store", "--config", refused]).await;
    let (code, stdout, stderr) = parts(&output);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    let line = stdout
        .lines()
        .find(|line| line.trim_start().starts_with("certificate "))
        .unwrap_or_else(|| panic!("a certificate line: {stdout}"));
    assert_eq!(
        line.trim_start(),
        format!(
            "certificate CN=payments, issuer CN=someone else, x5t#S256 {thumbprint}, expires 4096-01-01T00:00:00Z"
        )
    );
    let output = run(
        &scratch.dir,
        &["check", "--no-store", "--json", "--config", refused],
    )
    .await;
    let found: Value = serde_json::from_str(&text(&output.stdout)).expect("one JSON object");
    assert_eq!(
        found["clients"][0]["certificate"],
        json!({"subject": "CN=payments", "issuer": "CN=someone else", "thumbprint": thumbprint,
               "expires": "4096-01-01T00:00:00Z", "expires_soon": false})
    );
    assert!(!text(&output.stdout).contains("PRIVATE KEY"));

    let untrusted = scratch.config(&client(""));
    let untrusted = untrusted.to_str().expect("UTF-8 path");
    let output = run(&scratch.dir, &["token", "bank", "--config", untrusted]).await;
    let (code, _, stderr) = parts(&output);
    assert_eq!(code, Some(4), "stderr: {stderr}");
    assert!(stderr.contains("TLS error"), "{stderr}");
    assert!(endpoint.requests().is_empty(), "nothing was sent");
}

/// `authmux request` sends a certificate-bound token with the client's own
/// certificate and CA: the resource server checks the token's
/// `cnf.x5t#S256` against the certificate the request came with.
#[tokio::test]
async fn request_presents_a_bound_token_with_the_clients_certificate() {
    use authmux_testkit::tls::{TestCa, TlsResourceServer, TlsTokenEndpoint, thumbprint};
    let server_ca = TestCa::new("authmux server CA");
    let client_ca = TestCa::new("authmux client CA");
    let roots = [client_ca.certificate().clone()];
    let endpoint = TlsTokenEndpoint::start_binding(&server_ca.server_certificate(), &roots).await;
    let api = TlsResourceServer::start(&server_ca.server_certificate(), &roots).await;
    let payments = client_ca.client_certificate("payments");
    let scratch = Scratch::new();
    let ca_file = scratch.dir.join("ca.pem");
    std::fs::write(&ca_file, server_ca.pem()).expect("write the CA");
    let certificate_file = scratch.dir.join("client.pem");
    std::fs::write(&certificate_file, payments.combined_pem()).expect("write the certificate");
    let path = scratch.config(&format!(
        r#"
[clients.bank]
provider = "oauth2"
token_url = "{}"
client_id = "payments"
client_auth = "tls_client_auth"
tls_client_certificate = {{ file = {:?} }}
tls_ca = {{ file = {:?} }}
"#,
        endpoint.token_url(),
        certificate_file.display(),
        ca_file.display()
    ));
    let config = path.to_str().expect("UTF-8 path");
    let output = run(
        &scratch.dir,
        &[
            "request",
            "bank",
            &api.url(),
            "--no-store",
            "--config",
            config,
        ],
    )
    .await;
    let (code, stdout, stderr) = parts(&output);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert_eq!(stdout.trim(), r#"{"ok":true}"#);
    let x5t = thumbprint(payments.certificate());
    assert_eq!(api.answers(), [format!("200 bound={x5t} presented={x5t}")]);
    assert_eq!(endpoint.requests().len(), 1);
}

#[tokio::test]
async fn the_config_comes_from_authmux_config_and_variables_override_it() {
    let server = MockServer::start_async().await;
    let mock = server
        .mock_async(|when, then| {
            when.method(Method::POST)
                .path("/api/oauth/token")
                .body_includes("from-the-environment");
            then.status(200).json_body(
                json!({"access_token": "env-token", "expires_in": 60, "token_type": "bearer"}),
            );
        })
        .await;
    let scratch = Scratch::new();
    let config = scratch.config(&mention_me_config(&server));
    let mut command = authmux(&scratch.dir);
    command
        .args(["token", "mm"])
        .env("AUTHMUX_CONFIG", &config)
        .env("AUTHMUX_CLIENTS__MM__CLIENT_SECRET", "from-the-environment");

    let output = output(command).await;

    let (code, stdout, stderr) = parts(&output);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert_eq!(stdout, "env-token\n");
    mock.assert_calls_async(1).await;
}

#[tokio::test]
async fn check_lists_each_client_without_secrets() {
    let server = MockServer::start_async().await;
    let scratch = Scratch::new();
    let config = scratch.config(&format!(
        r#"{}
[clients.api]
provider = "auth0"
domain = "tenant.eu.auth0.com"
client_id = "auth0-client"
client_secret = "{SECRET}"
audience = "https://api.example.com"
"#,
        mention_me_config(&server)
    ));
    let config = config.to_str().expect("UTF-8 path");

    let output = run(&scratch.dir, &["check", "--config", config]).await;

    let (code, stdout, stderr) = parts(&output);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert_eq!(stderr, "");
    let lines: Vec<Vec<&str>> = stdout
        .lines()
        .map(|line| line.split_whitespace().collect())
        .collect();
    let store = scratch.dir.join("cache").join("authmux");
    assert_eq!(
        lines,
        [
            vec!["file", config],
            vec!["api", "auth0", "https://tenant.eu.auth0.com/oauth/token"],
            vec![
                "mm",
                "mention-me",
                &format!("{}/api/oauth/token", server.base_url())
            ],
            vec![
                "store",
                "file",
                store.to_str().expect("UTF-8 path"),
                "(reachable,",
                "plaintext)"
            ],
        ]
    );
    assert_no_secret(&output);
}

#[tokio::test]
async fn check_json_lists_clients_and_problems_in_one_object() {
    let scratch = Scratch::new();
    let config = scratch.config(&format!(
        r#"
[clients.api]
provider = "auth0"
domain = "tenant.eu.auth0.com"
client_id = "auth0-client"
client_secret = "{SECRET}"
audience = "https://api.example.com"
"#
    ));
    let config = config.to_str().expect("UTF-8 path");
    let output = run(&scratch.dir, &["check", "--json", "--config", config]).await;
    let (code, stdout, stderr) = parts(&output);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    let found: Value = serde_json::from_str(&stdout).expect("one JSON object");
    assert_eq!(found["file"], json!(config));
    assert_eq!(
        found["clients"],
        json!([{"name": "api", "provider": "auth0", "grant_type": "client_credentials",
                "token_url": "https://tenant.eu.auth0.com/oauth/token", "problems": []}])
    );
    assert_eq!(found["problems"], json!([]));
    let store = &found["store"];
    assert_eq!(store["reachable"], json!(true), "{store}");
    assert_eq!(store["encrypted"], json!(false), "{store}");
    assert!(
        store["store"]
            .as_str()
            .is_some_and(|s| s.starts_with("file ")),
        "{store}"
    );
    assert_no_secret(&output);

    let output = run(
        &scratch.dir,
        &["check", "--json", "--no-store", "--config", config],
    )
    .await;
    let found: Value = serde_json::from_str(&parts(&output).1).expect("one JSON object");
    assert_eq!(found["store"]["store"], json!("none"));

    let broken = scratch.config("[clients.api]\nprovider = \"auth0\"\n");
    let broken = broken.to_str().expect("UTF-8 path");
    let output = run(&scratch.dir, &["check", "--json", "--config", broken]).await;
    let (code, stdout, _) = parts(&output);
    assert_eq!(code, Some(2));
    let found: Value = serde_json::from_str(&stdout).expect("one JSON object");
    assert_eq!(
        found["file"],
        json!(broken),
        "the file checked, though broken"
    );
    let problems = found["problems"].as_array().expect("a list");
    assert!(
        problems
            .iter()
            .any(|problem| problem == "clients.api.domain: required"),
        "{problems:?}"
    );
    assert_eq!(found["clients"][0]["name"], json!("api"));
    assert_eq!(found["clients"][0]["token_url"], json!(null));
    assert_eq!(found["clients"][0]["problems"], found["problems"]);
}

#[tokio::test]
async fn check_shows_the_token_endpoint_discovered_from_an_issuer() {
    let server = MockServer::start_async().await;
    let issuer = server.url("/tenant");
    let token_url = server.url("/tenant/oauth2/token");
    let metadata = server
        .mock_async(|when, then| {
            when.method(Method::GET)
                .path("/.well-known/oauth-authorization-server/tenant")
                .header("accept", "application/json");
            then.status(200).json_body(json!({
                "issuer": issuer,
                "token_endpoint": token_url,
            }));
        })
        .await;
    let scratch = Scratch::new();
    let config = scratch.config(&format!(
        r#"
[clients.okta]
provider = "oauth2"
issuer = "{issuer}"
client_id = "okta-client"
client_secret = "{SECRET}"

[clients.gone]
provider = "oauth2"
issuer = "{}"
client_id = "gone-client"
client_secret = "{SECRET}"
"#,
        server.url("/other")
    ));
    let config = config.to_str().expect("UTF-8 path");

    let output = run(&scratch.dir, &["check", "--no-store", "--config", config]).await;
    let (code, stdout, stderr) = parts(&output);
    assert_eq!(code, Some(2), "a failed discovery is a problem");
    let okta: Vec<&str> = stdout
        .lines()
        .find(|line| line.starts_with("okta"))
        .expect("the okta line")
        .split_whitespace()
        .collect();
    assert_eq!(
        okta,
        [
            "okta",
            "oauth2",
            token_url.as_str(),
            "(issuer",
            &format!("{issuer})")
        ]
    );
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("client \"gone\" (oauth2)"), "{stderr}");
    assert!(
        errors[0].contains(&format!("issuer {}: no metadata", server.url("/other"))),
        "{stderr}"
    );

    let output = run(
        &scratch.dir,
        &["check", "--json", "--no-store", "--config", config],
    )
    .await;
    let found: Value = serde_json::from_str(&parts(&output).1).expect("one JSON object");
    assert_eq!(
        found["clients"][1],
        json!({"name": "okta", "provider": "oauth2", "grant_type": "client_credentials", "token_url": token_url, "issuer": issuer,
               "problems": []})
    );
    assert_eq!(found["problems"].as_array().map(Vec::len), Some(1));
    assert_eq!(found["clients"][0]["problems"], found["problems"]);
    assert_eq!(metadata.calls_async().await, 2, "once per run");
    assert_no_secret(&output);
}

/// A port that was just free: nothing listens there.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// An oauth2 client discovering its endpoint from `issuer`.
fn issuer_client(name: &str, issuer: &str, extra: &str) -> String {
    format!(
        r#"
[clients.{name}]
provider = "oauth2"
issuer = "{issuer}"
client_id = "{name}-client"
client_secret = "{SECRET}"
{extra}
"#
    )
}

#[tokio::test]
async fn check_exits_4_when_an_issuer_cannot_be_reached_and_2_when_its_metadata_is_wrong() {
    let server = MockServer::start_async().await;
    let issuer = server.url("/tenant");
    for (tenant, metadata) in [
        (
            "tenant",
            json!({
                "issuer": server.url("/someone-else"),
                "token_endpoint": server.url("/tenant/oauth2/token"),
            }),
        ),
        (
            "basic-only",
            json!({
                "issuer": server.url("/basic-only"),
                "token_endpoint": server.url("/basic-only/oauth2/token"),
                "token_endpoint_auth_methods_supported": ["client_secret_basic"],
            }),
        ),
    ] {
        server
            .mock_async(|when, then| {
                when.method(Method::GET)
                    .path(format!("/.well-known/oauth-authorization-server/{tenant}"));
                then.status(200).json_body(metadata);
            })
            .await;
    }
    let unreachable = issuer_client("down", &format!("http://127.0.0.1:{}", closed_port()), "");
    let scratch = Scratch::new();
    for (toml, expected, why) in [
        (unreachable.clone(), 4, "an issuer that cannot be reached"),
        (
            issuer_client("moved", &issuer, ""),
            2,
            "metadata naming another issuer",
        ),
        (
            issuer_client("post", &server.url("/basic-only"), "client_auth = \"post\""),
            2,
            "an auth method the server does not take",
        ),
        (
            issuer_client("gone", &server.url("/nothing"), ""),
            2,
            "no metadata at either URL",
        ),
        (
            format!("{unreachable}{}", issuer_client("moved", &issuer, "")),
            2,
            "a config problem outweighs a transport one",
        ),
    ] {
        let config = scratch.config(&format!("[defaults]\nmax_attempts = 1\n{toml}"));
        let config = config.to_str().expect("UTF-8 path");
        for json in [false, true] {
            let mut args = vec!["check", "--no-store", "--config", config];
            if json {
                args.push("--json");
            }
            let output = run(&scratch.dir, &args).await;
            let (code, _, stderr) = parts(&output);
            assert_eq!(code, Some(expected), "{why} (--json: {json}): {stderr}");
            assert_no_secret(&output);
        }
    }
}

/// The token store's encryption key of the example config; never printed.
const STORE_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// The repository's example config, every provider in it.
fn example_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../authmux.example.toml")
}

/// The example config, with every secret it names given but `AUTH0_CLIENT_SECRET`:
/// each other client is healthy, and `check` must still show it.
fn example_check(scratch: &Scratch, json: bool) -> Command {
    let learning = scratch.dir.join("360learning-secret");
    std::fs::write(&learning, SECRET).expect("write the secret");
    let config = example_config();
    let mut command = authmux(&scratch.dir);
    command
        .arg("check")
        .arg("--config")
        .arg(&config)
        .env("MENTION_ME_CLIENT_SECRET", SECRET)
        .env("EXCHANGER_SECRET", SECRET)
        .env("TOKEN_STORE_KEY", STORE_KEY)
        .env("AUTHMUX_CLIENTS__LEARNING__CLIENT_SECRET__FILE", &learning)
        .env_remove("AUTH0_CLIENT_SECRET");
    if json {
        command.arg("--json");
    }
    command
}

#[tokio::test]
async fn check_shows_every_client_the_file_and_the_store_beside_one_broken_client() {
    let scratch = Scratch::new();
    let missing = "clients.api.client_secret: environment variable AUTH0_CLIENT_SECRET is not set";

    let text = output(example_check(&scratch, false)).await;
    let (code, stdout, stderr) = parts(&text);
    assert_eq!(code, Some(2), "stderr: {stderr}");
    assert_eq!(stderr, format!("authmux: {missing}\n"));
    let lines: Vec<Vec<&str>> = stdout
        .lines()
        .map(|line| line.split_whitespace().collect())
        .collect();
    let config = example_config();
    let store = scratch.dir.join("cache").join("authmux");
    let problem = format!("not usable: {missing}");
    let problem: Vec<&str> = problem.split_whitespace().collect();
    assert_eq!(
        lines,
        [
            vec!["file", config.to_str().expect("UTF-8 path")],
            [vec!["api", "auth0"], problem].concat(),
            vec!["ci", "oauth2", "https://idp.example.com/oauth2/token"],
            vec![
                "grant",
                "jwt_bearer,",
                "assertion:",
                "file",
                "/run/ci/oidc-token"
            ],
            vec!["downstream", "oauth2", "https://sts.example.com/token"],
            vec![
                "grant",
                "token_exchange,",
                "subject_token:",
                "client",
                "entra",
                "(client_assertion:",
                "file",
                "/var/run/secrets/azure/tokens/azure-identity-token)"
            ],
            vec![
                "entra",
                "oauth2",
                "https://login.microsoftonline.com/TENANT/oauth2/v2.0/token"
            ],
            vec![
                "grant",
                "client_credentials,",
                "client_assertion:",
                "file",
                "/var/run/secrets/azure/tokens/azure-identity-token"
            ],
            vec![
                "learning",
                "360learning",
                "https://app.360learning.com/api/v2/oauth2/token"
            ],
            vec![
                "okta",
                "oauth2",
                "https://example.okta.com/oauth2/default/v1/token"
            ],
            vec![
                "referrals",
                "mention-me",
                "https://demo.mention-me.com/api/oauth/token"
            ],
            vec![
                "store",
                "file",
                store.to_str().expect("UTF-8 path"),
                "(reachable,",
                "encrypted)"
            ],
        ],
        "{stdout}"
    );
    assert_no_secret(&text);

    let output = output(example_check(&scratch, true)).await;
    let (code, stdout, stderr) = parts(&output);
    assert_eq!(code, Some(2), "stderr: {stderr}");
    let found: Value = serde_json::from_str(&stdout).expect("one JSON object");
    assert_eq!(found["file"], json!(config.to_str()));
    assert_eq!(
        found["clients"],
        json!([
            {"name": "api", "provider": "auth0", "grant_type": "client_credentials", "token_url": null, "problems": [missing]},
            {"name": "ci", "provider": "oauth2", "grant_type": "jwt_bearer",
             "token_url": "https://idp.example.com/oauth2/token",
             "inputs": ["assertion: file /run/ci/oidc-token"], "problems": []},
            {"name": "downstream", "provider": "oauth2", "grant_type": "token_exchange",
             "token_url": "https://sts.example.com/token",
             "inputs": ["subject_token: client entra (client_assertion: file /var/run/secrets/azure/tokens/azure-identity-token)"],
             "problems": []},
            {"name": "entra", "provider": "oauth2", "grant_type": "client_credentials",
             "token_url": "https://login.microsoftonline.com/TENANT/oauth2/v2.0/token",
             "inputs": ["client_assertion: file /var/run/secrets/azure/tokens/azure-identity-token"],
             "problems": []},
            {"name": "learning", "provider": "360learning", "grant_type": "client_credentials",
             "token_url": "https://app.360learning.com/api/v2/oauth2/token", "problems": []},
            {"name": "okta", "provider": "oauth2", "grant_type": "client_credentials",
             "token_url": "https://example.okta.com/oauth2/default/v1/token", "problems": []},
            {"name": "referrals", "provider": "mention-me", "grant_type": "client_credentials",
             "token_url": "https://demo.mention-me.com/api/oauth/token", "problems": []},
        ])
    );
    assert_eq!(found["problems"], json!([missing]));
    assert_eq!(found["store"]["encrypted"], json!(true), "{stdout}");
    assert_no_secret(&output);
    for output in [&text, &output] {
        let (_, stdout, stderr) = parts(output);
        assert!(!stdout.contains(STORE_KEY) && !stderr.contains(STORE_KEY));
    }
}

#[tokio::test]
async fn check_never_quotes_a_secret_of_the_wrong_type() {
    let server = MockServer::start_async().await;
    let scratch = Scratch::new();
    let config = scratch.config(&format!(
        "{}\n[store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:{}/0\"\npassword = 83749201\n",
        mention_me_config(&server),
        closed_port()
    ));
    let config = config.to_str().expect("UTF-8 path");
    for json in [false, true] {
        let mut args = vec!["check", "--config", config];
        if json {
            args.push("--json");
        }
        let output = run(&scratch.dir, &args).await;
        let (code, stdout, stderr) = parts(&output);
        assert_eq!(code, Some(2), "stderr: {stderr}");
        assert!(
            stderr.contains("store.password: expected a string")
                || stdout.contains("store.password: expected a string"),
            "{stdout}{stderr}"
        );
        assert!(!stdout.contains("83749201"), "{stdout}");
        assert!(!stderr.contains("83749201"), "{stderr}");
    }
}

#[tokio::test]
async fn completions_are_generated_for_each_shell() {
    let scratch = Scratch::new();
    for shell in ["bash", "zsh", "fish"] {
        let output = run(&scratch.dir, &["completions", shell]).await;
        let (code, stdout, _) = parts(&output);
        assert_eq!(code, Some(0), "{shell}");
        assert!(stdout.contains("authmux"), "{shell}");
        assert!(stdout.contains("check"), "{shell}: the subcommands");
    }
    let output = run(&scratch.dir, &["completions", "tcsh"]).await;
    assert_eq!(
        parts(&output).0,
        Some(2),
        "an unknown shell is a usage error"
    );
}

/// `authmux completions bash | head -c1`: the reader goes away, and the
/// writer gets a broken pipe. Here the pipe's read end is closed before the
/// binary starts, so every write fails, whatever the timing.
#[tokio::test]
async fn completions_into_a_closed_pipe_exit_1_without_a_panic() {
    let scratch = Scratch::new();
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let mut command = authmux(&scratch.dir);
    command.args(["completions", "bash"]).stdout(writer);

    let output = output(command).await;

    let (code, _, stderr) = parts(&output);
    assert_eq!(code, Some(1), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(error_lines(&stderr).len(), 1, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("authmux: cannot write the output: "),
        "{stderr}"
    );
}

#[tokio::test]
async fn check_prints_every_config_problem() {
    let scratch = Scratch::new();
    let config = scratch.config(
        r#"
[defaults]
max_attempts = 0

[clients.x]
provider = "okta2"
"#,
    );
    let config = config.to_str().expect("UTF-8 path");

    let output = run(&scratch.dir, &["check", "--config", config]).await;

    let (code, stdout, stderr) = parts(&output);
    assert_eq!(code, Some(2), "stderr: {stderr}");
    // The config cannot be read, so no client is listed; the file is.
    assert_eq!(stdout, format!("file  {config}\n"));
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(lines[0].contains("defaults.max_attempts"), "{stderr}");
    assert!(lines[1].contains("clients.x.provider"), "{stderr}");
    assert!(lines[1].contains("okta2"), "{stderr}");
}

#[tokio::test]
async fn check_builds_every_client_and_prints_every_problem() {
    let scratch = Scratch::new();
    // Both load fine; only building the clients finds the problems.
    let config = scratch.config(&format!(
        r#"
[clients.a]
provider = "mention-me"
client_id = "id"
client_secret = "{SECRET}"

[clients.b]
provider = "mention-me"
client_id = "id"
client_secret = {{ env = "CLI_TEST_UNSET_SECRET_VARIABLE" }}
environment = "demo"
"#
    ));
    let config = config.to_str().expect("UTF-8 path");

    let output = run(&scratch.dir, &["check", "--config", config]).await;

    let (code, stdout, stderr) = parts(&output);
    assert_eq!(code, Some(2), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(lines[0].contains("clients.a.environment"), "{stderr}");
    assert!(lines[1].contains("clients.b.client_secret"), "{stderr}");
    // Each client is listed with what stops it, beside the file and store.
    let listed: Vec<&str> = stdout.lines().collect();
    assert_eq!(listed.len(), 4, "{stdout}");
    assert_eq!(listed[0], format!("file  {config}"));
    assert!(
        listed[1].starts_with("a  mention-me  not usable: clients.a.environment: "),
        "{stdout}"
    );
    assert!(
        listed[2].starts_with("b  mention-me  not usable: clients.b.client_secret: "),
        "{stdout}"
    );
    assert!(listed[3].starts_with("store  file "), "{stdout}");
    assert_no_secret(&output);
}

#[tokio::test]
async fn a_missing_config_file_is_a_usage_error() {
    let scratch = Scratch::new();
    let missing = scratch.dir.join("missing.toml");
    let missing = missing.to_str().expect("UTF-8 path");
    for args in [
        vec!["token", "mm", "--config", missing],
        vec!["check", "--config", missing],
    ] {
        let output = run(&scratch.dir, &args).await;
        let (code, stdout, stderr) = parts(&output);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert_eq!(stdout, "");
        assert!(stderr.contains("missing.toml"), "{stderr}");
    }
}

#[tokio::test]
async fn without_any_config_every_place_tried_is_named() {
    // No --config, no $AUTHMUX_CONFIG, no ./authmux.toml, no variable.
    let scratch = Scratch::new();
    for args in [vec!["check"], vec!["token", "mm"]] {
        let output = run(&scratch.dir, &args).await;

        let (code, stdout, stderr) = parts(&output);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert_eq!(stdout, "");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("$AUTHMUX_CONFIG (not set)"), "{stderr}");
        assert!(
            stderr.contains("./authmux.toml (no such file in "),
            "{stderr}"
        );
        assert!(stderr.contains("AUTHMUX_CLIENTS__"), "{stderr}");
    }
}

#[tokio::test]
async fn check_of_a_file_without_clients_names_the_file() {
    let scratch = Scratch::new();
    scratch.config("[defaults]\ntimeout = \"5s\"\n");

    let output = run(&scratch.dir, &["check"]).await;

    let (code, stdout, stderr) = parts(&output);
    assert_eq!(code, Some(2), "stderr: {stderr}");
    // No client is listed; the file and the store are all stdout has.
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(lines[0], "file  authmux.toml");
    assert!(lines[1].starts_with("store  file "), "{stdout}");
    assert_eq!(stderr, "authmux: no clients configured in authmux.toml\n");
}

#[tokio::test]
async fn check_of_a_broken_file_gives_the_line_never_the_text() {
    let scratch = Scratch::new();
    scratch.config(&format!(
        "[clients.mm]\nprovider = \"mention-me\"\nclient_secret = \"{SECRET}\nclient_id = \"id\"\n"
    ));

    let output = run(&scratch.dir, &["check"]).await;

    let (code, stdout, stderr) = parts(&output);
    assert_eq!(code, Some(2), "stderr: {stderr}");
    assert_eq!(stdout, "file  authmux.toml\n");
    assert!(
        stderr.starts_with("authmux: authmux.toml: TOML syntax error at line 3, column "),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_no_secret(&output);
}

#[tokio::test]
async fn an_unrelated_authmux_variable_does_not_break_the_config() {
    let server = MockServer::start_async().await;
    let scratch = Scratch::new();
    scratch.config(&mention_me_config(&server));
    let mut command = authmux(&scratch.dir);
    command.arg("check").env("AUTHMUX_LOG", "debug");

    let output = output(command).await;

    let (code, stdout, stderr) = parts(&output);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert!(
        stdout.lines().any(|line| line.starts_with("mm ")),
        "{stdout}"
    );
}

#[tokio::test]
async fn usage_errors_exit_2() {
    let scratch = Scratch::new();
    for args in [
        vec![],
        vec!["fetch"],
        vec!["token"],
        vec!["token", "a", "--jsn"],
        vec!["request", "a"],
        vec!["request", "a", "https://a.example", "--data"],
    ] {
        let output = run(&scratch.dir, &args).await;
        assert_eq!(output.status.code(), Some(2), "{args:?}");
    }
}

#[tokio::test]
async fn help_carries_examples() {
    let scratch = Scratch::new();
    for (args, example) in [
        (vec!["--help"], "authmux token api"),
        (vec!["-h"], "authmux token api"),
        (vec!["token", "--help"], "authmux token api --json"),
        (vec!["check", "--help"], "authmux check --config"),
        (vec!["help", "token"], "authmux token api --json"),
        (
            vec!["--help"],
            "5  request: the response's HTTP status was not 2xx",
        ),
        (vec!["--help"], "reads each issuer's metadata"),
        (vec!["request", "--help"], "authmux request api https://"),
        (
            vec!["request", "--help"],
            "5  the response's status was not 2xx",
        ),
    ] {
        let output = run(&scratch.dir, &args).await;
        let (code, stdout, _) = parts(&output);
        assert_eq!(code, Some(0), "{args:?}");
        assert!(stdout.contains("Examples:"), "{args:?}: {stdout}");
        assert!(stdout.contains(example), "{args:?}: {stdout}");
    }
}

/// Serves `token` on the Mention Me token path, at most `times` times.
async fn serve_bearer_token<'a>(
    server: &'a MockServer,
    token: &str,
    times: Option<usize>,
) -> httpmock::Mock<'a> {
    let mock = serve_token(
        server,
        200,
        json!({"access_token": token, "expires_in": 3600, "token_type": "bearer"}),
    )
    .await;
    if let Some(times) = times {
        mock.up_to_n_times_async(times).await;
    }
    mock
}

/// Runs `authmux request mm <url> <args> --config <config>` in `scratch`.
async fn request(scratch: &Scratch, config: &Path, url: &str, args: &[&str]) -> Output {
    let config = config.to_str().expect("UTF-8 path");
    let mut all = vec!["request", "mm", url];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--config", config]);
    run(&scratch.dir, &all).await
}

/// Neither the secret nor `token` anywhere in the output.
fn assert_no_credentials(output: &Output, token: &str) {
    assert_no_secret(output);
    let (_, stdout, stderr) = parts(output);
    assert!(!stdout.contains(token), "stdout: {stdout}");
    assert!(!stderr.contains(token), "stderr: {stderr}");
}

#[tokio::test]
async fn request_sends_the_bearer_token_and_prints_the_body_exactly() {
    let server = MockServer::start_async().await;
    let access_token = jwt(&claims());
    let tokens = serve_bearer_token(&server, &access_token, None).await;
    // No trailing newline, and one in the middle: printed as is.
    let body = "{\"things\":[1,2]}\nsecond line";
    let api = server
        .mock_async(|when, then| {
            when.method(Method::GET)
                .path("/api/things")
                .query_param("page", "2")
                .header("authorization", format!("Bearer {access_token}"));
            then.status(200).body(body);
        })
        .await;
    let scratch = Scratch::new();
    let config = scratch.config(&mention_me_config(&server));

    let url = server.url("/api/things?page=2");
    let output = request(&scratch, &config, &url, &[]).await;

    let (code, stdout, stderr) = parts(&output);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert_eq!(stdout, body);
    assert_eq!(stderr, "");
    api.assert_calls_async(1).await;
    tokens.assert_calls_async(1).await;
    assert_no_credentials(&output, &access_token);
}

#[tokio::test]
async fn request_sends_the_method_headers_and_body_given() {
    let server = MockServer::start_async().await;
    serve_bearer_token(&server, "t-post", None).await;
    let api = server
        .mock_async(|when, then| {
            when.method(Method::POST)
                .path("/api/things")
                .header("authorization", "Bearer t-post")
                .header("x-trace", "1")
                .body(r#"{"a":1}"#);
            then.status(201).body("created");
        })
        .await;
    let scratch = Scratch::new();
    let config = scratch.config(&mention_me_config(&server));

    let url = server.url("/api/things");
    let output = request(
        &scratch,
        &config,
        &url,
        &["-X", "POST", "-H", "X-Trace: 1", "-d", r#"{"a":1}"#],
    )
    .await;

    let (code, stdout, stderr) = parts(&output);
    assert_eq!(code, Some(0), "a 201 is a success; stderr: {stderr}");
    assert_eq!(stdout, "created");
    api.assert_calls_async(1).await;
}

#[tokio::test]
async fn request_sends_a_file_as_the_body_and_posts_by_default() {
    let server = MockServer::start_async().await;
    serve_bearer_token(&server, "t-file", None).await;
    // Line breaks included: the file goes as it is.
    let content = "{\n  \"batch\": [1, 2, 3]\n}\n";
    let api = server
        .mock_async(|when, then| {
            when.method(Method::POST)
                .path("/api/import")
                .header("authorization", "Bearer t-file")
                .body(content);
            then.status(202);
        })
        .await;
    let scratch = Scratch::new();
    let config = scratch.config(&mention_me_config(&server));
    let file = scratch.dir.join("batch.json");
    std::fs::write(&file, content).expect("write the body file");
    let data = format!("@{}", file.to_str().expect("UTF-8 path"));

    let url = server.url("/api/import");
    let output = request(&scratch, &config, &url, &["-d", &data]).await;

    let (code, stdout, stderr) = parts(&output);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert_eq!(stdout, "");
    api.assert_calls_async(1).await;
}

#[tokio::test]
async fn a_non_2xx_response_exits_5_and_its_body_is_still_printed() {
    let server = MockServer::start_async().await;
    serve_bearer_token(&server, "t-404", None).await;
    let api = server
        .mock_async(|when, then| {
            when.method(Method::GET).path("/api/missing");
            then.status(404).body(r#"{"error":"no such thing"}"#);
        })
        .await;
    let scratch = Scratch::new();
    let config = scratch.config(&mention_me_config(&server));
    let url = server.url("/api/missing");

    let quiet = request(&scratch, &config, &url, &[]).await;
    let verbose = request(&scratch, &config, &url, &["-v"]).await;

    let (code, stdout, stderr) = parts(&quiet);
    assert_eq!(code, Some(5), "stderr: {stderr}");
    assert_eq!(stdout, r#"{"error":"no such thing"}"#);
    assert_eq!(stderr, "");
    let (code, stdout, stderr) = parts(&verbose);
    assert_eq!(code, Some(5), "stderr: {stderr}");
    assert_eq!(stdout, r#"{"error":"no such thing"}"#);
    assert!(
        stderr.lines().any(|line| line == "HTTP 404 Not Found"),
        "{stderr}"
    );
    assert_no_credentials(&verbose, "t-404");
    api.assert_calls_async(2).await;
}

#[tokio::test]
async fn verbose_prints_the_status_line_of_a_success_too() {
    let server = MockServer::start_async().await;
    serve_bearer_token(&server, "t-verbose", None).await;
    server
        .mock_async(|when, then| {
            when.method(Method::GET).path("/api/things");
            then.status(200).body("ok");
        })
        .await;
    let scratch = Scratch::new();
    let config = scratch.config(&mention_me_config(&server));

    let output = request(&scratch, &config, &server.url("/api/things"), &["-v"]).await;

    let (code, stdout, stderr) = parts(&output);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert_eq!(stdout, "ok");
    assert!(stderr.lines().any(|line| line == "HTTP 200 OK"), "{stderr}");
    assert_no_credentials(&output, "t-verbose");
}

#[tokio::test]
async fn a_refused_token_exits_3_and_the_api_is_never_called() {
    let server = MockServer::start_async().await;
    let tokens = serve_token(&server, 401, json!({"error": "invalid_client"})).await;
    let api = server
        .mock_async(|when, then| {
            when.path("/api/things");
            then.status(200);
        })
        .await;
    let scratch = Scratch::new();
    let config = scratch.config(&mention_me_config(&server));

    let url = server.url("/api/things");
    let output = request(&scratch, &config, &url, &["-v", "-d", "x"]).await;

    let (code, stdout, stderr) = parts(&output);
    assert_eq!(code, Some(3), "stderr: {stderr}");
    assert_eq!(stdout, "");
    // -v adds log events; the error is still one line.
    assert_eq!(error_lines(&stderr).len(), 1, "one error line: {stderr}");
    assert!(stderr.contains("\"mm\""), "{stderr}");
    assert!(stderr.contains("mention-me"), "{stderr}");
    assert!(stderr.contains("invalid_client"), "{stderr}");
    assert_no_secret(&output);
    tokens.assert_calls_async(1).await;
    api.assert_calls_async(0).await;
}

#[tokio::test]
async fn a_token_server_error_exits_4() {
    let server = MockServer::start_async().await;
    serve_token(&server, 503, json!({"message": "down"})).await;
    let api = server
        .mock_async(|when, then| {
            when.path("/api/things");
            then.status(200);
        })
        .await;
    let scratch = Scratch::new();
    let config = scratch.config(&mention_me_config(&server));

    let output = request(&scratch, &config, &server.url("/api/things"), &[]).await;

    let (code, _, stderr) = parts(&output);
    assert_eq!(code, Some(4), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("503"), "{stderr}");
    api.assert_calls_async(0).await;
}

/// The mocks of a token that the API rejects once.
struct Rejection<'a> {
    /// The token endpoint's first answer, `stale`.
    stale: httpmock::Mock<'a>,
    /// Its later answers, `fresh`.
    fresh: httpmock::Mock<'a>,
    /// `POST /api/things` with `payload` and the fresh token: 200 `accepted`.
    ok: httpmock::Mock<'a>,
    /// Any other call to `/api/things`: Mention Me's 401.
    rejected: httpmock::Mock<'a>,
}

async fn rejection<'a>(server: &'a MockServer, stale: &str, fresh: &str) -> Rejection<'a> {
    let stale = serve_bearer_token(server, stale, Some(1)).await;
    let authorization = format!("Bearer {fresh}");
    let fresh = serve_bearer_token(server, fresh, None).await;
    let ok = server
        .mock_async(|when, then| {
            when.method(Method::POST)
                .path("/api/things")
                .header("authorization", authorization)
                .body("payload");
            then.status(200).body("accepted");
        })
        .await;
    let rejected = server
        .mock_async(|when, then| {
            when.path("/api/things");
            then.status(401)
                .json_body(json!({"code": "401", "message": "Expired token."}));
        })
        .await;
    Rejection {
        stale,
        fresh,
        ok,
        rejected,
    }
}

#[tokio::test]
async fn a_rejected_token_is_replaced_once_and_the_request_sent_again() {
    let server = MockServer::start_async().await;
    let Rejection {
        stale,
        fresh,
        ok,
        rejected,
    } = rejection(&server, "stale", "fresh").await;
    let scratch = Scratch::new();
    let config = scratch.config(&mention_me_config(&server));

    // A body too: it is sent again with the fresh token.
    let url = server.url("/api/things");
    let output = request(&scratch, &config, &url, &["-d", "payload"]).await;

    let (code, stdout, stderr) = parts(&output);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert_eq!(stdout, "accepted");
    assert_eq!(stderr, "");
    assert_eq!(
        (stale.calls_async().await, fresh.calls_async().await),
        (1, 1),
        "the token endpoint is called twice"
    );
    assert_eq!(
        (rejected.calls_async().await, ok.calls_async().await),
        (1, 1)
    );
    assert_no_credentials(&output, "stale");
    assert_no_credentials(&output, "fresh");
}

#[tokio::test]
async fn a_request_for_an_unknown_client_is_a_usage_error() {
    let server = MockServer::start_async().await;
    let tokens = serve_bearer_token(&server, "t-unknown", None).await;
    let scratch = Scratch::new();
    let config = scratch.config(&mention_me_config(&server));
    let config = config.to_str().expect("UTF-8 path");

    let url = server.url("/api/things");
    let output = run(&scratch.dir, &["request", "nope", &url, "--config", config]).await;

    let (code, stdout, stderr) = parts(&output);
    assert_eq!(code, Some(2), "stderr: {stderr}");
    assert_eq!(stdout, "");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("\"nope\""), "{stderr}");
    assert!(stderr.contains("configured: mm"), "{stderr}");
    tokens.assert_calls_async(0).await;
}

#[tokio::test]
async fn malformed_requests_are_usage_errors_and_nothing_is_sent() {
    let server = MockServer::start_async().await;
    let tokens = serve_bearer_token(&server, "t-malformed", None).await;
    let scratch = Scratch::new();
    let config = scratch.config(&mention_me_config(&server));
    let url = server.url("/api/things");
    let missing = scratch.dir.join("no-such-body.json");
    let missing = format!("@{}", missing.to_str().expect("UTF-8 path"));

    for (url, args, expected) in [
        (
            url.as_str(),
            vec!["-H", "Bearer private-value"],
            "-H number 1",
        ),
        (
            url.as_str(),
            vec!["-H", "A: 1", "-H", "B C: 2"],
            "-H number 2",
        ),
        (url.as_str(), vec!["-X", "G(E)T"], "HTTP method"),
        (url.as_str(), vec!["-d", &missing], "no-such-body.json"),
        ("api/things", vec![], "not a URL"),
        (
            // The token would go over plain HTTP to another machine.
            "http://api.example.com/things",
            vec![],
            "plain HTTP",
        ),
    ] {
        let output = request(&scratch, &config, url, &args).await;
        let (code, stdout, stderr) = parts(&output);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert_eq!(stdout, "");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("private-value"), "{stderr}");
    }
    tokens.assert_calls_async(0).await;
}

#[tokio::test]
async fn an_unreachable_api_exits_4() {
    let server = MockServer::start_async().await;
    serve_bearer_token(&server, "t-unreachable", None).await;
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let scratch = Scratch::new();
    let config = scratch.config(&mention_me_config(&server));

    let url = format!("http://127.0.0.1:{port}/api/things?key=query-value");
    let output = request(&scratch, &config, &url, &[]).await;

    let (code, stdout, stderr) = parts(&output);
    assert_eq!(code, Some(4), "stderr: {stderr}");
    assert_eq!(stdout, "");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("\"mm\" (mention-me)"), "{stderr}");
    assert!(
        stderr.contains(&format!("could not reach http://127.0.0.1:{port}: ")),
        "{stderr}"
    );
    assert!(
        stderr.to_ascii_lowercase().contains("connection refused"),
        "the cause is named: {stderr}"
    );
    assert!(!stderr.contains("/api/things"), "{stderr}");
    assert!(!stderr.contains("query-value"), "{stderr}");
    assert_no_credentials(&output, "t-unreachable");
}

#[tokio::test]
async fn an_authorization_header_given_is_sent_as_is_without_a_token() {
    let server = MockServer::start_async().await;
    let tokens = serve_bearer_token(&server, "t-unused", None).await;
    let api = server
        .mock_async(|when, then| {
            when.path("/api/things")
                .header("authorization", "Basic given");
            then.status(200).body("ok");
        })
        .await;
    let scratch = Scratch::new();
    let config = scratch.config(&mention_me_config(&server));

    let url = server.url("/api/things");
    let output = request(
        &scratch,
        &config,
        &url,
        &["-H", "Authorization: Basic given"],
    )
    .await;

    let (code, stdout, stderr) = parts(&output);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert_eq!(stdout, "ok");
    api.assert_calls_async(1).await;
    tokens.assert_calls_async(0).await;
}

#[tokio::test]
async fn a_stalled_api_or_token_endpoint_exits_4_when_the_timeout_runs_out() {
    let server = MockServer::start_async().await;
    serve_bearer_token(&server, "t-stalled", None).await;
    server
        .mock_async(|when, then| {
            when.path("/api/stalled");
            then.status(200).delay(Duration::from_secs(60)).body("late");
        })
        .await;
    let stalled_tokens = MockServer::start_async().await;
    stalled_tokens
        .mock_async(|when, then| {
            when.method(Method::POST);
            then.status(200)
                .delay(Duration::from_secs(60))
                .json_body(json!({"access_token": "late", "expires_in": 3600}));
        })
        .await;
    let scratch = Scratch::new();
    let config = scratch.config(&mention_me_config(&server));
    let other = Scratch::new();
    let stalled_config = other.config(&mention_me_config(&stalled_tokens));

    // A separate process with a real socket: paused time cannot drive it,
    // so each run waits 300 ms of real time.
    for (scratch, config, url) in [
        (&scratch, &config, server.url("/api/stalled")),
        (&other, &stalled_config, server.url("/api/things")),
    ] {
        let output = request(scratch, config, &url, &["--timeout", "300ms"]).await;
        let (code, stdout, stderr) = parts(&output);
        assert_eq!(code, Some(4), "{url}: stderr: {stderr}");
        assert_eq!(stdout, "", "{url}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains("\"mm\" (mention-me)"), "{stderr}");
        assert!(stderr.contains("within 300ms (--timeout)"), "{stderr}");
        assert!(!stderr.contains("/api/"), "no path: {stderr}");
        assert_no_credentials(&output, "t-stalled");
    }
}

#[tokio::test]
async fn verbose_logs_the_fetch_and_the_refresh_without_secrets() {
    let server = MockServer::start_async().await;
    let Rejection { stale, fresh, .. } =
        rejection(&server, "stale-token-5e1", "fresh-token-6f2").await;
    let scratch = Scratch::new();
    let config = scratch.config(&mention_me_config(&server));

    let url = server.url("/api/things?key=query-value");
    let output = request(&scratch, &config, &url, &["-v", "-d", "payload"]).await;

    let (code, stdout, stderr) = parts(&output);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert_eq!(stdout, "accepted");
    for event in [
        "token endpoint answered",
        "token cached",
        "token rejected; retrying once with a fresh token",
        "HTTP 200 OK",
    ] {
        assert!(stderr.contains(event), "{event:?} is logged: {stderr}");
    }
    assert!(error_lines(&stderr).is_empty(), "{stderr}");
    assert!(!stderr.contains("query-value"), "{stderr}");
    assert_no_credentials(&output, "stale-token-5e1");
    assert_no_credentials(&output, "fresh-token-6f2");
    assert_eq!(
        (stale.calls_async().await, fresh.calls_async().await),
        (1, 1)
    );
}

#[tokio::test]
async fn rust_log_turns_on_logging_for_any_command() {
    let server = MockServer::start_async().await;
    serve_bearer_token(&server, "t-logged", None).await;
    let scratch = Scratch::new();
    let config = scratch.config(&mention_me_config(&server));
    let config = config.to_str().expect("UTF-8 path");

    let mut command = authmux(&scratch.dir);
    command
        .args(["token", "mm", "--config", config])
        .env("RUST_LOG", "authmux_core=debug");
    let output = output(command).await;

    let (code, stdout, stderr) = parts(&output);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert_eq!(stdout, "t-logged\n");
    assert!(stderr.contains("token endpoint answered"), "{stderr}");
    assert!(!stderr.contains("t-logged"), "{stderr}");
    assert_no_secret(&output);
}

#[tokio::test]
async fn a_redirect_is_the_answer_and_is_not_followed() {
    let server = MockServer::start_async().await;
    serve_bearer_token(&server, "t-redirect", None).await;
    let target = server
        .mock_async(|when, then| {
            when.path("/api/elsewhere");
            then.status(200);
        })
        .await;
    server
        .mock_async(|when, then| {
            when.path("/api/moved");
            then.status(302).header("location", "/api/elsewhere");
        })
        .await;
    let scratch = Scratch::new();
    let config = scratch.config(&mention_me_config(&server));

    let output = request(&scratch, &config, &server.url("/api/moved"), &["-v"]).await;

    let (code, _, stderr) = parts(&output);
    assert_eq!(code, Some(5), "stderr: {stderr}");
    assert!(
        stderr.lines().any(|line| line == "HTTP 302 Found"),
        "{stderr}"
    );
    target.assert_calls_async(0).await;
}

/// The `nonce` claim of a request's DPoP proof, if it has one.
fn proof_nonce(request: &httpmock::prelude::HttpMockRequest) -> Option<String> {
    let proof = request.headers().get("dpop")?.to_str().ok()?.to_owned();
    let payload = URL_SAFE_NO_PAD.decode(proof.split('.').nth(1)?).ok()?;
    let claims: Value = serde_json::from_slice(&payload).ok()?;
    claims.get("nonce")?.as_str().map(str::to_owned)
}

#[tokio::test]
async fn a_dpop_nonce_challenge_after_another_challenge_is_answered() {
    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.method(Method::POST)
                .path("/oauth/token")
                .header_exists("dpop");
            then.status(200).json_body(
                json!({"access_token": "t-bound", "token_type": "DPoP", "expires_in": 3600}),
            );
        })
        .await;
    let challenge = server
        .mock_async(|when, then| {
            when.path("/api/things")
                .is_true(|request| proof_nonce(request).is_none());
            then.status(401)
                .header(
                    "www-authenticate",
                    r#"Bearer realm="api", DPoP algs="ES256", error=use_dpop_nonce"#,
                )
                .header("dpop-nonce", "api-nonce-1");
        })
        .await;
    let answered = server
        .mock_async(|when, then| {
            when.path("/api/things")
                .header("authorization", "DPoP t-bound")
                .is_true(|request| proof_nonce(request).as_deref() == Some("api-nonce-1"));
            then.status(200).body("bound");
        })
        .await;
    let scratch = Scratch::new();
    let config = scratch.config(&format!(
        r#"
[clients.mm]
provider = "auth0"
domain = "{}"
client_id = "bound-client"
client_secret = "{SECRET}"
audience = "https://api.example.com"
dpop = true
"#,
        server.base_url()
    ));

    let output = request(&scratch, &config, &server.url("/api/things"), &[]).await;

    let (code, stdout, stderr) = parts(&output);
    assert_eq!(code, Some(0), "not exit 5: stderr: {stderr}");
    assert_eq!(stdout, "bound");
    assert_eq!(
        (challenge.calls_async().await, answered.calls_async().await),
        (1, 1)
    );
    assert_no_credentials(&output, "t-bound");
}

/// A Mention Me token response, served after `delay`, that lasts an hour.
async fn serve_slow_token(server: &MockServer, delay: Duration) -> httpmock::Mock<'_> {
    server
        .mock_async(|when, then| {
            when.method(Method::POST).path("/api/oauth/token");
            then.status(200)
                .delay(delay)
                .json_body(json!({"access_token": jwt(&claims()), "expires_in": 3600}));
        })
        .await
}

#[tokio::test]
async fn sequential_token_runs_share_one_token_through_the_file_store() {
    let server = MockServer::start_async().await;
    let mock = serve_slow_token(&server, Duration::ZERO).await;
    let scratch = Scratch::new();
    let config = scratch.config(&mention_me_config(&server));
    let config = config.to_str().expect("UTF-8 path");

    let mut printed = Vec::new();
    for _ in 0..3 {
        let output = run(&scratch.dir, &["token", "mm", "--config", config]).await;
        let (code, stdout, stderr) = parts(&output);
        assert_eq!(code, Some(0), "stderr: {stderr}");
        printed.push(stdout);
    }
    mock.assert_calls_async(1).await;
    assert!(printed.iter().all(|token| token == &printed[0]));

    let stored = std::fs::read_dir(scratch.dir.join("cache").join("authmux"))
        .expect("the store directory")
        .map(|entry| std::fs::read(entry.expect("entry").path()).expect("readable"))
        .collect::<Vec<_>>();
    assert!(!stored.is_empty(), "the token is in the file store");
    for bytes in &stored {
        assert!(
            !String::from_utf8_lossy(bytes).contains(SECRET),
            "no client secret at rest"
        );
    }

    let output = run(
        &scratch.dir,
        &["token", "mm", "--no-store", "--config", config],
    )
    .await;
    assert_eq!(output.status.code(), Some(0));
    mock.assert_calls_async(2).await;
}

#[tokio::test]
async fn parallel_token_runs_make_one_token_request() {
    let server = MockServer::start_async().await;
    // Slow enough that every run starts while the first is fetching.
    let mock = serve_slow_token(&server, Duration::from_millis(500)).await;
    let scratch = Scratch::new();
    let config = scratch.config(&mention_me_config(&server));
    let config = config.to_str().expect("UTF-8 path");

    let runs: Vec<_> = (0..20)
        .map(|_| {
            let mut command = authmux(&scratch.dir);
            command.args(["token", "mm", "--config", config]);
            tokio::spawn(output(command))
        })
        .collect();
    let mut printed = Vec::new();
    for run in runs {
        let output = run.await.expect("the run");
        let (code, stdout, stderr) = parts(&output);
        assert_eq!(code, Some(0), "stderr: {stderr}");
        printed.push(stdout);
    }
    mock.assert_calls_async(1).await;
    assert!(printed.iter().all(|token| token == &printed[0]));
}

#[tokio::test]
async fn store_false_and_no_store_in_check() {
    let server = MockServer::start_async().await;
    let mock = serve_slow_token(&server, Duration::ZERO).await;
    let scratch = Scratch::new();
    let config = scratch.config(&format!("{}store = false\n", mention_me_config(&server)));
    let config = config.to_str().expect("UTF-8 path");
    for _ in 0..2 {
        let output = run(&scratch.dir, &["token", "mm", "--config", config]).await;
        assert_eq!(output.status.code(), Some(0));
    }
    mock.assert_calls_async(2).await;

    let output = run(&scratch.dir, &["check", "--no-store", "--config", config]).await;
    let (code, stdout, _) = parts(&output);
    assert_eq!(code, Some(0));
    assert_eq!(stdout.lines().last(), Some("store  none"));
}

#[tokio::test]
async fn a_private_key_jwt_client_with_the_wrong_key_exits_3() {
    use authmux_testkit::keys;
    let idp = authmux_testkit::TokenServer::start().await;
    idp.expect_client_key("jwt-client", &keys::public_jwk(keys::RSA_JWK));
    let scratch = Scratch::new();
    let right = scratch.dir.join("right.pem");
    let wrong = scratch.dir.join("wrong.pem");
    std::fs::write(&right, keys::RSA_PKCS1_PEM).expect("write the key");
    std::fs::write(&wrong, keys::OTHER_RSA_PKCS1_PEM).expect("write the key");
    let config = |key: &Path| {
        format!(
            r#"
[defaults]
max_attempts = 1

[clients.api]
provider = "auth0"
domain = "{}"
client_id = "jwt-client"
audience = "https://api.example.com"
client_auth = "private_key_jwt"
client_assertion_key = {{ file = "{}" }}
"#,
            idp.base_url(),
            key.display()
        )
    };

    let path = scratch.config(&config(&right));
    let output = run(
        &scratch.dir,
        &["token", "api", "--config", path.to_str().expect("UTF-8")],
    )
    .await;
    let (code, stdout, stderr) = parts(&output);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert!(!stdout.is_empty());

    std::fs::remove_dir_all(scratch.dir.join("cache")).ok();
    let path = scratch.config(&config(&wrong));
    let output = run(
        &scratch.dir,
        &["token", "api", "--config", path.to_str().expect("UTF-8")],
    )
    .await;
    let (code, stdout, stderr) = parts(&output);
    assert_eq!(code, Some(3), "stderr: {stderr}");
    assert_eq!(stdout, "");
    assert!(
        stderr.contains("\"api\"") && stderr.contains("auth0"),
        "{stderr}"
    );
    assert!(stderr.contains("invalid_client"), "{stderr}");
    for line in keys::OTHER_RSA_PKCS1_PEM
        .lines()
        .filter(|line| !line.starts_with("-----"))
    {
        assert!(!stderr.contains(line), "{stderr}");
    }
}

#[tokio::test]
async fn a_wrong_secret_reaches_the_provider_instead_of_the_stored_token() {
    let server = MockServer::start_async().await;
    let right = server
        .mock_async(|when, then| {
            when.method(Method::POST)
                .path("/api/oauth/token")
                .body_includes(SECRET);
            then.status(200).json_body(
                json!({"access_token": jwt(&claims()), "token_type": "Bearer", "expires_in": 3600}),
            );
        })
        .await;
    let wrong = server
        .mock_async(|when, then| {
            when.method(Method::POST)
                .path("/api/oauth/token")
                .body_includes("wrong-secret-0000");
            then.status(401)
                .json_body(json!({"error": "invalid_client"}));
        })
        .await;
    let scratch = Scratch::new();
    let good = scratch.config(&mention_me_config(&server));
    let output = run(
        &scratch.dir,
        &["token", "mm", "--config", good.to_str().expect("UTF-8")],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    right.assert_calls_async(1).await;

    // The same client id and endpoint with another secret: the stored
    // token is not this credential's.
    let bad = scratch.config(&mention_me_config(&server).replace(SECRET, "wrong-secret-0000"));
    let output = run(
        &scratch.dir,
        &["token", "mm", "--config", bad.to_str().expect("UTF-8")],
    )
    .await;
    let (code, stdout, stderr) = parts(&output);
    assert_eq!(code, Some(3), "stderr: {stderr}");
    assert_eq!(stdout, "", "no token served");
    wrong.assert_calls_async(1).await;
    right.assert_calls_async(1).await;
}

#[tokio::test]
async fn without_a_home_the_default_store_steps_aside() {
    let server = MockServer::start_async().await;
    serve_token(
        &server,
        200,
        json!({"access_token": jwt(&claims()), "token_type": "Bearer", "expires_in": 3600}),
    )
    .await;
    let scratch = Scratch::new();
    let config = scratch.config(&mention_me_config(&server));
    let config = config.to_str().expect("UTF-8 path");
    let mut command = authmux(&scratch.dir);
    command
        .env_remove("HOME")
        .env_remove("XDG_CACHE_HOME")
        .args(["token", "mm", "--config", config]);
    let first = output(command).await;
    let (code, stdout, stderr) = parts(&first);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert!(!stdout.is_empty());
    assert_eq!(error_lines(&stderr).len(), 1, "{stderr}");
    assert!(stderr.contains("no token store"), "{stderr}");

    // Asked for by name, the file store still needs a directory.
    let explicit = scratch.config(&format!(
        "[store]\nkind = \"file\"\n{}",
        mention_me_config(&server)
    ));
    let mut command = authmux(&scratch.dir);
    command
        .env_remove("HOME")
        .env_remove("XDG_CACHE_HOME")
        .args(["token", "mm", "--config", explicit.to_str().expect("UTF-8")]);
    let second = output(command).await;
    let (code, _, stderr) = parts(&second);
    assert_eq!(code, Some(2), "stderr: {stderr}");
    assert!(stderr.contains("store.path"), "{stderr}");
}

/// The three secretless configs of the README: a workload token as the
/// client assertion, the JWT-bearer grant, and a token exchange chained on
/// the first client, through `token` and `check`.
#[tokio::test]
async fn secretless_clients_get_tokens_and_check_shows_their_chain_never_a_token() {
    use authmux_testkit::ExternalIssuer;
    let idp = authmux_testkit::TokenServer::start().await;
    let cluster = ExternalIssuer::new("https://kubernetes.default.svc");
    idp.trust_issuer(&cluster);
    let subject = "system:serviceaccount:payments:api";
    idp.federate("app", cluster.issuer(), subject);
    idp.expect_client("exchanger", SECRET);
    let scratch = Scratch::new();
    let token_file = scratch.dir.join("token");
    let workload = cluster.mint(subject, &idp.oauth2_token_url(), Duration::from_secs(3600));
    std::fs::write(&token_file, &workload).expect("write the token");
    let ci_file = scratch.dir.join("oidc-token");
    let oidc = cluster.mint("repo:acme/app", &idp.issuer(), Duration::from_secs(3600));
    std::fs::write(&ci_file, &oidc).expect("write the token");
    let path = scratch.config(&format!(
        r#"
[defaults]
max_attempts = 1

[clients.entra]
provider = "oauth2"
token_url = "{url}"
client_id = "app"
client_auth = "client_assertion"
client_assertion = {{ file = "{token}" }}

[clients.ci]
provider = "oauth2"
token_url = "{url}"
grant_type = "jwt_bearer"
assertion = {{ file = "{ci}" }}

[clients.downstream]
provider = "oauth2"
token_url = "{url}"
grant_type = "token_exchange"
subject_token = {{ client = "entra" }}
audience = "https://downstream.example.com"
client_id = "exchanger"
client_secret = "{SECRET}"
"#,
        url = idp.oauth2_token_url(),
        token = token_file.display(),
        ci = ci_file.display(),
    ));
    let config = path.to_str().expect("UTF-8");

    let output = run(&scratch.dir, &["token", "downstream", "--config", config]).await;
    let (code, stdout, stderr) = parts(&output);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    let info = idp
        .token_info(stdout.trim())
        .expect("issued by the testkit");
    assert_eq!(info.audience, ["https://downstream.example.com"]);
    let output = run(&scratch.dir, &["token", "ci", "--config", config]).await;
    let (code, stdout, stderr) = parts(&output);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    let info = idp
        .token_info(stdout.trim())
        .expect("issued by the testkit");
    assert_eq!(info.subject, "repo:acme/app");

    let output = run(&scratch.dir, &["check", "--config", config]).await;
    let (code, stdout, stderr) = parts(&output);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    let chain = format!(
        "grant token_exchange, subject_token: client entra (client_assertion: file {})",
        token_file.display()
    );
    assert!(stdout.contains(&chain), "{stdout}");
    assert!(
        stdout.contains("grant jwt_bearer, assertion: file"),
        "{stdout}"
    );
    for token in [&workload, &oidc] {
        assert!(!stdout.contains(token.as_str()) && !stderr.contains(token.as_str()));
    }
    let output = run(&scratch.dir, &["check", "--json", "--config", config]).await;
    let found: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let downstream = found["clients"]
        .as_array()
        .expect("clients")
        .iter()
        .find(|client| client["name"] == "downstream")
        .expect("downstream");
    assert_eq!(downstream["grant_type"], "token_exchange");
    assert_eq!(
        downstream["inputs"],
        json!([chain.trim_start_matches("grant token_exchange, ")])
    );

    // An expired workload token is the setup's to fix: exit 2, named,
    // never shown, and never sent.
    let expired = cluster.mint_with(json!({
        "sub": subject, "aud": idp.oauth2_token_url(), "iat": 1_700_000_000, "exp": 1_700_000_600,
    }));
    std::fs::write(&token_file, &expired).expect("write the token");
    std::fs::remove_dir_all(scratch.dir.join("cache")).ok();
    let before = idp.requests();
    let output = run(&scratch.dir, &["token", "entra", "--config", config]).await;
    let (code, stdout, stderr) = parts(&output);
    assert_eq!(code, Some(2), "stderr: {stderr}");
    assert_eq!(stdout, "");
    let line = error_lines(&stderr).join("\n");
    assert!(
        line.contains("client_assertion") && line.contains("expired"),
        "{line}"
    );
    assert!(!stderr.contains(&expired));
    assert_eq!(idp.requests(), before);
}

/// Without `proxy` in the config, the environment's `HTTPS_PROXY` takes the
/// token request and `NO_PROXY` lets it go direct; `proxy = "direct"`
/// goes direct whatever the environment and `[defaults]` say.
#[tokio::test]
async fn the_environments_https_proxy_is_honoured_and_no_proxy_or_direct_bypasses_it() {
    use authmux_testkit::tls::{ConnectProxy, TestCa, TlsTokenEndpoint};
    let server_ca = TestCa::new("authmux server CA");
    let endpoint = TlsTokenEndpoint::start(&server_ca.server_certificate(), &[]).await;
    let proxy = ConnectProxy::start().await;
    let scratch = Scratch::new();
    let ca_file = scratch.dir.join("ca.pem");
    std::fs::write(&ca_file, server_ca.pem()).expect("write the CA");
    let path = scratch.config(&format!(
        r#"
[defaults]
max_attempts = 1

[clients.bank]
provider = "oauth2"
token_url = "{}"
client_id = "payments"
client_secret = "{SECRET}"
tls_ca = {{ file = {:?} }}
"#,
        endpoint.token_url(),
        ca_file.display()
    ));
    let config = path.to_str().expect("UTF-8 path");
    let token = |no_proxy: Option<&str>| {
        let mut command = authmux(&scratch.dir);
        command
            .args(["token", "bank", "--no-store", "--config", config])
            .env("HTTPS_PROXY", proxy.url())
            .env_remove("https_proxy")
            .env_remove("no_proxy");
        match no_proxy {
            Some(hosts) => command.env("NO_PROXY", hosts),
            None => command.env_remove("NO_PROXY"),
        };
        output(command)
    };

    let (code, stdout, stderr) = parts(&token(None).await);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert!(!stdout.is_empty());
    assert_eq!(proxy.requests().len(), 1, "through the proxy");
    assert_eq!(endpoint.requests().len(), 1);

    let (code, _, stderr) = parts(&token(Some("127.0.0.1")).await);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert_eq!(proxy.requests().len(), 1, "NO_PROXY went around it");
    assert_eq!(endpoint.requests().len(), 2);

    // `proxy = "direct"` in the client beats both the environment and a
    // proxy that [defaults] gives every client.
    let text = std::fs::read_to_string(&path).expect("read the config");
    let direct = text
        .replace(
            "max_attempts = 1\n",
            &format!("max_attempts = 1\nproxy = \"{}\"\n", proxy.url()),
        )
        .replace(
            "client_id = \"payments\"\n",
            "client_id = \"payments\"\nproxy = \"direct\"\n",
        );
    std::fs::write(&path, direct).expect("write the config");
    let (code, _, stderr) = parts(&token(None).await);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert_eq!(proxy.requests().len(), 1, "direct: no proxy at all");
    assert_eq!(endpoint.requests().len(), 3);
}
