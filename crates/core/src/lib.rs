//! airlock's shared vocabulary: the [`Secret`] type, handle names, the configuration model and
//! the stable error codes. This crate performs no I/O except reading a configuration file and
//! holds no network code.
#![forbid(unsafe_code)]

pub mod config;
pub mod error;
pub mod executor;
pub mod handle;
pub mod kind;
pub mod lane;
pub mod peer;
pub mod secret;
pub mod tool;

pub use error::{CallError, ErrorCode};
pub use executor::{CallFacts, Executor, Unscrubbed, ValidateCtx};
pub use handle::{HandleName, InvalidHandle};
pub use peer::Peer;
pub use secret::Secret;
pub use tool::Tool;
