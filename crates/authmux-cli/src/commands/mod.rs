//! One file per command, as cargo keeps its `commands/`.

pub(crate) mod check;
pub(crate) mod completions;
pub(crate) mod request;
pub(crate) mod token;
