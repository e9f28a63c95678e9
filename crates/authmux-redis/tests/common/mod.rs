//! Real `redis-server` processes on free loopback ports, and a token
//! source that counts its fetches. A missing `redis-server` fails the test
//! with the way to install it: these tests never skip.
#![allow(dead_code, unreachable_pub)]

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use authmux_core::{Error, Token, TokenIdentity, TokenSource};

const INSTALL: &str = "these tests need a real Redis: install the Debian package redis-server \
     (apt-get install redis-server), or run scripts/test.sh, which installs it";

/// A port nobody listens on now, whose cluster bus port is free too.
pub fn free_port() -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().expect("local address").port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// One raw RESP command, for readiness checks: the first reply line.
fn raw(port: u16, command: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
    let mut buffer = [0u8; 4096];
    let read = stream.read(&mut buffer).ok()?;
    Some(String::from_utf8_lossy(&buffer[..read]).into_owned())
}

fn scratch(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "authmux-redis-{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// A `redis-server` of its own, killed when dropped.
pub struct RedisServer {
    pub port: u16,
    extra: Vec<String>,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts one with extra `redis-server` arguments, such as
    /// `["--requirepass", "pw"]`.
    pub fn start_with(extra: &[&str]) -> Self {
        let mut server = Self {
            port: free_port(),
            extra: extra.iter().map(|arg| (*arg).to_owned()).collect(),
            dir: scratch("server"),
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start redis-server ({error}): {INSTALL}"));
        self.child = Some(child);
        wait_until(&format!("redis-server on port {}", self.port), || {
            raw(self.port, "PING")
                .is_some_and(|reply| reply.starts_with("+PONG") || reply.starts_with("-NOAUTH"))
        });
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// `kill -9`: no goodbye to any client.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait_until(what: &str, ready: impl Fn() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{what} did not come up within 20 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A private CA and a server certificate for 127.0.0.1 signed by it, as
/// PEM, written into a scratch directory.
pub struct TlsFiles {
    pub ca_pem: String,
    pub dir: PathBuf,
}

impl TlsFiles {
    pub fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().expect("a CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "authmux test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("the CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);
        let server_key = KeyPair::generate().expect("a server key");
        let server_params =
            CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("server params");
        let server_cert = server_params
            .signed_by(&server_key, &issuer)
            .expect("the server certificate");
        let dir = scratch("tls");
        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("write ca.pem");
        std::fs::write(dir.join("server.pem"), server_cert.pem()).expect("write server.pem");
        std::fs::write(dir.join("server.key"), server_key.serialize_pem())
            .expect("write server.key");
        Self {
            ca_pem: ca_cert.pem(),
            dir,
        }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

impl Drop for TlsFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `redis-server` that also listens with TLS, on `tls_port`, with a
/// certificate from `files`; its plain port stays for readiness checks.
pub fn tls_server(files: &TlsFiles) -> (RedisServer, u16) {
    let tls_port = free_port();
    let server = RedisServer::start_with(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        &files.path("server.pem"),
        "--tls-key-file",
        &files.path("server.key"),
        "--tls-ca-cert-file",
        &files.path("ca.pem"),
        "--tls-auth-clients",
        "no",
    ]);
    (server, tls_port)
}

/// A 3-node Redis Cluster on loopback (3 masters, no replicas).
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|index| {
                let bus = free_port();
                let config = format!("nodes-{index}.conf");
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &config,
                    "--cluster-port",
                    &bus.to_string(),
                    "--cluster-node-timeout",
                    "2000",
                ])
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|error| panic!("cannot run redis-cli ({error}): {INSTALL}"));
        assert!(created.success(), "redis-cli --cluster create failed");
        for node in &nodes {
            wait_until("the cluster", || {
                raw(node.port, "CLUSTER INFO").is_some_and(|info| info.contains("cluster_state:ok"))
            });
        }
        Self { nodes }
    }

    /// The URL that names the cluster by one node.
    pub fn url(&self) -> String {
        format!("redis+cluster://127.0.0.1:{}", self.nodes[0].port)
    }

    /// The hash slot of `key`, as the cluster computes it.
    pub fn slot(&self, key: &str) -> u16 {
        let output = Command::new("redis-cli")
            .args([
                "-p",
                &self.nodes[0].port.to_string(),
                "CLUSTER",
                "KEYSLOT",
                key,
            ])
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .expect("a slot number")
    }
}

/// Tokens `token-1`, `token-2`, … of `lifetime`, after `delay`, counted.
#[derive(Clone)]
pub struct CountingSource {
    calls: Arc<AtomicUsize>,
    lifetime: Duration,
    delay: Duration,
    prefix: Arc<str>,
}

impl CountingSource {
    pub fn new(lifetime: Duration, delay: Duration) -> Self {
        Self {
            calls: Arc::new(AtomicUsize::new(0)),
            lifetime,
            delay,
            prefix: Arc::from("token"),
        }
    }

    /// Tokens named after this process too (`token-<pid>-1`), as a real
    /// provider's are unique across a fleet.
    #[allow(dead_code)]
    pub fn unique_to_this_process(mut self) -> Self {
        self.prefix = Arc::from(format!("token-{}", std::process::id()));
        self
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl TokenSource for CountingSource {
    fn provider(&self) -> &str {
        "counting"
    }

    fn identity(&self) -> TokenIdentity {
        TokenIdentity::new("counting", "memory://")
    }

    async fn fetch_token(&self) -> Result<Token, Error> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(self.delay).await;
        Token::builder(format!("{}-{call}", self.prefix))
            .lifetime(self.lifetime)
            .build()
    }
}

/// Runs `redis-cli` against the server at `url` and returns what it
/// printed.
pub fn redis_cli(url: &str, args: &[&str]) -> String {
    let port = url
        .rsplit(':')
        .next()
        .and_then(|tail| tail.split('/').next())
        .expect("a port in the URL");
    let output = std::process::Command::new("redis-cli")
        .args(["-p", port])
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&output.stdout).into_owned()
}
