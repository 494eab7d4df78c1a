//! openraft 0.9 glue: the type configuration and the command language of the log.

pub mod command;
pub mod types;

pub use command::{Command, Op, OpResult, Reply};
pub use types::TypeConfig;
