//! The core of [authmux]: machine-to-machine OAuth 2.0 access tokens from
//! any provider, fetched once, cached, refreshed ahead of expiry and shared
//! by every caller.
//!
//! This crate is provider-free. It holds:
//!
//! * [`Token`]: an access token kept as a secret, with its type, expiry,
//!   scopes, a ready `Authorization` header value and unverified JWT claims;
//! * [`TokenSource`]: one round trip to a token endpoint, behind a cheap
//!   clonable handle, [`SharedTokenSource`];
//! * the wire layer ([`wire`]): a request description, a shared HTTP client
//!   (rustls, no redirects, timeouts, a 256 KiB body cap) and lenient
//!   response parsing into tokens or typed errors;
//! * [`ManagedToken`]: the cache, with lock-free reads, single-flight
//!   fetches, refresh ahead, retries and cool-down;
//! * [`TokenStore`]: a second cache level that tokens outlive the process
//!   in and a fleet shares them through, with a file store in [`store`];
//! * [`ExternalToken`]: a token issued by someone else (a Kubernetes
//!   service-account token, a CI job's OIDC token), read from a file, an
//!   environment variable or a command as it rotates, for secretless
//!   client authentication and token exchange;
//! * [`Error`]: one error type with [`Error::is_transient`].
//!
//! # Features
//!
//! * `metrics` (off by default): every cache records through the
//!   [`metrics`](https://docs.rs/metrics) facade, labelled by `client` and
//!   `provider`, on its slow path only (a `get` served from memory records
//!   nothing). The list, also in the `metrics` module:
//!
//!   | metric | kind | what |
//!   |---|---|---|
//!   | `authmux_token_requests_total` | counter | token requests, each retry included, by `outcome`: `ok`, `refused`, `rate_limited`, `server_error`, `transport`, `invalid_response` or `other` |
//!   | `authmux_token_fetch_seconds` | histogram | seconds per token request |
//!   | `authmux_refreshes_ahead_total` | counter | background refreshes started in a refresh window |
//!   | `authmux_cooldowns_total` | counter | cool-downs entered after a failed fetch |
//!   | `authmux_store_hits_total` | counter | fetches served by the token store |
//!   | `authmux_store_misses_total` | counter | fetches the token store could not serve |
//!   | `authmux_token_expires_in_seconds` | gauge | seconds until the cached token expires, set when it is cached |
//!
//! Provider crates (`authmux-auth0`, `authmux-mention-me`, …) implement
//! [`TokenSource`] on top of the wire layer; the `authmux` facade picks them
//! from a config file.
//!
//! # Example
//!
//! ```no_run
//! use authmux_core::wire::{ClientAuth, HttpClient, TokenRequest};
//! use authmux_core::{Error, ManagedToken, Token, TokenIdentity, TokenSource};
//! use secrecy::SecretString;
//!
//! struct MySource {
//!     http: HttpClient,
//!     request: TokenRequest,
//! }
//!
//! #[async_trait::async_trait]
//! impl TokenSource for MySource {
//!     fn provider(&self) -> &str {
//!         "my-idp"
//!     }
//!     fn identity(&self) -> TokenIdentity {
//!         TokenIdentity::from_request(self.provider(), &self.request)
//!     }
//!     async fn fetch_token(&self) -> Result<Token, Error> {
//!         self.http.fetch_token(&self.request).await
//!     }
//! }
//!
//! # async fn run() -> Result<(), Error> {
//! let request = TokenRequest::builder("https://idp.example.com/oauth/token")
//!     .param("grant_type", "client_credentials")
//!     .client_credentials(ClientAuth::Basic, "my-client", SecretString::from("…".to_owned()))
//!     .build()?;
//! let cache = ManagedToken::builder(MySource { http: HttpClient::new()?, request })
//!     .name("api")
//!     .build();
//! let token = cache.get().await?; // fetched once
//! let again = cache.get().await?; // served from the cache in nanoseconds
//! assert_eq!(token.id(), again.id());
//! let _header = token.authorization(); // `Bearer …`, marked sensitive
//! # Ok(())
//! # }
//! ```
//!
//! # Time
//!
//! Token times are [`tokio::time::Instant`]s. Caches built with
//! [`Clock::tokio`] follow tokio's paused time, so tests can advance an hour
//! in microseconds.
//!
//! [authmux]: https://github.com/authmux/authmux
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod assertion;
pub mod cache;
pub mod client_auth;
pub mod clock;
pub mod dpop;
pub mod error;
pub mod external;
pub mod grant;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
pub mod provider;
pub mod scrub;
pub mod secret;
pub mod signing;
pub mod source;
pub mod store;
pub mod token;
pub mod wire;

pub use assertion::ClientAssertion;
pub use cache::{
    CachePolicy, Get, ManagedToken, RefresherHandle, RetryPolicy, Schedule, TokenGuard,
};
pub use client_auth::{
    ClientAuthBuilder, ClientAuthConfig, ClientCredentials, Credential, WithClientAuth,
};
pub use clock::Clock;
pub use dpop::{Dpop, DpopNonces, DpopProver, is_resource_nonce_challenge};
pub use error::{Error, ErrorKind, OAuthError, RateLimit};
pub use external::{ExternalSource, ExternalToken};
pub use provider::{BuildContext, Endpoint, EndpointBuilder, Provider};
pub use scrub::Scrubber;
pub use secret::ClientSecret;
pub use signing::{SigningAlgorithm, SigningKey};
pub use source::{SharedTokenSource, TokenIdentity, TokenSource};
pub use store::{SharedTokenStore, TokenStore};
pub use token::{MAX_LIFETIME, Token, TokenType};

pub use secrecy::{ExposeSecret, SecretString};
