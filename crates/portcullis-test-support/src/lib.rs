//! Test harness over real sockets: upstream HTTP servers with scripted behaviour, the gateway
//! started in-process from a TOML string, and small clients. Everything binds `127.0.0.1:0` and
//! stops when its handle is dropped.

// A harness: a failed setup step is a failed test, so panicking with a message is the right
// behaviour here (and only here).
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod client;
mod gateway;
mod tls;
mod upstream;

pub use client::{Client, RawConn};
pub use gateway::TestGateway;
pub use tls::{SelfSigned, tls_get};
pub use upstream::{Handler, Seen, TestBody, TestUpstream, echo, full};
