//! One module per subcommand.

pub mod bench;
pub mod demo;
pub mod digest;
pub mod features;
pub mod fetch;
pub mod fit;
pub mod flags;
pub mod generate;
pub mod models;
pub mod params;
pub mod produce;
pub mod replay;
pub mod run;
pub mod scheduler;
pub mod serve;
pub mod tail;
pub mod topics;
pub mod topology;
pub mod training_set;
pub mod trainings;
pub mod up;
pub mod validate;
