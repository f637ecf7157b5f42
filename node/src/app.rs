//! What each subcommand does.

use std::io::{IsTerminal, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ferry_proto::envelope::Identity;
use tokio::io::BufReader;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use crate::book::Book;
use crate::cli::{Cli, Command};
use crate::identity::{self, IdentityError};
use crate::node::{self, Handle, Mode, Options};
use crate::{chat, rpc};

/// Why `ferry` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Identity trouble.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// I/O trouble.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Something else a person should read.
    #[error("{0}")]
    Message(String),
}

fn options(cli: &Cli) -> Options {
    Options {
        listen: cli.listen,
        peers: cli.peers.clone(),
        mdns: !cli.no_mdns,
        store_kib: cli.store_kib,
        serial: cli.serial.clone(),
        rotate_secs: cli.rotate_secs,
    }
}

/// The identity and address book the flags ask for.
pub fn endpoint_mode(cli: &Cli) -> Result<Mode, AppError> {
    if cli.ephemeral {
        return Ok(Mode::Endpoint { identity: Identity::generate(&mut rand::rng()), book: Book::in_memory() });
    }
    let path = match &cli.identity {
        Some(p) => p.clone(),
        None => identity::default_path()?,
    };
    let (identity, created) = identity::load_or_create(&path)?;
    if created {
        tracing::info!("made a new identity");
    }
    let book = Book::load(contacts_path(&path))?;
    Ok(Mode::Endpoint { identity, book })
}

/// The address book sits next to the identity file.
pub fn contacts_path(identity: &Path) -> PathBuf {
    let mut name = identity.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".contacts.json");
    identity.with_file_name(name)
}

/// Start a node for `mode`; returns its handle, a stop switch and the task.
pub fn start(cli: &Cli, mode: Mode) -> Result<(Handle, watch::Sender<bool>, tokio::task::JoinHandle<()>), AppError> {
    let (stop, stop_rx) = watch::channel(false);
    let (handle, local, task) = node::spawn(mode, options(cli), stop_rx)?;
    tracing::info!(port = local.port(), "node running");
    tracing::debug!(%local, "bound");
    Ok((handle, stop, task))
}

async fn signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

/// The daemon's socket: `--socket`, else `$XDG_RUNTIME_DIR/ferry/daemon.sock`.
pub fn socket_path(cli: &Cli) -> Result<PathBuf, AppError> {
    if let Some(p) = &cli.socket {
        return Ok(p.clone());
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => Ok(PathBuf::from(dir).join("ferry").join("daemon.sock")),
        None => {
            Err(AppError::Message("XDG_RUNTIME_DIR is not set; pass --socket PATH (in a private directory)".to_owned()))
        }
    }
}

/// Run a subcommand.
pub async fn run(cli: &Cli) -> Result<(), AppError> {
    match cli.command.as_ref().unwrap_or(&Command::Chat) {
        Command::Id => id(cli),
        Command::Rpc => {
            let (handle, stop, task) = start(cli, endpoint_mode(cli)?)?;
            let stdin = BufReader::new(tokio::io::stdin());
            tokio::select! {
                () = rpc::serve(stdin, tokio::io::stdout(), handle) => {}
                () = signal() => {}
            }
            let _ = stop.send(true);
            let _ = task.await;
            Ok(())
        }
        Command::Daemon => daemon(cli).await,
        Command::Relay => {
            let (_handle, stop, task) = start(cli, Mode::Relay)?;
            signal().await;
            let _ = stop.send(true);
            let _ = task.await;
            Ok(())
        }
        Command::Chat => chat::run(cli).await,
        Command::Demo => Ok(()),
    }
}

fn id(cli: &Cli) -> Result<(), AppError> {
    let identity = match endpoint_mode(cli)? {
        Mode::Endpoint { identity, .. } => identity,
        Mode::Relay => return Err(AppError::Message("no identity".into())),
    };
    let code = identity.code();
    let mut out = std::io::stdout().lock();
    if std::io::stdout().is_terminal()
        && let Ok(qr) = qrcode::QrCode::new(code.to_ascii_uppercase().as_bytes())
    {
        let text = qr.render::<qrcode::render::unicode::Dense1x2>().quiet_zone(true).build();
        writeln!(out, "{text}")?;
    }
    writeln!(out, "{code}")?;
    Ok(())
}

async fn daemon(cli: &Cli) -> Result<(), AppError> {
    let path = socket_path(cli)?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if cli.socket.is_none() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let dir_meta = std::fs::metadata(dir)?;
    if dir_meta.permissions().mode() & 0o077 != 0 {
        return Err(AppError::Message(format!(
            "{} can be entered by other users; the socket must be in a private (0700) directory",
            dir.display()
        )));
    }
    if path.exists() {
        if UnixStream::connect(&path).await.is_ok() {
            return Err(AppError::Message(format!("a daemon is already running on {}", path.display())));
        }
        std::fs::remove_file(&path)?;
    }
    let (handle, stop, task) = start(cli, endpoint_mode(cli)?)?;
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let owner = std::fs::metadata(&path)?.uid();
    tracing::info!("JSON-RPC on the daemon socket");
    loop {
        tokio::select! {
            conn = listener.accept() => {
                let Ok((stream, _)) = conn else { continue };
                match stream.peer_cred() {
                    Ok(cred) if cred.uid() == owner => {}
                    _ => {
                        tracing::warn!("refused a connection from another user");
                        continue;
                    }
                }
                let (r, w) = stream.into_split();
                tokio::spawn(rpc::serve(BufReader::new(r), w, handle.clone()));
            }
            () = signal() => break,
        }
    }
    let _ = std::fs::remove_file(&path);
    let _ = stop.send(true);
    let _ = task.await;
    Ok(())
}
