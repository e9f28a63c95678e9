//! The conformance suite every provider passes (`authmux-testkit`'s
//! `conformance` module): one test per shared behaviour.

use authmux_360learning::{NAME, Region, TOKEN_PATH, ThreeSixtyLearningProvider};
use authmux_core::EndpointBuilder as _;
use authmux_testkit::conformance::Subject;

fn subject() -> Subject {
    Subject::new(NAME, TOKEN_PATH, |base, http, secret| {
        Ok(ThreeSixtyLearningProvider::builder("client-1", secret)
            .region(Region::Eu)
            .base_url(base)
            .http_client(http)
            .build()?
            .into())
    })
}

authmux_testkit::conformance_tests!(subject());
