//! JSON-RPC 2.0 over lines: one JSON object (or batch array) per line in,
//! one per line out. Responses and the node's notifications share the
//! output; nothing else is ever written to it.
//!
//! Lines longer than [`MAX_LINE`] bytes are refused with an error and
//! skipped; malformed JSON, unknown methods and bad parameters get the
//! standard error codes. Nothing a client sends can stop the node.

use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::node::{Handle, RpcError};

/// Longest request line accepted, in bytes.
pub const MAX_LINE: usize = 256 * 1024;

fn error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// Handle one request object; `None` for a notification (no `id`).
async fn one(handle: &Handle, req: Value) -> Option<Value> {
    let Value::Object(obj) = req else {
        return Some(error(Value::Null, -32600, "invalid request: not an object"));
    };
    let id = obj.get("id").cloned();
    let bad_id = matches!(id, Some(Value::Object(_) | Value::Array(_) | Value::Bool(_)));
    if obj.get("jsonrpc") != Some(&json!("2.0")) || bad_id {
        return Some(error(id.unwrap_or(Value::Null), -32600, "invalid request: needs \"jsonrpc\": \"2.0\""));
    }
    let Some(method) = obj.get("method").and_then(Value::as_str) else {
        return Some(error(id.unwrap_or(Value::Null), -32600, "invalid request: no method"));
    };
    let params = obj.get("params").cloned().unwrap_or(Value::Object(Default::default()));
    if !params.is_object() {
        return id.map(|id| error(id, -32602, "params must be an object"));
    }
    let result = handle.call(method, params).await;
    let id = id?;
    Some(match result {
        Ok(v) => json!({"jsonrpc": "2.0", "id": id, "result": v}),
        Err(RpcError { code, message }) => error(id, code, &message),
    })
}

/// Answer one line (a request or a batch).
pub async fn answer(handle: &Handle, line: &[u8]) -> Option<Value> {
    let value: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(_) => return Some(error(Value::Null, -32700, "parse error: not JSON")),
    };
    match value {
        Value::Array(items) if items.is_empty() => Some(error(Value::Null, -32600, "invalid request: empty batch")),
        Value::Array(items) => {
            let mut out = Vec::new();
            for item in items.into_iter().take(100) {
                if let Some(r) = one(handle, item).await {
                    out.push(r);
                }
            }
            (!out.is_empty()).then_some(Value::Array(out))
        }
        other => one(handle, other).await,
    }
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
pub async fn serve<R, W>(mut reader: R, mut writer: W, handle: Handle)
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (out_tx, mut out_rx) = mpsc::channel::<String>(1024);
    let mut notes = handle.subscribe();
    let writer_task = tokio::spawn(async move {
        while let Some(line) = out_rx.recv().await {
            if writer.write_all(line.as_bytes()).await.is_err() || writer.write_all(b"\n").await.is_err() {
                break;
            }
            if out_rx.is_empty() && writer.flush().await.is_err() {
                break;
            }
        }
        let _ = writer.flush().await;
    });
    let notes_tx = out_tx.clone();
    let notes_task = tokio::spawn(async move {
        loop {
            match notes.recv().await {
                Ok(n) => {
                    if notes_tx.send(n.to_string()).await.is_err() {
                        break;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("a slow API client missed {n} notifications");
                }
                Err(_) => break,
            }
        }
    });
    let mut buf = Vec::new();
    loop {
        match read_line(&mut reader, &mut buf).await {
            Ok(Ok(true)) => {
                let line = buf.trim_ascii();
                if line.is_empty() {
                    continue;
                }
                if let Some(resp) = answer(&handle, line).await
                    && out_tx.send(resp.to_string()).await.is_err()
                {
                    break;
                }
            }
            Ok(Err(())) => {
                let msg = format!("invalid request: line longer than {MAX_LINE} bytes");
                if out_tx.send(error(Value::Null, -32600, &msg).to_string()).await.is_err() {
                    break;
                }
            }
            Ok(Ok(false)) | Err(_) => break,
        }
    }
    notes_task.abort();
    drop(out_tx);
    let _ = writer_task.await;
}
