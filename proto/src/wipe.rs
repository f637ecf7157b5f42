//! Wiping what the stack kept: safe code cannot reach a dead stack frame,
//! but it can write over it.
//!
//! A relay's buffers are wiped explicitly (SPEC §8); what is left is what
//! library code leaves in its own stack frames when it returns: a hash
//! function's block buffer holds the last 1 to 64 bytes of what it hashed
//! (a message id is a BLAKE2s over the sealed part, so the last block of
//! ciphertext). The next call that builds a large value on the stack (a
//! link's state, say) can copy such leftovers into memory that lives on.
//! [`scrub_stack`] writes zeros over the stack below its caller; drivers
//! call it soon after the core last ran (the daemon: within 20 ms) and
//! before the router builds a link.

/// Bytes of stack [`scrub_stack`] overwrites: deeper than any path through
/// a relay goes (a relay daemon's deepest is about 40 KiB).
pub const SCRUB_BYTES: usize = 64 * 1024;

/// Overwrite [`SCRUB_BYTES`] of stack below the caller's frame with zeros.
/// Never inlined: its frame must lie below the caller's. The caller needs
/// that much stack to spare.
#[inline(never)]
pub fn scrub_stack() {
    scrub_stack_bytes::<SCRUB_BYTES>();
}

/// Overwrite `N` bytes of stack below the caller's frame with zeros: for an
/// endpoint, whose paths (a text of up to 4 KiB moved through several
/// frames, more in a debug build) go deeper than a relay's.
#[inline(never)]
pub fn scrub_stack_bytes<const N: usize>() {
    let zeros = [0u8; N];
    // An opaque use: the compiler must write the zeros.
    core::hint::black_box(&zeros);
}
