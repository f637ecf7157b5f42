//! The `ferry` program: a tokio driver around the `ferry-proto` state
//! machine, with UDP and serial links, mDNS discovery, a JSON-RPC API, a line-based chat
//! and a headless relay mode.
//!
//! The protocol logic lives in `ferry-proto`; everything here is I/O:
//! sockets, timers, files in the user's own data directory, and the local API.

pub mod app;
pub mod book;
pub mod chat;
pub mod cli;
pub mod command;
pub mod demo;
pub mod identity;
pub mod link;
pub mod mdns;
pub mod node;
pub mod notes;
pub mod rpc;
pub mod sanitize;
pub mod serial;
pub mod udp;
