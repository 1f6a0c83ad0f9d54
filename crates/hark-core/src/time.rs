//! Time as the core sees it: milliseconds handed in by the driver.

/// Wall-clock milliseconds since the Unix epoch, as passed in by the driver.
///
/// The core never reads a clock; every input carries one of these.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millis(pub u64);

impl Millis {
    /// The epoch itself: the time of a fresh engine before its first input.
    pub const ZERO: Millis = Millis(0);

    /// `ms` later, or the end of time rather than wrapping (a window of `u64::MAX` means never).
    pub fn saturating_add(self, ms: u64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Millis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}
