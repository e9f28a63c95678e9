//! **authmux**: machine-to-machine OAuth 2.0 access tokens from many
//! providers through one interface. Name a client in a config file, ask for
//! a token, and authmux fetches it once, caches it, refreshes it before it
//! expires and hands it to every caller in nanoseconds.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // Reads ./authmux.toml (or $AUTHMUX_CONFIG), then AUTHMUX_* variables.
//! let registry = authmux::Registry::load(None)?;
//! let token = registry.token("api").await?;
//! let _header = token.authorization(); // `Bearer …`, marked sensitive
//! # Ok(())
//! # }
//! ```
//!
//! ```toml
//! [defaults]
//! timeout = "10s"
//! expiry_margin = "30s"
//!
//! [clients.api]
//! provider = "auth0"
//! domain = "tenant.eu.auth0.com"
//! client_id = "my-client-id"
//! client_secret = { env = "AUTH0_CLIENT_SECRET" }
//! audience = "https://api.example.com"
//! timeout = "5s"                  # any default can be overridden per client
//! ```
//!
//! Environment variables override the file, with `__` between keys:
//! `AUTHMUX_CLIENTS__API__CLIENT_SECRET=…` sets `clients.api.client_secret`.
//! Their values are taken as text, exactly as written. Only
//! `AUTHMUX_CLIENTS__…`, `AUTHMUX_DEFAULTS__…` and `AUTHMUX_STORE__…` are
//! read, and a variable that sets a secret's source
//! (`…__CLIENT_SECRET__FILE`, `AUTHMUX_STORE__PASSWORD__ENV`) replaces the
//! file's source instead of merging with it.
//!
//! # Features
//!
//! One per provider, all on by default; any subset builds on its own.
//!
//! | feature | `provider =` | crate |
//! |---|---|---|
//! | `mention-me` | `"mention-me"` | [`mention_me`] |
//! | `360learning` | `"360learning"` | [`learning360`] |
//! | `auth0` | `"auth0"` | [`auth0`] |
//! | `oauth2` | `"oauth2"` | [`oauth2`] |
//!
//! The `redis` feature (off by default) adds the Redis token store,
//! [`redis`] (`authmux-redis`), for `[store] kind = "redis"`; see [`store`].
//!
//! The `metrics` feature (off by default) records every cache's token
//! requests, latency, refreshes, cool-downs, store hits and expiry through
//! the `metrics` facade; see `authmux_core::metrics` for the list.
//!
//! The `reqwest-middleware` feature (off by default) adds
//! `middleware::Authenticate`, which attaches tokens to outgoing requests
//! and recovers from a rejected token once.
//!
//! A config may be shared by programs built with different features. A
//! client whose provider is not compiled in fails alone, when it is asked
//! for: `client "api" (auth0): provider "auth0" is not compiled in: enable
//! feature "auth0" (compiled in: mention-me, oauth2)`; the other clients work.
#![cfg_attr(docsrs, feature(doc_cfg))]

// The README's snippets, compiled as doctests so that what users copy
// builds as written.
#[cfg(all(
    doctest,
    feature = "mention-me",
    feature = "360learning",
    feature = "auth0",
    feature = "oauth2",
    feature = "reqwest-middleware"
))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub mod config;
#[cfg(feature = "reqwest-middleware")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest-middleware")))]
pub mod middleware;

/// The `reqwest-middleware` crate the middleware is built for, so that its
/// version need not be guessed (needs the `reqwest-middleware` feature).
#[cfg(feature = "reqwest-middleware")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest-middleware")))]
pub use reqwest_middleware;
mod providers;
mod registry;
mod secret_keys;
pub mod store;

pub use config::{ClientConfig, Config, ConfigError, Settings};
pub use registry::{Client, Registry, RegistryBuilder};
pub use store::{StoreConfig, StoreKind};

/// The configuration library behind [`Config`], for layering its sources
/// yourself (see [`Config::from`]).
pub use figment;

pub use authmux_core::{
    BuildContext, CachePolicy, ClientAuthBuilder, ClientCredentials, ClientSecret, Clock,
    EndpointBuilder, Error, ErrorKind, ExposeSecret, ManagedToken, OAuthError, Provider,
    RetryPolicy, SecretString, SharedTokenSource, Token, TokenGuard, TokenIdentity, TokenSource,
    TokenType,
};

/// The core crate: the cache, the wire layer and the source trait.
pub use authmux_core as core;

/// Mention Me (needs the `mention-me` feature).
#[cfg(feature = "mention-me")]
#[cfg_attr(docsrs, doc(cfg(feature = "mention-me")))]
pub use authmux_mention_me as mention_me;

/// 360Learning API v2 (needs the `360learning` feature).
#[cfg(feature = "360learning")]
#[cfg_attr(docsrs, doc(cfg(feature = "360learning")))]
pub use authmux_360learning as learning360;

/// Auth0 (needs the `auth0` feature).
#[cfg(feature = "auth0")]
#[cfg_attr(docsrs, doc(cfg(feature = "auth0")))]
pub use authmux_auth0 as auth0;

/// The Redis token store (needs the `redis` feature).
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use authmux_redis as redis;

/// Any RFC 6749 server (needs the `oauth2` feature).
#[cfg(feature = "oauth2")]
#[cfg_attr(docsrs, doc(cfg(feature = "oauth2")))]
pub use authmux_oauth2 as oauth2;
