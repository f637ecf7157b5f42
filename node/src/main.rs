//! `ferry`: see `ferry --help`.
//!
//! How the program is put together (one thread, one current-thread tokio
//! runtime, one task that owns the core):
//!
//! ```text
//!  cli ──▶ app ──▶ node::spawn ─────────────── the node task (node/mod.rs) ───────────────┐
//!   │       │        select! over:  UDP link (link::Link, udp)   serial ports (serial)    │
//!   │       │                       mDNS (mdns)   timers   Commands from the API          │
//!   │       │        node/peers: the link table (proto's LinkTable, kind + address)       │
//!   │       │        node/cores: a relay or an endpoint, driven as `dyn ferry_proto::Node` │
//!   │       │        after each step: poll_transmit → links, poll_event → notifications   │
//!   │       └──▶ rpc (JSON-RPC lines) / chat ──▶ command::Command ──▶ Handle ──▶ task ───┘
//!   └──▶ demo: an in-process mesh in virtual time
//! ```
//!
//! All protocol logic is in `ferry-proto` (its `lib.rs` draws the core).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use ferry_node::cli::{Cli, Command};
use ferry_node::{app, demo};

fn main() -> ExitCode {
    // The router's tables are built on the stack before they are boxed
    // (`proto` has no allocator), so run on a thread with a roomy stack;
    // the memory is only committed as it is touched.
    match std::thread::Builder::new().name("ferry".into()).stack_size(256 << 20).spawn(real_main) {
        Ok(t) => t.join().unwrap_or(ExitCode::FAILURE),
        Err(e) => {
            eprintln!("ferry: cannot start: {e}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> ExitCode {
    let cli = Cli::parse();
    if ferry_proto::envelope::noise::INSECURE_SIM_DH {
        // Only possible through cargo feature unification with the
        // simulator's `fast-dh` build: such a binary must never meet a peer.
        eprintln!(
            "ferry: this build has the simulator's insecure Diffie-Hellman stand-in (sim-fast-dh); refusing to run"
        );
        return ExitCode::FAILURE;
    }
    let command = cli.command.as_ref().unwrap_or(&Command::Chat);
    // The chat's terminal shows the chat: only warnings and errors, as plain lines ("ferry: WARN ..."),
    // unless FERRY_LOG asks for more. Every other command logs at info, timestamped, to stderr.
    let chat = matches!(command, Command::Chat);
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if chat { "warn,mdns_sd=error" } else { "info,mdns_sd=warn" })
    });
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if chat {
        logs.without_time().with_target(false).with_ansi(false).init();
    } else {
        logs.with_ansi(std::io::stderr().is_terminal()).init();
    }
    if matches!(command, Command::Demo) {
        demo::run();
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ferry: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(app::run(&cli));
    // Reading stdin blocks a thread that no signal wakes: a runtime that
    // waited for it would never end while a client holds the pipe open
    // (`ferry rpc` on SIGTERM). The node has stopped and saved by now.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry: {e}");
            ExitCode::FAILURE
        }
    }
}
