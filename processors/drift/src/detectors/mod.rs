//! The detectors: pure, seeded where randomness enters (it does not), one
//! per file, all behind [`Detector`].

mod adwin;
mod likelihood;
mod page_hinkley;
mod psi;

pub use adwin::Adwin;
pub use likelihood::LikelihoodDecay;
pub use page_hinkley::PageHinkley;
pub use psi::{Psi, Reference};

/// A change a detector is sure enough about, with its evidence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    /// The test statistic when it fired …
    pub statistic: f64,
    /// … and the threshold it crossed.
    pub threshold: f64,
    /// Values the decision rests on (window or run length).
    pub window: usize,
}

/// A streaming change detector over one series of values.
pub trait Detector: std::fmt::Debug + Send {
    fn name(&self) -> &'static str;
    /// Takes the next value; `Some` when a change is detected (the detector
    /// then starts over on the new regime).
    fn update(&mut self, x: f64) -> Option<Detection>;
}
