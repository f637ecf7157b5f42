//! The address book: the names a person gave their contacts, who they
//! blocked, and each contact's tag counters. It lives only on the user's own
//! device, next to the identity (never for `--ephemeral` or `ferry relay`).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use ferry_proto::endpoint::ContactState;
use ferry_proto::envelope::PeerKey;
use serde::{Deserialize, Serialize};

/// Longest contact name, in characters.
pub const MAX_NAME: usize = 64;
/// Most entries (named contacts plus blocked codes).
pub const MAX_ENTRIES: usize = 1000;

/// One contact.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    /// The name the user gave (empty for a blocked stranger).
    pub name: String,
    /// The contact code.
    pub code: String,
    /// Blocked: nothing from this code is shown.
    #[serde(default)]
    pub blocked: bool,
    /// One-time tag counters.
    #[serde(default)]
    pub state: ContactState,
}

/// Why an address-book change was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BookError {
    /// Bad name.
    #[error("a name must be 1 to {MAX_NAME} printable characters and not look like a contact code")]
    BadName,
    /// Name in use.
    #[error("there is already a contact named {0:?}")]
    NameTaken(String),
    /// Code in use.
    #[error("this code is already your contact {0:?}")]
    CodeKnown(String),
    /// No such contact.
    #[error("no contact named {0:?}")]
    NoSuchName(String),
    /// Too many.
    #[error("the address book is full ({MAX_ENTRIES} entries)")]
    Full,
}

/// The address book, optionally backed by a file.
#[derive(Debug, Default)]
pub struct Book {
    entries: Vec<Entry>,
    path: Option<PathBuf>,
}

impl Book {
    /// An empty book kept in memory only.
    pub fn in_memory() -> Self {
        Book::default()
    }

    /// Load the book at `path` (a missing file is an empty book).
    pub fn load(path: PathBuf) -> io::Result<Self> {
        let entries = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<Vec<Entry>>(&bytes)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let entries = entries.into_iter().filter(|e| PeerKey::from_code(&e.code).is_ok()).take(MAX_ENTRIES).collect();
        Ok(Book { entries, path: Some(path) })
    }

    /// Write the book back (atomically: a new file, then rename), if it has
    /// a file.
    pub fn save(&self) -> io::Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        let tmp = path.with_extension("tmp");
        let json = serde_json::to_vec_pretty(&self.entries).map_err(io::Error::other)?;
        // Created exclusively, never written through: whatever is at the
        // temporary name (left by a crash, or planted: a symlink) goes first.
        let create = || OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp);
        let mut f = match create() {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                fs::remove_file(&tmp)?;
                create()?
            }
            other => other?,
        };
        f.write_all(&json)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    }

    /// All entries.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Named, unblocked contacts.
    pub fn contacts(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| !e.name.is_empty() && !e.blocked)
    }

    /// The entry for `key`.
    pub fn by_key(&self, key: &PeerKey) -> Option<&Entry> {
        let code = key.code();
        self.entries.iter().find(|e| e.code == code.as_str())
    }

    /// The key of the contact named `name`.
    pub fn by_name(&self, name: &str) -> Option<PeerKey> {
        self.entries
            .iter()
            .find(|e| e.name == name && !e.name.is_empty())
            .and_then(|e| PeerKey::from_code(&e.code).ok())
    }

    /// Whether `key` is blocked.
    pub fn is_blocked(&self, key: &PeerKey) -> bool {
        self.by_key(key).is_some_and(|e| e.blocked)
    }

    /// Add a named contact.
    pub fn add(&mut self, name: &str, key: &PeerKey) -> Result<(), BookError> {
        let name = name.trim();
        if name.is_empty()
            || name.chars().count() > MAX_NAME
            || name.chars().any(char::is_control)
            || crate::sanitize::one_line(name) != name
            || PeerKey::from_code(name).is_ok()
        {
            return Err(BookError::BadName);
        }
        if self.entries.iter().any(|e| e.name == name) {
            return Err(BookError::NameTaken(name.to_owned()));
        }
        let code = key.code();
        if let Some(e) = self.entries.iter_mut().find(|e| e.code == code.as_str()) {
            if !e.name.is_empty() {
                return Err(BookError::CodeKnown(e.name.clone()));
            }
            e.name = name.to_owned();
            e.blocked = false;
            return Ok(());
        }
        if self.entries.len() >= MAX_ENTRIES {
            return Err(BookError::Full);
        }
        self.entries.push(Entry {
            name: name.to_owned(),
            code: code.to_string(),
            blocked: false,
            state: Default::default(),
        });
        Ok(())
    }

    /// Rename a contact.
    pub fn rename(&mut self, old: &str, new: &str) -> Result<(), BookError> {
        let key = self.by_name(old).ok_or_else(|| BookError::NoSuchName(old.to_owned()))?;
        let entry = self.remove(old)?;
        match self.add(new, &key) {
            Ok(()) => {
                if let Some(e) = self.entries.last_mut() {
                    e.state = entry.state;
                }
                Ok(())
            }
            Err(err) => {
                self.entries.push(entry);
                Err(err)
            }
        }
    }

    /// Remove a contact by name.
    pub fn remove(&mut self, name: &str) -> Result<Entry, BookError> {
        let i =
            self.entries.iter().position(|e| e.name == name).ok_or_else(|| BookError::NoSuchName(name.to_owned()))?;
        Ok(self.entries.remove(i))
    }

    /// Block a code (a contact or a stranger).
    pub fn block(&mut self, key: &PeerKey) -> Result<(), BookError> {
        let code = key.code();
        if let Some(e) = self.entries.iter_mut().find(|e| e.code == code.as_str()) {
            e.blocked = true;
            return Ok(());
        }
        if self.entries.len() >= MAX_ENTRIES {
            return Err(BookError::Full);
        }
        self.entries.push(Entry {
            name: String::new(),
            code: code.to_string(),
            blocked: true,
            state: Default::default(),
        });
        Ok(())
    }

    /// Record a contact's tag counters (saved with the next `save`).
    pub fn set_state(&mut self, key: &PeerKey, state: ContactState) -> bool {
        let code = key.code();
        match self.entries.iter_mut().find(|e| e.code == code.as_str()) {
            Some(e) if e.state != state => {
                e.state = state;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::envelope::Identity;

    fn key(n: u8) -> PeerKey {
        Identity::from_secret_bytes([n; 32]).public()
    }

    #[test]
    fn add_rename_remove_block_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("contacts.json");
        let mut book = Book::load(path.clone()).unwrap();
        book.add("alice", &key(1)).unwrap();
        assert_eq!(book.add("alice", &key(2)), Err(BookError::NameTaken("alice".into())));
        assert_eq!(book.add("al", &key(1)), Err(BookError::CodeKnown("alice".into())));
        assert_eq!(book.add("", &key(2)), Err(BookError::BadName));
        assert_eq!(book.add("a\u{1b}[31m", &key(2)), Err(BookError::BadName));
        assert_eq!(book.add(&key(3).code(), &key(2)), Err(BookError::BadName));
        book.add("bob", &key(2)).unwrap();
        book.rename("bob", "robert").unwrap();
        assert_eq!(book.by_name("robert"), Some(key(2)));
        book.block(&key(9)).unwrap();
        assert!(book.is_blocked(&key(9)));
        book.save().unwrap();
        let again = Book::load(path.clone()).unwrap();
        assert_eq!(again.entries(), book.entries());
        assert_eq!(again.contacts().count(), 2);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let mut again = again;
        again.remove("alice").unwrap();
        assert!(again.by_name("alice").is_none());
    }

    /// Issue 12: the temporary file is created exclusively. A file or symlink already at its name (left by
    /// a crash, or planted) is never written through: a planted symlink's target stays untouched.
    #[test]
    fn save_never_writes_through_what_is_at_the_temporary_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("contacts.json");
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, path.with_extension("tmp")).unwrap();
        let mut book = Book::load(path.clone()).unwrap();
        book.add("alice", &key(1)).unwrap();
        book.save().unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious", "the save wrote through a symlink");
        assert_eq!(Book::load(path).unwrap().contacts().count(), 1);
    }
}
