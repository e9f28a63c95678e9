//! The table of providers: every provider authmux knows, each switched on
//! by the feature of the same name. Adding a provider is one line here (and
//! the feature in `Cargo.toml`).

use authmux_core::{BuildContext, Provider, SharedTokenSource};

use crate::config::ClientConfig;

/// Builds a client's source from its config table: every problem, each
/// with its full key path.
pub(crate) type BuildFn =
    fn(&ClientConfig, &BuildContext) -> Result<SharedTokenSource, Vec<String>>;

/// One known provider: its name (which is also its feature's), how to
/// build it when it is compiled in, and the keys of its config that take a
/// secret's source (none when it is not compiled in).
pub(crate) struct Entry {
    pub(crate) name: &'static str,
    pub(crate) build: Option<BuildFn>,
    pub(crate) secret_keys: fn() -> Vec<&'static str>,
}

/// Deserializes a client's keys into `P::Config` and builds it. A
/// provider's error starts with its key (`audience: …`); it gets the
/// client's path in front.
fn build<P: Provider>(
    client: &ClientConfig,
    context: &BuildContext,
) -> Result<SharedTokenSource, Vec<String>> {
    let config = client
        .provider_config::<P::Config>()
        .map_err(|error| error.problems().to_vec())?;
    P::build(config, context)
        .map_err(|error| vec![format!("clients.{}.{}", client.name(), error.message())])
}

macro_rules! providers {
    ($($feature:literal => $provider:ty),* $(,)?) => {
        /// Every provider authmux knows, compiled in or not, in order.
        pub(crate) const TABLE: &[Entry] = &[$(
            Entry {
                name: $feature,
                build: {
                    #[cfg(feature = $feature)]
                    let build: Option<BuildFn> = Some(build::<$provider>);
                    #[cfg(not(feature = $feature))]
                    let build: Option<BuildFn> = None;
                    build
                },
                secret_keys: {
                    #[cfg(feature = $feature)]
                    let keys: fn() -> Vec<&'static str> =
                        crate::secret_keys::of::<<$provider as Provider>::Config>;
                    #[cfg(not(feature = $feature))]
                    let keys: fn() -> Vec<&'static str> = Vec::new;
                    keys
                },
            },
        )*];

        #[cfg(test)]
        #[test]
        fn each_feature_is_named_after_its_provider() {
            $(
                #[cfg(feature = $feature)]
                assert_eq!(<$provider as Provider>::NAME, $feature);
            )*
        }
    };
}

providers! {
    "mention-me" => authmux_mention_me::MentionMeProvider,
    "360learning" => authmux_360learning::ThreeSixtyLearningProvider,
    "auth0" => authmux_auth0::Auth0Provider,
    "oauth2" => authmux_oauth2::OAuth2Provider,
}

/// The entry called `name`, if authmux knows it.
pub(crate) fn find(name: &str) -> Option<&'static Entry> {
    TABLE.iter().find(|entry| entry.name == name)
}
