//! What a client can ask of the node, typed: the local API (`rpc`) and the
//! chat parse and check their input into a [`Command`] at the edge, so the
//! node task never reads JSON and never meets a missing parameter.

use ferry_proto::envelope::PeerKey;
use serde_json::Value;

use crate::rpc::RpcError;

/// One request to the node (the JSON-RPC method in brackets; README
/// "Local API" has the parameters and answers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Links and their kinds (`peers`).
    Peers,
    /// Counters (`stats`).
    Stats,
    /// How many sent messages are not delivered yet (`pending`).
    Pending,
    /// Our contact code (`identity`).
    Identity,
    /// The address book (`contacts.list`).
    ContactsList,
    /// Add a contact (`contacts.add`).
    ContactsAdd {
        /// Its name in the book.
        name: String,
        /// Its code.
        key: PeerKey,
    },
    /// Remove a contact (`contacts.remove`).
    ContactsRemove {
        /// Its name.
        name: String,
    },
    /// Rename a contact (`contacts.rename`).
    ContactsRename {
        /// Its name.
        name: String,
        /// The new one.
        new_name: String,
    },
    /// Block a code (`contacts.block`).
    ContactsBlock {
        /// The code.
        key: PeerKey,
    },
    /// Send a text (`send`).
    Send {
        /// A contact name or a code.
        to: String,
        /// The text.
        text: String,
    },
}

impl Command {
    /// Parse a JSON-RPC method and its params (an object).
    pub fn parse(method: &str, params: &Value) -> Result<Command, RpcError> {
        let text = |name: &str| -> Result<String, RpcError> {
            params
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| RpcError::params(format!("missing string parameter {name:?}")))
        };
        let code = |name: &str| -> Result<PeerKey, RpcError> {
            PeerKey::from_code(&text(name)?).map_err(|e| RpcError::params(format!("bad contact code: {e}")))
        };
        Ok(match method {
            "peers" => Command::Peers,
            "stats" => Command::Stats,
            "pending" => Command::Pending,
            "identity" => Command::Identity,
            "contacts.list" => Command::ContactsList,
            "contacts.add" => Command::ContactsAdd { name: text("name")?, key: code("code")? },
            "contacts.remove" => Command::ContactsRemove { name: text("name")? },
            "contacts.rename" => Command::ContactsRename { name: text("name")?, new_name: text("new_name")? },
            "contacts.block" => Command::ContactsBlock { key: code("code")? },
            "send" => Command::Send { to: text("to")?, text: text("text")? },
            _ => return Err(RpcError::method(method)),
        })
    }

    /// Whether only a person's node (not a relay) can answer it.
    pub fn needs_identity(&self) -> bool {
        !matches!(self, Command::Peers | Command::Stats | Command::Pending)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parses_every_method_and_refuses_bad_params() {
        let key = ferry_proto::envelope::Identity::from_secret_bytes([7; 32]).public();
        let code = key.code().as_str().to_owned();
        assert_eq!(Command::parse("peers", &json!({})), Ok(Command::Peers));
        assert_eq!(
            Command::parse("contacts.add", &json!({"name": "a", "code": code})),
            Ok(Command::ContactsAdd { name: "a".into(), key })
        );
        assert_eq!(
            Command::parse("send", &json!({"to": "a", "text": "hi"})),
            Ok(Command::Send { to: "a".into(), text: "hi".into() })
        );
        assert_eq!(Command::parse("send", &json!({"to": "a", "text": 5})).map_err(|e| e.code), Err(-32602));
        assert_eq!(Command::parse("contacts.add", &json!({"name": "x"})).map_err(|e| e.code), Err(-32602));
        assert_eq!(
            Command::parse("contacts.block", &json!({"code": "ferry1notacode"})).map_err(|e| e.code),
            Err(-32602)
        );
        assert_eq!(Command::parse("no.such", &json!({})).map_err(|e| e.code), Err(-32601));
        assert!(!Command::Stats.needs_identity());
        assert!(Command::Identity.needs_identity());
    }
}
