//! The command line. These names and flags are a contract: scripts and
//! tests depend on them.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Ferry: an offline mesh messenger.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about, long_about = None)]
pub struct Cli {
    /// Identity file (default: $XDG_DATA_HOME/ferry/identity).
    #[arg(long, global = true, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Use a fresh identity kept in RAM: nothing is read from or written to disk.
    #[arg(long, global = true)]
    pub ephemeral: bool,
    /// UDP address to listen on (default: a random port on all interfaces).
    #[arg(long, global = true, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// A static peer (repeatable).
    #[arg(long = "peer", global = true, value_name = "ADDR:PORT")]
    pub peers: Vec<SocketAddr>,
    /// A serial device as one more link (repeatable): `PATH` or `PATH:BAUD`
    /// (default 115200), e.g. a relay dongle on `/dev/ttyACM0`. A device that
    /// is missing or busy is retried every 2 s; the node runs meanwhile.
    #[arg(long = "serial", global = true, value_name = "PATH[:BAUD]")]
    pub serial: Vec<crate::serial::SerialSpec>,
    /// Neither advertise nor browse mDNS.
    #[arg(long, global = true)]
    pub no_mdns: bool,
    /// How often, in seconds, the node takes a new random mDNS name and,
    /// unless `--listen` fixes it, a new UDP port (default: a random time
    /// between 50 and 70 minutes, drawn again each time).
    #[arg(long, global = true, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub rotate_secs: Option<u64>,
    /// Memory for held messages, in KiB (64 to 1680, the default): the
    /// rest of the node's tables are fixed (see the README).
    #[arg(long, global = true, value_name = "KIB", value_parser = clap::value_parser!(u32).range(64..=1680))]
    pub store_kib: Option<u32>,
    /// The daemon's socket (for `daemon` and `chat`).
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make the identity if needed and print the contact code (last line).
    Id,
    /// Run a node and serve JSON-RPC on stdin/stdout.
    Rpc,
    /// Run a node and serve JSON-RPC on a local Unix socket.
    Daemon,
    /// The interactive chat: attaches to a running daemon, or runs a node.
    Chat,
    /// Relay for others: no identity, nothing on disk.
    Relay,
    /// An in-process demo of the mesh.
    Demo,
}
