//! JSON-RPC 2.0 over lines: one JSON object (or batch array) per line in,
//! one per line out. Responses and the node's notifications share the
//! output; nothing else is ever written to it.
//!
//! Lines longer than [`MAX_LINE`] bytes are refused with an error and
//! skipped; malformed JSON, unknown methods and bad parameters get the
//! standard error codes. Nothing a client sends can stop the node.

use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, oneshot};

use crate::notes;

use crate::node::Handle;

/// Longest request line accepted, in bytes.
pub const MAX_LINE: usize = 256 * 1024;
/// Requests read ahead of their answers.
const IN_FLIGHT: usize = 256;

/// A JSON-RPC error: code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    /// JSON-RPC error code.
    pub code: i64,
    /// What happened, for a person.
    pub message: String,
}

impl RpcError {
    /// Invalid params (-32602).
    pub fn params(message: impl Into<String>) -> Self {
        RpcError { code: -32602, message: message.into() }
    }
    /// Method not found (-32601).
    pub fn method(name: &str) -> Self {
        RpcError { code: -32601, message: format!("unknown method {name:?}") }
    }
    /// An application error (-32000).
    pub fn app(message: impl Into<String>) -> Self {
        RpcError { code: -32000, message: message.into() }
    }
}

fn error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// A request handed to the node whose answer may not be there yet.
#[derive(Debug)]
enum Pending {
    /// Answered already (an error found before the node saw it), or
    /// nothing to answer.
    Ready(Option<Value>),
    /// Waiting for the node; `id` is `None` for a notification.
    Node { id: Option<Value>, reply: oneshot::Receiver<Result<Value, RpcError>> },
    /// A batch, answered as one array.
    Batch(Vec<Pending>),
}

/// Check one request object and hand it to the node (in order: the node
/// sees requests exactly in the order of the input).
async fn submit_one(handle: &Handle, req: Value) -> Pending {
    let Value::Object(obj) = req else {
        return Pending::Ready(Some(error(Value::Null, -32600, "invalid request: not an object")));
    };
    let id = obj.get("id").cloned();
    let bad_id = matches!(id, Some(Value::Object(_) | Value::Array(_) | Value::Bool(_)));
    if obj.get("jsonrpc") != Some(&json!("2.0")) || bad_id {
        let e = error(id.unwrap_or(Value::Null), -32600, "invalid request: needs \"jsonrpc\": \"2.0\"");
        return Pending::Ready(Some(e));
    }
    let Some(method) = obj.get("method").and_then(Value::as_str) else {
        return Pending::Ready(Some(error(id.unwrap_or(Value::Null), -32600, "invalid request: no method")));
    };
    let params = obj.get("params").cloned().unwrap_or(Value::Object(Default::default()));
    if !params.is_object() {
        return Pending::Ready(id.map(|id| error(id, -32602, "params must be an object")));
    }
    Pending::Node { id, reply: handle.submit(method, params).await }
}

/// Hand one line (a request or a batch) to the node.
async fn submit(handle: &Handle, line: &[u8]) -> Pending {
    let value: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(_) => return Pending::Ready(Some(error(Value::Null, -32700, "parse error: not JSON"))),
    };
    match value {
        Value::Array(items) if items.is_empty() => {
            Pending::Ready(Some(error(Value::Null, -32600, "invalid request: empty batch")))
        }
        Value::Array(items) => {
            let mut all = Vec::new();
            for item in items.into_iter().take(100) {
                all.push(Box::pin(submit_one(handle, item)).await);
            }
            Pending::Batch(all)
        }
        other => submit_one(handle, other).await,
    }
}

/// Wait for the node's answer.
async fn finish(p: Pending) -> Option<Value> {
    match p {
        Pending::Ready(v) => v,
        Pending::Node { id, reply } => {
            let result = reply.await.unwrap_or_else(|_| Err(RpcError::app("the node has stopped")));
            let id = id?;
            Some(match result {
                Ok(v) => json!({"jsonrpc": "2.0", "id": id, "result": v}),
                Err(RpcError { code, message }) => error(id, code, &message),
            })
        }
        Pending::Batch(items) => {
            let mut out = Vec::new();
            for item in items {
                if let Some(r) = Box::pin(finish(item)).await {
                    out.push(r);
                }
            }
            (!out.is_empty()).then_some(Value::Array(out))
        }
    }
}

/// Answer one line (a request or a batch).
pub async fn answer(handle: &Handle, line: &[u8]) -> Option<Value> {
    finish(submit(handle, line).await).await
}

/// The writer: responses from `out`, notifications from `notes`, one line
/// each, until `out` closes (the reader finished) or the output fails.
async fn write_out<W: AsyncWrite + Unpin>(writer: W, mut out: mpsc::Receiver<String>, mut notes: notes::Receiver) {
    let mut w = BufWriter::with_capacity(64 * 1024, writer);
    let mut notes_open = true;
    loop {
        let line: Option<String> = tokio::select! {
            biased;
            r = out.recv() => match r {
                Some(l) => Some(l),
                None => break,
            },
            n = notes.recv(), if notes_open => match n {
                Ok(n) => Some(n.to_string()),
                Err(notes::RecvError::Lagged(missed)) => {
                    tracing::warn!("a slow API client missed {missed} notifications");
                    Some(json!({"jsonrpc": "2.0", "method": "lagged", "params": {"missed": missed}}).to_string())
                }
                Err(notes::RecvError::Closed) => {
                    notes_open = false;
                    None
                }
            },
        };
        if let Some(line) = line
            && (w.write_all(line.as_bytes()).await.is_err() || w.write_all(b"\n").await.is_err())
        {
            return;
        }
        if out.is_empty() && (notes.is_empty() || !notes_open) && w.flush().await.is_err() {
            return;
        }
    }
    let _ = w.flush().await;
}

/// Read one line of at most [`MAX_LINE`] bytes into `buf`. `Ok(false)` at
/// end of input; a longer line is consumed and reported as `Err(())`.
async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> std::io::Result<Result<bool, ()>> {
    buf.clear();
    let mut too_long = false;
    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(if too_long { Err(()) } else { Ok(!buf.is_empty()) });
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if !too_long {
            if buf.len() + take > MAX_LINE + 1 {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(&chunk[..take]);
            }
        }
        r.consume(take);
        if done {
            return Ok(if too_long { Err(()) } else { Ok(true) });
        }
    }
}

/// Serve JSON-RPC on `reader`/`writer` until the reader closes. The node's
/// notifications are written as they come, from the start.
///
/// One task writes everything, through a buffer that is flushed whenever
/// nothing else is ready: under load many lines go out in one write. A
/// client that reads too slowly to keep up with the backlog
/// ([`notes::NOTE_BACKLOG`] lines, [`notes::NOTE_BACKLOG_BYTES`] bytes) is told how many it missed (a `lagged` notification)
/// rather than silently losing them or growing the node without bound.
pub async fn serve<R, W>(mut reader: R, writer: W, handle: Handle)
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (out_tx, out_rx) = mpsc::channel::<String>(1024);
    let notes = handle.subscribe();
    let writer_task = tokio::spawn(write_out(writer, out_rx, notes));
    // Requests are handed to the node in order as fast as they are read
    // (up to IN_FLIGHT unanswered), so a client that pipelines gets its
    // sends batched; the answers are written in the order of the requests.
    let (wait_tx, mut wait_rx) = mpsc::channel::<Pending>(IN_FLIGHT);
    let answers_tx = out_tx.clone();
    let answers = tokio::spawn(async move {
        while let Some(p) = wait_rx.recv().await {
            if let Some(resp) = finish(p).await
                && answers_tx.send(resp.to_string()).await.is_err()
            {
                break;
            }
        }
    });
    let mut buf = Vec::new();
    loop {
        let pending = match read_line(&mut reader, &mut buf).await {
            Ok(Ok(true)) => {
                let line = buf.trim_ascii();
                if line.is_empty() {
                    continue;
                }
                submit(&handle, line).await
            }
            Ok(Err(())) => {
                let msg = format!("invalid request: line longer than {MAX_LINE} bytes");
                Pending::Ready(Some(error(Value::Null, -32600, &msg)))
            }
            Ok(Ok(false)) | Err(_) => break,
        };
        if wait_tx.send(pending).await.is_err() {
            break;
        }
    }
    drop(wait_tx);
    let _ = answers.await;
    drop(out_tx);
    let _ = writer_task.await;
}
