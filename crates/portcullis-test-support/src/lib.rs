//! Test harness over real sockets: upstream HTTP servers with scripted behaviour, real
//! `redis-server` processes (one, or a 3-node cluster), the gateway started in-process from a
//! TOML string, and small clients. Everything binds loopback ports and stops when its handle is
//! dropped.

// A harness: a failed setup step is a failed test, so panicking with a message is the right
// behaviour here (and only here).
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod client;
mod gateway;
mod redis;
mod tls;
mod upstream;

pub use client::{Client, RawConn};
pub use gateway::TestGateway;
pub use redis::{PORT as REDIS_PORT, RedisCluster, RedisSentinel, RedisServer, SENTINEL_MASTER};
pub use tls::{SelfSigned, tls_get};
pub use upstream::{Handler, Seen, TestBody, TestUpstream, echo, full};
