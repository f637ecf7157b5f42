//! Ferry's lab: the packet inspector (and the relay benchmark harness in
//! `src/bin/`).

#![forbid(unsafe_code)]

pub mod inspect;
