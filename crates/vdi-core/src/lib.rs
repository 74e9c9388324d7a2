//! Pure logic of the Space Gateway. This crate does no I/O: no sockets, files,
//! clocks or randomness. Everything here is a function of its inputs, so the
//! daemon, the console and the tests share one set of rules.

pub mod allow;
pub mod auth;
pub mod ha;
pub mod lifecycle;
pub mod open;
pub mod ports;
pub mod proxy;
pub mod settings;
