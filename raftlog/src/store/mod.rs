//! openraft 0.9 glue: the type configuration, the command language of the log, and the
//! [`LogStore`] that implements openraft's `RaftLogStorage` over the segmented [`Log`](crate::Log).

pub mod command;
mod flusher;
pub mod log_store;
pub mod types;

pub use command::{Command, Op, OpResult, Reply};
pub use log_store::{LogReader, LogStore};
pub use types::TypeConfig;
