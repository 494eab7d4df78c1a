//! Support shared by Strata's test suites and benchmarks.
//!
//! [`S3Server`] is a real S3-compatible server (`s3s-fs`) served in-process on loopback, with
//! SigV4 authentication on and objects as files under a directory: the S3 suites and
//! `strata-bench tiered --store s3s` exercise the real client path (HTTP, signing, XML) with
//! nothing to install and no network.
//!
//! [`linearizability`] checks histories of concurrent operations on a versioned key-value
//! register (Wing–Gong–Lowe), for the replication and node suites.
//!
//! [`process`] starts the `strata` binary as a real process and finds where it listens.
//!
//! [`fuzz_corpus`] replays the fuzz targets' corpora as ordinary tests.
//!
//! [`netproxy`] puts a TCP proxy in front of each node of a group to partition them on loopback,
//! without root.
//!
//! [`power_cut`] tears files the way a power cut does, for the WAL and Raft log crash suites.
#![warn(missing_docs)]

pub mod fuzz_corpus;
pub mod linearizability;
pub mod netproxy;
pub mod power_cut;
pub mod process;
mod s3_server;

pub use s3_server::{shared, S3Server, ACCESS_KEY, SECRET_KEY};
