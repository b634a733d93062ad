//! One module per `flotilla` command.

pub mod proxy;
