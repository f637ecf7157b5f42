//! Ferry's tools: the relay benchmark harness and the mesh simulator.
#![forbid(unsafe_code)]

pub mod sim;
