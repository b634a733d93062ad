//! Loading `config/deploy.yml` the way Kamal does.
//!
//! The pipeline ([`load`]): each file is rendered as ERB ([`erb`], trim mode `-`), parsed into
//! a located YAML tree ([`yaml`]), the destination's file deep-merged over the base one, the
//! secrets files read ([`secrets`], [`dotenv`]), and the tree decoded into [`Config`] against
//! the known keys of [`schema`], collecting every [`Diagnostic`] instead of stopping at one.

pub mod aliases;
mod decode;
pub mod diag;
pub mod docker_options;
pub mod dotenv;
pub mod erb;
mod load;
pub mod output;
pub mod schema;
pub mod secrets;
pub mod types;
pub mod vault;
pub mod yaml;

pub use diag::{ConfigErrors, Diagnostic, Pos};
pub use load::{LoadOptions, RenderedFile, load, load_rendered, render};
pub use secrets::{Secret, Secrets};
pub use types::*;
