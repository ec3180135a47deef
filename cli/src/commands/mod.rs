//! One module per subcommand.

pub mod bench;
pub mod demo;
pub mod produce;
pub mod tail;
pub mod topics;
pub mod up;
pub mod validate;
