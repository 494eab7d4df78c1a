//! The HTTP API: handlers of the key-value, scan, short-link and admin routes, and their errors. Handlers ask the cluster layer for a range; they never touch a replica.

pub mod admin;
pub mod cursor;
pub mod error;
pub mod kv;
pub mod links;
pub mod openapi;
pub mod scan;
pub mod visits;
