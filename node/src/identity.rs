//! The identity file: the device's X25519 secret, in the user's own data
//! directory, created once with `O_EXCL` and mode 0600, never anywhere else.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ferry_proto::envelope::Identity;

const HEADER: &str = "ferry identity v1\n";

/// Why the identity could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// No data directory could be found for this user.
    #[error("no data directory found for this user; pass --identity FILE or --ephemeral")]
    NoDataDir,
    /// The file could not be read or written.
    #[error("identity file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// The file is not an identity file.
    #[error("identity file {0} is not a Ferry identity (or is damaged)")]
    Malformed(PathBuf),
    /// The file can be read by others.
    #[error("identity file {0} is readable by other users; run: chmod 600 {0}")]
    Permissions(PathBuf),
    /// The file or its directory belongs to another user, or others may
    /// write to the directory (they could swap the file).
    #[error("identity {0}: {1}")]
    Unsafe(PathBuf, &'static str),
}

/// The default identity path: `$XDG_DATA_HOME/ferry/identity`.
pub fn default_path() -> Result<PathBuf, IdentityError> {
    dirs::data_dir().map(|d| d.join("ferry").join("identity")).ok_or(IdentityError::NoDataDir)
}

/// Load the identity at `path`, creating it (and its directory, mode 0700)
/// if it does not exist. Returns whether it was created.
pub fn load_or_create(path: &Path) -> Result<(Identity, bool), IdentityError> {
    let io_err = |source| IdentityError::Io { path: path.to_owned(), source };
    match load(path) {
        Ok(id) => return Ok((id, false)),
        Err(IdentityError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_err)?;
        check_dir(path)?;
    }
    let identity = Identity::generate(&mut rand::rng());
    let mut f =
        match OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(path) {
            Ok(f) => f,
            // Made by a concurrent `ferry` a moment ago: use that one.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return load(path).map(|id| (id, false)),
            Err(e) => return Err(io_err(e)),
        };
    // The text is built in one fixed buffer that is wiped on drop: no
    // `String` (which could leave copies behind as it grows) ever holds it.
    let mut body = zeroize::Zeroizing::new([0u8; HEADER.len() + 65]);
    body[..HEADER.len()].copy_from_slice(HEADER.as_bytes());
    let secret = zeroize::Zeroizing::new(identity.secret_bytes());
    hex::encode_to_slice(&secret[..], &mut body[HEADER.len()..HEADER.len() + 64])
        .map_err(|_| IdentityError::Malformed(path.to_owned()))?;
    body[HEADER.len() + 64] = b'\n';
    f.write_all(&body[..]).and_then(|()| f.sync_all()).map_err(io_err)?;
    Ok((identity, true))
}

/// Load an existing identity.
///
/// The file must be a regular file (no symlink is followed), owned by this
/// user and readable by no one else, in a directory owned by this user (or
/// root) that no one else may write to. The secret's text is wiped once read.
pub fn load(path: &Path) -> Result<Identity, IdentityError> {
    use std::os::unix::fs::MetadataExt;
    let io_err = |source| IdentityError::Io { path: path.to_owned(), source };
    let unsafe_file = |why| IdentityError::Unsafe(path.to_owned(), why);
    check_dir(path)?;
    let mut f = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            unsafe_file("is a symbolic link; point --identity at the file itself")
        } else {
            io_err(e)
        }
    })?;
    let meta = f.metadata().map_err(io_err)?;
    if !meta.is_file() {
        return Err(unsafe_file("is not a regular file"));
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(unsafe_file("belongs to another user"));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(IdentityError::Permissions(path.to_owned()));
    }
    // Read into one fixed buffer, wiped on drop (a `String` that grows
    // while reading leaves unwiped copies of the secret's text behind).
    let mut text = zeroize::Zeroizing::new([0u8; 256]);
    let mut len = 0;
    loop {
        match f.read(&mut text[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(e)),
        }
        if len == text.len() {
            return Err(IdentityError::Malformed(path.to_owned()));
        }
    }
    let hex_part = text[..len]
        .strip_prefix(HEADER.as_bytes())
        .map(<[u8]>::trim_ascii)
        .ok_or_else(|| IdentityError::Malformed(path.to_owned()))?;
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(hex_part, &mut bytes[..]).map_err(|_| IdentityError::Malformed(path.to_owned()))?;
    Ok(Identity::from_secret_bytes(*bytes))
}

/// The identity's directory: owned by this user (or root, like `/`) and
/// writable by no one else, so nobody can swap the file.
fn check_dir(path: &Path) -> Result<(), IdentityError> {
    use std::os::unix::fs::MetadataExt;
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else { return Ok(()) };
    let meta = fs::metadata(dir).map_err(|source| IdentityError::Io { path: dir.to_owned(), source })?;
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(IdentityError::Unsafe(dir.to_owned(), "the directory belongs to another user"));
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(IdentityError::Unsafe(
            dir.to_owned(),
            "others may write to the directory (they could replace the identity); run: chmod go-w on it",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_with_mode_0600_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("identity");
        let (a, created) = load_or_create(&path).unwrap();
        assert!(created);
        let (b, created) = load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(a.public(), b.public());
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(load(&path), Err(IdentityError::Permissions(_))));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&path, "garbage").unwrap();
        assert!(matches!(load(&path), Err(IdentityError::Malformed(_))));
    }

    /// Issue 12: the loader follows no symlink, and refuses a file another user owns and a directory
    /// others may write to (they could swap the file).
    #[test]
    fn refuses_symlinks_foreign_files_and_open_directories() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        let (_, created) = load_or_create(&real).unwrap();
        assert!(created);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(load(&link).is_err(), "a symlink was followed");

        let open_dir = dir.path().join("open");
        let inside = open_dir.join("identity");
        load_or_create(&inside).unwrap();
        fs::set_permissions(&open_dir, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(load_or_create(&inside).is_err(), "a directory others may write to was accepted");
        fs::set_permissions(&open_dir, fs::Permissions::from_mode(0o700)).unwrap();
        assert!(load_or_create(&inside).is_ok());

        // Another user's file (only root can make one here).
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(&real, Some(65534), None).unwrap();
            assert!(load(&real).is_err(), "another user's identity file was accepted");
        } else {
            eprintln!("SKIP part: not root, cannot make a file another user owns");
        }
    }
}
