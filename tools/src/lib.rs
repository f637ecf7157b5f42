//! Ferry's lab: the mesh simulator, the packet inspector (and, in
//! `src/bin/`, the relay benchmark harness and the benchmark table).

#![forbid(unsafe_code)]

pub mod harness;
pub mod inspect;
pub mod sim;
