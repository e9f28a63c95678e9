//! The runnable examples of authmux: see the `[[example]]` targets of this
//! crate. The token endpoints they talk to are imitated in-process by
//! `authmux-testkit`.
