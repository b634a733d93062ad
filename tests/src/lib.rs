//! The local fleet and helpers for Flotilla's end-to-end tests.
#![forbid(unsafe_code)]
